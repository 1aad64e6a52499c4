//! A server put back to an earlier copy of its database: a phone whose cursor the lost database
//! signed is told so (`bad_cursor`) and pulls from the start, rather than skipping, unseeing,
//! what the restored server numbers below its cursor.

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
    let mut a = Device::new("oa");
    a.login(&server, "oa");
    capture_person(&mut a, 1, "王一");
    a.sync();
    server.db.backup(&copy).expect("backed up");
    // After the backup: a's cursor moves on past everything the copy holds.
    for n in 2..40 {
        capture_person(&mut a, n, "王二");
    }
    a.sync();
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
    a.sync();
    let held = a.states();
    let missing = theirs.iter().filter(|id| !held.contains_key(id)).count();
    assert_eq!(
        missing, 0,
        "records the restored server has and the phone never got"
    );
}
