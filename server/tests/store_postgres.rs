//! The PostgreSQL backend against the storage contract: the conformance suite, each scenario on
//! a fresh database of the cluster `BAYLINK_TEST_POSTGRES` names (`./scripts/test` starts a
//! throwaway one when it is not set).

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod conformance;

use std::sync::Arc;

use baylink_server::store::Db;
use baylink_server::store::pg::FreshDatabase;
use conformance::Backend;

/// Whether a cluster is named (a notice when not; a failure in CI).
fn ready() -> bool {
    baylink_server::store::pg::test_postgres().is_some()
}

/// A fresh PostgreSQL store.
fn postgres() -> Backend {
    let cluster = baylink_server::store::pg::test_postgres().unwrap();
    let fresh = FreshDatabase::new(&cluster).unwrap();
    let db = Db::open_postgres(&fresh.url).unwrap();
    Backend {
        store: Arc::new(db),
        keep: Box::new(fresh),
    }
}

crate::suite!(postgres, if ready);

/// What only PostgreSQL can stage: a node that holds the writer lock and stops. Another node's
/// write waits for it at most a while and is then refused as busy (the request answers 503),
/// while reads go on; a write that panics lets the lock go at once.
#[test]
fn a_stuck_writer_makes_other_writes_busy_not_stuck_and_reads_go_on() {
    let Some(cluster) = baylink_server::store::pg::test_postgres() else {
        return;
    };
    let fresh = FreshDatabase::new(&cluster).unwrap();
    let stuck = Db::open_postgres(&fresh.url).unwrap();
    let other = Db::open_postgres(&fresh.url).unwrap();
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        stuck
            .call_blocking(|c| {
                let tx = c.transaction()?;
                held.send(()).unwrap();
                let _ = released.recv_timeout(std::time::Duration::from_secs(60));
                tx.commit()?;
                Ok(())
            })
            .unwrap();
        stuck
    });
    holding.recv().unwrap();
    let started = std::time::Instant::now();
    let seq = other.read_blocking(baylink_server::store::values::current_seq);
    assert!(seq.is_ok() && started.elapsed().as_secs() < 5, "{seq:?}");
    let refused = other.call_blocking(|c| Ok(c.transaction()?.commit()?));
    let waited = started.elapsed().as_secs();
    assert!(
        matches!(refused, Err(baylink_server::store::StoreError::Busy(_))),
        "{refused:?}"
    );
    assert!((15..60).contains(&waited), "waited {waited} s");
    release.send(()).unwrap();
    let stuck = holder.join().unwrap();

    // A unit of work that panics inside its transaction: the lock goes with it.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stuck.call_blocking(|c| -> Result<(), baylink_server::store::StoreError> {
            let _tx = c.transaction()?;
            panic!("a bug in a use case");
        })
    }));
    assert!(panicked.is_err());
    let started = std::time::Instant::now();
    other
        .call_blocking(|c| Ok(c.transaction()?.commit()?))
        .unwrap();
    assert!(started.elapsed().as_secs() < 5, "the lock was let go");
    drop((stuck, other));
}
