//! The HTTP client for the server's API: blocking (apps call sync from a background thread),
//! with timeouts, JSON in and out, and the server's error codes kept.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use baylink_sync::auth::{LoginRequest, RefreshRequest, Session};
use baylink_sync::wire::{
    ACTION_PUSH, Cursor, GROUPED_PULL, PAGE_STREAM, PROTOCOL_HEADER, PullRequest, PullResponse,
    PushRequest, PushResponse,
};
use baylink_sync::{Change, NodeId};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use ureq::http::Response;
use ureq::{Body, BodyReader};

use crate::error::{Error, Network, NetworkKind, Result};

/// A request body as JSON.
fn to_body(body: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(body).map_err(|e| other(format!("request body: {e}")))
}

/// A failure of no particular kind (an answer that does not read).
fn other(detail: impl Into<String>) -> Error {
    Error::Network(Network::new(NetworkKind::Other, detail))
}

/// An answer that is not the JSON expected, told by where and how it is wrong: never serde's
/// own message, which quotes the offending value (a name, an ID number).
fn unreadable(path: &str, e: &serde_json::Error) -> Error {
    other(format!(
        "answer from {path}: not the JSON expected ({:?} at line {}, column {})",
        e.classify(),
        e.line(),
        e.column()
    ))
}

/// What ureq says failed, told apart for the app.
fn from_ureq(e: &ureq::Error) -> Error {
    let kind = match e {
        ureq::Error::HostNotFound => NetworkKind::Dns,
        ureq::Error::ConnectionFailed => NetworkKind::Connect,
        ureq::Error::Timeout(which) => timeout_kind(*which),
        ureq::Error::Tls(_) | ureq::Error::Pem(_) | ureq::Error::Rustls(_) => NetworkKind::Tls,
        // Sending, rustls reports a handshake that failed (a certificate not trusted, a peer
        // that does not speak TLS) as invalid data; HTTP's own errors are ureq's.
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => NetworkKind::Tls,
        // The resolver's own failure (getaddrinfo) comes as an I/O error of no kind of its own.
        ureq::Error::Io(io) if io.to_string().contains("lookup address") => NetworkKind::Dns,
        ureq::Error::Io(io) => return from_io(io),
        _ => NetworkKind::Other,
    };
    Error::Network(Network::new(kind, e.to_string()))
}

/// What a time limit that ran out says of the failure: a server not found or not reached (the
/// first steps have limits of their own, [`CONNECT_TIMEOUT`]), or a request or answer too slow
/// on its way (the push loop sends such a push again smaller).
fn timeout_kind(which: ureq::Timeout) -> NetworkKind {
    match which {
        ureq::Timeout::Resolve => NetworkKind::Dns,
        ureq::Timeout::Connect => NetworkKind::Connect,
        _ => NetworkKind::Timeout,
    }
}

/// How long finding the server and opening a connection to it (TLS included) may take, each,
/// within a request's whole time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// An I/O failure on the connection: a time limit, a refusal, or a connection cut.
fn from_io(e: &std::io::Error) -> Error {
    use std::io::ErrorKind;
    // ureq carries its own errors (a timeout while reading an answer) inside I/O errors.
    if let Some(ureq::Error::Timeout(which)) =
        e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>())
    {
        return Error::Network(Network::new(timeout_kind(*which), e.to_string()));
    }
    let kind = match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => NetworkKind::Timeout,
        ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable => NetworkKind::Connect,
        _ => NetworkKind::Interrupted,
    };
    Error::Network(Network::new(kind, e.to_string()))
}

/// The seconds an answer's `Retry-After` asks to wait (only the delay form; a date is ignored).
fn retry_after(response: &Response<Body>) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A connection to one server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// Whether the server said it reads request bodies in zstd (its answers' `Accept-Encoding`).
    zstd: std::sync::atomic::AtomicBool,
    /// The protocol version the server said it speaks (its answers' [`PROTOCOL_HEADER`]).
    protocol: std::sync::atomic::AtomicU32,
}

/// The certificates of a PEM text (a CA the police intranet's server is signed by); an error
/// naming the field when it holds none, or one that does not parse.
pub fn parse_ca(pem: &str) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let bad = |why: String| {
        Error::field(
            "server_ca",
            "pem",
            format!("服务器证书颁发机构（CA）：{why}"),
            format!("server CA: {why}"),
        )
    };
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem.as_bytes()) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(bad(format!("not PEM ({e})"))),
        }
    }
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in the PEM text".into()));
    }
    // Each must be a certificate a trust anchor can be made of, not any base64 in a block.
    let mut roots = rustls::RootCertStore::empty();
    let ders = certs
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()));
    let (_, ignored) = roots.add_parsable_certificates(ders);
    if ignored > 0 {
        return Err(bad(format!(
            "{ignored} of {} CERTIFICATE blocks are not certificates",
            certs.len()
        )));
    }
    Ok(certs)
}

/// What a phone trusts for a server when it was given no CA of its own: the operating
/// system's verifier and trust store (iOS's and macOS's keychain, so a CA a device manager
/// installed counts; Windows'; on Linux the system's bundle, `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` honoured). On Android the platform's verifier needs the app's `Context`
/// handed over through JNI before its first use, and an app's own CA is what
/// `set_server_ca` is for (Android apps do not trust user-installed CAs either), so there the
/// bundled Mozilla roots stand.
fn platform_roots() -> ureq::tls::RootCerts {
    #[cfg(target_os = "android")]
    let roots = ureq::tls::RootCerts::WebPki;
    #[cfg(not(target_os = "android"))]
    let roots = ureq::tls::RootCerts::PlatformVerifier;
    roots
}

impl Client {
    /// A client for the server at `base` (`http://127.0.0.1:8080`), with a request timeout,
    /// trusting what the platform trusts ([`platform_roots`]).
    pub fn new(base: &str, timeout: Duration) -> Client {
        Client::build(base, timeout, None)
    }

    /// A client that trusts `ca` (PEM) for the server, when given, instead of the platform's
    /// roots: a server signed by the police intranet's own CA is reached, and no other CA can
    /// stand in for it.
    pub fn with_ca(base: &str, timeout: Duration, ca: Option<&str>) -> Result<Client> {
        let roots = ca.map(parse_ca).transpose()?;
        Ok(Client::build(base, timeout, roots))
    }

    fn build(
        base: &str,
        timeout: Duration,
        roots: Option<Vec<ureq::tls::Certificate<'static>>>,
    ) -> Client {
        let roots = roots.map_or_else(platform_roots, ureq::tls::RootCerts::from);
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_resolve(Some(CONNECT_TIMEOUT.min(timeout)))
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            zstd: std::sync::atomic::AtomicBool::new(false),
            protocol: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Sends a request; an answer other than 2xx is [`Error::Server`] with its code and message.
    fn send(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Response<Body>> {
        self.send_bytes(path, token, body.to_string().as_bytes(), Compress::No)
    }

    /// Sends a JSON body, as it is or (`compress`) in zstd already.
    fn send_bytes(
        &self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
        compress: Compress,
    ) -> Result<Response<Body>> {
        use std::sync::atomic::Ordering;
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .header("accept-encoding", ACCEPT_ENCODING);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if compress == Compress::Zstd {
            request = request.header("content-encoding", "zstd");
        }
        let response = request.send(body).map_err(|e| from_ureq(&e))?;
        let reads_zstd = response
            .headers()
            .get_all("accept-encoding")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|e| e.trim().eq_ignore_ascii_case("zstd"));
        if reads_zstd {
            self.zstd.store(true, Ordering::Relaxed);
        }
        let speaks = response
            .headers()
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(version) = speaks {
            self.protocol.store(version, Ordering::Relaxed);
        }
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let wait = retry_after(&response);
        let text = read_text(response)?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        // A gateway's answer for a server that is down or restarting (a proxy's 502/504, or the
        // server's own 503 while it starts): the server cannot be reached, as when offline.
        if matches!(status, 502..=504) {
            // The code only, and only when it is a short token: a proxy's page may say anything.
            let code = field("code");
            let code = if !code.is_empty()
                && code.len() <= 40
                && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                format!(": {code}")
            } else {
                String::new()
            };
            return Err(Error::Network(Network {
                kind: NetworkKind::Unavailable,
                detail: format!("服务器暂不可用 / the server is unavailable ({status}{code})"),
                retry_after: wait,
            }));
        }
        Err(Error::Server {
            status,
            code: field("code"),
            message: field("message"),
            retry_after: wait,
        })
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<T> {
        self.post_bytes(path, token, body.to_string().as_bytes(), Compress::No)
    }

    fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
        compress: Compress,
    ) -> Result<T> {
        let response = self.send_bytes(path, token, body, compress)?;
        if response.status().as_u16() == 204 {
            return serde_json::from_str("null").map_err(|e| unreadable(path, &e));
        }
        let text = read_text(response)?;
        serde_json::from_str(&text).map_err(|e| unreadable(path, &e))
    }

    /// Signs in and registers this device; `device_key` is the one the server gave it last.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        device: NodeId,
        device_name: &str,
        device_key: Option<&str>,
    ) -> Result<Session> {
        let body = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            device_id: device.to_string(),
            device_name: device_name.to_owned(),
            device_key: device_key.map(str::to_owned),
        };
        self.post("/api/v1/auth/login", None, &to_body(&body)?)
    }

    /// Rotates the refresh token.
    pub fn refresh(&self, device: NodeId, refresh_token: &str) -> Result<Session> {
        let body = RefreshRequest {
            device_id: device.to_string(),
            refresh_token: refresh_token.to_owned(),
        };
        self.post("/api/v1/auth/refresh", None, &to_body(&body)?)
    }

    /// Ends the session on the server.
    pub fn logout(&self, token: &str) -> Result<()> {
        let _: Option<Value> = self.post("/api/v1/auth/logout", Some(token), &json!({}))?;
        Ok(())
    }

    /// Pushes changes: as whole actions once the server said it reads them, else one by one.
    pub fn push(&self, token: &str, device: NodeId, changes: Vec<Change>) -> Result<PushResponse> {
        let body = self.encode_push(device, changes)?;
        self.send_push(token, &body)
    }

    /// A push's body as [`Client::push`] sends it, made ready to send later (while the push
    /// before it is on its way): in zstd if the server said by then that it reads it.
    pub fn encode_push(&self, device: NodeId, changes: Vec<Change>) -> Result<PushBody> {
        let speaks = self.protocol.load(std::sync::atomic::Ordering::Relaxed);
        let own = changes.iter().all(|c| c.id.device == device);
        let request = if speaks >= ACTION_PUSH && own {
            PushRequest::of_actions(device, changes)
        } else {
            PushRequest {
                protocol: GROUPED_PULL,
                device,
                changes,
                actions: Vec::new(),
            }
        };
        // Straight to bytes (not through a JSON tree), and in zstd once the server said it reads
        // it: the push is the bulk of what a phone sends.
        let json = serde_json::to_vec(&request).map_err(|e| other(e.to_string()))?;
        if !self.zstd.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(PushBody {
                bytes: json,
                zstd: false,
            });
        }
        let bytes = zstd::bulk::compress(&json, ZSTD_LEVEL)
            .map_err(|e| other(format!("request body: {e}")))?;
        Ok(PushBody { bytes, zstd: true })
    }

    /// Sends a push's body made by [`Client::encode_push`].
    pub fn send_push(&self, token: &str, body: &PushBody) -> Result<PushResponse> {
        let compress = match body.zstd {
            true => Compress::Zstd,
            false => Compress::No,
        };
        self.post_bytes("/api/v1/sync/push", Some(token), &body.bytes, compress)
    }

    /// Pulls one page after a cursor; `own_held_after` as [`PullRequest::own_held_after`].
    pub fn pull(
        &self,
        token: &str,
        cursor: Option<String>,
        limit: u32,
        own_held_after: Option<u64>,
    ) -> Result<PullResponse> {
        let mut pages = self.pull_pages(token, cursor, limit, 1, own_held_after)?;
        pages
            .next()
            .unwrap_or_else(|| Err(other("answer from /api/v1/sync/pull: no page")))
    }

    /// Pulls up to `pages` consecutive pages after a cursor in one answer, each read as it
    /// arrives (a server that does not stream them answers one page).
    pub fn pull_pages(
        &self,
        token: &str,
        cursor: Option<String>,
        limit: u32,
        pages: u32,
        own_held_after: Option<u64>,
    ) -> Result<Pages> {
        // The version every server since grouped pages reads (the pull has not changed since).
        let request = PullRequest {
            protocol: GROUPED_PULL,
            cursor: cursor.map(Cursor),
            limit,
            pages: (pages > 1).then_some(pages),
            own_held_after,
        };
        let body = serde_json::to_value(&request).map_err(|e| other(e.to_string()))?;
        let response = self.send("/api/v1/sync/pull", Some(token), &body)?;
        let streamed = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(PAGE_STREAM.as_bytes()));
        Ok(Pages {
            body: BufReader::new(body_reader(response)?),
            streamed,
            read: 0,
            done: false,
        })
    }
}

/// The pages of a pull's answer, in order, each read off the connection as it is asked for.
pub struct Pages {
    body: BufReader<Box<dyn Read + Send>>,
    streamed: bool,
    /// Pages read so far.
    read: usize,
    done: bool,
}

impl Iterator for Pages {
    type Item = Result<PullResponse>;

    fn next(&mut self) -> Option<Result<PullResponse>> {
        if self.done {
            return None;
        }
        let mut text = Vec::new();
        let read = if self.streamed {
            self.body.read_until(b'\n', &mut text)
        } else {
            self.done = true;
            self.body.read_to_end(&mut text)
        };
        let page = match read {
            // An answer without any page is a failure (asking again at once would loop).
            Ok(0) if self.read == 0 => Some(Err(other("answer from /api/v1/sync/pull: no page"))),
            Ok(0) => None,
            Ok(_) => {
                Some(serde_json::from_slice(&text).map_err(|e| unreadable("/api/v1/sync/pull", &e)))
            }
            Err(e) => Some(Err(from_io(&e))),
        };
        // A page cut short or unreadable ends the answer: what follows it is not trusted.
        self.done |= !matches!(page, Some(Ok(_)));
        self.read += 1;
        page
    }
}

/// What answers may come in: zstd costs both sides less CPU than gzip for slightly fewer bytes;
/// a server without it answers in gzip.
const ACCEPT_ENCODING: &str = "zstd, gzip";

/// zstd's level for request bodies: its fast end, a push's JSON shrinks about tenfold.
const ZSTD_LEVEL: i32 = 3;

/// Whether a request body is compressed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compress {
    /// No (small bodies: sign-in, pull requests; a push to a server not known to read zstd).
    No,
    /// In zstd (a push, once the server said it reads it).
    Zstd,
}

/// A push's request body, encoded ahead of sending.
pub struct PushBody {
    bytes: Vec<u8>,
    /// Whether `bytes` are in zstd.
    zstd: bool,
}

/// Most bytes of an answer read whole (pull pages are read a line at a time).
const TEXT_LIMIT: u64 = 256 * 1024 * 1024;

/// An answer's body, decoded: ureq inflates gzip itself, zstd is decoded here.
fn body_reader(response: Response<Body>) -> Result<Box<dyn Read + Send>> {
    let zstd = response
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"zstd"));
    let body: BodyReader<'static> = response.into_body().into_reader();
    if !zstd {
        return Ok(Box::new(body));
    }
    let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| other(e.to_string()))?;
    Ok(Box::new(decoder))
}

/// An answer's body as text.
fn read_text(response: Response<Body>) -> Result<String> {
    let mut text = String::new();
    body_reader(response)?
        .take(TEXT_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|e| from_io(&e))?;
    if text.len() as u64 > TEXT_LIMIT {
        return Err(other(format!("answer longer than {TEXT_LIMIT} bytes")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_not_found_or_not_reached_in_time_is_told_from_a_request_too_slow() {
        let kind = |which| match from_ureq(&ureq::Error::Timeout(which)) {
            Error::Network(n) => n.kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(ureq::Timeout::Resolve), NetworkKind::Dns);
        assert_eq!(kind(ureq::Timeout::Connect), NetworkKind::Connect);
        for slow in [
            ureq::Timeout::Global,
            ureq::Timeout::SendBody,
            ureq::Timeout::RecvResponse,
        ] {
            assert_eq!(kind(slow), NetworkKind::Timeout);
        }
    }
    use std::io::Write;

    /// A server on loopback that answers one request with `answer` (status line, headers and
    /// body as sent) and hangs up; the receiver gets the request's head.
    fn answering_with(answer: Vec<u8>) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (heard, head) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let n = socket.read(&mut request).unwrap_or(0);
            let _ = heard.send(String::from_utf8_lossy(&request[..n]).into_owned());
            let _ = socket.write_all(&answer);
        });
        (url, head)
    }

    fn answering(answer: String) -> String {
        answering_with(answer.into_bytes()).0
    }

    /// The cursors of the pages a pull of two pages from the server at `url` reads.
    fn cursors_read(url: &str) -> Vec<String> {
        Client::new(url, Duration::from_secs(5))
            .pull_pages("t", None, 10, 2, None)
            .unwrap()
            .map(|p| p.unwrap().next_cursor.0)
            .collect()
    }

    #[test]
    fn a_stream_of_pages_is_read_a_line_at_a_time_and_one_without_pages_is_a_failure() {
        let page = r#"{"server_time_ms":1,"values":[],"next_cursor":"c1","more":true}"#;
        let two = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n{page}\n{}\n",
            page.len() * 2 + 2,
            page.replace("c1", "c2")
        );
        assert_eq!(cursors_read(&answering(two)), ["c1", "c2"]);
        let none =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: 0\r\n\r\n";
        let client = Client::new(&answering(none.into()), Duration::from_secs(5));
        let mut pages = client.pull_pages("t", None, 10, 2, None).unwrap();
        assert!(matches!(pages.next(), Some(Err(Error::Network(_)))));
        assert!(pages.next().is_none());
    }

    #[test]
    fn the_client_asks_for_zstd_and_reads_pages_that_come_in_it() {
        let page = r#"{"server_time_ms":1,"values":[],"next_cursor":"c1","more":true}"#;
        let text = format!("{page}\n{}\n", page.replace("c1", "c2"));
        let body = zstd::stream::encode_all(text.as_bytes(), 3).unwrap();
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
             content-encoding: zstd\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        let (url, head) = answering_with(answer);
        assert_eq!(cursors_read(&url), ["c1", "c2"]);
        let head = head.recv().unwrap().to_ascii_lowercase();
        assert!(
            head.contains("accept-encoding: zstd, gzip"),
            "request head: {head}"
        );
    }

    #[test]
    fn an_answer_in_zstd_that_is_not_zstd_is_a_network_failure_not_a_page() {
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                      content-encoding: zstd\r\ncontent-length: 9\r\n\r\nnot zstd!";
        let client = Client::new(&answering(answer.into()), Duration::from_secs(5));
        let mut pages = client.pull_pages("t", None, 10, 1, None).unwrap();
        assert!(matches!(pages.next(), Some(Err(Error::Network(_)))));
        assert!(pages.next().is_none());
    }

    /// A server on loopback that answers each of `answers` on a connection of its own (the
    /// answers close it); the receiver gets each request's head and body.
    fn answering_each(
        answers: Vec<String>,
    ) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (heard, requests) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut socket, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(socket.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let head = head.to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let _ = heard.send((head, body));
                let _ = socket.write_all(answer.as_bytes());
            }
        });
        (url, requests)
    }

    #[test]
    fn pushes_go_in_zstd_once_the_server_says_it_reads_it() {
        let answer = |accepts: &str| {
            let body = r#"{"server_time_ms":1,"results":[]}"#;
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{accepts}\
                 connection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let (url, requests) = answering_each(vec![
            answer("accept-encoding: zstd\r\n"),
            answer(""),
            answer(""),
        ]);
        let client = Client::new(&url, Duration::from_secs(5));
        let node = NodeId(uuid::Uuid::from_u128(7));
        for _ in 0..3 {
            client.push("t", node, Vec::new()).unwrap();
        }
        // The first goes plain (nothing said yet); the next ones in zstd, and they read back as
        // the same request.
        let (head, plain) = requests.recv().unwrap();
        assert!(!head.contains("content-encoding"), "{head}");
        let first: Value = serde_json::from_slice(&plain).unwrap();
        for _ in 0..2 {
            let (head, body) = requests.recv().unwrap();
            assert!(head.contains("content-encoding: zstd"), "{head}");
            let text = zstd::stream::decode_all(&body[..]).unwrap();
            let request: Value = serde_json::from_slice(&text).unwrap();
            assert_eq!(request, first);
        }
    }

    /// What failed, as an app tells its officer: nothing listening, no answer in time, a
    /// handshake with something that does not speak TLS, a gateway for a server that is down,
    /// and a throttle, each with the wait they asked for.
    #[test]
    fn failures_say_what_failed_and_how_long_the_server_asked_to_wait() {
        let kind = |result: Result<Session>| match result {
            Err(Error::Network(n)) => (n.kind, n.retry_after),
            other => panic!("{other:?}"),
        };
        let login = |url: &str, timeout: u64| {
            Client::new(url, Duration::from_millis(timeout)).login(
                "o1",
                "pw",
                NodeId::random(),
                "phone",
                None,
            )
        };
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        assert_eq!(kind(login(&closed, 5_000)).0, NetworkKind::Connect);

        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        assert_eq!(kind(login(&url, 300)).0, NetworkKind::Timeout);

        let plain = answering("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into());
        let tls = plain.replace("http://", "https://");
        assert_eq!(kind(login(&tls, 5_000)).0, NetworkKind::Tls);

        let down = answering(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n"
                .into(),
        );
        assert_eq!(
            kind(login(&down, 5_000)),
            (NetworkKind::Unavailable, Some(7))
        );

        let body = r#"{"error":{"code":"throttled","message":"wait"}}"#;
        let throttled = answering(format!(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 30\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
        match login(&throttled, 5_000) {
            Err(Error::Server {
                status: 429,
                code,
                retry_after: Some(30),
                ..
            }) => assert_eq!(code, "throttled"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_ca_is_taken_only_as_pem_certificates() {
        for bad in [
            "",
            "not a certificate",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            match parse_ca(bad) {
                Err(Error::Invalid(e)) => assert_eq!(e.field_errors()[0].field, "server_ca"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
