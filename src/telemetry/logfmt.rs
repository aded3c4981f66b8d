//! How text log lines look where they land. Colour only on a terminal (never
//! when `NO_COLOR` is set), so a log file or a container log holds no escape
//! codes; and span fields meant for the OpenTelemetry exporter (`otel.name`,
//! `otel.kind`, ...) are left out of the text, where they only repeat the
//! span's name on every line. JSON logs (`log_format = "json"`) are the
//! choice for log collectors.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Whether text logs may be coloured: standard output is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Fields as `name=value`, the message bare, exporter-only fields left out.
#[derive(Debug, Default)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Plain {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Plain<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for Plain<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") {
            return;
        }
        let gap = if self.first { "" } else { " " };
        self.first = false;
        self.result = match name {
            "message" => write!(self.writer, "{gap}{value:?}"),
            _ => write!(self.writer, "{gap}{name}={value:?}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_keep_fields_and_lose_exporter_fields_and_colour() {
        let sink = Sink::default();
        let writer = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(PlainFields)
            .with_writer(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("run", otel.name = "run trade_sync", process = "trade_sync");
            let _entered = span.enter();
            tracing::info!(account = "main", "synced");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains(r#"run{process="trade_sync"}"#), "{text}");
        assert!(text.contains(r#"synced account="main""#), "{text}");
        assert!(!text.contains("otel.name"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
