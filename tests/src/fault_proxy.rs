//! A TCP proxy on loopback between a phone and the server that misbehaves on purpose, one
//! connection at a time from a plan: it cuts requests off, cuts answers short, swallows answers the
//! server sent, or stalls. Connections past the plan are relayed faithfully.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// What the proxy does with one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Relay both ways.
    Pass,
    /// Read part of the request, forward nothing, hang up.
    CutRequest,
    /// Forward the request, relay the first part of the answer, hang up.
    TruncateAnswer,
    /// Forward the request, let the server answer, relay nothing, hang up (the server acted).
    DropAnswer,
    /// Read the request, forward nothing, say nothing for this long, hang up.
    Stall(Duration),
    /// Read the request, forward nothing, answer `502 Bad Gateway` in HTML, as a proxy in front
    /// of a server that is down does.
    BadGateway,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Pass => "relayed",
            Fault::CutRequest => "request cut",
            Fault::TruncateAnswer => "answer truncated",
            Fault::DropAnswer => "answer dropped",
            Fault::Stall(_) => "stalled",
            Fault::BadGateway => "bad gateway",
        }
    }
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to give the phone instead of the server's address.
    pub url: String,
    plan: Arc<Mutex<VecDeque<Fault>>>,
    seen: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let plan: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
        let seen: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (plan2, seen2, stop2) = (plan.clone(), seen.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let fault = lock(&plan2).pop_front().unwrap_or(Fault::Pass);
                *lock(&seen2).entry(fault.name()).or_default() += 1;
                let upstream = upstream.clone();
                thread::spawn(move || handle(client, &upstream, fault));
            }
        });
        FaultProxy {
            url,
            plan,
            seen,
            stop,
        }
    }

    /// Queues faults for the next connections, in order.
    pub fn plan(&self, faults: &[Fault]) {
        lock(&self.plan).extend(faults.iter().copied());
    }

    /// Connections handled so far, by what was done to them.
    pub fn seen(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.seen).clone()
    }

    /// Faults still queued.
    pub fn pending(&self) -> usize {
        lock(&self.plan).len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Reads one HTTP request (head and `Content-Length` body) from the client.
fn read_request(client: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return data;
            }
        }
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return data,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// An answer with `Connection: close` in place of any connection header it had.
fn closing(answer: &[u8]) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("connection: close");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&answer[end..]);
    out
}

/// Reads one HTTP answer from the server (head, then body by length or until close).
fn read_answer(server: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            if let Some(length) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                if data.len() >= end + 4 + length {
                    return data;
                }
            } else if head.contains("transfer-encoding: chunked") && data.ends_with(b"0\r\n\r\n") {
                return data;
            }
        }
        match server.read(&mut buf) {
            Ok(0) | Err(_) => return data,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

fn handle(mut client: TcpStream, upstream: &str, fault: Fault) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    match fault {
        // One request and its answer per connection, so that each request meets the fault
        // planned for it: the answer tells the client to close (a client that keeps its
        // connection alive would otherwise send every later request down this one).
        Fault::Pass => {
            let request = read_request(&mut client);
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            let _ = server.set_read_timeout(Some(Duration::from_secs(30)));
            if server.write_all(&request).is_err() {
                return;
            }
            let answer = closing(&read_answer(&mut server));
            let _ = client.write_all(&answer);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::CutRequest => {
            let mut buf = [0u8; 64];
            let _ = client.read(&mut buf);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Stall(duration) => {
            let _ = read_request(&mut client);
            thread::sleep(duration);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::BadGateway => {
            let _ = read_request(&mut client);
            let page = "<html><body><h1>502 Bad Gateway</h1></body></html>";
            let _ = write!(
                client,
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::TruncateAnswer | Fault::DropAnswer => {
            let request = read_request(&mut client);
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            let _ = server.set_read_timeout(Some(Duration::from_secs(30)));
            if server.write_all(&request).is_err() {
                return;
            }
            let answer = read_answer(&mut server);
            if fault == Fault::TruncateAnswer {
                let _ = client.write_all(&answer[..answer.len() * 2 / 3]);
            }
            let _ = client.shutdown(Shutdown::Both);
        }
    }
}
