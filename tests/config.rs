//! Configuration layering and validation through the public loader.

use std::io::Write;

use script_manager::app::load_config as load;
use script_manager::config::{Config, ConfigError, LoadOptions};

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load_with(
    text: Option<&str>,
    env: &[(&str, &str)],
) -> (Result<Config, ConfigError>, Option<tempfile::NamedTempFile>) {
    let f = text.map(file);
    let options = LoadOptions {
        config_path: f.as_ref().map(|f| f.path().to_path_buf()),
        env: Some(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
    };
    (load(&options), f)
}

fn ok(text: Option<&str>, env: &[(&str, &str)]) -> Config {
    load_with(text, env).0.unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: Option<&str>, env: &[(&str, &str)]) -> Vec<String> {
    match load_with(text, env).0 {
        Ok(_) => panic!("expected an invalid configuration"),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn defaults_alone_are_the_seed_table() {
    let c = ok(None, &[]);
    assert!(c.enabled);
    assert_eq!(c.http.listen, "127.0.0.1:9797");
    let row = |id: &str| {
        let p = &c.processes[id];
        (
            p.interval_seconds,
            p.max_api_calls_per_minute,
            p.priority,
            p.timeout_seconds,
            p.retry_count,
        )
    };
    assert_eq!(row("trade_sync"), (30.0, 60, 1, 30.0, 3));
    assert_eq!(row("level_monitor"), (2.0, 100, 1, 2.0, 1));
    assert_eq!(row("price_update"), (10.0, 30, 2, 10.0, 2));
    assert_eq!(row("notification_check"), (5.0, 30, 2, 5.0, 2));
    assert_eq!(row("position_sync"), (60.0, 30, 3, 30.0, 3));
    assert_eq!(row("dashboard_sync"), (30.0, 10, 4, 30.0, 1));
}

#[test]
fn every_seed_environment_name_overrides_the_file() {
    let ids = [
        "trade_sync",
        "level_monitor",
        "price_update",
        "notification_check",
        "position_sync",
        "dashboard_sync",
    ];
    let mut text = String::new();
    for id in ids {
        text.push_str(&format!(
            "[processes.{id}]\ninterval_seconds = 99\nmax_api_calls_per_minute = 99\n"
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        let upper = id.to_uppercase();
        let interval = format!("{}", 11 + i);
        let limit = format!("{}", 21 + i);
        let interval_var = format!("{upper}_INTERVAL");
        let limit_var = format!("{upper}_API_LIMIT");
        let c = ok(Some(&text), &[(&interval_var, &interval), (&limit_var, &limit)]);
        assert_eq!(c.processes[*id].interval_seconds, (11 + i) as f64, "{interval_var}");
        assert_eq!(
            c.processes[*id].max_api_calls_per_minute,
            (21 + i) as u32,
            "{limit_var}"
        );
        // Only the named process changed.
        let other = ids[(i + 1) % ids.len()];
        assert_eq!(c.processes[other].interval_seconds, 99.0);
    }
    let c = ok(
        Some("enabled = true\nlog_level = \"info\"\n"),
        &[
            ("SCRIPT_MANAGER_ENABLED", "false"),
            ("SCRIPT_MANAGER_LOG_LEVEL", "debug"),
        ],
    );
    assert!(!c.enabled);
    assert_eq!(c.log_level, "debug");
}

#[test]
fn precedence_is_defaults_file_prefixed_env_then_seed_names() {
    let text = "[processes.trade_sync]\ninterval_seconds = 40\n";
    assert_eq!(ok(Some(text), &[]).processes["trade_sync"].interval_seconds, 40.0);
    let nested = ("SCRIPT_MANAGER_PROCESSES__TRADE_SYNC__INTERVAL_SECONDS", "50");
    assert_eq!(ok(Some(text), &[nested]).processes["trade_sync"].interval_seconds, 50.0);
    assert_eq!(
        ok(Some(text), &[nested, ("TRADE_SYNC_INTERVAL", "60")]).processes["trade_sync"].interval_seconds,
        60.0
    );
    let c = ok(
        None,
        &[
            ("SCRIPT_MANAGER_HTTP__LISTEN", "0.0.0.0:9000"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
        ],
    );
    assert_eq!(c.http.listen, "0.0.0.0:9000");
    assert_eq!(c.telemetry.otlp_endpoint.as_deref(), Some("http://otel:4318"));
}

#[test]
fn a_file_that_names_one_section_keeps_every_default_process() {
    let c = ok(Some("[http]\nlisten = \"127.0.0.1:1\"\n"), &[]);
    assert_eq!(
        c.processes.len(),
        9,
        "the seed's six, the two streams (on by default) and backstop_sync"
    );
    assert!(c.processes["market_stream"].continuous() && c.processes["user_stream"].continuous());
    let c = ok(Some("[exchange]\nstreams = false\n"), &[]);
    assert_eq!(c.processes.len(), 7, "streams off: the seed's six and backstop_sync");
    let c = ok(
        Some("builtin_processes = false\n[processes.backup]\nkind = \"command\"\ncommand = \"true\"\n"),
        &[],
    );
    assert_eq!(c.processes.keys().collect::<Vec<_>>(), ["backup"]);
    let backup = &c.processes["backup"];
    assert_eq!(
        (backup.interval_seconds, backup.timeout_seconds, backup.enabled),
        (60.0, 30.0, true),
        "defaults fill what the file omits"
    );
}

#[test]
fn invalid_values_name_the_key_and_where_it_came_from_all_at_once() {
    let text = "log_format = \"yaml\"\n[processes.trade_sync]\ninterval_seconds = -5\npriority = 0\n[http]\nlisten = \"nowhere\"\n";
    let found = problems(
        Some(text),
        &[
            ("LEVEL_MONITOR_INTERVAL", "fast"),
            ("SCRIPT_MANAGER_SCHEDULER__RUN_HISTORY", "0"),
        ],
    );
    let joined = found.join("\n");
    for needle in [
        "processes.trade_sync.interval_seconds",
        "processes.trade_sync.priority",
        "http.listen",
        "log_format",
        "processes.level_monitor.interval_seconds",
        "environment variable LEVEL_MONITOR_INTERVAL",
        "scheduler.run_history",
        "environment variable SCRIPT_MANAGER_SCHEDULER__RUN_HISTORY",
        ".toml",
    ] {
        assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
    }
    assert!(found.len() >= 5, "{joined}");
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(problems(Some("colour = \"blue\"\n"), &[]).join("\n").contains("colour"));
    assert!(
        problems(Some("[http]\nlisten = \"127.0.0.1:1\"\nport = 3\n"), &[])
            .join("\n")
            .contains("http.port")
    );
    let p = problems(
        Some("[processes.x]\nkind = \"command\"\ncommand = \"true\"\ncomand = \"typo\"\n"),
        &[],
    )
    .join("\n");
    assert!(p.contains("processes.x.comand"), "{p}");
    let p = problems(Some("[processes.x]\nkind = \"cron\"\n"), &[]).join("\n");
    assert!(p.contains("processes.x.kind") && p.contains("unknown kind"), "{p}");
    let p = problems(None, &[("SCRIPT_MANAGER_HTTP__LISTN", "x")]).join("\n");
    assert!(p.contains("SCRIPT_MANAGER_HTTP__LISTN"), "{p}");
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let options = LoadOptions {
        config_path: Some("/nonexistent/sm.toml".into()),
        env: Some(vec![]),
    };
    let e = load(&options).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/sm.toml"), "{e}");
    let options = LoadOptions {
        config_path: None,
        env: Some(vec![("SCRIPT_MANAGER_CONFIG".into(), "/nope.toml".into())]),
    };
    assert!(load(&options).is_err());
}

#[test]
fn redacted_output_holds_no_secret() {
    let text = "[http]\nadmin_token = \"tok-123456789\"\n[processes.job]\nkind = \"command\"\ncommand = \"true\"\nenv = { DB_PASSWORD = \"pw-987654321\", REGION = \"eu\" }\n";
    let c = ok(Some(text), &[]);
    let printed = c.to_redacted_toml();
    assert!(
        !printed.contains("tok-123456789") && !printed.contains("pw-987654321"),
        "{printed}"
    );
    assert!(printed.contains("[redacted]") && printed.contains("eu"));
    assert!(!format!("{c:?}").contains("tok-123456789"), "Debug leaks the token");
    assert_eq!(c.http.admin_token.as_ref().unwrap().expose(), "tok-123456789");
}

#[test]
fn the_default_configuration_file_matches_the_built_in_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/script-manager.toml");
    let from_file = load(&LoadOptions {
        config_path: Some(path),
        env: Some(vec![]),
    })
    .unwrap();
    let built_in = ok(None, &[]);
    assert_eq!(from_file.to_redacted_toml(), built_in.to_redacted_toml());
}

/// Dotted paths of every leaf of `value` (an empty table counts as a leaf).
fn leaf_paths(value: &toml::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match value {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(v, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn the_reference_names_every_key_with_its_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/reference.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let from_reference = load(&LoadOptions {
        config_path: Some(path),
        env: Some(vec![]),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut from_reference = from_reference;
    // The one kind setting it spells out is level_monitor's default price source.
    let monitor = from_reference.processes.get_mut("level_monitor").unwrap();
    let source = monitor.settings.remove("price_source").map(|v| v.into_string());
    assert_eq!(source, Some(Some("book".to_string())));
    let built_in = ok(None, &[]);
    assert_eq!(
        from_reference.to_redacted_toml(),
        built_in.to_redacted_toml(),
        "the reference states a value that is not the default"
    );
    let mut documented = std::collections::BTreeSet::new();
    let table: toml::Table = toml::from_str(&text).unwrap();
    leaf_paths(&toml::Value::Table(table), "", &mut documented);
    let mut every = std::collections::BTreeSet::new();
    leaf_paths(&toml::Value::try_from(&built_in).unwrap(), "", &mut every);
    // Accounts have no default; the reference shows one commented out.
    let missing: Vec<&String> = every
        .difference(&documented)
        .filter(|k| *k != "exchange.accounts" || !text.contains("# [exchange.accounts.main]"))
        .collect();
    let unknown: Vec<&String> = documented
        .difference(&every)
        .filter(|k| !k.ends_with("price_source"))
        .collect();
    assert!(
        unknown.is_empty(),
        "reference.toml keys the configuration does not have: {unknown:?}"
    );
    assert!(missing.is_empty(), "keys missing from reference.toml: {missing:?}");
}

#[test]
fn every_example_configuration_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let options = LoadOptions {
                config_path: Some(path.clone()),
                env: Some(vec![]),
            };
            load(&options).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "examples found: {seen}");
}

#[test]
fn ha_needs_postgres_and_a_shared_exchange_and_a_heartbeat_inside_the_lease() {
    let found = problems(
        Some("[ha]\nenabled = true\nlease_margin_seconds = 2\nheartbeat_seconds = 1.5\n"),
        &[],
    )
    .join("\n");
    for needle in [
        "ha.enabled: needs a postgres:// store.url",
        "ha.enabled: needs a shared exchange",
        "ha.heartbeat_seconds: must be greater than 0 and at most half of ha.lease_margin_seconds",
    ] {
        assert!(found.contains(needle), "missing `{needle}` in:\n{found}");
    }
    let shared = "[store]\nurl = \"postgres://sm@db/sm\"\n[exchange]\nkind = \"binance-usdm\"\n\
                  [exchange.accounts.main]\napi_key = \"k\"\napi_secret = \"s\"\n";
    let config = ok(Some(shared), &[("SCRIPT_MANAGER_HA__ENABLED", "true")]);
    assert!(config.ha.enabled);
    assert_eq!(config.ha.replica_id, None, "hostname-pid is chosen at start-up");
    assert_eq!(script_manager::ha::replica_id(&config.ha), {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let named = ok(
        Some(shared),
        &[
            ("SCRIPT_MANAGER_HA__ENABLED", "true"),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", "replica-a"),
        ],
    );
    assert_eq!(script_manager::ha::replica_id(&named.ha), "replica-a");
    assert!(!ok(None, &[]).ha.enabled, "off by default");
}

#[test]
fn secrets_come_from_files_named_by_settings_or_file_variables() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let token = write("admin", "admin-from-file\n");
    let key = write("key", "key-from-file\r\n");
    let secret = write("secret", "secret-from-file");
    let url = write("url", "sqlite://from-file.db\n");
    let text = format!(
        "[exchange]\nkind = \"binance-usdm\"\n[exchange.accounts.main]\napi_key_file = \"{key}\"\napi_secret_file = \"{secret}\"\n"
    );
    let config = ok(
        Some(&text),
        &[
            ("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN_FILE", token.as_str()),
            ("SCRIPT_MANAGER_STORE__URL_FILE", url.as_str()),
        ],
    );
    assert!(config.http.admin_token.unwrap().matches("admin-from-file"));
    let main = &config.exchange.accounts["main"];
    assert_eq!(main.api_key.expose(), "key-from-file");
    assert_eq!(main.api_secret.expose(), "secret-from-file");
    assert_eq!(config.store.url, "sqlite://from-file.db");
}

#[test]
fn a_secret_file_that_cannot_be_used_names_its_key_and_never_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing").display().to_string();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "hunter2-token\n").unwrap();
    let text = format!(
        "[http]\nadmin_token = \"inline\"\nadmin_token_file = \"{}\"\n",
        token.display()
    );
    let found = problems(
        Some(&text),
        &[
            ("SCRIPT_MANAGER_HTTP__READ_TOKEN_FILE", missing.as_str()),
            ("SCRIPT_MANAGER_STORE__URL_FILE", empty.to_str().unwrap()),
        ],
    );
    let all = found.join("\n");
    assert!(
        found.iter().any(|p| p.starts_with("http.read_token_file: cannot read")
            && p.contains("SCRIPT_MANAGER_HTTP__READ_TOKEN_FILE")),
        "{all}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("store.url_file:") && p.contains("is empty")),
        "{all}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("http.admin_token_file:") && p.contains("not both")),
        "{all}"
    );
    assert!(!all.contains("hunter2-token"), "{all}");
}

#[test]
fn check_config_shows_no_secret_read_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "hunter2-from-a-file\n").unwrap();
    let config = ok(
        None,
        &[("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN_FILE", token.to_str().unwrap())],
    );
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(format!("{config:?}").find("hunter2").is_none());
}

#[test]
fn a_venue_other_than_production_must_say_where_its_streams_are() {
    let testnet = "[exchange]\nkind = \"binance-usdm\"\nbase_url = \"https://testnet.binancefuture.com\"\n\
                   [exchange.accounts.main]\napi_key = \"k\"\napi_secret = \"s\"\n";
    let found = problems(Some(testnet), &[]).join("\n");
    assert!(
        found.contains("exchange.ws_base_url: must be set when exchange.base_url"),
        "{found}"
    );
    let named = ok(
        Some(testnet),
        &[(
            "SCRIPT_MANAGER_EXCHANGE__WS_BASE_URL",
            "wss://fstream.binancefuture.com",
        )],
    );
    assert_eq!(named.exchange.ws_url(), Some("wss://fstream.binancefuture.com"));
    let polling = ok(Some(testnet), &[("SCRIPT_MANAGER_EXCHANGE__STREAMS", "false")]);
    assert_eq!(polling.exchange.ws_url(), None, "no streams, nothing to dial");
    let production = testnet.replace("https://testnet.binancefuture.com", "https://fapi.binance.com/");
    assert_eq!(
        ok(Some(&production), &[]).exchange.ws_url(),
        Some("wss://fstream.binance.com")
    );
    let simulated = ok(None, &[]);
    assert_eq!(
        simulated.exchange.ws_base_url, None,
        "the simulator serves its own streams"
    );
}

#[test]
fn egress_and_account_sharing_are_checked_and_named() {
    let c = ok(None, &[]);
    assert_eq!(c.exchange.egress, script_manager::config::Egress::Shared);
    assert!(c.ha.share_accounts, "on by default");
    let found = problems(
        Some("[exchange]\negress = \"both\"\n[ha]\nshare_accounts = \"yes\"\n"),
        &[],
    )
    .join("\n");
    for needle in ["exchange.egress", "per_replica", "ha.share_accounts"] {
        assert!(found.contains(needle), "missing `{needle}` in:\n{found}");
    }
    let per_replica = ok(
        Some("[exchange]\negress = \"per_replica\"\n"),
        &[("SCRIPT_MANAGER_HA__SHARE_ACCOUNTS", "false")],
    );
    assert_eq!(per_replica.exchange.egress, script_manager::config::Egress::PerReplica);
    assert!(!per_replica.ha.share_accounts);
}
