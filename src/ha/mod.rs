//! High availability (issue 7, in progress): the PostgreSQL primitives that
//! let several replicas run each tick exactly once. Not wired into the
//! scheduler yet; `ha.enabled` does not exist so far.

pub mod lease;
