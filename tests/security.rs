//! The HTTP surface as a security reviewer tries it: every route against a
//! token of each scope (the matrix comes from the OpenAPI document, so a new
//! route is covered the day it is added), the audit trail those calls leave,
//! and a server under slow and many clients.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPS: &str = "ops-token-0123456789abcdef";
const DESK: &str = "desk-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";

fn tokens_toml() -> String {
    tokens_toml_with("")
}

/// The three tokens, with `http` settings added to the `[http]` table.
fn tokens_toml_with(http: &str) -> String {
    format!(
        "[http]\nstatus_requires_token = true\nmetrics_requires_token = true\n{http}\
         [[http.tokens]]\nname = \"ops\"\nscope = \"admin\"\ntoken = \"{OPS}\"\n\
         [[http.tokens]]\nname = \"desk\"\nscope = \"trade\"\ntoken = \"{DESK}\"\n\
         [[http.tokens]]\nname = \"viewer\"\nscope = \"read\"\ntoken = \"{VIEWER}\"\n"
    )
}

/// The callers of the matrix: (who the audit should name, the token sent, its scope rank).
const CALLERS: [(&str, Option<&str>, u8); 5] = [
    ("anonymous", None, 0),
    ("anonymous", Some("wrong-token-0123456789abcdef"), 0),
    ("viewer", Some(VIEWER), 1),
    ("desk", Some(DESK), 2),
    ("ops", Some(OPS), 3),
];

/// The scope rank an operation needs (0: open to anyone).
fn needs(op: &Value) -> u8 {
    match op["x-scope"].as_str() {
        None => 0,
        Some("read" | "status" | "metrics") => 1,
        Some("trade") => 2,
        Some("admin") => 3,
        Some(other) => panic!("unknown x-scope {other}"),
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "999999").replace("{account}", "nobody")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_scope_as_documented_and_every_mutation_is_audited() {
    let svc = common::start(&tokens_toml(), &[]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let doc = svc.get_json("/api/openapi.json").await;
    let mut mutations: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tried = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let need = needs(op);
            for (who, token, rank) in CALLERS {
                let mut req = http.request(method.to_uppercase().parse().unwrap(), svc.url(&concrete(path)));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                if method != "get" && method != "delete" {
                    req = req.json(&json!({}));
                }
                let status = req.send().await.unwrap().status().as_u16();
                tried += 1;
                if need == 0 || rank >= need {
                    assert!(
                        status != 401 && status != 403,
                        "{method} {path} as {who}: {status}, but its scope allows it"
                    );
                } else {
                    let expected = if rank == 0 { 401 } else { 403 };
                    assert_eq!(status, expected, "{method} {path} as {who}");
                }
                if method != "get" {
                    *mutations.entry(who).or_default() += 1;
                }
            }
        }
    }
    assert!(tried >= 100, "{tried} requests");
    // Every mutating call, allowed or refused, left a row naming its caller.
    let audit = http
        .get(svc.url("/api/audit?limit=1000"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for e in audit["entries"].as_array().unwrap() {
        *rows.entry(e["who"].as_str().unwrap()).or_default() += 1;
        let route = e["route"].as_str().unwrap();
        assert!(
            doc["paths"].get(route).is_some(),
            "an audited route is a documented one: {e}"
        );
        let outcome = e["outcome"].as_str().unwrap();
        let status = e["status"].as_u64().unwrap();
        assert_eq!(outcome == "refused", (400..500).contains(&status), "{e}");
    }
    assert_eq!(rows, mutations, "audit rows by caller vs mutating calls made");
    // Only an admin token reads the trail.
    let r = http.get(svc.url("/api/audit")).bearer_auth(DESK).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_is_set_by_the_tokens_name_and_audited_with_before_and_after() {
    let svc = common::start(&tokens_toml(), &[]).await;
    let http = reqwest::Client::new();
    let patch = |token: &'static str, interval: f64| {
        http.patch(svc.url("/api/script-manager/processes/dashboard_sync"))
            .bearer_auth(token)
            .json(&json!({"interval_seconds": interval}))
            .send()
    };
    let r = patch(DESK, 45.0).await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "a trade token does not change processes");
    let body: Value = patch(OPS, 45.0).await.unwrap().json().await.unwrap();
    assert_eq!(body["overrides"]["set_by"], "ops", "{body}");
    patch(OPS, 50.0).await.unwrap();
    let audit: Value = http
        .get(svc.url("/api/audit?limit=2"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = &audit["entries"][0];
    assert_eq!(newest["who"], "ops");
    assert_eq!(newest["method"], "PATCH");
    assert_eq!(newest["target"], "/api/script-manager/processes/dashboard_sync");
    assert_eq!(
        newest["detail"]["before"],
        json!({"interval_seconds": 45.0}),
        "{newest}"
    );
    assert_eq!(newest["detail"]["after"], json!({"interval_seconds": 50.0}), "{newest}");
    // Paging back reaches the older row, and only it.
    let before = audit["next_before"].as_i64().unwrap();
    let older: Value = http
        .get(svc.url(&format!("/api/audit?limit=10&before={before}")))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let olders = older["entries"].as_array().unwrap();
    assert!(olders.iter().all(|e| e["id"].as_i64().unwrap() < before));
    assert!(
        olders.iter().any(|e| e["who"] == "desk" && e["status"] == 403),
        "{older}"
    );
    assert!(svc.log().contains("audit"), "audit rows are logged too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_take_a_bearer_or_basic_auth_and_the_status_needs_a_token() {
    let svc = common::start(&tokens_toml(), &[]).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(svc.url(path));
    assert_eq!(get("/metrics").send().await.unwrap().status().as_u16(), 401);
    assert_eq!(
        get("/metrics")
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let basic = get("/metrics").basic_auth("viewer", Some(VIEWER)).send().await.unwrap();
    assert_eq!(basic.status().as_u16(), 200);
    let text = basic.text().await.unwrap();
    assert!(text.contains("script_manager_build_info{"), "build info");
    assert!(text.contains("revision=\""), "build info names the revision");
    let wrong_name = get("/metrics").basic_auth("ops", Some(VIEWER)).send().await.unwrap();
    assert_eq!(
        wrong_name.status().as_u16(),
        401,
        "basic auth needs the token's own name"
    );
    assert_eq!(
        get("/api/script-manager/status")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(get("/healthz").send().await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz").send().await.unwrap().status().as_u16(), 200);
}

#[test]
fn a_short_or_repeated_token_is_a_configuration_error_that_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[http]\nread_token = \"{DESK}\"\n\
             [[http.tokens]]\nname = \"a\"\nscope = \"admin\"\ntoken = \"{OPS}\"\n\
             [[http.tokens]]\nname = \"d\"\nscope = \"admin\"\ntoken = \"{DESK}\"\n\
             [[http.tokens]]\nname = \"read\"\nscope = \"read\"\ntoken = \"{VIEWER}\"\n\
             [[http.tokens]]\nname = \"b\"\nscope = \"read\"\ntoken = \"{OPS}\"\n\
             [[http.tokens]]\nname = \"c\"\nscope = \"read\"\ntoken = \"short-one\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tokens.b.token") && err.contains("same value"),
        "{err}"
    );
    assert!(err.contains("http.tokens.c.token"), "{err}");
    assert!(
        err.contains("http.tokens.d.token") && err.contains("http.read_token"),
        "a named token may not share the shorthand's value: {err}"
    );
    assert!(
        err.contains("http.tokens.read.name"),
        "`read` is taken by the shorthand: {err}"
    );
    assert!(
        !err.contains(OPS) && !err.contains(DESK) && !err.contains("short-one"),
        "{err}"
    );
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One client that sends a request's headers, then its body a byte at a time.
async fn slow_client(addr: String, stop: tokio_util::sync::CancellationToken) -> Option<u16> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /api/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DESK}\r\n\
         Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.ok()?;
    let mut answer = [0u8; 512];
    loop {
        tokio::select! {
            n = tcp.read(&mut answer) => {
                let n = n.ok()?;
                let text = String::from_utf8_lossy(&answer[..n]);
                return text.split(' ').nth(1).and_then(|s| s.parse().ok());
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if stop.is_cancelled() || tcp.write_all(b" ").await.is_err() {
                    return None;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_many_clients_are_shed_while_the_scheduler_keeps_its_ticks() {
    let config = format!(
        "{}[processes.beat]\nkind = \"command\"\ncommand = \"true\"\ninterval_seconds = 0.5\n",
        tokens_toml_with("request_timeout_seconds = 2\nmax_concurrent_requests = 16\nmutations_per_minute = 30\n")
    );
    let svc = common::start(&config, &[]).await;
    let http = reqwest::Client::new();
    // Read from /metrics: the probes and the scrape stay answerable under load.
    let series = |name: String| {
        let request = http.get(svc.url("/metrics")).bearer_auth(VIEWER);
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            common::sample(&text, &name).unwrap_or(0.0)
        }
    };
    let runs = || series(r#"script_manager_process_runs_total{process="beat",outcome="success"}"#.to_string());
    let rss_before = rss_kib(svc.pid());
    let addr = svc.base.trim_start_matches("http://").to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..500)
        .map(|_| tokio::spawn(slow_client(addr.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs_before = runs().await;
    let mut rss_during = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_during = rss_during.max(rss_kib(svc.pid()));
    }
    let runs_after = runs().await;
    assert!(
        runs_after >= runs_before + 3.0,
        "the scheduler kept its 0.5 s ticks under load: {runs_before} -> {runs_after}"
    );
    stop.cancel();
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    for c in clients {
        if let Some(status) = c.await.unwrap() {
            *answers.entry(status).or_default() += 1;
        }
    }
    assert!(
        answers.get(&503).copied().unwrap_or(0) >= 400,
        "the slow clients were shed (over the cap, at once): {answers:?}"
    );
    assert!(
        rss_during < rss_before + 64 * 1024,
        "bounded memory: {rss_before} KiB before, {rss_during} KiB under 500 slow clients"
    );
    let shed = series(r#"script_manager_http_requests_shed_total{reason="concurrency"}"#.to_string()).await;
    assert!(shed >= 400.0, "{answers:?}");
    // The slow clients that got in held their places until they went away:
    // the service answers again at once.
    let mut status = 0;
    for _ in 0..50 {
        let r = http
            .get(svc.url("/api/positions"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the places are given back");

    // One token's quick mutations: beyond its rate, 429 with Retry-After.
    let mut limited = None;
    for _ in 0..40 {
        let r = http
            .delete(svc.url("/api/alerts/999999"))
            .bearer_auth(DESK)
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            limited = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            break;
        }
    }
    let retry_after: u64 = limited.expect("a 429 within 40 quick calls").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let other = http
        .delete(svc.url("/api/alerts/999999"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404, "another token has its own rate");
}
