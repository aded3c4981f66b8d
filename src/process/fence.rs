//! Fencing (HA): the condition every store write of a run carries. A plain
//! value: the store checks it inside the write's own transaction and answers
//! [`Fenced`] when the run's lease has moved on; the process layer maps that
//! to `ErrorKind::Fenced` (and counts it there).

use std::sync::Arc;

/// The lease a run's writes are conditional on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    lease: Option<(Arc<str>, i64)>,
}

impl Fence {
    /// No condition: a single replica.
    pub fn none() -> Self {
        Fence::default()
    }

    /// Writes commit only while `token` is `process`'s current lease token.
    pub fn lease(process: Arc<str>, token: i64) -> Self {
        Fence {
            lease: Some((process, token)),
        }
    }

    /// The process and token writes are conditional on, if any.
    pub fn condition(&self) -> Option<(&str, i64)> {
        self.lease.as_ref().map(|(p, t)| (&**p, *t))
    }

    pub fn token(&self) -> Option<i64> {
        self.lease.as_ref().map(|(_, t)| *t)
    }
}

/// A write refused because the run's lease has moved on to a newer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub process: String,
    pub token: i64,
    pub current: Option<i64>,
}

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write fenced off: this run's lease on `{}` (token {}) is no longer current ({}); another replica holds it, nothing was committed",
            self.process,
            self.token,
            match self.current {
                Some(t) => format!("current token {t}"),
                None => "no lease row".into(),
            }
        )
    }
}

impl std::error::Error for Fenced {}
