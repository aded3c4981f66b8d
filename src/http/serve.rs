//! The HTTP server: hyper under our own accept loop, so that what a client
//! can hold is bounded before a request reaches the router. At most
//! `http.max_connections` connections are open (the rest wait in the
//! kernel's backlog), a client must send its request's headers within
//! `HEADER_READ_TIMEOUT` from the moment it connects (a silent or trickling
//! client cannot hold a connection forever), and a shutdown lets requests in
//! flight finish. HTTP/1.1 only: with HTTP/2 the first bytes are read to tell
//! the protocols apart before any timer runs, and nothing here needs HTTP/2.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// How long a client may take to send a request's headers. hyper counts an
/// idle keep-alive connection's wait for its next request in this too, so it
/// is longer than the 90 s clients keep idle connections (Go's `net/http`,
/// which Prometheus uses, and reqwest): the client closes first, and the
/// server never closes a connection just as a request is sent on it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a shutdown waits for connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(4);

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, router: Router, max_connections: usize, stop: CancellationToken) {
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            async move { Ok::<_, Infallible>(router.call(request.map(Body::new)).await.unwrap_or_else(|e| match e {})) }
        });
        let connection = builder.serve_connection(TokioIo::new(tcp), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            after_s = DRAIN.as_secs(),
            "connections still open at shutdown; they end with the process"
        );
    }
}
