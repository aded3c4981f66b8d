//! Single flight: identical requests in flight share one. The first caller
//! leads; later ones wait for its answer. Leadership is not a reservation
//! that outlives its callers: when every caller of a flight has gone (their
//! futures dropped, say by a timeout), the flight is dropped and forgotten,
//! so the next identical request starts fresh instead of adopting it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

struct Entry<T: Clone> {
    id: u64,
    work: Shared<BoxFuture<'static, T>>,
    waiters: usize,
}

struct Table<T: Clone> {
    entries: HashMap<String, Entry<T>>,
    next_id: u64,
}

pub struct Flights<T: Clone> {
    table: Arc<Mutex<Table<T>>>,
}

impl<T: Clone> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            table: Arc::new(Mutex::new(Table {
                entries: HashMap::new(),
                next_id: 0,
            })),
        }
    }
}

/// One caller's place in a flight; leaving (done or dropped) may end the flight.
struct Seat<T: Clone> {
    table: Arc<Mutex<Table<T>>>,
    key: String,
    id: u64,
}

impl<T: Clone> Drop for Seat<T> {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = table.entries.get_mut(&self.key)
            && entry.id == self.id
        {
            entry.waiters -= 1;
            if entry.waiters == 0 {
                table.entries.remove(&self.key);
            }
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Joins the flight for `key`, or starts one with `start()`. Returns the
    /// answer and whether this caller led (started) the flight.
    pub async fn join(&self, key: String, start: impl FnOnce() -> BoxFuture<'static, T>) -> (T, bool) {
        let (work, seat, led) = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let joined = table.entries.get_mut(&key).map(|entry| {
                entry.waiters += 1;
                (entry.work.clone(), entry.id)
            });
            let (work, id, led) = match joined {
                Some((work, id)) => (work, id, false),
                None => {
                    let id = table.next_id;
                    table.next_id += 1;
                    let work = start().shared();
                    table.entries.insert(
                        key.clone(),
                        Entry {
                            id,
                            work: work.clone(),
                            waiters: 1,
                        },
                    );
                    (work, id, true)
                }
            };
            let seat = Seat {
                table: self.table.clone(),
                key,
                id,
            };
            (work, seat, led)
        };
        let answer = work.await;
        // Answered: later identical requests start their own flight.
        {
            let mut table = seat.table.lock().unwrap_or_else(|e| e.into_inner());
            if table.entries.get(&seat.key).is_some_and(|e| e.id == seat.id) {
                table.entries.remove(&seat.key);
            }
        }
        drop(seat);
        (answer, led)
    }

    /// Whether no flight is in progress (for tests).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn counted(starts: &Arc<AtomicU32>, value: u32, delay: Duration) -> impl FnOnce() -> BoxFuture<'static, u32> {
        let starts = starts.clone();
        move || {
            starts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                value
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn identical_requests_share_one_flight() {
        let flights = Flights::default();
        let starts = Arc::new(AtomicU32::new(0));
        let d = Duration::from_secs(1);
        let (a, b) = tokio::join!(
            flights.join("k".into(), counted(&starts, 1, d)),
            flights.join("k".into(), counted(&starts, 2, d)),
        );
        assert_eq!((a, b), ((1, true), (1, false)));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty(), "an answered flight is forgotten");
        let (c, led) = flights.join("k".into(), counted(&starts, 3, d)).await;
        assert_eq!((c, led), (3, true), "the next request starts fresh");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_flight_is_not_adopted() {
        let flights = Arc::new(Flights::default());
        let starts = Arc::new(AtomicU32::new(0));
        // The leader gives up (its caller's timeout drops the future) mid-flight.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(10),
            flights.join("k".into(), counted(&starts, 1, Duration::from_secs(60))),
        )
        .await;
        assert!(abandoned.is_err());
        assert!(flights.is_empty(), "nobody waits: the flight is gone");
        let (v, led) = flights
            .join("k".into(), counted(&starts, 2, Duration::from_millis(5)))
            .await;
        assert_eq!((v, led), (2, true), "the next identical request led its own flight");
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_keeps_the_flight_when_the_leader_leaves() {
        let flights = Arc::new(Flights::default());
        let starts = Arc::new(AtomicU32::new(0));
        let follower = {
            let flights = flights.clone();
            let starts = starts.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                flights
                    .join("k".into(), counted(&starts, 9, Duration::from_secs(1)))
                    .await
            })
        };
        let leader = tokio::time::timeout(
            Duration::from_millis(5),
            flights.join("k".into(), counted(&starts, 1, Duration::from_secs(1))),
        )
        .await;
        assert!(leader.is_err());
        assert_eq!(
            follower.await.unwrap(),
            (1, false),
            "the follower still gets the flight's answer"
        );
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }
}
