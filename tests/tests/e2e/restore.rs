//! A server put back to an earlier copy of its database: a phone whose cursor names numbers the
//! copy never issued is told so and pulls from the start, rather than waiting, unseeing, until
//! the server's numbers pass its cursor.

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
    // Another officer captures on the restored server: numbers a's cursor has passed already.
    let mut b = Device::new("ob");
    b.login(&server, "ob");
    let theirs = capture_person(&mut b, 100, "李四");
    b.sync();
    a.sync();
    assert!(
        a.states().contains_key(&theirs),
        "the new record reached the phone"
    );
}
