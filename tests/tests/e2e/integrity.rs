//! What a field trial found (records left incomplete, refusals the officer could not act on),
//! each played by phones against a real server on loopback.

use baylink_domain::EntityKind;
use baylink_tests::harness::{Device, PASSWORD, Server, VILLAGE};

/// A village of another station (霞涌).
const ELSEWHERE: &str = "441303007001";

fn person(
    village: &'static str,
    id_number: &'static str,
    name: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("village", village),
        ("id_type", "resident_id"),
        ("id_number", id_number),
        ("name", name),
        ("phone", "13800138000"),
    ]
}

fn on_server(server: &Server, id: uuid::Uuid) -> i64 {
    i64::from(server.snapshot().entities.contains_key(&id))
}

#[test]
fn a_record_refused_whole_is_taken_whole_once_corrected_or_leaves_the_phone_when_dismissed() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let mut phone = Device::new("o1");
    // Captured before signing in, in a village not the officer's (the phone did not know hers).
    let id = phone.capture(
        EntityKind::Person,
        &person(ELSEWHERE, "11010519491231002X", "王芳"),
    );
    let stray = phone.capture(
        EntityKind::Person,
        &person(ELSEWHERE, "440102198001011235", "李明"),
    );
    phone.login(&server, "o1");
    let report = phone.sync();
    assert_eq!((report.pushed_records, report.refused_records), (0, 2));
    let refused = phone.store.refused_records().unwrap();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|r| r.never_taken));
    assert!(
        refused[0].fields[0].message.contains("不在您的辖区"),
        "{refused:?}"
    );
    // Corrected in the village alone: the record goes again whole and the server takes it.
    let mut village = baylink_domain::Input::new();
    village.insert("village".into(), VILLAGE.into());
    phone.store.edit(id, &village).unwrap();
    let report = phone.sync();
    assert_eq!((report.pushed_records, report.refused_records), (1, 0));
    // Another phone of the officer receives it whole.
    let mut second = Device::new("o1");
    second.login(&server, "o1");
    second.sync();
    let record = second.store.get(id).unwrap().expect("the record");
    assert_eq!(record.fields.get("name").map(String::as_str), Some("王芳"));
    assert_eq!(
        record.fields.get("id_number").map(String::as_str),
        Some("11010519491231002X")
    );
    // The other is dismissed: it leaves the phone, and nothing of it reaches the server.
    assert_eq!(
        phone.store.dismiss_refused(stray).unwrap(),
        mobile_core::Dismissal::Removed
    );
    assert!(phone.store.get(stray).unwrap().is_none());
    assert!(phone.store.refused_records().unwrap().is_empty());
    let report = phone.sync();
    assert_eq!((report.pushed, report.refused), (0, 0));
    assert_eq!(on_server(&server, stray), 0);
    assert_eq!(on_server(&server, id), 1);
}

#[test]
fn an_edit_onto_another_records_id_number_is_refused_with_a_pointer_and_dismissed_back() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", ELSEWHERE);
    let (mut phone, mut other_phone, mut elsewhere) =
        (Device::new("o1"), Device::new("o1"), Device::new("o2"));
    phone.login(&server, "o1");
    other_phone.login(&server, "o1");
    elsewhere.login(&server, "o2");
    let a = phone.capture(
        EntityKind::Person,
        &person(VILLAGE, "11010519491231002X", "王芳"),
    );
    phone.sync();
    other_phone.sync();
    // Captured on another phone since: this phone does not hold it yet.
    let c = other_phone.capture(
        EntityKind::Person,
        &person(VILLAGE, "440102198001011235", "李明"),
    );
    other_phone.sync();
    let _b = elsewhere.capture(
        EntityKind::Person,
        &person(ELSEWHERE, "440303199002020020", "张伟"),
    );
    elsewhere.sync();

    let mut number = |to: &str| {
        let mut input = baylink_domain::Input::new();
        input.insert("id_number".into(), to.into());
        phone.store.edit(a, &input).unwrap();
        let report = phone.sync();
        assert_eq!(report.refused_records, 1, "{report:?}");
        let refused = phone.store.refused_records().unwrap();
        let message = refused[0]
            .fields
            .iter()
            .find(|f| f.field == "id_number")
            .map(|f| f.message.clone())
            .unwrap_or_default();
        // The number and what derives from it go back.
        let dismissal = phone.store.dismiss_refused(a).unwrap();
        assert!(
            matches!(dismissal, mobile_core::Dismissal::Reverted { fields } if fields >= 2),
            "{dismissal:?}"
        );
        message
    };
    // Onto a record of the same village: refused, naming it.
    let message = number("440102198001011235");
    assert!(message.contains(&c.to_string()), "{message}");
    // Onto a record of another village: refused, without its id.
    let message = number("440303199002020020");
    assert!(message.contains("其他村"), "{message}");
    // What derives from the refused number (birth date, sex, origin) is refused with it.
    let stored = server
        .snapshot()
        .value(a, "birth_date")
        .map(|v| v.to_string());
    assert_eq!(stored.as_deref(), Some("\"1949-12-31\""));
    // Dismissed, the record is as the server holds it, and the server has one record per number.
    let record = phone.store.get(a).unwrap().unwrap();
    assert_eq!(
        record.fields.get("id_number").map(String::as_str),
        Some("11010519491231002X")
    );
    phone.sync();
    assert_eq!(on_server(&server, a), 1);
    // Once the phone holds the other record, it refuses the edit itself.
    let mut input = baylink_domain::Input::new();
    input.insert("id_number".into(), "440102198001011235".into());
    let err = phone.store.edit(a, &input).unwrap_err();
    assert!(err.to_string().contains(&c.to_string()), "{err}");
}

#[test]
fn a_phone_changes_hands_only_once_its_officers_changes_are_synced_and_keeps_nothing_of_them() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", ELSEWHERE);
    let mut phone = Device::new("o1");
    phone.login(&server, "o1");
    phone.sync();
    let first_node = phone.store.node_id();
    let id = phone.capture(
        EntityKind::Person,
        &person(VILLAGE, "11010519491231002X", "王芳"),
    );
    mobile_core::sync::logout(&mut phone.store).unwrap();
    // Another officer cannot sign in while o1's capture waits: it would be lost.
    let refused = mobile_core::sync::login(&mut phone.store, &server.url, "o2", PASSWORD, "phone");
    let Err(mobile_core::Error::Invalid(e)) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(e.field_errors()[0].code, "changes_waiting");
    assert!(phone.store.get(id).unwrap().is_some(), "nothing was lost");
    // o1 syncs it; a sign-in of another officer with a wrong password changes nothing.
    phone.login(&server, "o1");
    phone.sync();
    mobile_core::sync::logout(&mut phone.store).unwrap();
    let wrong = mobile_core::sync::login(&mut phone.store, &server.url, "o2", "guess", "phone");
    assert!(wrong.is_err());
    assert!(
        phone.store.get(id).unwrap().is_some(),
        "a failed sign-in wipes nothing"
    );
    assert_eq!(phone.store.node_id(), first_node);
    // Then o2 takes the phone: o1's records are gone, and it is a new device.
    phone.login(&server, "o2");
    assert!(
        phone.store.get(id).unwrap().is_none(),
        "o1's village is not o2's to read"
    );
    assert_ne!(phone.store.node_id(), first_node);
    phone.sync();
    assert!(
        phone
            .store
            .list(EntityKind::Person, Some(VILLAGE), 10, 0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(on_server(&server, id), 1);
}

fn house(village: &'static str, address: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("village", village),
        ("address", address),
        ("use", "rental"),
        ("status", "in_use"),
    ]
}

#[test]
fn a_person_registered_in_another_village_moves_in_and_her_old_residence_goes_back_to_its_officer()
{
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", ELSEWHERE);
    let (mut first, mut second) = (Device::new("o1"), Device::new("o2"));
    first.login(&server, "o1");
    second.login(&server, "o2");
    let her = person(VILLAGE, "11010519491231002X", "王芳");
    let p = first.capture(EntityKind::Person, &her);
    let h1 = first.capture(EntityKind::House, &house(VILLAGE, "桥西路8号"));
    let (p_text, h1_text) = (p.to_string(), h1.to_string());
    let old = first.capture(
        EntityKind::Residence,
        &[
            ("village", VILLAGE),
            ("person", p_text.as_str()),
            ("house", h1_text.as_str()),
            ("moved_in", "2025-03-01"),
            ("relation", "tenant"),
        ],
    );
    first.sync();
    // She moves to 霞涌: its officer registers her there, with a residence.
    let again = second.capture(
        EntityKind::Person,
        &person(ELSEWHERE, "11010519491231002X", "王芳"),
    );
    assert_eq!(again, p, "one person, one id");
    let h2 = second.capture(EntityKind::House, &house(ELSEWHERE, "霞涌街1号"));
    let h2_text = h2.to_string();
    second.capture(
        EntityKind::Residence,
        &[
            ("village", ELSEWHERE),
            ("person", p_text.as_str()),
            ("house", h2_text.as_str()),
            ("moved_in", "2026-11-01"),
            ("relation", "tenant"),
        ],
    );
    second.sync();
    // Her first officer is told at the next sync: the old residence comes back to close.
    first.sync();
    let returned = first.store.returned().unwrap();
    let flagged = returned
        .iter()
        .find(|f| f.record.id == old.to_string())
        .unwrap_or_else(|| panic!("{returned:?}"));
    assert!(flagged.comment.contains("搬离日期"), "{}", flagged.comment);
    // Nothing of who captured her reaches the conflicts page as if it were data.
    let owned_conflicts: i64 = server
        .db
        .call_blocking(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM conflict WHERE field IN ('created_by', 'created_at', 'review_status')",
                (),
                |r| r.get(0),
            )?)
        })
        .expect("conflicts");
    assert_eq!(owned_conflicts, 0);
    // Her home stays where it was, and so does her author.
    let record = first.store.get(p).unwrap().unwrap();
    assert_eq!(
        record.fields.get("village").map(String::as_str),
        Some(VILLAGE)
    );
    assert_eq!(
        record.fields.get("created_by").map(String::as_str),
        Some("o1")
    );
    // Closed by its officer, the residence goes back to pending review.
    let mut out = baylink_domain::Input::new();
    out.insert("moved_out".into(), "2026-10-31".into());
    first.store.edit(old, &out).unwrap();
    first.sync();
    assert!(
        first
            .store
            .returned()
            .unwrap()
            .iter()
            .all(|f| f.record.id != old.to_string())
    );
}

#[test]
fn two_records_edited_onto_one_free_number_the_second_is_refused() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", VILLAGE);
    let (mut first, mut second) = (Device::new("o1"), Device::new("o2"));
    first.login(&server, "o1");
    second.login(&server, "o2");
    let p1 = first.capture(
        EntityKind::Person,
        &person(VILLAGE, "11010519491231002X", "王芳"),
    );
    let p2 = second.capture(
        EntityKind::Person,
        &person(VILLAGE, "440102198001011235", "李明"),
    );
    first.sync();
    second.sync();
    // Both correct a number to the same one, held by no record yet.
    let free = "440303199002020020";
    let mut to_free = baylink_domain::Input::new();
    to_free.insert("id_number".into(), free.into());
    first.store.edit(p1, &to_free).unwrap();
    first.sync();
    second.store.edit(p2, &to_free).unwrap();
    let report = second.sync();
    assert_eq!(report.refused_records, 1, "{report:?}");
    let refused = second.store.refused_records().unwrap();
    assert!(
        refused[0]
            .fields
            .iter()
            .any(|f| f.message.contains(&p1.to_string())),
        "{refused:?}"
    );
    let numbers: i64 = server
        .db
        .call_blocking(move |conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM summary WHERE id_number = ?1 AND deleted = 0",
                [free],
                |r| r.get(0),
            )?)
        })
        .expect("summary");
    assert_eq!(numbers, 1, "one record holds the number");
}

#[test]
fn a_new_record_with_a_number_another_record_was_edited_onto_is_refused_on_phone_and_server() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", VILLAGE);
    let (mut first, mut second) = (Device::new("o1"), Device::new("o2"));
    first.login(&server, "o1");
    second.login(&server, "o2");
    let p1 = first.capture(
        EntityKind::Person,
        &person(VILLAGE, "11010519491231002X", "王芳"),
    );
    first.sync();
    // Her number was mistyped at capture; the officer corrects it once synced.
    let right = "440303199002020020";
    first.edit(p1, &[("id_number", right)]);
    first.sync();
    // The second officer captures her again before hearing of it: refused whole, with a
    // pointer to the record that holds the number, and nothing of it on the server.
    let again = second.capture(EntityKind::Person, &person(VILLAGE, right, "王芳"));
    assert_ne!(again, p1);
    let report = second.sync();
    assert_eq!(report.refused_records, 1, "{report:?}");
    let refused = second.store.refused_records().unwrap();
    assert!(
        refused[0]
            .fields
            .iter()
            .any(|f| f.message.contains(&p1.to_string())),
        "{refused:?}"
    );
    assert_eq!(on_server(&server, again), 0, "nothing of it is stored");
    // Once dismissed and synced, the phone knows the record and refuses a third capture itself.
    second.store.dismiss_refused(again).unwrap();
    second.sync();
    let err = second
        .store
        .capture(
            EntityKind::Person,
            &baylink_tests::harness::input(&person(VILLAGE, right, "王芳")),
        )
        .expect_err("the phone knows who holds the number");
    assert!(err.to_string().contains(&p1.to_string()), "{err}");
}

#[test]
fn a_car_and_a_motorcycle_with_one_plate_text_are_two_vehicles_and_neither_overwrites_the_other() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", VILLAGE);
    let (mut first, mut second) = (Device::new("o1"), Device::new("o2"));
    first.login(&server, "o1");
    second.login(&server, "o2");
    let vehicle = |vehicle_type: &'static str, colour: &'static str| {
        vec![
            ("village", VILLAGE),
            ("plate", "粤L12345"),
            ("vehicle_type", vehicle_type),
            ("colour", colour),
        ]
    };
    let car = first.capture(EntityKind::Vehicle, &vehicle("car", "白"));
    first.sync();
    let motorcycle = second.capture(EntityKind::Vehicle, &vehicle("motorcycle", "红"));
    assert_ne!(car, motorcycle);
    let report = second.sync();
    assert_eq!(report.refused_records, 0, "{report:?}");
    first.sync();
    let states = first.states();
    let colour = |id| {
        baylink_sync::merge::values(&states[&id].1)
            .get("colour")
            .cloned()
    };
    assert_eq!(colour(car), Some("白".into()), "the car keeps its colour");
    assert_eq!(colour(motorcycle), Some("红".into()));
    assert_eq!(on_server(&server, car) + on_server(&server, motorcycle), 2);
}

#[test]
fn an_officer_left_with_no_village_captures_nothing_on_the_phone() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let mut phone = Device::new("o1");
    phone.login(&server, "o1");
    phone.capture(
        EntityKind::Person,
        &person(VILLAGE, "11010519491231002X", "王芳"),
    );
    phone.sync();
    // Every village taken from the officer.
    server
        .db
        .call_blocking(|c| {
            baylink_server::store::accounts::assign_villages(
                c,
                baylink_server::store::contract::Actor::Operator,
                "o1",
                &[],
                0,
            )
        })
        .expect("villages taken away");
    phone.sync();
    let err = phone
        .store
        .capture(
            EntityKind::Person,
            &baylink_tests::harness::input(&person(VILLAGE, "440102198001011235", "李明")),
        )
        .expect_err("no village left to capture in");
    match err {
        mobile_core::Error::Invalid(e) => assert_eq!(e.field_errors()[0].code, "not_yours"),
        other => panic!("{other:?}"),
    }
}
