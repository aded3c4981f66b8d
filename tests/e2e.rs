//! The operations bundle against the real binaries: the service, Debian's
//! Prometheus with the repository's rules (only intervals and addresses
//! changed) and Alertmanager with the repository's routing (receiver pointed
//! at a listener here). Proves that every dashboard query returns data, that
//! a failing process's alert arrives through Alertmanager and resolves, the
//! unprotected-position alert fires while the venue refuses backstops, and
//! that metrics and panels name each other.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(name: &str) -> String {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("{name} is needed (scripts/test installs Debian's prometheus and prometheus-alertmanager)");
}

/// Alertmanager webhook payloads: (status, alertname, process).
async fn alert_receiver() -> (u16, Arc<Mutex<Vec<(String, String, String)>>>) {
    let got: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let sink = got.clone();
    let handler = move |body: axum::Json<Value>| {
        let sink = sink.clone();
        async move {
            for a in body["alerts"].as_array().cloned().unwrap_or_default() {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
                sink.lock().unwrap().push((
                    a["status"].as_str().unwrap_or("").to_string(),
                    label("alertname"),
                    label("process"),
                ));
            }
            "ok"
        }
    };
    let app = axum::Router::new()
        .route("/alerts", axum::routing::post(handler.clone()))
        .route("/alerts/critical", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, got)
}

async fn query(http: &reqwest::Client, prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let url = format!("{prom}/api/v1/query?query={}", urlencode(expr));
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{body}"));
    }
    Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression of every panel, with variables substituted.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$process", "trade_sync");
                out.push((
                    path.file_name().unwrap().to_string_lossy().to_string(),
                    p["title"].as_str().unwrap().to_string(),
                    expr,
                ));
            }
        }
    }
    out
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for re_name in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if re_name.starts_with("script_manager_") {
            names.insert(re_name.to_string());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_works_with_real_prometheus_and_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("fail");
    std::fs::write(&fault, "").unwrap();
    let (receiver_port, alerts) = alert_receiver().await;

    // The service, with a process whose failure the test controls.
    let config = format!(
        r#"
[processes.flaky]
kind = "command"
command = "sh"
args = ["-c", "test ! -e {}"]
interval_seconds = 1
[processes.level_monitor]
interval_seconds = 1
[processes.price_update]
interval_seconds = 2
[processes.trade_sync]
interval_seconds = 2
[processes.position_sync]
interval_seconds = 2
[processes.notification_check]
interval_seconds = 1
[processes.dashboard_sync]
interval_seconds = 2
# A healthy user stream stretches trade and position sync's polling to this
# (its reconciliation counts as their poll): short, so their panels have data.
[exchange]
stream_reconcile_seconds = 2
[exchange.simulator.faults]
reject_algo_orders = 1000000000
[demo]
distance = 0.4
"#,
        fault.display()
    );
    let svc = common::start(&config, &[]).await;
    let service_addr = svc.base.trim_start_matches("http://").to_string();

    // Alertmanager with the repository's routing; only the receiver address changes.
    let am_port = common::free_port();
    let am_config = std::fs::read_to_string(repo("alertmanager.yml")).unwrap().replace(
        "http://alert-receiver:8080",
        &format!("http://127.0.0.1:{receiver_port}"),
    );
    std::fs::write(dir.path().join("alertmanager.yml"), am_config).unwrap();
    let _am = Killed(
        Command::new(binary("prometheus-alertmanager"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.path().join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Prometheus with the repository's configuration and rules; only intervals and addresses change.
    let prom_port = common::free_port();
    let prom_config = std::fs::read_to_string(repo("prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("alertmanager:9093", &format!("127.0.0.1:{am_port}"))
        .replace("script-manager:9797", &service_addr)
        .replace("localhost:9090", &format!("127.0.0.1:{prom_port}"))
        .replace("alerts/*.rules.yml", &repo("alerts/*.rules.yml").display().to_string());
    std::fs::write(dir.path().join("prometheus.yml"), prom_config).unwrap();
    let _prom = Killed(
        Command::new(binary("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    let http = script_manager::net::http_client().unwrap();

    // (a) Every panel query returns data.
    let queries = panel_queries();
    assert!(queries.len() > 40, "{} panel queries", queries.len());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut empty = Vec::new();
        for (file, title, expr) in &queries {
            match query(&http, &prom, expr).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => empty.push(format!("{file} / {title}: {expr} → no data")),
                Err(e) => empty.push(format!("{file} / {title}: {expr} → {e}")),
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "panels without data:\n{}", empty.join("\n"));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // Every exported metric is used by a panel or an alert (or listed as unused);
    // every metric a panel names is exported.
    let exported = svc.metrics().await;
    let mut families = BTreeSet::new();
    for line in exported.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        families.insert(line.split_whitespace().next().unwrap().to_string());
    }
    let mut used = String::new();
    for (_, _, expr) in &queries {
        used.push_str(expr);
        used.push('\n');
    }
    used.push_str(&std::fs::read_to_string(repo("alerts/script-manager.rules.yml")).unwrap());
    let unused_doc = std::fs::read_to_string(repo("docs/metrics.md")).unwrap_or_default();
    let base = |n: &str| {
        n.trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count")
            .to_string()
    };
    let unused: Vec<_> = families
        .iter()
        .filter(|f| !used.contains(f.as_str()) && !unused_doc.contains(f.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "exported but in no panel, alert or docs/metrics.md: {unused:?}"
    );
    let unknown: Vec<_> = metric_names(&used)
        .into_iter()
        .filter(|n| !families.contains(&base(n)))
        .collect();
    assert!(
        unknown.is_empty(),
        "panels or alerts name metrics the service does not export: {unknown:?}"
    );

    // (b) The failing process's alert arrives through Alertmanager, then resolves.
    let firing = |status: &str| {
        alerts
            .lock()
            .unwrap()
            .iter()
            .any(|(s, name, process)| s == status && name == "ScriptManagerProcessFailing" && process == "flaky")
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while !firing("firing") {
        assert!(
            Instant::now() < deadline,
            "no firing alert; got {:?}",
            alerts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let others: Vec<_> = alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, name, p)| p != "flaky" && name != "ScriptManagerPositionUnprotected")
        .cloned()
        .collect();
    assert!(others.is_empty(), "only the injected fault alerts: {others:?}");
    // (c) The venue refuses every backstop (the second fault): the demo's armed
    // stop-losses (40 % away, so the simulator's prices never reach them) are
    // unprotected, which pages after 2 minutes.
    let unprotected = |status: &str| {
        alerts
            .lock()
            .unwrap()
            .iter()
            .any(|(s, name, _)| s == status && name == "ScriptManagerPositionUnprotected")
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while !unprotected("firing") {
        assert!(
            Instant::now() < deadline,
            "no unprotected-position alert; got {:?}",
            alerts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    std::fs::remove_file(&fault).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !firing("resolved") {
        assert!(
            Instant::now() < deadline,
            "no resolved notification; got {:?}",
            alerts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
