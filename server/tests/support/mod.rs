//! What the tests that run the `baylink-server` binary share.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary on a data directory, quiet but for warnings, untouched by the caller's settings.
pub(crate) fn server(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baylink-server"));
    cmd.arg("--data")
        .arg(data)
        .env_remove("BAYLINK_SERVER_DATA")
        .env_remove("BAYLINK_CONFIG")
        .env_remove("BAYLINK_DATABASE_URL")
        .env("RUST_LOG", "warn");
    cmd
}

/// A loopback port free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A person of `village` to capture, the `n`th of synthetic ID numbers and names.
pub(crate) fn person(village: &str, n: u64) -> baylink_domain::Input {
    use baylink_domain::synthetic;
    [
        ("village", village.to_owned()),
        ("id_number", synthetic::resident_id(n)),
        ("name", synthetic::name(n)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Starts `serve --demo` on `port` with `data`, and waits until it says it serves.
pub(crate) fn start_demo(data: &std::path::Path, port: u16) -> Child {
    wait_listening(server(data).args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")]))
}

/// Starts a `serve` command and waits until it says it serves.
pub(crate) fn wait_listening(command: &mut Command) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines {
        if line
            .expect("UTF-8")
            .starts_with("baylink-server listening on")
        {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server exited before listening");
}
