//! Phones that were offline sync through a real server on loopback: one person from two
//! officers, concurrent edits, village scopes, people moving, revoked devices and stolen
//! tokens, and a server restart between syncs.

use baylink_domain::EntityKind;
use baylink_server::store::review::Verdict;
use baylink_tests::harness::{Device, PASSWORD, Server, VILLAGE, real_now_ms, resident_id};

/// Another village of the same station (澳头街道).
const OTHER_VILLAGE: &str = "441303006002";

/// A server with officer o1 of `village_a` and o2 of `village_b`, each signed in on a phone.
fn two_phones(village_a: &str, village_b: &str) -> (Server, Device, Device) {
    let server = Server::start();
    server.add_officer("o1", village_a);
    server.add_officer("o2", village_b);
    let (mut a, mut b) = (Device::new("o1"), Device::new("o2"));
    a.login(&server, "o1");
    b.login(&server, "o2");
    (server, a, b)
}

fn person(id_number: &str, name: &str, village: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("village", village.to_owned()),
        ("id_number", id_number.to_owned()),
        ("name", name.to_owned()),
    ]
}

fn capture(device: &mut Device, kind: EntityKind, pairs: &[(&str, String)]) -> uuid::Uuid {
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    device.capture(kind, &pairs)
}

fn field(device: &Device, id: uuid::Uuid, name: &str) -> Option<String> {
    device
        .store
        .get(id)
        .expect("readable")
        .map(|r| r.fields.get(name).cloned().unwrap_or_default())
}

/// A field's value on the server, as JSON text.
fn server_value(server: &Server, id: uuid::Uuid, name: &str) -> Option<String> {
    server.snapshot().value(id, name).map(|v| v.to_string())
}

#[test]
fn two_officers_capture_the_same_person_offline_and_everyone_ends_with_one_identical_record() {
    let (server, mut a, mut b) = two_phones(VILLAGE, VILLAGE);
    // Both offline: the same woman, typed differently, with different details.
    let pa = capture(
        &mut a,
        EntityKind::Person,
        &[
            person("11010519491231002x", "王芳", VILLAGE),
            vec![("phone", "13800138000".into())],
        ]
        .concat(),
    );
    b.clock.advance(30_000);
    let pb = capture(
        &mut b,
        EntityKind::Person,
        &[
            person("110105 19491231 002X", "王 芳", VILLAGE),
            vec![("occupation", "厨师".into())],
        ]
        .concat(),
    );
    assert_eq!(pa, pb);
    let report = a.sync();
    assert!(report.pushed > 5 && report.refused == 0, "{report:?}");
    b.sync();
    a.sync();
    assert_eq!(a.states(), b.states(), "devices differ");
    for name in ["name", "phone", "occupation", "gender", "birth_date"] {
        let on_a = field(&a, pa, name).unwrap_or_default();
        assert_eq!(
            server_value(&server, pa, name),
            Some(serde_json::to_string(&on_a).unwrap()),
            "{name}"
        );
    }
    assert_eq!(field(&a, pa, "name").as_deref(), Some("王芳"));
    assert_eq!(a.store.pending_count().unwrap(), 0);
    let held = server.snapshot();
    let persons = held.entities.values().filter(|e| e.kind == "person");
    assert_eq!(persons.count(), 1);
}

#[test]
fn a_concurrent_edit_converges_everywhere_and_leaves_a_conflict_for_reviewers() {
    let (server, mut a, mut b) = two_phones(VILLAGE, VILLAGE);
    let id = capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    a.sync();
    b.sync();
    // Both edit the phone offline.
    a.clock.advance(10_000);
    b.clock.advance(20_000);
    a.edit(id, &[("phone", "13900139000")]);
    b.edit(id, &[("phone", "13700137000")]);
    a.sync();
    b.sync();
    a.sync();
    assert_eq!(field(&a, id, "phone").as_deref(), Some("13700137000"));
    assert_eq!(a.states(), b.states());
    let conflicts: Vec<(String, String, String)> = server.query(|c| {
        let mut stmt = c
            .prepare("SELECT field, kept_value, lost_value FROM conflict WHERE entity = ?1")
            .unwrap();
        stmt.query_map([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    });
    assert_eq!(
        conflicts,
        [(
            "phone".to_owned(),
            "\"13700137000\"".to_owned(),
            "\"13900139000\"".to_owned()
        )]
    );
    let held = server.snapshot();
    let history = held
        .history
        .iter()
        .filter(|w| w.entity == id && w.field == "phone");
    assert_eq!(history.count(), 2, "both edits are in the history");
}

#[test]
fn another_villages_officer_never_receives_the_records_and_cannot_write_them() {
    let (server, mut a, mut outsider) = two_phones(VILLAGE, OTHER_VILLAGE);
    let id = capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    a.sync();
    outsider.sync();
    assert!(
        outsider.store.get(id).unwrap().is_none(),
        "received another village's record"
    );
    // The outsider forges an edit of that record (it knows the id): refused, nothing applied.
    let forged = baylink_sync::Change {
        id: baylink_sync::ChangeId {
            device: outsider.store.node_id(),
            counter: 1,
        },
        kind: "person".into(),
        entity: id,
        field: "name".into(),
        value: serde_json::json!("张三"),
        stamp: baylink_sync::Stamp::new(
            baylink_sync::Hlc::new(baylink_tests::harness::NOW_MS, 5),
            outsider.store.node_id(),
        ),
        base: None,
    };
    let token = outsider.store.access_token_for_tests().expect("signed in");
    let client = mobile_core::sync::Client::new(&server.url, std::time::Duration::from_secs(5));
    let answer = client
        .push(&token, outsider.store.node_id(), vec![forged])
        .expect("push answered");
    assert_eq!(answer.results[0].code.as_deref(), Some("out_of_scope"));
    assert_eq!(
        server_value(&server, id, "name").as_deref(),
        Some("\"王芳\"")
    );
    // Capturing in a village not theirs is refused on the phone already, naming the field, and
    // nothing is kept to sync.
    let refused = outsider.store.capture(
        EntityKind::House,
        &baylink_tests::harness::input(&[
            ("village", VILLAGE),
            ("address", "桥西一巷1号"),
            ("use", "rental"),
            ("status", "in_use"),
        ]),
    );
    let error = refused.expect_err("a village not the officer's");
    assert!(error.to_string().contains("village"), "{error}");
    let report = outsider.sync();
    assert!(report.refused == 0 && report.pushed == 0, "{report:?}");
    // A change forged past the phone (as above) is refused by the server all the same.
    assert!(outsider.store.refused().unwrap().is_empty());
}

#[test]
fn a_person_who_moves_into_another_village_arrives_whole_on_its_devices() {
    let (server, mut a, mut b) = two_phones(VILLAGE, OTHER_VILLAGE);
    let id = capture(
        &mut a,
        EntityKind::Person,
        &[
            person("11010519491231002X", "王芳", VILLAGE),
            vec![
                ("phone", "13800138000".into()),
                ("employer", "大亚湾石化".into()),
            ],
        ]
        .concat(),
    );
    a.sync();
    b.sync();
    assert!(b.store.get(id).unwrap().is_none());
    // She rents a room in the other village: its officer registers her there, with a residence.
    let house = capture(
        &mut b,
        EntityKind::House,
        &[
            ("village", OTHER_VILLAGE.to_owned()),
            ("address", "岩前新村2号".into()),
            ("use", "rental".into()),
            ("status", "in_use".into()),
        ],
    );
    b.clock.advance(60_000);
    let again = capture(
        &mut b,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", OTHER_VILLAGE),
    );
    assert_eq!(again, id);
    capture(
        &mut b,
        EntityKind::Residence,
        &[
            ("village", OTHER_VILLAGE.to_owned()),
            ("person", id.to_string()),
            ("house", house.to_string()),
            ("moved_in", "2026-11-01".into()),
            ("relation", "tenant".into()),
        ],
    );
    let report = b.sync();
    assert_eq!(report.refused, 0, "{:?}", b.store.refused().unwrap());
    // B now holds her whole record: the fields A captured that B never typed. Her home village
    // stays as it was (a registration elsewhere is a move-in, not a silent move): B's phone
    // is given it back.
    assert_eq!(field(&b, id, "employer").as_deref(), Some("大亚湾石化"));
    assert_eq!(field(&b, id, "phone").as_deref(), Some("13800138000"));
    assert_eq!(field(&b, id, "village").as_deref(), Some(VILLAGE));
    // Her old village keeps her and her history; both phones hold the same record.
    a.sync();
    assert_eq!(field(&a, id, "village").as_deref(), Some(VILLAGE));
    assert_eq!(a.states()[&id].1, b.states()[&id].1);
    let history = server
        .snapshot()
        .history
        .iter()
        .filter(|w| w.entity == id)
        .count();
    assert!(history > 10);
}

#[test]
fn a_revoked_device_is_refused_and_wiped_and_a_reused_refresh_token_ends_the_session() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let mut a = Device::new("o1");
    a.login(&server, "o1");
    let id = capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    a.sync();
    // A thief copies the refresh token; the phone refreshes first; the thief's replay revokes
    // the session everywhere.
    let device = a.store.node_id();
    let stolen = a.store.refresh_token_for_tests().expect("refresh token");
    let client = mobile_core::sync::Client::new(&server.url, std::time::Duration::from_secs(5));
    let renewed = client
        .refresh(device, &stolen)
        .expect("first refresh works");
    let replay = client.refresh(device, &stolen);
    assert!(
        matches!(replay, Err(mobile_core::Error::Server { status: 401, ref code, .. }) if code == "token_reused"),
        "{replay:?}"
    );
    let after = client.refresh(device, &renewed.refresh_token);
    assert!(after.is_err(), "the session survived a token reuse");

    // The phone is lost: the administrator revokes it; its next call wipes it.
    let store = server.state.store.clone();
    server
        .run(store.revoke_device(baylink_server::store::contract::Actor::Operator, device.0))
        .unwrap();
    let result = a.try_sync();
    assert!(
        matches!(result, Err(mobile_core::Error::Revoked)),
        "{result:?}"
    );
    assert!(a.store.get(id).unwrap().is_none());
    assert!(a.store.session().unwrap().is_none());
    assert_ne!(
        a.store.node_id(),
        device,
        "a wiped phone takes a new identity"
    );
    // Signing in with the revoked identity is refused too.
    let login = client.login("o1", PASSWORD, device, "stolen", None);
    assert!(
        matches!(login, Err(mobile_core::Error::Server { ref code, .. }) if code == "device_revoked"),
        "{login:?}"
    );
}

#[test]
fn a_server_restart_between_two_syncs_loses_nothing_it_acknowledged() {
    let (mut server, mut a, mut b) = two_phones(VILLAGE, VILLAGE);
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let number = resident_id(&format!("4413031990010{:04}", 1000 + i));
        ids.push(capture(
            &mut a,
            EntityKind::Person,
            &person(&number, "李强", VILLAGE),
        ));
    }
    let report = a.sync();
    assert_eq!(a.store.pending_count().unwrap(), 0);
    server.restart();
    a.move_server(&server);
    b.move_server(&server);
    b.sync();
    for id in &ids {
        assert_eq!(field(&b, *id, "name").as_deref(), Some("李强"));
    }
    // A pushes nothing again and the server accepts its next changes where it left off.
    a.edit(ids[0], &[("phone", "13800138000")]);
    let next = a.sync();
    assert_eq!((next.pushed, next.refused), (1, 0));
    assert!(report.pushed > 0);
}

#[test]
fn a_phone_whose_clock_runs_days_ahead_is_corrected_and_loses_nothing() {
    // Signed in with a correct clock; then the clock jumps two days ahead (a flat battery, a
    // wrong manual setting) and the officer captures offline.
    let (server, mut a, mut b) = two_phones(VILLAGE, VILLAGE);
    let real_now = real_now_ms();
    a.clock.set(real_now);
    b.clock.set(real_now);
    a.sync();
    a.store.reset_clock_offset_for_tests();
    a.clock.set(real_now + 2 * 86_400_000);
    let id = capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    let report = a.sync();
    assert!(report.restamped > 0, "{report:?}");
    assert_eq!(
        (report.refused, a.store.pending_count().unwrap()),
        (0, 0),
        "{report:?}"
    );
    // The stamps the server holds are not in the future, so the phone cannot win every conflict.
    let hlc: i64 = server.query(|c| {
        c.query_row(
            c.pick(
                "SELECT MAX(f.value ->> '$[1]') FROM entity e JOIN json_each(e.state, '$.f') f
                 WHERE e.id = ?1",
                "SELECT MAX(CAST(f.value ->> 1 AS BIGINT)) FROM entity e
                 CROSS JOIN LATERAL json_each(CAST(e.state AS json) -> 'f') f WHERE e.id = ?1",
            ),
            [id.to_string()],
            |r| r.get(0),
        )
        .unwrap()
    });
    let stamped_ms = (hlc as u64) >> 16;
    assert!(
        stamped_ms < real_now + 5 * 60_000,
        "stamped {} s ahead",
        (stamped_ms - real_now) / 1000
    );
    b.sync();
    assert_eq!(field(&b, id, "name").as_deref(), Some("王芳"));
    // An edit on the correct phone, later in real time, wins.
    b.clock.set(real_now + 60_000);
    b.edit(id, &[("phone", "13900139000")]);
    b.sync();
    a.sync();
    assert_eq!(field(&a, id, "phone").as_deref(), Some("13900139000"));
}

#[test]
fn a_push_whose_answer_was_lost_is_answered_again_without_duplicates() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let mut a = Device::new("o1");
    a.login(&server, "o1");
    capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    capture(
        &mut a,
        EntityKind::House,
        &[
            ("village", VILLAGE.to_owned()),
            ("address", "桥西一巷1号".into()),
            ("use", "rental".into()),
            ("status", "in_use".into()),
        ],
    );
    let changes = a.store.outbox(usize::MAX).unwrap();
    // The push reaches the server, the connection dies before the answer arrives.
    let token = a.store.access_token_for_tests().unwrap();
    let client = mobile_core::sync::Client::new(&server.url, std::time::Duration::from_secs(5));
    let first = client
        .push(&token, a.store.node_id(), changes.clone())
        .unwrap();
    assert!(
        first
            .results
            .iter()
            .all(|r| r.status == baylink_sync::wire::ChangeStatus::Accepted)
    );
    // The phone retries at its next sync: the same answers, nothing applied twice.
    let report = a.sync();
    assert_eq!(report.pushed as usize, changes.len());
    assert_eq!(a.store.pending_count().unwrap(), 0);
    assert_eq!(server.snapshot().history.len(), changes.len());
}

#[test]
fn a_village_given_to_an_officer_arrives_and_a_village_taken_away_is_purged() {
    let (server, mut a, mut b) = two_phones(VILLAGE, OTHER_VILLAGE);
    let mine = capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    let theirs = capture(
        &mut b,
        EntityKind::Person,
        &person(&resident_id("44130319900101123"), "李强", OTHER_VILLAGE),
    );
    a.sync();
    b.sync();
    a.sync();
    assert!(a.store.get(theirs).unwrap().is_none());
    // The station gives o1 the neighbouring village too: everything of it arrives.
    let both = [VILLAGE.to_owned(), OTHER_VILLAGE.to_owned()];
    server
        .db
        .call_blocking(|c| {
            baylink_server::store::accounts::assign_villages(
                c,
                baylink_server::store::contract::Actor::Operator,
                "o1",
                &both,
                0,
            )
        })
        .unwrap();
    a.sync();
    assert_eq!(field(&a, theirs, "name").as_deref(), Some("李强"));
    // Then takes the first one away: its records leave the phone, the other village's stay.
    let other = [OTHER_VILLAGE.to_owned()];
    server
        .db
        .call_blocking(|c| {
            baylink_server::store::accounts::assign_villages(
                c,
                baylink_server::store::contract::Actor::Operator,
                "o1",
                &other,
                0,
            )
        })
        .unwrap();
    let report = a.sync();
    assert!(report.purged >= 1, "{report:?}");
    assert!(
        a.store.get(mine).unwrap().is_none(),
        "left behind on the phone"
    );
    assert_eq!(field(&a, theirs, "name").as_deref(), Some("李强"));
}

#[test]
fn a_record_returned_by_the_station_reaches_the_officers_phone_with_the_comment() {
    let (server, mut a, b) = two_phones(VILLAGE, VILLAGE);
    server.add_account("r006", baylink_server::store::accounts::Role::Reviewer, &[]);
    let id = capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    a.sync();
    let r006 = server.caller("r006");
    let now = real_now_ms();
    server
        .db
        .call_blocking(|c| {
            baylink_server::store::review::review(
                c,
                &r006,
                &id,
                &Verdict::Return("户籍地址未填写 / household address missing".into()),
                now,
            )
        })
        .unwrap();
    let told = a.sync();
    assert_eq!(
        told.news
            .iter()
            .map(|n| (n.record_id.clone(), n.what.as_str(), n.comment.as_deref()))
            .collect::<Vec<_>>(),
        [(
            id.to_string(),
            "returned",
            Some("户籍地址未填写 / household address missing")
        )],
        "the sync report tells the officer"
    );
    assert!(told.news[0].label.starts_with("王芳"), "{:?}", told.news);
    let returned = a.store.returned().unwrap();
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].record.id, id.to_string());
    assert_eq!(
        returned[0].comment,
        "户籍地址未填写 / household address missing"
    );
    // The officer corrects the record, which goes back to review; the station approves it.
    a.edit(id, &[("household_address", "北京市朝阳区建国路1号")]);
    assert_eq!(field(&a, id, "review_status").as_deref(), Some("pending"));
    assert!(a.store.returned().unwrap().is_empty());
    a.sync();
    server
        .db
        .call_blocking(|c| {
            baylink_server::store::review::review(
                c,
                &r006,
                &id,
                &Verdict::Approve(String::new()),
                now + 1_000,
            )
        })
        .unwrap();
    let told = a.sync();
    assert_eq!(
        told.news
            .iter()
            .map(|n| n.what.as_str())
            .collect::<Vec<_>>(),
        ["approved"]
    );
    assert!(a.store.returned().unwrap().is_empty());
    assert_eq!(field(&a, id, "review_status").as_deref(), Some("approved"));
    // Another phone of the village edits her phone after this one did: this phone is told its
    // value was replaced, and by what; the other phone, which wrote it, is told nothing.
    a.edit(id, &[("phone", "13800138000")]);
    a.sync();
    let mut other = b;
    other.sync();
    other.edit(id, &[("phone", "13900139000")]);
    assert!(other.sync().news.is_empty());
    let told = a.sync();
    assert_eq!(
        told.news
            .iter()
            .map(|n| (
                n.what.as_str(),
                n.field.as_deref(),
                n.mine.as_deref(),
                n.theirs.as_deref()
            ))
            .collect::<Vec<_>>(),
        [(
            "replaced",
            Some("phone"),
            Some("13800138000"),
            Some("13900139000")
        )]
    );
    // An officer is no reviewer, and a return needs its reason.
    let o2 = server.caller("o2");
    let refused = server.db.call_blocking(|c| {
        baylink_server::store::review::review(c, &o2, &id, &Verdict::Approve(String::new()), now)
    });
    assert!(refused.is_err());
    let no_reason = server.db.call_blocking(|c| {
        baylink_server::store::review::review(c, &r006, &id, &Verdict::Return(" ".into()), now)
    });
    assert!(no_reason.is_err());
}

#[test]
fn a_restamped_edit_still_replaces_the_value_it_edited() {
    let (server, mut a, mut b) = two_phones(VILLAGE, VILLAGE);
    let real_now = real_now_ms();
    a.clock.set(real_now);
    b.clock.set(real_now);
    a.sync();
    // Three minutes fast: within the server's bound, so accepted as stamped.
    a.store.reset_clock_offset_for_tests();
    a.clock.set(real_now + 3 * 60_000);
    let id = capture(
        &mut a,
        EntityKind::Person,
        &[
            person("11010519491231002X", "王芳", VILLAGE),
            vec![("phone", "13800138000".into())],
        ]
        .concat(),
    );
    assert_eq!(a.sync().restamped, 0);
    // Then two days fast: the edit is refused, restamped, and must still win over the value it
    // replaced, although that value carries a later stamp than the corrected clock.
    a.store.reset_clock_offset_for_tests();
    a.clock.set(real_now + 2 * 86_400_000);
    a.edit(id, &[("phone", "13900139000")]);
    let report = a.sync();
    assert!(report.restamped > 0, "{report:?}");
    assert_eq!(
        server_value(&server, id, "phone").as_deref(),
        Some("\"13900139000\"")
    );
    b.sync();
    assert_eq!(field(&b, id, "phone").as_deref(), Some("13900139000"));
    a.sync();
    assert_eq!(a.states(), b.states());
}

#[test]
fn a_day_of_long_notes_reaches_a_server_with_a_small_body_limit_in_pushes_it_accepts() {
    // 40 disputes of 3,000 characters each (about 9 KB) are 360 KB of JSON, 400 changes: one
    // push by count. The server here takes bodies of 64 KiB at most.
    let server = Server::start_with(|config| config.max_body_bytes = 64 * 1024);
    server.add_officer("o1", VILLAGE);
    let mut a = Device::new("o1");
    a.login(&server, "o1");
    let mut disputes = Vec::new();
    for i in 0..40 {
        let description: String = format!("第{i}起：")
            .chars()
            .chain("邻里因噪音发生争执".chars().cycle())
            .take(2000)
            .collect();
        let outcome: String = "双方同意调解".chars().cycle().take(1000).collect();
        disputes.push(capture(
            &mut a,
            EntityKind::Dispute,
            &[
                ("village", VILLAGE.to_owned()),
                ("parties", "王芳;李强".to_owned()),
                ("kind", "neighbour".to_owned()),
                ("description", description),
                ("status", "mediated".to_owned()),
                ("outcome", outcome),
                ("reported_on", "2024-01-15".to_owned()),
            ],
        ));
    }
    let pending = a.store.pending_count().unwrap();
    let report = a.sync();
    assert_eq!(report.pushed, pending, "{report:?}");
    assert_eq!(a.store.pending_count().unwrap(), 0);
    let held = server.snapshot();
    for (i, id) in disputes.iter().enumerate() {
        let description = held.value(*id, "description").expect("on the server");
        assert!(
            description
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("第{i}起")) && d.chars().count() == 2000),
            "{description}"
        );
    }
}

#[test]
fn a_capture_withdrawn_before_its_first_sync_does_not_bring_the_evening_back() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let mut a = Device::new("o1");
    a.login(&server, "o1");
    a.sync();
    let mut ids = Vec::new();
    for i in 0..20 {
        let number = resident_id(&format!("4413031990020{:04}", 1000 + i));
        ids.push(capture(
            &mut a,
            EntityKind::Person,
            &person(&number, "王芳", VILLAGE),
        ));
    }
    // A mistyped capture, withdrawn (nothing of it was ever sent), then captured right.
    let wrong = ids.pop().expect("captured");
    assert_eq!(
        a.store.delete(wrong).expect("withdrawn"),
        mobile_core::Deletion::Withdrawn
    );
    let number = resident_id("44130319900203000");
    ids.push(capture(
        &mut a,
        EntityKind::Person,
        &person(&number, "王芳", VILLAGE),
    ));
    let report = a.sync();
    assert_eq!(report.pushed_records, 20, "{report:?}");
    assert_eq!(report.pulled, 0, "its own values sent back: {report:?}");
    assert_eq!(server.snapshot().value(wrong, "name"), None);
}

#[test]
fn a_new_password_signs_the_phone_out_and_it_signs_in_again_where_it_stood() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let mut a = Device::new("o1");
    a.login(&server, "o1");
    capture(
        &mut a,
        EntityKind::Person,
        &person("11010519491231002X", "王芳", VILLAGE),
    );
    a.sync();
    let hash = baylink_server::auth::password::hash("a-new-long-password").expect("hash");
    server
        .run(server.state.store.set_password(
            baylink_server::store::contract::Actor::Operator,
            "o1".into(),
            hash,
        ))
        .expect("password set");
    match a.try_sync() {
        Err(mobile_core::Error::Server {
            status: 401, code, ..
        }) => {
            assert_eq!(
                code, "invalid_token",
                "told its session ended, not of a theft"
            )
        }
        other => panic!("signed out by the new password: {other:?}"),
    }
    let session = a.store.session().expect("session").expect("kept");
    assert!(!session.signed_in, "the phone says it is signed out");
    assert!(
        mobile_core::sync::login(&mut a.store, &server.url, "o1", PASSWORD, "phone").is_err(),
        "the old password no longer signs in"
    );
    mobile_core::sync::login(
        &mut a.store,
        &server.url,
        "o1",
        "a-new-long-password",
        "phone",
    )
    .expect("the new one does");
    let report = a.sync();
    assert_eq!(report.pulled, 0, "it kept its place: {report:?}");
}
