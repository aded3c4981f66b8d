//! Positions ordered by the venue's time, on SQLite and PostgreSQL: a
//! positionRisk answer read before a fill but committed after the stream's
//! `ACCOUNT_UPDATE` leaves the stream's amount; a newer answer replaces it; a
//! position that went flat is not brought back by an older answer; what each
//! write changed is reported; flat rows are invisible to readers and pruned.

mod common;

use common::{Backend, TestStore};
use rust_decimal::Decimal;
use script_manager::clock::now_ms;
use script_manager::domain::Position;
use script_manager::process::Fence;
use script_manager::store::{FLAT_KEPT_MS, PositionChange, Store};

fn row(symbol: &str, amount: i64, mark: i64, time: i64) -> Position {
    Position {
        symbol: symbol.into(),
        amount: Decimal::from(amount),
        entry_price: Decimal::from(100),
        mark_price: Decimal::from(mark),
        unrealized_pnl: Decimal::from((mark - 100) * amount),
        update_time_ms: time,
    }
}

fn change(symbol: &str, from: i64, to: i64, time: i64) -> PositionChange {
    PositionChange {
        account: "main".into(),
        symbol: symbol.into(),
        from: Decimal::from(from),
        to: Decimal::from(to),
        venue_time: time,
        retired: Vec::new(),
    }
}

/// (symbol, amount, venue time) of the open positions of `main`.
async fn open(store: &Store) -> Vec<(String, Decimal, i64)> {
    let rows = store.positions(Some("main")).await.unwrap();
    rows.into_iter().map(|p| (p.symbol, p.amount, p.venue_time)).collect()
}

fn btc(amount: i64, time: i64) -> Vec<(String, Decimal, i64)> {
    vec![("BTCUSDT".into(), Decimal::from(amount), time)]
}

/// Venue times well inside the tombstone window, so flat rows are kept.
fn times() -> (i64, i64, i64, i64) {
    let t = now_ms() - 60_000;
    (t, t + 1_000, t + 2_000, t + 3_000)
}

async fn stale_answer_loses(backend: Backend) {
    let test_store = TestStore::new(backend);
    let store = Store::open(&test_store.url).await.unwrap();
    let none = Fence::none();
    let (t1, t2, t3, t4) = times();
    let now = now_ms();
    // The stream: a fill at T2 made it 2.
    let stream = store
        .update_positions(&none, "main", &[row("BTCUSDT", 2, 110, t2)], now)
        .await
        .unwrap();
    assert_eq!(stream, vec![change("BTCUSDT", 0, 2, t2)]);
    // positionRisk read before that fill (its newest updateTime is T1), committed after.
    let stale = store
        .replace_positions(
            &none,
            "main",
            &[row("BTCUSDT", 1, 105, t1), row("ETHUSDT", 0, 50, 0)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(stale, vec![], "an older answer changes nothing");
    assert_eq!(open(&store).await, btc(2, t2), "the stream's amount stays");
    // A newer answer replaces.
    let newer = store
        .replace_positions(
            &none,
            "main",
            &[row("BTCUSDT", 3, 120, t3), row("ETHUSDT", 0, 50, 0)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(newer, vec![change("BTCUSDT", 2, 3, t3)]);
    assert_eq!(open(&store).await, btc(3, t3));
    // Flat at T4 by the stream; an answer read at T3 that still shows it open does not bring it back.
    let flat = store
        .update_positions(&none, "main", &[row("BTCUSDT", 0, 0, t4)], now)
        .await
        .unwrap();
    assert_eq!(flat, vec![change("BTCUSDT", 3, 0, t4)]);
    assert!(flat[0].closed_or_flipped());
    let resurrect = store
        .replace_positions(&none, "main", &[row("BTCUSDT", 3, 121, t3)], now)
        .await
        .unwrap();
    assert_eq!(resurrect, vec![]);
    let older_event = store
        .update_positions(&none, "main", &[row("BTCUSDT", 3, 121, t3)], now)
        .await
        .unwrap();
    assert_eq!(older_event, vec![]);
    assert_eq!(open(&store).await, vec![], "flat stays flat");
    assert!(
        store.symbols_in_use().await.unwrap().is_empty(),
        "a flat row is no symbol in use"
    );
    assert!(store.account_symbols("main").await.unwrap().is_empty());
    assert!(store.positions(None).await.unwrap().is_empty());
}

async fn answers_flatten_what_they_do_not_list(backend: Backend) {
    let test_store = TestStore::new(backend);
    let store = Store::open(&test_store.url).await.unwrap();
    let none = Fence::none();
    let (t1, t2, t3, t4) = times();
    let now = now_ms();
    store
        .update_positions(
            &none,
            "main",
            &[row("BTCUSDT", 2, 110, t2), row("ETHUSDT", -4, 90, t2)],
            now,
        )
        .await
        .unwrap();
    store
        .update_positions(&none, "alt", &[row("BTCUSDT", 7, 110, t1)], now)
        .await
        .unwrap();
    // An answer read before T2 (v3 lists open positions only): what it omits is flat only as of T1.
    let stale = store
        .replace_positions(&none, "main", &[row("SOLUSDT", 1, 20, t1)], now)
        .await
        .unwrap();
    assert_eq!(stale, vec![change("SOLUSDT", 0, 1, t1)]);
    assert_eq!(open(&store).await.len(), 3, "nothing newer went flat");
    // An answer as of T3 lists BTC open (unchanged since T2), ETH flat since T3 and omits SOL.
    let answer = [row("BTCUSDT", 2, 111, t2), row("ETHUSDT", 0, 0, t3)];
    let mut changed = store.replace_positions(&none, "main", &answer, now).await.unwrap();
    changed.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    assert_eq!(changed, vec![change("ETHUSDT", -4, 0, t3), change("SOLUSDT", 1, 0, t3)]);
    assert_eq!(
        open(&store).await,
        btc(2, t3),
        "every fact of the answer holds as of its newest time"
    );
    let btc_mark = store.positions(Some("main")).await.unwrap()[0].mark_price;
    assert_eq!(btc_mark, Decimal::from(111));
    assert_eq!(
        store.positions(Some("alt")).await.unwrap().len(),
        1,
        "another account is untouched"
    );
    // A stream event at T4 of the same amount, then an answer older than it: the amount and time
    // stay, its prices are still news.
    store
        .update_positions(&none, "main", &[row("BTCUSDT", 2, 112, t4)], now)
        .await
        .unwrap();
    let older = store
        .replace_positions(&none, "main", &[row("BTCUSDT", 2, 115, t3)], now)
        .await
        .unwrap();
    assert_eq!(older, vec![]);
    let stored = &store.positions(Some("main")).await.unwrap()[0];
    assert_eq!(
        (stored.amount, stored.venue_time, stored.mark_price),
        (Decimal::TWO, t4, Decimal::from(115))
    );
    // A side change is reported as one.
    let flip = store
        .update_positions(&none, "main", &[row("BTCUSDT", -1, 112, t4 + 1)], now)
        .await
        .unwrap();
    assert_eq!(flip, vec![change("BTCUSDT", 2, -1, t4 + 1)]);
    assert!(flip[0].closed_or_flipped());
    assert!(!change("BTCUSDT", 0, 1, t4).closed_or_flipped() && !change("BTCUSDT", 1, 2, t4).closed_or_flipped());
}

async fn flat_rows_are_bounded(backend: Backend) {
    let test_store = TestStore::new(backend);
    let store = Store::open(&test_store.url).await.unwrap();
    let none = Fence::none();
    let now = now_ms();
    let rows = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            use sqlx::Row;
            let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
            row.try_get::<i64, _>("n").unwrap()
        }
    };
    // positionRisk v2 lists every symbol: long-flat ones leave no row, recently flat ones do
    // (an older answer in flight must not bring them back).
    let answer = [
        row("AAAUSDT", 0, 0, 0),
        row("BBBUSDT", 0, 0, now - 2 * FLAT_KEPT_MS),
        row("CCCUSDT", 0, 0, now - 1_000),
        row("DDDUSDT", 1, 10, now - 1_000),
    ];
    store.replace_positions(&none, "main", &answer, now).await.unwrap();
    assert_eq!(rows("SELECT count(*) AS n FROM positions").await, 2);
    let stale = store
        .replace_positions(&none, "main", &[row("CCCUSDT", 5, 10, now - 5_000)], now)
        .await
        .unwrap();
    assert_eq!(stale, vec![], "the tombstone keeps CCC flat");
    // Kept FLAT_KEPT_MS after their venue time, then pruned; open rows are never pruned.
    assert_eq!(store.prune_flat_positions(now).await.unwrap(), 0);
    assert_eq!(store.prune_flat_positions(now + FLAT_KEPT_MS).await.unwrap(), 1);
    assert_eq!(rows("SELECT count(*) AS n FROM positions").await, 1);
    assert_eq!(store.positions(None).await.unwrap().len(), 1);
}

macro_rules! on_both_stores {
    ($($name:ident => $body:ident;)*) => {
        mod sqlite {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { $body(Backend::Sqlite).await })*
        }
        mod postgres {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { $body(Backend::Postgres).await })*
        }
    };
}

on_both_stores! {
    a_stale_answer_never_replaces_a_newer_fact => stale_answer_loses;
    an_answer_flattens_what_it_does_not_list_as_open => answers_flatten_what_they_do_not_list;
    flat_rows_are_kept_a_while_then_pruned => flat_rows_are_bounded;
}
