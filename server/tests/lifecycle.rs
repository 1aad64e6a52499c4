//! The server's life as an operator's service manager sees it: alive before it is ready (while
//! its database opens or migrates), ready once it serves, and on SIGTERM it stops taking
//! connections, lets the requests in flight finish within the drain deadline, and exits cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{free_port, server};

/// Starts `serve` on a free port with extra flags; answers the child and its address.
fn start(data: &std::path::Path, flags: &[&str]) -> (Child, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let child = server(data)
        .args(["serve", "--listen", &address])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    (child, address)
}

/// Waits for the line a ready server prints.
fn wait_ready(child: &mut Child) {
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines {
        if line
            .expect("UTF-8")
            .starts_with("baylink-server listening on")
        {
            return;
        }
    }
    panic!("the server exited before it was ready");
}

/// A GET's status line and body, or `None` when nothing answers.
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, answer))
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for the process to end, at most `within`.
fn exits_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("process state") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A login whose body is sent in two halves: the connection, after the first.
fn half_sent_login(address: &str) -> (TcpStream, &'static [u8]) {
    const BODY: &[u8] = br#"{"username":"nobody","password":"x","device_id":"6c3e2d0a-55a5-4a43-9a53-7d3f4f1b2c11","device_name":"p"}"#;
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout set");
    write!(
        stream,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        BODY.len()
    )
    .expect("head sent");
    let (first, rest) = BODY.split_at(BODY.len() / 2);
    stream.write_all(first).expect("first half sent");
    (stream, rest)
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_refuses_new_connections_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut child, address) = start(dir.path(), &["--drain-seconds", "20"]);
    wait_ready(&mut child);
    assert_eq!(get(&address, "/livez").map(|a| a.0), Some(200));
    let (mut stream, rest) = half_sent_login(&address);
    std::thread::sleep(Duration::from_millis(300));
    terminate(&child);
    std::thread::sleep(Duration::from_millis(500));
    // Stopping: no new connection is taken, and the process waits for the one in flight.
    assert_eq!(get(&address, "/livez"), None);
    assert!(child.try_wait().expect("process state").is_none());
    stream.write_all(rest).expect("the rest sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer read");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("bad_credentials"), "{answer}");
    let status = exits_within(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_request_still_open_at_the_drain_deadline_is_cut_and_the_server_exits() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut child, address) = start(dir.path(), &["--drain-seconds", "1"]);
    wait_ready(&mut child);
    let (_stream, _rest) = half_sent_login(&address);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    terminate(&child);
    let status = exits_within(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    // Well before the request's own 120-second deadline.
    assert!(stopping.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_starting_server_is_alive_and_not_ready_until_its_database_opens() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let migrated = server(dir.path())
        .arg("migrate")
        .output()
        .expect("migrate runs");
    assert!(migrated.status.success());
    let said = String::from_utf8_lossy(&migrated.stdout).to_string();
    assert!(said.starts_with("created the database at schema"), "{said}");
    let again = server(dir.path())
        .arg("migrate")
        .output()
        .expect("migrate runs");
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    // Another process holds the database's write lock: opening waits (as a long migration
    // would keep the server from serving).
    let holder = baylink_server::store::rusqlite::Connection::open(dir.path().join("baylink.db"))
        .expect("database opens");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock held");
    let (mut child, address) = start(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&address, "/livez").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = get(&address, "/livez").expect("alive while opening");
    assert_eq!(status, 200);
    let (status, body) = get(&address, "/readyz").expect("answers while opening");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"starting\""), "{body}");
    let (status, body) = get(&address, "/healthz").expect("answers while opening");
    assert_eq!(status, 503);
    assert!(body.to_lowercase().contains("retry-after: 5"), "{body}");
    holder.execute_batch("COMMIT").expect("lock released");
    wait_ready(&mut child);
    let (status, body) = get(&address, "/readyz").expect("ready");
    assert_eq!(status, 200, "{body}");
    terminate(&child);
    assert!(exits_within(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn told_to_stop_while_its_database_opens_it_never_says_it_is_ready_and_stops_by_the_deadline() {
    let dir = tempfile::tempdir().expect("temporary directory");
    assert!(
        server(dir.path())
            .arg("migrate")
            .status()
            .expect("migrate runs")
            .success()
    );
    let holder = baylink_server::store::rusqlite::Connection::open(dir.path().join("baylink.db"))
        .expect("database opens");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock held");
    let (mut child, address) = start(dir.path(), &["--drain-seconds", "1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&address, "/livez").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(&child);
    let stopping = Instant::now();
    let status = exits_within(&mut child, Duration::from_secs(8));
    // Well before the database would have opened (the lock is held for 10 s and more).
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert!(!status.success(), "stopped before it served: {status:?}");
    let mut printed = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut printed)
        .expect("output");
    assert!(!printed.contains("listening on"), "{printed}");
    holder.execute_batch("COMMIT").expect("lock released");
}
