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

/// A fresh PostgreSQL store, and its database for what a scenario reads of it directly.
fn postgres_db() -> (Backend, Arc<Db>) {
    let cluster = baylink_server::store::pg::test_postgres().unwrap();
    let fresh = FreshDatabase::new(&cluster).unwrap();
    let db = Arc::new(Db::open_postgres(&fresh.url).unwrap());
    let backend = Backend {
        store: db.clone(),
        keep: Box::new(fresh),
    };
    (backend, db)
}

/// A fresh PostgreSQL store.
fn postgres() -> Backend {
    postgres_db().0
}

crate::suite!(postgres, if ready);

/// The generated village changes of the suite, on PostgreSQL (fewer cases: each is slower).
#[test]
fn a_phone_whose_villages_change_is_told_only_what_it_may_hold() {
    if ready() {
        conformance::a_phone_whose_villages_change_is_told_only_what_it_may_hold(postgres, 48);
    }
}

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

/// A push's statements (each a round trip to PostgreSQL) do not grow with its records: what it
/// reads of them is read a statement per step for them all, and what it writes of them goes in
/// multi-row statements. Twenty times the records cost a few statements more, where a
/// statement per record and step cost thousands.
#[test]
fn a_pushs_round_trips_do_not_grow_with_its_records() {
    use baylink_domain::EntityKind;
    use baylink_sync::wire::ChangeStatus;
    use conformance::{A, changes, house_fields, natural, officer, person, residence_fields};
    if !ready() {
        return;
    }
    let (backend, db) = postgres_db();
    let s = conformance::Suite::new(backend);
    let mut oa = officer("oa", 1);
    let now = baylink_server::store::now_ms();
    // `people` persons, each with a house of her own and her residence in it.
    let mut push = |people: u128, first: u128| {
        let mut batch = Vec::new();
        for n in first..first + people {
            let (person, fields) = person(A, n);
            batch.extend(changes(&mut oa, "person", person, now, &fields));
            let house = house_fields(A, &format!("大亚湾澳头街道{n}号"));
            let house_id = uuid::Uuid::now_v7();
            batch.extend(changes(&mut oa, "house", house_id, now, &house));
            let lives = residence_fields(A, person, house_id);
            let residence = natural(EntityKind::Residence, &lives);
            batch.extend(changes(&mut oa, "residence", residence, now, &lives));
        }
        let caller = s.caller(&oa);
        let before = db.statements_sent().unwrap();
        let results = s.run(s.store.push(caller, batch, 60_000));
        let sent = db.statements_sent().unwrap() - before;
        let refused: Vec<_> = results
            .iter()
            .filter(|r| r.status != ChangeStatus::Accepted)
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
        sent
    };
    // The first push prepares most statements on its connection (a round trip each).
    push(5, 0);
    let few = push(5, 100);
    let many = push(100, 1_000);
    assert!(
        many <= few + 40,
        "{few} statements for 15 records, {many} for 300"
    );
}

/// A record compacted away keeps its history under its position, so a new record never takes
/// that position, also when the positions' sequence was set back (the data restored without
/// it): the sequence is moved past it first.
#[test]
fn a_new_record_is_placed_past_every_compacted_one_though_the_sequence_was_set_back() {
    use baylink_sync::wire::ChangeStatus;
    use conformance::{A, officer, person};
    if !ready() {
        return;
    }
    let (backend, db) = postgres_db();
    let s = conformance::Suite::new(backend);
    let mut oa = officer("oa", 1);
    let now = baylink_server::store::now_ms();
    let mut register = |n: u128| {
        let (id, fields) = person(A, n);
        let results = s.push(&mut oa, id, now + n as u64, &fields);
        assert!(
            results.iter().all(|r| r.status == ChangeStatus::Accepted),
            "{results:?}"
        );
        id.to_string()
    };
    let first = register(1);
    db.call_blocking(|c| {
        c.execute_batch(
            "INSERT INTO compacted (pos, id) VALUES (50, '00000000-0000-4000-8000-00000000aaaa');
             SELECT setval(pg_get_serial_sequence('entity', 'pos'), 1);",
        )?;
        Ok(())
    })
    .unwrap();
    let second = register(2);
    let third = register(3);
    let at = |id: String| {
        db.call_blocking(move |c| {
            Ok(
                c.query_row("SELECT pos FROM entity WHERE id = ?1", [&id], |r| {
                    r.get::<_, i64>(0)
                })?,
            )
        })
        .unwrap()
    };
    let (first, second, third) = (at(first), at(second), at(third));
    assert!(first < 50, "{first}");
    assert_eq!((second, third), (51, 52));
}
