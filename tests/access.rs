//! Who may read and where webhooks may go: `http.read_token` guards the data
//! API's GETs (status, health and `/metrics` stay open), and
//! `notifications.allowed_webhook_hosts` limits alert receivers. Also the
//! data API's pagination (`limit`, `after`, `Link: …; rel="next"`).

mod common;

use reqwest::StatusCode;
use serde_json::json;

const READ: &str = "read-token-0123456789";

/// The service, and the store it keeps open (dropping it removes the file).
async fn service() -> (common::Service, common::TestStore) {
    let store = common::TestStore::new(common::Backend::Sqlite);
    let config = format!(
        "[http]\nadmin_token = \"{}\"\nread_token = \"{READ}\"\n\
         [notifications]\nallowed_webhook_hosts = [\"hooks.example.com\"]\n[demo]\nenabled = false\n",
        common::TOKEN
    );
    (
        common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await,
        store,
    )
}

async fn get(svc: &common::Service, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = svc.http.get(svc.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn financial_data_needs_the_read_token_and_probes_stay_open() {
    let (svc, _store) = service().await;
    for path in [
        "/api/positions",
        "/api/trades",
        "/api/prices",
        "/api/levels",
        "/api/alerts",
        "/api/notifications",
        "/api/dashboard/main",
    ] {
        let anonymous = get(&svc, path, None).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: serde_json::Value = anonymous.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}: {body}");
        assert_eq!(
            get(&svc, path, Some("wrong")).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        for token in [READ, common::TOKEN] {
            let status = get(&svc, path, Some(token)).await.status();
            assert!(
                status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                "{path} with a token: {status}\n{}",
                svc.log()
            );
        }
    }
    for path in ["/api/script-manager/status", "/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            get(&svc, path, None).await.status(),
            StatusCode::OK,
            "{path} stays open"
        );
    }
    // The read token reads; it does not write.
    let r = svc
        .http
        .post(svc.url("/api/alerts"))
        .bearer_auth(READ)
        .json(&json!({"symbol": "BTCUSDT", "condition": "above", "price": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a known token of too small a scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_go_only_to_allowed_hosts() {
    let (svc, _store) = service().await;
    let alert = |url: &str| json!({"symbol": "BTCUSDT", "condition": "above", "price": "1000000", "webhook_url": url});
    let (status, body) = svc.post_json("/api/alerts", &alert("https://evil.example.net/x")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("webhook_url:"),
        "{body}"
    );
    let (status, body) = svc
        .post_json("/api/alerts", &alert("https://hooks.example.com/sm"))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_and_alerts_come_in_pages() {
    let (svc, _store) = service().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, body) = svc
            .post_json(
                "/api/alerts",
                &json!({"symbol": "ETHUSDT", "condition": "above", "price": format!("{}", 1_000_000 + i)}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_i64().unwrap());
    }
    let mut seen = Vec::new();
    let mut path = "/api/alerts?limit=2".to_string();
    let mut pages = 0;
    loop {
        let r = get(&svc, &path, Some(READ)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let next = r.headers().get("link").map(|v| v.to_str().unwrap().to_string());
        let page: Vec<serde_json::Value> = r.json().await.unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|a| a["id"].as_i64().unwrap()));
        pages += 1;
        match next {
            Some(link) => {
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                path = link.trim_start_matches('<').split('>').next().unwrap().to_string();
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(seen, ids, "every alert once, in id order");
    let r = get(&svc, "/api/levels?limit=100000", Some(READ)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the page size has a maximum");
    let r = get(&svc, "/api/levels?after=x", Some(READ)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
