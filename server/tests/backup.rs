//! Backups as an operator takes them: `baylink-server backup` from another process while 50
//! phones push, `verify` of the copy, `restore` refused under a running server and done once it
//! stopped; the restored server holds every change acknowledged before the backup began.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use baylink_domain::{EntityKind, Input};
use mobile_core::Store;
use mobile_core::sync::{login, sync};
use uuid::Uuid;

mod support;
use support::{free_port, person, server, start_demo};

const PHONES: usize = 50;

fn run(data: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = server(data).args(args).output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_backup_taken_while_fifty_phones_push_restores_every_change_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("server");
    let port = free_port();
    let mut server = start_demo(&data, port);
    let url = format!("http://127.0.0.1:{port}");
    let villages: Vec<String> = baylink_server::demo::VILLAGES
        .lines()
        .filter(|l| l.contains(",village,"))
        .map(|l| l.split(',').next().unwrap_or_default().to_owned())
        .take(PHONES)
        .collect();
    assert_eq!(villages.len(), PHONES);
    // Acknowledged records, each with when its sync came back.
    let acknowledged = Arc::new(Mutex::new(Vec::<(Instant, Uuid)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let phones: Vec<_> = villages
        .iter()
        .enumerate()
        .map(|(k, village)| {
            let (village, url) = (village.clone(), url.clone());
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            let path = dir.path().join(format!("phone{k}.db"));
            std::thread::spawn(move || {
                let mut phone = Store::open(path).expect("phone store");
                let officer = baylink_server::demo::officer_username(&village);
                login(
                    &mut phone,
                    &url,
                    &officer,
                    baylink_server::demo::DEMO_PASSWORD,
                    "p",
                )
                .expect("login");
                let mut n = k as u64 * 100_000;
                while !stop.load(Ordering::SeqCst) {
                    let inputs: Vec<Input> = (0..5)
                        .map(|i| person(&village, 2_000_000 + n + i))
                        .collect();
                    n += 5;
                    let ids = phone
                        .capture_many(EntityKind::Person, &inputs)
                        .expect("captured");
                    if sync(&mut phone, &|_: &str, _, _| {}).is_ok()
                        && phone.pending_count().expect("pending") == 0
                    {
                        let at = Instant::now();
                        let mut held = acknowledged.lock().unwrap_or_else(PoisonError::into_inner);
                        held.extend(ids.into_iter().map(|id| (at, id)));
                    }
                }
            })
        })
        .collect();
    // The backup starts once every phone could have pushed a round (not after a fixed time: a
    // busy machine pushes fewer in it).
    let waited = Instant::now();
    while acknowledged
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
        < PHONES * 5
    {
        assert!(
            waited.elapsed() < Duration::from_secs(300),
            "the phones pushed too little to test a backup beside them"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let copy = dir.path().join("copy.db");
    let began = Instant::now();
    let (ok, said) = run(&data, &["backup", copy.to_str().expect("path")]);
    let took = began.elapsed();
    assert!(ok, "{said}");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for phone in phones {
        phone.join().expect("phone thread");
    }
    let held = acknowledged
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let before: Vec<Uuid> = held
        .iter()
        .filter(|(at, _)| *at < began)
        .map(|(_, id)| *id)
        .collect();
    let during = held.len() - before.len();
    assert!(
        before.len() >= PHONES * 5,
        "{} acknowledged before",
        before.len()
    );
    assert!(
        during > 0,
        "the phones pushed while the backup ran and after"
    );

    let (ok, said) = run(&data, &["verify", copy.to_str().expect("path")]);
    assert!(ok && said.contains("intact"), "{said}");
    // Not under a running server.
    let (ok, said) = run(&data, &["restore", copy.to_str().expect("path")]);
    assert!(!ok && said.contains("a server is running"), "{said}");
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let (ok, said) = run(&data, &["restore", copy.to_str().expect("path")]);
    assert!(ok && said.contains("replaced is"), "{said}");

    let restored = baylink_server::store::Db::open(&data.join("baylink.db")).expect("restored");
    let missing: Vec<Uuid> = restored
        .call_blocking(|c| {
            let mut stmt = c.prepare("SELECT 1 FROM entity WHERE id = ?1")?;
            Ok(before
                .iter()
                .filter(|id| !stmt.exists([id.to_string()]).unwrap_or(false))
                .copied()
                .collect())
        })
        .expect("read");
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged before the backup are missing",
        missing.len(),
        before.len()
    );
    println!(
        "backup under {PHONES} phones: {took:?}; {} records acknowledged before it, {during} during and after",
        before.len()
    );
}

/// An administration command keeps trying for the write lock while a writer holds it longer than
/// SQLite's own wait of ten seconds (a busy server's writer may hold it most of the time):
/// `backup`, its copy made, waits twelve seconds more for the lock its audit entry needs, then
/// succeeds once it is let go, where it failed before ("database is locked").
#[test]
fn an_administration_command_keeps_trying_for_a_writer_holding_the_lock_long() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("server");
    let (ok, said) = run(&data, &["migrate"]);
    assert!(ok, "{said}");
    let live = data.join("baylink.db");
    let holder = rusqlite::Connection::open(&live).expect("the live database");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    let copy = dir.path().join("copy.db");
    let mut backup = server(&data)
        .args(["backup", copy.to_str().expect("path")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("backup starts");
    // The copy needs no lock; the audit entry after it does.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !copy.exists() {
        assert!(Instant::now() < deadline, "no copy made");
        assert!(
            backup.try_wait().expect("backup").is_none(),
            "backup ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(12) {
        let status = backup.try_wait().expect("backup");
        assert!(
            status.is_none(),
            "backup gave up with the lock held: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    holder.execute_batch("COMMIT").expect("let go");
    let out = backup.wait_with_output().expect("backup ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("waiting for the server's writer"), "{said}");
    let audited: i64 = rusqlite::Connection::open(&live)
        .expect("the live database")
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'backup'",
            [],
            |r| r.get(0),
        )
        .expect("the audit log");
    assert_eq!(audited, 1);
    let (ok, said) = run(&data, &["verify", copy.to_str().expect("path")]);
    assert!(ok && said.contains("intact"), "{said}");
}
