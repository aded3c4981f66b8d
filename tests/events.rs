//! The live event stream (`GET /api/events`, issue 25) over real HTTP: the
//! real binary on a simulated exchange in its own process, SQLite (and
//! PostgreSQL with two replicas). A level seen armed, triggered and
//! executed in order; a reconnect with `Last-Event-ID` gets exactly what it
//! missed; a too-old or foreign id gets `reset` and a snapshot; a token
//! scoped to an account sees only that account; a slow client is dropped
//! while a fast one keeps receiving; an event on one replica reaches a
//! client of the other.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::sse::{self, Frame};
use common::trading::{FAST, create_level_near, cross};
use common::{Backend, Service, SimProcess, TestStore};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

async fn start(sim: &SimProcess, store: &TestStore, extra: &str) -> Service {
    common::trading::service(sim, store, extra).await
}

/// As [`start`], with `tokens` (`[[http.tokens]]` entries) after the admin token.
async fn start_with_tokens(sim: &SimProcess, store: &TestStore, tokens: &str) -> Service {
    let config = format!(
        "{FAST}\n{}\n[http]\nadmin_token = \"{}\"\n{tokens}",
        sim.exchange_toml(),
        common::TOKEN
    );
    common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await
}

fn level_of(id: i64) -> impl Fn(&Frame) -> bool {
    move |f| f.event == "level" && f.data["id"] == id
}

/// Ids strictly increase within one connection, and none comes twice.
fn assert_increasing(frames: &[Frame]) {
    let seqs: Vec<u64> = frames.iter().filter_map(Frame::seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ids must strictly increase: {seqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_is_seen_created_triggered_and_executed_in_order() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "").await;
    let mut events = sse::connect(&svc, "types=level,position", Some(common::TOKEN), None).await;
    let snapshot = events.until("the snapshot", T, |f| f.event == "snapshot").await;
    assert!(snapshot.id.is_some(), "a snapshot carries the id to resume from");
    assert!(snapshot.data["positions"].is_array() && snapshot.data["levels"].is_array());

    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    let armed = events.until("armed", T, level_of(id)).await;
    assert_eq!(armed.data["status"], "armed");
    assert_eq!(armed.data["account"], "main");
    cross(&sim, &symbol, amount, sl).await;
    let mut statuses = vec!["armed".to_string()];
    while statuses.last().map(String::as_str) != Some("executed") {
        let f = events.until("the level's next status", T, level_of(id)).await;
        // Backstop changes come as level events too, without a status.
        if let Some(status) = f.data["status"].as_str()
            && statuses.last().map(String::as_str) != Some(status)
        {
            statuses.push(status.to_string());
        }
    }
    assert_eq!(statuses, ["armed", "triggered", "executed"], "in order");
    let flat = |f: &Frame| f.event == "position" && f.data["symbol"] == symbol.as_str() && f.data["amount"] == "0";
    if !events.seen.iter().any(flat) {
        events.until("the position going flat", T, flat).await;
    }
    assert_increasing(&events.seen);
    // The snapshot of a new connection has it no more among the open levels.
    let mut fresh = sse::connect(&svc, "types=level", Some(common::TOKEN), None).await;
    let snapshot = fresh.until("a snapshot", T, |f| f.event == "snapshot").await;
    assert!(
        !snapshot.data["levels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == id),
        "{snapshot:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_gets_exactly_what_it_missed_and_a_stale_id_a_fresh_snapshot() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "[events]\nbuffer = 200\n").await;
    // The witness stays connected throughout.
    let mut witness = sse::connect(&svc, "types=level", Some(common::TOKEN), None).await;
    let mut client = sse::connect(&svc, "types=level", Some(common::TOKEN), None).await;
    let (a, ..) = create_level_near(&svc, &sim, "main").await;
    client.until("a armed", T, level_of(a)).await;
    witness.until("a armed", T, level_of(a)).await;
    let last = client.last_id.clone().expect("an id");
    drop(client);

    // Missed while away: two levels more, and the first one deleted.
    let (b, ..) = create_level_near(&svc, &sim, "alt").await;
    let (status, _) = svc.delete(&format!("/api/levels/{a}")).await;
    assert_eq!(status, 204);
    witness.until("b armed", T, level_of(b)).await;
    witness
        .until("a deleted", T, |f| level_of(a)(f) && f.data["status"] == "deleted")
        .await;
    let upto = witness.seen.last().unwrap().seq().unwrap();
    let after = last.rsplit_once('-').unwrap().1.parse::<u64>().unwrap();
    let missed: Vec<Frame> = witness
        .seen
        .iter()
        .filter(|f| f.seq().is_some_and(|s| s > after && s <= upto))
        .cloned()
        .collect();
    assert!(missed.len() >= 2, "{missed:?}");

    let mut back = sse::connect(&svc, "types=level", Some(common::TOKEN), Some(&last)).await;
    let mut replayed = Vec::new();
    while replayed.last().and_then(Frame::seq) != Some(upto) {
        let f = back.next(T).await.expect("the replay");
        assert_ne!(f.event, "snapshot", "a resumable id gets no snapshot");
        replayed.push(f);
    }
    assert_eq!(replayed, missed, "exactly the missed events, in order, none twice");
    let metrics = svc.metrics().await;
    assert!(common::sample(&metrics, "script_manager_events_replays_total{outcome=\"hit\"}").unwrap() >= 1.0);

    // Another replica's (or a previous start's) id: reset, then a snapshot.
    let mut foreign = sse::connect(&svc, "types=level", Some(common::TOKEN), Some("0abc-5")).await;
    let first = foreign.next(T).await.unwrap();
    assert_eq!(first.event, "reset");
    assert_eq!(first.data["reason"], "unknown_id");
    assert_eq!(foreign.next(T).await.unwrap().event, "snapshot");

    // An id older than the buffer (200 events; runs make ~30 a second): reset, then a snapshot.
    let mut all = sse::connect(&svc, "", Some(common::TOKEN), None).await;
    all.until("the buffer to move on", Duration::from_secs(60), |f| {
        f.seq().is_some_and(|s| s > after + 400)
    })
    .await;
    let mut old = sse::connect(&svc, "types=level", Some(common::TOKEN), Some(&last)).await;
    let first = old.next(T).await.unwrap();
    assert_eq!(
        (first.event.as_str(), &first.data["reason"]),
        ("reset", &json!("too_old"))
    );
    let snapshot = old.next(T).await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert!(
        snapshot.data["levels"].as_array().unwrap().iter().any(|l| l["id"] == b),
        "the snapshot has the armed level: {snapshot:?}"
    );
    let metrics = svc.metrics().await;
    assert!(common::sample(&metrics, "script_manager_events_replays_total{outcome=\"reset\"}").unwrap() >= 2.0);
}

const VIEWER: &str = "viewer-main-only-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_scoped_to_an_account_sees_only_that_account() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Sqlite);
    let extra = format!(
        // Scope trade, so reads stay open for the helpers; the account list is what is tested.
        "[[http.tokens]]\nname = \"viewer\"\nscope = \"trade\"\ntoken = \"{VIEWER}\"\naccounts = [\"main\"]\n"
    );
    let svc = start_with_tokens(&sim, &store, &extra).await;
    // As a browser would: the token in the query.
    let query = format!("types=level,position,fill&access_token={VIEWER}");
    let mut events = sse::connect(&svc, &query, None, None).await;
    let snapshot = events.until("the snapshot", T, |f| f.event == "snapshot").await;
    let accounts: BTreeSet<&str> = snapshot.data["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["account"].as_str().unwrap())
        .collect();
    assert!(accounts.iter().all(|a| *a == "main"), "{snapshot:?}");

    let (on_alt, ..) = create_level_near(&svc, &sim, "alt").await;
    let (on_main, ..) = create_level_near(&svc, &sim, "main").await;
    events.until("main's level", T, level_of(on_main)).await;
    assert!(
        events
            .seen
            .iter()
            .all(|f| f.data["account"].as_str().is_none_or(|a| a == "main")),
        "only main's events: {:?}",
        events.seen
    );
    assert!(!events.seen.iter().any(level_of(on_alt)));

    for (query, want) in [
        (format!("account=alt&access_token={VIEWER}"), 403),
        (format!("account=main&access_token={VIEWER}"), 200),
        ("access_token=not-a-known-token-at-all".to_string(), 200),
        (format!("types=nonsense&access_token={VIEWER}"), 400),
        (format!("account=nobody&access_token={VIEWER}"), 403),
        ("account=nobody".to_string(), 422),
        ("symbols=NOPEUSDT".to_string(), 422),
        (format!("bogus=1&access_token={VIEWER}"), 400),
    ] {
        let (status, _) = sse::try_connect(&svc, &query, None, None).await;
        assert_eq!(status, want, "{query}");
    }
    // The data API too.
    let r = svc
        .http
        .get(svc.url("/api/positions?account=alt"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let rows: serde_json::Value = svc
        .http
        .get(svc.url("/api/positions"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        rows.as_array().unwrap().iter().all(|p| p["account"] == "main"),
        "{rows}"
    );
    assert!(!svc.log().contains(VIEWER), "the token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_read_token_the_stream_needs_one() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Sqlite);
    let extra = format!("[[http.tokens]]\nname = \"viewer\"\nscope = \"read\"\ntoken = \"{VIEWER}\"\n");
    let svc = start_with_tokens(&sim, &store, &extra).await;
    for (query, token, want) in [
        ("", None, 401),
        ("access_token=not-a-known-token-at-all", None, 401),
        ("", Some(VIEWER), 200),
        (&format!("access_token={VIEWER}") as &str, None, 200),
    ] {
        let (status, _) = sse::try_connect(&svc, query, token, None).await;
        assert_eq!(status, want, "{query} {token:?}");
    }
    assert!(!svc.log().contains(VIEWER), "the token reached the log");
}

/// A client that connects, asks for the stream and never reads: its socket's
/// receive buffer is made small so the server's writes back up quickly.
async fn stalled_client(svc: &Service, query: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr: std::net::SocketAddr = svc.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /api/events?{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        common::TOKEN
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_dropped_while_a_fast_one_keeps_receiving() {
    // 40 symbols whose prices move every 10 ms, each sent every 10 ms: some
    // thousands of events a second, so the slow client's socket buffers
    // (megabytes on loopback) fill within seconds.
    let symbols: Vec<String> = (0..40).map(|i| format!("S{i:02}USDT")).collect();
    let listed: Vec<String> = symbols.iter().map(|s| format!("{s} = 100.0")).collect();
    let sim = SimProcess::start(&format!("price_step_ms = 10\nsymbols = {{ {} }}", listed.join(", "))).await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "[events]\nprice_interval_ms = 10\nclient_queue = 256\n").await;
    let query = format!("types=price&symbols={}", symbols.join(","));
    let mut fast = sse::connect(&svc, &query, Some(common::TOKEN), None).await;
    let mut slow = stalled_client(&svc, &query).await;
    let dropped = "script_manager_events_clients_dropped_total{reason=\"slow\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut prices = 0;
    while common::sample(&svc.metrics().await, dropped).unwrap_or(0.0) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow client was never dropped"
        );
        // The fast one reads on all along.
        for _ in 0..100 {
            if fast.next(Duration::from_millis(5)).await.is_some() {
                prices += 1;
            }
        }
    }
    assert!(prices > 0, "the fast client got prices before the drop");
    let at_drop = fast.seen.last().and_then(Frame::seq).unwrap_or(0);
    fast.until("prices after the drop", T, |f| {
        f.event == "price" && f.seq() > Some(at_drop)
    })
    .await;
    assert_eq!(
        common::sample(&svc.metrics().await, dropped).unwrap(),
        1.0,
        "only the slow one was dropped"
    );
    assert_increasing(&fast.seen);

    // The slow one, reading at last, finds a `reset` at the end of its stream
    // (its receive buffer enlarged first: a tiny window drains slowly).
    {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 1 << 20;
        let set = unsafe {
            libc::setsockopt(
                slow.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
    }
    let mut tail = String::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !tail.contains("event: reset") {
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout_at(deadline, slow.read(&mut buf))
            .await
            .expect("the reset frame")
            .unwrap();
        assert!(n > 0, "closed without a reset");
        tail.push_str(&String::from_utf8_lossy(&buf[..n]));
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 1024);
        }
    }
    assert!(
        tail.contains("id: reset\nevent: reset\ndata: {\"reason\":\"slow\"}"),
        "{tail}"
    );
    // ... and its next connect, with that id, starts over: reset, then a snapshot.
    let mut again = sse::connect(&svc, &query, Some(common::TOKEN), Some("reset")).await;
    assert_eq!(again.next(T).await.unwrap().event, "reset");
    assert_eq!(again.next(T).await.unwrap().event, "snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_bounds_the_connections() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "[events]\nmax_clients = 2\n").await;
    let _a = sse::connect(&svc, "", Some(common::TOKEN), None).await;
    let b = sse::connect(&svc, "", Some(common::TOKEN), None).await;
    let (status, _) = sse::try_connect(&svc, "", Some(common::TOKEN), None).await;
    assert_eq!(status, 503);
    drop(b);
    let mut ok = false;
    for _ in 0..50 {
        if sse::try_connect(&svc, "", Some(common::TOKEN), None).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a place frees up when a client leaves");
    let m = svc.metrics().await;
    assert!(common::sample(&m, "script_manager_events_clients").is_some(), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_one_replica_reaches_a_client_of_the_other() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Postgres);
    let config = format!(
        "[ha]\nenabled = true\nlease_margin_seconds = 1\nheartbeat_seconds = 0.25\n{FAST}\n{}\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    let url = store.url.as_str();
    let r1 = common::start(
        &config,
        &[
            ("SCRIPT_MANAGER_STORE__URL", url),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", "r1"),
        ],
    )
    .await;
    let r2 = common::start(
        &config,
        &[
            ("SCRIPT_MANAGER_STORE__URL", url),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", "r2"),
        ],
    )
    .await;
    let mut on_r2 = sse::connect(&r2, "types=level,process", Some(common::TOKEN), None).await;
    let snapshot = on_r2.until("the snapshot", T, |f| f.event == "snapshot").await;
    let r2_epoch = snapshot.id.unwrap().split('-').next().unwrap().to_string();
    // A level created through r1's API is written (and published) by r1.
    let (id, ..) = create_level_near(&r1, &sim, "main").await;
    let armed = on_r2.until("r1's level on r2's stream", T, level_of(id)).await;
    assert_eq!(armed.data["status"], "armed");
    assert!(
        armed.id.as_deref().unwrap().starts_with(&format!("{r2_epoch}-")),
        "ids are r2's own"
    );
    // Runs held by r1 reach r2's clients too.
    let r1_holds: Vec<String> = r1
        .get_json("/api/script-manager/processes")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["lease"]["holder"] == "r1")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    if !r1_holds.is_empty() {
        on_r2
            .until("a run of r1's on r2's stream", T, |f| {
                f.event == "process" && r1_holds.iter().any(|p| f.data["process"] == p.as_str())
            })
            .await;
    }
    assert_increasing(&on_r2.seen);
    // An id of r1's means nothing on r2: reset and a snapshot (what a client
    // moved by its load balancer gets).
    let mut on_r1 = sse::connect(&r1, "types=level", Some(common::TOKEN), None).await;
    let r1_id = on_r1
        .until("the snapshot", T, |f| f.event == "snapshot")
        .await
        .id
        .unwrap();
    let mut moved = sse::connect(&r2, "types=level", Some(common::TOKEN), Some(&r1_id)).await;
    assert_eq!(moved.next(T).await.unwrap().event, "reset");
    assert_eq!(moved.next(T).await.unwrap().event, "snapshot");
}
