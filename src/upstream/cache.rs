//! Answers to GET requests, kept so a caller that accepts a value of a given
//! age gets it without a request. Each entry remembers when it was fetched.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Entries older than this are dropped on insert; no caller wants them.
const MAX_KEEP: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, (Instant, Bytes)>>,
}

impl Cache {
    /// The cached answer if it is at most `max_age` old.
    pub fn get(&self, key: &str, max_age: Duration) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, body)| body.clone())
    }

    pub fn put(&self, key: String, fetched_at: Instant, body: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < MAX_KEEP);
        entries.insert(key, (fetched_at, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn honours_the_callers_age_bound() {
        let c = Cache::default();
        c.put("k".into(), Instant::now(), Bytes::from_static(b"v"));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(c.get("k", Duration::from_secs(6)).is_some());
        assert!(c.get("k", Duration::from_secs(4)).is_none());
        assert!(c.get("other", Duration::from_secs(60)).is_none());
    }
}
