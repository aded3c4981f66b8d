//! The OpenAPI document at `/api/openapi.json`: a valid OpenAPI 3.1 document
//! (openapi-spec-validator) that describes every route and method the
//! service answers, with the JSON error shape on every error answer.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn service() -> common::Service {
    let config = format!(
        "{}\n[http]\nadmin_token = \"{}\"\n",
        common::trading::FAST,
        common::TOKEN
    );
    common::start(&config, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1() {
    let svc = service().await;
    let doc = svc.get_json("/api/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&path)
        .output()
        .expect("python3 with openapi-spec-validator (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openapi-spec-validator:\n{text}");
    assert!(text.contains("OK"), "{text}");
    // Every error answer has the one error shape; writes name their auth scheme.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, answer) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        answer["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
            if method != "get" {
                let scope = op["x-scope"].as_str().unwrap_or_default();
                assert!(
                    ["admin", "trade"].contains(&scope) && op["security"][0]["token"][0] == scope,
                    "{method} {path} needs an admin or trade token: {op}"
                );
            }
        }
    }
}

/// `path` with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1").replace("{account}", "main")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_method_the_service_answers_is_documented() {
    let svc = service().await;
    let doc = svc.get_json("/api/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut undocumented = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for (path, ops) in paths {
        for method in METHODS {
            let url = svc.url(&concrete(path));
            let request = http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth(common::TOKEN)
                .header("content-type", "application/json")
                .body("{}");
            let status = request.send().await.unwrap().status().as_u16();
            let documented = ops.get(method).is_some();
            match (status == 405, documented) {
                (false, false) => {
                    undocumented.insert(format!("{} {path} ({status})", method.to_uppercase()));
                }
                (true, true) => {
                    missing.insert(format!("{} {path}", method.to_uppercase()));
                }
                _ => {}
            }
        }
    }
    assert!(undocumented.is_empty(), "answered but not documented: {undocumented:?}");
    assert!(missing.is_empty(), "documented but not routed: {missing:?}");
    // A path the document does not have is a 404 with the error shape.
    let r = http.get(svc.url("/api/not-a-route")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
