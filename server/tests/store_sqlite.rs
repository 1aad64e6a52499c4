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

/// A fresh SQLite database in a temporary directory, as a backend of the suite.
fn sqlite_with(db: impl FnOnce(&Db) -> Db) -> (Backend, Db) {
    let dir = tempfile::tempdir().unwrap();
    let opened = Db::open(&dir.path().join("baylink.db")).unwrap();
    let store = db(&opened);
    let backend = Backend {
        store: Arc::new(store),
        keep: Box::new(dir),
    };
    (backend, opened)
}

/// A fresh SQLite store in a temporary directory.
fn sqlite() -> Backend {
    sqlite_with(Db::clone).0
}

/// A fresh SQLite store set up as the scenarios expect, and its database to look inside.
fn sqlite_suite() -> (Suite, Db) {
    let (backend, db) = sqlite_with(Db::clone);
    (Suite::new(backend), db)
}

crate::suite!(sqlite);

/// Random villages given and taken, records registered, pulls with any cursor the phone was
/// given (see the function).
#[test]
fn a_phone_whose_villages_change_is_told_only_what_it_may_hold() {
    conformance::a_phone_whose_villages_change_is_told_only_what_it_may_hold(sqlite, 256);
}

/// The suite's concurrency test can fail: against a backend that numbers values before it
/// takes the writer (so a write numbered lower may commit after one numbered higher), a pull
/// skips values. Several rounds, since an interleaving that shows it is likely, not certain.
#[test]
fn the_concurrency_test_fails_against_a_backend_numbering_values_before_the_lock() {
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let (backend, _) = sqlite_with(|db| db.numbering_before_the_lock().unwrap());
        let broken = Suite::new(backend);
        let outcome = conformance::concurrent_pushes_and_pulls(&broken);
        // Failed for the contract's reason: values committed late, below where the puller had
        // read, never sent (not a crash, nor values sent twice).
        if let Err(e) = &outcome {
            assert!(e.contains("never sent"), "{e}");
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

/// Contract 5: every audited decision whose audit entry fails to be written (as if the process
/// died between them) leaves nothing, and an audited read is not handed out.
#[test]
fn a_decision_whose_audit_entry_fails_leaves_nothing() {
    use baylink_server::store::contract::{Access, Actor, Keep, NewAccount};
    let (s, db) = sqlite_suite();
    // A record, a duplicate of it, and a conflict on it.
    s.device("oa", 10);
    let (mut oa, mut other) = (officer("oa", 1), officer("oa", 10));
    let (id, fields) = person(A, 1);
    s.push(&mut oa, id, now_ms(), &fields);
    let (duplicate, fields) = person(A, 2);
    s.push(&mut oa, duplicate, now_ms(), &fields);
    let phone = |n: &str| [("phone", serde_json::json!(n))];
    s.push(&mut oa, id, now_ms() + 1, &phone("13800138000"));
    s.push(&mut other, id, now_ms() + 2, &phone("13900139000"));
    let reviewer = s.console_caller("r006");
    let conflict = s.run(s.store.conflicts(reviewer.villages.clone(), 10))[0].id;
    let before = s.snapshot();
    assert_eq!(before.open_conflicts.get(&id), Some(&1));
    audit_fails(&db);
    let admin = Actor::Account(s.console_caller("admin").account);
    let store = &s.store;
    let new = NewAccount {
        username: "o9".into(),
        display_name: "o9".into(),
        role: baylink_server::store::caller::Role::Officer,
        station: None,
        password_hash: "-".into(),
        villages: vec![A.to_owned()],
    };
    let rule = baylink_domain::watch::Rule::id_number("11010519491231002X").unwrap();
    let places = baylink_server::demo::VILLAGES.replace("桥西", "桥西新");
    let failures: Vec<(&str, Result<(), StoreError>)> = vec![
        (
            "review",
            s.try_run(store.review(reviewer.clone(), id, Verdict::Approve("好".into()))),
        ),
        (
            "reveal",
            s.try_run(store.record_page(reviewer.clone(), id, Reveal::Full))
                .map(drop),
        ),
        ("export", {
            let export = store.export(
                reviewer.account,
                reviewer.villages.clone(),
                Default::default(),
                "csv".into(),
                10,
            );
            s.try_run(export).map(drop)
        }),
        (
            "settle",
            s.try_run(store.settle_conflict(reviewer.clone(), conflict, Keep::Lost)),
        ),
        (
            "merge",
            s.try_run(store.merge_records(reviewer.clone(), duplicate, id))
                .map(drop),
        ),
        (
            "dismiss",
            s.try_run(store.dismiss_pair(reviewer.clone(), duplicate, id)),
        ),
        (
            "create",
            s.try_run(store.create_account(admin, new)).map(drop),
        ),
        (
            "assign",
            s.try_run(store.assign_villages(admin, "oa".into(), vec![])),
        ),
        (
            "disable",
            s.try_run(store.set_access(admin, "oa".into(), Access::Disabled)),
        ),
        (
            "revoke",
            s.try_run(store.revoke_device(admin, Uuid::from_u128(1))),
        ),
        (
            "places",
            s.try_run(store.import_places(admin, places)).map(drop),
        ),
        (
            "rule",
            s.try_run(store.add_watch_rule(s.console_caller("admin").account, rule, String::new()))
                .map(drop),
        ),
        (
            "sign-in",
            s.try_run(store.open_console_session(reviewer.account, 60_000))
                .map(drop),
        ),
    ];
    for (what, result) in &failures {
        assert!(
            matches!(result, Err(StoreError::Backend(_))),
            "{what}: {result:?}"
        );
    }
    let after = s.snapshot();
    assert_eq!(after.values, before.values, "no decision without its entry");
    assert_eq!(after.history, before.history);
    assert_eq!(after.audit, before.audit);
    assert_eq!(after.open_conflicts, before.open_conflicts);
    assert_eq!(after.scopes, before.scopes);
    let accounts = s.run(s.store.accounts());
    assert!(
        accounts
            .iter()
            .all(|(a, _)| a.username != "o9" && !a.disabled)
    );
    assert!(
        accounts
            .iter()
            .any(|(a, v)| a.username == "oa" && v == &[A.to_owned()])
    );
    assert!(s.run(s.store.devices()).iter().all(|(d, _)| !d.revoked));
    assert!(s.run(s.store.watch_rules()).is_empty());
    db.call_blocking(|c| Ok(c.execute_batch("DROP TRIGGER audit_fails")?))
        .unwrap();
    s.run(
        s.store
            .review(reviewer, id, Verdict::Approve(String::new())),
    );
    let after = s.snapshot();
    assert_eq!(after.audited("approve"), 1);
    assert_eq!(
        after.value(id, "review_status"),
        Some(&serde_json::json!("approved"))
    );
}

/// Contracts 1 and 4, a push atomic with what it causes: one whose write fails at its last
/// statement (the device's counter, after the values, history, scopes, feeds, summaries and
/// alerts) leaves nothing of it, and the same push sent again is applied whole.
#[test]
fn a_push_failing_part_way_leaves_nothing_of_it() {
    let (s, db) = sqlite_suite();
    let mut oa = officer("oa", 1);
    // A person on the watch list, so that the push raises an alert as well.
    let number = "11010519491231002X";
    let rule = baylink_domain::watch::Rule::id_number(number).unwrap();
    let admin = s.console_caller("admin").account;
    s.run(s.store.add_watch_rule(admin, rule, String::new()));
    let fields = [
        ("village", serde_json::json!(A)),
        ("id_type", serde_json::json!("resident_id")),
        ("id_number", serde_json::json!(number)),
        ("name", serde_json::json!("王芳")),
    ];
    let id = conformance::natural(baylink_domain::EntityKind::Person, &fields);
    let before = s.snapshot();
    db.call_blocking(|c| {
        c.execute_batch(
            "CREATE TRIGGER last_fails BEFORE UPDATE OF last_counter ON device
             BEGIN SELECT RAISE(ABORT, 'the disk filled'); END;",
        )?;
        Ok(())
    })
    .unwrap();
    let batch = conformance::changes(&mut oa, "person", id, now_ms(), &fields);
    let failed = s.try_run(s.store.push(s.caller(&oa), batch.clone(), 60_000));
    assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
    let after = s.snapshot();
    assert_eq!(after.values, before.values);
    assert_eq!(after.history, before.history);
    assert_eq!(after.entities, before.entities);
    assert_eq!(after.scopes, before.scopes);
    assert_eq!(after.feeds, before.feeds);
    assert_eq!(after.last_seq, before.last_seq);
    assert_eq!(after.summaries, before.summaries);
    assert_eq!(after.alerts, before.alerts);
    db.call_blocking(|c| Ok(c.execute_batch("DROP TRIGGER last_fails")?))
        .unwrap();
    let answer = s.run(s.store.push(s.caller(&oa), batch, 60_000));
    assert!(answer.iter().all(|r| r.code.is_none()), "{answer:?}");
    let after = s.snapshot();
    assert_eq!(after.value(id, "name"), Some(&serde_json::json!("王芳")));
    assert!(after.summaries.contains_key(&id));
    assert!(
        after.alerts.iter().any(|(e, _, _)| *e == id),
        "the alert, now"
    );
    s.check();
}

/// Contract 6, console pages read beside the writer: while a write transaction holds the writer
/// and SQLite's write lock (here until the reads are done, so a read that waited for it would
/// never finish), every read a console page, the token check or the health check makes answers.
/// (An export or a full ID number waits for the writer to append its audit entry, by design.)
#[test]
fn console_reads_answer_while_a_long_write_holds_the_writer() {
    let (s, db) = sqlite_suite();
    let mut oa = officer("oa", 1);
    let (id, fields) = person(A, 1);
    s.push(&mut oa, id, now_ms(), &fields);
    let (held, holding) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        db.sqlite_blocking(|c| {
            let tx = c.transaction_with_behavior(
                baylink_server::store::rusqlite::TransactionBehavior::Immediate,
            )?;
            tx.execute("UPDATE meta SET value = value WHERE key = 'node'", [])?;
            held.send(()).unwrap();
            // Held until the reads are done, or long enough to fail the test if they wait.
            let done = released.recv_timeout(Duration::from_secs(30)).is_ok();
            tx.rollback()?;
            Ok(done)
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
    s.run(s.store.conflicts(villages.clone(), 10));
    let shown = baylink_server::store::contract::AlertsShown::All;
    s.run(s.store.alerts(villages, shown, 10));
    s.run(s.store.watch_rules());
    assert!(!s.run(s.store.audit_log(10)).is_empty());
    assert!(s.run(s.store.accounts()).len() >= 3);
    assert!(!s.run(s.store.devices()).is_empty());
    assert!(!s.run(s.store.stations()).is_empty());
    assert!(s.run(s.store.record(id)).is_some());
    assert!(
        s.run(s.store.console_session("no such cookie".into()))
            .is_none()
    );
    assert!(s.run(s.store.account_by_username("oa".into())).is_some());
    let token = s.run(s.store.token_holder(oa.node.0, s.caller(&oa).account));
    assert!(token.device.is_some());
    s.run(s.store.current_seq());
    s.run(s.store.snapshot());
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
    // A snapshot reads on past the number it was taken at.
    let position = parse(&format!("b12.13:{A}")).unwrap();
    assert_eq!((position.after, position.snapshot), (12, Some(13)));
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
        format!("b12.+3:{A}"),
        format!("b12.-3:{A}"),
        format!("b12.:{A}"),
        format!("b12.3.4.5:{A}"),
    ] {
        assert!(parse(&forged).is_err(), "{forged}");
    }
}
