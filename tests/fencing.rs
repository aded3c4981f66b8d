//! Orders fenced in time (issue 21): the venue cannot check our claims, so
//! a close worker sends an order only while its claim has the send margin
//! left on its own monotonic clock. Here a worker resumes with a claim that
//! lapsed while it was "frozen" (another owner took the close over): it must
//! send nothing and leave the close to the new owner. In-process: the
//! simulator, the Binance client and the close workers, over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use script_manager::app::exchange::{demo_accounts, sim_specs};
use script_manager::budget::{Admission, Caller, ProcessCalls, VenueWeight};
use script_manager::domain::{Catalog, PositionSide};
use script_manager::exchange::Venue;
use script_manager::exchange::binance::{Binance, TransportOptions};
use script_manager::process::Fence;
use script_manager::processes::levels::close::{CloseDeps, CloseSettings, Closer, Fired};
use script_manager::processes::platform::StreamHealth;
use script_manager::sim::{self, SimulatorConfig};
use script_manager::store::{NewLevel, Store};
use script_manager::telemetry::Metrics;
use script_manager::upstream::Knobs;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Rig {
    addr: std::net::SocketAddr,
    venue: Arc<Binance>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

async fn rig() -> Rig {
    let stop = CancellationToken::new();
    let config = SimulatorConfig {
        fills_per_minute: 0.0,
        volatility: 0.0,
        ..SimulatorConfig::default()
    };
    let (addr, _sim) = sim::start(&config, &sim_specs(&demo_accounts()), stop.clone())
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let weight = Arc::new(VenueWeight::new(2400, 0.8, 0.2, ["level_monitor".to_string()]));
    let calls = ProcessCalls::new([("level_monitor".to_string(), 1000), ("test".to_string(), 1000)]);
    let admission = Admission::new(Arc::new(calls), weight);
    let options = TransportOptions {
        base_url: format!("http://{addr}"),
        recv_window_ms: 5000,
        timeout: Duration::from_secs(5),
    };
    let knobs = Knobs {
        batching: true,
        dedupe: true,
        cache: true,
    };
    let venue = Arc::new(
        Binance::new(
            options,
            knobs,
            admission,
            metrics.clone(),
            script_manager::accounts::Accounts::new(demo_accounts(), script_manager::accounts::Source::File),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(&format!("sqlite://{}/store.db", dir.path().display()))
            .await
            .unwrap(),
    );
    Rig {
        addr,
        venue,
        store,
        metrics,
        _dir: dir,
        _stop: stop.drop_guard(),
    }
}

impl Rig {
    fn closer(&self, owner: &str, lease: Duration, send_margin: Duration) -> Arc<Closer> {
        let deps = CloseDeps {
            store: self.store.clone(),
            venue: self.venue.clone(),
            catalog: Arc::new(Catalog::default()),
            events: self.metrics.domain.clone(),
            stream_health: Arc::new(StreamHealth::default()),
            webhook_url: None,
        };
        let settings = CloseSettings {
            attempt: Duration::from_secs(5),
            lease,
            send_margin,
            concurrency: 4,
        };
        Closer::new(deps, settings, owner)
    }

    async fn orders(&self) -> Vec<Value> {
        let url = format!("http://{}/sim/orders?account=main", self.addr);
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body.as_array().unwrap().clone()
    }

    /// A level on one of `main`'s open positions, triggered with a claim of `lease_ms` for `owner`.
    async fn triggered(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> (script_manager::store::Intent, script_manager::store::Claim) {
        let caller = Caller::new("test", 1, Instant::now() + Duration::from_secs(5));
        let position = self.venue.positions(&caller, "main").await.unwrap().remove(0);
        let level = self
            .store
            .insert_level(&NewLevel {
                account: "main".into(),
                symbol: position.symbol.clone(),
                side: PositionSide::of(position.amount).unwrap(),
                take_profit: None,
                stop_loss: Some(Decimal::ONE),
            })
            .await
            .unwrap();
        self.store
            .trigger_level(
                &Fence::none(),
                &level,
                ("stop_loss", Decimal::ONE, 0),
                (owner, lease_ms),
            )
            .await
            .unwrap()
            .expect("armed")
    }
}

async fn until_idle(closer: &Closer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while closer.in_flight() > 0 {
        assert!(Instant::now() < deadline, "the worker never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fired() -> Fired {
    Fired {
        received: Instant::now(),
        venue_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_claim_lapsed_while_frozen_sends_nothing() {
    let rig = rig().await;
    let (intent, stale) = rig.triggered("a", 1_000).await;
    // "a" is frozen past its lease; "b" (another replica) takes the close over.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, b) = rig
        .store
        .claim_intent(&intent.client_order_id, "b", 60_000)
        .await
        .unwrap()
        .expect("the lapsed claim can be taken");
    // "a" resumes where it stopped: about to send order 0 of the close it triggered.
    let a = rig.closer("a", Duration::from_secs(1), Duration::from_millis(500));
    let frozen_since = Instant::now() - Duration::from_millis(1_500);
    a.start_fired(intent.clone(), stale, frozen_since, fired());
    until_idle(&a).await;
    assert!(rig.orders().await.is_empty(), "nothing sent: {:?}", rig.orders().await);
    let (_, still_b) = rig
        .store
        .claim_intent(&intent.client_order_id, "b", 60_000)
        .await
        .unwrap()
        .expect("still pending, still b's");
    assert_eq!(still_b, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_within_its_claim_closes_at_once() {
    // The same start with a live claim: the order leaves and the position goes flat.
    let rig = rig().await;
    let (intent, claim) = rig.triggered("a", 60_000).await;
    let a = rig.closer("a", Duration::from_secs(60), Duration::from_secs(5));
    a.start_fired(intent.clone(), claim, Instant::now(), fired());
    until_idle(&a).await;
    let orders = rig.orders().await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["clientOrderId"], intent.client_order_id.as_str());
    let level = rig.store.level(intent.level_id).await.unwrap().unwrap();
    assert_eq!(level.status.as_str(), "executed", "{level:?}");
}
