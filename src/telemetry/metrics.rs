//! The registry and its encoding: one `script_manager_` registry holding the
//! per-process, exchange API, domain and HA metrics, encoded as Prometheus
//! text 0.0.4 or OpenMetrics (with exemplars).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::accounts::AccountMetrics;
use super::api::ApiMetrics;
use super::domain::DomainEvents;
use super::exposition::{Format, Writer};
use super::ha::HaMetrics;
use super::process::{ProcessInfo, ProcessMetrics, ProcessSeries};
use super::stream::{StreamConnections, StreamMetrics};

/// Why the HTTP server refused a request.
pub const SHED_REASONS: [&str; 3] = ["concurrency", "timeout", "rate_limited"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub process: ProcessMetrics,
    pub api: ApiMetrics,
    pub domain: DomainEvents,
    pub ha: HaMetrics,
    pub stream: std::sync::Arc<StreamMetrics>,
    /// Per-account series and their aggregates (`telemetry.per_account_series_limit`).
    pub accounts: std::sync::Arc<AccountMetrics>,
    /// Aggregate connection series of the streams (no account label).
    pub stream_connections: std::sync::Arc<StreamConnections>,
    pub events: std::sync::Arc<super::events::EventsMetrics>,
    scheduler_enabled: Gauge,
    run_records_dropped: Counter,
    reload_successful: Gauge,
    reload_success_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    http_shed: Family<ShedLabels, Counter>,
    /// The size of the last encoded body: the next one starts with that much
    /// room, instead of growing (and copying) itself some twenty times.
    last_body: std::sync::atomic::AtomicUsize,
}

impl Metrics {
    pub fn new() -> Self {
        let ha = HaMetrics::default();
        let mut domain = DomainEvents::new();
        domain.count_fenced_in(ha.fencing_counter());
        let accounts = std::sync::Arc::new(AccountMetrics::new());
        domain.count_accounts_in(accounts.clone());
        let m = Metrics {
            registry: Registry::default(),
            process: ProcessMetrics::new(),
            api: ApiMetrics::new(),
            domain,
            ha,
            stream: std::sync::Arc::new(StreamMetrics::with_accounts(accounts.clone())),
            accounts,
            stream_connections: std::sync::Arc::default(),
            events: std::sync::Arc::default(),
            scheduler_enabled: Gauge::default(),
            run_records_dropped: Counter::default(),
            reload_successful: Gauge::default(),
            reload_success_time: Gauge::default(),
            http_shed: Family::default(),
            last_body: std::sync::atomic::AtomicUsize::new(0),
        };
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("script_manager");
        registry.register(
            "build",
            "Build information: version of the running binary",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("SCRIPT_MANAGER_REVISION")),
            ]),
        );
        for reason in SHED_REASONS {
            let _ = m.http_shed.get_or_create(&ShedLabels { reason });
        }
        registry.register(
            "http_requests_shed",
            "HTTP requests refused to protect the service, by reason (concurrency, timeout, rate_limited)",
            m.http_shed.clone(),
        );
        registry.register(
            "scheduler_enabled",
            "1 when the scheduler runs processes (SCRIPT_MANAGER_ENABLED)",
            m.scheduler_enabled.clone(),
        );
        registry.register(
            "run_records_dropped",
            "Finished runs not written to the store's history because its queue was full",
            m.run_records_dropped.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 if the last configuration (re)load succeeded, 0 if it was refused",
            m.reload_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load",
            m.reload_success_time.clone(),
        );
        // The per-process families are written after the registry (`encode_*`).
        m.api.register(registry.sub_registry_with_prefix("api"));
        m.domain.register(registry);
        m.ha.register(registry);
        m.stream.register(registry);
        m.accounts.register(registry);
        m.stream_connections.register(registry);
        m.events.register(registry);
        super::resources::register(registry);
        Metrics { registry: root, ..m }
    }

    /// Creates every series of a configured process (zeros from start-up) and returns its hot series.
    pub fn init_process(&self, id: &str, info: &ProcessInfo) -> ProcessSeries {
        self.api.init_process(id);
        self.process.init(id, info)
    }

    /// Drops every series of a process taken out of the configuration.
    pub fn remove_process(&self, id: &str) {
        self.process.remove(id);
        self.api.remove_process(id);
        self.ha.remove_process(id);
    }

    /// The configuration was loaded (start-up, reload) or a reload was refused.
    pub fn config_loaded(&self, ok: bool) {
        self.reload_successful.set(ok as i64);
        if ok {
            self.reload_success_time.set(crate::clock::unix_seconds());
        }
    }

    /// An HTTP request was refused by the server's limits (`reason` is one of [`SHED_REASONS`]).
    pub fn http_shed(&self, reason: &'static str) {
        self.http_shed.get_or_create(&ShedLabels { reason }).inc();
    }

    /// A finished run's record did not fit the store writer's queue.
    pub fn run_record_dropped(&self) {
        self.run_records_dropped.inc();
    }

    pub fn scheduler_enabled(&self, enabled: bool) {
        self.scheduler_enabled.set(enabled as i64);
    }

    /// Prometheus text 0.0.4 (what most scrapers ask for by default).
    pub fn encode_prometheus(&self) -> String {
        let mut out = self.body_buffer();
        // First: the aggregates in the registry are set by the choice of accounts shown.
        let now = crate::clock::now_ms();
        let shown = self.accounts.select(now);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        self.process.encode(&mut Writer::new(&mut out, Format::Prometheus));
        self.encode_accounts(&mut Writer::new(&mut out, Format::Prometheus), &shown, now);
        self.note_body(&out);
        out
    }

    /// The per-account families (and the streams', which carry accounts):
    /// every account up to the limit, above it those with a problem.
    fn encode_accounts(&self, w: &mut Writer<'_>, shown: &super::accounts::Shown, now: i64) {
        self.accounts.encode(w, shown);
        self.stream.encode(w, shown, now);
    }

    fn body_buffer(&self) -> String {
        let last = self.last_body.load(std::sync::atomic::Ordering::Relaxed);
        String::with_capacity(last + last / 16)
    }

    fn note_body(&self, body: &str) {
        self.last_body.store(body.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// OpenMetrics 1.0 text, with exemplars.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = self.body_buffer();
        let now = crate::clock::now_ms();
        let shown = self.accounts.select(now);
        let text = |out: &mut String| -> std::fmt::Result {
            prometheus_client::encoding::text::encode_registry(out, &self.registry)?;
            self.process.encode(&mut Writer::new(out, Format::OpenMetrics));
            self.encode_accounts(&mut Writer::new(out, Format::OpenMetrics), &shown, now);
            prometheus_client::encoding::text::encode_eof(out)
        };
        text(&mut out).expect("writing to a String cannot fail");
        self.note_body(&out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
