//! The HTTP/1 listener: each connection served by hyper with a deadline for its request headers,
//! and a bounded number open at once ([`MAX_CONNECTIONS`] and [`HEADER_TIMEOUT`] by default, see
//! `Config`). Half-sent requests left idle (a slow-headers attack) are closed at the deadline
//! instead of holding a file descriptor for ever; past the limit, new connections wait in the
//! kernel's backlog. One client address (an IPv6 client's /64) holds at most
//! [`MAX_CONNECTIONS_PER_ADDRESS`] of them; more are answered `503` and closed on arrival, so
//! that no one address can take every slot (trusted proxies excepted: they speak for many
//! clients, and limit them themselves). Bodies are bounded in size by
//! the app's body limit; a body that stalls is bounded by [`BODY_TIMEOUT`]; answers the client
//! stopped reading, by [`crate::stall::WRITE_STALL`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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
/// Most connections one client address may hold at once: a sixth of [`MAX_CONNECTIONS`], well
/// above what a station's officers behind one gateway or a carrier's NAT hold (a phone's sync
/// holds one or two).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 128;
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
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections one client address (an IPv6 client's /64) holds at once.
    pub per_address: usize,
    /// Peers not limited per address: trusted proxies, whose connections carry many clients'.
    pub unlimited: Vec<crate::forwarded::Cidr>,
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
        per_address,
        unlimited,
        drain_timeout,
        write_stall,
    } = limits;
    let slots = Arc::new(Semaphore::new(max_connections));
    let held = Arc::new(Held::new(per_address, unlimited));
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
        let Some(counted) = held.enter(addr.ip()) else {
            crate::metrics::connection_refused();
            too_many(&stream);
            continue;
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
            let _counted = counted;
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

/// The answer to a connection over its address's limit, written if the socket takes it at once
/// (the connection is closed either way: a client not reading costs nothing).
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 93\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"this address holds too many connections\"}}";

fn too_many(stream: &tokio::net::TcpStream) {
    let _ = stream.try_write(TOO_MANY);
}

/// Open connections by client network, each counted while its [`Counted`] lives.
struct Held {
    most: usize,
    unlimited: Vec<crate::forwarded::Cidr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its network; dropped when the connection ends.
struct Counted(Option<(Arc<Held>, IpAddr)>);

impl Held {
    fn new(most: usize, unlimited: Vec<crate::forwarded::Cidr>) -> Held {
        Held {
            most,
            unlimited,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `peer`, or `None` when its network already holds its most.
    fn enter(self: &Arc<Held>, peer: IpAddr) -> Option<Counted> {
        if self.unlimited.iter().any(|net| net.contains(peer)) {
            return Some(Counted(None));
        }
        let network = crate::forwarded::client_network(peer);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(network).or_insert(0);
        if *count >= self.most {
            return None;
        }
        *count += 1;
        Some(Counted(Some((Arc::clone(self), network))))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some((held, network)) = self.0.take() else {
            return;
        };
        let mut open = held
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&network) {
            *count -= 1;
            if *count == 0 {
                // Forgotten once closed: the table holds only addresses with connections open.
                open.remove(&network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back_as_connections_close() {
        let held = Arc::new(Held::new(2, vec!["10.0.0.0/8".parse().unwrap()]));
        let one: IpAddr = "192.0.2.7".parse().unwrap();
        let (a, b) = (held.enter(one).unwrap(), held.enter(one).unwrap());
        assert!(held.enter(one).is_none());
        // Written as IPv6, the same address.
        assert!(held.enter("::ffff:192.0.2.7".parse().unwrap()).is_none());
        // Another address is counted apart.
        let other = held.enter("192.0.2.8".parse().unwrap()).unwrap();
        // An IPv6 host counts by its /64, wherever in it the address lies.
        let v6 = |text: &str| held.enter(text.parse().unwrap());
        let _v6 = (
            v6("2001:db8:0:1::1").unwrap(),
            v6("2001:db8:0:1::ffff").unwrap(),
        );
        assert!(v6("2001:db8:0:1:ffff::2").is_none());
        assert!(v6("2001:db8:0:2::1").is_some());
        // A trusted proxy is never limited.
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let through: Vec<Counted> = (0..10).map(|_| held.enter(proxy).unwrap()).collect();
        drop(a);
        let again = held.enter(one).unwrap();
        assert!(held.enter(one).is_none());
        drop((b, again, other, through));
        let open = held.open.lock().unwrap();
        assert!(
            !open.contains_key(&one) && !open.contains_key(&proxy),
            "{open:?}"
        );
    }

    #[test]
    fn the_refusal_is_a_whole_answer_in_the_apis_shape() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "too_many_connections");
    }
}
