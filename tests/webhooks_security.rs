//! Webhooks that cannot be turned against us (issue 24): real deliveries from
//! the real binary. Targets inside (loopback by address and by name, private,
//! link-local metadata, IPv4 in IPv6) are refused and counted, a listed
//! receiver's redirect is not followed, and a real internal listener
//! receives nothing throughout. Signed bodies verify with an HMAC computed
//! here; webhook URLs are secrets in `check-config` and in `GET /api/alerts`.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::trading::{FAST, d};
use common::{Service, SimProcess, TestStore};
use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::Sha256;

/// In every webhook URL's path: it must never show in a log or a reader's answer.
const PATH_SECRET: &str = "T0KEN-in-the-path-s3cr3t";
const SIGNING: &str = "signing-secret-for-tests-0123456789";

/// A listener standing for what sits inside (an admin port, a metadata
/// service): counts every request, whatever its method and path.
async fn internal_listener() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            "inside"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

/// A receiver that answers every request `302 Location: to`.
async fn redirector(to: String) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let (counted, to) = (counted.clone(), to.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, to)], "")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/redirect/{PATH_SECRET}"), hits)
}

/// What a receiver got: the signature header (if any) and the body as sent.
type Received = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

async fn signed_receiver() -> (String, Received) {
    let seen: Received = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let log = log.clone();
        async move {
            let signature = headers
                .get("x-script-manager-signature")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            log.lock().unwrap().push((signature, body.to_vec()));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook/{PATH_SECRET}"), seen)
}

/// How a receiver verifies: recompute the HMAC over `<t>.<body>` with the
/// shared secret, compare in constant time, and refuse a `t` more than 5 min away.
fn verify(header: &str, body: &[u8], secret: &[u8], now: u64) -> Result<(), String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(format!("malformed header {header}"));
    };
    if t.abs_diff(now) > 300 {
        return Err(format!("t={t} is more than 5 min from now ({now}): a replay"));
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1)
        .map_err(|_| "signature does not match".to_string())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn service(sim: &SimProcess, store: &TestStore, notifications: &str) -> Service {
    let config = format!(
        "{FAST}\n{}\n[http]\nadmin_token = \"{}\"\n[demo]\nenabled = false\n[notifications]\n{notifications}\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await
}

/// One alert per URL just below the price, then the price moved under them all.
async fn alert_and_cross(svc: &Service, sim: &SimProcess, urls: &[String]) {
    let price = d(&sim.get("/fapi/v1/ticker/price?symbol=ETHUSDT").await["price"]);
    let level = (price * Decimal::new(99, 2)).round_dp(2).to_string();
    for url in urls {
        let (status, body) = svc
            .post_json(
                "/api/alerts",
                &json!({"symbol": "ETHUSDT", "condition": "below", "price": level, "webhook_url": url}),
            )
            .await;
        assert_eq!(status, 201, "{url}: {body}");
    }
    sim.post(
        "/sim/prices",
        &json!({"ETHUSDT": (price * Decimal::new(97, 2)).round_dp(2).to_string()}),
    )
    .await;
}

/// Waits until `n` notifications are no longer pending; returns them.
async fn settled(svc: &Service, n: usize) -> Vec<Value> {
    let doc = svc
        .wait_get(
            "every notification settled",
            "/api/notifications",
            Duration::from_secs(20),
            |doc| {
                doc.as_array()
                    .is_some_and(|a| a.len() == n && a.iter().all(|x| x["status"] != "pending"))
            },
        )
        .await;
    doc.as_array().unwrap().clone()
}

fn refused(metrics: &str, reason: &str) -> f64 {
    common::sample(
        metrics,
        &format!("script_manager_webhook_refused_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or_else(|| panic!("no webhook_refused_total series for {reason}:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_addresses_are_refused_counted_and_never_reached() {
    let (port, inside) = internal_listener().await;
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(common::Backend::Sqlite);
    // No allow-list: any public host, nothing inside.
    let svc = service(&sim, &store, "").await;
    let loopback = [
        format!("http://127.0.0.1:{port}/{PATH_SECRET}"),
        format!("http://[::1]:{port}/{PATH_SECRET}"),
        format!("http://localhost:{port}/{PATH_SECRET}"),
        format!("http://[::ffff:127.0.0.1]:{port}/{PATH_SECRET}"),
        // 127.0.0.1 as one number: the client reads it as the address it is.
        format!("http://2130706433:{port}/{PATH_SECRET}"),
    ];
    let mut urls = loopback.to_vec();
    urls.push(format!("http://10.0.0.1:{port}/{PATH_SECRET}"));
    urls.push(format!("http://169.254.169.254/latest/meta-data/{PATH_SECRET}"));
    urls.push(format!("http://[::ffff:169.254.169.254]/{PATH_SECRET}"));
    alert_and_cross(&svc, &sim, &urls).await;

    let notifications = settled(&svc, urls.len()).await;
    for n in &notifications {
        assert_eq!(n["status"], "failed", "{n}");
        let error = n["last_error"].as_str().unwrap();
        assert!(error.starts_with("refused:"), "{n}");
        assert!(!error.contains(PATH_SECRET), "{n}");
    }
    let m = svc.metrics().await;
    assert_eq!(refused(&m, "loopback"), loopback.len() as f64, "{m}");
    assert_eq!(refused(&m, "private"), 1.0);
    assert_eq!(refused(&m, "metadata"), 2.0);
    assert_eq!(refused(&m, "redirect"), 0.0);
    assert_eq!(
        common::sample(&m, r#"script_manager_notifications_total{outcome="failed"}"#),
        Some(urls.len() as f64)
    );
    assert_eq!(inside.load(Ordering::SeqCst), 0, "the internal listener was reached");
    // Refusals are logged by scheme and host; the path is the receiver's credential.
    let log = svc.log();
    assert!(log.contains("webhook refused"), "{log}");
    assert!(!log.contains(PATH_SECRET), "a webhook URL's path was logged:\n{log}");

    // A reader sees scheme and host; the admin sees the URL whole.
    let anonymous = svc.get_json("/api/alerts").await;
    let shown: Vec<&str> = anonymous
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["webhook_url"].as_str().unwrap())
        .collect();
    assert_eq!(shown.len(), urls.len());
    assert!(
        shown.iter().all(|u| u.ends_with("/…") && !u.contains(PATH_SECRET)),
        "{shown:?}"
    );
    assert!(
        shown.contains(&format!("http://127.0.0.1:{port}/…").as_str()),
        "{shown:?}"
    );
    let admin: Value = svc
        .http
        .get(svc.url("/api/alerts"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let whole: Vec<&str> = admin
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["webhook_url"].as_str().unwrap())
        .collect();
    for url in &urls[..3] {
        assert!(whole.contains(&url.as_str()), "{url} not in {whole:?}");
    }
    let wrong: Value = svc
        .http
        .get(svc.url("/api/alerts"))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!wrong.to_string().contains(PATH_SECRET), "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_receiver_is_signed_and_its_redirect_not_followed() {
    let (port, inside) = internal_listener().await;
    let (to_inside, redirected) = redirector(format!("http://127.0.0.1:{port}/followed")).await;
    let (good, received) = signed_receiver().await;
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(common::Backend::Sqlite);
    let svc = service(
        &sim,
        &store,
        &format!("allowed_webhook_hosts = [\"127.0.0.1\"]\nsigning_secret = \"{SIGNING}\""),
    )
    .await;
    // localhost is not listed by name, whatever it resolves to.
    let unlisted = format!("http://localhost:{port}/{PATH_SECRET}");
    let (status, body) = svc
        .post_json(
            "/api/alerts",
            &json!({"symbol": "ETHUSDT", "condition": "below", "price": "1", "webhook_url": unlisted}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    alert_and_cross(&svc, &sim, &[to_inside, good]).await;

    let notifications = settled(&svc, 2).await;
    let statuses: Vec<&str> = notifications.iter().map(|n| n["status"].as_str().unwrap()).collect();
    assert!(
        statuses.contains(&"delivered") && statuses.contains(&"failed"),
        "{notifications:?}"
    );
    let m = svc.metrics().await;
    assert_eq!(refused(&m, "redirect"), 1.0, "{m}");
    assert_eq!(
        redirected.load(Ordering::SeqCst),
        1,
        "a redirect is a failed delivery, not retried"
    );
    assert_eq!(inside.load(Ordering::SeqCst), 0, "the redirect was followed");

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (header, body) = &received[0];
    let header = header.as_deref().expect("the body is signed");
    let now = unix_now();
    verify(header, body, SIGNING.as_bytes(), now).unwrap();
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(sent["kind"], "price_alert", "{sent}");
    // The checks can fail: another secret, a changed body, an old timestamp.
    assert!(verify(header, body, b"another-secret-0123456789", now).is_err());
    let mut changed = body.clone();
    changed.push(b' ');
    assert!(verify(header, &changed, SIGNING.as_bytes(), now).is_err());
    assert!(verify(header, body, SIGNING.as_bytes(), now + 301).is_err());
    assert!(!svc.log().contains(SIGNING));
}

fn check_config(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn webhook_url_and_signing_secret_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SIGNING}\n")).unwrap();
    let out = check_config(&format!(
        "[notifications]\nwebhook_url = \"https://hooks.example.com/services/{PATH_SECRET}\"\n\
         allowed_webhook_hosts = [\"hooks.example.com\", \"10.1.0.0/16\", \"::1\"]\n\
         signing_secret_file = \"{}\"\n",
        file.display()
    ));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(PATH_SECRET) && !text.contains(SIGNING), "{text}");
    assert!(text.contains("webhook_url"), "{text}");

    // Bad settings exit 2 naming the key, never the value.
    let out = check_config(&format!(
        "[notifications]\nwebhook_url = \"ftp://hooks.example.com/{PATH_SECRET}\"\n\
         allowed_webhook_hosts = [\"http://hooks.example.com/x\"]\nsigning_secret = \"short\"\n"
    ));
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for key in [
        "notifications.webhook_url",
        "notifications.allowed_webhook_hosts",
        "notifications.signing_secret",
    ] {
        assert!(text.contains(key), "{key} not named: {text}");
    }
    assert!(!text.contains(PATH_SECRET) && !text.contains("\"short\""), "{text}");
}
