//! The HTTP/1 listener: each connection served by hyper with a deadline for its request headers,
//! and a bounded number open at once ([`MAX_CONNECTIONS`] and [`HEADER_TIMEOUT`] by default, see
//! `Config`). Half-sent requests left idle (a slow-headers attack) are closed at the deadline
//! instead of holding a file descriptor for ever; past the limit, new connections wait in the
//! kernel's backlog. Bodies are bounded in size by
//! the app's body limit; a body that stalls is bounded by [`BODY_TIMEOUT`]; answers the client
//! stopped reading, by [`crate::stall::WRITE_STALL`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Most bytes of a request's headers (longer is `431`), and what a connection's read buffer
/// holds before it is read from (hyper's default is about 400 KiB; a read may fill the block
/// already reserved, up to about twice this): connections held open with headers sent slowly
/// hold little each.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Most connections served at once (each is a file descriptor; the usual soft limit is 1,024).
pub const MAX_CONNECTIONS: usize = 768;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a request (its body read and its answer prepared) may take before `408`, unless
/// configured (`body_timeout_s`).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long open requests may take to finish once the server is told to stop.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The app a connection's requests go to, replaceable while serving: a starting server's
/// answers (`routes::health::starting`) while the database opens, then the whole app.
#[derive(Clone)]
pub struct Front(Arc<std::sync::RwLock<Router>>);

impl Front {
    /// A front serving `app`.
    pub fn new(app: Router) -> Front {
        Front(Arc::new(std::sync::RwLock::new(app)))
    }

    /// Serves `app` from the next request on.
    pub fn replace(&self, app: Router) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = app;
    }

    fn current(&self) -> Router {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The listener's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long open requests may take to finish after `shutdown`.
    pub drain_timeout: Duration,
    /// How long what the server writes to a connection may not move before it is closed
    /// ([`crate::stall::WRITE_STALL`]).
    pub write_stall: Duration,
}

/// Serves `front` on `listener` until `shutdown` completes, then lets open requests finish
/// within the drain deadline (connections idle between requests close at once).
pub async fn serve(
    listener: tokio::net::TcpListener,
    front: Front,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Limits {
        header_timeout,
        max_connections,
        drain_timeout,
        write_stall,
    } = limits;
    let slots = Arc::new(Semaphore::new(max_connections));
    let (closing, closed) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait a
                    // moment rather than spin.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let front = front.clone();
        let service = tower::service_fn(move |request: hyper::Request<Incoming>| {
            // Copied as it comes, so that slices of the connection's buffer are not kept.
            let mut request = request.map(|body| Body::new(crate::coalesce::Coalesced::new(body)));
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(addr));
            front.current().oneshot(request)
        });
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(READ_BUFFER_BYTES)
                .max_header_size(READ_BUFFER_BYTES);
            let connection = builder
                .serve_connection(
                    TokioIo::new(crate::stall::Draining::new(stream, write_stall)),
                    TowerToHyperService::new(service),
                )
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    // New connections are refused from now on, not left waiting in the backlog.
    drop(listener);
    let _ = closing.send(true);
    tracing::info!("stopping: open requests finish");
    // Every connection holds a slot until it ends: all slots back means all connections done.
    let all = slots.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    if tokio::time::timeout(drain_timeout, all).await.is_err() {
        // What is left is cut: a push not answered was not committed, or is answered again
        // when the phone sends it once more.
        tracing::warn!(
            left = max_connections - slots.available_permits(),
            "stopping: connections still open at the drain deadline are closed"
        );
    }
    Ok(())
}
