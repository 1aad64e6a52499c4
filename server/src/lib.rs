//! baylink-server: the sync server. Officers' devices push their changes and pull their villages'
//! current state; accounts, devices and tokens are checked on every call. `app(state)` is the
//! whole HTTP surface, so tests drive it without a socket and the binary serves it.

pub mod auth;
pub mod coalesce;
pub mod config;
pub mod console;
pub mod demo;
pub mod error;
pub mod extract;
pub mod forwarded;
pub mod listen;
pub mod metrics;
pub mod pushing;
pub mod routes;
pub mod stall;
pub mod state;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use config::Config;
pub use error::AppError;
pub use state::AppState;

/// Most bytes of a request body on every route but a push (after decompression).
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// Every route of the server.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let small = limit.min(SMALL_BODY_BYTES);
    // Only a push's body may be megabytes: every other body (a sign-in, a pull's request, a
    // console form), sent before any account is known for most of them, is held to a few
    // kilobytes, so bodies sent slowly on many connections cannot hold the server's memory.
    let small_bodies = Router::new()
        .merge(routes::health::router())
        .merge(routes::auth::router())
        .merge(routes::sync::pull_router())
        .merge(console::router())
        .layer(DefaultBodyLimit::max(small))
        .layer(RequestBodyLimitLayer::new(small))
        // Sent as they are (no phone compresses them), so that the limit counts the bytes as
        // sent: a small body in zstd padded with frames that expand to nothing would otherwise
        // go on arriving for the whole body deadline.
        .layer(axum::middleware::from_fn(plain_bodies));
    let pushes = routes::sync::push_router()
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(decompressing());
    Router::new()
        .merge(small_bodies)
        .merge(pushes)
        .fallback(|| async { AppError::NotFound("no such endpoint".into()) })
        // A body whose bytes trickle in ends its request as 408 (the bytes as sent, before
        // they are decompressed).
        .layer(axum::middleware::from_fn_with_state(
            state.config.body_stall,
            stall::arriving,
        ))
        // A request whose body stalls, or whose answer takes too long to prepare, ends as 408.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state.config.body_timeout,
        ))
        .layer(axum::middleware::map_response(json_errors))
        // Outside the two above, so that their answers say it too.
        .layer(axum::middleware::map_response(accepts_zstd))
        // Pull pages and console pages are compressed for clients that accept it: the bytes a
        // phone on a weak signal waits for. zstd where asked for (the phones ask; it costs
        // both sides less CPU than gzip), gzip otherwise.
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        // Every request has an id, in the access log and in its answer (`x-request-id`): a
        // proxy's, when it sent a plausible one, else a new one.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(plausible_request_id))
        .with_state(state)
}

/// A request body in zstd (a phone's push, once the server said it reads them) decompressed
/// before the limits inside it, so that they count what it expands to: a small body that would
/// expand without end is refused as too large. Other encodings: 415.
fn decompressing() -> RequestDecompressionLayer {
    RequestDecompressionLayer::new()
        .no_gzip()
        .no_deflate()
        .no_br()
}

/// Refuses a small route's body sent in any encoding (`415`).
async fn plain_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let encoded = request
        .headers()
        .get(axum::http::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return AppError::Encoding(
            "Content-Encoding: only a push's body may be compressed (zstd)".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// The header naming a request.
const REQUEST_ID: &str = "x-request-id";

/// Drops a request id that is not a short token (a client's own, written to every log line of
/// the request, must not be a kilobyte of anything).
async fn plausible_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let plausible = request.headers().get(REQUEST_ID).is_none_or(|v| {
        v.len() <= 64
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !plausible {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// The access log and the request metrics: one line per request (its id, method, route
/// template, status and time; never the path's ids or query, which may name people), every
/// line the handler logs inside the request's span.
async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span = tracing::info_span!("request", %id, %method, %route);
    let response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(&route, method.as_str(), status, took);
    span.in_scope(|| {
        tracing::info!(target: "baylink_server::access", status, ms = took.as_millis() as u64, "request");
    });
    response
}

/// Says in every answer that request bodies may come in zstd (RFC 7694), so a client compresses
/// what it sends next, and which protocol version the server speaks, so a client sends whole
/// actions to one that reads them.
async fn accepts_zstd(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::ACCEPT_ENCODING,
        axum::http::HeaderValue::from_static("zstd"),
    );
    headers.insert(
        baylink_sync::wire::PROTOCOL_HEADER,
        axum::http::HeaderValue::from(baylink_sync::wire::PROTOCOL_VERSION),
    );
    response
}

/// The body limit answers a declared oversize body before any handler, and the timeout a
/// stalled request, without the API's JSON error shape: give them it.
async fn json_errors(response: axum::response::Response) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match response.status() {
        _ if json => response,
        StatusCode::PAYLOAD_TOO_LARGE => AppError::too_large().into_response(),
        StatusCode::REQUEST_TIMEOUT => AppError::TimedOut.into_response(),
        _ => response,
    }
}

/// Completes when the process is told to stop: SIGTERM (systemd, container runtimes) or
/// SIGINT (ctrl-c).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves the app on a bound listener until `shutdown` completes.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = limits(&state.config);
    let reload = reload_keys(&state);
    let served = listen::serve(listener, listen::Front::new(app(state)), limits, shutdown).await;
    reload.abort();
    served
}

/// Opens the state on the blocking pool (migrating the database, which may take minutes) while
/// the listener already answers: `/livez` yes, `/readyz` and everything else `503 starting`;
/// then serves the whole app, calls `ready`, and serves until `shutdown`. A failure to open
/// ends the serving with it. Told to stop while still opening, it does not announce itself
/// ready, and waits for the opening no longer than the drain deadline: a migration cut short
/// is rolled back and runs again at the next start.
pub async fn serve_opening(
    listener: tokio::net::TcpListener,
    config: &Config,
    open: impl FnOnce() -> Result<AppState, AppError> + Send + 'static,
    ready: impl FnOnce() + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let front = listen::Front::new(routes::health::starting());
    let stopping = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(std::sync::Mutex::new(None::<AppError>));
    let failure = Arc::new(tokio::sync::Notify::new());
    let opening = {
        let (front, stopping) = (front.clone(), stopping.clone());
        let (failed, failure) = (failed.clone(), failure.clone());
        tokio::spawn(async move {
            let opened = tokio::task::spawn_blocking(open)
                .await
                .unwrap_or_else(|e| Err(AppError::Internal(format!("opening: {e}"))));
            match opened {
                Ok(state) if !stopping.load(Ordering::SeqCst) => {
                    let reload = reload_keys(&state);
                    front.replace(app(state));
                    ready();
                    Some(reload)
                }
                Ok(_) => None,
                Err(e) => {
                    *failed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    failure.notify_one();
                    None
                }
            }
        })
    };
    let ended = {
        let stopping = stopping.clone();
        async move {
            tokio::select! {
                () = shutdown => stopping.store(true, Ordering::SeqCst),
                () = failure.notified() => {}
            }
        }
    };
    listen::serve(listener, front, limits(config), ended)
        .await
        .map_err(|e| AppError::Internal(format!("serve: {e}")))?;
    match tokio::time::timeout(config.drain_timeout, opening).await {
        Ok(Ok(Some(reload))) => reload.abort(),
        Ok(_) => {}
        Err(_) => {
            return Err(AppError::Internal(
                "stopped while the database was still opening: a migration under way is rolled \
                 back, and runs again at the next start"
                    .into(),
            ));
        }
    }
    match failed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn limits(config: &Config) -> listen::Limits {
    listen::Limits {
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
        per_address: config.max_connections_per_address,
        unlimited: config.trusted_proxies.clone(),
        drain_timeout: config.drain_timeout,
        write_stall: stall::WRITE_STALL,
    }
}

/// Reads the token keys again now and then: keys added on another node, or at the command line.
fn reload_keys(state: &AppState) -> tokio::task::JoinHandle<()> {
    let (keys, store) = (state.keys.clone(), state.store.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(auth::keyring::RELOAD_EVERY).await;
            if let Err(e) = keys.reload(store.as_ref()).await {
                tracing::warn!("token keys not read again: {e}");
            }
        }
    })
}
