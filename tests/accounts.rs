//! Accounts while running (issue 23), against the real binary and its
//! embedded simulator: an account created at the venue, then added through
//! the admin API, is synced without a restart; a rotation takes effect on
//! the next signed request (wrong credentials → auth errors, right ones →
//! synced again); removal retires its levels and stops every signed request
//! for it. The secret is looked for everywhere it must not be: the logs
//! (debug), every answer, `/metrics`, the audit rows and the store's bytes.
//! A key that cannot open the stored accounts stops the start (exit 2,
//! naming `store.encryption_key_file`); `rotate-encryption-key` moves them
//! to a new key.

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{Backend, Service, TOKEN, TestStore};
use serde_json::{Value, json};

const NAME: &str = "desk-7";
const KEY: &str = "AcCtKeY0desk7xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxQ7z9";
const SECRET: &str = "SeCrEt0desk7yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyK3w1";
const WRONG_SECRET: &str = "WrOnGsEcReT0zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";

fn key_file(dir: &std::path::Path, name: &str, bytes: [u8; 32]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", hex(&bytes))).unwrap();
    path.display().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The service's configuration: the embedded simulator on `sim_port`,
/// fast syncs, debug logs, the admin token and (when given) the key file.
fn config(sim_port: u16, key_file: Option<&str>) -> String {
    let key = key_file.map_or(String::new(), |k| format!("encryption_key_file = \"{k}\"\n"));
    format!(
        "log_level = \"debug\"\n{}\n[exchange]\nkind = \"simulated\"\n[exchange.simulator]\nlisten = \"127.0.0.1:{sim_port}\"\n\
         [store]\n{key}[http]\nadmin_token = \"{TOKEN}\"\n",
        common::trading::FAST
    )
}

/// A running service whose every answer is kept, to be searched for secrets.
struct Rig {
    svc: Service,
    sim: String,
    answers: Mutex<Vec<String>>,
}

impl Rig {
    async fn start(store: &TestStore, key_file: Option<&str>) -> Rig {
        let sim_port = common::free_port();
        let svc = common::start(
            &config(sim_port, key_file),
            &[("SCRIPT_MANAGER_STORE__URL", &store.url)],
        )
        .await;
        Rig {
            svc,
            sim: format!("http://127.0.0.1:{sim_port}"),
            answers: Mutex::new(Vec::new()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.svc.http.request(method, self.svc.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        self.answers.lock().unwrap().push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await.1
    }

    async fn text(&self, path: &str) -> String {
        let text = self.svc.get_text(path).await;
        self.answers.lock().unwrap().push(text.clone());
        text
    }

    /// Polls `GET path` until `check` holds (every answer kept).
    async fn wait(&self, what: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let doc = self.get(path).await;
            if check(&doc) {
                return doc;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; {path}: {doc:#}\nlog:\n{}",
                self.svc.log()
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn sim_post(&self, path: &str, body: &Value) -> u16 {
        let r = self
            .svc
            .http
            .post(format!("{}{path}", self.sim))
            .json(body)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    async fn sim_get(&self, path: &str) -> Value {
        self.svc
            .http
            .get(format!("{}{path}", self.sim))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Creates the account at the venue first, as an operator would.
    async fn create_at_venue(&self) {
        let status = self
            .sim_post(
                "/sim/accounts",
                &json!({"name": NAME, "api_key": KEY, "api_secret": SECRET, "opening_positions": 3}),
            )
            .await;
        assert_eq!(status, 201);
    }

    /// Signed requests the simulator served for the account, all routes.
    async fn venue_requests(&self) -> u64 {
        let meter = self.sim_get("/sim/meter").await;
        meter["requests"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.ends_with(&format!(" {NAME}")))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    }

    /// `script_manager_account_errors_total` of position_sync for the account.
    async fn sync_errors(&self) -> f64 {
        let metrics = self.text("/metrics").await;
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("script_manager_account_errors_total{")
                    && l.contains("process=\"position_sync\"")
                    && l.contains(&format!("account=\"{NAME}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn positions_of(doc: &Value) -> usize {
    doc.as_array().map_or(0, |a| a.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_added_rotated_and_removed_while_running_leaves_no_secret_behind() {
    let store = TestStore::new(Backend::Sqlite);
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "key", [0x5a; 32]);
    let mut rig = Rig::start(&store, Some(&key)).await;
    let accounts = rig.get("/api/accounts").await;
    assert!(
        accounts
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["source"] == "file" && a["read_only"] == true),
        "{accounts}"
    );

    // Created at the venue, then added through the API: synced within seconds, no restart.
    rig.create_at_venue().await;
    let body = json!({"name": NAME, "api_key": KEY, "api_secret": SECRET});
    let (status, added) = rig.call(reqwest::Method::POST, "/api/accounts", Some(&body)).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["source"], "api");
    assert_eq!(added["read_only"], false);
    assert_eq!(added["api_key_last4"], &KEY[KEY.len() - 4..]);
    assert!(added["created_at"].as_i64().unwrap() > 0);
    let path = format!("/api/positions?account={NAME}");
    rig.wait("the added account's positions", &path, |p| positions_of(p) > 0)
        .await;
    // The user streams reconnect with it: its own stream comes up.
    let one = rig
        .wait(
            "the added account's user stream",
            &format!("/api/accounts/{NAME}"),
            |a| a["state"]["stream"] == "up",
        )
        .await;
    assert_eq!(one["name"], NAME, "{one}");

    // Refusals, each naming what is wrong.
    let (status, e) = rig.call(reqwest::Method::POST, "/api/accounts", Some(&body)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("account_exists")),
        "{e}"
    );
    let (status, e) = rig
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            Some(&json!({"name": "a b", "api_key": KEY, "api_secret": SECRET})),
        )
        .await;
    assert_eq!(status, 422);
    assert!(e["error"]["message"].as_str().unwrap().starts_with("name:"), "{e}");
    let (status, e) = rig
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            Some(&json!({"name": "x", "api_key": KEY, "api_secret": ""})),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        e["error"]["message"].as_str().unwrap().starts_with("api_secret:"),
        "{e}"
    );
    let creds = json!({"api_key": KEY, "api_secret": SECRET});
    let (status, e) = rig
        .call(reqwest::Method::PUT, "/api/accounts/main/credentials", Some(&creds))
        .await;
    assert_eq!(status, 409);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("configuration file"),
        "{e}"
    );
    let (status, _) = rig.call(reqwest::Method::DELETE, "/api/accounts/main", None).await;
    assert_eq!(status, 409);
    let (status, _) = rig.call(reqwest::Method::GET, "/api/accounts/nobody", None).await;
    assert_eq!(status, 404);

    // A protective level on one of its positions, to be retired by the removal.
    let positions = rig.get(&path).await;
    let p = &positions.as_array().unwrap()[0];
    let long = !p["amount"].as_str().unwrap().starts_with('-');
    let mark: f64 = p["mark_price"].as_str().unwrap().parse().unwrap();
    let (sl, tp) = if long {
        (mark * 0.5, mark * 2.0)
    } else {
        (mark * 2.0, mark * 0.5)
    };
    let (status, level) = rig
        .call(
            reqwest::Method::POST,
            "/api/levels",
            Some(&json!({"account": NAME, "symbol": p["symbol"], "stop_loss": format!("{sl:.2}"), "take_profit": format!("{tp:.2}")})),
        )
        .await;
    assert_eq!(status, 201, "{level}");
    let level_id = level["id"].as_i64().unwrap();

    // Rotated to credentials the venue does not know: the account's sync fails with an auth error.
    let before = rig.sync_errors().await;
    let wrong = json!({"api_key": "NoSuchKey0000000000000000000000000000000000000000000000000000000", "api_secret": WRONG_SECRET});
    let (status, rotated) = rig
        .call(
            reqwest::Method::PUT,
            &format!("/api/accounts/{NAME}/credentials"),
            Some(&wrong),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["api_key_last4"], "0000");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rig.sync_errors().await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no auth failure after the rotation:\n{}",
            rig.svc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answers = rig.sim_get("/sim/meter").await["answers"].clone();
    assert!(
        answers["-2015"].as_u64().unwrap_or(0) > 0,
        "the venue refused the key: {answers}"
    );

    // Rotated back: a trade made at the venue shows in the service again.
    let (status, _) = rig
        .call(
            reqwest::Method::PUT,
            &format!("/api/accounts/{NAME}/credentials"),
            Some(&creds),
        )
        .await;
    assert_eq!(status, 200);
    let symbols: Vec<String> = rig
        .get(&path)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["symbol"].as_str().unwrap().to_string())
        .collect();
    let info = rig.sim_get("/fapi/v1/exchangeInfo").await;
    let fresh = info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap().to_string())
        .find(|s| !symbols.contains(s))
        .expect("a symbol the account holds nothing in");
    let status = rig
        .sim_post(
            "/sim/trade",
            &json!({"account": NAME, "symbol": fresh, "side": "BUY", "qty": "1"}),
        )
        .await;
    assert_eq!(status, 200);
    rig.wait("the trade made after rotating back", &path, |p| {
        p.as_array()
            .is_some_and(|a| a.iter().any(|x| x["symbol"] == fresh.as_str()))
    })
    .await;

    // Removed: its level retired, then no signed request for it any more.
    let (status, removed) = rig
        .call(reqwest::Method::DELETE, &format!("/api/accounts/{NAME}"), None)
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removed"], true);
    assert_eq!(removed["levels_retired"], 1, "{removed}");
    assert!(
        removed["positions"].as_str().unwrap().starts_with("left open"),
        "{removed}"
    );
    let level = rig.get(&format!("/api/levels/{level_id}")).await;
    assert_eq!(
        (level["status"].as_str(), level["reason"].as_str()),
        (Some("cancelled"), Some("account_removed")),
        "{level}"
    );
    let (status, _) = rig
        .call(reqwest::Method::GET, &format!("/api/accounts/{NAME}"), None)
        .await;
    assert_eq!(status, 404);
    // Requests already under way when it went may still land; after that, none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = rig.venue_requests().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rig.venue_requests().await,
        settled,
        "signed requests for a removed account"
    );

    // The secret (and the key) nowhere: answers, metrics, audit rows, logs, the store's bytes.
    let audit = rig.get("/api/audit?limit=1000").await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["route"] == "/api/accounts" && e["method"] == "POST"),
        "{audit}"
    );
    rig.text("/metrics").await;
    rig.svc.stop(Duration::from_secs(15));
    let mut haystacks: Vec<(String, Vec<u8>)> = rig
        .answers
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("answer {i}"), a.as_bytes().to_vec()))
        .collect();
    haystacks.push(("the log".into(), rig.svc.log().into_bytes()));
    assert!(
        rig.svc.log().contains("DEBUG") || rig.svc.log().contains("debug"),
        "debug logging is on"
    );
    let file = store.url.strip_prefix("sqlite://").unwrap().to_string();
    for f in [file.clone(), format!("{file}-wal")] {
        if let Ok(bytes) = std::fs::read(&f) {
            haystacks.push((f, bytes));
        }
    }
    assert!(haystacks.iter().any(|(n, _)| n == &file), "the store file was read");
    for (what, bytes) in &haystacks {
        for needle in [SECRET, KEY, WRONG_SECRET] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{what} holds a credential in clear"
            );
        }
    }
}

/// Runs the binary with `config` until it exits: its exit code and output.
fn run_to_exit(config: &str, store: &TestStore, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_clear()
        .env("SCRIPT_MANAGER_STORE__URL", &store.url)
        .env(
            "SCRIPT_MANAGER_HTTP__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn refusal_then_restart(backend: Backend) {
    let store = TestStore::new(backend);
    let keys = tempfile::tempdir().unwrap();
    let old = key_file(keys.path(), "old", [1; 32]);
    let new = key_file(keys.path(), "new", [2; 32]);

    // Without a key: adding is refused, naming the setting.
    let mut rig = Rig::start(&store, None).await;
    let (status, e) = rig
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            Some(&json!({"name": NAME, "api_key": KEY, "api_secret": SECRET})),
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("store.encryption_key_file"),
        "{e}"
    );
    rig.svc.stop(Duration::from_secs(15));

    let mut rig = Rig::start(&store, Some(&old)).await;
    rig.create_at_venue().await;
    let (status, e) = rig
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            Some(&json!({"name": NAME, "api_key": KEY, "api_secret": SECRET})),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    rig.svc.stop(Duration::from_secs(15));

    // Stored accounts and a key that cannot open them: exit 2 naming the setting.
    let malformed = keys.path().join("malformed");
    std::fs::write(&malformed, "not-a-key\n").unwrap();
    let cases = [
        ("another key", Some(new.clone())),
        ("a malformed key", Some(malformed.display().to_string())),
        ("no key", None),
    ];
    for (what, key) in cases {
        let (code, out) = run_to_exit(&config(common::free_port(), key.as_deref()), &store, &[]);
        assert_eq!(code, 2, "{what}: {out}");
        assert!(out.contains("store.encryption_key_file"), "{what}: {out}");
        assert!(!out.contains(SECRET), "{what}");
    }

    // Rotated to the new key: the old one no longer opens them, the new one does.
    let (code, out) = run_to_exit(
        &config(common::free_port(), Some(&old)),
        &store,
        &["rotate-encryption-key", "--new-key-file", &new],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 stored account(s) re-encrypted"), "{out}");
    let (code, out) = run_to_exit(&config(common::free_port(), Some(&old)), &store, &[]);
    assert_eq!(code, 2, "{out}");
    let rig = Rig::start(&store, Some(&new)).await;
    rig.create_at_venue().await;
    let one = rig.get(&format!("/api/accounts/{NAME}")).await;
    assert_eq!(one["source"], "api", "{one}");
    rig.wait(
        "positions after the restart",
        &format!("/api/positions?account={NAME}"),
        |p| positions_of(p) > 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_open_stored_accounts_is_exit_2_and_rotation_moves_them() {
    refusal_then_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_accounts_survive_restarts_and_rotation_on_postgres() {
    refusal_then_restart(Backend::Postgres).await;
}
