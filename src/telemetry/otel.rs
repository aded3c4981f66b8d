//! Tracing set-up: log output (text or JSON) and OpenTelemetry spans.
//!
//! An OpenTelemetry tracer is always installed, so every run has a trace id
//! (for log lines, metric exemplars and the `TRACEPARENT` of child
//! programs); spans leave the process only when an OTLP endpoint is set.

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes pending spans.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is still buffered. Blocking: call it off the async runtime.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("script-manager: flushing spans failed: {e}");
        }
        let _ = self.provider.shutdown();
    }
}

/// The OTLP/HTTP URL spans are posted to, from a base URL or a full `/v1/traces` URL.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// What the subscriber needs to know (from `log_level`, `log_format` and `[telemetry]`).
#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// A tracing filter: `info`, `debug`, `script_manager=debug`, ...
    pub log_level: String,
    /// One JSON object per line instead of text.
    pub json: bool,
    pub service_name: String,
    /// OTLP/HTTP endpoint; spans stay in the process when `None`.
    pub otlp_endpoint: Option<String>,
}

/// Installs the global subscriber. Call once, inside the tokio runtime.
pub fn init(settings: &TracingSettings) -> anyhow::Result<Telemetry> {
    crate::net::install_crypto();
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build(),
    );
    if let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("script-manager");

    let filter = EnvFilter::try_new(&settings.log_level)?;
    let fmt = match settings.json {
        false => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(super::logfmt::colour())
            .fmt_fields(super::logfmt::PlainFields)
            .boxed(),
        true => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    Ok(Telemetry { provider })
}

/// The trace id of a span as 32 hex digits, if it has a valid one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The span id of a span as 16 hex digits, if valid.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_string())
}

/// A W3C `traceparent` value for the span, so child programs join its trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(super::traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(super::traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(super::traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
