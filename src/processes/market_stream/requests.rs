//! The `SUBSCRIBE`/`UNSUBSCRIBE` requests one connection sent and the venue
//! has not answered yet. A stream's subscription counts only once the venue
//! confirmed it: until then its quotes are not vouched for (a symbol
//! re-subscribed on a connection that stayed open still has its quote from
//! before, possibly hours old). A request not answered within
//! [`ANSWER_TIMEOUT`], or refused, means the connection cannot be trusted
//! with its subscriptions: it is replaced.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// How long the venue may take to answer a request (it answers in milliseconds).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

struct Pending {
    streams: Vec<String>,
    subscribe: bool,
    deadline: Instant,
}

/// Requests in flight on one connection, by id.
#[derive(Default)]
pub struct Requests {
    pending: BTreeMap<u64, Pending>,
    /// Stream → the last request that named it: only that one's answer says where it stands.
    latest: HashMap<String, u64>,
}

/// What an answer means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// These streams' subscriptions are confirmed (now).
    Subscribed(Vec<String>),
    /// Nothing changes (an `UNSUBSCRIBE` done, a subscription asked again since, an id we never sent).
    Nothing,
    /// The venue refused the request: the connection must be replaced.
    Refused(String),
}

impl Requests {
    /// Request `id` asked to add (`subscribe`) or remove `streams` at `now`.
    pub fn sent(&mut self, id: u64, streams: Vec<String>, subscribe: bool, now: Instant) {
        for s in &streams {
            self.latest.insert(s.clone(), id);
        }
        self.pending.insert(
            id,
            Pending {
                streams,
                subscribe,
                deadline: now + ANSWER_TIMEOUT,
            },
        );
    }

    /// The venue answered request `id` (`error` when it refused it).
    pub fn answered(&mut self, id: u64, error: Option<String>) -> Answer {
        let Some(request) = self.pending.remove(&id) else {
            return Answer::Nothing;
        };
        let current: Vec<String> = request
            .streams
            .into_iter()
            .filter(|s| self.latest.get(s) == Some(&id))
            .collect();
        for s in &current {
            self.latest.remove(s);
        }
        match error {
            Some(error) => Answer::Refused(error),
            None if request.subscribe && !current.is_empty() => Answer::Subscribed(current),
            None => Answer::Nothing,
        }
    }

    /// When the oldest unanswered request is overdue; `None` when none is in flight.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_counts_from_its_own_answer_and_unanswered_requests_fall_due() {
        let mut r = Requests::default();
        assert_eq!(r.deadline(), None);
        let t0 = Instant::now();
        r.sent(1, streams(&["ethusdt@bookTicker"]), true, t0);
        r.sent(2, streams(&["btcusdt@bookTicker"]), false, t0 + Duration::from_secs(1));
        assert_eq!(r.deadline(), Some(t0 + ANSWER_TIMEOUT), "the oldest request's");
        assert_eq!(
            r.answered(1, None),
            Answer::Subscribed(streams(&["ethusdt@bookTicker"]))
        );
        assert_eq!(r.answered(2, None), Answer::Nothing, "an UNSUBSCRIBE confirms nothing");
        assert_eq!(r.answered(2, None), Answer::Nothing, "answered twice, or never sent");
        assert_eq!(r.deadline(), None);
        r.sent(3, streams(&["x@bookTicker"]), true, t0);
        assert_eq!(
            r.answered(3, Some("2: Invalid request".into())),
            Answer::Refused("2: Invalid request".into())
        );
    }

    #[test]
    fn only_the_last_request_naming_a_stream_confirms_it() {
        let mut r = Requests::default();
        let now = Instant::now();
        // Subscribed, dropped and subscribed again before any answer came.
        r.sent(1, streams(&["a", "b"]), true, now);
        r.sent(2, streams(&["a"]), false, now);
        r.sent(3, streams(&["a"]), true, now);
        assert_eq!(r.answered(1, None), Answer::Subscribed(streams(&["b"])));
        assert_eq!(r.answered(2, None), Answer::Nothing);
        assert_eq!(r.answered(3, None), Answer::Subscribed(streams(&["a"])));
    }
}
