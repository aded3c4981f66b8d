//! `cargo bench --bench events [-- CLIENTS ROUNDS]`
//!
//! The live event stream under load: the real binary (its own process, on
//! its in-process simulator with the demo's levels and alerts, so prices
//! stream all along) and CLIENTS (default 1 000) SSE clients over real HTTP
//! with mixed filters:
//!
//! - a quarter: everything;
//! - a quarter: `types=process,level`;
//! - a quarter: `types=price,process&symbols=` three symbols;
//! - a quarter: `account=main`.
//!
//! Every client's filter lets `process` events through. ROUNDS (default 200)
//! times, 50 ms apart, the bench pauses or resumes a process through the API
//! (each is one `process` event) and takes the time it sent the request as
//! the event's time; each client notes when the event's frame arrived. The
//! fan-out latency of a round is from that time to the *last* client's
//! arrival (and, beside it, every single delivery). Also measured, on the
//! service's process (`/proc`): CPU while the clients are connected and
//! prices stream, against the same time with no client; resident memory
//! with the clients against without, per client.
//!
//! Output: one line per quantity, `events clients=… fanout_last_ms p50=…
//! p99=… max=…`, `delivery_ms p50=… p99=…`, `cpu_cores idle=… with_clients=…`,
//! `rss_mb before=… after=… per_client_kib=…`, `dropped=… missed=…`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "bench-admin-token-0123456789";
const MARKER: &str = "\"process\":\"bench\"";

struct Service {
    child: Child,
    base: String,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(clients: usize) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[http]\nadmin_token = \"{TOKEN}\"\nmax_connections = {}\nmutations_per_minute = 100000\n\
         [events]\nmax_clients = {}\n\
         [processes.bench]\nkind = \"command\"\ncommand = \"true\"\ninterval_seconds = 3600\nstart_offset_seconds = 3600\n",
        clients + 200,
        clients + 100,
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .arg("--config")
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SCRIPT_MANAGER_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SCRIPT_MANAGER_LOG_LEVEL", "warn")
        .env(
            "SCRIPT_MANAGER_STORE__URL",
            format!("sqlite://{}/store.db", dir.path().display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ERROR") {
                eprintln!("service: {line}");
            }
        }
    });
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Service {
        child,
        base: format!("http://127.0.0.1:{port}"),
        addr,
        _dir: dir,
    }
}

/// The service's CPU seconds and resident bytes, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib * 1024.0)
}

fn query(i: usize) -> &'static str {
    match i % 4 {
        0 => "",
        1 => "types=process,level",
        2 => "types=price,process&symbols=BTCUSDT,ETHUSDT,SOLUSDT",
        _ => "account=main",
    }
}

/// One client: connects, then notes when each frame carrying MARKER arrives,
/// until `stop`. Returns those instants, and whether the stream was cut.
async fn client(
    addr: std::net::SocketAddr,
    i: usize,
    connected: Arc<tokio::sync::Barrier>,
    stop: tokio_util::sync::CancellationToken,
) -> (Vec<Instant>, bool) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /api/events?{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        query(i)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut carry = String::new();
    let mut seen = Vec::new();
    let mut waited = false;
    let mut cut = false;
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => break,
            r = stream.read(&mut buf) => r,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                cut = true;
                break;
            }
            Ok(n) => n,
        };
        let now = Instant::now();
        carry.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !waited && carry.contains("event: snapshot") {
            waited = true;
            connected.wait().await;
        }
        if let Some(end) = carry.rfind('\n') {
            for line in carry[..end].lines() {
                if line.starts_with("data: ") && line.contains(MARKER) {
                    seen.push(now);
                }
            }
            carry.drain(..=end);
        }
    }
    (seen, cut)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let clients = args.first().copied().unwrap_or(1000);
    let rounds = args.get(1).copied().unwrap_or(200);
    let svc = start(clients);
    let http = script_manager::net::http_client().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{}/readyz", svc.base))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the demo's levels and alerts arm and prices start streaming.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = svc.child.id();
    let window = Duration::from_secs(10);
    let (cpu0, rss_before) = usage(pid);
    tokio::time::sleep(window).await;
    let (cpu1, _) = usage(pid);
    let idle_cores = (cpu1 - cpu0) / window.as_secs_f64();

    let connected = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..clients {
        tasks.push(tokio::spawn(client(svc.addr, i, connected.clone(), stop.clone())));
        if i % 50 == 49 {
            // The kernel's accept backlog is finite: connect in waves.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), connected.wait())
        .await
        .expect("every client got its snapshot");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu2, rss_after) = usage(pid);
    let busy_from = Instant::now();

    let mut sent = Vec::new();
    for r in 0..rounds {
        let action = if r % 2 == 0 { "pause" } else { "resume" };
        let at = Instant::now();
        let answer = http
            .post(format!("{}/api/script-manager/processes/bench/{action}", svc.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{action}: {}", answer.status());
        sent.push(at);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu3, rss_end) = usage(pid);
    let with_clients = (cpu3 - cpu2) / busy_from.elapsed().as_secs_f64();
    stop.cancel();

    let mut last = vec![None::<Instant>; rounds];
    let mut deliveries = Vec::new();
    let (mut missed, mut cut) = (0usize, 0usize);
    for task in tasks {
        let (seen, was_cut) = task.await.unwrap();
        cut += was_cut as usize;
        if seen.len() < rounds {
            missed += rounds - seen.len();
        }
        for (r, at) in seen.into_iter().take(rounds).enumerate() {
            deliveries.push(at.duration_since(sent[r]).as_secs_f64() * 1000.0);
            last[r] = Some(last[r].map_or(at, |l: Instant| l.max(at)));
        }
    }
    let mut fanout: Vec<f64> = last
        .iter()
        .enumerate()
        .filter_map(|(r, l)| l.map(|l| l.duration_since(sent[r]).as_secs_f64() * 1000.0))
        .collect();
    fanout.sort_by(f64::total_cmp);
    deliveries.sort_by(f64::total_cmp);
    let metrics = http
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("script_manager_events_clients_dropped_total{reason=\"slow\"}"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    println!(
        "events clients={clients} rounds={rounds} fanout_last_ms p50={:.2} p99={:.2} max={:.2}",
        quantile(&fanout, 0.5),
        quantile(&fanout, 0.99),
        fanout.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "events delivery_ms p50={:.2} p99={:.2} (every delivery: {})",
        quantile(&deliveries, 0.5),
        quantile(&deliveries, 0.99),
        deliveries.len()
    );
    println!("events cpu_cores idle={idle_cores:.3} with_clients={with_clients:.3}");
    println!(
        "events rss_mb before={:.1} connected={:.1} end={:.1} per_client_kib={:.1}",
        rss_before / 1048576.0,
        rss_after / 1048576.0,
        rss_end / 1048576.0,
        (rss_after - rss_before) / 1024.0 / clients as f64
    );
    println!("events dropped_slow={dropped} missed={missed} streams_cut={cut}");
    let _ = std::io::stdout().flush();
}
