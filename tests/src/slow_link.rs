//! A TCP relay on loopback that carries the server's answers at a set number of bytes per
//! second, as a weak mobile signal does: a sync through it takes seconds, however small the
//! data. Requests pass at full speed; connections are kept alive as the phone's client keeps
//! them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// A running relay; it stops accepting when dropped.
pub struct SlowLink {
    /// `http://127.0.0.1:PORT`, to give the phone instead of the server's address.
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl SlowLink {
    /// Starts a relay in front of `upstream` (`http://127.0.0.1:PORT`) that sends the server's
    /// bytes on at `bytes_per_second`.
    pub fn start(upstream: &str, bytes_per_second: usize) -> SlowLink {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                relay(client, server, bytes_per_second);
            }
        });
        SlowLink { url, stop }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Copies both ways on threads of their own: the request side as it comes, the answer side in
/// small slices spaced to the rate.
fn relay(client: TcpStream, server: TcpStream, bytes_per_second: usize) {
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let (mut server, mut client) = (server, client);
        // Slices of a fiftieth of a second's worth, so the rate holds within a request.
        let slice = (bytes_per_second / 50).max(1);
        let mut buf = vec![0u8; slice];
        loop {
            let n = match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client.write_all(&buf[..n]).is_err() {
                break;
            }
            // Each slice takes its time on the air; an idle kept-alive connection earns none.
            thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_second as f64));
        }
        let _ = client.shutdown(Shutdown::Both);
    });
}
