//! The registry and its encoding: one `script_manager_` registry holding the
//! per-process, exchange API, domain and HA metrics, encoded as Prometheus
//! text 0.0.4 or OpenMetrics (with exemplars).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::api::ApiMetrics;
use super::domain::DomainEvents;
use super::ha::HaMetrics;
use super::process::{ProcessInfo, ProcessMetrics, ProcessSeries};
use super::stream::StreamMetrics;

pub struct Metrics {
    registry: Registry,
    pub process: ProcessMetrics,
    pub api: ApiMetrics,
    pub domain: DomainEvents,
    pub ha: HaMetrics,
    pub stream: std::sync::Arc<StreamMetrics>,
    scheduler_enabled: Gauge,
    run_records_dropped: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let ha = HaMetrics::default();
        let mut domain = DomainEvents::new();
        domain.count_fenced_in(ha.fencing_counter());
        let m = Metrics {
            registry: Registry::default(),
            process: ProcessMetrics::new(),
            api: ApiMetrics::new(),
            domain,
            ha,
            stream: std::sync::Arc::new(StreamMetrics::new()),
            scheduler_enabled: Gauge::default(),
            run_records_dropped: Counter::default(),
        };
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("script_manager");
        registry.register(
            "build",
            "Build information: version of the running binary",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
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
        m.process.register(registry.sub_registry_with_prefix("process"));
        let api = registry.sub_registry_with_prefix("api");
        m.process.register_api(api);
        m.api.register(api);
        m.domain.register(registry);
        m.ha.register(registry);
        m.stream.register(registry);
        super::resources::register(registry);
        Metrics { registry: root, ..m }
    }

    /// Creates every series of a configured process (zeros from start-up) and returns its hot series.
    pub fn init_process(&self, id: &str, info: &ProcessInfo) -> ProcessSeries {
        self.api.init_process(id);
        self.process.init(id, info)
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
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// OpenMetrics 1.0 text, with exemplars.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
