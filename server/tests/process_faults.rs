//! The `baylink-server` process killed with SIGKILL, or told to stop with SIGTERM, in the middle
//! of a phone's large push, then started again on the same data: the phone's next sync finishes
//! the push; every change the server acknowledged is there, and none is there twice.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use baylink_domain::{EntityKind, Input};
use baylink_server::store::Db;
use mobile_core::Store;
use mobile_core::sync::{Http, login, sync_with};

mod support;
use support::{free_port, person, start_demo};

#[test]
fn a_server_killed_mid_push_loses_nothing_it_acknowledged_and_applies_nothing_twice() {
    stopped_mid_push(|child| {
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    });
}

#[test]
fn a_server_told_to_stop_mid_push_answers_it_exits_within_its_drain_and_loses_nothing() {
    stopped_mid_push(|child| {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        // The push on its way is answered, then the process ends well inside the demo's 30 s
        // drain, by itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("process state") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running at the drain's deadline"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
    });
}

/// A phone's push of 2,500 persons (30,000 changes: pushes of 5,000, then 20,000 once the server
/// has said it takes them, then 5,000), the server stopped by `stop` once the first is through
/// (between two batches of one sync, with the next on its way); then the same data served again.
fn stopped_mid_push(stop: impl Fn(&mut Child)) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("server");
    let port = free_port();
    let server = Arc::new(Mutex::new(start_demo(&data, port)));
    let mut phone = Store::open(dir.path().join("phone.db")).expect("phone store");
    login(
        &mut phone,
        &format!("http://127.0.0.1:{port}"),
        "o006001",
        baylink_server::demo::DEMO_PASSWORD,
        "phone",
    )
    .expect("login");
    let inputs: Vec<Input> = (0..2_500)
        .map(|n| person("441303006001", 900_000 + n))
        .collect();
    phone
        .capture_many(EntityKind::Person, &inputs)
        .expect("captured");
    let total = phone.pending_count().expect("pending");

    // Stop the server once the first push is through (from inside the push's progress report,
    // so that it stops between two batches of one sync, with more on the way).
    let killer = server.clone();
    let killed = std::sync::atomic::AtomicBool::new(false);
    let progress = |phase: &str, done: u64, _total: u64| {
        if phase == "push" && done > 0 && !killed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            stop(&mut killer.lock().unwrap_or_else(PoisonError::into_inner));
        }
    };
    let first = sync_with(&mut phone, &mut Http::default(), &progress);
    assert!(first.is_err(), "the sync cannot finish without its server");
    let left = phone.pending_count().expect("pending");
    assert!(
        left > 0 && left < total,
        "killed mid-push: {left} of {total} left"
    );

    // The same data, started again: the next sync finishes.
    *server.lock().unwrap_or_else(PoisonError::into_inner) = start_demo(&data, port);
    let report = sync_with(&mut phone, &mut Http::default(), &|_: &str, _, _| {})
        .expect("the sync finishes");
    assert_eq!(report.pushed, left);
    assert_eq!(phone.pending_count().expect("pending"), 0);
    assert!(phone.refused().expect("refused").is_empty());

    let db = Db::open(&data.join("baylink.db")).expect("the server's database");
    let node = phone.node_id().to_string();
    let (rows, distinct): (i64, i64) = db
        .call_blocking(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COUNT(DISTINCT h.entity || c.key || h.stamp)
                 FROM history h JOIN json_each(h.changes) c WHERE h.device = ?1",
                [&node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .expect("history");
    assert_eq!(rows, total as i64, "every change once");
    assert_eq!(distinct, total as i64, "none twice");
    let persons: i64 = db
        .call_blocking(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM entity WHERE kind = 'person' AND id IN
                 (SELECT entity FROM history WHERE device = ?1)",
                [&node],
                |r| r.get(0),
            )?)
        })
        .expect("persons");
    assert_eq!(persons, inputs.len() as i64);
    let mut child = server.lock().unwrap_or_else(PoisonError::into_inner);
    let _ = child.kill();
    let _ = child.wait();
}
