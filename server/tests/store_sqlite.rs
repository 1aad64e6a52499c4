//! The SQLite backend against the storage contract: the conformance suite, the suite's own
//! test (a deliberately broken backend fails it), and what only this backend can show — a
//! write killed between a review and its audit entry, console reads beside a long write.

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod conformance;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use baylink_server::store::contract::{Reveal, Verdict};
use baylink_server::store::pull::parse_cursor;
use baylink_server::store::{Db, StoreError, now_ms};
use baylink_sync::wire::Cursor;
use conformance::{A, Backend, Suite, officer, person};
use uuid::Uuid;

/// A fresh SQLite store in a temporary directory.
fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("baylink.db")).unwrap();
    Backend {
        store: Arc::new(db),
        keep: Box::new(dir),
    }
}

crate::suite!(sqlite);

/// The suite's concurrency test can fail: against a backend that numbers values before it
/// takes the writer (so a write numbered lower may commit after one numbered higher), a pull
/// skips values. Several rounds, since an interleaving that shows it is likely, not certain.
#[test]
fn the_concurrency_test_fails_against_a_backend_numbering_values_before_the_lock() {
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("baylink.db")).unwrap();
        let broken = Suite::new(Backend {
            store: Arc::new(db.numbering_before_the_lock().unwrap()),
            keep: Box::new(dir),
        });
        let outcome = conformance::concurrent_pushes_and_pulls(&broken);
        // Failed for the contract's reason: a value sent twice or never, not a crash.
        if let Err(e) = &outcome {
            assert!(e.contains("never sent") || e.contains("sent twice"), "{e}");
            return;
        }
        outcomes.push(outcome);
    }
    panic!("the broken backend passed every round: {outcomes:?}");
}

/// A backend on this file whose audit entries fail to be written, as if the process died
/// between the decision and its entry.
fn audit_fails(db: &Db) {
    db.call_blocking(|c| {
        c.execute_batch(
            "CREATE TRIGGER audit_fails BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'killed before the audit entry'); END;",
        )?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_review_whose_audit_entry_fails_leaves_neither() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("baylink.db")).unwrap();
    let s = Suite::new(Backend {
        store: Arc::new(db.clone()),
        keep: Box::new(dir),
    });
    let mut oa = officer("oa", 1);
    let (id, fields) = person(A, 1);
    s.push(&mut oa, id, now_ms(), &fields);
    let before = s.snapshot();
    audit_fails(&db);
    let reviewer = s.console_caller("r006");
    let approve = s.try_run(s.store.review(reviewer.clone(), id, Verdict::Approve));
    assert!(
        matches!(approve, Err(StoreError::Backend(_))),
        "{approve:?}"
    );
    let reveal = s.try_run(s.store.record_page(reviewer.clone(), id, Reveal::Full));
    assert!(reveal.is_err(), "a reveal not audited is not shown");
    let after = s.snapshot();
    assert_eq!(after.values, before.values, "no decision without its entry");
    assert_eq!(after.history, before.history);
    assert_eq!(after.audit, before.audit);
    db.call_blocking(|c| Ok(c.execute_batch("DROP TRIGGER audit_fails")?))
        .unwrap();
    s.run(s.store.review(reviewer, id, Verdict::Approve));
    let after = s.snapshot();
    assert_eq!(after.audited("approve"), 1);
    assert_eq!(
        after.value(id, "review_status"),
        Some(&serde_json::json!("approved"))
    );
}

/// Console pages read beside the writer: while a write holds it (here until the reads are
/// done, so a read that waited for it would never finish), every console read answers.
#[test]
fn console_reads_answer_while_a_long_write_holds_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("baylink.db")).unwrap();
    let s = Suite::new(Backend {
        store: Arc::new(db.clone()),
        keep: Box::new(dir),
    });
    let mut oa = officer("oa", 1);
    let (id, fields) = person(A, 1);
    s.push(&mut oa, id, now_ms(), &fields);
    let (held, holding) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        db.call_blocking(|_| {
            held.send(()).unwrap();
            // Held until the reads are done, or long enough to fail the test if they wait.
            Ok(released.recv_timeout(Duration::from_secs(30)).is_ok())
        })
        .unwrap()
    });
    holding.recv().unwrap();
    let reviewer = s.console_caller("r006");
    let villages = reviewer.villages.clone();
    let since = baylink_domain::Date::from_days(0);
    let overview = s.run(s.store.overview(villages.clone(), since));
    assert!(!overview.counts.is_empty());
    let rows = s.run(s.store.records(villages.clone(), Default::default(), 50, 0));
    assert_eq!(rows.len(), 1);
    let page = s.run(s.store.record_page(reviewer, id, Reveal::Masked));
    assert_eq!(page.view.kind, "person");
    s.run(s.store.duplicate_pairs(villages.clone(), 10));
    s.run(s.store.conflicts(villages, 10));
    s.run(s.store.audit_log(10));
    s.run(s.store.current_seq());
    release.send(()).unwrap();
    assert!(
        writer.join().unwrap(),
        "the reads finished while the write held the writer"
    );
}

#[test]
fn snapshot_cursors_are_read_back_and_forged_ones_refused() {
    let parse = |text: &str| parse_cursor(Some(&Cursor(text.to_owned())));
    let id = Uuid::from_u128(0x7000_8000_0000_0000_0077);
    let position = parse(&format!("b12.7:{A}")).unwrap();
    assert_eq!((position.after, position.snapshot), (12, Some(7)));
    // An earlier server's snapshot cursor, in record order, starts the snapshot again.
    let position = parse(&format!("b12.{id}.id_number:{A}")).unwrap();
    assert_eq!((position.after, position.snapshot), (12, Some(0)));
    // An earlier server's restart cursor is a feed position.
    let position = parse(&format!("r9:{A}")).unwrap();
    assert_eq!((position.after, position.snapshot), (9, None));
    for forged in [
        format!("b12.{id}:{A}"),
        format!("b12.not-an-id.name:{A}"),
        format!("b12.{id}.name'--:{A}"),
        format!("b12.{id}.:{A}"),
        format!("b-1.{id}.name:{A}"),
        format!("b12.13:{A}"),
        format!("b12.+3:{A}"),
        format!("b12.-3:{A}"),
        format!("b12.:{A}"),
        format!("b12.3.4.5:{A}"),
    ] {
        assert!(parse(&forged).is_err(), "{forged}");
    }
}
