//! Environment variables as a figment provider that remembers, for every key,
//! the exact variable that set it, so errors can name `TRADE_SYNC_INTERVAL`
//! rather than a reconstructed guess.

use std::collections::HashMap;

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::defaults::SEED_PROCESSES;

/// Environment variables that set configuration keys, with their origin.
#[derive(Clone)]
pub struct EnvLayer {
    label: &'static str,
    /// (variable name, key path, raw value)
    vars: Vec<(String, String, String)>,
}

impl EnvLayer {
    /// `SCRIPT_MANAGER_*` with `__` for nesting (`SCRIPT_MANAGER_HTTP__LISTEN`).
    /// `SCRIPT_MANAGER_CONFIG` names the file and is not a key; the seed's
    /// `SCRIPT_MANAGER_ENABLED` / `_LOG_LEVEL` fall out of the same rule.
    pub fn prefixed(env: &[(String, String)]) -> Self {
        let vars = env
            .iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix("SCRIPT_MANAGER_")?;
                if rest.is_empty() || rest == "CONFIG" {
                    return None;
                }
                let path = rest
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".");
                Some((name.clone(), path, value.clone()))
            })
            .collect();
        EnvLayer {
            label: "environment variable",
            vars,
        }
    }

    /// The seed's names: `<PROCESS>_INTERVAL`, `<PROCESS>_API_LIMIT`.
    pub fn seed(env: &[(String, String)]) -> Self {
        let mut vars = Vec::new();
        for id in SEED_PROCESSES {
            let upper = id.to_ascii_uppercase();
            for (suffix, key) in [
                ("INTERVAL", "interval_seconds"),
                ("API_LIMIT", "max_api_calls_per_minute"),
            ] {
                let name = format!("{upper}_{suffix}");
                if let Some((_, value)) = env.iter().find(|(n, _)| *n == name) {
                    vars.push((name, format!("processes.{id}.{key}"), value.clone()));
                }
            }
        }
        EnvLayer {
            label: "environment variable",
            vars,
        }
    }

    /// Standard OpenTelemetry variables we honour.
    pub fn otel(env: &[(String, String)]) -> Self {
        let vars = env
            .iter()
            .filter(|(name, _)| name == "OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|(name, value)| (name.clone(), "telemetry.otlp_endpoint".to_string(), value.clone()))
            .collect();
        EnvLayer {
            label: "environment variable",
            vars,
        }
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        let names: HashMap<String, String> = self
            .vars
            .iter()
            .map(|(name, path, _)| (path.clone(), name.clone()))
            .collect();
        Metadata::named(self.label).interpolater(move |_: &Profile, keys: &[&str]| {
            let path = keys.join(".");
            // The variable that set this key or, for a key inside a value, its nearest parent.
            let mut probe = path.as_str();
            loop {
                if let Some(name) = names.get(probe) {
                    return name.clone();
                }
                match probe.rfind('.') {
                    Some(dot) => probe = &probe[..dot],
                    None => return path.clone(),
                }
            }
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut root = Dict::new();
        for (_, path, raw) in &self.vars {
            let value: Value = raw.parse().expect("figment value parsing is infallible");
            insert_path(&mut root, path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

/// Sets `value` at the dotted `path` of `dict`, creating the tables on the way.
pub(super) fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let child = dict.entry(head.to_string()).or_insert_with(|| Value::from(Dict::new()));
            if !matches!(child, Value::Dict(..)) {
                *child = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = child {
                insert_path(inner, rest, value);
            }
        }
    }
}
