//! Configuration: the typed settings of the service and where they come from.
//!
//! Values are layered with figment (built-in defaults, then a TOML file, then
//! the environment; see [`load`]) and checked by [`validate`], which reports
//! every problem at once, each naming its key and the source that set it, so
//! that an operator can fix a bad deployment in one go.
//!
//! Owns: the settings types, layering, validation, redaction of secrets.
//! Imports nothing of the service (ground floor): a process kind's own
//! settings are checked by the kind, handed in as a [`KindCheck`].

pub(crate) mod defaults;
mod env;
mod files;
mod links;
mod load;
mod overrides;
mod secret;
mod simulator;
mod validate;

use std::collections::BTreeMap;

use figment::value::Value;
use serde::{Deserialize, Serialize};

pub use defaults::{SEED_PROCESSES, process_defaults};
pub use links::link_groups;
pub use load::{ConfigError, KindCheck, LoadOptions, Problem, load};
pub use overrides::{Overrides, SetOverrides};
pub use secret::{ENCRYPTION_KEY_SETTING, REDACTED, Secret, decode_key32, redact_url, redact_webhook_url};
pub use simulator::{Faults, SimulatorConfig, default_symbols};

/// The whole configuration of one service instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `false` keeps HTTP and metrics up but schedules nothing.
    pub enabled: bool,
    /// A tracing filter: `info`, `debug`, or directives like `script_manager=debug`.
    pub log_level: String,
    pub log_format: LogFormat,
    /// Whether the built-in trading processes are part of the defaults.
    pub builtin_processes: bool,
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub scheduler: SchedulerConfig,
    pub exchange: ExchangeConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub notifications: NotificationsConfig,
    pub demo: DemoConfig,
    pub ha: HaConfig,
    pub levels: LevelsConfig,
    /// The live event stream (`GET /api/events`).
    pub events: EventsConfig,
    /// Processes by id; the id is the table key and the `process` label.
    pub processes: BTreeMap<String, ProcessConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// Bearer token for the write endpoints; without one they answer 403.
    pub admin_token: Option<Secret>,
    /// Bearer token the data API's GETs (prices, positions, trades, dashboards,
    /// levels, alerts, notifications) require when set; the admin token works
    /// too. Status, health and `/metrics` stay open.
    pub read_token: Option<Secret>,
    /// Files holding the tokens instead (Docker and Kubernetes secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token_file: Option<String>,
    /// Named tokens with a scope (`[[http.tokens]]`): who did what is recorded by name.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// The status and runs documents need a token of any scope too.
    #[serde(default)]
    pub status_requires_token: bool,
    /// `/metrics` needs a token of any scope: `Authorization: Bearer <token>`,
    /// or basic auth with the token's name as user and the token as password.
    #[serde(default)]
    pub metrics_requires_token: bool,
    /// A request that takes longer is answered 503.
    pub request_timeout_seconds: f64,
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests handled at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// The largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Mutating requests per minute per token (429 beyond).
    pub mutations_per_minute: u32,
}

impl HttpConfig {
    /// The shorthands as the tokens they stand for: `admin_token` is the
    /// token `admin` (scope admin), `read_token` the token `read` (scope
    /// read); unset or empty ones are left out.
    pub fn shorthand_tokens(&self) -> Vec<(&'static str, Scope, &Secret)> {
        [
            ("admin", Scope::Admin, &self.admin_token),
            ("read", Scope::Read, &self.read_token),
        ]
        .into_iter()
        .filter_map(|(name, scope, t)| t.as_ref().filter(|t| !t.is_empty()).map(|t| (name, scope, t)))
        .collect()
    }
}

/// One named bearer token (`[[http.tokens]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: recorded in the audit trail and in `set_by`.
    pub name: String,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token instead (Docker and Kubernetes secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// The accounts this token may see on the event stream (and the data
    /// API's positions and trades); unset: every account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
}

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The data API's reads (and the status documents when they need a token).
    Read,
    /// Read, and levels, alerts and an account's flatten.
    Trade,
    /// Everything: processes, reload, the kill switch for all accounts, the audit trail.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trade => "trade",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (`http://collector:4318`); spans go to `/v1/traces`.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Up to this many accounts every account has its own series; above it
    /// only accounts with a problem (at most this many) do, and aggregates
    /// carry the rest (docs/accounts.md, "Accounts at scale").
    pub per_account_series_limit: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How long runs in flight may take to finish after SIGTERM before they are cancelled.
    pub shutdown_grace_seconds: f64,
    /// How many finished runs per process are kept for `/api/script-manager/runs`.
    pub run_history: usize,
    /// Stretch the intervals of less urgent processes while the API budget is tight.
    pub adaptive_intervals: bool,
    /// Share of our weight budget used this minute above which intervals stretch.
    pub adapt_above_share: f64,
    /// The longest a stretched interval gets, as a multiple of the configured one.
    pub adapt_max_factor: f64,
    /// Processes with this priority number or higher stretch (1 never does).
    pub adapt_from_priority: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://data/script-manager.db` (created on first run) or `postgres://user@host/db`.
    /// A password in it is shown as `[redacted]` by `check-config`.
    pub url: String,
    /// A file holding the URL instead (it may carry a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<String>,
    /// The key accounts added through the API are encrypted with at rest
    /// (32 bytes: 64 hex characters or base64). Normally given as
    /// `encryption_key_file`; without one, `POST /api/accounts` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<Secret>,
    /// A file holding the key (`SCRIPT_MANAGER_STORE__ENCRYPTION_KEY_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_file: Option<String>,
    /// Days of run history kept.
    pub run_retention_days: f64,
    /// Days finished levels and intents, triggered alerts and notifications
    /// no longer pending are kept.
    pub data_retention_days: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Receiver of position events (TP/SL executed or failed) and of alerts
    /// without their own. A credential (Slack and Discord put the key in the
    /// path): never printed, and shown whole only to admin callers.
    pub webhook_url: Option<Secret>,
    /// A file holding the URL instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_file: Option<String>,
    /// Host names, IP addresses and CIDRs webhooks may be sent to; empty
    /// allows any host. Alerts naming another host are refused (422), and
    /// nothing is ever posted to one. Whatever the host, a delivery connects
    /// only to public addresses, or to special ones (loopback, private,
    /// link-local, metadata, …) listed here as an address or CIDR.
    pub allowed_webhook_hosts: Vec<String>,
    /// Key of the HMAC-SHA256 signature every webhook body carries
    /// (`X-Script-Manager-Signature`); bodies are unsigned without one.
    pub signing_secret: Option<Secret>,
    /// A file holding the signing secret instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_file: Option<String>,
}

impl NotificationsConfig {
    /// Whether `url` is an http(s) URL to a host webhooks may go to.
    pub fn webhook_allowed(&self, url: &str) -> bool {
        webhook_allowed(url, &self.allowed_webhook_hosts)
    }
}

/// Whether `url` is an http(s) URL whose host is in `allowed` (any host when
/// `allowed` is empty): a name listed as it is (any case), a literal address
/// listed or inside a listed CIDR. The URL is read as the HTTP client reads
/// it (`http://2130706433/` is 127.0.0.1).
pub fn webhook_allowed(url: &str, allowed: &[String]) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    if allowed.is_empty() {
        return true;
    }
    match literal_address(host) {
        Some(ip) => webhook_address_listed(ip, allowed),
        None => allowed.iter().any(|h| h.eq_ignore_ascii_case(host)),
    }
}

/// Whether `ip` is one of the addresses or inside one of the CIDRs in
/// `allowed` (names there list no address). IPv4-mapped IPv6 counts as its IPv4.
pub fn webhook_address_listed(ip: std::net::IpAddr, allowed: &[String]) -> bool {
    let ip = ip.to_canonical();
    allowed.iter().any(|entry| match webhook_host_entry(entry) {
        Some(HostEntry::Address(a)) => a.to_canonical() == ip,
        Some(HostEntry::Network(n)) => n.contains(&ip),
        _ => false,
    })
}

/// A URL's host as an address, when it is one (`[::1]` included).
fn literal_address(host: &str) -> Option<std::net::IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// One entry of `notifications.allowed_webhook_hosts`.
enum HostEntry {
    Name,
    Address(std::net::IpAddr),
    Network(ipnet::IpNet),
}

/// What an entry is, or `None` when it is none of a host name, an address, a CIDR.
fn webhook_host_entry(entry: &str) -> Option<HostEntry> {
    if let Ok(ip) = entry.parse() {
        return Some(HostEntry::Address(ip));
    }
    if let Ok(net) = entry.parse::<ipnet::IpNet>() {
        return Some(HostEntry::Network(net.trunc()));
    }
    let name_like = !entry.is_empty()
        && entry.len() <= 253
        && entry
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    name_like.then_some(HostEntry::Name)
}

/// Several replicas on one PostgreSQL (issue 7): each tick runs on the
/// replica that holds the process's lease, and every write of a run is fenced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// Requires a `postgres://` store.
    pub enabled: bool,
    /// This replica's name in leases, logs and the status API; hostname-pid when unset.
    pub replica_id: Option<String>,
    /// A lease lasts a run's timeout plus this margin, from its last renewal.
    pub lease_margin_seconds: f64,
    /// How often a replica renews its leases and reports itself alive.
    pub heartbeat_seconds: f64,
    /// Spread the exchange accounts over the live replicas: each replica runs
    /// the account processes (trade, position and dashboard sync, the user
    /// stream) for its own accounts. False: one replica at a time runs each
    /// of them for every account (the behaviour before accounts were shared).
    pub share_accounts: bool,
}

/// The live event stream (`[events]`, `GET /api/events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Price events per symbol are conflated to at most one per this many ms.
    pub price_interval_ms: u64,
    /// A comment line goes to every client this often, so proxies keep the connection.
    pub keepalive_seconds: f64,
    /// Events kept for replay (`Last-Event-ID`); an older id gets `reset` and a snapshot.
    pub buffer: usize,
    /// Events waiting for one client; a client whose queue is full is dropped.
    pub client_queue: usize,
    /// Clients connected at once (503 beyond). Keep `http.max_connections` above it.
    pub max_clients: usize,
}

/// How crossed levels are closed (`[levels]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelsConfig {
    /// Deadline of one attempt at a close (a look-up, an order, its fill, a position read).
    pub close_attempt_seconds: f64,
    /// How long a claim on a close lasts from its last renewal; another
    /// replica may take the close over only after it lapsed. Unset: the
    /// attempt's deadline plus the send margin plus 5 s.
    pub close_lease_seconds: Option<f64>,
    /// No order leaves with less than this left on the claim (our monotonic
    /// clock), so a request sent is answered or abandoned before another
    /// replica may send. Unset: `exchange.request_timeout_seconds`.
    pub close_send_margin_seconds: Option<f64>,
    /// Close attempts in flight at once (each on its own intent).
    pub max_concurrent_closes: usize,
    /// Which levels get a conditional order on the venue as a second line:
    /// `stop_loss` (the default), `both` (take-profits too) or `off`.
    pub backstop: BackstopMode,
    /// How much further than the level's own price the venue's order
    /// triggers (0.005 = 0.5 %), so the service's close fires first.
    pub backstop_offset: f64,
    /// How often the venue's open conditional orders are compared with the levels.
    pub backstop_reconcile_seconds: f64,
}

/// `levels.backstop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackstopMode {
    StopLoss,
    Both,
    Off,
}

impl LevelsConfig {
    /// The send margin in force: as set, or the exchange's request timeout.
    pub fn send_margin_seconds(&self, request_timeout_seconds: f64) -> f64 {
        self.close_send_margin_seconds.unwrap_or(request_timeout_seconds)
    }

    /// The claim's length in force: as set, or attempt + margin + 5 s.
    pub fn lease_seconds(&self, request_timeout_seconds: f64) -> f64 {
        self.close_lease_seconds
            .unwrap_or(self.close_attempt_seconds + self.send_margin_seconds(request_timeout_seconds) + 5.0)
    }
}

/// Demo data for the simulated exchange: on a first run (no levels, no
/// alerts yet) a take-profit/stop-loss level for each open demo position and
/// a couple of price alerts are created, so every process has work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    pub enabled: bool,
    /// Distance of the demo levels and alerts from the current price (0.005 = 0.5 %).
    pub distance: f64,
}

/// Which exchange, how much of its budget we allow ourselves, and the accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    pub kind: ExchangeKind,
    /// Binance's REST base URL; unused for the in-process simulator.
    pub base_url: String,
    /// Share of the venue's weight limit we allow ourselves (0 < m ≤ 1).
    pub weight_safety_margin: f64,
    /// Share of our budget kept for `reserved_for` processes.
    pub reserved_share: f64,
    pub reserved_for: Vec<String>,
    pub recv_window_ms: u64,
    pub request_timeout_seconds: f64,
    /// Whether the replicas reach the venue from one address (`shared`: one
    /// weight budget for the cluster, kept in PostgreSQL) or each from its
    /// own (`per_replica`: each replica's budget is its own address's).
    pub egress: Egress,
    /// Symbols trade sync always covers.
    pub symbols: Vec<String>,
    pub accounts: BTreeMap<String, AccountConfig>,
    /// Prices and account events by WebSocket (`market_stream`, `user_stream`),
    /// with REST as the safety net; `false` keeps polling only.
    pub streams: bool,
    /// Binance's WebSocket base (routed paths `/public`, `/market`, `/private`);
    /// the in-process simulator sets its own. Unset: production's, and only
    /// with production's `base_url` (anything else must say where its streams are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_base_url: Option<String>,
    /// A connection that received nothing this long is replaced (a silent socket).
    pub stream_silence_seconds: f64,
    /// A streamed price older than this is stale: REST is asked instead.
    pub stream_stale_seconds: f64,
    /// The venue closes a connection after this long (24 h); ours reconnects
    /// ahead of it, the new connection up before the old one goes.
    pub stream_max_lifetime_seconds: f64,
    /// How often a user stream's listen key is extended (it expires after 60 min).
    pub listen_key_renew_seconds: f64,
    /// While an account's user stream is healthy, trade and position sync
    /// reconcile it over REST only this often.
    pub stream_reconcile_seconds: f64,
    /// New WebSocket connections per second, for every stream together (the
    /// venue limits new connections per IP: 300 per 5 minutes).
    pub stream_connects_per_second: f64,
    /// New connections that may go at once before the pace applies.
    pub stream_connect_burst: u32,
    /// Accounts' listen keys carried by one user-stream connection (a
    /// combined stream, at most 200); 1 keeps one connection per account.
    pub user_streams_per_connection: usize,
    pub simulator: SimulatorConfig,
}

/// Binance's production REST host, and the WebSocket host that goes with it.
pub const BINANCE_PRODUCTION_URL: &str = "https://fapi.binance.com";
pub const BINANCE_PRODUCTION_WS_URL: &str = "wss://fstream.binance.com";

impl ExchangeConfig {
    /// Where the venue's streams are: `ws_base_url`, or production's when
    /// `base_url` is production's; `None` when it cannot be told (a testnet or
    /// another venue without `ws_base_url`: a configuration error with streams on).
    pub fn ws_url(&self) -> Option<&str> {
        match &self.ws_base_url {
            Some(url) => Some(url),
            None if self.base_url.trim_end_matches('/') == BINANCE_PRODUCTION_URL => Some(BINANCE_PRODUCTION_WS_URL),
            None => None,
        }
    }
}

/// `exchange.egress`: how the replicas' requests reach the venue, which
/// counts its weight limit per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Egress {
    /// One outbound address for every replica: one budget for the cluster.
    Shared,
    /// Each replica has its own outbound address: each its own budget.
    PerReplica,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExchangeKind {
    #[serde(rename = "simulated")]
    Simulated,
    #[serde(rename = "binance-usdm")]
    BinanceUsdm,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    #[serde(default)]
    pub api_key: Secret,
    #[serde(default)]
    pub api_secret: Secret,
    /// Files holding the key and secret instead (Docker and Kubernetes secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_secret_file: Option<String>,
}

/// Client coordination knobs, all on by default; off reproduces the uncoordinated pattern.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// One price call for all symbols instead of one per symbol.
    pub batching: bool,
    /// Identical GETs in flight share one request.
    pub dedupe: bool,
    /// Callers may be answered from a cache within the age they accept.
    pub cache: bool,
}

/// One scheduled process: the seed's `ProcessConfig` plus `kind` and the
/// kind's own settings (kept as raw values and checked by the kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub kind: String,
    pub name: Option<String>,
    pub enabled: bool,
    /// `periodic` (a run per tick of `interval_seconds`) or `continuous` (one
    /// long run, started at boot and restarted with backoff when it ends).
    pub mode: ProcessMode,
    pub interval_seconds: f64,
    pub max_api_calls_per_minute: u32,
    pub priority: u8,
    pub timeout_seconds: f64,
    pub retry_count: u32,
    /// Base of the exponential backoff between retries.
    pub retry_backoff_seconds: f64,
    /// Delay of the first tick after start-up, so processes do not all fire at once.
    pub start_offset_seconds: f64,
    /// A chain instead of a clock: run right after each of these processes has
    /// completed a successful run since this one last started. `interval_seconds`
    /// is then a deadline: past it, the process runs anyway (trigger `deadline`).
    #[serde(default)]
    pub after: Vec<String>,
    /// Never run at the same time as any of these (symmetric: naming it on one side is enough).
    #[serde(default)]
    pub exclusive_with: Vec<String>,
    /// Settings specific to `kind` (for `command`: `command`, `args`, ...).
    #[serde(flatten)]
    pub settings: BTreeMap<String, Value>,
}

/// How the scheduler runs a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessMode {
    #[default]
    Periodic,
    /// A long run (a stream): its timeout is the lease it renews while it runs
    /// (HA), not a limit on the run; a trigger restarts it.
    Continuous,
}

impl ProcessConfig {
    pub fn continuous(&self) -> bool {
        self.mode == ProcessMode::Continuous
    }

    /// Whether it runs after other processes rather than on its own clock.
    pub fn chained(&self) -> bool {
        !self.after.is_empty()
    }

    pub fn display_name(&self, id: &str) -> String {
        self.name.clone().unwrap_or_else(|| id.to_string())
    }
}

impl Config {
    /// The configuration as TOML with every secret replaced by `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.store.url = redact_url(&shown.store.url);
        let mut value = toml::Value::try_from(&shown).expect("config serializes to TOML");
        secret::redact_by_key(&mut value);
        toml::to_string_pretty(&value).expect("TOML value prints")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn webhook_hosts_match_names_addresses_and_cidrs() {
        let allowed = list(&["Hooks.Example.com", "127.0.0.1", "10.1.0.0/16", "::1"]);
        for (url, want) in [
            ("https://hooks.example.com/a/b", true),
            ("https://HOOKS.example.com", true),
            ("https://evil.hooks.example.com/", false),
            ("http://127.0.0.1:8080/hook", true),
            // The client reads these as 127.0.0.1; so does the check.
            ("http://2130706433/hook", true),
            ("http://0x7f.0.0.1/hook", true),
            ("http://127.0.0.2/hook", false),
            ("http://10.1.200.3/", true),
            ("http://10.2.0.1/", false),
            ("http://[::1]:9000/", true),
            ("http://[::2]/", false),
            ("http://localhost/", false),
            ("ftp://hooks.example.com/", false),
            ("not a url", false),
        ] {
            assert_eq!(webhook_allowed(url, &allowed), want, "{url}");
        }
        assert!(webhook_allowed("http://10.0.0.1/", &[]), "an empty list names no host");
        assert!(!webhook_allowed("file:///etc/passwd", &[]));
    }

    #[test]
    fn listed_addresses_include_their_ipv4_mapped_forms_and_names_list_none() {
        let allowed = list(&["127.0.0.1", "10.1.0.0/16", "localhost"]);
        let listed = |ip: &str| webhook_address_listed(ip.parse().unwrap(), &allowed);
        assert!(listed("127.0.0.1"));
        assert!(listed("::ffff:127.0.0.1"));
        assert!(listed("10.1.2.3"));
        assert!(listed("::ffff:10.1.2.3"));
        assert!(!listed("127.0.0.2"));
        assert!(!listed("::1"), "the name localhost lists no address");
        assert!(!listed("10.2.0.1"));
    }

    #[test]
    fn entries_are_names_addresses_or_cidrs() {
        for good in [
            "hooks.example.com",
            "localhost",
            "127.0.0.1",
            "::1",
            "10.0.0.0/8",
            "fd00::/8",
        ] {
            assert!(webhook_host_entry(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "http://x",
            "hooks.example.com/path",
            "a b",
            "host:80",
            "10.0.0.0/33",
            "a..b",
        ] {
            assert!(webhook_host_entry(bad).is_none(), "{bad}");
        }
    }
}
