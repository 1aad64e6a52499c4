//! The `baylink` field client killed with SIGKILL in the middle of a sync (a phone whose battery
//! died): its store opens cleanly, every change is still either waiting in the outbox or on the
//! server, and the next `baylink sync` finishes with nothing applied twice.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baylink_domain::{EntityKind, Input, synthetic};
use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::audit::Actor;
use baylink_server::{AppState, Config};
use mobile_core::Store;

const PASSWORD: &str = "correct-horse-battery";

fn baylink(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baylink"));
    cmd.arg("--data").arg(data).env_remove("BAYLINK_DATA");
    cmd
}

/// Changes from `node` in the server's history: all of them, and distinct ones.
fn history(db: &baylink_server::store::Db, node: &str) -> (i64, i64) {
    db.call_blocking(|c| {
        Ok(c.query_row(
            "SELECT COUNT(*), COUNT(DISTINCT h.entity || c.key || h.stamp)
                 FROM history h JOIN json_each(h.changes) c WHERE h.device = ?1",
            [node],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    })
    .expect("history")
}

#[test]
fn a_client_killed_mid_sync_keeps_its_outbox_and_the_next_sync_finishes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (state, db) = AppState::open(Config::new(dir.path().join("server"))).expect("server state");
    let hash = baylink_server::auth::password::hash(PASSWORD).expect("hash");
    db.call_blocking(|c| {
        baylink_server::demo::seed_places(c)?;
        let new = NewAccount {
            username: "o1".to_owned(),
            display_name: "o1".to_owned(),
            role: Role::Officer,
            station: Some("441303006".to_owned()),
            password_hash: hash.clone(),
            villages: vec!["441303006001".to_owned()],
        };
        accounts::create_account(c, Actor::Operator, &new, 0).map(drop)
    })
    .expect("officer");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    runtime.spawn(baylink_server::serve_until(
        listener,
        state,
        std::future::pending(),
    ));

    let phone = dir.path().join("phone");
    let mut login = baylink(&phone)
        .args(["login", "--server", &url, "--user", "o1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("baylink login");
    login
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("password");
    assert!(login.wait().expect("login ends").success());
    // A day's captures, made while offline.
    let (node, total) = {
        let mut store = Store::open(phone.join("field.db")).expect("the phone's store");
        let inputs: Vec<Input> = (0..3_000u64)
            .map(|n| {
                [
                    ("village", "441303006001".to_owned()),
                    ("id_number", synthetic::resident_id(700_000 + n)),
                    ("name", synthetic::name(n)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
            })
            .collect();
        store
            .capture_many(EntityKind::Person, &inputs)
            .expect("captured");
        (
            store.node_id().to_string(),
            store.pending_count().expect("pending"),
        )
    };

    let mut sync = baylink(&phone)
        .arg("sync")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baylink sync");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (arrived, _) = history(&db, &node);
        if arrived > 0 {
            break;
        }
        assert!(
            sync.try_wait().expect("status").is_none(),
            "the sync ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the push never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    sync.kill().expect("SIGKILL");
    let _ = sync.wait();

    let store = Store::open(phone.join("field.db")).expect("the store opens after the kill");
    let waiting = store.pending_count().expect("pending");
    let (arrived, distinct) = history(&db, &node);
    assert!(waiting > 0, "killed before the sync finished");
    assert_eq!(arrived, distinct);
    // Nothing fell between the two: a change is still waiting, or it reached the server (a
    // change whose answer the kill cut off is both, and is replayed).
    assert!(
        waiting + arrived as u64 >= total,
        "{waiting} waiting + {arrived} arrived < {total}"
    );
    drop(store);

    let out = baylink(&phone).arg("sync").output().expect("baylink sync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(phone.join("field.db")).expect("store");
    assert_eq!(store.pending_count().expect("pending"), 0);
    assert_eq!(history(&db, &node), (total as i64, total as i64));
}
