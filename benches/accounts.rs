//! `cargo bench --bench accounts [-- --accounts N --replicas R --minutes M --postgres URL]`
//!
//! A platform's worth of accounts on the simulator, measured as an operator
//! would see it. Defaults: 1 000 accounts, one replica, SQLite, a 4-minute
//! window. `--replicas 4 --accounts 10000` runs four replicas on a fresh
//! PostgreSQL database (default: the machine's server, database `test`).
//!
//! The simulator runs as its own process (as the venue would), with its
//! random trading off, so every fill is one the bench made. Reported:
//! - time from start until every account was synced once by each account
//!   process (trade_sync, position_sync, dashboard_sync: a last success in
//!   `GET /api/accounts`, read from every replica), and until every one was
//!   synced by all three; and until every account has positions and fills
//!   in the store (read from the store itself: each simulated account opens
//!   with three positions);
//! - time until every user stream is up (connected and reconciled: `state.stream`
//!   of `GET /api/accounts`), and the simulator's private connections it took;
//! - the venue's requests by route (what the weight went to);
//! - fill at the venue → stored, p50/p99, once streaming (fills made one at
//!   a time on random accounts; the store polled every 5 ms);
//! - venue weight per minute against the limit, 429/418 answers;
//! - RSS and CPU of each replica, RSS per account, `/metrics` bytes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Row;

struct Args {
    accounts: usize,
    replicas: usize,
    minutes: f64,
    postgres: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        accounts: 1_000,
        replicas: 1,
        minutes: 4.0,
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--accounts" => a.accounts = value().parse().expect("--accounts N"),
            "--replicas" => a.replicas = value().parse().expect("--replicas R"),
            "--minutes" => a.minutes = value().parse().expect("--minutes M"),
            "--postgres" => a.postgres = Some(value()),
            _ => {} // cargo's own flags (--bench)
        }
    }
    if a.replicas > 1 && a.postgres.is_none() {
        a.postgres = Some("postgres://postgres@127.0.0.1:5432/test".into());
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn name(i: usize) -> String {
    format!("a{i:05}")
}

fn accounts_toml(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let a = name(i);
        s.push_str(&format!(
            "[exchange.accounts.{a}]\napi_key = \"k-{a}\"\napi_secret = \"s-{a}\"\n"
        ));
    }
    s
}

/// A child process whose output is drained (and dropped) so it never blocks.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(mut cmd: Command, label: &'static str) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("the binary starts");
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("ERROR") || line.contains("panicked") {
                        eprintln!("[{label}] {line}");
                    }
                }
            });
        }
        Proc { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS (bytes) and CPU seconds so far of `pid`, from /proc.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    (rss_kb * 1024, ticks / 100.0)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The account processes whose first sync of every account is timed.
const SYNCS: [&str; 3] = ["trade_sync", "position_sync", "dashboard_sync"];
const TOKEN: &str = "bench-admin-token";

/// Per account: which of [`SYNCS`] have synced it once, and whether its
/// user stream is up, merged over the replicas (with HA an account's state
/// lives on the replica that works for it).
#[derive(Default)]
struct Progress {
    synced: std::collections::HashMap<String, [bool; 3]>,
    up: std::collections::HashSet<String>,
}

impl Progress {
    fn add(&mut self, views: &[Value]) {
        for v in views {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            if v["state"]["stream"] == "up" {
                self.up.insert(name.clone());
            }
            let row = self.synced.entry(name).or_default();
            for s in v["state"]["sync"].as_array().into_iter().flatten() {
                if let Some(i) = SYNCS.iter().position(|p| s["process"] == *p)
                    && !s["last_success"].is_null()
                {
                    row[i] = true;
                }
            }
        }
    }

    /// Accounts synced once by `SYNCS[i]`.
    fn synced_by(&self, i: usize) -> usize {
        self.synced.values().filter(|r| r[i]).count()
    }

    fn synced_by_all(&self) -> usize {
        self.synced.values().filter(|r| r.iter().all(|&b| b)).count()
    }
}

/// Every account's view from one replica, page by page.
async fn account_views(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let Ok(r) = http
            .get(format!("{base}/api/accounts?limit=10000&after={after}"))
            .bearer_auth(TOKEN)
            .send()
            .await
        else {
            return out;
        };
        let Ok(page) = r.json::<Vec<Value>>().await else {
            return out;
        };
        let Some(last) = page.last().and_then(|v| v["name"].as_str()).map(str::to_string) else {
            return out;
        };
        let full = page.len() == 10_000;
        out.extend(page);
        if !full {
            return out;
        }
        after = last;
    }
}

struct Setup {
    sim: Proc,
    sim_base: String,
    replicas: Vec<(Proc, String)>,
    store_url: String,
    _dir: tempfile::TempDir,
}

async fn start(a: &Args) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let accounts = accounts_toml(a.accounts);
    let sim_port = free_port();
    std::fs::write(
        dir.path().join("sim.toml"),
        format!("[exchange.simulator]\nfills_per_minute = 0.0\n{accounts}"),
    )?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_script-manager"));
    cmd.args(["sim", "--listen", &format!("127.0.0.1:{sim_port}"), "--config"])
        .arg(dir.path().join("sim.toml"))
        .env_clear()
        .env(
            "SCRIPT_MANAGER_STORE__URL",
            format!("sqlite://{}/unused.db", dir.path().display()),
        );
    let sim = Proc::spawn(cmd, "sim");
    let sim_base = format!("http://127.0.0.1:{sim_port}");
    let http = reqwest::Client::new();
    wait_until(Duration::from_secs(60), || async {
        http.get(format!("{sim_base}/fapi/v1/time")).send().await.is_ok()
    })
    .await;
    let store_url = match &a.postgres {
        Some(admin) => {
            let db = format!("sm_bench_accounts_{}", std::process::id());
            let pool = admin_pool(admin).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&pool)
                .await?;
            format!("{}/{db}", admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b))
        }
        None => format!("sqlite://{}/store.db", dir.path().display()),
    };
    let config = format!(
        "[exchange]\nkind = \"binance-usdm\"\nbase_url = \"{sim_base}\"\nws_base_url = \"{}\"\n\
         [demo]\nenabled = false\n[http]\nadmin_token = \"{TOKEN}\"\n{accounts}",
        sim_base.replace("http://", "ws://")
    );
    std::fs::write(dir.path().join("config.toml"), &config)?;
    let mut replicas = Vec::new();
    for r in 0..a.replicas {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_script-manager"));
        cmd.arg("--config")
            .arg(dir.path().join("config.toml"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .env("SCRIPT_MANAGER_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("SCRIPT_MANAGER_STORE__URL", &store_url);
        if a.replicas > 1 {
            cmd.env("SCRIPT_MANAGER_HA__ENABLED", "true")
                .env("SCRIPT_MANAGER_HA__REPLICA_ID", format!("r{r}"));
        }
        replicas.push((Proc::spawn(cmd, "replica"), format!("http://127.0.0.1:{port}")));
    }
    Ok(Setup {
        sim,
        sim_base,
        replicas,
        store_url,
        _dir: dir,
    })
}

/// One connection to the PostgreSQL server as its admin (to create and drop the bench's database).
async fn admin_pool(admin: &str) -> anyhow::Result<sqlx::PgPool> {
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await?)
}

async fn wait_until<F, Fut>(limit: Duration, mut ok: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Accounts with positions stored, and with fills stored: every simulated
/// account opens with three positions (three fills), so both reach N.
async fn stored(pool: &sqlx::AnyPool) -> (usize, usize) {
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .ok()
            .and_then(|r| r.try_get::<i64, _>(0).ok())
            .unwrap_or(0) as usize
    };
    (
        count("SELECT COUNT(DISTINCT account) FROM positions").await,
        count("SELECT COUNT(DISTINCT account) FROM trades").await,
    )
}

async fn fills_of(pool: &sqlx::AnyPool, account: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM trades WHERE account = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .ok()
        .and_then(|r| r.try_get::<i64, _>(0).ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Seen {
    /// When every account was first synced by `SYNCS[i]`, and by all of them.
    synced_by: [Option<f64>; 3],
    synced_all: Option<f64>,
    positions_stored: Option<f64>,
    fills_stored: Option<f64>,
    streams_all: Option<f64>,
    metrics_bytes: usize,
    streams: usize,
    private_connections: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    script_manager::net::install_crypto();
    let a = args();
    println!(
        "accounts bench: {} accounts, {} replica(s), {} store, {:.1} min window",
        a.accounts,
        a.replicas,
        if a.postgres.is_some() { "PostgreSQL" } else { "SQLite" },
        a.minutes
    );
    let t0 = Instant::now();
    let setup = start(&a).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let ready = wait_until(Duration::from_secs(120), || async {
        let mut all = true;
        for (_, base) in &setup.replicas {
            all &= http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        }
        all
    })
    .await;
    anyhow::ensure!(ready, "the replicas did not become ready");
    println!("ready after {:.1} s", t0.elapsed().as_secs_f64());
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&setup.store_url)
        .await?;
    let window = Duration::from_secs_f64(a.minutes * 60.0);
    let n = a.accounts as f64;
    let mut seen = Seen::default();
    let mut latencies = Vec::new();
    let mut next_fill = 0usize;
    let mut rng_state = 0x9e37_79b9_u64;
    let cpu_start: f64 = setup.replicas.iter().map(|(p, _)| usage(p.pid()).1).sum();
    let sim_cpu_start = usage(setup.sim.pid()).1;
    let watch_start = Instant::now();
    let mut last_report = Instant::now();
    while t0.elapsed() < window {
        let mut progress = Progress::default();
        for (_, base) in &setup.replicas {
            progress.add(&account_views(&http, base).await);
            if let Ok(r) = http.get(format!("{base}/metrics")).send().await
                && let Ok(text) = r.text().await
            {
                seen.metrics_bytes = seen.metrics_bytes.max(text.len());
            }
        }
        let (positions, fills) = stored(&pool).await;
        let now = t0.elapsed().as_secs_f64();
        if seen.positions_stored.is_none() && positions >= a.accounts {
            seen.positions_stored = Some(now);
        }
        if seen.fills_stored.is_none() && fills >= a.accounts {
            seen.fills_stored = Some(now);
        }
        for (i, at) in seen.synced_by.iter_mut().enumerate() {
            if at.is_none() && progress.synced_by(i) >= a.accounts {
                *at = Some(now);
            }
        }
        if seen.synced_all.is_none() && progress.synced_by_all() >= a.accounts {
            seen.synced_all = Some(now);
        }
        let up = progress.up.len();
        seen.streams = up;
        if up >= a.accounts && seen.streams_all.is_none() {
            seen.streams_all = Some(now);
            let meter: Value = http
                .get(format!("{}/sim/meter", setup.sim_base))
                .send()
                .await?
                .json()
                .await?;
            seen.private_connections = meter["ws_connections"]["private"].as_u64().unwrap_or(0);
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "  t={now:>5.0} s  synced once by trade_sync {} position_sync {} dashboard_sync {} all {} of {n}; \
                 stored: positions of {positions}, fills of {fills}; streams up {up}",
                progress.synced_by(0),
                progress.synced_by(1),
                progress.synced_by(2),
                progress.synced_by_all(),
                n = a.accounts
            );
        }
        // Fills one at a time, each on a random account whose user stream is
        // up (connected and reconciled) by the service's own account.
        let mut streaming: Vec<&String> = progress.up.iter().collect();
        streaming.sort();
        if streaming.len() >= 10 && next_fill < 200 {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            let account = streaming[(rng_state % streaming.len() as u64) as usize].clone();
            let before = fills_of(&pool, &account).await;
            let body = serde_json::json!({"account": account, "symbol": "BTCUSDT", "side": "BUY", "qty": "0.001"});
            let made = Instant::now();
            let r = http
                .post(format!("{}/sim/trade", setup.sim_base))
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "/sim/trade: {}", r.status());
            let deadline = made + Duration::from_secs(30);
            while fills_of(&pool, &account).await <= before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies.push(made.elapsed().as_secs_f64() * 1e3);
            next_fill += 1;
            continue;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let watched = watch_start.elapsed().as_secs_f64();
    let meter: Value = http
        .get(format!("{}/sim/meter", setup.sim_base))
        .send()
        .await?
        .json()
        .await?;
    let answers = |code: &str| meter["answers"][code].as_u64().unwrap_or(0);
    let by_minute: Vec<u64> = meter["weight_by_minute"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let limit = meter["weight_limit"].as_u64().unwrap_or(0);
    let (rss, cpu): (Vec<u64>, Vec<f64>) = setup.replicas.iter().map(|(p, _)| usage(p.pid())).unzip();
    let cpu_used = cpu.iter().sum::<f64>() - cpu_start;
    let at = |v: Option<f64>| v.map_or_else(|| "not reached".to_string(), |s| format!("{s:.1} s"));
    println!("\nresults ({} accounts, {} replica(s)):", a.accounts, a.replicas);
    for (process, when) in SYNCS.iter().zip(seen.synced_by) {
        println!("  every account synced by {process:<15} {}", at(when));
    }
    println!("  every account synced by all three    {}", at(seen.synced_all));
    println!("  every account's positions stored     {}", at(seen.positions_stored));
    println!("  every account's fills stored         {}", at(seen.fills_stored));
    println!(
        "  every user stream up                 {} ({} of {} at the end; {} private connections at the venue)",
        at(seen.streams_all),
        seen.streams,
        a.accounts,
        meter["ws_connections"]["private"]
            .as_u64()
            .unwrap_or(seen.private_connections)
    );
    println!(
        "  fill at the venue → stored           p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} fills on streaming accounts)",
        percentile(latencies.clone(), 0.5),
        percentile(latencies.clone(), 0.99),
        latencies.iter().copied().fold(0.0, f64::max),
        latencies.len()
    );
    println!(
        "  venue weight per minute              {:?} (limit {limit}; busiest {})",
        by_minute,
        by_minute.iter().max().unwrap_or(&0)
    );
    println!(
        "  429 / 418 answers                    {} / {}",
        answers("429"),
        answers("418")
    );
    for (i, r) in rss.iter().enumerate() {
        println!(
            "  replica {i}: RSS {:.1} MB ({:.1} KB per account of the platform)",
            *r as f64 / 1e6,
            *r as f64 / 1e3 / n
        );
    }
    println!("  /metrics bytes (largest scrape)      {}", seen.metrics_bytes);
    // The simulator counts by "route account": summed per route here.
    let mut by_route: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (key, n) in meter["requests"].as_object().into_iter().flatten() {
        let route = key.split(' ').next().unwrap_or(key).to_string();
        *by_route.entry(route).or_default() += n.as_u64().unwrap_or(0);
    }
    println!("  venue requests by route              {by_route:?}");
    println!(
        "  CPU of the replicas                  {:.1} s over {:.0} s ({:.0} % of one core); simulator {:.1} s",
        cpu_used,
        watched,
        cpu_used / watched * 100.0,
        usage(setup.sim.pid()).1 - sim_cpu_start
    );
    drop(pool);
    let store_url = setup.store_url.clone();
    drop(setup);
    if let Some(admin) = &a.postgres {
        let db = store_url.rsplit('/').next().unwrap_or_default().to_string();
        let pool = admin_pool(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db} WITH (FORCE)")))
            .execute(&pool)
            .await?;
    }
    std::io::stdout().flush()?;
    Ok(())
}
