//! Two `baylink-server` processes over one PostgreSQL database, phones spread over both, one node
//! killed with SIGKILL in the middle of a push and started again: every change a node
//! acknowledged is on the server once, and the phones of each village end with the same records.
//! The database is a fresh one of the cluster `BAYLINK_TEST_POSTGRES` names.

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use baylink_domain::{EntityKind, Input};
use baylink_server::store::Db;
use baylink_server::store::pg::FreshDatabase;
use mobile_core::Store;
use mobile_core::sync::{Http, login, sync_with};

mod support;
use support::{free_port, person, server};

/// `serve --demo` on PostgreSQL (the demo data is seeded once, by whichever node starts first).
fn start_node(data: &std::path::Path, database: &str, port: u16) -> Child {
    support::wait_listening(
        server(data)
            .args(["serve", "--demo", "--database", database])
            .args(["--listen", &format!("127.0.0.1:{port}")]),
    )
}

struct Phone {
    store: Store,
    node: usize,
    changes: u64,
}

#[test]
fn two_nodes_on_one_postgres_database_lose_nothing_when_one_is_killed_mid_push() {
    let Some(cluster) = baylink_server::store::pg::test_postgres() else {
        return;
    };
    let fresh = FreshDatabase::new(&cluster).unwrap();
    let database = fresh.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let nodes: Vec<Arc<Mutex<Child>>> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("node{i}"));
            Arc::new(Mutex::new(start_node(&data, &database, ports[i])))
        })
        .collect();

    // Two officers, each with a phone on each node; each phone captures its own persons.
    let mut phones = Vec::new();
    for (n, (officer, village)) in [("o006001", "441303006001"), ("o006002", "441303006002")]
        .into_iter()
        .enumerate()
    {
        for (node, port) in ports.iter().enumerate() {
            let mut store = Store::open(dir.path().join(format!("{officer}-{node}.db"))).unwrap();
            login(
                &mut store,
                &format!("http://127.0.0.1:{port}"),
                officer,
                baylink_server::demo::DEMO_PASSWORD,
                "phone",
            )
            .unwrap();
            let first = 800_000 + (n as u64 * 2 + node as u64) * 10_000;
            let inputs: Vec<Input> = (0..400).map(|k| person(village, first + k)).collect();
            store.capture_many(EntityKind::Person, &inputs).unwrap();
            let changes = store.pending_count().unwrap();
            phones.push(Phone {
                store,
                node,
                changes,
            });
        }
    }

    // All four sync at once; node 0 dies once its first phone's push is a third through.
    let killed = AtomicBool::new(false);
    let outcomes: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = phones
            .iter_mut()
            .enumerate()
            .map(|(i, phone)| {
                let (killed, victim) = (&killed, nodes[0].clone());
                s.spawn(move || {
                    let total = phone.changes;
                    let progress = |phase: &str, done: u64, _: u64| {
                        if i == 0
                            && phase == "push"
                            && done >= total / 3
                            && !killed.swap(true, Ordering::SeqCst)
                        {
                            let mut child = victim.lock().unwrap_or_else(PoisonError::into_inner);
                            child.kill().unwrap();
                            let _ = child.wait();
                        }
                    };
                    sync_with(&mut phone.store, &mut Http::default(), &progress).is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(killed.load(Ordering::SeqCst), "node 0 was killed mid-push");
    assert!(
        !outcomes[0],
        "the push through the killed node cannot finish"
    );
    assert!(
        outcomes[1] && outcomes[3],
        "the other node served on: {outcomes:?}"
    );

    // Node 0 again, on the same database; every phone syncs until nothing is left, twice over so
    // that each also has what the others pushed.
    *nodes[0].lock().unwrap_or_else(PoisonError::into_inner) =
        start_node(&dir.path().join("node0"), &database, ports[0]);
    for _ in 0..2 {
        for phone in &mut phones {
            sync_with(&mut phone.store, &mut Http::default(), &|_: &str, _, _| {}).unwrap();
            assert_eq!(phone.store.pending_count().unwrap(), 0);
            assert!(phone.store.refused().unwrap().is_empty());
        }
    }

    // Every change acknowledged is on the server once.
    let db = Db::open_postgres(&database).unwrap();
    for phone in &phones {
        let device = phone.store.node_id().to_string();
        let (rows, distinct): (i64, i64) = db
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*), COUNT(DISTINCT h.entity || c.key || h.stamp)
                     FROM history h CROSS JOIN LATERAL json_each(CAST(h.changes AS json)) c
                     WHERE h.device = ?1",
                    [&device],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .unwrap();
        assert_eq!(rows, phone.changes as i64, "every change of {device} once");
        assert_eq!(distinct, rows, "none of {device}'s twice");
    }
    // The two phones of each village hold the same records, whichever node they synced through.
    for pair in phones.chunks(2) {
        let (a, b) = (
            pair[0].store.states().unwrap(),
            pair[1].store.states().unwrap(),
        );
        assert_eq!(pair[0].node, 0);
        assert!(
            a.len() > 800,
            "both phones' persons and the village's: {}",
            a.len()
        );
        assert_eq!(a, b, "the phones of one village converge");
    }
    drop(db);
    for node in &nodes {
        let mut child = node.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}
