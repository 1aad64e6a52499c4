//! The HTTP surface through `app(state).oneshot(request)`: error shapes, limits, throttling and
//! token checks, without a socket.

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use baylink_server::store::Db;
use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::contract::{Access, Actor};
use baylink_server::store::devices::{self, KeyMatch};
use baylink_server::{AppState, Config, app, auth, demo};
use serde_json::{Value, json};
use tower::ServiceExt;

const DEVICE: &str = "6a1f8c3e-0000-4000-8000-000000000001";

/// The database of a server's state, opened beside it to look inside.
fn db(state: &AppState) -> Db {
    Db::open(&state.config.database_path()).unwrap()
}

/// A field's value as the record's row stores it (its JSON text), if it has one.
fn stored(db: &Db, entity: &'static str, field: &'static str) -> Option<String> {
    db.call_blocking(move |c| {
        Ok(c.query_row(
            "SELECT state -> ('$.f.' || ?2 || '[0]') FROM entity WHERE id = ?1",
            [entity, field],
            |r| r.get(0),
        )
        .ok())
    })
    .unwrap()
}

/// Writes a field's value into the record's row behind the server's back: a record held in
/// error, as one captured under older rules is.
fn hold(db: &Db, entity: &'static str, field: &'static str, value: &'static str) {
    db.call_blocking(move |c| {
        c.execute(
            "UPDATE entity SET state = json_set(state, '$.f.' || ?2 || '[0]', ?3) WHERE id = ?1",
            [entity, field, value],
        )?;
        Ok(())
    })
    .unwrap();
}

fn state() -> (AppState, tempfile::TempDir) {
    state_taking(64 * 1024)
}

/// A server taking request bodies up to `max_body_bytes`, with officer o1 of one village.
fn state_taking(max_body_bytes: usize) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.max_body_bytes = max_body_bytes;
    let (state, db) = AppState::open(config).unwrap();
    db.call_blocking(demo::seed_places).unwrap();
    officer(&db, "o1", "correct-horse-battery");
    (state, dir)
}

/// Adds an officer of village 441303006001: the account's id.
fn officer(db: &Db, username: &str, password: &str) -> i64 {
    let new = NewAccount {
        username: username.to_owned(),
        display_name: username.to_owned(),
        role: Role::Officer,
        station: None,
        password_hash: auth::password::hash(password).unwrap(),
        villages: vec!["441303006001".to_owned()],
    };
    db.call_blocking(move |conn| accounts::create_account(conn, Actor::Operator, &new, 0))
        .unwrap()
}

/// Whether every change of a push's answer was accepted.
fn all_accepted(answer: &Value) -> bool {
    answer["results"]
        .as_array()
        .is_some_and(|results| results.iter().all(|r| r["status"] == "accepted"))
}

async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (StatusCode, Value, Option<String>) {
    let (status, headers, bytes) = call_raw(state, method, path, token, body).await;
    let retry = headers
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry,
    )
}

/// A call's status, headers and body as sent.
async fn call_raw(
    state: &AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app(state.clone())
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, bytes.to_vec())
}

/// Pushes a batch of changes (its JSON) with a token: the status and the answer.
async fn push(state: &AppState, token: &str, batch: &Value) -> (StatusCode, Value) {
    let (status, body, _) = call(
        state,
        "POST",
        "/api/v1/sync/push",
        Some(token),
        Body::from(batch.to_string()),
    )
    .await;
    (status, body)
}

fn login_body(user: &str, password: &str) -> Body {
    Body::from(
        json!({"username": user, "password": password, "device_id": DEVICE, "device_name": "t"})
            .to_string(),
    )
}

async fn token(state: &AppState) -> String {
    let (status, body, _) = call(
        state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "correct-horse-battery"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn health_answers_and_unknown_paths_are_json_404s() {
    let (state, _dir) = state();
    let (status, body, _) = call(&state, "GET", "/healthz", None, Body::empty()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body, _) = call(&state, "GET", "/api/v1/nothing", None, Body::empty()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_json_errors() {
    let (state, _dir) = state();
    let (status, body, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        Body::from("{\"username\": "),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let (status, body, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        Body::from(json!({"username": 5}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("username"),
        "{body}"
    );
    let huge = format!("{{\"username\": \"{}\"}}", "x".repeat(200 * 1024));
    let (status, body, _) =
        call(&state, "POST", "/api/v1/auth/login", None, Body::from(huge)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_look_alike_and_are_throttled() {
    let (state, _dir) = state();
    let (s1, b1, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("nobody", "whatever"),
    )
    .await;
    let (s2, b2, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "wrong password"),
    )
    .await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    for _ in 0..4 {
        call(
            &state,
            "POST",
            "/api/v1/auth/login",
            None,
            login_body("o1", "wrong password"),
        )
        .await;
    }
    // Even the right password waits now.
    let (status, body, retry) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "correct-horse-battery"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("throttled"))
    );
    assert!(retry.is_some_and(|s| s.parse::<u64>().unwrap() > 0));
}

#[tokio::test]
async fn sync_needs_a_valid_token_of_the_pushing_device() {
    let (state, _dir) = state();
    let pull = || Body::from(json!({"protocol": 1, "limit": 10}).to_string());
    let (status, body, _) = call(&state, "POST", "/api/v1/sync/pull", None, pull()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );
    let (status, _, _) = call(
        &state,
        "POST",
        "/api/v1/sync/pull",
        Some("not.a.token"),
        pull(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let good = token(&state).await;
    let payload = good.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let (status, _, _) = call(&state, "POST", "/api/v1/sync/pull", Some(&unsigned), pull()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, _) = call(&state, "POST", "/api/v1/sync/pull", Some(&good), pull()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["server_time_ms"].as_u64().is_some());
    let (status, _, _) = call(
        &state,
        "POST",
        "/api/v1/sync/pull",
        Some(&good),
        Body::from(json!({"protocol": 1, "limit": 10, "cursor": "zz"}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let other =
        json!({"protocol": 1, "device": "00000000-0000-4000-8000-000000000099", "changes": []});
    let (status, body) = push(&state, &good, &other).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
}

#[tokio::test]
async fn invalid_values_are_refused_per_change_and_a_new_record_only_whole() {
    let (state, _dir) = state();
    let good = token(&state).await;
    let (whole, broken) = (
        "1deb93b4-7149-564c-b8e2-e4671780f80f",
        "2deb93b4-7149-564c-b8e2-e4671780f80f",
    );
    let change = |counter: u64, entity: &str, field: &str, value: Value| {
        json!({
            "id": {"device": DEVICE, "counter": counter}, "kind": "person", "entity": entity,
            "field": field, "value": value, "stamp": format!("{:016x}@{DEVICE}", (baylink_server::store::now_ms() << 16) + counter),
        })
    };
    let batch = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(1, whole, "village", json!("441303006001")),
        change(2, whole, "id_type", json!("resident_id")),
        change(3, whole, "id_number", json!("11010519491231002X")),
        change(4, whole, "name", json!("王芳'); DROP TABLE field; --")),
        change(5, whole, "review_status", json!("approved")),
        change(6, whole, "phone", json!("1380013800")),
        change(7, whole, "review_comment", json!("self-approved")),
        change(8, broken, "village", json!("441303006001")),
        change(9, broken, "id_type", json!("resident_id")),
        change(10, broken, "id_number", json!("110105194912310021")),
        change(11, broken, "name", json!("李明")),
    ]});
    let (status, body) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<Option<&str>> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str())
        .collect();
    // A bad phone is refused alone; the review fields are not a device's to write (the status is
    // the server's: accepted, and written as the server decides); a person whose ID number is
    // wrong is not created at all, the ID number's refusal saying why.
    let invalid = Some("invalid");
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            None,
            None,
            invalid,
            Some("read_only"),
            invalid,
            invalid,
            invalid,
            invalid
        ]
    );
    assert!(
        body["results"][9]["message"]
            .as_str()
            .unwrap()
            .contains("check character")
    );
    let db = db(&state);
    let stored = |entity: &'static str, field: &'static str| stored(&db, entity, field);
    // The injection-like name is data, stored verbatim; the server set the review state and
    // who captured it, and derived what the device left out from the ID number.
    assert_eq!(
        stored(whole, "name").as_deref(),
        Some("\"王芳'); DROP TABLE field; --\"")
    );
    assert_eq!(
        stored(whole, "review_status").as_deref(),
        Some("\"pending\"")
    );
    assert_eq!(stored(whole, "created_by").as_deref(), Some("\"o1\""));
    assert_eq!(stored(whole, "gender").as_deref(), Some("\"female\""));
    assert_eq!(stored(whole, "review_comment"), None);
    assert_eq!(stored(broken, "name"), None);
    // The same push again is answered exactly as the first time.
    let (_, again) = push(&state, &good, &batch).await;
    assert_eq!(again["results"], body["results"]);
}

#[tokio::test]
async fn a_new_value_of_a_field_already_in_error_is_checked_by_the_type_the_record_keeps() {
    let (state, _dir) = state();
    let good = token(&state).await;
    let person = "1deb93b4-7149-564c-b8e2-e4671780f80f";
    let change = |counter: u64, millis: u64, field: &str, value: Value| {
        json!({
            "id": {"device": DEVICE, "counter": counter}, "kind": "person", "entity": person,
            "field": field, "value": value, "stamp": format!("{:016x}@{DEVICE}", (millis << 16) + counter),
        })
    };
    let now = baylink_server::store::now_ms();
    let registered = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(1, now, "village", json!("441303006001")),
        change(2, now, "id_type", json!("resident_id")),
        change(3, now, "id_number", json!("11010519491231002X")),
        change(4, now, "name", json!("王芳")),
    ]});
    let (status, body) = push(&state, &good, &registered).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["code"].is_null()),
        "{body}"
    );
    // Held in error (as a record captured under older rules is): a resident ID card whose
    // number is not one.
    let db = db(&state);
    let read = |db: &Db| stored(db, person, "id_number").unwrap_or_default();
    hold(&db, person, "id_number", "X1");
    // A passport number, with a passport type stamped before the record's type: the type loses
    // the merge, so the record would keep a resident ID card numbered like a passport.
    let sneaked = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(5, now - 60_000, "id_type", json!("passport")),
        change(6, now + 1, "id_number", json!("E12345678")),
    ]});
    let (status, body) = push(&state, &good, &sneaked).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][1]["code"], "invalid", "{body}");
    assert!(
        body["results"][1]["message"]
            .as_str()
            .unwrap()
            .contains("ID number: must have 18"),
        "{body}"
    );
    assert_eq!(read(&db), "\"X1\"");
    // A number the card it is read by accepts is taken: the record is mended.
    let mended = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(7, now + 2, "id_number", json!("11010519491231002X")),
    ]});
    let (_, body) = push(&state, &good, &mended).await;
    assert!(body["results"][0]["code"].is_null(), "{body}");
    assert_eq!(read(&db), "\"11010519491231002X\"");
}

#[tokio::test]
async fn a_record_in_error_takes_no_new_value_of_a_field_its_error_is_read_from() {
    let (state, _dir) = state();
    let good = token(&state).await;
    let person = "1deb93b4-7149-564c-b8e2-e4671780f80f";
    let change = |counter: u64, field: &str, value: Value| {
        let millis = baylink_server::store::now_ms();
        json!({
            "id": {"device": DEVICE, "counter": counter}, "kind": "person", "entity": person,
            "field": field, "value": value, "stamp": format!("{:016x}@{DEVICE}", (millis << 16) + counter),
        })
    };
    let registered = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(1, "village", json!("441303006001")),
        change(2, "id_type", json!("resident_id")),
        change(3, "id_number", json!("11010519491231002X")),
        change(4, "name", json!("王芳")),
    ]});
    let (status, body) = push(&state, &good, &registered).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Held in error, as one captured before the rule: a passport whose number is a resident
    // ID number. The rule reports it on `id_type`, reading `id_number`.
    let db = db(&state);
    hold(&db, person, "id_type", "passport");
    let number = |db: &Db| stored(db, person, "id_number").unwrap_or_default();
    // Another resident ID number, still as a passport's: refused, naming the document type.
    let other = baylink_domain::synthetic::resident_id(5);
    let renumbered = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(5, "id_number", json!(other)),
    ]});
    let (_, body) = push(&state, &good, &renumbered).await;
    assert_eq!(body["results"][0]["code"], "invalid", "{body}");
    let message = body["results"][0]["message"].as_str().unwrap();
    assert!(message.contains("choose resident_id"), "{message}");
    assert_eq!(number(&db), "\"11010519491231002X\"");
    // A field no rule reads with the document is written as ever.
    let occupied = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(6, "occupation", json!("渔民")),
    ]});
    let (_, body) = push(&state, &good, &occupied).await;
    assert!(body["results"][0]["code"].is_null(), "{body}");
}

#[tokio::test]
async fn a_push_takes_as_many_changes_as_its_answer_says_and_not_one_more() {
    use baylink_server::routes::sync::MAX_PUSH;
    let (state, _dir) = state_taking(64 * 1024 * 1024);
    let good = token(&state).await;
    let now = baylink_server::store::now_ms();
    // Whole houses of four fields each, from `first`, numbered on from `counter`.
    let houses = |first: usize, count: usize, counter: usize| -> Vec<Value> {
        (first..first + count)
            .flat_map(|n| {
                let entity = format!("00000000-0000-7000-8000-{n:012}");
                [
                    ("village", "441303006001"),
                    ("address", "澳头1巷1号"),
                    ("use", "rental"),
                    ("status", "in_use"),
                ]
                .into_iter()
                .map(move |(field, value)| (entity.clone(), field, value))
            })
            .enumerate()
            .map(|(i, (entity, field, value))| {
                let counter = (counter + i) as u64;
                json!({
                    "id": {"device": DEVICE, "counter": counter}, "kind": "house",
                    "entity": entity, "field": field, "value": value,
                    "stamp": format!("{:016x}@{DEVICE}", (now << 16) + counter),
                })
            })
            .collect()
    };
    let at_most = houses(0, MAX_PUSH / 4, 1);
    assert_eq!(at_most.len(), MAX_PUSH);
    let batch = json!({"protocol": 1, "device": DEVICE, "changes": at_most});
    let (status, body) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["max_changes"], MAX_PUSH);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), MAX_PUSH);
    assert!(results.iter().all(|r| r["status"] == "accepted"));
    // One more than it says: refused whole, naming the changes, and nothing of it is stored.
    let mut too_many = houses(MAX_PUSH / 4, MAX_PUSH / 4, MAX_PUSH + 1);
    too_many.extend(
        houses(MAX_PUSH / 2, 1, 2 * MAX_PUSH + 1)
            .into_iter()
            .take(1),
    );
    assert_eq!(too_many.len(), MAX_PUSH + 1);
    let batch = json!({"protocol": 1, "device": DEVICE, "changes": too_many});
    let (status, body) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("changes: at most {MAX_PUSH}")),
        "{message}"
    );
    // Counted in fields when they come as whole actions (protocol 3): one house more than fits.
    let actions: Vec<Value> = (MAX_PUSH..MAX_PUSH + MAX_PUSH / 4 + 1)
        .map(|n| {
            let counter = (3 * MAX_PUSH + 4 * n) as u64;
            let fields: Vec<Value> = [
                ("village", "441303006001"),
                ("address", "澳头1巷1号"),
                ("use", "rental"),
                ("status", "in_use"),
            ]
            .iter()
            .enumerate()
            .map(|(i, (field, value))| {
                json!({"counter": counter + i as u64, "field": field, "value": value})
            })
            .collect();
            json!({
                "kind": "house", "entity": format!("00000000-0000-7000-8000-{n:012}"),
                "stamp": format!("{:016x}@{DEVICE}", (now << 16) + counter), "fields": fields,
            })
        })
        .collect();
    let batch = json!({"protocol": 3, "device": DEVICE, "changes": [], "actions": actions});
    let (status, body) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let houses_stored: i64 = db(&state)
        .call_blocking(|c| {
            Ok(c.query_row("SELECT count(*) FROM entity", [] as [&str; 0], |r| r.get(0))?)
        })
        .unwrap();
    assert_eq!(houses_stored, (MAX_PUSH / 4) as i64);
}

#[tokio::test]
async fn a_pull_asking_for_several_pages_streams_the_pages_single_pulls_bring() {
    let (state, _dir) = state();
    let good = token(&state).await;
    let stamp = |counter: u64| {
        format!(
            "{:016x}@{DEVICE}",
            (baylink_server::store::now_ms() << 16) + counter
        )
    };
    let mut changes = Vec::new();
    // Five whole houses: four fields each, and the three the server writes of a new record.
    for n in 0..5u64 {
        let entity = format!("00000000-0000-7000-8000-{n:012}");
        let fields = [
            ("village", "441303006001"),
            ("address", "澳头1巷1号"),
            ("use", "rental"),
            ("status", "in_use"),
        ];
        for (i, (field, value)) in fields.into_iter().enumerate() {
            let counter = n * 4 + i as u64 + 1;
            changes.push(json!({
                "id": {"device": DEVICE, "counter": counter}, "kind": "house",
                "entity": entity, "field": field, "value": value, "stamp": stamp(counter),
            }));
        }
    }
    let batch = json!({"protocol": 2, "device": DEVICE, "changes": changes});
    let (status, body) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pull = |cursor: Option<&str>, pages: Option<u32>| {
        let mut request = json!({"protocol": 2, "limit": 3});
        if let Some(cursor) = cursor {
            request["cursor"] = json!(cursor);
        }
        if let Some(pages) = pages {
            request["pages"] = json!(pages);
        }
        call_raw(
            &state,
            "POST",
            "/api/v1/sync/pull",
            Some(&good),
            Body::from(request.to_string()),
        )
    };
    // Without the time of answering, which differs from one answer to the next.
    let timeless = |mut page: Value| {
        page.as_object_mut().unwrap().remove("server_time_ms");
        page
    };
    // Seven values a house, three a page asked for: a page holds whole records, so one house a
    // page; one page an answer.
    let mut single = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (status, headers, bytes) = pull(cursor.as_deref(), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        let more = page["more"].as_bool().unwrap();
        single.push(timeless(page));
        if !more {
            break;
        }
    }
    // Five pages of the snapshot, then the (empty) feed written since it was read.
    assert_eq!(single.len(), 6, "{single:?}");
    let lines = |bytes: &[u8]| -> Vec<Value> {
        assert_eq!(bytes.last(), Some(&b'\n'), "every page ends its line");
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| timeless(serde_json::from_slice(line).unwrap()))
            .collect()
    };
    // The same pages in one answer, a line each, ending with the last.
    let (status, headers, bytes) = pull(None, Some(32)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    assert_eq!(lines(&bytes), single);
    // At most the pages asked for; the next answer goes on from the last one's cursor.
    let (_, _, bytes) = pull(None, Some(2)).await;
    assert_eq!(lines(&bytes), single[..2]);
    let after = single[1]["next_cursor"].as_str().unwrap();
    let (_, _, bytes) = pull(Some(after), Some(2)).await;
    assert_eq!(lines(&bytes), single[2..4]);
    let after = single[3]["next_cursor"].as_str().unwrap();
    let (_, _, bytes) = pull(Some(after), Some(8)).await;
    assert_eq!(lines(&bytes), single[4..]);
    // The last page is answered as one page, as is a bad cursor's error.
    let last = single[4]["next_cursor"].as_str().unwrap();
    let (_, headers, bytes) = pull(Some(last), Some(8)).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(timeless(serde_json::from_slice(&bytes).unwrap()), single[5]);
    let (status, _, bytes) = pull(Some("nonsense"), Some(8)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["code"], "bad_request");
}

#[tokio::test]
async fn answers_come_in_zstd_to_clients_that_ask_for_it_and_in_gzip_to_the_others() {
    let (state, _dir) = state();
    let good = token(&state).await;
    let pull = |accept: Option<&'static str>| {
        let mut request = Request::builder()
            .method("POST")
            .uri("/api/v1/sync/pull")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {good}"));
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT_ENCODING, accept);
        }
        let request = request
            .body(Body::from(json!({"protocol": 2, "limit": 3}).to_string()))
            .unwrap();
        async {
            let response = app(state.clone()).oneshot(request).await.unwrap();
            let encoding = response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap().to_owned());
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (encoding, bytes.to_vec())
        }
    };
    let fields = |page: Value| {
        let mut page = page.as_object().unwrap().clone();
        page.remove("server_time_ms");
        page
    };
    let (encoding, plain) = pull(None).await;
    assert_eq!(encoding, None);
    let plain = fields(serde_json::from_slice(&plain).unwrap());
    // Phones ask for zstd first; it is preferred whatever the order.
    for accept in ["zstd, gzip", "gzip, zstd"] {
        let (encoding, bytes) = pull(Some(accept)).await;
        assert_eq!(encoding.as_deref(), Some("zstd"), "{accept}");
        let page = zstd::stream::decode_all(&bytes[..]).unwrap();
        assert_eq!(fields(serde_json::from_slice(&page).unwrap()), plain);
    }
    // A client that knows only gzip (an earlier phone, the baseline's GET) gets gzip.
    let (encoding, bytes) = pull(Some("gzip")).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(bytes[..2], [0x1f, 0x8b], "gzip's magic number");
}

/// A server on a real loopback port with short limits, for the listener's tests, on a runtime of
/// its own (the test talks to it with blocking sockets).
fn listening(
    header_timeout: std::time::Duration,
    max_connections: usize,
) -> (
    std::net::SocketAddr,
    tokio::runtime::Runtime,
    tempfile::TempDir,
) {
    listening_with(|config| {
        config.header_timeout = header_timeout;
        config.max_connections = max_connections;
    })
}

/// [`listening`] with the configuration as `adjust` leaves it.
fn listening_with(
    adjust: impl FnOnce(&mut Config),
) -> (
    std::net::SocketAddr,
    tokio::runtime::Runtime,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    adjust(&mut config);
    let (state, _) = AppState::open(config).unwrap();
    let (runtime, listener) = loopback();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(baylink_server::serve_until(
        listener,
        state,
        std::future::pending(),
    ));
    (addr, runtime, dir)
}

/// A runtime of one worker thread for a server under test, and a listener on a free loopback
/// port bound on it.
fn loopback() -> (tokio::runtime::Runtime, tokio::net::TcpListener) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    (runtime, listener)
}

#[test]
fn a_client_that_reads_none_of_its_answers_is_closed_and_its_slot_freed() {
    use baylink_server::listen::{Front, Limits, serve};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = AppState::open(Config::new(dir.path())).unwrap();
    let (runtime, listener) = loopback();
    let addr = listener.local_addr().unwrap();
    // One connection at a time; answers not moving for a second close it.
    let limits = Limits {
        header_timeout: Duration::from_secs(60),
        max_connections: 1,
        per_address: 1,
        unlimited: Vec::new(),
        drain_timeout: Duration::from_secs(1),
        write_stall: Duration::from_secs(1),
    };
    runtime.spawn(serve(
        listener,
        Front::new(app(state)),
        limits,
        std::future::pending(),
    ));
    // Thousands of requests pipelined on the one connection, none of the answers read (the
    // requests written from a thread of their own: the server stops reading them once its
    // answers back up).
    let hog = TcpStream::connect(addr).unwrap();
    let mut writer = hog.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let request = b"GET /console/static/console.css HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..20_000 {
            if writer.write_all(request).is_err() {
                return;
            }
        }
    });
    // Another client waits for the slot, and is served once the hog is cut.
    let mut next = TcpStream::connect(addr).unwrap();
    next.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    next.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    next.read_to_end(&mut answer)
        .expect("served once the connection reading nothing was closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(hog);
    sending.join().unwrap();
}

#[test]
fn half_sent_requests_are_closed_and_connections_are_bounded() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
    let (addr, _runtime, _dir) = listening(Duration::from_millis(300), 3);
    // Headers that never end: the server closes the connection instead of waiting for ever.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest)
        .expect("the half-sent request was closed, not left open");
    assert!(!String::from_utf8_lossy(&rest).contains("\"ok\""));
    // With every connection taken, a new one waits; when one ends, it is served.
    let (addr, _runtime, _dir) = listening(Duration::from_secs(60), 2);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        third.read(&mut byte).is_err(),
        "served beyond the connection limit"
    );
    drop(held.pop());
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    third
        .read_to_end(&mut answer)
        .expect("served once a connection ended");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[test]
fn one_address_holds_at_most_its_share_of_connections_unless_it_is_a_trusted_proxy() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
    // Connects and sends nothing, as a client holding slots would; the server waits a minute
    // for its headers.
    let idle = |addr| {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    let get = |addr, path: &str| {
        let mut c = idle(addr);
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    let health = |addr| get(addr, "/healthz");
    let (addr, _runtime, _dir) = listening_with(|config| {
        config.header_timeout = Duration::from_secs(60);
        config.max_connections_per_address = 3;
    });
    let mut held: Vec<TcpStream> = (0..3).map(|_| idle(addr)).collect();
    // A fourth from the same address is answered at once and closed, not left to wait for a
    // slot (the server has 768): its request read and thrown away, so that the answer arrives
    // whole rather than as a reset.
    let answer = health(addr);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "too_many_connections", "{answer}");
    // A push's megabyte sent whole (a phone writes its body before it reads): the refusal is
    // read, not a broken pipe mid-body, which a phone would take for a body too large.
    let mut pushing = idle(addr);
    let body = vec![b' '; 1 << 20];
    write!(
        pushing,
        "POST /api/v1/sync/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    pushing.write_all(&body).expect("the body sent whole");
    let mut refused = Vec::new();
    let _ = pushing.read_to_end(&mut refused);
    assert!(refused.starts_with(b"HTTP/1.1 503"), "{refused:?}");
    // One that sends nothing is answered too, and closed: the read ends, it does not wait.
    let mut fourth = idle(addr);
    let mut refused = Vec::new();
    fourth
        .read_to_end(&mut refused)
        .expect("closed after its answer");
    assert!(refused.starts_with(b"HTTP/1.1 503"));
    // One of the three closed: the address may open another, and is served.
    drop(held.pop());
    let mut served = String::new();
    for _ in 0..50 {
        served = health(addr);
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(
        health(addr).starts_with("HTTP/1.1 200"),
        "its share was given back when the check closed"
    );
    let metrics = get(addr, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("baylink_connections_refused_total ")
                && l != "baylink_connections_refused_total 0"),
        "{metrics}"
    );
    drop(held);

    // A trusted proxy speaks for many clients: its connections are not limited by address.
    let (addr, _runtime, _dir) = listening_with(|config| {
        config.header_timeout = Duration::from_secs(60);
        config.max_connections_per_address = 3;
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    });
    let held: Vec<TcpStream> = (0..5).map(|_| idle(addr)).collect();
    assert!(health(addr).starts_with("HTTP/1.1 200"));
    drop(held);
}

#[test]
fn a_request_whose_body_stalls_is_answered_408_timeout_in_the_apis_shape() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let (addr, _runtime, _dir) = listening_with(|config| {
        config.body_timeout = Duration::from_secs(1);
    });
    // Sends `request` on a connection of its own, and reads the answer until it closes.
    let answer_to = |request: &[u8]| -> String {
        let mut connection = TcpStream::connect(addr).unwrap();
        connection
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        connection.write_all(request).unwrap();
        let mut answer = Vec::new();
        let _ = connection.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    // A sign-in that says 200 bytes and sends 20: answered when the time runs out, as JSON.
    let started = Instant::now();
    let answer = answer_to(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"username\": \"o1\",",
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "timeout", "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    // Like every answer, it says the server reads zstd; so does the body limit's, declared too
    // large before it is read, in the same shape.
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("accept-encoding: zstd"),
        "{answer}"
    );
    let answer = answer_to(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n{",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("accept-encoding: zstd"),
        "{answer}"
    );
    let protocol = format!(
        "{}: {}",
        baylink_sync::wire::PROTOCOL_HEADER,
        baylink_sync::wire::PROTOCOL_VERSION
    );
    assert!(answer.to_ascii_lowercase().contains(&protocol), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "too_large", "{answer}");
}

#[test]
fn a_body_sent_a_trickle_at_a_time_is_cut_at_its_stall_long_before_the_deadline() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let deadline = Duration::from_secs(120);
    let (addr, _runtime, _dir) = listening_with(|config| {
        config.body_timeout = deadline;
        config.body_stall = Duration::from_secs(1);
    });
    // A sign-in that says 4,000 bytes and sends one every 100 ms (a connection held for the
    // body deadline on a few bytes a second, were only the deadline counted).
    let mut connection = TcpStream::connect(addr).unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    connection
        .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{")
        .unwrap();
    let started = Instant::now();
    let mut writer = connection.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < 3000 && writer.write_all(b" ").is_ok() {
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        sent
    });
    let mut answer = Vec::new();
    let _ = connection.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "timeout", "{answer}");
    // Cut once its waits add up to the stall, and closed (read to its end above), not held
    // for the deadline.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < deadline / 2, "{:?}", started.elapsed());
    drop(connection);
    assert!(trickle.join().unwrap() < 3000);

    // A sign-in's body of 60 KiB sent in 4 KiB pieces every 150 ms, longer than the stall in
    // all but 16 KiB within each second of waiting: read whole, answered on its merits.
    let password = "x".repeat(60 * 1024);
    let login = format!(r#"{{"username": "o1", "password": "{password}"}}"#);
    let mut connection = TcpStream::connect(addr).unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        connection,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        login.len()
    )
    .unwrap();
    for piece in login.as_bytes().chunks(4096) {
        std::thread::sleep(Duration::from_millis(150));
        connection.write_all(piece).unwrap();
    }
    let mut answer = Vec::new();
    let _ = connection.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(!answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}

#[test]
fn a_small_body_is_read_as_sent_never_decompressed() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let (addr, _runtime, _dir) = listening_with(|_| {});
    // A sign-in's body of 100 KiB on the wire that expands to `{}`: a skippable zstd frame (read
    // and dropped) before the frame that holds it. Were it decompressed, the small limit would
    // count 2 bytes of it, and its sender could go on sending for the whole body deadline.
    let mut body = 0x184D_2A50u32.to_le_bytes().to_vec();
    body.extend((100u32 * 1024).to_le_bytes());
    body.extend(std::iter::repeat_n(b' ', 100 * 1024));
    body.extend(zstd::bulk::compress(b"{}", 3).unwrap());
    let mut connection = TcpStream::connect(addr).unwrap();
    connection
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        connection,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: zstd\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = connection.write_all(&body);
    let mut answer = Vec::new();
    let _ = connection.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    assert!(answer.contains("unsupported_encoding"), "{answer}");
}

/// How a device key matches the test device's keys.
fn key_match(state: &AppState, key: &str) -> KeyMatch {
    let key = key.to_owned();
    db(state)
        .call_blocking(move |conn| {
            let o1 = accounts::account_by_username(conn, "o1")?.map(|a| a.id);
            devices::device_key_matches(conn, DEVICE, o1, &key)
        })
        .unwrap()
}

#[tokio::test]
async fn a_device_keeps_its_key_while_it_proves_it_and_a_lost_answer_cuts_no_one_off() {
    let (state, _dir) = state();
    let login = |key: Option<&str>| {
        Body::from(
            json!({"username": "o1", "password": "correct-horse-battery", "device_id": DEVICE,
                   "device_name": "t", "device_key": key})
            .to_string(),
        )
    };
    let sign_in = |key: Option<String>| {
        let state = state.clone();
        async move {
            let (status, body, _) = call(
                &state,
                "POST",
                "/api/v1/auth/login",
                None,
                login(key.as_deref()),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let key_of = |body: &Value| body["device_key"].as_str().map(str::to_owned);
    let key1 = key_of(&sign_in(None).await).expect("a first key");
    assert_eq!(key_match(&state, &key1), KeyMatch::Current);
    // Proved: the device keeps its key, none is sent.
    assert_eq!(key_of(&sign_in(Some(key1.clone())).await), None);
    // Not proved (the phone lost its key, or someone holding the password signs in as it): a
    // new key, and the last one keeps counting beside it.
    let key2 = key_of(&sign_in(None).await).expect("a new key");
    assert_eq!(key_match(&state, &key2), KeyMatch::Current);
    assert_eq!(key_match(&state, &key1), KeyMatch::Previous);
    // The phone never got key2 (the answer was lost): its key1 still proves it, and it is given
    // a new key while key1 keeps counting until then.
    let key3 = key_of(&sign_in(Some(key1.clone())).await).expect("a new key");
    assert_eq!(key_match(&state, &key3), KeyMatch::Current);
    assert_eq!(key_match(&state, &key1), KeyMatch::Previous);
    assert_eq!(key_match(&state, &key2), KeyMatch::No);
    assert_eq!(key_match(&state, &"f".repeat(64)), KeyMatch::No);
    // Disabling the account ends its devices' keys; enabling it revives none.
    for access in [Access::Disabled, Access::Enabled] {
        let store = state.store.clone();
        store
            .set_access(Actor::Operator, "o1".into(), access)
            .await
            .unwrap();
    }
    assert_eq!(key_match(&state, &key3), KeyMatch::No);
    assert_eq!(key_match(&state, &key1), KeyMatch::No);
}

#[tokio::test]
async fn a_device_registered_before_device_keys_gets_one_at_its_next_refresh_and_keeps_it() {
    let (state, _dir) = state();
    let login = || login_body("o1", "correct-horse-battery");
    let (status, first, _) = call(&state, "POST", "/api/v1/auth/login", None, login()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first["device_key"].as_str().is_some_and(|k| k.len() >= 32));
    let refresh = |token: &Value| {
        Body::from(json!({"device_id": DEVICE, "refresh_token": token}).to_string())
    };
    // A refresh leaves a device's key as it is.
    let (status, second, _) = call(
        &state,
        "POST",
        "/api/v1/auth/refresh",
        None,
        refresh(&first["refresh_token"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(second.get("device_key").is_none(), "{second}");
    // A device from before device keys has none: its next refresh gives it one.
    db(&state)
        .call_blocking(|conn| {
            conn.execute("UPDATE device SET key_hash = NULL", ())?;
            Ok(())
        })
        .unwrap();
    let (status, third, _) = call(
        &state,
        "POST",
        "/api/v1/auth/refresh",
        None,
        refresh(&second["refresh_token"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{third}");
    let key = third["device_key"].as_str().unwrap();
    assert_eq!(key_match(&state, key), KeyMatch::Current);
}

/// A push's body in zstd, as a phone sends it once told the server reads it.
async fn push_encoded(
    state: &AppState,
    token: &str,
    encoding: &str,
    body: Vec<u8>,
) -> (StatusCode, header::HeaderMap, Value) {
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/sync/push")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, encoding)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_push_in_zstd_is_read_a_body_expanding_past_the_limit_is_refused_and_the_server_says_it_reads_zstd()
 {
    let (state, _dir) = state();
    let good = token(&state).await;
    let id = "1deb93b4-7149-564c-b8e2-e4671780f80f";
    let change = |counter: u64, field: &str, value: Value| {
        json!({
            "id": {"device": DEVICE, "counter": counter}, "kind": "person", "entity": id,
            "field": field, "value": value,
            "stamp": format!("{:016x}@{DEVICE}", (baylink_server::store::now_ms() << 16) + counter),
        })
    };
    let batch = json!({"protocol": 2, "device": DEVICE, "changes": [
        change(1, "village", json!("441303006001")),
        change(2, "id_type", json!("resident_id")),
        change(3, "id_number", json!("11010519491231002X")),
        change(4, "name", json!("王芳")),
    ]});
    let body = zstd::bulk::compress(batch.to_string().as_bytes(), 3).unwrap();
    let (status, headers, answer) = push_encoded(&state, &good, "zstd", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "accepted"),
        "{answer}"
    );
    assert_eq!(
        headers
            .get(header::ACCEPT_ENCODING)
            .map(|v| v.to_str().unwrap()),
        Some("zstd")
    );
    let db = db(&state);
    let names = |db: &Db| -> i64 {
        db.call_blocking(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM entity WHERE state -> '$.f.name' IS NOT NULL",
                (),
                |r| r.get(0),
            )?)
        })
        .unwrap()
    };
    assert_eq!(names(&db), 1);
    // A few kilobytes that expand to 50 MB (the limit here is 64 KB): refused before it is read
    // whole, nothing stored.
    let mut bomb = br#"{"protocol": 2, "device": ""#.to_vec();
    bomb.extend(DEVICE.as_bytes());
    bomb.extend(br#"", "changes": ["#);
    bomb.extend(std::iter::repeat_n(b' ', 50_000_000));
    bomb.extend(b"]}");
    let small = zstd::bulk::compress(&bomb, 19).unwrap();
    assert!(small.len() < 64 * 1024, "{} bytes", small.len());
    let (status, _, answer) = push_encoded(&state, &good, "zstd", small).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large", "{answer}");
    // Not zstd after all, or an encoding the server does not read: refused, nothing stored.
    let (status, _, _) = push_encoded(&state, &good, "zstd", b"{}not zstd".to_vec()).await;
    assert!(status.is_client_error(), "{status}");
    let gzip = batch.to_string().into_bytes();
    let (status, _, _) = push_encoded(&state, &good, "gzip", gzip).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(names(&db), 1);
}

#[tokio::test]
async fn pushes_of_both_protocol_versions_are_read_alike_and_a_replay_in_the_other_form_applies_nothing()
 {
    let (state, _dir) = state();
    let good = token(&state).await;
    let stamp = |n: u64| {
        format!(
            "{:016x}@{DEVICE}",
            (baylink_server::store::now_ms() << 16) + n
        )
    };
    // Two persons of the same fields: one pushed change by change (version 2), the other as
    // one action (version 3), each under one stamp.
    let fields = |n: u64| {
        [
            ("village", json!("441303006001")),
            ("id_type", json!("passport")),
            ("id_number", json!(format!("E{n:07}"))),
            ("name", json!(format!("P{n}"))),
        ]
    };
    // Each under the id a phone derives from her passport.
    let id_of = |n: u64| {
        let values: baylink_domain::Fields = fields(n)
            .into_iter()
            .map(|(f, v)| (f.to_owned(), v))
            .collect();
        baylink_domain::natural_id(baylink_domain::EntityKind::Person, &values)
            .unwrap()
            .to_string()
    };
    let (first, second) = (id_of(1), id_of(2));
    let (first, second) = (first.as_str(), second.as_str());
    let one_stamp = stamp(1);
    let changes: Vec<Value> = fields(1)
        .iter()
        .enumerate()
        .map(|(i, (field, value))| {
            json!({
                "id": {"device": DEVICE, "counter": i + 1}, "kind": "person", "entity": first,
                "field": field, "value": value, "stamp": one_stamp,
            })
        })
        .collect();
    let old = json!({"protocol": 2, "device": DEVICE, "changes": changes});
    let (status, body) = push(&state, &good, &old).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let action_fields: Vec<Value> = fields(2)
        .iter()
        .enumerate()
        .map(|(i, (field, value))| json!({"counter": i + 5, "field": field, "value": value}))
        .collect();
    let new = json!({"protocol": 3, "device": DEVICE, "changes": [], "actions": [
        {"kind": "person", "entity": second, "stamp": stamp(2), "fields": action_fields},
    ]});
    let (status, body) = push(&state, &good, &new).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counters: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "accepted", "{r}");
            r["counter"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(counters, [5, 6, 7, 8]);
    // The first push again as an action: answered as the first time, applied once.
    let replayed: Vec<Value> = fields(1)
        .iter()
        .enumerate()
        .map(|(i, (field, value))| json!({"counter": i + 1, "field": field, "value": value}))
        .collect();
    let again = json!({"protocol": 3, "device": DEVICE, "changes": [], "actions": [
        {"kind": "person", "entity": first, "stamp": one_stamp, "fields": replayed},
    ]});
    let before = db(&state)
        .call_blocking(baylink_server::store::snapshot::read)
        .unwrap();
    let (status, body) = push(&state, &good, &again).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "accepted")
    );
    let after = db(&state)
        .call_blocking(baylink_server::store::snapshot::read)
        .unwrap();
    assert_eq!(after.history, before.history);
    assert_eq!(after.last_seq, before.last_seq);
    // Both persons hold the same fields, each with its own stamp, and the server says it
    // speaks version 3.
    for (id, n) in [(first, 1), (second, 2)] {
        let id = uuid::Uuid::parse_str(id).unwrap();
        for (field, value) in fields(n) {
            assert_eq!(after.value(id, field), Some(&value), "{id} {field}");
        }
        assert_eq!(after.value(id, "created_by"), Some(&json!("o1")));
    }
    let (_, headers, _) = call_raw(
        &state,
        "POST",
        "/api/v1/sync/push",
        Some(&good),
        Body::from(new.to_string()),
    )
    .await;
    assert_eq!(headers["baylink-protocol"], "3");
}

/// A login's status as it arrives from `peer` with an `X-Forwarded-For` header.
async fn login_from(
    state: &AppState,
    peer: &str,
    forwarded: Option<&str>,
    user: &str,
) -> StatusCode {
    let peer: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
    let mut request = Request::builder()
        .method("POST")
        .uri("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .extension(axum::extract::ConnectInfo(peer));
    if let Some(value) = forwarded {
        request = request.header("x-forwarded-for", value);
    }
    let response = app(state.clone())
        .oneshot(request.body(login_body(user, "wrong password")).unwrap())
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_throttled_on_its_own_address_and_no_one_else_is_heard()
 {
    let (plain, _dir) = state();
    let mut config = (*plain.config).clone();
    config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let proxied = AppState {
        config: std::sync::Arc::new(config),
        ..plain.clone()
    };
    let proxy = "10.0.0.5";
    // One client behind the proxy guesses at 30 names: its address is throttled.
    for n in 0..30 {
        let status = login_from(&proxied, proxy, Some("203.0.113.5"), &format!("u{n}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let next = login_from(&proxied, proxy, Some("203.0.113.5"), "another").await;
    assert_eq!(next, StatusCode::TOO_MANY_REQUESTS);
    // Writing another address in front of its own changes nothing.
    let spoofed = login_from(&proxied, proxy, Some("198.51.100.99, 203.0.113.5"), "x").await;
    assert_eq!(spoofed, StatusCode::TOO_MANY_REQUESTS);
    // The station next door, behind the same proxy, still has its passwords checked.
    let other = login_from(&proxied, proxy, Some("198.51.100.7"), "another").await;
    assert_eq!(other, StatusCode::UNAUTHORIZED);
    // Straight to the server, a header names nothing: 30 guesses each "from" somewhere new
    // are 30 from the one address they come from.
    for n in 0..30 {
        let fake = format!("192.0.2.{n}");
        let status = login_from(&proxied, "198.51.100.50", Some(&fake), &format!("v{n}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let next = login_from(&proxied, "198.51.100.50", Some("192.0.2.200"), "w").await;
    assert_eq!(next, StatusCode::TOO_MANY_REQUESTS);
    // A server that trusts no proxy reads no header: the proxy's own address counts.
    for n in 0..30 {
        let client = format!("192.0.2.{n}");
        login_from(&plain, "10.0.0.9", Some(&client), &format!("p{n}")).await;
    }
    let next = login_from(&plain, "10.0.0.9", Some("192.0.2.250"), "q").await;
    assert_eq!(next, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn metrics_count_requests_pushes_and_logins_and_every_answer_names_its_request() {
    let (state, _dir) = state();
    let (status, _, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "wrong password"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let good = token(&state).await;
    // The id its natural key (the ID number) gives.
    let entity = "1deb93b4-7149-564c-b8e2-e4671780f80f";
    let change = |counter: u64, field: &str, value: Value| {
        json!({
            "id": {"device": DEVICE, "counter": counter}, "kind": "person", "entity": entity,
            "field": field, "value": value, "stamp": format!("{:016x}@{DEVICE}", (baylink_server::store::now_ms() << 16) + counter),
        })
    };
    let batch = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(1, "village", json!("441303006001")),
        change(2, "id_type", json!("resident_id")),
        change(3, "id_number", json!("11010519491231002X")),
        change(4, "name", json!("王芳")),
    ]});
    let (status, body) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "accepted"),
        "{body}"
    );
    // A phone number one digit short is refused.
    let wrong = json!({"protocol": 1, "device": DEVICE, "changes": [
        change(5, "phone", json!("1380013800")),
    ]});
    let (status, body) = push(&state, &good, &wrong).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let ask = json!({"protocol": 1, "limit": 10, "cursor": cursor});
        let (status, page, _) = call(
            &state,
            "POST",
            "/api/v1/sync/pull",
            Some(&good),
            Body::from(ask.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        cursor = page["next_cursor"].clone();
        if page["more"] != json!(true) {
            break;
        }
    }
    let (status, headers, bytes) = call_raw(&state, "GET", "/metrics", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(bytes).unwrap();
    for line in [
        "baylink_http_requests_total{route=\"/api/v1/auth/login\",method=\"POST\",status=\"401\"} 1",
        "baylink_http_requests_total{route=\"/api/v1/auth/login\",method=\"POST\",status=\"200\"} 1",
        "baylink_http_requests_total{route=\"/api/v1/sync/push\",method=\"POST\",status=\"200\"} 2",
        "baylink_push_changes_total{result=\"invalid\"} 1",
        "baylink_push_changes_total{result=\"accepted\"} 4",
        "baylink_login_failures_total 1",
        "baylink_active_devices 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    let sent = format!("baylink_pull_pages_total {pages}");
    assert!(text.lines().any(|l| l == sent), "{text}");
    // Nothing of the record, its person or the query reaches a label.
    assert!(
        !text.contains(entity) && !text.contains("王芳") && !text.contains("11010519491231002X")
    );
    // Every answer names its request: the proxy's id when it is a short token, else a new one.
    let named = |id: &str| {
        let request = Request::builder()
            .uri("/livez")
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap();
        let state = state.clone();
        async move {
            let response = app(state).oneshot(request).await.unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(named("lb-7f3a.42").await, "lb-7f3a.42");
    let replaced = named(&"x".repeat(200)).await;
    assert_eq!(replaced.len(), 36, "{replaced}");
}

#[tokio::test]
async fn a_device_sign_in_is_audited_and_a_refresh_is_not() {
    let (state, _dir) = state();
    let login = || login_body("o1", "correct-horse-battery");
    let (status, first, _) = call(&state, "POST", "/api/v1/auth/login", None, login()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let refresh = Body::from(
        json!({"device_id": DEVICE, "refresh_token": first["refresh_token"]}).to_string(),
    );
    let (status, body, _) = call(&state, "POST", "/api/v1/auth/refresh", None, refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = call(&state, "POST", "/api/v1/auth/login", None, login()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "wrong password"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (page, _) = state
        .store
        .audit_page(
            baylink_server::store::contract::AuditFilter {
                action: Some("device_sign_in".into()),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2, "{:?}", page.entries);
    assert!(
        page.entries
            .iter()
            .all(|e| e.username.as_deref() == Some("o1") && e.target.as_deref() == Some(DEVICE))
    );
}

#[tokio::test]
async fn a_new_password_ends_every_session_of_the_account_and_only_it_signs_in() {
    let (state, _dir) = state();
    let (status, first, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "correct-horse-battery"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let access = first["access_token"].as_str().unwrap().to_owned();
    let pull = || Body::from(json!({"protocol": 1, "limit": 10}).to_string());
    let (status, _, _) = call(&state, "POST", "/api/v1/sync/pull", Some(&access), pull()).await;
    assert_eq!(status, StatusCode::OK);
    state
        .store
        .set_password(
            Actor::Operator,
            "o1".into(),
            auth::password::hash("a-new-long-password").unwrap(),
        )
        .await
        .unwrap();
    // The phone that held the old password holds nothing that works any more.
    let (status, body, _) = call(&state, "POST", "/api/v1/sync/pull", Some(&access), pull()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let refresh = Body::from(
        json!({"device_id": DEVICE, "refresh_token": first["refresh_token"]}).to_string(),
    );
    let (status, body, _) = call(&state, "POST", "/api/v1/auth/refresh", None, refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Told its session ended, not taken for a stolen token replayed.
    assert_eq!(body["error"]["code"], "invalid_token", "{body}");
    let (status, _, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "correct-horse-battery"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        login_body("o1", "a-new-long-password"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (page, _) = state
        .store
        .audit_page(
            baylink_server::store::contract::AuditFilter {
                action: Some("set_password".into()),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1, "{:?}", page.entries);
    assert_eq!(page.entries[0].target.as_deref(), Some("o1"));
    let refused = state
        .store
        .set_password(Actor::Operator, "nobody".into(), "x".into())
        .await;
    assert!(refused.is_err());
}

/// A body that sends what it is given and then waits, as a client sending slowly does, until
/// its sender goes (it then ends, short).
struct Trickle(tokio::sync::mpsc::Receiver<axum::body::Bytes>);

impl futures_core::Stream for Trickle {
    type Item = Result<axum::body::Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|bytes| bytes.map(Ok))
    }
}

/// A person's changes of `device` under one stamp, counters from `first`: a passport's number,
/// under the id a phone derives from it.
fn person_changes(device: &str, first: u64, number: &str) -> Vec<Value> {
    let fields: baylink_domain::Fields = [
        ("village", json!("441303006001")),
        ("id_type", json!("passport")),
        ("id_number", json!(number)),
    ]
    .into_iter()
    .map(|(f, v)| (f.to_owned(), v))
    .collect();
    let id = baylink_domain::natural_id(baylink_domain::EntityKind::Person, &fields)
        .unwrap()
        .to_string();
    let stamp = format!(
        "{:016x}@{device}",
        (baylink_server::store::now_ms() << 16) + first
    );
    [
        ("village", "441303006001"),
        ("id_type", "passport"),
        ("id_number", number),
        ("name", "王芳"),
    ]
    .iter()
    .zip(first..)
    .map(|((field, value), counter)| {
        json!({
            "id": {"device": device, "counter": counter}, "kind": "person", "entity": id,
            "field": field, "value": value, "stamp": stamp,
        })
    })
    .collect()
}

/// The rows of every record as stored, to tell that nothing changed.
fn records(state: &AppState) -> Vec<(String, String)> {
    db(state)
        .call_blocking(|c| {
            let mut statement = c.prepare("SELECT id, state FROM entity ORDER BY id")?;
            let rows = statement
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .unwrap()
}

#[tokio::test]
async fn an_account_has_four_pushes_under_way_at_most_and_another_account_is_not_held_up() {
    use baylink_server::pushing::PER_ACCOUNT;
    let (state, _dir) = state();
    let good = token(&state).await;
    let o1 = db(&state)
        .call_blocking(|c| Ok(accounts::account_by_username(c, "o1")?.unwrap().id))
        .unwrap();
    // Another officer of the village, on a phone of their own.
    officer(&db(&state), "o2", "another-horse-battery");
    let other_device = "6a1f8c3e-0000-4000-8000-000000000002";
    let (status, answer, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        Body::from(
            json!({"username": "o2", "password": "another-horse-battery",
                   "device_id": other_device, "device_name": "t2"})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let other = answer["access_token"].as_str().unwrap().to_owned();

    // o1's phone begins four pushes and sends their bodies slowly.
    let mut senders = Vec::new();
    let mut slow = Vec::new();
    for _ in 0..PER_ACCOUNT {
        let (send, receive) = tokio::sync::mpsc::channel(1);
        send.send(axum::body::Bytes::from_static(b"{\"protocol\": 2, "))
            .await
            .unwrap();
        senders.push(send);
        let (state, good) = (state.clone(), good.clone());
        slow.push(tokio::spawn(async move {
            let body = Body::from_stream(Trickle(receive));
            call(&state, "POST", "/api/v1/sync/push", Some(&good), body).await
        }));
    }
    let started = std::time::Instant::now();
    while state.pushing.under_way(o1) < PER_ACCOUNT {
        assert!(started.elapsed().as_secs() < 10, "the slow pushes began");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A fifth is told to come back in a second, before its body is read; nothing is stored.
    let batch = json!({"protocol": 2, "device": DEVICE,
        "changes": person_changes(DEVICE, 1, "E0000001")});
    let (status, answer, retry) = call(
        &state,
        "POST",
        "/api/v1/sync/push",
        Some(&good),
        Body::from(batch.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "busy", "{answer}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(records(&state).is_empty());
    // Another officer pushes meanwhile.
    let theirs = json!({"protocol": 2, "device": other_device,
        "changes": person_changes(other_device, 1, "E0000002")});
    let (status, answer) = push(&state, &other, &theirs).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(all_accepted(&answer), "{answer}");
    // The slow bodies end short: each push is refused, its slot freed, and the fifth goes.
    drop(senders);
    for task in slow {
        let (status, _, _) = task.await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(state.pushing.under_way(o1), 0);
    let (status, answer) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(records(&state).len(), 2);
}

#[tokio::test]
async fn every_body_but_a_push_is_held_to_a_few_kilobytes() {
    use baylink_server::SMALL_BODY_BYTES;
    let (state, _dir) = state_taking(8 * 1024 * 1024);
    let good = token(&state).await;
    let big = format!(
        "{{\"username\": \"o1\", \"password\": \"{}\"}}",
        "x".repeat(SMALL_BODY_BYTES)
    );
    let too_large = |status: StatusCode, body: &Value| {
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["code"], "too_large", "{body}");
    };
    // A sign-in, declared large or sent without a length, or in zstd (refused as it is).
    let (status, body, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        Body::from(big.clone()),
    )
    .await;
    too_large(status, &body);
    let (send, receive) = tokio::sync::mpsc::channel(big.len() / (16 * 1024) + 1);
    for part in big.as_bytes().chunks(16 * 1024) {
        send.send(axum::body::Bytes::copy_from_slice(part))
            .await
            .unwrap();
    }
    drop(send);
    let (status, body, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        Body::from_stream(Trickle(receive)),
    )
    .await;
    too_large(status, &body);
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "zstd")
        .body(Body::from(zstd::bulk::compress(big.as_bytes(), 3).unwrap()))
        .unwrap();
    // Never decompressed: only a push's body may come in zstd.
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A pull's request, and a console form.
    let pull = format!(
        "{{\"protocol\": 2, \"limit\": 10, \"padding\": \"{}\"}}",
        "x".repeat(SMALL_BODY_BYTES)
    );
    let (status, body, _) = call(
        &state,
        "POST",
        "/api/v1/sync/pull",
        Some(&good),
        Body::from(pull),
    )
    .await;
    too_large(status, &body);
    let form = Request::builder()
        .method("POST")
        .uri("/console/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "username=o1&password={}",
            "x".repeat(SMALL_BODY_BYTES)
        )))
        .unwrap();
    let response = app(state.clone()).oneshot(form).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A push of the same size is read: persons with long notes.
    let mut changes = Vec::new();
    for n in 0..80u64 {
        let mut person = person_changes(DEVICE, n * 5 + 1, &format!("E{n:07}"));
        let mut notes = person[0].clone();
        notes["id"]["counter"] = json!(n * 5 + 5);
        notes["field"] = json!("notes");
        notes["value"] = json!("走访记录".repeat(150));
        person.push(notes);
        changes.extend(person);
    }
    let batch = json!({"protocol": 2, "device": DEVICE, "changes": changes});
    assert!(batch.to_string().len() > 2 * SMALL_BODY_BYTES);
    let (status, answer) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(all_accepted(&answer), "{answer}");
}

#[tokio::test]
async fn a_push_whose_values_would_take_more_memory_than_its_size_allows_is_refused_whole_and_unknown_members_are_skipped()
 {
    let (state, _dir) = state_taking(8 * 1024 * 1024);
    let good = token(&state).await;
    let mut changes = person_changes(DEVICE, 1, "E0000001");
    let id = changes[0]["entity"].clone();
    // Half a million zeros in one value: a megabyte of body, 48 of parsed JSON as counted.
    let mut flood = changes[3].clone();
    flood["id"]["counter"] = json!(5);
    flood["field"] = json!("notes");
    flood["value"] = json!(vec![0; 500_000]);
    changes.push(flood);
    let batch = json!({"protocol": 2, "device": DEVICE, "changes": changes.clone()});
    let (status, answer) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("value:"),
        "{answer}"
    );
    assert!(records(&state).is_empty());
    // As actions, the same.
    let actions = json!({"protocol": 3, "device": DEVICE, "changes": [], "actions": [{
        "kind": "person", "entity": id, "stamp": changes[0]["stamp"],
        "fields": [{"counter": 5, "field": "notes", "value": vec![0; 500_000]}],
    }]});
    let (status, answer) = push(&state, &good, &actions).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(records(&state).is_empty());
    // The same megabyte as members the server does not know is skipped, never stored; the
    // changes beside it are taken.
    changes.pop();
    changes[3]["signature"] = json!(vec![0; 250_000]);
    let batch = json!({"protocol": 2, "device": DEVICE, "changes": changes,
        "priority": vec![0; 250_000]});
    let (status, answer) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(all_accepted(&answer), "{answer}");
    let stored = records(&state);
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].1.contains("signature") && !stored[0].1.contains("priority"));
}

/// What a hostile body is made of: values of any shape and size, unknown members beside them.
#[derive(Debug, Clone)]
struct HostileBody {
    /// Each change's value: a JSON tree, perhaps repeated into a long array.
    values: Vec<(Value, usize)>,
    /// An unknown member's size (zeros), on the push and on each change.
    unknown: usize,
    zstd: bool,
}

fn hostile_body() -> impl proptest::strategy::Strategy<Value = HostileBody> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z王芳]{0,6}".prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (
        prop::collection::vec(
            (
                tree,
                prop_oneof![3 => Just(0usize), 1 => 1..200usize, 1 => 1_000..60_000usize],
            ),
            1..4,
        ),
        prop_oneof![Just(0usize), 1..50_000usize],
        any::<bool>(),
    )
        .prop_map(|(values, unknown, zstd)| HostileBody {
            values,
            unknown,
            zstd,
        })
}

#[test]
fn hostile_bodies_of_any_shape_are_answered_within_their_budget_and_store_nothing_unknown() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (state, _dir) = state_taking(4 * 1024 * 1024);
    let good = runtime.block_on(token(&state));
    let counter = std::cell::Cell::new(0u64);
    let config = ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in hostile_body())| {
        let first = counter.get() + 1;
        let mut changes = person_changes(DEVICE, first, &format!("E{first:07}"));
        for (n, (tree, repeat)) in body.values.iter().enumerate() {
            let mut change = changes[0].clone();
            change["id"]["counter"] = json!(first + 4 + n as u64);
            change["field"] = json!(["notes", "phone", "occupation"][n % 3]);
            change["value"] = if *repeat == 0 {
                tree.clone()
            } else {
                Value::Array(vec![tree.clone(); *repeat])
            };
            if body.unknown > 0 {
                change["signature"] = json!(vec![0; body.unknown]);
            }
            changes.push(change);
        }
        counter.set(first + 3 + body.values.len() as u64);
        let mut batch = json!({"protocol": 2, "device": DEVICE, "changes": changes});
        if body.unknown > 0 {
            batch["priority"] = json!(vec![1; body.unknown]);
        }
        let text = batch.to_string();
        // What the server's parse spends of its budget, as the same parse here counts it.
        let (_, counted) = baylink_sync::bounded::spending(|| {
            serde_json::from_str::<baylink_sync::wire::PushRequest>(&text)
        });
        let over = counted > baylink_sync::bounded::budget_for(text.len())
            || text.len() > state.config.max_body_bytes;
        let before = records(&state);
        let (status, answer) = if body.zstd {
            let (status, _, answer) = runtime.block_on(push_encoded(
                &state,
                &good,
                "zstd",
                zstd::bulk::compress(text.as_bytes(), 1).unwrap(),
            ));
            (status, answer)
        } else {
            runtime.block_on(push(&state, &good, &batch))
        };
        if over {
            // Refused whole (by its budget, or its size), before anything of it is applied.
            prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer);
            prop_assert_eq!(records(&state), before);
        } else {
            // Within its budget, a well-formed body is read: each change answered on its own.
            prop_assert_eq!(status, StatusCode::OK, "{}", answer);
            let results = answer["results"].as_array().unwrap();
            prop_assert_eq!(results.len(), 4 + body.values.len());
        }
        // Nothing of an unknown member is ever stored.
        prop_assert!(records(&state)
            .iter()
            .all(|(_, s)| !s.contains("signature") && !s.contains("priority")));
    });
    // The server serves on: an honest push after them all is taken.
    let first = counter.get() + 1;
    let batch = json!({"protocol": 2, "device": DEVICE,
        "changes": person_changes(DEVICE, first, "E9999999")});
    let (status, answer) = runtime.block_on(push(&state, &good, &batch));
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn a_long_kind_or_field_name_is_refused_before_an_action_is_read_as_changes() {
    let (state, _dir) = state();
    let good = token(&state).await;
    let changes = person_changes(DEVICE, 1, "E0000001");
    let fields: Vec<Value> = changes
        .iter()
        .map(|c| json!({"counter": c["id"]["counter"], "field": c["field"], "value": c["value"]}))
        .collect();
    // Each of an action's changes carries its kind: 20,000 fields under a kind of megabytes
    // would be gigabytes. A kind is a short word; one past the longest is refused whole.
    let kind = "p".repeat(baylink_server::routes::sync::MAX_NAME_BYTES + 1);
    let batch = json!({"protocol": 3, "device": DEVICE, "changes": [], "actions": [
        {"kind": kind, "entity": changes[0]["entity"], "stamp": changes[0]["stamp"], "fields": fields},
    ]});
    let (status, answer) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("actions: a kind or field name"),
        "{answer}"
    );
    assert!(records(&state).is_empty());
    // So is a change naming a long field, in either form.
    let mut long_field = changes.clone();
    long_field[3]["field"] = json!("n".repeat(baylink_server::routes::sync::MAX_NAME_BYTES + 1));
    let old = json!({"protocol": 2, "device": DEVICE, "changes": long_field});
    let (status, answer) = push(&state, &good, &old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let mut long_action = batch.clone();
    long_action["actions"][0]["kind"] = json!("person");
    long_action["actions"][0]["fields"][3]["field"] =
        json!("n".repeat(baylink_server::routes::sync::MAX_NAME_BYTES + 1));
    let (status, answer) = push(&state, &good, &long_action).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(records(&state).is_empty());
    // The same action under its own kind is taken.
    let mut batch = batch;
    batch["actions"][0]["kind"] = json!("person");
    let (status, answer) = push(&state, &good, &batch).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(records(&state).len(), 1);
}

#[test]
fn headers_longer_than_the_read_buffer_are_refused() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
    let (addr, _runtime, _dir) = listening(Duration::from_secs(10), 4);
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let padding = "x".repeat(baylink_server::listen::READ_BUFFER_BYTES);
    // The server may answer and close before the whole of it is written.
    let _ = client.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {padding}\r\n\r\n").as_bytes(),
    );
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    // Headers within it are served.
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let padding = "x".repeat(baylink_server::listen::READ_BUFFER_BYTES / 2);
    client
        .write_all(
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {padding}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

/// A reviewer or administrator reads her station in the console, each full ID number audited:
/// the device API, whose pull would hand her every one unmasked, refuses her sign-in (no device
/// registered), and a token or refresh token her device was given before is answered as a
/// revoked device's (the phone wipes what it pulled).
#[tokio::test]
async fn reviewers_and_administrators_are_refused_the_device_api() {
    let (state, _dir) = state();
    let db = db(&state);
    for (name, role, station) in [
        ("r006", Role::Reviewer, Some("441303006")),
        ("admin", Role::Admin, None),
    ] {
        let new = NewAccount {
            username: name.to_owned(),
            display_name: name.to_owned(),
            role,
            station: station.map(str::to_owned),
            password_hash: auth::password::hash("correct-horse-battery").unwrap(),
            villages: vec![],
        };
        let account = db
            .call_blocking(move |conn| accounts::create_account(conn, Actor::Operator, &new, 0))
            .unwrap();
        let body = login_body(name, "correct-horse-battery");
        let (status, answer, _) = call(&state, "POST", "/api/v1/auth/login", None, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/console/"),
            "{answer}"
        );
        let devices: i64 = db
            .call_blocking(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM device WHERE account = ?1",
                    [account],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(devices, 0, "{name}: no device registered");

        // A device registered and a session opened before the rule.
        let device = format!("6a1f8c3e-0000-4000-8000-00000000010{}", account % 10);
        let registered = device.clone();
        let refresh = db
            .call_blocking(move |conn| {
                devices::register_device(conn, &registered, account, "phone", 0)?;
                let account = accounts::account_by_username(conn, name)?.unwrap();
                baylink_server::store::signin::open_device_session(
                    conn,
                    &registered,
                    &account,
                    baylink_server::store::now_ms(),
                    3_600_000,
                    baylink_server::store::signin::NewKey::IfMissing,
                )
            })
            .unwrap()
            .refresh_token;
        let now = baylink_server::store::now_ms() / 1000;
        let claims = auth::token::Claims {
            sub: account,
            name: name.to_owned(),
            role,
            dev: device.clone(),
            iat: now,
            exp: now + 600,
            dgen: 0,
            agen: 0,
        };
        let token = state.keys.current().issue(&claims).unwrap();
        let pull = json!({"protocol": 2, "device": device, "cursor": null, "limit": 10});
        let (status, answer, _) = call(
            &state,
            "POST",
            "/api/v1/sync/pull",
            Some(&token),
            Body::from(pull.to_string()),
        )
        .await;
        // Answered as revoked: the phone wipes what it pulled before.
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("device_revoked")),
            "{name} pulled: {answer}"
        );
        let refresh = json!({"device_id": device, "refresh_token": refresh});
        let (status, answer, _) = call(
            &state,
            "POST",
            "/api/v1/auth/refresh",
            None,
            Body::from(refresh.to_string()),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("device_revoked")),
            "{name} refreshed: {answer}"
        );
    }
    // Officers sign in as before.
    token(&state).await;
}
