//! Live updates for the platform's screens (`GET /api/events`, issue 25):
//! one Server-Sent Events stream per screen instead of each view polling
//! the data API on its own timer.
//!
//! A client gets a `snapshot` (positions, armed levels, latest prices) and
//! then deltas — `price`, `fill`, `position`, `level`, `alert`,
//! `notification`, `process` — each with an id `<epoch>-<seq>` that
//! increases strictly on this replica. `Last-Event-ID` resumes from the
//! bounded buffer; an id this replica cannot resume (too old, another
//! replica's, a previous start's) gets `reset` and a fresh snapshot.
//!
//! Owns: the [`Hub`] (sequence, replay buffer, per-client queues, slow
//! clients dropped, never awaited), price conflation ([`prices`]), the SSE
//! framing ([`sse`]) and the cross-replica relay over PostgreSQL
//! LISTEN/NOTIFY ([`relay`]). Producers are narrow seams: the store's write
//! functions (fills, positions, levels, alerts, notifications), the
//! scheduler (runs, pause/resume, overrides) and the market stream (quotes).
//! Imports `backoff`, `clock`, `config` and `telemetry` only, so the store
//! and the scheduler can publish into it. See docs/events.md.

mod hub;
pub mod prices;
pub mod relay;
pub mod sse;

pub use hub::{Dropped, Event, Filter, Full, Hub, Kind, Relayed, Settings, Start, Subscription};
pub use prices::Source;
