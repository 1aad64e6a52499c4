//! Two server nodes over one database, as several `baylink-server` processes behind a load
//! balancer are: any node answers any request. Failed logins counted on one throttle the account
//! on the other; a token signed on one is taken by the other; a key added on one signs on both,
//! and the key before it, retired, signs no phone out (one whose village was taken meanwhile
//! starts over).

use baylink_domain::EntityKind;
use baylink_server::store::contract::Actor;
use baylink_tests::harness::{Device, PASSWORD, Server, VILLAGE, real_now_ms, resident_id};
use baylink_tests::raw_http::{Answer, post_json};
use serde_json::{Value, json};
use uuid::Uuid;

fn login(node: &Server, username: &str, password: &str) -> Answer {
    post_json(
        &node.url,
        "/api/v1/auth/login",
        None,
        &json!({"username": username, "password": password, "device_id": Uuid::new_v4(),
                "device_name": "phone"}),
    )
}

fn json_of(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body).unwrap_or_default()
}

fn pull(node: &Server, token: &str) -> Answer {
    post_json(
        &node.url,
        "/api/v1/sync/pull",
        Some(token),
        &json!({"protocol": 3, "limit": 10}),
    )
}

fn capture_person(phone: &mut Device, n: u32, name: &str) -> Uuid {
    let number = resident_id(&format!("4413031990010{:04}", 2000 + n));
    phone.capture(
        EntityKind::Person,
        &[("village", VILLAGE), ("id_number", &number), ("name", name)],
    )
}

#[test]
fn failed_logins_on_one_node_throttle_the_account_on_the_other() {
    let a = Server::start();
    a.add_officer("oa", VILLAGE);
    a.add_officer("ob", VILLAGE);
    let b = a.another_node();
    for _ in 0..5 {
        assert_eq!(login(&a, "oa", "wrong password").status, 401);
    }
    // The right password, on the other node, waits out the window like a sixth guess.
    let answer = login(&b, "oa", PASSWORD);
    assert_eq!(answer.status, 429, "{:?}", json_of(&answer));
    assert_eq!(login(&a, "oa", PASSWORD).status, 429);
    // Another officer behind the same address signs in on either.
    assert_eq!(login(&b, "ob", PASSWORD).status, 200);
    assert_eq!(login(&a, "ob", PASSWORD).status, 200);
    drop(b);
}

#[test]
fn a_key_added_on_one_node_signs_on_both_and_the_old_one_retired_signs_no_phone_out() {
    let a = Server::start();
    a.add_officer("oa", VILLAGE);
    a.add_officer("ob", VILLAGE);
    let b = a.another_node();
    let mut first = Device::new("oa");
    first.login(&a, "oa");
    let before = capture_person(&mut first, 1, "王一");
    // Signed in on one node, synced through the other.
    first.move_server(&b);
    first.sync();
    let old_token = json_of(&login(&a, "oa", PASSWORD))["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(pull(&b, &old_token).status, 200);

    // The operator adds a key through one node's store (as `baylink-server key add` does).
    let old = a.state.keys.current().signing_id().to_owned();
    let key = baylink_server::state::new_token_key(None);
    let new = key.id.clone();
    b.run(b.state.store.add_token_key(Actor::Operator, key))
        .expect("key added");
    // Node a reads the keys again (every 30 s it would) and signs with the new one; node b has
    // not read them, and takes a token naming the new key at once.
    a.reload_keys();
    assert_eq!(a.state.keys.current().signing_id(), new);
    assert_eq!(b.state.keys.current().signing_id(), old);
    let mut second = Device::new("ob");
    second.login(&a, "ob");
    second.move_server(&b);
    let theirs = capture_person(&mut second, 2, "李二");
    second.sync();
    assert_eq!(b.state.keys.current().signing_id(), new);
    // Tokens of the old key are still taken on both.
    assert_eq!(pull(&a, &old_token).status, 200);
    assert_eq!(pull(&b, &old_token).status, 200);

    // Retired once the new key has settled on every node (a minute on, as the store is told).
    let store = &b.state.store;
    let early = b.run(store.retire_token_key(Actor::Operator, old.clone(), real_now_ms(), false));
    assert!(early.is_err(), "the new key has not settled");
    let settled = real_now_ms() + baylink_server::store::token_keys::SETTLE_MS;
    b.run(store.retire_token_key(Actor::Operator, old, settled, false))
        .expect("old key retired");
    let retired_new = b.run(store.retire_token_key(Actor::Operator, new, settled, true));
    assert!(retired_new.is_err(), "the key that signs stays");
    for node in [&a, &b] {
        node.reload_keys();
        let answer = pull(node, &old_token);
        assert_eq!(answer.status, 401);
        assert_eq!(json_of(&answer)["error"]["code"], "invalid_token");
    }
    // The first phone's access token and cursor are the old key's: it refreshes, keeps its
    // place in the feed, and syncs on without signing in again.
    let after = capture_person(&mut first, 3, "王三");
    first.sync();
    let held = first.states();
    assert!(held.contains_key(&theirs), "the other phone's record came");
    let stored = b.snapshot();
    for id in [before, after, theirs] {
        assert!(stored.value(id, "name").is_some(), "{id} on the server");
    }
    let audited = a.query(|c| {
        c.query_row(
            "SELECT count(*) FROM audit WHERE action IN ('add_token_key', 'retire_token_key')",
            (),
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or_default()
    });
    assert_eq!(audited, 2);
    drop(b);
}

/// The station takes a village from an officer after a key rotation: the phone's cursor, signed
/// with the retired key, cannot say which of the village's records it holds, so the server
/// answers `cursor_expired`; the phone starts over and ends with exactly its village's records,
/// none of the one taken (not even one registered there since).
#[test]
fn a_phone_whose_cursor_key_was_retired_starts_over_when_a_village_is_taken() {
    const OTHER_VILLAGE: &str = "441303006002";
    let server = Server::start();
    server.add_officer("oa", VILLAGE);
    server.add_officer("ob", OTHER_VILLAGE);
    let assign = |villages: &[&str]| {
        let villages: Vec<String> = villages.iter().map(|v| (*v).to_owned()).collect();
        server
            .db
            .call_blocking(move |c| {
                baylink_server::store::accounts::assign_villages(
                    c,
                    Actor::Operator,
                    "oa",
                    &villages,
                    0,
                )
            })
            .unwrap();
    };
    assign(&[VILLAGE, OTHER_VILLAGE]);
    let mut phone = Device::new("oa");
    phone.login(&server, "oa");
    let mut other = Device::new("ob");
    other.login(&server, "ob");
    let capture_there = |other: &mut Device, n: u32, name: &str| {
        let number = resident_id(&format!("4413031990010{n:04}"));
        other.capture(
            EntityKind::Person,
            &[
                ("village", OTHER_VILLAGE),
                ("id_number", &number),
                ("name", name),
            ],
        )
    };
    let theirs = capture_there(&mut other, 1301, "李强");
    other.sync();
    let mine = capture_person(&mut phone, 1, "王一");
    phone.sync();
    assert!(
        phone.store.get(theirs).unwrap().is_some(),
        "the other village's record came"
    );

    // A new key signs, the old one is retired: the phone's cursor is the old key's.
    let old = server.state.keys.current().signing_id().to_owned();
    let key = baylink_server::state::new_token_key(None);
    server
        .run(server.state.store.add_token_key(Actor::Operator, key))
        .expect("key added");
    server.reload_keys();
    let settled = real_now_ms() + baylink_server::store::token_keys::SETTLE_MS;
    server
        .run(
            server
                .state
                .store
                .retire_token_key(Actor::Operator, old, settled, false),
        )
        .expect("old key retired");
    server.reload_keys();
    // The other village is taken from the officer, and a person registered there since.
    assign(&[VILLAGE]);
    let later = capture_there(&mut other, 1302, "张伟");
    other.sync();

    let report = phone.sync();
    assert!(report.started_over, "{report:?}");
    assert!(
        phone.store.get(mine).unwrap().is_some(),
        "its own village's record stays"
    );
    for id in [theirs, later] {
        assert!(
            phone.store.get(id).unwrap().is_none(),
            "{id} left on the phone"
        );
    }
    // And the next sync is an ordinary one.
    assert!(!phone.sync().started_over);
}
