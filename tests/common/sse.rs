//! A Server-Sent Events client for tests: reads `GET /api/events` over real
//! HTTP and splits it into frames as a browser's EventSource would.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Service;

/// One event as the stream framed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

impl Frame {
    /// The sequence number of an id `<epoch>-<seq>`.
    pub fn seq(&self) -> Option<u64> {
        self.id.as_ref()?.rsplit_once('-')?.1.parse().ok()
    }
}

pub struct Sse {
    response: reqwest::Response,
    buf: String,
    /// The id of the last frame that had one (what EventSource sends back).
    pub last_id: Option<String>,
    /// Every frame read so far.
    pub seen: Vec<Frame>,
}

/// Opens `/api/events?{query}`; `token` as a bearer header, `last` as `Last-Event-ID`.
pub async fn connect(svc: &Service, query: &str, token: Option<&str>, last: Option<&str>) -> Sse {
    let (status, sse) = try_connect(svc, query, token, last).await;
    assert_eq!(status, 200, "GET /api/events?{query}");
    sse.unwrap()
}

/// As [`connect`], but answers the status, and the stream only when it is 200.
pub async fn try_connect(svc: &Service, query: &str, token: Option<&str>, last: Option<&str>) -> (u16, Option<Sse>) {
    let mut request = svc.http.get(svc.url(&format!("/api/events?{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "the stream's media type"
    );
    let sse = Sse {
        response,
        buf: String::new(),
        last_id: None,
        seen: Vec::new(),
    };
    (status, Some(sse))
}

impl Sse {
    /// The next frame with an event, or `None` at `timeout` or the end of the stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse_one() {
                return Some(frame);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Reads until `pred` holds for a frame (returned); fails after `timeout`.
    pub async fn until(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(f) if pred(&f) => return f,
                Some(_) => {}
                None => panic!(
                    "no frame for {what} within {timeout:?}; seen: {:#?}",
                    self.seen.iter().rev().take(20).collect::<Vec<_>>()
                ),
            }
        }
    }

    fn parse_one(&mut self) -> Option<Frame> {
        loop {
            let end = self.buf.find("\n\n")?;
            let block: String = self.buf[..end].to_string();
            self.buf.drain(..end + 2);
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_string());
                }
            }
            if let Some(id) = &id {
                self.last_id = Some(id.clone());
            }
            // Comments (keep-alives) and `retry:` carry no event.
            if let (Some(event), Some(data)) = (event, data) {
                let frame = Frame {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                };
                self.seen.push(frame.clone());
                return Some(frame);
            }
        }
    }
}
