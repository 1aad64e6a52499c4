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
/// holds one or two). An IPv6 site (a /48: one customer's many /64s) may hold
/// [`SITE_FACTOR`] times it, as the sign-in throttle counts it.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 128;
/// How many times an address's connections an IPv6 /48 may hold in all.
pub const SITE_FACTOR: usize = 4;
/// Refused connections whose requests are read and thrown away at once, so that the client
/// reads the `503` rather than a reset; more are closed as they come.
const DRAINING: usize = 32;
/// How long a refused connection's request is read and thrown away before it is closed.
const DRAIN_REFUSED: Duration = Duration::from_secs(2);
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
    let draining = Arc::new(Semaphore::new(DRAINING));
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
            held.refused(addr.ip());
            refuse(stream, &draining);
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

/// The answer to a connection over its address's limit.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 93\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"this address holds too many connections\"}}";

/// Answers a refused connection `503` and closes it. Closed with its request unread, the client
/// would see a reset instead of the answer (a phone, a broken pipe mid-push, which it takes for
/// a body too large); so the request is read and thrown away for a moment first, on at most
/// [`DRAINING`] connections at once, none of them holding a slot. Past that, or a client not
/// reading, the connection is simply closed.
fn refuse(stream: tokio::net::TcpStream, draining: &Arc<Semaphore>) {
    let Ok(permit) = Arc::clone(draining).try_acquire_owned() else {
        let _ = stream.try_write(TOO_MANY);
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(DRAIN_REFUSED, async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = stream;
            stream.write_all(TOO_MANY).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// Open connections by client network (an IPv4 address, an IPv6 /64) and by IPv6 site (its
/// /48), each counted while its [`Counted`] lives.
struct Held {
    most: usize,
    unlimited: Vec<crate::forwarded::Cidr>,
    open: Mutex<Open>,
    /// When a refusal was last logged (milliseconds since the epoch): at most one line in ten
    /// seconds, however many are refused.
    logged_ms: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    networks: HashMap<IpAddr, usize>,
    sites: HashMap<std::net::Ipv6Addr, usize>,
}

/// One connection counted against its network (and site); dropped when the connection ends.
struct Counted(Option<(Arc<Held>, IpAddr)>);

impl Held {
    fn new(most: usize, unlimited: Vec<crate::forwarded::Cidr>) -> Held {
        Held {
            most,
            unlimited,
            open: Mutex::new(Open::default()),
            logged_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a connection from `peer`, or `None` when its network, or its IPv6 site, already
    /// holds its most.
    fn enter(self: &Arc<Held>, peer: IpAddr) -> Option<Counted> {
        if self.unlimited.iter().any(|net| net.contains(peer)) {
            return Some(Counted(None));
        }
        let network = crate::forwarded::client_network(peer);
        let site = crate::forwarded::client_site(peer);
        let mut open = self.open();
        let Open { networks, sites } = &mut *open;
        let on_network = networks.get(&network).copied().unwrap_or(0);
        let on_site = site.map_or(0, |s| sites.get(&s).copied().unwrap_or(0));
        if on_network >= self.most || on_site >= self.most.saturating_mul(SITE_FACTOR) {
            return None;
        }
        *networks.entry(network).or_insert(0) += 1;
        if let Some(site) = site {
            *sites.entry(site).or_insert(0) += 1;
        }
        Some(Counted(Some((Arc::clone(self), peer))))
    }

    /// Logs a refusal, at most one line in ten seconds.
    fn refused(&self, peer: IpAddr) {
        use std::sync::atomic::Ordering;
        let now = crate::store::now_ms();
        let last = self.logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                network = %crate::forwarded::client_network(peer),
                most = self.most,
                "connections refused: this client network holds as many as it may \
                 (max_connections_per_address; baylink_connections_refused_total counts them all)"
            );
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some((held, peer)) = self.0.take() else {
            return;
        };
        let mut open = held.open();
        let Open { networks, sites } = &mut *open;
        // Forgotten once closed: the tables hold only networks with connections open.
        let network = crate::forwarded::client_network(peer);
        if let Some(count) = networks.get_mut(&network) {
            *count -= 1;
            if *count == 0 {
                networks.remove(&network);
            }
        }
        if let Some(site) = crate::forwarded::client_site(peer)
            && let Some(count) = sites.get_mut(&site)
        {
            *count -= 1;
            if *count == 0 {
                sites.remove(&site);
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
        let in_v6 = (
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
        drop((b, again, other, through, in_v6));
        let open = held.open();
        assert!(
            open.networks.is_empty() && open.sites.is_empty(),
            "{open:?}"
        );
    }

    #[test]
    fn an_ipv6_site_holds_at_most_its_share_over_all_its_networks() {
        let held = Arc::new(Held::new(2, Vec::new()));
        // Four /64s of one /48, two each: the site's 2 × SITE_FACTOR.
        let mut kept = Vec::new();
        for net in 1..=SITE_FACTOR {
            for host in 1..=2 {
                let peer: IpAddr = format!("2001:db8:7:{net:x}::{host:x}").parse().unwrap();
                kept.push(held.enter(peer).unwrap());
            }
        }
        // Another /64 of the same /48 is refused; another /48 is not.
        assert!(held.enter("2001:db8:7:ff::1".parse().unwrap()).is_none());
        let other = held.enter("2001:db8:8:1::1".parse().unwrap()).unwrap();
        kept.pop();
        assert!(held.enter("2001:db8:7:ff::1".parse().unwrap()).is_some());
        drop((kept, other));
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
