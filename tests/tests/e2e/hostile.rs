//! Bad input and attacks over HTTP against a real server on loopback, sent by hand where a
//! well-behaved client could not (invalid UTF-8, bodies cut short). Each is refused with the right
//! status and a JSON error; nothing is applied or leaked; the server stays healthy; valid data
//! that merely looks like an attack is stored verbatim and shown escaped. Each test prints how
//! many inputs or attacks it tried (docs/security.md quotes the figures).

use baylink_server::auth::token::Claims;
use baylink_server::store::accounts::{self, Role};
use baylink_tests::harness::{PASSWORD, Server, VILLAGE};
use baylink_tests::raw_http::{Answer, send};
use serde_json::{Value, json};
use uuid::Uuid;

/// A village of another station (霞涌).
const ELSEWHERE: &str = "441303007001";

fn post_json(server: &Server, path: &str, token: Option<&str>, body: &Value) -> Answer {
    baylink_tests::raw_http::post_json(&server.url, path, token, body)
}

struct Session {
    device: Uuid,
    access: String,
    refresh: String,
}

fn login(server: &Server, username: &str, device: Uuid) -> Session {
    let answer = post_json(
        server,
        "/api/v1/auth/login",
        None,
        &json!({"username": username, "password": PASSWORD, "device_id": device, "device_name": "phone"}),
    );
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let body = answer.json();
    Session {
        device,
        access: body["access_token"].as_str().unwrap_or_default().to_owned(),
        refresh: body["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

fn change(device: Uuid, counter: u64, entity: Uuid, field: &str, value: &Value) -> Value {
    let now = baylink_tests::harness::real_now_ms();
    json!({
        "id": {"device": device, "counter": counter},
        "kind": "person", "entity": entity, "field": field, "value": value,
        "stamp": format!("{:016x}@{device}", now << 16),
    })
}

fn push_body(device: Uuid, changes: &[Value]) -> Value {
    json!({"protocol": 1, "device": device, "changes": changes})
}

fn seq(server: &Server) -> i64 {
    server.snapshot().last_seq
}

fn history_rows(server: &Server) -> i64 {
    server.snapshot().history.len() as i64
}

fn healthy(server: &Server) {
    let answer = send(&server.url, "GET", "/healthz", &[], b"", None);
    assert_eq!(answer.status, 200, "the server stays healthy");
}

/// The id a phone derives for a person with a resident ID number.
fn person_id(id_number: &str) -> Uuid {
    let fields = baylink_domain::Fields::from([
        ("id_type".to_owned(), json!("resident_id")),
        ("id_number".to_owned(), json!(id_number)),
    ]);
    baylink_domain::natural_id(baylink_domain::EntityKind::Person, &fields).unwrap_or_default()
}

fn person_changes(device: Uuid, first: u64, entity: Uuid, id_number: &str) -> Vec<Value> {
    [
        ("village", json!(VILLAGE)),
        ("id_type", json!("resident_id")),
        ("id_number", json!(id_number)),
        ("name", json!("王芳")),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (f, v))| change(device, first + i as u64, entity, f, &v))
    .collect()
}

#[test]
fn bad_input_over_http_is_refused_with_json_errors_and_nothing_is_applied() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_reviewer("r006", "441303006");
    let s = login(&server, "o1", Uuid::from_u128(7));
    let token = Some(s.access.as_str());
    let auth = format!("Bearer {}", s.access);
    let json_headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let raw = |body: &[u8], declared: Option<usize>| {
        send(
            &server.url,
            "POST",
            "/api/v1/sync/push",
            &json_headers,
            body,
            declared,
        )
    };
    let (seq_before, history_before) = (seq(&server), history_rows(&server));
    let tried = std::cell::Cell::new(0usize);
    let expect = |what: &str, answer: Answer, status: u16, code: &str, names: Option<&str>| {
        tried.set(tried.get() + 1);
        assert_eq!(answer.status, status, "{what}: {:?}", answer.json());
        assert_eq!(answer.code(), code, "{what}: {:?}", answer.json());
        if let Some(field) = names {
            let message = answer.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(message.contains(field), "{what}: `{message}` names {field}");
        }
    };

    let valid = push_body(
        s.device,
        &person_changes(
            s.device,
            1,
            person_id("11010519491231002X"),
            "11010519491231002X",
        ),
    )
    .to_string();
    expect(
        "malformed JSON",
        raw(b"{\"protocol\": 1, \"device\": ", None),
        400,
        "bad_request",
        None,
    );
    // A body cut short by a dropped connection: the server drops its side too (or answers 400).
    let cut = raw(&valid.as_bytes()[..valid.len() / 2], Some(valid.len()));
    assert!(
        matches!(cut.status, 0 | 400),
        "body cut short: {}",
        cut.status
    );
    tried.set(tried.get() + 1);
    expect(
        "truncated JSON",
        raw(&valid.as_bytes()[..valid.len() - 3], None),
        400,
        "bad_request",
        None,
    );
    expect("empty body", raw(b"", None), 400, "bad_request", None);
    expect(
        "wrong type",
        post_json(
            &server,
            "/api/v1/sync/push",
            token,
            &json!({"protocol": "one", "device": s.device, "changes": []}),
        ),
        400,
        "bad_request",
        Some("protocol"),
    );
    expect(
        "missing field",
        post_json(
            &server,
            "/api/v1/sync/push",
            token,
            &json!({"protocol": 1, "device": s.device}),
        ),
        400,
        "bad_request",
        Some("changes"),
    );
    expect(
        "a change without its stamp",
        post_json(
            &server,
            "/api/v1/sync/push",
            token,
            &json!({"protocol": 1, "device": s.device, "changes": [{"id": {"device": s.device, "counter": 1}, "kind": "person", "entity": Uuid::from_u128(1), "field": "name", "value": "x"}]}),
        ),
        400,
        "bad_request",
        Some("stamp"),
    );
    let huge = vec![b' '; 9 * 1024 * 1024];
    expect("9 MiB body", raw(&huge, None), 413, "too_large", None);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    expect(
        "100,000 levels of nesting",
        raw(
            format!(
                "{{\"protocol\":1,\"device\":\"{}\",\"changes\":{deep}}}",
                s.device
            )
            .as_bytes(),
            None,
        ),
        400,
        "bad_request",
        None,
    );
    let mut invalid_utf8 = valid.clone().into_bytes();
    let at = valid.find("王").expect("a Chinese name");
    invalid_utf8[at] = 0xff;
    expect(
        "invalid UTF-8",
        raw(&invalid_utf8, None),
        400,
        "bad_request",
        None,
    );
    expect(
        "a protocol version never spoken",
        post_json(
            &server,
            "/api/v1/sync/push",
            token,
            &json!({"protocol": 99, "device": s.device, "changes": []}),
        ),
        400,
        "bad_request",
        Some("protocol"),
    );
    expect(
        "a cursor the server never issued",
        post_json(
            &server,
            "/api/v1/sync/pull",
            token,
            &json!({"protocol": 1, "cursor": "x'; DROP TABLE field;--", "limit": 10}),
        ),
        400,
        "bad_request",
        Some("cursor"),
    );
    expect(
        "a malformed login",
        send(
            &server.url,
            "POST",
            "/api/v1/auth/login",
            &[("Content-Type", "application/json")],
            b"{\"username\": [1, 2]}",
            None,
        ),
        400,
        "bad_request",
        None,
    );
    expect(
        "a login as JSON null",
        send(
            &server.url,
            "POST",
            "/api/v1/auth/login",
            &[("Content-Type", "application/json")],
            b"null",
            None,
        ),
        400,
        "bad_request",
        None,
    );
    healthy(&server);

    // Well-formed pushes whose changes are invalid: each refused by itself, naming its field.
    let entity = Uuid::from_u128(2);
    let mut changes = person_changes(s.device, 1, entity, "110105194912310021");
    let (vehicle, boat) = (Uuid::from_u128(3), Uuid::from_u128(4));
    for (counter, entity, kind, field, value) in [
        (5, vehicle, "vehicle", "village", json!(VILLAGE)),
        (6, vehicle, "vehicle", "plate", json!("粤Z·ABCDEFG")),
        (7, boat, "boat", "village", json!(VILLAGE)),
        (8, boat, "boat", "hull", json!("x")),
        (9, entity, "person", "shoe_size", json!(42)),
        (10, entity, "person", "review_status", json!("approved")),
    ] {
        let mut c = change(s.device, counter, entity, field, &value);
        c["kind"] = json!(kind);
        changes.push(c);
    }
    let answer = post_json(
        &server,
        "/api/v1/sync/push",
        token,
        &push_body(s.device, &changes),
    );
    assert_eq!(answer.status, 200);
    let results = answer.json()["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let refused: Vec<(u64, String, String)> = results
        .iter()
        .filter(|r| r["status"] == "refused")
        .map(|r| {
            (
                r["counter"].as_u64().unwrap_or_default(),
                r["code"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let by_counter = |n: u64| refused.iter().find(|r| r.0 == n).cloned();
    let id_number = by_counter(3).expect("a wrong check digit is refused");
    assert!(
        id_number.1 == "invalid" && id_number.2.contains("ID number"),
        "{id_number:?}"
    );
    let plate = by_counter(6).expect("a malformed plate is refused");
    assert!(
        plate.1 == "invalid" && plate.2.contains("plate"),
        "{plate:?}"
    );
    assert_eq!(
        by_counter(8).map(|r| r.1).as_deref(),
        Some("invalid"),
        "unknown kind"
    );
    assert_eq!(
        by_counter(9).map(|r| r.1).as_deref(),
        Some("invalid"),
        "unknown field"
    );
    // Approving oneself rides on a record refused whole (its ID number is wrong); on a record
    // that is accepted, the server writes the review state itself (tests/tests/e2e/insider.rs).
    assert_eq!(
        by_counter(10).map(|r| r.1).as_deref(),
        Some("invalid"),
        "approving oneself"
    );
    tried.set(tried.get() + 5);
    let held = server.snapshot();
    assert_eq!(
        held.value(entity, "id_number"),
        None,
        "the refused ID number is not stored"
    );
    assert!(
        !held
            .values
            .keys()
            .any(|(e, f)| f == "hull" || f == "shoe_size" || *e == Uuid::from_u128(4))
    );
    // Nothing from the malformed requests was applied; the valid changes of the last push were.
    let accepted = results.iter().filter(|r| r["status"] == "accepted").count() as i64;
    assert_eq!(history_rows(&server), history_before + accepted);
    assert!(seq(&server) >= seq_before);

    // Valid data that looks like an attack is stored verbatim and shown escaped.
    let odd = person_id("11010519491231002X");
    let values = [
        ("notes", "Robert'); DROP TABLE field;--"),
        ("occupation", "<script>alert(1)</script>"),
        ("employer", "{{7*7}} ${jndi:ldap://x} ../../etc/passwd"),
    ];
    let mut changes = person_changes(s.device, 20, odd, "11010519491231002X");
    for (i, (field, value)) in values.iter().enumerate() {
        changes.push(change(s.device, 30 + i as u64, odd, field, &json!(value)));
    }
    let answer = post_json(
        &server,
        "/api/v1/sync/push",
        token,
        &push_body(s.device, &changes),
    );
    assert!(
        answer.json()["results"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == "accepted")),
        "{:?}",
        answer.json()
    );
    tried.set(tried.get() + values.len());
    for (field, value) in values {
        let stored = server
            .snapshot()
            .value(odd, field)
            .expect("stored")
            .to_string();
        assert_eq!(
            serde_json::from_str::<String>(&stored).ok().as_deref(),
            Some(value)
        );
    }
    let cookie = cookie_of(&server, "r006");
    let page = send(
        &server.url,
        "GET",
        &format!("/console/records/{odd}"),
        &[("Cookie", &cookie)],
        b"",
        None,
    );
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "escaped"
    );
    assert!(!html.contains("<script>alert(1)</script>"), "never raw");
    healthy(&server);
    println!(
        "bad inputs tried over HTTP: {}, all refused or stored verbatim as expected",
        tried.get()
    );
}

/// Signs in to the console and returns the cookie header.
fn cookie_of(server: &Server, username: &str) -> String {
    // The sign-in form first: its cookie and token go back with the form.
    let form = send(&server.url, "GET", "/console/login", &[], b"", None);
    let cookie = set_cookie(&form);
    let token = String::from_utf8_lossy(&form.body)
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let answer = send(
        &server.url,
        "POST",
        "/console/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        format!("username={username}&password={PASSWORD}&csrf={token}").as_bytes(),
        None,
    );
    assert_eq!(answer.status, 303, "signed in");
    set_cookie(&answer)
}

/// The cookie an answer sets, as a `Cookie` header sends it back.
fn set_cookie(answer: &Answer) -> String {
    answer
        .head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim())
        })
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_owned()
}

#[test]
fn auth_attacks_over_http_are_refused_and_leak_nothing() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", ELSEWHERE);
    let a = login(&server, "o1", Uuid::from_u128(11));
    let b = login(&server, "o2", Uuid::from_u128(12));
    // o1 registers a person.
    let person = person_id("11010519491231002X");
    let answer = post_json(
        &server,
        "/api/v1/sync/push",
        Some(&a.access),
        &push_body(
            a.device,
            &person_changes(a.device, 1, person, "11010519491231002X"),
        ),
    );
    assert_eq!(answer.status, 200);
    let tried = std::cell::Cell::new(0);
    let pull = |token: &str| {
        post_json(
            &server,
            "/api/v1/sync/pull",
            Some(token),
            &json!({"protocol": 1, "limit": 1000}),
        )
    };
    let refused = |what: &str, answer: Answer, status: u16, code: &str| {
        tried.set(tried.get() + 1);
        assert_eq!(answer.status, status, "{what}: {:?}", answer.json());
        assert_eq!(answer.code(), code, "{what}");
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !text.contains("王芳") && !text.contains("11010519491231002X"),
            "{what} leaked data"
        );
    };
    let claims = |account: &str, device: Uuid, exp: u64| {
        let id = server.query(|c| {
            accounts::account_by_username(c, account)
                .expect("read")
                .expect("exists")
                .id
        });
        Claims {
            sub: id,
            name: account.into(),
            role: Role::Officer,
            dev: device.to_string(),
            iat: exp.saturating_sub(900),
            exp,
            dgen: 0,
            agen: 0,
        }
    };
    let now_s = baylink_tests::harness::real_now_ms() / 1000;
    let [header, payload, signature] = {
        let parts: Vec<String> = a.access.split('.').map(str::to_owned).collect();
        [parts[0].clone(), parts[1].clone(), parts[2].clone()]
    };
    refused(
        "no token",
        post_json(
            &server,
            "/api/v1/sync/pull",
            None,
            &json!({"protocol": 1, "limit": 10}),
        ),
        401,
        "missing_token",
    );
    refused("garbage token", pull("not.a.token"), 401, "invalid_token");
    refused(
        "changed payload, old signature",
        pull(&format!(
            "{header}.{}.{signature}",
            &payload[..payload.len() - 2]
        )),
        401,
        "invalid_token",
    );
    let other_key = baylink_server::auth::token::Keys::from_secret(&[9; 32]).expect("keys");
    refused(
        "signed with another key",
        pull(
            &other_key
                .issue(&claims("o1", a.device, now_s + 600))
                .expect("token"),
        ),
        401,
        "invalid_token",
    );
    // {"alg":"none","typ":"JWT"}
    refused(
        "alg none",
        pull(&format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")),
        401,
        "invalid_token",
    );
    // {"alg":"RS256","typ":"JWT"}: a verifier that trusted the header would check an RSA
    // signature with the HMAC secret as the key.
    refused(
        "alg RS256 with the HS256 signature",
        pull(&format!(
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{payload}.{signature}"
        )),
        401,
        "invalid_token",
    );
    // {"alg":"HS512","typ":"JWT"}
    refused(
        "alg HS512",
        pull(&format!(
            "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.{payload}.{signature}"
        )),
        401,
        "invalid_token",
    );
    let keys = server.state.keys.current();
    refused(
        "expired token",
        pull(
            &keys
                .issue(&claims("o1", a.device, now_s - 120))
                .expect("token"),
        ),
        401,
        "token_expired",
    );
    refused(
        "o1's account with o2's device",
        pull(
            &keys
                .issue(&claims("o1", b.device, now_s + 600))
                .expect("token"),
        ),
        401,
        "invalid_token",
    );
    refused(
        "o2 pushing as o1's device",
        post_json(
            &server,
            "/api/v1/sync/push",
            Some(&b.access),
            &push_body(
                a.device,
                &[change(a.device, 9, person, "name", &json!("x"))],
            ),
        ),
        403,
        "forbidden",
    );
    // Another village's officer reads nothing of o1's and cannot write it.
    let theirs = pull(&b.access);
    tried.set(tried.get() + 1);
    assert_eq!(theirs.status, 200);
    assert!(
        !String::from_utf8_lossy(&theirs.body).contains(&person.to_string()),
        "another village's record leaked"
    );
    let write = post_json(
        &server,
        "/api/v1/sync/push",
        Some(&b.access),
        &push_body(
            b.device,
            &[change(b.device, 1, person, "name", &json!("篡改"))],
        ),
    );
    tried.set(tried.get() + 1);
    assert_eq!(write.json()["results"][0]["code"], "out_of_scope");
    let name = server
        .snapshot()
        .value(person, "name")
        .expect("name")
        .to_string();
    assert_eq!(name, "\"王芳\"");
    // A stolen refresh token, used after its owner: the session ends for both.
    let renewed = post_json(
        &server,
        "/api/v1/auth/refresh",
        None,
        &json!({"device_id": a.device, "refresh_token": a.refresh}),
    );
    assert_eq!(renewed.status, 200);
    let next = renewed.json()["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    refused(
        "refresh token reused",
        post_json(
            &server,
            "/api/v1/auth/refresh",
            None,
            &json!({"device_id": a.device, "refresh_token": a.refresh}),
        ),
        401,
        "token_reused",
    );
    refused(
        "the newer refresh token after a reuse",
        post_json(
            &server,
            "/api/v1/auth/refresh",
            None,
            &json!({"device_id": a.device, "refresh_token": next}),
        ),
        401,
        "token_reused",
    );
    refused(
        "another device's refresh token",
        post_json(
            &server,
            "/api/v1/auth/refresh",
            None,
            &json!({"device_id": a.device, "refresh_token": b.refresh}),
        ),
        401,
        "invalid_token",
    );
    // A second phone of o1, signed in before the guessing below throttles this address.
    let c2 = login(&server, "o1", Uuid::from_u128(14));
    // Password guessing: refused, then throttled even for the right password.
    for _ in 0..5 {
        refused(
            "wrong password",
            post_json(
                &server,
                "/api/v1/auth/login",
                None,
                &json!({"username": "o2", "password": "guess", "device_id": Uuid::from_u128(13), "device_name": "x"}),
            ),
            401,
            "bad_credentials",
        );
    }
    let throttled = post_json(
        &server,
        "/api/v1/auth/login",
        None,
        &json!({"username": "o2", "password": PASSWORD, "device_id": Uuid::from_u128(13), "device_name": "x"}),
    );
    refused(
        "the right password while throttled",
        throttled,
        429,
        "throttled",
    );
    // A revoked phone and a disabled account.
    let store = server.state.store.clone();
    server
        .run(store.revoke_device(baylink_server::store::contract::Actor::Operator, b.device))
        .expect("revoked");
    refused("revoked device", pull(&b.access), 401, "device_revoked");
    let disabled = baylink_server::store::contract::Access::Disabled;
    server
        .run(store.set_access(
            baylink_server::store::contract::Actor::Operator,
            "o1".into(),
            disabled,
        ))
        .expect("disabled");
    refused(
        "disabled account",
        pull(&c2.access),
        401,
        "account_disabled",
    );
    healthy(&server);
    println!(
        "auth attacks tried over HTTP: {}, all refused, nothing leaked or applied",
        tried.get()
    );
}
