//! The findings of a hostile insider (an officer with a valid account, curl and a few scripts),
//! each sent over HTTP to a real server on loopback and refused: writing or moving records of
//! other villages, reading them through a cursor or a reference, taking over another officer's
//! phone, silencing a phone's changes with a counter, guessing passwords in a burst, filling
//! the server's memory with usernames, forging authorship, review and derived fields. The
//! generated counterpart is `server/tests/insider.rs`.

use baylink_server::store::alerts::AlertsShown;
use baylink_tests::harness::{Device, PASSWORD, Server, VILLAGE};
use baylink_tests::raw_http::{Answer, send};
use serde_json::{Value, json};
use uuid::Uuid;

/// A village of the same station (澳头 桥东).
const NEIGHBOUR: &str = "441303006002";
/// A village of another station (霞涌).
const ELSEWHERE: &str = "441303007001";

fn post(server: &Server, path: &str, token: Option<&str>, body: &Value) -> Answer {
    baylink_tests::raw_http::post_json(&server.url, path, token, body)
}

fn login_answer(server: &Server, username: &str, password: &str, device: Uuid) -> Answer {
    login_with_key(server, username, password, device, None)
}

fn login_with_key(
    server: &Server,
    username: &str,
    password: &str,
    device: Uuid,
    key: Option<&str>,
) -> Answer {
    post(
        server,
        "/api/v1/auth/login",
        None,
        &json!({"username": username, "password": password, "device_id": device,
                "device_name": "phone", "device_key": key}),
    )
}

/// A signed-in device: its id, token and next counter.
struct Phone {
    device: Uuid,
    token: String,
    counter: u64,
}

impl Phone {
    fn login(server: &Server, username: &str) -> Phone {
        let device = Uuid::new_v4();
        let answer = login_answer(server, username, PASSWORD, device);
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        Phone {
            device,
            token: answer.json()["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            counter: 0,
        }
    }

    /// One change as this device would send it (its own stamp, the next counter).
    fn change(&mut self, kind: &str, entity: Uuid, field: &str, value: &Value) -> Value {
        self.counter += 1;
        let now = baylink_tests::harness::real_now_ms();
        json!({
            "id": {"device": self.device, "counter": self.counter},
            "kind": kind, "entity": entity, "field": field, "value": value,
            "stamp": format!("{:016x}@{}", (now << 16) + self.counter, self.device),
        })
    }

    /// A whole record's changes.
    fn record(&mut self, kind: &str, entity: Uuid, fields: &[(&str, Value)]) -> Vec<Value> {
        fields
            .iter()
            .map(|(f, v)| self.change(kind, entity, f, v))
            .collect()
    }

    /// Pushes changes; the result of each (status and code).
    fn push(&self, server: &Server, changes: &[Value]) -> Vec<(String, Option<String>)> {
        let answer = post(
            server,
            "/api/v1/sync/push",
            Some(&self.token),
            &json!({"protocol": 2, "device": self.device, "changes": changes}),
        );
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        answer.json()["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r["status"].as_str().unwrap_or_default().to_owned(),
                    r["code"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    fn pull(&self, server: &Server, cursor: Option<&str>) -> Answer {
        let mut body = json!({"protocol": 2, "limit": 1000});
        if let Some(cursor) = cursor {
            body["cursor"] = json!(cursor);
        }
        post(server, "/api/v1/sync/pull", Some(&self.token), &body)
    }
}

fn house(village: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("village", json!(village)),
        ("address", json!("一巷1号")),
        ("use", json!("rental")),
        ("status", json!("in_use")),
    ]
}

fn person(village: &str, id_number: &str, name: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("village", json!(village)),
        ("id_type", json!("resident_id")),
        ("id_number", json!(id_number)),
        ("name", json!(name)),
    ]
}

/// The id a phone derives for a person from her ID number: anyone who knows the number knows it.
fn person_id(id_number: &str) -> Uuid {
    let fields = baylink_domain::Fields::from([
        ("id_type".to_owned(), json!("resident_id")),
        ("id_number".to_owned(), json!(id_number)),
    ]);
    baylink_domain::natural_id(baylink_domain::EntityKind::Person, &fields).unwrap_or_default()
}

fn stored(server: &Server, entity: Uuid, field: &str) -> Option<String> {
    server
        .snapshot()
        .value(entity, field)
        .map(|v| v.to_string())
}

fn all_refused(results: &[(String, Option<String>)]) -> bool {
    !results.is_empty() && results.iter().all(|(status, _)| status == "refused")
}

/// Three officers: the attacker's village, a village of the same station, one of another.
fn world() -> (Server, Phone, Phone, Phone) {
    let server = Server::start();
    server.add_officer("oa", VILLAGE);
    server.add_officer("ob", NEIGHBOUR);
    server.add_officer("oc", ELSEWHERE);
    let (a, b, c) = (
        Phone::login(&server, "oa"),
        Phone::login(&server, "ob"),
        Phone::login(&server, "oc"),
    );
    (server, a, b, c)
}

#[test]
fn records_of_other_villages_cannot_be_written_moved_or_deleted() {
    let (server, mut a, mut b, mut c) = world();
    let number = baylink_domain::synthetic::resident_id(7);
    let her = person_id(&number);
    let changes = b.record("person", her, &person(NEIGHBOUR, &number, "王芳"));
    assert!(
        b.push(&server, &changes)
            .iter()
            .all(|(s, _)| s == "accepted")
    );
    let their_house = Uuid::now_v7();
    let changes = c.record("house", their_house, &house(ELSEWHERE));
    c.push(&server, &changes);
    let plate = json!("粤L12345");
    let car = baylink_domain::natural_id(
        baylink_domain::EntityKind::Vehicle,
        &baylink_domain::Fields::from([("plate".to_owned(), plate.clone())]),
    )
    .unwrap_or_default();
    let changes = c.record(
        "vehicle",
        car,
        &[
            ("village", json!(ELSEWHERE)),
            ("plate", plate),
            ("vehicle_type", json!("car")),
        ],
    );
    c.push(&server, &changes);

    // Renaming and deleting her, riding on a village change with an ancient stamp.
    let mut forged = vec![
        a.change("person", her, "name", &json!("张三")),
        a.change("person", her, "deleted", &json!(true)),
    ];
    let mut village = a.change("person", her, "village", &json!(VILLAGE));
    village["stamp"] = json!(format!("{:016x}@{}", 1u64 << 16, a.device));
    forged.push(village);
    assert!(all_refused(&a.push(&server, &forged)));
    assert_eq!(stored(&server, her, "name").as_deref(), Some("\"王芳\""));
    assert!(matches!(
        stored(&server, her, "deleted").as_deref(),
        None | Some("null")
    ));
    // Deleting a house of another station by claiming it is a person.
    let claim = [
        a.change("person", their_house, "village", &json!(VILLAGE)),
        a.change("person", their_house, "deleted", &json!(true)),
    ];
    assert!(all_refused(&a.push(&server, &claim)));
    assert_eq!(stored(&server, their_house, "deleted"), None);
    // Moving a vehicle of another station into the attacker's village by its plate alone.
    let steal = [a.change("vehicle", car, "village", &json!(VILLAGE))];
    assert!(all_refused(&a.push(&server, &steal)));
    assert_eq!(
        stored(&server, car, "village"),
        Some(format!("\"{ELSEWHERE}\""))
    );
}

#[test]
fn references_bring_in_only_a_person_who_moves_into_the_callers_village() {
    let (server, mut a, mut b, mut c) = world();
    let number = baylink_domain::synthetic::resident_id(8);
    let her = person_id(&number);
    let changes = b.record("person", her, &person(NEIGHBOUR, &number, "王芳"));
    b.push(&server, &changes);
    let their_house = Uuid::now_v7();
    let changes = c.record("house", their_house, &house(ELSEWHERE));
    c.push(&server, &changes);
    let mine = Uuid::now_v7();
    let changes = a.record("house", mine, &house(VILLAGE));
    a.push(&server, &changes);
    // Each with the id a phone derives for it, so only the reference decides.
    let mut residence = |person: Uuid, house: Uuid| {
        let (id, fields) = stay(person, house, "2026-01-01");
        a.record("residence", id, &fields)
    };
    // A residence naming a house as its person, no one, or a house of another station: refused
    // whole.
    let wrong_kind = residence(their_house, mine);
    let none = residence(Uuid::now_v7(), mine);
    let their = residence(her, their_house);
    for changes in [wrong_kind, none, their] {
        assert!(all_refused(&a.push(&server, &changes)));
    }
    let first = a.pull(&server, None).json();
    let sent: Vec<&str> = first["records"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["entity"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !sent.contains(&their_house.to_string().as_str()),
        "{sent:?}"
    );
    assert!(!sent.contains(&her.to_string().as_str()));
    // She moves into the attacker's own house: she arrives, her home village stays hers.
    let (id, fields) = stay(her, mine, "2026-01-01");
    let moves_in = a.record("residence", id, &fields);
    assert!(
        a.push(&server, &moves_in)
            .iter()
            .all(|(s, _)| s == "accepted")
    );
    let again = a.pull(&server, first["next_cursor"].as_str()).json();
    let sent: Vec<&str> = again["records"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["entity"].as_str()).collect())
        .unwrap_or_default();
    assert!(sent.contains(&her.to_string().as_str()), "{again}");
    assert_eq!(
        stored(&server, her, "village"),
        Some(format!("\"{NEIGHBOUR}\""))
    );
}

#[test]
fn a_cursor_cannot_widen_what_a_pull_reads() {
    let (server, a, mut b, _) = world();
    let theirs = Uuid::now_v7();
    let changes = b.record("house", theirs, &house(NEIGHBOUR));
    b.push(&server, &changes);
    let first = a.pull(&server, None).json();
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    let (body, mac) = cursor.rsplit_once('~').unwrap_or((&cursor, ""));
    // Naming the neighbour's village in a signed cursor breaks its signature.
    let widened = format!("{body}.{NEIGHBOUR}~{mac}");
    let answer = a.pull(&server, Some(&widened));
    assert_eq!(answer.status, 400, "{:?}", answer.json());
    // An unsigned cursor (an earlier server's form) keeps its position and names nothing.
    let unsigned = format!("s0:{VILLAGE}.{NEIGHBOUR}");
    let answer = a.pull(&server, Some(&unsigned));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["purged"].as_array().map_or(0, Vec::len), 0);
    // Another device's cursor does not open for this one.
    let b_cursor = b.pull(&server, None).json()["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(a.pull(&server, Some(&b_cursor)).status, 400);
}

#[test]
fn a_device_belongs_to_one_account_and_its_counter_cannot_be_pushed_ahead() {
    let (server, mut a, b, _) = world();
    // Taking over the neighbour's phone by logging in with its (public) device id: refused,
    // and the phone still belongs to its officer.
    let answer = login_answer(&server, "oa", PASSWORD, b.device);
    assert_eq!(answer.status, 409, "{:?}", answer.json());
    let owner = server.query(|c| {
        baylink_server::store::devices::device(c, &b.device.to_string())
            .ok()
            .flatten()
            .map(|d| d.account)
    });
    let ob = server.caller("ob").account;
    assert_eq!(owner, Some(ob));
    // A revoked device id at another account's login: refused as well.
    let store = server.state.store.clone();
    server
        .run(store.revoke_device(baylink_server::store::contract::Actor::Operator, b.device))
        .expect("revoked");
    assert_eq!(login_answer(&server, "oa", PASSWORD, b.device).status, 409);
    // A counter at 2^63-1 is refused and does not become the device's last one: its next
    // honest change is applied, not taken for a replay.
    let mine = Uuid::now_v7();
    let mut far = a.record("house", mine, &house(VILLAGE));
    far[0]["id"]["counter"] = json!(i64::MAX);
    let results = a.push(&server, &far);
    assert_eq!(results[0].1.as_deref(), Some("invalid"));
    let later = a.record("house", Uuid::now_v7(), &house(VILLAGE));
    assert!(a.push(&server, &later).iter().all(|(s, _)| s == "accepted"));
    // A stamp naming another device (author impersonation): refused.
    let mut impersonated = a.record("house", Uuid::now_v7(), &house(VILLAGE));
    for change in &mut impersonated {
        let stamp = change["stamp"].as_str().unwrap_or_default().to_owned();
        let hlc = stamp.split('@').next().unwrap_or_default().to_owned();
        change["stamp"] = json!(format!("{hlc}@{}", b.device));
    }
    assert!(all_refused(&a.push(&server, &impersonated)));
}

#[test]
fn a_burst_of_guesses_is_throttled_and_long_usernames_leave_nothing_behind() {
    let server = Server::start();
    server.add_officer("oa", VILLAGE);
    // Thirty concurrent wrong passwords for one account: at most five are checked.
    let url = server.url.clone();
    let answers: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|_| {
                let url = url.clone();
                s.spawn(move || {
                    let body =
                        json!({"username": "oa", "password": "guess", "device_id": Uuid::new_v4()});
                    send(
                        &url,
                        "POST",
                        "/api/v1/auth/login",
                        &[("Content-Type", "application/json")],
                        body.to_string().as_bytes(),
                        None,
                    )
                    .status
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let checked = answers.iter().filter(|s| **s == 401).count();
    assert!(checked <= 5, "{checked} guesses checked: {answers:?}");
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 429),
        "{answers:?}"
    );
    // Huge usernames are refused before the throttle or the log keep anything of them.
    let remembered = || {
        server
            .db
            .read_blocking(baylink_server::store::logins::keys_remembered)
            .expect("login attempts")
    };
    let before = remembered();
    for n in 0..20 {
        let name = format!("{n}{}\n2026-01-01 INFO forged line", "x".repeat(10_000));
        let answer = login_answer(&server, &name, "pw", Uuid::new_v4());
        assert_eq!(answer.status, 400);
    }
    // Past a sign-in's body limit (64 KiB), refused before the body is read whole.
    let name = "x".repeat(100_000);
    assert_eq!(
        login_answer(&server, &name, "pw", Uuid::new_v4()).status,
        413
    );
    assert_eq!(remembered(), before);
}

#[test]
fn guesses_from_elsewhere_never_lock_an_officer_out_of_a_phone_they_registered() {
    let server = Server::start();
    server.add_officer("oa", VILLAGE);
    server.add_officer("ob", VILLAGE);
    server.add_officer("oc", VILLAGE);
    let key = |a: &Answer| a.json()["device_key"].as_str().unwrap().to_owned();
    // Three devices sign in before anyone guesses (guesses from this address lock it too).
    let (device, third) = (Uuid::new_v4(), Uuid::new_v4());
    let key1 = key(&login_answer(&server, "ob", PASSWORD, device));
    let key3 = key(&login_answer(&server, "oc", PASSWORD, third));
    // oa's phone signs in and out: it keeps the device key the server gave it.
    let mut phone = Device::new("oa");
    phone.login(&server, "oa");
    mobile_core::sync::logout(&mut phone.store).unwrap();
    // Someone guesses oa's password from this same address until the account is locked.
    for _ in 0..6 {
        login_answer(&server, "oa", "guess", Uuid::new_v4());
    }
    let elsewhere = login_answer(&server, "oa", PASSWORD, Uuid::new_v4());
    assert_eq!(elsewhere.status, 429, "a device oa never used waits");
    // A colleague behind the same address signs a new phone in: the address has a higher limit.
    server.add_officer("od", VILLAGE);
    let colleague = login_answer(&server, "od", PASSWORD, Uuid::new_v4());
    assert_eq!(colleague.status, 200, "{:?}", colleague.json());
    // oa signs in on the phone she registered, and syncs.
    phone.login(&server, "oa");
    phone.sync();

    // Over the wire: the key proves one device of one account, and only the last one given.
    for _ in 0..6 {
        login_answer(&server, "ob", "guess", Uuid::new_v4());
    }
    let no_key = login_answer(&server, "ob", PASSWORD, device);
    assert_eq!(no_key.status, 429, "the device without its key");
    let other = login_with_key(&server, "ob", PASSWORD, Uuid::new_v4(), Some(&key1));
    assert_eq!(other.status, 429, "the key on another device");
    let oa_with_it = login_with_key(&server, "oa", "guess", device, Some(&key1));
    assert_eq!(oa_with_it.status, 429, "the key for another account");
    let second = login_with_key(&server, "ob", PASSWORD, device, Some(&key1));
    assert_eq!(second.status, 200, "{:?}", second.json());
    assert!(
        second.json()["device_key"].is_null(),
        "a proven device keeps its key"
    );
    // The proven device has a throttle of its own: its own wrong guesses lock it too, and a
    // burst of them gets no more checked than an account's.
    let url = server.url.clone();
    let answers: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|_| {
                let (url, key1) = (url.clone(), key1.clone());
                s.spawn(move || {
                    let body = json!({"username": "ob", "password": "guess", "device_id": device,
                                      "device_key": key1});
                    send(
                        &url,
                        "POST",
                        "/api/v1/auth/login",
                        &[("Content-Type", "application/json")],
                        body.to_string().as_bytes(),
                        None,
                    )
                    .status
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let checked = answers.iter().filter(|s| **s == 401).count();
    assert!(checked <= 5, "{checked} guesses checked: {answers:?}");
    let after = login_with_key(&server, "ob", PASSWORD, device, Some(&key1));
    assert_eq!(after.status, 429);
    // A revoked device proves nothing.
    let store = server.state.store.clone();
    server
        .run(store.revoke_device(baylink_server::store::contract::Actor::Operator, third))
        .unwrap();
    for _ in 0..6 {
        login_answer(&server, "oc", "guess", Uuid::new_v4());
    }
    let revoked = login_with_key(&server, "oc", PASSWORD, third, Some(&key3));
    assert_eq!(revoked.status, 429);
}

#[test]
fn authorship_review_and_derived_fields_are_the_servers() {
    let (server, mut a, _, _) = world();
    let number = baylink_domain::synthetic::resident_id(9);
    let her = person_id(&number);
    let mut changes = a.record("person", her, &person(VILLAGE, &number, "王芳"));
    changes.extend(a.record(
        "person",
        her,
        &[
            ("created_by", json!("x".repeat(7_000))),
            ("created_at", json!("2001-01-01 00:00:00")),
            ("review_status", json!("approved")),
        ],
    ));
    let results = a.push(&server, &changes);
    assert!(results.iter().all(|(s, _)| s == "accepted"), "{results:?}");
    assert_eq!(
        stored(&server, her, "created_by").as_deref(),
        Some("\"oa\"")
    );
    assert_ne!(
        stored(&server, her, "created_at").as_deref(),
        Some("\"2001-01-01 00:00:00\"")
    );
    assert_eq!(
        stored(&server, her, "review_status").as_deref(),
        Some("\"pending\"")
    );
    // Back-dated beyond the 30 days a phone is believed: held at the window's edge.
    let edge = stored(&server, her, "created_at").unwrap_or_default();
    let edge_ms = baylink_domain::date::unix_ms_from_datetime(
        edge.trim_matches('"'),
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    )
    .expect("a date-time");
    let window = baylink_tests::harness::real_now_ms() as i64 - 30 * 86_400_000;
    assert!((edge_ms - window).abs() < 60_000, "{edge}");
    // A capture time earlier than its stamps, within the window, is when she was captured (a
    // refused capture goes again with a new stamp once corrected); one later than its stamps
    // (ahead of when it was sent) is not.
    let when = |offset_ms: i64| {
        baylink_domain::date::datetime_from_unix_ms(
            baylink_tests::harness::real_now_ms() as i64 + offset_ms,
            baylink_domain::date::CHINA_OFFSET_MINUTES,
        )
    };
    for (n, offset, kept) in [(10, -7_200_000, true), (11, 7_200_000, false)] {
        let number = baylink_domain::synthetic::resident_id(n);
        let id = person_id(&number);
        let claimed = when(offset);
        let mut changes = a.record("person", id, &person(VILLAGE, &number, "李明"));
        changes.extend(a.record("person", id, &[("created_at", json!(claimed))]));
        let results = a.push(&server, &changes);
        assert!(results.iter().all(|(s, _)| s == "accepted"), "{results:?}");
        let at = stored(&server, id, "created_at").unwrap_or_default();
        assert_eq!(at == format!("\"{claimed}\""), kept, "{at} for {claimed}");
        assert!(at.trim_matches('"') <= when(1_000).as_str(), "{at}");
    }
    // Review comment and merge redirect: the console's alone.
    let console_only = [
        a.change("person", her, "review_comment", &json!("ok")),
        a.change(
            "person",
            her,
            "merged_into",
            &json!(Uuid::now_v7().to_string()),
        ),
    ];
    let results = a.push(&server, &console_only);
    assert!(
        results
            .iter()
            .all(|(_, code)| code.as_deref() == Some("read_only"))
    );
    // A forged origin (to keep her off a watch list of her region), a hidden character in a
    // passport number, control characters in a name: refused.
    let origin = [a.change("person", her, "origin_code", &json!("440000"))];
    assert!(all_refused(&a.push(&server, &origin)));
    let other = Uuid::now_v7();
    let mut hidden = a.record(
        "person",
        other,
        &[
            ("village", json!(VILLAGE)),
            ("id_type", json!("passport")),
            ("id_number", json!("E1234\u{200B}5678")),
            ("name", json!("李明")),
        ],
    );
    hidden.push(a.change("person", her, "name", &json!("王\u{202E}芳\u{1b}[2J")));
    assert!(all_refused(&a.push(&server, &hidden)));
    assert_eq!(stored(&server, her, "name").as_deref(), Some("\"王芳\""));
    // Prose keeps its line breaks and Chinese punctuation; a NUL in it is refused.
    let note = "租户自述：月租800元；\n房东称已签合同（一年）。";
    let written = [a.change("person", her, "notes", &json!(note))];
    let results = a.push(&server, &written);
    assert_eq!(results[0].0, "accepted", "{results:?}");
    assert_eq!(stored(&server, her, "notes"), Some(json!(note).to_string()));
    let nul = [a.change("person", her, "notes", &json!("行一\u{0}行二"))];
    assert!(all_refused(&a.push(&server, &nul)));
}

#[test]
fn signing_out_or_disabling_ends_access_at_once_and_enabling_revives_nothing() {
    let (server, a, _, c) = world();
    assert_eq!(a.pull(&server, None).status, 200);
    let answer = post(&server, "/api/v1/auth/logout", Some(&a.token), &json!({}));
    assert_eq!(answer.status, 204);
    // The access token issued before the logout is dead now, not in fifteen minutes.
    assert_eq!(a.pull(&server, None).status, 401);
    // Disabled, then enabled again: the tokens of before stay dead.
    use baylink_server::store::contract::Access;
    let store = server.state.store.clone();
    let set = |access| {
        server.run(store.set_access(
            baylink_server::store::contract::Actor::Operator,
            "oc".into(),
            access,
        ))
    };
    set(Access::Disabled).expect("disabled");
    assert_eq!(c.pull(&server, None).status, 401);
    set(Access::Enabled).expect("enabled");
    let answer = c.pull(&server, None);
    assert_eq!(answer.status, 401, "{:?}", answer.json());
    // A new sign-in works as ever.
    let again = Phone::login(&server, "oc");
    assert_eq!(again.pull(&server, None).status, 200);
}

/// A residence moving `person` into `house` of the attacker's village, with the id a phone
/// derives for it.
fn stay(person: Uuid, house: Uuid, moved_in: &str) -> (Uuid, Vec<(&'static str, Value)>) {
    let fields = vec![
        ("village", json!(VILLAGE)),
        ("person", json!(person.to_string())),
        ("house", json!(house.to_string())),
        ("moved_in", json!(moved_in)),
        ("relation", json!("tenant")),
    ];
    let values: baylink_domain::Fields = fields
        .iter()
        .map(|(f, v)| ((*f).to_owned(), v.clone()))
        .collect();
    let id = baylink_domain::natural_id(baylink_domain::EntityKind::Residence, &values)
        .unwrap_or_default();
    (id, fields)
}

#[test]
fn a_move_in_undone_or_lost_grants_nothing_and_a_real_one_leaves_her_home_village_hers() {
    let (server, mut a, _, mut c) = world();
    let number = baylink_domain::synthetic::resident_id(11);
    let her = person_id(&number);
    let changes = c.record("person", her, &person(ELSEWHERE, &number, "王芳"));
    c.push(&server, &changes);
    let mine = Uuid::now_v7();
    let changes = a.record("house", mine, &house(VILLAGE));
    a.push(&server, &changes);
    let rewrite = |a: &mut Phone| {
        vec![
            a.change("person", her, "name", &json!("改名")),
            a.change("person", her, "deleted", &json!(true)),
            a.change("person", her, "village", &json!(VILLAGE)),
            a.change("person", her, "id_type", &json!("passport")),
            a.change("person", her, "id_number", &json!("E12345678")),
        ]
    };
    // A stay that names her and is closed (or deleted) in the same push: no move-in.
    for closing in [("moved_out", json!("2026-01-02")), ("deleted", json!(true))] {
        let (id, fields) = stay(her, mine, "2026-01-01");
        let mut changes = a.record("residence", id, &fields);
        changes.push(a.change("residence", id, closing.0, &closing.1));
        changes.extend(rewrite(&mut a));
        let results = a.push(&server, &changes);
        assert!(
            results[7..].iter().all(|(s, _)| s == "refused"),
            "{results:?}"
        );
        assert_eq!(stored(&server, her, "name").as_deref(), Some("\"王芳\""));
    }
    // Naming her with a stamp that loses the merge: no move-in either.
    let (id, _) = stay(her, mine, "2026-02-01");
    let mut ancient = a.change("residence", id, "person", &json!(her.to_string()));
    ancient["stamp"] = json!(format!("{:016x}@{}", 1u64 << 16, a.device));
    let mut changes = vec![ancient];
    changes.extend(rewrite(&mut a));
    assert!(all_refused(&a.push(&server, &changes)));
    assert_eq!(stored(&server, her, "name").as_deref(), Some("\"王芳\""));
    // A real move-in: she is in reach, but who she is, where she belongs and whether she exists
    // stay with her home village (the server keeps its values).
    let (id, fields) = stay(her, mine, "2026-03-01");
    let mut changes = a.record("residence", id, &fields);
    changes.extend(rewrite(&mut a));
    let results = a.push(&server, &changes);
    assert!(results.iter().all(|(s, _)| s == "accepted"), "{results:?}");
    assert_eq!(stored(&server, her, "name").as_deref(), Some("\"改名\""));
    assert_eq!(
        stored(&server, her, "village"),
        Some(format!("\"{ELSEWHERE}\""))
    );
    // Never silent: the reviewers of both stations are told she moved in (and only this once:
    // the move-ins undone or lost above told no one).
    server.add_reviewer("r006", &VILLAGE[..9]);
    server.add_reviewer("r007", &ELSEWHERE[..9]);
    for reviewer in ["r006", "r007"] {
        let villages = server.caller(reviewer).villages;
        let notices: Vec<Option<String>> = server.query(|c| {
            baylink_server::store::alerts::list(c, &villages, AlertsShown::Open, 50)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.entity == her.to_string())
                .map(|a| a.moved_into)
                .collect()
        });
        assert_eq!(notices, [Some(VILLAGE.to_owned())], "{reviewer}");
    }
    assert!(matches!(
        stored(&server, her, "deleted").as_deref(),
        None | Some("null")
    ));
    assert_eq!(
        stored(&server, her, "id_number"),
        Some(format!("\"{number}\""))
    );
    // Later pushes, with her in reach, cannot take her either.
    let again = rewrite(&mut a);
    a.push(&server, &again);
    assert_eq!(
        stored(&server, her, "village"),
        Some(format!("\"{ELSEWHERE}\""))
    );
    assert!(matches!(
        stored(&server, her, "deleted").as_deref(),
        None | Some("null")
    ));
}

#[test]
fn an_id_is_the_one_its_natural_key_gives_and_a_resident_number_is_a_resident_id() {
    let (server, mut a, _, mut c) = world();
    let (real, other) = (
        baylink_domain::synthetic::resident_id(21),
        baylink_domain::synthetic::resident_id(22),
    );
    // Squatting: the id of one number holding another.
    let squat = a.record("person", person_id(&real), &person(VILLAGE, &other, "占位"));
    assert!(all_refused(&a.push(&server, &squat)));
    let changes = c.record(
        "person",
        person_id(&real),
        &person(ELSEWHERE, &real, "王芳"),
    );
    assert!(
        c.push(&server, &changes)
            .iter()
            .all(|(s, _)| s == "accepted")
    );
    // A resident number entered as another document (which would escape region watch rules).
    let number = baylink_domain::synthetic::resident_id(23);
    let mut fields = person(VILLAGE, &number, "李明");
    fields[1] = ("id_type", json!("other"));
    let values = baylink_domain::Fields::from([
        ("id_type".to_owned(), json!("other")),
        ("id_number".to_owned(), json!(number)),
    ]);
    let id =
        baylink_domain::natural_id(baylink_domain::EntityKind::Person, &values).unwrap_or_default();
    let changes = a.record("person", id, &fields);
    assert!(all_refused(&a.push(&server, &changes)));
    // Blank-looking characters in a name: refused.
    let number = baylink_domain::synthetic::resident_id(24);
    let changes = a.record(
        "person",
        person_id(&number),
        &person(VILLAGE, &number, "李\u{3164}明"),
    );
    assert!(all_refused(&a.push(&server, &changes)));
}

/// Live records of a kind holding `text` in `column` of the summary.
fn holders(server: &Server, column: &'static str, text: &str) -> i64 {
    let text = text.to_owned();
    server.query(move |c| {
        c.query_row(
            &format!("SELECT COUNT(*) FROM summary WHERE {column} = ?1 AND deleted = 0"),
            [text],
            |r| r.get(0),
        )
        .unwrap_or(0)
    })
}

#[test]
fn no_key_ends_on_two_live_records_by_document_type_plate_kind_address_code_or_one_push() {
    let (server, mut a, _, mut c) = world();
    let accepted = |results: &[(String, Option<String>)]| {
        results.iter().all(|(status, _)| status == "accepted")
    };
    let nid = |kind, fields: &[(&str, Value)]| {
        let values: baylink_domain::Fields = fields
            .iter()
            .map(|(f, v)| ((*f).to_owned(), v.clone()))
            .collect();
        baylink_domain::natural_id(kind, &values).unwrap_or_default()
    };
    use baylink_domain::EntityKind::{House, Person, Vehicle};
    let foreign = |village: &str, id_type: &str, number: &str| {
        vec![
            ("village", json!(village)),
            ("id_type", json!(id_type)),
            ("id_number", json!(number)),
            ("name", json!("陈明")),
        ]
    };
    // 1. A document type changed onto another village's (other, E93000001).
    let theirs = foreign(ELSEWHERE, "other", "E93000001");
    let changes = c.record("person", nid(Person, &theirs[1..3]), &theirs);
    assert!(accepted(&c.push(&server, &changes)));
    let mine = foreign(VILLAGE, "passport", "E93000001");
    let me = nid(Person, &mine[1..3]);
    let changes = a.record("person", me, &mine);
    assert!(accepted(&a.push(&server, &changes)));
    let retyped = [a.change("person", me, "id_type", &json!("other"))];
    assert!(all_refused(&a.push(&server, &retyped)));
    assert_eq!(
        stored(&server, me, "id_type").as_deref(),
        Some("\"passport\"")
    );

    // 2. Two records given one free number in one push: the second is refused.
    let (p1, p2) = (
        foreign(VILLAGE, "passport", "E91000001"),
        foreign(VILLAGE, "passport", "E91000002"),
    );
    let (id1, id2) = (nid(Person, &p1[1..3]), nid(Person, &p2[1..3]));
    let mut changes = a.record("person", id1, &p1);
    changes.extend(a.record("person", id2, &p2));
    assert!(accepted(&a.push(&server, &changes)));
    let both = [
        a.change("person", id1, "id_number", &json!("E91000009")),
        a.change("person", id2, "id_number", &json!("E91000009")),
    ];
    let results = a.push(&server, &both);
    assert_eq!(
        results.iter().filter(|(s, _)| s == "accepted").count(),
        1,
        "{results:?}"
    );
    assert_eq!(holders(&server, "id_number", "E91000009"), 1);

    // 3. Address codes: one house each.
    let code = |house: &mut Vec<(&'static str, Value)>, code: &str| {
        house.push(("address_code", json!(code)));
    };
    let mut h1 = house(VILLAGE);
    code(&mut h1, "HK0001");
    let changes = a.record("house", nid(House, &h1[h1.len() - 1..]), &h1);
    assert!(accepted(&a.push(&server, &changes)));
    let plain = Uuid::now_v7();
    let changes = a.record("house", plain, &house(VILLAGE));
    assert!(accepted(&a.push(&server, &changes)));
    let coded = [a.change("house", plain, "address_code", &json!("HK0001"))];
    assert!(all_refused(&a.push(&server, &coded)));

    // 4. A plate kind left out is filled in before the key is judged: a car turned into a
    // motorcycle that another village's motorcycle holds the key of is refused, and a
    // motorcycle cannot be created on a car's id.
    let bike = vec![
        ("village", json!(ELSEWHERE)),
        ("plate", json!("粤L8K124")),
        ("vehicle_type", json!("motorcycle")),
        ("plate_kind", json!("motorcycle")),
    ];
    let changes = c.record("vehicle", nid(Vehicle, &bike[1..]), &bike);
    assert!(accepted(&c.push(&server, &changes)));
    let car = vec![
        ("village", json!(VILLAGE)),
        ("plate", json!("粤L8K124")),
        ("vehicle_type", json!("car")),
        ("plate_kind", json!("small")),
    ];
    let car_id = nid(Vehicle, &car[1..]);
    let changes = a.record("vehicle", car_id, &car);
    assert!(accepted(&a.push(&server, &changes)));
    let disguised = [
        a.change("vehicle", car_id, "plate_kind", &Value::Null),
        a.change("vehicle", car_id, "vehicle_type", &json!("motorcycle")),
    ];
    a.push(&server, &disguised);
    assert_eq!(
        stored(&server, car_id, "plate_kind").as_deref(),
        Some("\"small\"")
    );
    let squat = [
        ("village", json!(VILLAGE)),
        ("plate", json!("粤L8K125")),
        ("vehicle_type", json!("motorcycle")),
    ];
    let car_of_squat = nid(Vehicle, &squat[1..2]);
    let changes = a.record("vehicle", car_of_squat, &squat);
    assert!(all_refused(&a.push(&server, &changes)));
}

#[test]
fn deleted_decoys_settled_conflicts_and_keyless_ids_put_no_key_on_two_records() {
    let (server, mut a, _, _) = world();
    server.add_reviewer("r006", "441303006");
    let accepted = |results: &[(String, Option<String>)]| {
        results.iter().all(|(status, _)| status == "accepted")
    };
    let code_id = |code: &str| {
        baylink_domain::natural_id(
            baylink_domain::EntityKind::House,
            &baylink_domain::Fields::from([("address_code".to_owned(), json!(code))]),
        )
        .unwrap_or_default()
    };
    let coded = |code: &str| {
        let mut h = house(VILLAGE);
        h.push(("address_code", json!(code)));
        h
    };
    // House A takes code X's id, then moves to another code: a fresh id may now hold X.
    let first = code_id("DCY0001");
    let changes = a.record("house", first, &coded("DCY0001"));
    assert!(accepted(&a.push(&server, &changes)));
    let moved = [a.change("house", first, "address_code", &json!("DCY0002"))];
    assert!(accepted(&a.push(&server, &moved)));
    // Nine deleted houses that held X, older (smaller ids) than the live one after them.
    for _ in 0..9 {
        let decoy = Uuid::now_v7();
        let changes = a.record("house", decoy, &coded("DCY0001"));
        assert!(accepted(&a.push(&server, &changes)));
        let gone = [a.change("house", decoy, "deleted", &json!(true))];
        assert!(accepted(&a.push(&server, &gone)));
    }
    let live = Uuid::now_v7();
    let changes = a.record("house", live, &coded("DCY0001"));
    assert!(accepted(&a.push(&server, &changes)));
    let second = Uuid::now_v7();
    let changes = a.record("house", second, &coded("DCY0001"));
    assert!(
        all_refused(&a.push(&server, &changes)),
        "the live holder is found past the decoys"
    );

    // A losing edit onto another house's code is kept as a conflict; settling it for the
    // losing side is refused while the other house holds the code.
    let other = code_id("DCY0003");
    let changes = a.record("house", other, &coded("DCY0003"));
    assert!(accepted(&a.push(&server, &changes)));
    let mut late = Phone::login(&server, "oa");
    let mut old = late.change("house", first, "address_code", &json!("DCY0003"));
    let then = baylink_tests::harness::real_now_ms() - 60_000;
    old["stamp"] = json!(format!("{:016x}@{}", then << 16, late.device));
    late.push(&server, &[old]);
    let reviewer = server.caller("r006");
    let settled = server.db.call_blocking(move |c| {
        let id: i64 = c.query_row(
            "SELECT id FROM conflict WHERE entity = ?1 AND field = 'address_code' AND settled_ms IS NULL",
            [first.to_string()],
            |r| r.get(0),
        )?;
        baylink_server::store::review::settle_conflict(
            c,
            &reviewer,
            id,
            baylink_server::store::review::Keep::Lost,
            baylink_tests::harness::real_now_ms(),
        )
    });
    assert!(
        matches!(
            settled,
            Err(baylink_server::store::error::StoreError::Conflict(_))
        ),
        "{settled:?}"
    );
    assert_eq!(
        stored(&server, first, "address_code").as_deref(),
        Some("\"DCY0002\"")
    );

    // A visit cannot be created on a person's natural id (her village could then never
    // register her); a fresh time-ordered id is taken.
    let her = person_id(&baylink_domain::synthetic::resident_id(77));
    let visit = [
        ("village", json!(VILLAGE)),
        ("house", json!(other.to_string())),
        ("time", json!("2026-11-01 10:00:00")),
        ("outcome", json!("走访正常")),
    ];
    let changes = a.record("visit", her, &visit);
    let results = a.push(&server, &changes);
    assert!(all_refused(&results), "{results:?}");
    assert_eq!(results[0].1.as_deref(), Some("invalid"));
    // The same visit with a fresh id is taken: the id was the reason.
    let changes = a.record("visit", Uuid::now_v7(), &visit);
    let results = a.push(&server, &changes);
    assert!(accepted(&results), "{results:?}");
}
