//! What the station decides reaches the phones: a merged duplicate redirects on every device
//! with its links moved and its history kept; a person from a watched region raises one alert
//! when a phone syncs them, and the officer's phones are told of it once.

use baylink_domain::EntityKind;
use baylink_domain::watch::Rule;
use baylink_server::store::alerts::AlertsShown;
use baylink_server::store::{alerts, duplicates};
use baylink_tests::harness::{Device, Server, VILLAGE, real_now_ms, resident_id};

fn capture(device: &mut Device, kind: EntityKind, pairs: &[(&str, &str)]) -> uuid::Uuid {
    device.capture(kind, pairs)
}

fn persons(device: &Device) -> Vec<String> {
    device
        .store
        .list(EntityKind::Person, None, 100, 0)
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[test]
fn a_merged_duplicate_redirects_on_every_phone_and_keeps_its_history() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", VILLAGE);
    server.add_reviewer("r006", "441303006");
    server.add_reviewer("r007", "441303007");
    let mut a = Device::new("o1");
    a.login(&server, "o1");
    // The same woman twice: once right, once with a mistyped ID number (another valid one),
    // her phone and employer only on the second, where her room and car are registered.
    let kept = capture(
        &mut a,
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", &resident_id("44130219900101123")),
            ("name", "陈静"),
        ],
    );
    let duplicate = capture(
        &mut a,
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", &resident_id("44130219900101153")),
            ("name", "陈静"),
            ("phone", "13800138000"),
            ("employer", "澳头渔港"),
        ],
    );
    let house = capture(
        &mut a,
        EntityKind::House,
        &[
            ("village", VILLAGE),
            ("address", "澳头街道桥西路8号"),
            ("use", "rental"),
            ("status", "in_use"),
        ],
    );
    let residence = capture(
        &mut a,
        EntityKind::Residence,
        &[
            ("village", VILLAGE),
            ("person", &duplicate.to_string()),
            ("house", &house.to_string()),
            ("moved_in", "2026-03-01"),
            ("relation", "tenant"),
        ],
    );
    let car = capture(
        &mut a,
        EntityKind::Vehicle,
        &[
            ("village", VILLAGE),
            ("plate", "粤L12345"),
            ("vehicle_type", "car"),
            ("owner", &duplicate.to_string()),
        ],
    );
    a.sync();

    // The station sees the pair, and only that station may merge it.
    let r006 = server.caller("r006");
    let pairs = server
        .db
        .call_blocking(|c| duplicates::candidates(c, &r006.villages, 100).map(|p| p.pairs))
        .expect("candidates");
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert!(pairs[0].same_name_and_birth_date && !pairs[0].id_number_one_apart);
    let r007 = server.caller("r007");
    let refused = server.db.call_blocking(|c| {
        duplicates::merge(
            c,
            &r007,
            &duplicate.to_string(),
            &kept.to_string(),
            real_now_ms(),
        )
    });
    assert!(refused.is_err(), "another station's reviewer merged");
    let history_of = |id| {
        server
            .snapshot()
            .history
            .iter()
            .filter(|w| w.entity == id)
            .count()
    };
    let history_before = history_of(duplicate);
    let report = server
        .db
        .call_blocking(|c| {
            duplicates::merge(
                c,
                &r006,
                &duplicate.to_string(),
                &kept.to_string(),
                real_now_ms(),
            )
        })
        .expect("merged");
    assert_eq!(report.repointed, 2, "the residence and the car");
    assert!(
        report.filled.contains(&"phone".to_owned())
            && report.filled.contains(&"employer".to_owned())
    );
    let history_after = history_of(duplicate);
    assert_eq!(
        history_after,
        history_before + 1,
        "history kept, the redirect added"
    );
    let after = server
        .db
        .call_blocking(|c| duplicates::candidates(c, &r006.villages, 100).map(|p| p.pairs))
        .expect("candidates");
    assert!(after.is_empty(), "a merged pair is no longer proposed");

    // The capturing phone and a fresh one of the same village end in the same state; the
    // capturing one is told of the merge, the fresh one (which held neither) of nothing.
    let told = a.sync();
    let merged: Vec<_> = told
        .news
        .iter()
        .filter(|n| n.what == "merged_away")
        .map(|n| (n.record_id.clone(), n.merged_into.clone()))
        .collect();
    assert_eq!(merged, [(duplicate.to_string(), Some(kept.to_string()))]);
    let mut b = Device::new("o2");
    b.login(&server, "o2");
    assert!(b.sync().news.is_empty(), "a bootstrap is no news");
    for phone in [&a, &b] {
        assert_eq!(
            persons(phone),
            [kept.to_string()],
            "the duplicate left the lists"
        );
        let opened = phone.store.get(duplicate).expect("get").expect("found");
        assert_eq!(
            opened.summary.id,
            kept.to_string(),
            "opening the duplicate opens the kept record"
        );
        assert_eq!(
            opened.fields.get("employer").map(String::as_str),
            Some("澳头渔港")
        );
        let home = phone.store.get(residence).expect("get").expect("found");
        assert_eq!(home.fields.get("person"), Some(&kept.to_string()));
        let vehicle = phone.store.get(car).expect("get").expect("found");
        assert_eq!(vehicle.fields.get("owner"), Some(&kept.to_string()));
    }
    assert_eq!(a.states(), b.states(), "both phones converge");
    // An edit of the duplicate on a phone lands on the kept record.
    a.edit(duplicate, &[("occupation", "渔民")]);
    a.sync();
    b.sync();
    let kept_on_b = b.store.get(kept).expect("get").expect("found");
    assert_eq!(
        kept_on_b.fields.get("occupation").map(String::as_str),
        Some("渔民")
    );
}

#[test]
fn a_person_from_a_watched_region_synced_by_a_phone_raises_one_alert() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_reviewer("r006", "441303006");
    server.add_reviewer("r007", "441303007");
    server.add_account("admin", baylink_server::store::accounts::Role::Admin, &[]);
    let admin = server.caller("admin");
    let wuhan = Rule::region("420100").expect("a city");
    server
        .db
        .call_blocking(|c| alerts::add_rule(c, admin.account, &wuhan, "风险地区", real_now_ms()))
        .expect("rule added");
    let mut a = Device::new("o1");
    a.login(&server, "o1");
    let from_wuhan = capture(
        &mut a,
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", &resident_id("42010619850505123")),
            ("name", "刘洋"),
        ],
    );
    capture(
        &mut a,
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", &resident_id("44130219900101123")),
            ("name", "陈静"),
        ],
    );
    // The sync that raised it tells the officer, once, naming what matched but not the list.
    let told = a.sync();
    let watched = |report: &mobile_core::SyncReport| -> Vec<(String, Option<String>)> {
        report
            .news
            .iter()
            .filter(|n| n.what == "watched")
            .map(|n| (n.record_id.clone(), n.rule.clone()))
            .collect()
    };
    assert_eq!(
        watched(&told),
        [(from_wuhan.to_string(), Some("region".to_owned()))]
    );
    let news = told
        .news
        .iter()
        .find(|n| n.what == "watched")
        .expect("told");
    assert!(news.label.starts_with("刘洋"), "{news:?}");
    // A later edit of the same person syncs again but raises nothing new, and tells nothing.
    a.edit(from_wuhan, &[("occupation", "厨师")]);
    assert!(watched(&a.sync()).is_empty(), "told once");
    // The officer's new phone is told of the village's recent hits; an officer of another
    // station is told nothing.
    let mut fresh = Device::new("o1");
    fresh.login(&server, "o1");
    assert_eq!(
        watched(&fresh.sync()),
        [(from_wuhan.to_string(), Some("region".to_owned()))]
    );
    server.add_officer("o7", "441303007001");
    let mut elsewhere_phone = Device::new("o7");
    elsewhere_phone.login(&server, "o7");
    assert!(watched(&elsewhere_phone.sync()).is_empty());
    // A rule added later finds a person already synced: her officer's next sync tells of it.
    let chen = resident_id("44130219900101123");
    let numbered = Rule::id_number(&chen).expect("a number");
    server
        .db
        .call_blocking(|c| alerts::add_rule(c, admin.account, &numbered, "在逃", real_now_ms()))
        .expect("rule added");
    let told = a.sync();
    assert_eq!(watched(&told).len(), 1, "{:?}", told.news);
    assert_eq!(watched(&told)[0].1.as_deref(), Some("id_number"));
    assert!(
        !serde_json::to_string(&told).unwrap().contains("在逃"),
        "the rule's note stays on the server"
    );
    assert!(watched(&elsewhere_phone.sync()).is_empty());
    let r006 = server.caller("r006");
    let open = server
        .db
        .call_blocking(|c| alerts::list(c, &r006.villages, AlertsShown::Open, 100))
        .expect("alerts");
    assert_eq!(open.len(), 2, "{open:?}");
    let open: Vec<_> = open
        .into_iter()
        .filter(|a| a.rule.as_ref() == Some(&wuhan))
        .collect();
    assert_eq!(open[0].entity, from_wuhan.to_string());
    assert_eq!(open[0].officer.as_deref(), Some("o1"));
    assert_eq!(open[0].rule, Some(wuhan));
    let r007 = server.caller("r007");
    let elsewhere = server
        .db
        .call_blocking(|c| alerts::list(c, &r007.villages, AlertsShown::All, 100))
        .expect("alerts");
    assert!(
        elsewhere.is_empty(),
        "another station sees no alert on this person"
    );
    let id = open[0].id;
    assert!(
        server
            .db
            .call_blocking(|c| alerts::acknowledge(c, &r007, id, real_now_ms()))
            .is_err()
    );
    server
        .db
        .call_blocking(|c| alerts::acknowledge(c, &r006, id, real_now_ms()))
        .expect("acknowledged");
    let count = server
        .db
        .call_blocking(|c| baylink_server::store::dashboard::open_count(c, &r006.villages))
        .expect("count");
    assert_eq!(count, 1, "the rule added later still open");
    // An officer who deletes a watched person leaves her alert listed for the station: a
    // number registered to see whether it is watched, then deleted, is seen.
    let chen_id = persons(&a)
        .into_iter()
        .filter_map(|id| uuid::Uuid::parse_str(&id).ok())
        .find(|id| *id != from_wuhan)
        .expect("陈静");
    a.store.delete(chen_id).expect("deleted");
    a.sync();
    let listed = server
        .db
        .call_blocking(|c| alerts::list(c, &r006.villages, AlertsShown::All, 100))
        .expect("alerts");
    let hers = listed
        .iter()
        .find(|l| l.entity == chen_id.to_string())
        .expect("still listed");
    assert!(hers.deleted, "{hers:?}");
}
