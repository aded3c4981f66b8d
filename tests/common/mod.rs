//! Runs the real `script-manager` binary for end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod sse;
pub mod trading;
pub mod venue;

pub const TOKEN: &str = "test-admin-token-0123456789";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Service {
    child: Option<Child>,
    pub base: String,
    pub output: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Spawns the binary with `config` (TOML) and `env`, and waits until it is ready.
pub async fn start(config: &str, env: &[(&str, &str)]) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_script-manager"));
    cmd.arg("--config")
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SCRIPT_MANAGER_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("NO_COLOR", "1")
        .env(
            "SCRIPT_MANAGER_STORE__URL",
            format!("sqlite://{}/store.db", dir.path().display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let output = Arc::new(Mutex::new(Vec::new()));
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                output.lock().unwrap().push(line);
            }
        });
    }
    let service = Service {
        child: Some(child),
        base: format!("http://127.0.0.1:{port}"),
        output,
        dir,
        http: script_manager::net::http_client().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = service.http.get(service.url("/readyz")).send().await
            && r.status().is_success()
        {
            return service;
        }
        assert!(
            Instant::now() < deadline,
            "service not ready; output:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Polls `check` every 100 ms until it holds, failing with the end of
    /// the service's log after `timeout`.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.log().lines().rev().take(200).collect::<Vec<_>>().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get_text("/metrics").await
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls `check` on the status document until it holds.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_get(what, "/api/script-manager/status", timeout, check).await
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, then waits for exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("service did not stop in {timeout:?}; output:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of one series in Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    })
}

/// `promtool check metrics` finds nothing to say about `text`.
pub fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (scripts/test installs Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}

/// Whether a pid is gone (or a zombie nobody reaped).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

impl Service {
    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the service.
    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// SIGKILL: no shutdown, no flush, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `DELETE path` with the admin token: (status, JSON body or null).
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .delete(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Polls `GET path` until `check` holds.
    pub async fn wait_get(
        &self,
        what: &str,
        path: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let doc = self.get_json(path).await;
            if check(&doc) {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {path}: {doc:#}\noutput:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A simulated exchange in its own process, so it outlives service restarts.
pub struct SimProcess {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl SimProcess {
    pub async fn start(simulator_toml: &str) -> SimProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.toml");
        std::fs::write(&path, format!("[exchange.simulator]\n{simulator_toml}\n")).unwrap();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_script-manager"))
            .args(["sim", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&path)
            .env_clear()
            .env(
                "SCRIPT_MANAGER_STORE__URL",
                format!("sqlite://{}/unused.db", dir.path().display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let sim = SimProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: script_manager::net::http_client().unwrap(),
            _dir: dir,
        };
        for _ in 0..200 {
            if sim.http.get(format!("{}/fapi/v1/time", sim.base)).send().await.is_ok() {
                return sim;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("simulator did not start");
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    /// Service configuration that points at this simulator as if it were Binance.
    pub fn exchange_toml(&self) -> String {
        format!(
            "[exchange]\nkind = \"binance-usdm\"\nbase_url = \"{}\"\nws_base_url = \"{}\"\n\
             [exchange.accounts.main]\napi_key = \"sim-main-key\"\napi_secret = \"sim-main-secret\"\n\
             [exchange.accounts.alt]\napi_key = \"sim-alt-key\"\napi_secret = \"sim-alt-secret\"\n",
            self.base,
            self.base.replace("http://", "ws://")
        )
    }

    /// The exchange section with streams off: the service as it was before
    /// streams, polling trades and positions on every tick.
    pub fn polling_exchange_toml(&self) -> String {
        self.exchange_toml()
            .replacen("[exchange]\n", "[exchange]\nstreams = false\n", 1)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store of its own for one test: a SQLite file, or a fresh PostgreSQL
/// database (dropped afterwards) on the machine's server.
pub struct TestStore {
    pub url: String,
    _dir: tempfile::TempDir,
    pg_name: Option<String>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("SM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .arg(postgres_admin_url())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("psql {sql}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("psql is needed for PostgreSQL tests: {e}"),
    }
}

impl TestStore {
    pub fn new(backend: Backend) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestStore {
                url: format!("sqlite://{}/store.db", dir.path().display()),
                _dir: dir,
                pg_name: None,
            },
            Backend::Postgres => {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let name = format!("sm_test_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
                psql(&format!("CREATE DATABASE {name}"));
                let admin = postgres_admin_url();
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin);
                TestStore {
                    url: format!("{base}/{name}"),
                    _dir: dir,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = Command::new("psql")
                .arg(postgres_admin_url())
                .args(["-q", "-c", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
                .output();
        }
    }
}
