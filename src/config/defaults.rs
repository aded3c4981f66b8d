//! The built-in defaults: a working service on their own (DESIGN §2, §8).

use std::collections::BTreeMap;

use super::{
    Config, DemoConfig, EventsConfig, ExchangeConfig, ExchangeKind, HaConfig, HttpConfig, LevelsConfig, LogFormat,
    NotificationsConfig, ProcessConfig, ProcessMode, SchedulerConfig, StoreConfig, TelemetryConfig, UpstreamConfig,
};

/// The seed's six processes, by id (also their kind and the seed's flat environment names).
pub const SEED_PROCESSES: [&str; 6] = [
    BUILTIN_PROCESSES[0].0,
    BUILTIN_PROCESSES[1].0,
    BUILTIN_PROCESSES[2].0,
    BUILTIN_PROCESSES[3].0,
    BUILTIN_PROCESSES[4].0,
    BUILTIN_PROCESSES[5].0,
];

/// The seed's six processes: (id, name, interval s, calls/min, priority, timeout s, retries, start offset s).
/// Offsets let position sync run first, so the others start with positions to work on.
#[allow(clippy::type_complexity)]
pub const BUILTIN_PROCESSES: [(&str, &str, f64, u32, u8, f64, u32, f64); 6] = [
    ("trade_sync", "Trade Sync", 30.0, 60, 1, 30.0, 3, 1.0),
    ("level_monitor", "Level Monitor", 2.0, 100, 1, 2.0, 1, 1.5),
    ("price_update", "Price Update", 10.0, 30, 2, 10.0, 2, 1.0),
    ("notification_check", "Notification Check", 5.0, 30, 2, 5.0, 2, 2.0),
    ("position_sync", "Position Sync", 60.0, 30, 3, 30.0, 3, 0.0),
    ("dashboard_sync", "Dashboard Sync", 30.0, 10, 4, 30.0, 1, 3.0),
];

/// (follower, leader): dashboards are computed right after each trade sync,
/// from fresh trades, with the seed's 30 s as the deadline.
const DEFAULT_CHAINS: [(&str, &str); 1] = [("dashboard_sync", "trade_sync")];

/// Settings a process gets for every key it does not name.
pub fn process_defaults(kind: &str) -> ProcessConfig {
    ProcessConfig {
        kind: kind.to_string(),
        name: None,
        enabled: true,
        mode: ProcessMode::Periodic,
        interval_seconds: 60.0,
        max_api_calls_per_minute: 60,
        priority: 5,
        timeout_seconds: 30.0,
        retry_count: 0,
        retry_backoff_seconds: 1.0,
        start_offset_seconds: 0.0,
        after: Vec::new(),
        exclusive_with: Vec::new(),
        settings: BTreeMap::new(),
    }
}

/// Whether prices and account events come by WebSocket unless configured otherwise.
pub const STREAMS_BY_DEFAULT: bool = true;

/// The stream processes, built in when `exchange.streams` is on: (id, name,
/// calls/min, lease s). Continuous; their timeout is the lease they renew.
const STREAM_PROCESSES: [(&str, &str, u32, f64); 2] = [
    ("market_stream", "Market Stream", 100, 10.0),
    // Per account (the cap in force is this × the replica's accounts, at most the
    // venue budget): a listen key, then a reconciliation (positions, fills of its
    // symbols) after each connect, and an extension every 30 min.
    ("user_stream", "User Stream", 60, 10.0),
];

/// The venue-side backstops' reconciler: every second, priority 1 (it is
/// protection), its own share of calls. Built in whatever `levels.backstop`
/// says (`off` makes it clean up and idle).
fn backstop_process() -> (String, ProcessConfig) {
    let process = ProcessConfig {
        name: Some("Backstop Sync".to_string()),
        interval_seconds: 1.0,
        // Placements weigh 0: calls, not weight, bound how fast many new levels get theirs.
        max_api_calls_per_minute: 600,
        priority: 1,
        timeout_seconds: 10.0,
        start_offset_seconds: 2.0,
        ..process_defaults("backstop_sync")
    };
    ("backstop_sync".to_string(), process)
}

fn stream_processes() -> impl Iterator<Item = (String, ProcessConfig)> {
    STREAM_PROCESSES.iter().map(|&(id, name, limit, lease)| {
        let process = ProcessConfig {
            name: Some(name.to_string()),
            mode: ProcessMode::Continuous,
            interval_seconds: lease,
            max_api_calls_per_minute: limit,
            priority: 1,
            timeout_seconds: lease,
            ..process_defaults(id)
        };
        (id.to_string(), process)
    })
}

pub fn builtin_processes(with_streams: bool) -> BTreeMap<String, ProcessConfig> {
    let streams = stream_processes().filter(|_| with_streams);
    BUILTIN_PROCESSES
        .iter()
        .map(|&(id, name, interval, limit, priority, timeout, retries, offset)| {
            let process = ProcessConfig {
                name: Some(name.to_string()),
                interval_seconds: interval,
                max_api_calls_per_minute: limit,
                priority,
                timeout_seconds: timeout,
                retry_count: retries,
                start_offset_seconds: offset,
                after: DEFAULT_CHAINS
                    .iter()
                    .filter(|(follower, _)| *follower == id)
                    .map(|(_, leader)| leader.to_string())
                    .collect(),
                ..process_defaults(id)
            };
            (id.to_string(), process)
        })
        .chain(streams)
        .chain(std::iter::once(backstop_process()))
        .collect()
}

pub fn config(with_builtin_processes: bool, with_streams: bool) -> Config {
    Config {
        enabled: true,
        log_level: "info".into(),
        log_format: LogFormat::Text,
        builtin_processes: with_builtin_processes,
        http: HttpConfig {
            listen: "127.0.0.1:9797".into(),
            admin_token: None,
            read_token: None,
            admin_token_file: None,
            read_token_file: None,
            tokens: Vec::new(),
            status_requires_token: false,
            metrics_requires_token: false,
            request_timeout_seconds: 30.0,
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_body_bytes: 64 * 1024,
            mutations_per_minute: 120,
        },
        telemetry: TelemetryConfig {
            otlp_endpoint: None,
            service_name: "script-manager".into(),
            per_account_series_limit: 100,
        },
        scheduler: SchedulerConfig {
            shutdown_grace_seconds: 10.0,
            run_history: 100,
            adaptive_intervals: true,
            adapt_above_share: 0.8,
            adapt_max_factor: 4.0,
            adapt_from_priority: 2,
        },
        exchange: ExchangeConfig {
            kind: ExchangeKind::Simulated,
            base_url: super::BINANCE_PRODUCTION_URL.into(),
            weight_safety_margin: 0.8,
            reserved_share: 0.2,
            reserved_for: vec!["level_monitor".into(), "market_stream".into()],
            recv_window_ms: 5000,
            request_timeout_seconds: 10.0,
            egress: super::Egress::Shared,
            symbols: Vec::new(),
            accounts: BTreeMap::new(),
            streams: with_streams,
            ws_base_url: None,
            stream_silence_seconds: 10.0,
            stream_stale_seconds: 5.0,
            stream_max_lifetime_seconds: 86_400.0,
            listen_key_renew_seconds: 1_800.0,
            stream_reconcile_seconds: 300.0,
            stream_connects_per_second: 1.0,
            stream_connect_burst: 5,
            user_streams_per_connection: 50,
            simulator: super::SimulatorConfig::default(),
        },
        upstream: UpstreamConfig {
            batching: true,
            dedupe: true,
            cache: true,
        },
        store: StoreConfig {
            url: "sqlite://data/script-manager.db".into(),
            url_file: None,
            encryption_key: None,
            encryption_key_file: None,
            run_retention_days: 7.0,
            data_retention_days: 30.0,
        },
        notifications: NotificationsConfig {
            webhook_url: None,
            webhook_url_file: None,
            allowed_webhook_hosts: Vec::new(),
            signing_secret: None,
            signing_secret_file: None,
        },
        demo: DemoConfig {
            enabled: true,
            distance: 0.003,
        },
        levels: LevelsConfig {
            close_attempt_seconds: 15.0,
            close_lease_seconds: None,
            close_send_margin_seconds: None,
            max_concurrent_closes: 32,
            backstop: super::BackstopMode::StopLoss,
            backstop_offset: 0.005,
            backstop_reconcile_seconds: 60.0,
        },
        events: EventsConfig {
            price_interval_ms: 250,
            keepalive_seconds: 15.0,
            buffer: 10_000,
            client_queue: 1024,
            max_clients: 1000,
        },
        ha: HaConfig {
            enabled: false,
            replica_id: None,
            lease_margin_seconds: 5.0,
            heartbeat_seconds: 1.0,
            share_accounts: true,
        },
        processes: if with_builtin_processes {
            builtin_processes(with_streams)
        } else {
            BTreeMap::new()
        },
    }
}
