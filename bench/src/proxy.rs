//! A byte-counting TCP relay on loopback: what crosses the wire between a client and a server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Relays connections to a server and counts the bytes each way.
pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`, to use in place of the server's address.
    pub url: String,
    down: Arc<AtomicU64>,
    up: Arc<AtomicU64>,
}

fn relay(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl CountingProxy {
    /// Starts relaying to the server at `target` (`http://127.0.0.1:PORT`).
    pub fn start(target: &str) -> CountingProxy {
        let target = target
            .strip_prefix("http://")
            .expect("an http:// address")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (down, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (d, u) = (down.clone(), up.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (d, u) = (d.clone(), u.clone());
                std::thread::spawn(move || relay(server, client, &d));
                std::thread::spawn(move || relay(client2, server2, &u));
            }
        });
        CountingProxy { url, down, up }
    }

    /// Bytes relayed so far: (server to client, client to server).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.down.load(Ordering::Relaxed),
            self.up.load(Ordering::Relaxed),
        )
    }
}
