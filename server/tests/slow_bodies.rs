//! A body sent a byte at a time holds the server's memory to about its own length, not to a
//! block of the connection's buffer for every byte: counted with an allocator that counts, on a
//! real loopback connection (a test of its own, so that nothing else allocates beside it).

// A counting allocator is the one way to see what the server holds.
#![allow(unsafe_code)]
// Helpers here are part of the test: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baylink_server::{AppState, Config};

/// Bytes allocated now.
static NOW: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            NOW.fetch_add(layout.size(), Ordering::SeqCst);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(block, layout) };
        NOW.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let moved = unsafe { System.realloc(block, layout, size) };
        if !moved.is_null() {
            NOW.fetch_add(size, Ordering::SeqCst);
            NOW.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_body_sent_a_byte_at_a_time_holds_about_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = AppState::open(Config::new(dir.path())).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(baylink_server::serve_until(
        listener,
        state,
        std::future::pending(),
    ));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    client
        .write_all(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 60000\r\n\r\n",
        )
        .unwrap();
    // The connection is open and the request begun: what is held from here on is the body's.
    std::thread::sleep(Duration::from_millis(200));
    let before = NOW.load(Ordering::SeqCst);
    // Two thousand bytes, each in a segment of its own that the server reads on its own.
    let sent = 2_000;
    for _ in 0..sent {
        client.write_all(b" ").unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    let held = NOW.load(Ordering::SeqCst).saturating_sub(before);
    // Kept as slices of the connection's buffer, each byte held a block of 8 KiB: 16 MB here.
    assert!(
        held < 1024 * 1024,
        "{held} bytes held for {sent} bytes of body sent"
    );
    drop(client);
}
