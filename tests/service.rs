//! The real binary over real HTTP: status API, operator actions, errors,
//! metrics format, disabled mode, configuration errors and shutdown.

mod common;

use std::time::Duration;

use common::{TOKEN, sample, start};
use serde_json::Value;

const JOB: &str = r#"
[processes.hello]
kind = "command"
command = "sh"
args = ["-c", "echo hello-from-job; echo SCRIPT_MANAGER_API_CALLS=2"]
interval_seconds = 0.5
max_api_calls_per_minute = 500
"#;

fn with_token(config: &str) -> String {
    format!("{config}\n[http]\nadmin_token = \"{TOKEN}\"\n")
}

#[tokio::test]
async fn status_document_has_the_seed_shape_and_more() {
    let svc = start(JOB, &[]).await;
    let doc = svc
        .wait_for("a successful run", Duration::from_secs(10), |d| {
            d["processes"]["hello"]["metrics"]["success_count"]
                .as_u64()
                .unwrap_or(0)
                >= 2
        })
        .await;
    assert_eq!(
        doc["total_processes"], 10,
        "six polling + two streams + backstop_sync + one command"
    );
    assert!(doc["running_processes"].as_u64().unwrap() >= 1);
    let hello = &doc["processes"]["hello"];
    assert_eq!(hello["process_name"], "hello");
    assert_eq!(hello["status"], "running");
    assert_eq!(hello["interval_seconds"], 0.5);
    assert!(hello["state"].is_string());
    for key in ["last_run", "last_success"] {
        assert!(hello[key].as_str().is_some_and(|t| t.ends_with('Z')), "{key}: {hello}");
    }
    assert!(hello["last_error"].is_null() && hello["last_error_message"].is_null());
    let m = &hello["metrics"];
    for key in [
        "total_runs",
        "success_count",
        "error_count",
        "avg_duration",
        "api_calls_last_minute",
    ] {
        assert!(m[key].is_number(), "metrics.{key} missing: {m}");
    }
    assert!(
        m["api_calls_last_minute"].as_u64().unwrap() >= 4,
        "2 calls per run reported: {m}"
    );
    assert!(doc["api_usage"]["total_calls_last_minute"].as_u64().unwrap() >= 4);
    assert!(doc["api_usage"]["estimated_calls_per_hour"].is_number());
    assert_eq!(doc["processes"]["trade_sync"]["process_name"], "Trade Sync");
    assert_eq!(doc["processes"]["trade_sync"]["interval_seconds"], 30.0);

    let runbooks = svc.get_text("/docs/runbooks").await;
    assert!(
        runbooks.contains("## ScriptManagerProcessFailing"),
        "the alerts' runbook_url target is served"
    );
    let one: Value = svc.get_json("/api/script-manager/processes/hello").await;
    assert_eq!(one["id"], "hello");
    // The store's history is written behind the in-memory counters: wait for it.
    let runs: Value = svc
        .wait_get(
            "the runs in the store",
            "/api/script-manager/runs?process=hello&limit=2",
            Duration::from_secs(5),
            |r| r.as_array().is_some_and(|a| a.len() == 2),
        )
        .await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["outcome"], "success");
    assert_eq!(runs[0]["api_calls"], 2);
    assert!(
        svc.log().contains("hello-from-job"),
        "the job's output is in the service log"
    );
    // Standard output is a pipe here, as in a container: plain text, no exporter fields.
    let log = svc.log();
    assert!(!log.contains('\u{1b}'), "colour codes in a piped log:\n{log}");
    assert!(!log.contains("otel.name"), "exporter fields in text logs:\n{log}");
    assert!(log.contains("process.id=hello"), "span fields stay:\n{log}");
}

async fn post(svc: &common::Service, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = svc.http.post(svc.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn assert_json_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn write_endpoints_are_forbidden_without_a_configured_token() {
    let svc = start(JOB, &[]).await;
    let (status, body) = post(&svc, "/api/script-manager/processes/hello/trigger", Some("anything")).await;
    assert_eq!(status, 403);
    assert_json_error(&body, "admin_disabled");
}

#[tokio::test]
async fn operator_actions_need_the_right_token() {
    let slow = r#"
builtin_processes = false
[processes.off]
kind = "command"
command = "true"
enabled = false
[processes.slow]
kind = "command"
command = "sleep"
args = ["1"]
interval_seconds = 3600
start_offset_seconds = 3000
"#;
    let svc = start(&with_token(slow), &[]).await;
    let path = "/api/script-manager/processes/slow/trigger";
    let (status, body) = post(&svc, path, None).await;
    assert_eq!(status, 401);
    assert_json_error(&body, "unauthorized");
    let (status, _) = post(&svc, path, Some("wrong-token")).await;
    assert_eq!(status, 401);
    let (status, body) = post(&svc, "/api/script-manager/processes/nope/trigger", Some(TOKEN)).await;
    assert_eq!(status, 404);
    assert_json_error(&body, "not_found");

    let (status, body) = post(&svc, path, Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(&svc, path, Some(TOKEN)).await;
    assert_eq!(status, 409, "single flight: {body}");
    assert_json_error(&body, "already_running");
    svc.wait_for("the manual run", Duration::from_secs(10), |d| {
        d["processes"]["slow"]["metrics"]["success_count"] == 1
    })
    .await;

    let (status, body) = post(&svc, "/api/script-manager/processes/slow/pause", Some(TOKEN)).await;
    assert_eq!((status, &body["paused"]), (200, &Value::Bool(true)));
    let doc = svc.get_json("/api/script-manager/processes/slow").await;
    assert_eq!(doc["status"], "paused");
    assert_eq!(
        sample(&svc.metrics().await, r#"script_manager_process_paused{process="slow"}"#),
        Some(1.0)
    );
    let (status, _) = post(&svc, "/api/script-manager/processes/slow/resume", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        svc.get_json("/api/script-manager/processes/slow").await["status"],
        "running"
    );
    let (status, body) = post(&svc, "/api/script-manager/processes/off/trigger", Some(TOKEN)).await;
    assert_eq!(status, 409);
    assert_json_error(&body, "process_disabled");
}

#[tokio::test]
async fn bad_requests_get_json_errors_never_5xx() {
    let svc = start(&with_token(JOB), &[]).await;
    let cases = [
        ("GET", "/api/script-manager/processes/nope", 404, "not_found"),
        ("GET", "/no/such/route", 404, "not_found"),
        ("GET", "/api/script-manager/runs?limit=abc", 400, "bad_request"),
        ("GET", "/api/script-manager/runs?limit=0", 400, "bad_request"),
        ("GET", "/api/script-manager/runs?process=nope", 404, "not_found"),
        ("GET", "/api/script-manager/runs?colour=red", 400, "bad_request"),
        (
            "GET",
            "/api/script-manager/processes/hello/trigger",
            405,
            "method_not_allowed",
        ),
        ("DELETE", "/api/script-manager/status", 405, "method_not_allowed"),
    ];
    for (method, path, want, code) in cases {
        let r = svc
            .http
            .request(method.parse().unwrap(), svc.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: body is not JSON"));
        assert_json_error(&body, code);
    }
}

#[tokio::test]
async fn metrics_pass_promtool_and_speak_openmetrics_on_request() {
    let svc = start(JOB, &[]).await;
    svc.wait_for("a run", Duration::from_secs(10), |d| {
        d["processes"]["hello"]["metrics"]["total_runs"].as_u64() >= Some(1)
    })
    .await;
    let r = svc.http.get(svc.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    for series in [
        "script_manager_build_info{version=",
        "script_manager_scheduler_enabled 1",
        r#"script_manager_process_interval_seconds{process="trade_sync"} 30"#,
        r#"script_manager_process_runs_total{process="trade_sync",outcome="success"} 0"#,
        r#"script_manager_api_limit_calls_per_minute{process="level_monitor"} 100"#,
        r#"script_manager_process_schedule_lag_seconds_bucket{process="hello""#,
        "script_manager_resident_memory_bytes ",
        "script_manager_open_fds ",
        "script_manager_cpu_seconds_total ",
        "script_manager_start_time_seconds ",
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    common::promtool_accepts(&text);

    let r = svc
        .http
        .get(svc.url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"));
    assert!(
        text.contains("# {trace_id=\""),
        "exemplars on the duration histogram:\n{text}"
    );
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

#[tokio::test]
async fn disabled_scheduler_keeps_http_up_and_runs_nothing() {
    let svc = start(JOB, &[("SCRIPT_MANAGER_ENABLED", "false")]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let doc = svc.get_json("/api/script-manager/status").await;
    assert_eq!(doc["processes"]["hello"]["status"], "stopped");
    assert_eq!(doc["processes"]["hello"]["metrics"]["total_runs"], 0);
    assert_eq!(doc["running_processes"], 0);
    let m = svc.metrics().await;
    assert_eq!(sample(&m, "script_manager_scheduler_enabled"), Some(0.0));
    assert_eq!(
        sample(
            &m,
            r#"script_manager_process_runs_total{process="hello",outcome="success"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn sigterm_waits_for_a_run_in_flight_then_exits_zero() {
    let config = r#"
[scheduler]
shutdown_grace_seconds = 10
[processes.slow]
kind = "command"
command = "sh"
args = ["-c", "sleep 1; echo finished-cleanly"]
interval_seconds = 60
"#;
    let mut svc = start(config, &[]).await;
    svc.wait_for("the run to start", Duration::from_secs(5), |d| {
        d["processes"]["slow"]["state"] == "executing"
    })
    .await;
    let status = svc.stop(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", svc.log());
    assert!(
        svc.log().contains("finished-cleanly"),
        "the run finished within the grace period:\n{}",
        svc.log()
    );
}

#[tokio::test]
async fn sigterm_cancels_runs_that_outlive_the_grace_period() {
    let config = r#"
[scheduler]
shutdown_grace_seconds = 0.5
[processes.stuck]
kind = "command"
command = "sleep"
args = ["300"]
interval_seconds = 600
timeout_seconds = 600
"#;
    let mut svc = start(config, &[]).await;
    svc.wait_for("the run to start", Duration::from_secs(5), |d| {
        d["processes"]["stuck"]["state"] == "executing"
    })
    .await;
    let started = std::time::Instant::now();
    let status = svc.stop(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait for the 300 s run"
    );
}

#[test]
fn bad_configuration_exits_2_naming_the_key_and_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[processes.trade_sync]\ninterval_seconds = 0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_clear()
        .env("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN", "super-secret-token-42")
        .env("PRICE_UPDATE_API_LIMIT", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("processes.trade_sync.interval_seconds") && err.contains("c.toml"),
        "{err}"
    );
    assert!(err.contains("PRICE_UPDATE_API_LIMIT"), "{err}");

    std::fs::write(&path, "[processes.trade_sync]\ninterval_seconds = 15\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_clear()
        .env("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN", "super-secret-token-42")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains("super-secret-token-42"), "{printed}");
    assert!(printed.contains("admin_token = \"[redacted]\""), "{printed}");
    assert!(printed.contains("interval_seconds = 15"), "{printed}");
}

#[tokio::test]
async fn exchange_credentials_never_appear_in_logs_metrics_or_status() {
    let config = r#"
log_level = "debug"
[exchange.accounts.main]
api_key = "KEY-visible-to-nobody-1234"
api_secret = "SECRET-visible-to-nobody-5678"
"#;
    let svc = start(config, &[]).await;
    let doc = svc.get_json("/api/script-manager/status").await;
    assert_eq!(
        doc["api_usage"]["venue_weight_limit"], 2400,
        "exchangeInfo was read at start-up: {doc}"
    );
    assert_eq!(doc["api_usage"]["weight_limit_per_minute"], 1920);
    let metrics = svc.metrics().await;
    assert_eq!(sample(&metrics, "script_manager_api_weight_limit"), Some(1920.0));
    assert!(
        sample(
            &metrics,
            "script_manager_api_calls_total{process=\"venue_info\",endpoint=\"/fapi/v1/time\",status_class=\"2xx\"}"
        )
        .is_some()
    );
    let everything = format!("{}\n{doc}\n{metrics}", svc.log());
    for secret in ["KEY-visible-to-nobody-1234", "SECRET-visible-to-nobody-5678"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

#[tokio::test]
async fn the_simulator_runs_alone() {
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = script_manager::net::http_client().unwrap();
    let mut body = None;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/fapi/v1/ticker/price?symbol=BTCUSDT"))
            .send()
            .await
        {
            body = Some((
                r.headers().get("x-mbx-used-weight-1m").cloned(),
                r.json::<Value>().await.unwrap(),
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let (weight, body) = body.expect("the simulator answered");
    assert_eq!(body["symbol"], "BTCUSDT");
    assert!(body["price"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
    assert_eq!(weight.unwrap().to_str().unwrap(), "1");
}
