//! Semantic checks that types alone cannot express. Every problem is reported
//! through `report(key, message)`; nothing stops at the first one.

use std::net::SocketAddr;

use super::{ExchangeConfig, ExchangeKind, HttpConfig, KindCheck, ProcessConfig, SchedulerConfig, TelemetryConfig};

/// Longest interval we accept: a week. Longer periods belong in a calendar, not here.
const MAX_INTERVAL_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

pub fn check_log_level(level: &str, report: &mut dyn FnMut(&str, String)) {
    if tracing_subscriber::EnvFilter::try_new(level).is_err() {
        report(
            "log_level",
            format!("`{level}` is not a log filter; use error, warn, info, debug or trace"),
        );
    }
}

pub fn check_http(http: &HttpConfig, report: &mut dyn FnMut(&str, String)) {
    if http.listen.parse::<SocketAddr>().is_err() {
        report(
            "http.listen",
            format!("`{}` is not an address like 127.0.0.1:9797", http.listen),
        );
    }
}

/// Named tokens: a unique name, a value, no value twice; the server's limits.
pub fn check_tokens(http: &HttpConfig, report: &mut dyn FnMut(&str, String)) {
    // The shorthands are the tokens `admin` and `read`: their names are taken,
    // and no named token may share their value.
    let shorthands: Vec<(&str, &super::Secret)> = http
        .shorthand_tokens()
        .into_iter()
        .map(|(name, _, t)| (name, t))
        .collect();
    if let [(_, a), (_, r)] = shorthands.as_slice()
        && a.matches(r.expose())
    {
        report(
            "http.read_token",
            "has the admin token's value: each needs its own".into(),
        );
    }
    let mut seen: std::collections::BTreeSet<&str> = shorthands.iter().map(|(n, _)| *n).collect();
    for (i, t) in http.tokens.iter().enumerate() {
        if let Some(v) = &t.token
            && let Some((name, _)) = shorthands.iter().find(|(_, s)| s.matches(v.expose()))
        {
            report(
                &format!("http.tokens.{}.token", t.name),
                format!("has the value of http.{name}_token: each holder needs its own"),
            );
        }
        let valid = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if !valid {
            report(
                &format!("http.tokens[{i}].name"),
                format!("`{}` must be 1-64 letters, digits, - _ . @", t.name),
            );
        } else if !seen.insert(t.name.as_str()) {
            report(
                &format!("http.tokens.{}.name", t.name),
                "another token has this name".into(),
            );
        }
        if t.accounts
            .as_ref()
            .is_some_and(|a| a.is_empty() || a.iter().any(|n| n.trim().is_empty()))
        {
            report(
                &format!("http.tokens.{}.accounts", t.name),
                "must list at least one account name (or be left out: every account)".into(),
            );
        }
        match &t.token {
            None => report(
                &format!("http.tokens.{}.token", t.name),
                "set `token` or `token_file`".into(),
            ),
            Some(v) if v.expose().len() < 16 => report(
                &format!("http.tokens.{}.token", t.name),
                "must be at least 16 characters".into(),
            ),
            Some(v) => {
                let twice = http.tokens[..i]
                    .iter()
                    .any(|o| o.token.as_ref().is_some_and(|w| w.matches(v.expose())));
                if twice {
                    report(
                        &format!("http.tokens.{}.token", t.name),
                        "another token has the same value: each holder needs its own".into(),
                    );
                }
            }
        }
    }
    if !(http.request_timeout_seconds > 0.0 && http.request_timeout_seconds <= 3600.0) {
        report("http.request_timeout_seconds", "must be between 0 and 3600".into());
    }
    if http.max_connections == 0 {
        report("http.max_connections", "must be at least 1".into());
    }
    if http.max_concurrent_requests == 0 {
        report("http.max_concurrent_requests", "must be at least 1".into());
    }
    if http.max_body_bytes < 1024 {
        report("http.max_body_bytes", "must be at least 1024".into());
    }
    if http.mutations_per_minute == 0 {
        report("http.mutations_per_minute", "must be at least 1".into());
    }
}

pub fn check_telemetry(telemetry: &TelemetryConfig, report: &mut dyn FnMut(&str, String)) {
    if telemetry.per_account_series_limit > 100_000 {
        report(
            "telemetry.per_account_series_limit",
            format!(
                "must be at most 100000 (got {}): per-account series are what it bounds",
                telemetry.per_account_series_limit
            ),
        );
    }
    if let Some(endpoint) = &telemetry.otlp_endpoint {
        let ok = (endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            && endpoint.parse::<http::Uri>().is_ok();
        if !endpoint.is_empty() && !ok {
            report(
                "telemetry.otlp_endpoint",
                format!("`{endpoint}` is not an http(s) URL like http://localhost:4318"),
            );
        }
    }
}

pub fn check_scheduler(scheduler: &SchedulerConfig, report: &mut dyn FnMut(&str, String)) {
    if !(0.0..=3600.0).contains(&scheduler.shutdown_grace_seconds) {
        report("scheduler.shutdown_grace_seconds", "must be between 0 and 3600".into());
    }
    if !(1..=100_000).contains(&scheduler.run_history) {
        report("scheduler.run_history", "must be between 1 and 100000".into());
    }
    if !(scheduler.adapt_above_share > 0.0 && scheduler.adapt_above_share < 1.0) {
        report(
            "scheduler.adapt_above_share",
            "must be between 0 and 1 (0.8 = 80 % of the budget)".into(),
        );
    }
    if !(1.0..=100.0).contains(&scheduler.adapt_max_factor) {
        report("scheduler.adapt_max_factor", "must be between 1 and 100".into());
    }
    if !(2..=10).contains(&scheduler.adapt_from_priority) {
        report(
            "scheduler.adapt_from_priority",
            "must be between 2 and 10 (priority 1 never stretches)".into(),
        );
    }
}

pub fn check_process(id: &str, p: &ProcessConfig, kinds: KindCheck, report: &mut dyn FnMut(&str, String)) {
    let key = |field: &str| format!("processes.{id}.{field}");
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        report(
            &format!("processes.{id}"),
            "a process id may use only a-z, 0-9 and _".into(),
        );
    }
    if !(p.interval_seconds > 0.0 && p.interval_seconds <= MAX_INTERVAL_SECONDS) {
        report(
            &key("interval_seconds"),
            format!(
                "must be greater than 0 and at most {MAX_INTERVAL_SECONDS} (got {})",
                p.interval_seconds
            ),
        );
    }
    if !(p.timeout_seconds > 0.0 && p.timeout_seconds <= MAX_INTERVAL_SECONDS) {
        report(
            &key("timeout_seconds"),
            format!("must be greater than 0 (got {})", p.timeout_seconds),
        );
    }
    if !(1..=10).contains(&p.priority) {
        report(
            &key("priority"),
            format!("must be between 1 (highest) and 10 (got {})", p.priority),
        );
    }
    if p.retry_count > 10 {
        report(
            &key("retry_count"),
            format!("must be at most 10 (got {})", p.retry_count),
        );
    }
    if !(p.retry_backoff_seconds >= 0.0 && p.retry_backoff_seconds <= 3600.0) {
        report(
            &key("retry_backoff_seconds"),
            format!("must be between 0 and 3600 (got {})", p.retry_backoff_seconds),
        );
    }
    if !(p.start_offset_seconds >= 0.0 && p.start_offset_seconds <= MAX_INTERVAL_SECONDS) {
        report(
            &key("start_offset_seconds"),
            format!("must be 0 or more (got {})", p.start_offset_seconds),
        );
    }
    match kinds(&p.kind, &p.settings) {
        Err(message) => report(&key("kind"), message),
        Ok(problems) => {
            for (field, message) in problems {
                report(&key(&field), message);
            }
        }
    }
}

pub fn check_exchange(x: &ExchangeConfig, report: &mut dyn FnMut(&str, String)) {
    if !(x.weight_safety_margin > 0.0 && x.weight_safety_margin <= 1.0) {
        report(
            "exchange.weight_safety_margin",
            format!("must be in (0, 1] (got {})", x.weight_safety_margin),
        );
    }
    if !(0.0..=0.9).contains(&x.reserved_share) {
        report(
            "exchange.reserved_share",
            format!("must be between 0 and 0.9 (got {})", x.reserved_share),
        );
    }
    if !(1..=60_000).contains(&x.recv_window_ms) {
        report(
            "exchange.recv_window_ms",
            "must be between 1 and 60000 (Binance's maximum)".into(),
        );
    }
    if !(x.request_timeout_seconds > 0.0 && x.request_timeout_seconds <= 120.0) {
        report(
            "exchange.request_timeout_seconds",
            "must be greater than 0 and at most 120".into(),
        );
    }
    if x.kind == ExchangeKind::BinanceUsdm {
        let ok = (x.base_url.starts_with("http://") || x.base_url.starts_with("https://"))
            && x.base_url.parse::<http::Uri>().is_ok();
        if !ok {
            report("exchange.base_url", format!("`{}` is not an http(s) URL", x.base_url));
        }
        if x.accounts.is_empty() {
            report(
                "exchange.accounts",
                "binance-usdm needs at least one account with api_key and api_secret".into(),
            );
        }
    }
    for (name, account) in &x.accounts {
        if account.api_key.is_empty() {
            report(
                &format!("exchange.accounts.{name}.api_key"),
                "must not be empty (set it, or api_key_file to a file holding it)".into(),
            );
        }
        if account.api_secret.is_empty() {
            report(
                &format!("exchange.accounts.{name}.api_secret"),
                "must not be empty (set it, or api_secret_file to a file holding it)".into(),
            );
        }
    }
    match (&x.ws_base_url, x.ws_url()) {
        (Some(url), _) if x.streams && !(url.starts_with("ws://") || url.starts_with("wss://")) => {
            report("exchange.ws_base_url", format!("`{url}` is not a ws:// or wss:// URL"));
        }
        (None, None) if x.streams && x.kind == ExchangeKind::BinanceUsdm => report(
            "exchange.ws_base_url",
            format!(
                "must be set when exchange.base_url (`{}`) is not Binance's production host ({}): \
                 its streams are not at production's {} (or set exchange.streams = false)",
                x.base_url,
                super::BINANCE_PRODUCTION_URL,
                super::BINANCE_PRODUCTION_WS_URL
            ),
        ),
        _ => {}
    }
    for (key, value, max) in [
        ("exchange.stream_silence_seconds", x.stream_silence_seconds, 3600.0),
        ("exchange.stream_stale_seconds", x.stream_stale_seconds, 3600.0),
        (
            "exchange.stream_max_lifetime_seconds",
            x.stream_max_lifetime_seconds,
            86_400.0,
        ),
        ("exchange.listen_key_renew_seconds", x.listen_key_renew_seconds, 3_300.0),
        (
            "exchange.stream_reconcile_seconds",
            x.stream_reconcile_seconds,
            86_400.0,
        ),
    ] {
        if !(0.1..=max).contains(&value) {
            report(key, format!("must be between 0.1 and {max}"));
        }
    }
    if !(x.stream_connects_per_second > 0.0 && x.stream_connects_per_second <= 100.0) {
        report(
            "exchange.stream_connects_per_second",
            "must be above 0 and at most 100".into(),
        );
    }
    if !(1..=300).contains(&x.stream_connect_burst) {
        report("exchange.stream_connect_burst", "must be between 1 and 300".into());
    }
    if !(1..=200).contains(&x.user_streams_per_connection) {
        report(
            "exchange.user_streams_per_connection",
            "must be between 1 and 200 (the venue's streams per connection)".into(),
        );
    }
    let sim = &x.simulator;
    if sim.ws_connections_limit == 0 {
        report("exchange.simulator.ws_connections_limit", "must be above 0".into());
    }
    if !(1.0..=86_400.0).contains(&sim.ws_connections_window_seconds) {
        report(
            "exchange.simulator.ws_connections_window_seconds",
            "must be between 1 and 86400".into(),
        );
    }
    if sim.symbols.values().any(|&p| p.is_nan() || p <= 0.0) {
        report(
            "exchange.simulator.symbols",
            "every symbol needs an opening price above 0".into(),
        );
    }
    if sim.weight_limit == 0 {
        report("exchange.simulator.weight_limit", "must be above 0".into());
    }
    if !(0.0..=0.5).contains(&sim.volatility) {
        report("exchange.simulator.volatility", "must be between 0 and 0.5".into());
    }
    if !(100..=10_000_000).contains(&sim.keep_fills) {
        report(
            "exchange.simulator.keep_fills",
            "must be between 100 and 10000000".into(),
        );
    }
    for (key, value) in [
        (
            "exchange.simulator.ws_max_lifetime_seconds",
            sim.ws_max_lifetime_seconds,
        ),
        ("exchange.simulator.ws_ping_seconds", sim.ws_ping_seconds),
        ("exchange.simulator.listen_key_ttl_seconds", sim.listen_key_ttl_seconds),
    ] {
        if !(0.1..=7.0 * 86_400.0).contains(&value) {
            report(key, "must be between 0.1 and 604800 seconds".into());
        }
    }
    if !(100..=10_000_000).contains(&sim.keep_orders) {
        report(
            "exchange.simulator.keep_orders",
            "must be between 100 and 10000000".into(),
        );
    }
}

pub fn check_store(store: &super::StoreConfig, report: &mut dyn FnMut(&str, String)) {
    let url = &store.url;
    if !(url.starts_with("sqlite://") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        report("store.url", "must start with sqlite:// or postgres://".into());
    }
    if let Some(key) = &store.encryption_key
        && let Err(e) = super::decode_key32(key.expose())
    {
        report(super::ENCRYPTION_KEY_SETTING, e);
    }
    if !(store.data_retention_days > 0.0 && store.data_retention_days <= 3650.0) {
        report(
            "store.data_retention_days",
            "must be greater than 0 and at most 3650".into(),
        );
    }
    if !(store.run_retention_days > 0.0 && store.run_retention_days <= 3650.0) {
        report(
            "store.run_retention_days",
            "must be greater than 0 and at most 3650".into(),
        );
    }
}

pub fn check_ha(
    ha: &super::HaConfig,
    store: Option<&super::StoreConfig>,
    exchange: Option<super::ExchangeKind>,
    report: &mut dyn FnMut(&str, String),
) {
    if ha.enabled && store.is_some_and(|s| s.url.starts_with("sqlite://")) {
        report(
            "ha.enabled",
            "needs a postgres:// store.url: replicas cannot share a SQLite file".into(),
        );
    }
    if ha.enabled && exchange == Some(super::ExchangeKind::Simulated) {
        report(
            "ha.enabled",
            "needs a shared exchange: with exchange.kind = \"simulated\" every replica would simulate its own; \
             run `script-manager sim` once and point exchange.kind = \"binance-usdm\" and exchange.base_url at it"
                .into(),
        );
    }
    if ha
        .replica_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty() || id.len() > 200)
    {
        report(
            "ha.replica_id",
            "must be 1 to 200 characters (or unset for hostname-pid)".into(),
        );
    }
    if !(ha.lease_margin_seconds >= 1.0 && ha.lease_margin_seconds <= 3600.0) {
        report("ha.lease_margin_seconds", "must be between 1 and 3600".into());
    }
    if !(ha.heartbeat_seconds > 0.0 && ha.heartbeat_seconds <= ha.lease_margin_seconds / 2.0) {
        report(
            "ha.heartbeat_seconds",
            "must be greater than 0 and at most half of ha.lease_margin_seconds, so a lease is renewed before it ends"
                .into(),
        );
    }
}

pub fn check_levels(l: &super::LevelsConfig, request_timeout: Option<f64>, report: &mut dyn FnMut(&str, String)) {
    if !(l.close_attempt_seconds >= 1.0 && l.close_attempt_seconds <= 300.0) {
        report("levels.close_attempt_seconds", "must be between 1 and 300".into());
    }
    let timeout = request_timeout.unwrap_or(10.0);
    let margin = l.send_margin_seconds(timeout);
    if let Some(set) = l.close_send_margin_seconds
        && !(1.0..=600.0).contains(&set)
    {
        report("levels.close_send_margin_seconds", "must be between 1 and 600".into());
    }
    if let Some(lease) = l.close_lease_seconds
        && !(l.close_attempt_seconds + margin..=3600.0).contains(&lease)
    {
        report(
            "levels.close_lease_seconds",
            format!(
                "must be at least close_attempt_seconds + the send margin ({}), and at most 3600",
                l.close_attempt_seconds + margin
            ),
        );
    }
    if !(1..=10_000).contains(&l.max_concurrent_closes) {
        report("levels.max_concurrent_closes", "must be between 1 and 10000".into());
    }
    if !(l.backstop_offset > 0.0 && l.backstop_offset < 0.5) {
        report(
            "levels.backstop_offset",
            "must be between 0 and 0.5 (0.005 = the venue's order triggers 0.5 % beyond the level)".into(),
        );
    }
    if !(5.0..=3600.0).contains(&l.backstop_reconcile_seconds) {
        report("levels.backstop_reconcile_seconds", "must be between 5 and 3600".into());
    }
}

pub fn check_notifications(n: &super::NotificationsConfig, report: &mut dyn FnMut(&str, String)) {
    if let Some(host) = n
        .allowed_webhook_hosts
        .iter()
        .find(|h| super::webhook_host_entry(h).is_none())
    {
        report(
            "notifications.allowed_webhook_hosts",
            format!(
                "`{host}` is not a host name (hooks.example.com), an IP address (127.0.0.1) or a CIDR (10.1.0.0/16)"
            ),
        );
    }
    // The URL is a credential: the message names what is wrong, never the value.
    if let Some(url) = &n.webhook_url
        && !n.webhook_allowed(url.expose())
    {
        report(
            "notifications.webhook_url",
            match n.allowed_webhook_hosts.is_empty() {
                true => "is not an http(s) URL".into(),
                false => "is not an http(s) URL to one of notifications.allowed_webhook_hosts".into(),
            },
        );
    }
    if let Some(secret) = &n.signing_secret
        && secret.expose().len() < 16
    {
        report(
            "notifications.signing_secret",
            "must be at least 16 characters (e.g. `openssl rand -hex 32`)".into(),
        );
    }
}

pub fn check_events(e: &super::EventsConfig, report: &mut dyn FnMut(&str, String)) {
    if !(10..=60_000).contains(&e.price_interval_ms) {
        report("events.price_interval_ms", "must be between 10 and 60000".into());
    }
    if !(e.keepalive_seconds >= 1.0 && e.keepalive_seconds <= 300.0) {
        report("events.keepalive_seconds", "must be between 1 and 300".into());
    }
    if !(100..=1_000_000).contains(&e.buffer) {
        report("events.buffer", "must be between 100 and 1000000".into());
    }
    if !(8..=65_536).contains(&e.client_queue) {
        report("events.client_queue", "must be between 8 and 65536".into());
    }
    if !(1..=100_000).contains(&e.max_clients) {
        report("events.max_clients", "must be between 1 and 100000".into());
    }
}
