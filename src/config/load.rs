//! Layering: built-in defaults → TOML file → environment, then validation.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Metadata, Profile};

use super::env::EnvLayer;
use super::{Config, defaults, files, validate};

/// Where to read configuration from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config PATH`; falls back to `SCRIPT_MANAGER_CONFIG`.
    pub config_path: Option<PathBuf>,
    /// The environment to read; `None` means the process environment.
    pub env: Option<Vec<(String, String)>>,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    /// "file config.toml", "environment variable TRADE_SYNC_INTERVAL", "built-in default".
    pub source: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (from {})", self.key, self.message, self.source)
    }
}

/// Every problem found, reported together.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Checks a process kind's own settings: `Err` if the kind is unknown,
/// otherwise the problems found as (setting key, message). The process
/// layer provides it (`processes::check_settings`), so that configuration
/// imports nothing of the service.
pub type KindCheck = fn(&str, &std::collections::BTreeMap<String, Value>) -> Result<Vec<(String, String)>, String>;

/// Loads, layers and validates the configuration; `kinds` checks each
/// process's kind-specific settings.
pub fn load(options: &LoadOptions, kinds: KindCheck) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = options.env.clone().unwrap_or_else(|| std::env::vars().collect());
    let path = options.config_path.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == "SCRIPT_MANAGER_CONFIG")
            .map(|(_, v)| PathBuf::from(v))
    });
    if let Some(path) = &path {
        if !path.is_file() {
            return Err(single(
                "config",
                format!("file {} does not exist", path.display()),
                "--config / SCRIPT_MANAGER_CONFIG",
            ));
        }
        if let Err(e) = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| t.parse::<toml::Table>().map(|_| ()).map_err(|e| e.to_string()))
        {
            return Err(single(
                "config",
                format!("cannot read {}: {e}", path.display()),
                &format!("file {}", path.display()),
            ));
        }
    }

    let overrides = overrides(path.as_deref(), &env);
    let (secret_files, file_problems) = files::layer(&overrides, |key| source_of(&overrides, key));
    let with_builtin = overrides.extract_inner::<bool>("builtin_processes").unwrap_or(true);
    // The stream processes are built in only when streams are on.
    let with_streams = overrides
        .extract_inner::<bool>("exchange.streams")
        .unwrap_or(defaults::STREAMS_BY_DEFAULT);
    let defaults = defaults::config(with_builtin, with_streams);
    let mut figment = Figment::from(Serialized::defaults(defaults)).merge(overrides);
    figment = secret_files.merge_into(figment);
    figment = fill_process_defaults(figment);

    let mut problems = file_problems;
    let mut config = extract(&figment, kinds, &mut problems);
    if let Some(config) = &mut config {
        files::token_files(&mut config.http.tokens, &mut problems);
        validate::check_tokens(&config.http, &mut |key: &str, message: String| {
            problems.push(Problem {
                source: source_of(&figment, "http.tokens"),
                key: key.to_string(),
                message,
            })
        });
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError { problems }),
    }
}

fn single(key: &str, message: String, source: &str) -> ConfigError {
    ConfigError {
        problems: vec![Problem {
            key: key.into(),
            message,
            source: source.into(),
        }],
    }
}

/// Everything above the defaults, in increasing precedence.
fn overrides(path: Option<&Path>, env: &[(String, String)]) -> Figment {
    let mut figment = Figment::new();
    if let Some(path) = path {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(EnvLayer::otel(env))
        .merge(EnvLayer::prefixed(env))
        .merge(EnvLayer::seed(env))
}

/// A process the defaults do not know gets the default settings for every key it omits.
fn fill_process_defaults(mut figment: Figment) -> Figment {
    let Ok(Value::Dict(_, processes)) = figment.find_value("processes") else {
        return figment;
    };
    let mut base = match Value::serialize(defaults::process_defaults("")) {
        Ok(Value::Dict(_, dict)) => dict,
        _ => return figment,
    };
    base.remove("kind");
    for id in processes.keys() {
        figment = figment.join(Serialized::default(&format!("processes.{id}"), &base));
    }
    figment
}

/// Deserializes and checks piece by piece, so one bad piece does not hide the others.
fn extract(figment: &Figment, kinds: KindCheck, problems: &mut Vec<Problem>) -> Option<Config> {
    let mut semantic = Vec::new();
    let mut report = |key: &str, message: String| semantic.push((key.to_string(), message));
    if let Ok(Value::Dict(_, root)) = figment.find_value("processes") {
        let mut processes = std::collections::BTreeMap::new();
        for id in root.keys() {
            if let Some(p) = piece::<super::ProcessConfig>(figment, &format!("processes.{id}"), problems) {
                validate::check_process(id, &p, kinds, &mut report);
                processes.insert(id.clone(), p);
            }
        }
        if processes.len() == root.len() {
            super::links::check_links(&processes, &mut report);
        }
    }
    if let Some(http) = piece(figment, "http", problems) {
        validate::check_http(&http, &mut report);
    }
    if let Some(telemetry) = piece(figment, "telemetry", problems) {
        validate::check_telemetry(&telemetry, &mut report);
    }
    if let Some(scheduler) = piece(figment, "scheduler", problems) {
        validate::check_scheduler(&scheduler, &mut report);
    }
    if let Some(exchange) = piece(figment, "exchange", problems) {
        validate::check_exchange(&exchange, &mut report);
    }
    let _ = piece::<super::UpstreamConfig>(figment, "upstream", problems);
    if let Some(notifications) = piece(figment, "notifications", problems) {
        validate::check_notifications(&notifications, &mut report);
    }
    if let Some(demo) = piece::<super::DemoConfig>(figment, "demo", problems)
        && !(demo.distance > 0.0 && demo.distance < 0.5)
    {
        report("demo.distance", "must be between 0 and 0.5".into());
    }
    let store = piece::<super::StoreConfig>(figment, "store", problems);
    if let Some(store) = &store {
        validate::check_store(store, &mut report);
    }
    if let Some(ha) = piece(figment, "ha", problems) {
        let kind = piece::<super::ExchangeKind>(figment, "exchange.kind", &mut Vec::new());
        validate::check_ha(&ha, store.as_ref(), kind, &mut report);
    }
    if let Some(levels) = piece(figment, "levels", problems) {
        let timeout = piece::<f64>(figment, "exchange.request_timeout_seconds", &mut Vec::new());
        validate::check_levels(&levels, timeout, &mut report);
    }
    if let Some(events) = piece(figment, "events", problems) {
        validate::check_events(&events, &mut report);
    }
    if let Some(level) = piece::<String>(figment, "log_level", problems) {
        validate::check_log_level(&level, &mut report);
    }
    let _ = piece::<super::LogFormat>(figment, "log_format", problems);
    let _ = piece::<bool>(figment, "enabled", problems);
    let _ = piece::<bool>(figment, "builtin_processes", problems);
    for (key, message) in semantic {
        problems.push(Problem {
            source: source_of(figment, &key),
            key,
            message,
        });
    }
    let before = problems.len();
    let whole = figment.extract::<Config>();
    match whole {
        Ok(config) => Some(config),
        Err(e) => {
            record_error(e, &[], problems);
            // A problem already reported for a piece is not repeated.
            let (old, new) = problems.split_at(before);
            let fresh: Vec<Problem> = new
                .iter()
                .filter(|p| !old.iter().any(|o| o.key == p.key))
                .cloned()
                .collect();
            problems.truncate(before);
            problems.extend(fresh);
            None
        }
    }
}

fn piece<T: serde::de::DeserializeOwned>(figment: &Figment, key: &str, problems: &mut Vec<Problem>) -> Option<T> {
    match figment.extract_inner::<T>(key) {
        Ok(value) => Some(value),
        Err(e) => {
            let prefix: Vec<String> = key.split('.').map(String::from).collect();
            record_error(e, &prefix, problems);
            None
        }
    }
}

/// Turns figment errors into problems. Errors from `extract_inner(prefix)`
/// carry the prefix after the relative path; put it back in front.
fn record_error(error: figment::Error, prefix: &[String], problems: &mut Vec<Problem>) {
    for e in error {
        let mut path = e.path.clone();
        if !prefix.is_empty() && path.ends_with(prefix) {
            path.truncate(path.len() - prefix.len());
        }
        if path.starts_with(prefix) {
            path.drain(..prefix.len());
        }
        let mut full = prefix.to_vec();
        full.extend(path);
        if let figment::error::Kind::UnknownField(field, _) = &e.kind
            && full.last() != Some(field)
        {
            full.push(field.clone());
        }
        let key = if full.is_empty() {
            "config".to_string()
        } else {
            full.join(".")
        };
        let source = e
            .metadata
            .as_ref()
            .map(|m| describe(m, &full))
            .unwrap_or_else(|| "configuration".into());
        problems.push(Problem {
            key,
            message: e.kind.to_string(),
            source,
        });
    }
}

fn describe(metadata: &Metadata, path: &[String]) -> String {
    match &metadata.source {
        Some(figment::Source::File(file)) => format!("file {}", file.display()),
        _ if metadata.name == "environment variable" => {
            format!("environment variable {}", metadata.interpolate(&Profile::Default, path))
        }
        _ => "built-in defaults".into(),
    }
}

fn source_of(figment: &Figment, key: &str) -> String {
    let path: Vec<String> = key.split('.').map(String::from).collect();
    let mut probe = path.clone();
    while !probe.is_empty() {
        if let Some(md) = figment.find_metadata(&probe.join(".")) {
            return describe(md, &path);
        }
        probe.pop();
    }
    "configuration".into()
}
