//! A server put back to an earlier copy of its database: a phone whose cursor the lost database
//! signed is told so (`bad_cursor`) and pulls from the start, rather than skipping, unseeing,
//! what the restored server numbers below its cursor; and it sends again what it wrote that
//! the restored server lost, so nothing a phone was told is accepted stays on that phone alone.

use baylink_domain::EntityKind;
use baylink_tests::harness::{Device, Server, VILLAGE, resident_id};
use uuid::Uuid;

fn capture_person(phone: &mut Device, n: u32, name: &str) -> Uuid {
    let number = resident_id(&format!("4413031990010{:04}", 3000 + n));
    phone.capture(
        EntityKind::Person,
        &[("village", VILLAGE), ("id_number", &number), ("name", name)],
    )
}

#[test]
fn a_phone_ahead_of_a_restored_server_pulls_from_the_start_and_misses_nothing_new() {
    let mut server = Server::start();
    server.add_officer("oa", VILLAGE);
    server.add_officer("ob", VILLAGE);
    let dir = tempfile::tempdir().expect("temporary directory");
    let copy = dir.path().join("copy.db");
    server.add_reviewer("r006", "441303006");
    let mut a = Device::new("oa");
    a.login(&server, "oa");
    let first = capture_person(&mut a, 1, "王一");
    let approved = capture_person(&mut a, 0, "王零");
    a.sync();
    let r006 = server.caller("r006");
    server
        .db
        .call_blocking(|c| {
            baylink_server::store::review::review(
                c,
                &r006,
                &approved,
                &baylink_server::store::review::Verdict::Approve(String::new()),
                baylink_tests::harness::real_now_ms(),
            )
        })
        .expect("approved");
    a.sync();
    server.db.backup(&copy).expect("backed up");
    // After the backup: a's cursor moves on past everything the copy holds, and the server
    // accepts captures and an edit the copy does not hold.
    let after: Vec<Uuid> = (2..40).map(|n| capture_person(&mut a, n, "王二")).collect();
    a.edit(first, &[("occupation", "渔民")]);
    let report = a.sync();
    assert_eq!(report.pushed_records, 39, "{report:?}");
    let approved_history = server
        .snapshot()
        .history
        .iter()
        .filter(|h| h.entity == approved)
        .count();
    let held_before = server.snapshot().values;
    server.restore(&copy);
    a.move_server(&server);
    // Another officer captures on the restored server, more than the backup missed: the
    // server's numbers pass a's cursor again, and a cursor naming a number only the lost
    // database issued looks like any other by its number.
    let mut b = Device::new("ob");
    b.login(&server, "ob");
    let theirs: Vec<Uuid> = (100..160)
        .map(|n| capture_person(&mut b, n, "李四"))
        .collect();
    b.sync();
    let told = a.sync();
    let held = a.states();
    let missing = theirs.iter().filter(|id| !held.contains_key(id)).count();
    assert_eq!(
        missing, 0,
        "records the restored server has and the phone never got"
    );
    // What the restored server lost, a sent again in the same sync: its own values that stand
    // (the 38 persons after the backup, the edit, and the person before it, which the server
    // keeps as it was).
    assert!(told.resent > 0, "{told:?}");
    assert_eq!(told.refused, 0, "{told:?}");
    let server_has = server.snapshot();
    let lost = after
        .iter()
        .filter(|id| !server_has.entities.contains_key(id))
        .count();
    assert_eq!(lost, 0, "captures accepted before the restore are back");
    assert_eq!(
        server_has
            .value(first, "occupation")
            .and_then(|v| v.as_str()),
        Some("渔民"),
        "the edit accepted before the restore is back"
    );
    assert!(
        server_has.open_conflicts.is_empty(),
        "sent again, nothing conflicts: {:?}",
        server_has.open_conflicts
    );
    // Every value the server held before the restore it holds again, with its stamp (at a
    // new place in its feed); the fields the server writes itself when it accepts a change
    // (who captured, when, the review status) with the restored server's stamps.
    let server_owned = ["created_by", "created_at", "review_status"];
    let differ: Vec<_> = held_before
        .iter()
        .filter(|(key, was)| match server_has.values.get(key) {
            None => true,
            Some(now) if server_owned.contains(&key.1.as_str()) => now.value != was.value,
            Some(now) => (&now.value, now.stamp) != (&was.value, was.stamp),
        })
        .map(|(key, was)| (key, was, server_has.values.get(key)))
        .collect();
    assert!(
        differ.is_empty(),
        "{} differ: {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
    // Sent again as the server holds it, a record approved before the backup is neither
    // edited nor sent back to review, and its history gains nothing.
    assert_eq!(
        server_has
            .value(approved, "review_status")
            .and_then(|v| v.as_str()),
        Some("approved")
    );
    assert_eq!(
        server_has
            .history
            .iter()
            .filter(|h| h.entity == approved)
            .count(),
        approved_history
    );
    // Once: the next sync sends nothing again, and b gets what a sent.
    let quiet = a.sync();
    assert_eq!((quiet.resent, quiet.pushed), (0, 0), "{quiet:?}");
    b.sync();
    let on_b = b.states();
    assert!(after.iter().all(|id| on_b.contains_key(id)));
}
