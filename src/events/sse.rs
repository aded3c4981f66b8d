//! A client's side of the stream as `text/event-stream` bytes: the opening
//! frames (`retry`, a `reset`, the snapshot or the replay), then its queue,
//! a comment line every `events.keepalive_seconds` while nothing else goes,
//! and, when the hub dropped it, a last `reset` whose id (`reset`) no
//! replica resumes, so its next connect starts with a fresh snapshot.
//!
//! Frames already queued are sent in batches of up to [`BATCH`]: a client
//! that falls behind for a moment catches up in few writes.

use std::collections::VecDeque;
use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use serde_json::{Value, json};

use super::hub::{Dropped, RESET, SNAPSHOT, Start, Subscription};

/// Frames written at once at most.
const BATCH: usize = 64;

/// How long a browser waits before it reconnects (ms), sent first.
const RETRY: &[u8] = b"retry: 2000\n\n";
const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// The id a dropped client's last frame carries: never a resume point.
pub const DROPPED_ID: &str = "reset";

/// A `reset` frame: the client's view is stale; `why` says why.
pub fn reset_frame(why: &str, id: Option<&str>) -> Bytes {
    let data = json!({"reason": why});
    Bytes::from(match id {
        Some(id) => format!("id: {id}\nevent: reset\ndata: {data}\n\n"),
        None => format!("event: reset\ndata: {data}\n\n"),
    })
}

impl Subscription {
    /// The whole stream. `snapshot` is called when the start is a snapshot
    /// (it reads the store, so the caller builds it before streaming).
    pub fn into_stream(mut self, snapshot: Option<Value>) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        let hub = self.hub().clone();
        let metrics = hub.metrics.clone();
        let mut opening: VecDeque<Bytes> = VecDeque::from([Bytes::from_static(RETRY)]);
        match self.start() {
            Some(Start::Replay(missed)) => {
                for e in missed {
                    metrics.sent(e.kind as usize, 1);
                    opening.push_back(e.frame.clone());
                }
            }
            Some(Start::Snapshot { seq, reset }) => {
                if let Some(why) = reset {
                    metrics.sent(RESET, 1);
                    opening.push_back(reset_frame(why, None));
                }
                let data = snapshot.unwrap_or_else(|| json!({}));
                metrics.sent(SNAPSHOT, 1);
                opening.push_back(Bytes::from(format!(
                    "id: {}\nevent: snapshot\ndata: {data}\n\n",
                    hub.id(seq)
                )));
            }
            None => {}
        }
        let period = hub.settings().keepalive;
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = Live {
            sub: self,
            opening,
            keepalive,
            done: false,
        };
        futures::stream::unfold(state, move |mut s| {
            let metrics = metrics.clone();
            async move {
                if s.done {
                    return None;
                }
                if let Some(frame) = s.opening.pop_front() {
                    return Some((Ok(frame), s));
                }
                loop {
                    if let Some(why) = s.sub.state.dropped() {
                        s.done = true;
                        metrics.sent(RESET, 1);
                        return Some((Ok(dropped_frame(why)), s));
                    }
                    tokio::select! {
                        first = s.sub.rx.recv() => {
                            let Some(first) = first else {
                                // The hub let go of it: dropped (checked above), or shutting down.
                                if s.sub.state.dropped().is_some() { continue; }
                                return None;
                            };
                            metrics.sent(first.kind as usize, 1);
                            let mut more = Vec::new();
                            while more.len() + 1 < BATCH {
                                match s.sub.rx.try_recv() {
                                    Ok(e) => { metrics.sent(e.kind as usize, 1); more.push(e) }
                                    Err(_) => break,
                                }
                            }
                            if more.is_empty() {
                                return Some((Ok(first.frame.clone()), s));
                            }
                            let mut buf = BytesMut::with_capacity(first.frame.len() * (more.len() + 1));
                            buf.extend_from_slice(&first.frame);
                            for e in &more {
                                buf.extend_from_slice(&e.frame);
                            }
                            return Some((Ok(buf.freeze()), s));
                        }
                        _ = s.keepalive.tick() => return Some((Ok(Bytes::from_static(KEEPALIVE)), s)),
                    }
                }
            }
        })
    }
}

fn dropped_frame(why: Dropped) -> Bytes {
    reset_frame(why.as_str(), Some(DROPPED_ID))
}

struct Live {
    sub: Subscription,
    opening: VecDeque<Bytes>,
    keepalive: tokio::time::Interval,
    done: bool,
}
