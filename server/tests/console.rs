//! The review console through `app(state).oneshot(request)`: sign-in, sessions, CSRF, masking,
//! the record page with its history, review decisions, and a reviewer of another station.

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::alerts::AlertsShown;
use baylink_server::store::caller::Caller;
use baylink_server::store::contract::{Access, Actor};
use baylink_server::store::{devices, push, records};
use baylink_server::{AppState, Config, app, auth, demo};
use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
use serde_json::json;
use tower::ServiceExt;
use uuid::Uuid;

#[path = "console/hostile.rs"]
mod hostile;

const PASSWORD: &str = "correct-horse-battery";
const VILLAGE: &str = "441303006001";

struct Console {
    state: AppState,
    db: baylink_server::store::Db,
    _dir: tempfile::TempDir,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    cookie: Option<String>,
    /// Every cookie set, in order.
    cookies: Vec<String>,
    body: String,
}

impl Console {
    /// A server with an officer's person record, a reviewer of its station (澳头) and one of another (霞涌).
    fn new() -> (Console, Uuid) {
        let dir = tempfile::tempdir().unwrap();
        let (state, db) = AppState::open(Config::new(dir.path())).unwrap();
        let hash = auth::password::hash(PASSWORD).unwrap();
        let person = db
            .call_blocking(|conn| {
                demo::seed_places(conn)?;
                let add = |conn: &baylink_server::store::conn::Conn<'_>,
                           name: &str,
                           role,
                           station: Option<&str>,
                           villages: &[String]| {
                    let new = NewAccount {
                        username: name.to_owned(),
                        display_name: name.to_owned(),
                        role,
                        station: station.map(str::to_owned),
                        password_hash: hash.clone(),
                        villages: villages.to_vec(),
                    };
                    accounts::create_account(conn, Actor::Operator, &new, 0)
                };
                let officer = add(
                    conn,
                    "o1",
                    Role::Officer,
                    Some("441303006"),
                    &[VILLAGE.to_owned()],
                )?;
                add(conn, "r006", Role::Reviewer, Some("441303006"), &[])?;
                add(conn, "r007", Role::Reviewer, Some("441303007"), &[])?;
                add(conn, "admin", Role::Admin, None, &[])?;
                let device = NodeId(Uuid::from_u128(1));
                devices::register_device(conn, &device.to_string(), officer, "phone", 0)?;
                let person = person_id("resident_id", "11010519491231002X");
                let now = baylink_server::store::now_ms();
                let stamp = Stamp::new(Hlc::new(now, 0), device);
                let changes: Vec<Change> = [
                    ("village", json!(VILLAGE)),
                    ("id_type", json!("resident_id")),
                    ("id_number", json!("11010519491231002X")),
                    ("name", json!("王芳")),
                    ("birth_date", json!("1949-12-31")),
                    ("phone", json!("13800138000")),
                    ("review_status", json!("pending")),
                    ("created_by", json!("o1")),
                    (
                        "created_at",
                        json!(baylink_domain::date::datetime_from_unix_ms(
                            now as i64,
                            baylink_domain::date::CHINA_OFFSET_MINUTES
                        )),
                    ),
                ]
                .into_iter()
                .enumerate()
                .map(|(i, (field, value))| Change {
                    id: ChangeId {
                        device,
                        counter: i as u64 + 1,
                    },
                    kind: "person".into(),
                    entity: person,
                    field: field.into(),
                    value,
                    stamp,
                    base: None,
                })
                .collect();
                let caller = Caller {
                    account: officer,
                    role: Role::Officer,
                    device: device.to_string(),
                    villages: vec![VILLAGE.into()],
                };
                push::push(conn, &caller, &changes, now, 60_000)?;
                Ok(person)
            })
            .unwrap();
        (
            Console {
                state,
                db,
                _dir: dir,
            },
            person,
        )
    }

    /// A page as the signed-in user whose session cookie is `cookie` reads it.
    async fn get(&self, path: &str, cookie: &str) -> Page {
        self.request("GET", path, Some(cookie), None).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Page {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let body = match form {
            Some(form) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(form.to_owned())
            }
            None => Body::empty(),
        };
        let response = app(self.state.clone())
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (status, location, cookie) = (
            response.status(),
            header_text(header::LOCATION),
            header_text(header::SET_COOKIE),
        );
        let cookies = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Page {
            status,
            location,
            cookie,
            cookies,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// The sign-in form's cookie and CSRF token, as a browser gets them.
    async fn login_form(&self) -> (String, String) {
        let form = self.request("GET", "/console/login", None, None).await;
        let cookie = form.cookie.expect("a sign-in cookie");
        let cookie = cookie.split(';').next().unwrap().to_owned();
        (cookie, csrf(&form.body))
    }

    /// Posts the sign-in form as a browser holding `known` (a known-browser cookie) would.
    async fn try_sign_in(&self, username: &str, password: &str, known: Option<&str>) -> Page {
        let (cookie, token) = self.login_form().await;
        let cookie = match known {
            Some(known) => format!("{cookie}; {known}"),
            None => cookie,
        };
        let form = format!("username={username}&password={password}&csrf={token}");
        self.request("POST", "/console/login", Some(&cookie), Some(&form))
            .await
    }

    /// Signs in and returns the cookie header value.
    async fn sign_in(&self, username: &str) -> String {
        let (cookie, token) = self.login_form().await;
        let page = self
            .request(
                "POST",
                "/console/login",
                Some(&cookie),
                Some(&format!(
                    "username={username}&password={PASSWORD}&csrf={token}"
                )),
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page.cookie.expect("a session cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        cookie.split(';').next().unwrap().to_owned()
    }
}

fn csrf(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn pages_need_a_reviewer_session_and_officers_cannot_sign_in() {
    let (console, _) = Console::new();
    let page = console.request("GET", "/console/", None, None).await;
    assert_eq!(
        (page.status, page.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/console/login"))
    );
    let page = console.request("GET", "/console/login", None, None).await;
    assert!(page.body.contains("审核台登录") && page.body.contains("lang=\"zh-CN\""));
    // A sign-in posted without the form's token (from another site's page, say) is refused.
    let page = console
        .request(
            "POST",
            "/console/login",
            None,
            Some(&format!("username=r006&password={PASSWORD}")),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.cookie.is_some_and(|c| c.starts_with("baylink_login=")));
    let (cookie, token) = console.login_form().await;
    let page = console
        .request(
            "POST",
            "/console/login",
            Some(&cookie),
            Some(&format!("username=o1&password={PASSWORD}&csrf={token}")),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("用户名或密码错误"));
    let page = console
        .request("GET", "/console/", Some("baylink_console=forged"), None)
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let cookie = console.sign_in("r006").await;
    let page = console.get("/console/", &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("桥西社区居民委员会"),
        "the station's villages are listed"
    );
}

#[tokio::test]
async fn guesses_from_elsewhere_never_lock_a_reviewer_out_of_a_browser_she_signed_in_from() {
    let (console, _) = Console::new();
    let page = console.try_sign_in("r006", PASSWORD, None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let known = page
        .cookies
        .iter()
        .find(|c| c.starts_with("baylink_browser="))
        .expect("a known-browser cookie");
    assert!(
        known.contains("HttpOnly") && known.contains("Path=/console/login"),
        "{known}"
    );
    let known = known.split(';').next().unwrap().to_owned();
    // Someone guesses her password until the account is locked.
    for _ in 0..6 {
        console.try_sign_in("r006", "guess", None).await;
    }
    let elsewhere = console.try_sign_in("r006", PASSWORD, None).await;
    assert_eq!(elsewhere.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        elsewhere.body.contains("分钟后再试") && elsewhere.body.contains("value=\"r006\""),
        "the wait said, the name kept: {}",
        elsewhere.body
    );
    // Her own browser still signs in; the cookie names her account and no other.
    let hers = console.try_sign_in("r006", PASSWORD, Some(&known)).await;
    assert_eq!(hers.status, StatusCode::SEE_OTHER, "{}", hers.body);
    for _ in 0..6 {
        console.try_sign_in("r007", "guess", None).await;
    }
    let borrowed = console.try_sign_in("r007", PASSWORD, Some(&known)).await;
    assert_eq!(borrowed.status, StatusCode::TOO_MANY_REQUESTS);
    let forged = known.replace("baylink_browser=", "baylink_browser=1");
    let forged = console.try_sign_in("r006", PASSWORD, Some(&forged)).await;
    assert_eq!(forged.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn disabling_an_account_ends_its_console_sessions_and_enabling_it_revives_none() {
    let (console, _) = Console::new();
    let cookie = console.sign_in("r006").await;
    let page = console.get("/console/", &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    for access in [Access::Disabled, Access::Enabled] {
        let store = console.state.store.clone();
        store
            .set_access(Actor::Operator, "r006".into(), access)
            .await
            .unwrap();
    }
    let page = console.get("/console/", &cookie).await;
    assert_eq!(
        (page.status, page.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/console/login"))
    );
}

#[tokio::test]
async fn a_number_corrected_past_its_mask_is_said_to_have_changed_in_the_history() {
    let (console, person) = Console::new();
    // A digit inside the mask corrected: both sides mask alike.
    push_as_officer(
        &console,
        "person",
        person,
        &[("phone", json!("13800998000"))],
    );
    let cookie = console.sign_in("r006").await;
    let path = format!("/console/records/{person}");
    let page = console.get(&path, &cookie).await;
    let row = page
        .body
        .split("<tr>")
        .find(|row| row.contains("138****8000</td><td>138****8000"))
        .unwrap_or_else(|| panic!("the phone's change in the history: {}", page.body));
    assert!(row.contains("号码已改"), "{row}");
    assert!(!page.body.contains("13800998000") && !page.body.contains("13800138000"));
    // Revealed, the digits tell it themselves.
    let page = console.get(&format!("{path}?reveal=1"), &cookie).await;
    assert!(page.body.contains("13800998000") && !page.body.contains("号码已改"));
}

#[tokio::test]
async fn lists_mask_id_numbers_and_phones_and_search_finds_by_id_number() {
    let (console, person) = Console::new();
    let cookie = console.sign_in("r006").await;
    let page = console
        .get("/console/records?kind=person&q=110105", &cookie)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&person.to_string()),
        "found by ID number prefix"
    );
    assert!(page.body.contains("110105************") && page.body.contains("138****8000"));
    assert!(
        !page.body.contains("11010519491231002X") && !page.body.contains("13800138000"),
        "unmasked in a list"
    );
    let page = console
        .get("/console/records?kind=person&q=999", &cookie)
        .await;
    assert!(!page.body.contains(&person.to_string()));
    // Searches by number reach past what the masks show (a region's digits can already read a
    // passport masked whole): each is audited with what was typed; a search by name is not.
    let searches = || {
        console
            .db
            .call_blocking(|c| baylink_server::store::audit::audit_log(c, 100))
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "search_hidden")
            .map(|e| (e.username.unwrap_or_default(), e.detail.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let page = console
        .get("/console/records?kind=person&q=1101051949", &cookie)
        .await;
    assert!(page.body.contains(&person.to_string()));
    let named = console
        .get("/console/records?q=%E7%8E%8B%E8%8A%B3", &cookie)
        .await;
    assert!(named.body.contains(&person.to_string()), "found by name");
    // Newest first, each under r006.
    let r006 = |typed: &str| ("r006".to_owned(), typed.to_owned());
    assert_eq!(
        searches(),
        [r006("1101051949"), r006("999"), r006("110105")]
    );
}

#[tokio::test]
async fn the_record_page_shows_history_reveals_the_id_number_audited_and_takes_a_review() {
    let (console, person) = Console::new();
    let cookie = console.sign_in("r006").await;
    let path = format!("/console/records/{person}");
    let page = console.get(&path, &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("修改历史") && page.body.contains("o1"),
        "history with its author"
    );
    assert!(!page.body.contains("11010519491231002X"));
    let page = console.get(&format!("{path}?reveal=1"), &cookie).await;
    assert!(page.body.contains("11010519491231002X"));
    let audited = console
        .state
        .store
        .snapshot()
        .await
        .unwrap()
        .audited("reveal_id_number");
    assert_eq!(audited, 1);
    // A review without the form's CSRF token is refused and changes nothing.
    let forged = console
        .request(
            "POST",
            &format!("{path}/review"),
            Some(&cookie),
            Some("csrf=nope&decision=approve"),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let token = csrf(&page.body);
    // A return without a comment comes back as the form, saying why, with nothing changed.
    let bare = console
        .request(
            "POST",
            &format!("{path}/review"),
            Some(&cookie),
            Some(&format!("csrf={token}&decision=return&comment=+")),
        )
        .await;
    assert_eq!(bare.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bare.body.contains("退回须填写原因") && bare.body.contains("name=\"comment\""),
        "{}",
        bare.body
    );
    assert!(!bare.body.contains("已退回"), "nothing was returned");
    // A comment the schema refuses (a right-to-left override) comes back the same way.
    let hidden = console
        .request(
            "POST",
            &format!("{path}/review"),
            Some(&cookie),
            Some(&format!(
                "csrf={token}&decision=return&comment=%E2%80%AEabc"
            )),
        )
        .await;
    assert_eq!(hidden.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(hidden.body.contains("U+202E"), "{}", hidden.body);
    assert!(!hidden.body.contains("已退回"), "nothing was returned");
    // Said at the top too (the form is below the fold at 1366×768), which names who she is and
    // where, not only her id and village code.
    let (alert, form_at) = (
        bare.body.find("role=\"alert\"").unwrap(),
        bare.body.find("name=\"comment\"").unwrap(),
    );
    assert!(
        alert < form_at && bare.body[..alert].contains("<h1>"),
        "{}",
        bare.body
    );
    let title = &bare.body[bare.body.find("<h1>").unwrap()..bare.body.find("</h1>").unwrap()];
    assert!(
        title.contains("王芳") && title.contains("110105****"),
        "{title}"
    );
    assert!(!title.contains("11010519491231002X"), "masked: {title}");
    assert!(
        bare.body.contains("桥西社区居民委员会"),
        "the village by its name"
    );
    let form = format!(
        "csrf={token}&decision=return&comment=%E6%88%B7%E7%B1%8D%E5%9C%B0%E5%9D%80%E6%9C%AA%E5%A1%AB"
    );
    let done = console
        .request(
            "POST",
            &format!("{path}/review"),
            Some(&cookie),
            Some(&form),
        )
        .await;
    // On to the next record waiting, or back to her when none is.
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(
        done.location
            .as_deref()
            .is_some_and(|to| to.contains(&format!("?reviewed={person}&"))),
        "{:?}",
        done.location
    );
    let page = console.get(&path, &cookie).await;
    assert!(
        page.body.contains("已退回") && page.body.contains("户籍地址未填"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("上次审核意见"), "{}", page.body);
    // The officer corrects her: pending again, the comment shown as the last decision's.
    push_as_officer(
        &console,
        "person",
        person,
        &[("household_address", json!("北京市西城区"))],
    );
    let page = console.get(&path, &cookie).await;
    assert!(
        page.body.contains("待审核") && page.body.contains("上次审核意见：户籍地址未填"),
        "{}",
        page.body
    );
}

/// The records a console list page links to, in its order, once each.
fn listed(body: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for part in body.split("/console/records/").skip(1) {
        let id: String = part
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect();
        if id.len() == 36 && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Three more persons of the station's village waiting for review (the console's own is a
/// fourth): a queue to work through.
fn three_passport_holders(console: &Console) {
    for (number, name) in [
        ("E24681357", "Anna"),
        ("E13572468", "Berta"),
        ("E11223344", "Clara"),
    ] {
        let fields = person_fields("passport", number, name);
        push_as_officer(console, "person", person_id("passport", number), &fields);
    }
}

#[tokio::test]
async fn a_record_passed_over_comes_round_again_only_after_the_rest() {
    let (console, _) = Console::new();
    three_passport_holders(&console);
    let cookie = console.sign_in("r006").await;
    let queue = listed(
        &console
            .get("/console/records?status=pending", &cookie)
            .await
            .body,
    );
    assert!(queue.len() >= 4, "{queue:?}");
    // Where a record's page leads to pass it over.
    let skip_of = |body: &str| {
        let at = body.find("跳过，看下一条")?;
        let link = body[..at].rfind("/console/records/")? + "/console/records/".len();
        Some(body[link..link + 36].to_owned())
    };
    let page = |id: String| {
        let console = &console;
        let cookie = &cookie;
        async move { console.get(&format!("/console/records/{id}"), cookie).await }
    };
    // The first offers to pass it over to the second.
    let first = page(queue[0].clone()).await;
    assert_eq!(
        skip_of(&first.body),
        Some(queue[1].clone()),
        "{}",
        first.body
    );
    // The second decided: on to the third, below it, not back up to the first passed over.
    let second = page(queue[1].clone()).await;
    let done = console
        .request(
            "POST",
            &format!("/console/records/{}/review", queue[1]),
            Some(&cookie),
            Some(&format!("csrf={}&decision=approve", csrf(&second.body))),
        )
        .await;
    let led = done.location.expect("led on");
    assert!(
        led.starts_with(&format!("/console/records/{}?", queue[2])),
        "{led}"
    );
    // The last passed over: round to the top, where the first still waits.
    let last = page(queue[queue.len() - 1].clone()).await;
    assert_eq!(skip_of(&last.body), Some(queue[0].clone()), "{}", last.body);
    // A decided record offers nothing to pass over.
    let decided = page(queue[1].clone()).await;
    assert!(skip_of(&decided.body).is_none(), "{}", decided.body);
}

#[tokio::test]
async fn a_person_who_moved_into_another_village_keeps_her_place_in_the_queue() {
    let (console, _) = Console::new();
    add_o7(&console);
    three_passport_holders(&console);
    let cookie = console.sign_in("r006").await;
    let pending = "/console/records?status=pending&kind=person";
    let queue = listed(&console.get(pending, &cookie).await.body);
    assert!(queue.len() >= 4, "{queue:?}");
    // The second of her list rents a room in 霞涌: sent on to that village under a new number,
    // she keeps her place in the list, which is ordered by her last write.
    let moved = Uuid::parse_str(&queue[1]).unwrap();
    let o7 = ("o7", 7, XIAYONG);
    let at_once = |fields: Vec<(&'static str, serde_json::Value)>| -> Vec<_> {
        fields.into_iter().map(|(f, v)| (f, v, 0)).collect()
    };
    let house = Uuid::now_v7();
    push_by(
        &console,
        o7,
        "house",
        house,
        &at_once(vec![
            ("village", json!(XIAYONG)),
            ("address", json!("霞涌路2号")),
            ("use", json!("rental")),
            ("status", json!("in_use")),
        ]),
    );
    let results = push_by(
        &console,
        o7,
        "residence",
        residence_id(moved, house, "2026-03-01"),
        &at_once(vec![
            ("village", json!(XIAYONG)),
            ("person", json!(moved.to_string())),
            ("house", json!(house.to_string())),
            ("moved_in", json!("2026-03-01")),
            ("relation", json!("tenant")),
        ]),
    );
    assert!(
        results
            .iter()
            .all(|r| r.status == baylink_sync::wire::ChangeStatus::Accepted),
        "{results:?}"
    );
    assert_eq!(listed(&console.get(pending, &cookie).await.body), queue);
    // Passing her over leads below her, not back to the top.
    let page = console
        .get(
            &format!("/console/records/{moved}?queue=status%3Dpending%26kind%3Dperson"),
            &cookie,
        )
        .await;
    let to_next = format!("/console/records/{}?queue=", queue[2]);
    assert!(page.body.contains(&to_next), "{}", page.body);
    // So does deciding on her.
    let done = console
        .request(
            "POST",
            &format!("/console/records/{moved}/review"),
            Some(&cookie),
            Some(&format!(
                "csrf={}&decision=approve&queue=status%3Dpending%26kind%3Dperson",
                csrf(&page.body)
            )),
        )
        .await;
    let led = done.location.expect("led on");
    assert!(
        led.starts_with(&format!("/console/records/{}?", queue[2])),
        "{led}"
    );
}

#[tokio::test]
async fn each_decision_leads_on_to_the_next_pending_record_until_none_is_left() {
    let (console, _) = Console::new();
    three_passport_holders(&console);
    let cookie = console.sign_in("r006").await;
    let queue = listed(
        &console
            .get("/console/records?status=pending", &cookie)
            .await
            .body,
    );
    assert!(queue.len() >= 4, "{queue:?}");
    // An address saying a record still waiting was decided is not believed.
    let made_up = console
        .get(
            &format!("/console/records/{}?reviewed={}", queue[0], queue[1]),
            &cookie,
        )
        .await;
    assert!(!made_up.body.contains("审核结果已保存"), "{}", made_up.body);
    let mut at = queue[0].clone();
    let mut decided = Vec::new();
    loop {
        let page = console
            .get(&format!("/console/records/{at}"), &cookie)
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body.contains("value=\"approve\""),
            "her own to decide: {at}"
        );
        let done = console
            .request(
                "POST",
                &format!("/console/records/{at}/review"),
                Some(&cookie),
                Some(&format!("csrf={}&decision=approve", csrf(&page.body))),
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);
        decided.push(at.clone());
        let to = done.location.expect("led on");
        let (next, reviewed) = to
            .strip_prefix("/console/records/")
            .and_then(|rest| rest.split_once("?reviewed="))
            .map(|(next, rest)| (next, rest.split('&').next().unwrap_or_default()))
            .expect("a record, and the one decided");
        assert_eq!(reviewed, at);
        let shown = console.get(&to, &cookie).await;
        if next == at {
            assert!(
                shown.body.contains("没有其他待审核的记录了"),
                "{}",
                shown.body
            );
            break;
        }
        // The next one is still waiting, and the page says the last decision was kept, with
        // the way back to it.
        assert!(!decided.iter().any(|d| d == next), "{next} decided already");
        assert!(
            shown.body.contains("上一条记录的审核结果已保存（已通过）")
                && shown
                    .body
                    .contains(&format!("href=\"/console/records/{at}\"")),
            "{}",
            shown.body
        );
        at = next.to_owned();
        assert!(decided.len() <= queue.len(), "{decided:?}");
    }
    // An approval without a comment, of a record that had none, writes the decision alone:
    // no empty comment replacing an empty one in the history.
    let first = console
        .get(&format!("/console/records/{}", decided[0]), &cookie)
        .await;
    assert!(first.body.contains("<td>审核状态</td>"), "{}", first.body);
    assert!(!first.body.contains("<td>审核意见</td>"), "{}", first.body);
    // Approved again: the history keeps what changed, nothing more.
    let rows = |body: &str| body.matches("<td>审核状态</td>").count();
    let again = console
        .request(
            "POST",
            &format!("/console/records/{}/review", decided[0]),
            Some(&cookie),
            Some(&format!("csrf={}&decision=approve", csrf(&first.body))),
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let after = console
        .get(&format!("/console/records/{}", decided[0]), &cookie)
        .await;
    assert_eq!(rows(&after.body), rows(&first.body), "{}", after.body);
    // Every record that was waiting was reached, one decision each; none waits now.
    let mut all = queue.clone();
    all.sort();
    decided.sort();
    assert_eq!(decided, all);
    let left = listed(
        &console
            .get("/console/records?status=pending", &cookie)
            .await
            .body,
    );
    assert!(left.is_empty(), "{left:?}");
    // An address made up to say so shows only a link to a record the page checks like any.
    let made_up = console
        .get(
            &format!("/console/records/{at}?reviewed=not-a-record"),
            &cookie,
        )
        .await;
    assert_eq!(made_up.status, StatusCode::OK);
    assert!(!made_up.body.contains("审核结果已保存"));
}

#[tokio::test]
async fn a_queue_opened_from_a_filtered_list_stays_within_its_filters() {
    let (console, _) = Console::new();
    for (number, name) in [("E24681357", "Anna"), ("E13572468", "Berta")] {
        let fields = person_fields("passport", number, name);
        push_as_officer(&console, "person", person_id("passport", number), &fields);
    }
    let plate = baylink_domain::Fields::from([
        ("plate".to_owned(), json!("粤L9Z876")),
        ("plate_kind".to_owned(), json!("small")),
    ]);
    let vehicle = baylink_domain::natural_id(baylink_domain::EntityKind::Vehicle, &plate).unwrap();
    push_as_officer(
        &console,
        "vehicle",
        vehicle,
        &[
            ("village", json!(VILLAGE)),
            ("plate", json!("粤L9Z876")),
            ("vehicle_type", json!("car")),
        ],
    );
    let cookie = console.sign_in("r006").await;
    // Persons waiting: her list filtered so, and each record's link carries the filters.
    let list = console
        .get("/console/records?kind=person&status=pending", &cookie)
        .await;
    let persons = listed(&list.body);
    assert!(
        persons.len() >= 3 && !persons.contains(&vehicle.to_string()),
        "{persons:?}"
    );
    let carried = list
        .body
        .split("href=\"")
        .find(|h| h.starts_with(&format!("/console/records/{}?queue=", persons[0])))
        .and_then(|h| h.split('"').next())
        .expect("a link that carries the list's filters")
        .replace("&amp;", "&");
    assert_eq!(
        carried,
        format!(
            "/console/records/{}?queue=kind%3Dperson%26status%3Dpending",
            persons[0]
        )
    );
    // A queue naming a number does not choose the next record by it (that would tell, unaudited,
    // who holds the number): the next is the filtered list's first waiting, search aside.
    let first = persons[0].clone();
    let next = persons[1].clone();
    let (_, number) = [
        ("passport", "E24681357"),
        ("passport", "E13572468"),
        ("resident_id", "11010519491231002X"),
    ]
    .into_iter()
    .find(|(kind, number)| {
        let id = person_id(kind, number).to_string();
        id != first && id != next
    })
    .expect("a third person");
    let page = console
        .get(&format!("/console/records/{first}"), &cookie)
        .await;
    let by_number = console
        .request(
            "POST",
            &format!("/console/records/{first}/review"),
            Some(&cookie),
            Some(&format!(
                "csrf={}&decision=approve&queue=kind%3Dperson%26q%3D{number}",
                csrf(&page.body)
            )),
        )
        .await;
    assert!(
        by_number
            .location
            .as_deref()
            .is_some_and(|to| to.starts_with(&format!("/console/records/{next}?"))),
        "{:?} (searched {number})",
        by_number.location
    );
    let audited = console
        .state
        .store
        .snapshot()
        .await
        .unwrap()
        .audited("search_hidden");
    assert_eq!(audited, 0);
    let persons = persons[1..].to_vec();
    let mut at = format!("/console/records/{next}?queue=kind%3Dperson%26status%3Dpending");
    let mut decided = 0;
    loop {
        let page = console.get(&at, &cookie).await;
        assert_eq!(page.status, StatusCode::OK, "{at}");
        assert!(
            page.body
                .contains("href=\"/console/records?kind=person&amp;status=pending\""),
            "back to the list as filtered: {}",
            page.body
        );
        let queue = page
            .body
            .split("name=\"queue\" value=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .expect("the form carries the list")
            .replace("&amp;", "&");
        let id = at
            .trim_start_matches("/console/records/")
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        let done = console
            .request(
                "POST",
                &format!("/console/records/{id}/review"),
                Some(&cookie),
                Some(&format!(
                    "csrf={}&decision=approve&queue={}",
                    csrf(&page.body),
                    queue.replace('&', "%26").replace('=', "%3D")
                )),
            )
            .await;
        decided += 1;
        at = done.location.expect("led on");
        assert!(
            !at.contains(&vehicle.to_string()),
            "left the list for the vehicle"
        );
        if at.starts_with(&format!("/console/records/{id}?")) {
            let end = console.get(&at, &cookie).await;
            assert!(end.body.contains("没有其他待审核的记录了"), "{}", end.body);
            break;
        }
        assert!(decided <= persons.len());
    }
    assert_eq!(decided, persons.len());
    // The vehicle still waits in the station's whole list.
    let waiting = listed(
        &console
            .get("/console/records?status=pending", &cookie)
            .await
            .body,
    );
    assert_eq!(waiting, vec![vehicle.to_string()]);
}

#[tokio::test]
async fn a_reviewer_of_another_station_is_refused_the_record() {
    let (console, person) = Console::new();
    let cookie = console.sign_in("r007").await;
    let page = console
        .get(&format!("/console/records/{person}"), &cookie)
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = console.get("/console/records?kind=person", &cookie).await;
    assert!(!page.body.contains(&person.to_string()));
    let token = csrf(&console.get("/console/", &cookie).await.body);
    let page = console
        .request(
            "POST",
            &format!("/console/records/{person}/review"),
            Some(&cookie),
            Some(&format!("csrf={token}&decision=approve")),
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_dashboard_charts_captures_per_day_and_shows_officers_and_devices() {
    let (console, person) = Console::new();
    let cookie = console.sign_in("r006").await;
    let page = console.get("/console/", &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    let today = baylink_domain::Date::from_unix_ms(
        baylink_server::store::now_ms() as i64,
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    );
    assert!(
        page.body.contains("<svg") && page.body.contains(&format!("<title>{today}：1</title>")),
        "today's capture is charted"
    );
    assert!(
        page.body.contains("民警工作进度") && page.body.contains("<td>o1</td>"),
        "progress per officer"
    );
    assert!(
        page.body.contains("设备最近同步") && page.body.contains("phone"),
        "the officer's device is listed"
    );
    // The date range filter.
    let yesterday = baylink_domain::Date::from_days(today.to_days() - 1);
    let hit = console
        .get(
            &format!("/console/records?from={today}&to={today}"),
            &cookie,
        )
        .await;
    assert!(hit.body.contains(&person.to_string()));
    let miss = console
        .get(&format!("/console/records?to={yesterday}"), &cookie)
        .await;
    assert!(!miss.body.contains(&person.to_string()));
}

#[tokio::test]
async fn filtered_lists_export_to_csv_and_xlsx_with_full_values_and_are_audited() {
    use calamine::Reader;
    let (console, person) = Console::new();
    let cookie = console.sign_in("r006").await;
    let list = console.get("/console/records?kind=person", &cookie).await;
    assert!(
        list.body
            .contains("/console/export?format=xlsx&amp;kind=person"),
        "the list links its exports"
    );
    assert!(list.body.contains("记入审计"), "and says they are audited");
    let csv = console
        .get("/console/export?format=csv&kind=person&q=110105", &cookie)
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.body.starts_with('\u{FEFF}'));
    let lines: Vec<&str> = csv.body.trim_start_matches('\u{FEFF}').lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("记录编号,类型"));
    assert!(
        lines[1].contains(&person.to_string())
            && lines[1].contains("11010519491231002X")
            && lines[1].contains("桥西社区居民委员会")
    );

    let request = axum::http::Request::builder()
        .uri("/console/export?format=xlsx&kind=person")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let response = app(console.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains(".xlsx")
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut workbook = calamine::Xlsx::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let sheet = workbook.worksheet_range("记录").unwrap();
    let rows: Vec<Vec<String>> = sheet
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], "记录编号");
    assert_eq!(rows[1][0], person.to_string());
    assert_eq!(rows[1][5], "11010519491231002X", "ID numbers stay text");
    assert_eq!(rows[1][6], "王芳");
    let audited = console
        .state
        .store
        .snapshot()
        .await
        .unwrap()
        .audited("export");
    assert_eq!(audited, 2);
    let bad = console.get("/console/export?format=pdf", &cookie).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn administrators_manage_accounts_and_devices_and_read_the_audit_log_reviewers_cannot() {
    let (console, _) = Console::new();
    let reviewer = console.sign_in("r006").await;
    let page = console.get("/console/admin/users", &reviewer).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let admin = console.sign_in("admin").await;
    let page = console.get("/console/admin/users", &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("r007") && page.body.contains("441303006001"),
        "accounts with villages"
    );
    let token = csrf(&page.body);
    // A new officer, then their village changed, then disabled.
    let form = format!(
        "csrf={token}&username=o2&display_name=&role=officer&station=441303006&villages=441303006002&password=a+long+password"
    );
    let done = console
        .request("POST", "/console/admin/users", Some(&admin), Some(&form))
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    // The name the audit log gives the command line is no account's.
    let posing = form.replace("username=o2", "username=Operator");
    let refused = console
        .request("POST", "/console/admin/users", Some(&admin), Some(&posing))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let o2 = || {
        console
            .db
            .call_blocking(|c| accounts::account_by_username(c, "o2"))
            .unwrap()
            .unwrap()
    };
    assert!(auth::password::verify(
        "a long password",
        &o2().password_hash
    ));
    let assigned = console
        .request(
            "POST",
            "/console/admin/users/o2/villages",
            Some(&admin),
            Some(&format!("csrf={token}&villages=441303006003")),
        )
        .await;
    assert_eq!(assigned.status, StatusCode::SEE_OTHER);
    let account = o2();
    let villages = console
        .db
        .call_blocking(|c| accounts::villages_of(c, &account))
        .unwrap();
    assert_eq!(villages, ["441303006003"]);
    let disabled = console
        .request(
            "POST",
            "/console/admin/users/o2/disable",
            Some(&admin),
            Some(&format!("csrf={token}")),
        )
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER);
    assert!(o2().disabled);
    let short = console
        .request(
            "POST",
            "/console/admin/users",
            Some(&admin),
            Some(&format!(
                "csrf={token}&username=o3&display_name=&role=officer&password=short"
            )),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let forged = console
        .request(
            "POST",
            "/console/admin/users/o1/disable",
            Some(&admin),
            Some("csrf=forged"),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // The officer's phone is lost.
    let devices = console.get("/console/admin/devices", &admin).await;
    let device = "00000000-0000-0000-0000-000000000001";
    assert!(devices.body.contains(device));
    let revoked = console
        .request(
            "POST",
            &format!("/console/admin/devices/{device}/revoke"),
            Some(&admin),
            Some(&format!("csrf={token}")),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert!(
        console
            .db
            .call_blocking(|c| devices::device(c, device))
            .unwrap()
            .unwrap()
            .revoked
    );
    let audit = console.get("/console/admin/audit", &admin).await;
    for action in [
        "add_account",
        "assign_villages",
        "disable_account",
        "revoke_device",
        "console_login",
    ] {
        assert!(
            audit.body.contains(action),
            "{action} missing from the audit log"
        );
    }
}

/// Pushes fields of a record as officer o1's phone (the phone registered by `Console::new`) and
/// returns the server's answer for each.
fn push_from_officer(
    console: &Console,
    kind: &str,
    entity: Uuid,
    fields: &[(&str, serde_json::Value)],
) -> Vec<baylink_sync::wire::ChangeResult> {
    let ticked: Vec<_> = fields.iter().map(|(f, v)| (*f, v.clone(), 0)).collect();
    push_ticked(console, kind, entity, &ticked)
}

/// [`push_from_officer`] with each field stamped its `tick` milliseconds after now (one stamp for
/// all when the ticks are equal, as a saved form has).
fn push_ticked(
    console: &Console,
    kind: &str,
    entity: Uuid,
    fields: &[(&str, serde_json::Value, u64)],
) -> Vec<baylink_sync::wire::ChangeResult> {
    push_by(console, ("o1", 1, VILLAGE), kind, entity, fields)
}

/// Pushes fields as an officer's phone: `(username, device number, village)`.
fn push_by(
    console: &Console,
    (username, phone, village): (&str, u128, &str),
    kind: &str,
    entity: Uuid,
    fields: &[(&str, serde_json::Value, u64)],
) -> Vec<baylink_sync::wire::ChangeResult> {
    let (username, village) = (username.to_owned(), village.to_owned());
    console
        .db
        .call_blocking(move |conn| {
            let officer = accounts::account_by_username(conn, &username)?.unwrap();
            let device = NodeId(Uuid::from_u128(phone));
            let last: i64 = conn.query_row(
                "SELECT last_counter FROM device WHERE id = ?1",
                [device.to_string()],
                |r| r.get(0),
            )?;
            let now = baylink_server::store::now_ms();
            let changes: Vec<Change> = fields
                .iter()
                .enumerate()
                .map(|(i, (field, value, tick))| Change {
                    id: ChangeId {
                        device,
                        counter: last as u64 + i as u64 + 1,
                    },
                    kind: kind.into(),
                    entity,
                    field: (*field).into(),
                    value: value.clone(),
                    stamp: Stamp::new(Hlc::new(now + tick, 0), device),
                    base: None,
                })
                .collect();
            let caller = Caller {
                account: officer.id,
                role: Role::Officer,
                device: device.to_string(),
                villages: vec![village],
            };
            push::push(conn, &caller, &changes, now, 60_000)
        })
        .unwrap()
}

/// Pushes fields as o1's phone, every one of which must be accepted.
fn push_as_officer(
    console: &Console,
    kind: &str,
    entity: Uuid,
    fields: &[(&str, serde_json::Value)],
) {
    let results = push_from_officer(console, kind, entity, fields);
    assert!(
        results
            .iter()
            .all(|r| r.status == baylink_sync::wire::ChangeStatus::Accepted),
        "{results:?}"
    );
}

/// The id a phone derives for a person (the server refuses to create one under another).
fn person_id(id_type: &str, id_number: &str) -> Uuid {
    let fields = baylink_domain::Fields::from([
        ("id_type".to_owned(), json!(id_type)),
        ("id_number".to_owned(), json!(id_number)),
    ]);
    baylink_domain::natural_id(baylink_domain::EntityKind::Person, &fields).unwrap()
}

/// The id a phone derives for a residence.
fn residence_id(person: Uuid, house: Uuid, moved_in: &str) -> Uuid {
    let fields = baylink_domain::Fields::from([
        ("person".to_owned(), json!(person.to_string())),
        ("house".to_owned(), json!(house.to_string())),
        ("moved_in".to_owned(), json!(moved_in)),
    ]);
    baylink_domain::natural_id(baylink_domain::EntityKind::Residence, &fields).unwrap()
}

fn person_fields(
    id_type: &str,
    id_number: &str,
    name: &str,
) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("village", json!(VILLAGE)),
        ("id_type", json!(id_type)),
        ("id_number", json!(id_number)),
        ("name", json!(name)),
        ("review_status", json!("pending")),
    ]
}

#[tokio::test]
async fn administrators_keep_the_watch_list_and_matching_persons_raise_alerts_reviewers_acknowledge()
 {
    let (console, person) = Console::new();
    let reviewer = console.sign_in("r006").await;
    let page = console.get("/console/admin/watch", &reviewer).await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "reviewers do not keep the list"
    );
    let admin = console.sign_in("admin").await;
    let page = console.get("/console/admin/watch", &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    let token = csrf(&page.body);
    // Beijing (110000) as a risk region: the person already stored, born in 110105, matches.
    let added = console
        .request(
            "POST",
            "/console/admin/watch",
            Some(&admin),
            Some(&format!("csrf={token}&kind=region&value=110000&note=test")),
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let unknown = console
        .request(
            "POST",
            "/console/admin/watch",
            Some(&admin),
            Some(&format!("csrf={token}&kind=region&value=990000&note=")),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.body.contains("不是已知的行政区划代码"),
        "{}",
        unknown.body
    );
    let forged = console
        .request(
            "POST",
            "/console/admin/watch",
            Some(&admin),
            Some("csrf=forged&kind=region&value=120000&note="),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // A watched passport number; then an officer's phone syncs that person.
    let watched = console
        .request(
            "POST",
            "/console/admin/watch",
            Some(&admin),
            Some(&format!("csrf={token}&kind=id_number&value=e1234567&note=")),
        )
        .await;
    assert_eq!(watched.status, StatusCode::SEE_OTHER);
    let page = console.get("/console/admin/watch", &admin).await;
    assert!(
        page.body.contains("北京市") && page.body.contains("E1234567"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("天津市"),
        "the forged form added nothing"
    );
    let traveller = person_id("passport", "E1234567");
    push_as_officer(
        &console,
        "person",
        traveller,
        &person_fields("passport", "E1234567", "John Smith"),
    );
    // Syncing the same person again raises nothing new.
    push_as_officer(
        &console,
        "person",
        traveller,
        &[("occupation", json!("engineer"))],
    );

    let page = console.get("/console/", &reviewer).await;
    assert!(
        page.body.contains("未处理预警 <strong>2</strong>"),
        "{}",
        page.body
    );
    let page = console.get("/console/alerts", &reviewer).await;
    assert!(page.body.contains(&person.to_string()) && page.body.contains(&traveller.to_string()));
    assert!(page.body.contains("来自风险地区 北京市") && page.body.contains("o1"));
    // Her own page says she is watched, why (the region; never the rule's note), and that its
    // alert waits; the passport holder's says his number is listed.
    let hers = console
        .get(&format!("/console/records/{person}"), &reviewer)
        .await;
    assert!(
        hers.body.contains("重点关注人员")
            && hers.body.contains("籍贯在关注地区 北京市（11）")
            && !hers.body.contains("（test）")
            && hers.body.contains("预警未处理"),
        "{}",
        hers.body
    );
    let his = console
        .get(&format!("/console/records/{traveller}"), &reviewer)
        .await;
    assert!(his.body.contains("证件号码在关注名单上"), "{}", his.body);
    // His passport number is masked whole in the page's title too, as in lists.
    assert!(!his.body.contains("E1234567"), "{}", his.body);
    assert!(
        !page.body.contains("11010519491231002X"),
        "masked in the list"
    );
    let other = console.sign_in("r007").await;
    let page = console.get("/console/alerts", &other).await;
    assert!(
        page.body.contains("没有预警"),
        "another station's alerts are not shown"
    );
    let alert_id = page_alert_id(&console, &reviewer).await;
    let other_token = csrf(&page.body);
    let refused = console
        .request(
            "POST",
            &format!("/console/alerts/{alert_id}/acknowledge"),
            Some(&other),
            Some(&format!("csrf={other_token}")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let list = console.get("/console/alerts", &reviewer).await;
    let done = console
        .request(
            "POST",
            &format!("/console/alerts/{alert_id}/acknowledge"),
            Some(&reviewer),
            Some(&format!("csrf={}", csrf(&list.body))),
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let page = console.get("/console/", &reviewer).await;
    assert!(page.body.contains("未处理预警 <strong>1</strong>"));
    let page = console.get("/console/alerts?all=1", &reviewer).await;
    assert!(page.body.contains("已处理"));
    let page = console.get("/console/admin/audit", &admin).await;
    assert!(page.body.contains("acknowledge_alert") && page.body.contains("add_watch_rule"));
    // Narrowed to one action, the page lists that one only.
    let page = console
        .get("/console/admin/audit?action=acknowledge_alert", &admin)
        .await;
    assert!(
        page.body.contains("<td>acknowledge_alert</td>"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("<td>add_watch_rule</td>"),
        "{}",
        page.body
    );
}

/// The id of the first acknowledge form on the reviewer's alert page.
async fn page_alert_id(console: &Console, cookie: &str) -> i64 {
    let page = console
        .request("GET", "/console/alerts", Some(cookie), None)
        .await;
    page.body
        .split("/console/alerts/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| id.parse().ok())
        .expect("an acknowledge form")
}

#[tokio::test]
async fn duplicate_persons_are_proposed_merged_with_their_links_or_dismissed() {
    let (console, person) = Console::new();
    // Same name and birth date as person 42 (王芳, 1949-12-31), another ID number; she rents a
    // room under the duplicate record, which also has her employer.
    let body = "11010819491231001";
    let twin_id = format!(
        "{body}{}",
        baylink_domain::id_number::check_char(body.as_bytes())
    );
    let twin = person_id("resident_id", &twin_id);
    let mut fields = person_fields("resident_id", &twin_id, "王芳");
    fields.push(("employer", json!("澳头渔港")));
    fields.push(("birth_date", json!("1949-12-31")));
    push_as_officer(&console, "person", twin, &fields);
    let house = Uuid::from_u128(0x7000_8000_0000_0000_0050);
    push_as_officer(
        &console,
        "house",
        house,
        &[
            ("village", json!(VILLAGE)),
            ("address", json!("桥西路8号")),
            ("use", json!("rental")),
            ("status", json!("in_use")),
        ],
    );
    let residence = residence_id(twin, house, "2026-03-01");
    push_as_officer(
        &console,
        "residence",
        residence,
        &[
            ("village", json!(VILLAGE)),
            ("person", json!(twin.to_string())),
            ("house", json!(house.to_string())),
            ("moved_in", json!("2026-03-01")),
            ("relation", json!("tenant")),
        ],
    );
    // Two passports one character apart, who are in fact two people.
    let (p1, p2) = (
        person_id("passport", "E12345678"),
        person_id("passport", "E12345679"),
    );
    push_as_officer(
        &console,
        "person",
        p1,
        &person_fields("passport", "E12345678", "Anna"),
    );
    push_as_officer(
        &console,
        "person",
        p2,
        &person_fields("passport", "E12345679", "Berta"),
    );

    let reviewer = console.sign_in("r006").await;
    let page = console.get("/console/duplicates", &reviewer).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("姓名、出生日期相同") && page.body.contains("证件号码相差一位"));
    assert!(page.body.contains(&twin.to_string()) && page.body.contains(&p2.to_string()));
    assert!(!page.body.contains(&twin_id), "ID numbers masked");
    // Two passports one character apart, masked whole: the page says their numbers differ
    // where the mask hides them, rather than showing them alike.
    let passports = console
        .get(
            &format!("/console/duplicates/pair?a={p1}&b={p2}"),
            &reviewer,
        )
        .await;
    assert!(
        passports.body.contains("（隐藏部分不同）") && !passports.body.contains("E1234567"),
        "{}",
        passports.body
    );
    // A record and itself are no pair: nothing offered.
    let itself = console
        .get(
            &format!("/console/duplicates/pair?a={p1}&b={p1}"),
            &reviewer,
        )
        .await;
    assert!(
        itself.body.contains("不是可合并的一对")
            && !itself.body.contains("action=\"/console/duplicates/merge\""),
        "{}",
        itself.body
    );
    // Its address without the pair (as signing in again returns to it): the list.
    let bare = console.get("/console/duplicates/pair", &reviewer).await;
    assert_eq!(bare.location.as_deref(), Some("/console/duplicates"));
    let token = csrf(&page.body);
    let dismissed = console
        .request(
            "POST",
            "/console/duplicates/dismiss",
            Some(&reviewer),
            Some(&format!("csrf={token}&a={p2}&b={p1}")),
        )
        .await;
    assert_eq!(dismissed.status, StatusCode::SEE_OTHER);
    // No longer listed, the pair's page judges them by what the masks show: whether two
    // numbers are one is not told of any two records an address names.
    let unlisted = console
        .get(
            &format!("/console/duplicates/pair?a={p1}&b={p2}"),
            &reviewer,
        )
        .await;
    assert!(
        unlisted.status == StatusCode::OK && !unlisted.body.contains("（隐藏部分不同）"),
        "{}",
        unlisted.body
    );
    // Another station's reviewer may not merge this station's people.
    let other = console.sign_in("r007").await;
    let other_page = console.get("/console/duplicates", &other).await;
    assert!(other_page.body.contains("没有疑似重复的人员"));
    let refused = console
        .request(
            "POST",
            "/console/duplicates/merge",
            Some(&other),
            Some(&format!(
                "csrf={}&from={twin}&into={person}",
                csrf(&other_page.body)
            )),
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    // Neither a merge nor a dismissal can be undone: the list only leads to a pair's page
    // (a form that gets it), whose forms decide.
    assert!(
        page.body
            .contains("method=\"get\" action=\"/console/duplicates/pair\"")
            && !page.body.contains("action=\"/console/duplicates/merge\"")
            && !page.body.contains("action=\"/console/duplicates/dismiss\""),
        "{}",
        page.body
    );
    let ask = format!("/console/duplicates/pair?a={person}&b={twin}");
    assert_eq!(
        console.get(&ask, &other).await.status,
        StatusCode::NOT_FOUND,
        "another station's reviewer sees neither record"
    );
    let revealed = |console: &Console| {
        console
            .db
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM audit WHERE action = ?1",
                    ["reveal_id_number"],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .unwrap()
    };
    let audited = revealed(&console);
    let asked = console.get(&ask, &reviewer).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert!(
        asked.body.contains("两者都不能撤销")
            && asked.body.contains(&format!("href=\"/console/records/{twin}\""))
            && asked.body.contains(&format!("href=\"/console/records/{person}\""))
            // What links to each: the duplicate's residence.
            && asked.body.contains(&format!("href=\"/console/records/{residence}\"")),
        "{}",
        asked.body
    );
    // Their differences marked: the employer only the duplicate holds.
    assert!(
        asked.body.contains("<strong>澳头渔港</strong>"),
        "{}",
        asked.body
    );
    assert!(!asked.body.contains(&twin_id), "ID numbers masked");
    assert_eq!(
        revealed(&console),
        audited,
        "nothing revealed, nothing audited"
    );
    // Both numbers in full when she asks, each reveal audited.
    let full = console.get(&format!("{ask}&reveal=1"), &reviewer).await;
    assert!(full.body.contains(&twin_id), "{}", full.body);
    assert_eq!(revealed(&console), audited + 2);
    assert!(
        asked
            .body
            .contains(&format!("name=\"from\" value=\"{twin}\""))
            && asked
                .body
                .contains(&format!("name=\"into\" value=\"{person}\""))
            && asked
                .body
                .contains("action=\"/console/duplicates/dismiss\""),
        "{}",
        asked.body
    );
    let still = console.get("/console/duplicates", &reviewer).await;
    assert!(
        still.body.contains(&twin.to_string()),
        "opening it merged nothing"
    );
    let merged = console
        .request(
            "POST",
            "/console/duplicates/merge",
            Some(&reviewer),
            Some(&format!(
                "csrf={}&from={twin}&into={person}",
                csrf(&asked.body)
            )),
        )
        .await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    let to = format!("/console/records/{person}?merged={twin}");
    assert_eq!(merged.location.as_deref(), Some(to.as_str()));
    // The kept record says what was merged into it, with the way back to the list.
    let kept = console.get(&to, &reviewer).await;
    assert!(
        kept.body.contains("已将重复记录")
            && kept
                .body
                .contains(&format!("href=\"/console/records/{twin}\""))
            && kept.body.contains("href=\"/console/duplicates\""),
        "{}",
        kept.body
    );
    // The pair's page, opened again (the back button, another reviewer): says where the
    // duplicate went and offers nothing to decide.
    let again = console.get(&ask, &reviewer).await;
    assert!(
        again.body.contains("人员乙已合并到")
            && !again.body.contains("action=\"/console/duplicates/merge\""),
        "{}",
        again.body
    );
    // Said only of a record merged into this one, whatever the address says.
    let made_up = console
        .get(
            &format!("/console/records/{person}?merged={person}"),
            &reviewer,
        )
        .await;
    assert!(!made_up.body.contains("已将重复记录"), "{}", made_up.body);
    let page = console.get("/console/duplicates", &reviewer).await;
    assert!(
        page.body.contains("没有疑似重复的人员"),
        "merged and dismissed pairs are gone"
    );

    // The kept record: the employer filled in, the residence and the duplicate linked.
    let kept = console
        .get(&format!("/console/records/{person}"), &reviewer)
        .await;
    assert!(kept.body.contains("澳头渔港"));
    assert!(kept.body.contains(&residence.to_string()) && kept.body.contains("合并到本记录"));
    // Her residence says who lives where, as lists say it, not only "2026-03-01 租客"; so does
    // the residence's own page.
    assert!(
        kept.body.contains("王芳 → 桥西路8号 · 2026-03-01"),
        "{}",
        kept.body
    );
    let lived = console
        .get(&format!("/console/records/{residence}"), &reviewer)
        .await;
    assert!(
        lived
            .body
            .contains("<h1>居住 王芳 → 桥西路8号 · 2026-03-01"),
        "{}",
        lived.body
    );
    assert!(
        !kept.body.contains("已删除或已合并"),
        "the duplicate merged into it is said to be that, not 'deleted or merged': {}",
        kept.body
    );
    // The duplicate: redirects, with its whole history.
    let old = console
        .get(&format!("/console/records/{twin}"), &reviewer)
        .await;
    assert!(old.body.contains("已作为重复记录合并到") && old.body.contains(&person.to_string()));
    // Its history names the record it was merged into, as a link by its label.
    let history = &old.body[old.body.find("<h2>修改历史</h2>").expect("a history")..];
    assert!(
        history.contains(&format!("href=\"/console/records/{person}\"")),
        "{history}"
    );
    assert!(
        old.body.contains("已合并，不再审核") && !old.body.contains("class=\"status-pending\""),
        "a merged-away record is not said to wait: {}",
        old.body
    );
    assert!(
        !old.body.contains("name=\"decision\""),
        "no review of a merged record"
    );
    let view = console
        .db
        .call_blocking(|c| records::record(c, &residence.to_string()))
        .unwrap()
        .unwrap();
    assert_eq!(
        view.fields.get("person"),
        Some(&json!(person.to_string()).to_string())
    );
    let twin_view = console
        .db
        .call_blocking(|c| records::record(c, &twin.to_string()))
        .unwrap()
        .unwrap();
    assert!(twin_view.history.iter().any(|h| h.field == "employer"));
    assert!(twin_view.history.iter().any(|h| h.field == "merged_into"));
    let list = console.get("/console/records?kind=person", &reviewer).await;
    assert!(
        !list.body.contains(&twin.to_string()),
        "a merged record leaves the lists"
    );
    // An officer's phone cannot write the redirect itself.
    let refused = push_from_officer(
        &console,
        "person",
        p1,
        &[("merged_into", json!(p2.to_string()))],
    );
    assert_eq!(refused[0].status, baylink_sync::wire::ChangeStatus::Refused);
    assert_eq!(refused[0].code.as_deref(), Some("read_only"));
}

#[tokio::test]
async fn merging_a_record_already_merged_is_refused_with_a_page_and_changes_nothing() {
    let (console, person) = Console::new();
    let twin = person_id("passport", "E7654321");
    push_as_officer(
        &console,
        "person",
        twin,
        &person_fields("passport", "E7654321", "王芳"),
    );
    let reviewer = console.sign_in("r006").await;
    let page = console.get("/console/duplicates", &reviewer).await;
    let token = csrf(&page.body);
    let form = format!("csrf={token}&from={twin}&into={person}");
    let first = console
        .request(
            "POST",
            "/console/duplicates/merge",
            Some(&reviewer),
            Some(&form),
        )
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let history = |id: Uuid| {
        console
            .db
            .call_blocking(move |c| records::record(c, &id.to_string()))
            .unwrap()
            .unwrap()
            .history
            .len()
    };
    let before = (history(twin), history(person));
    let again = console
        .request(
            "POST",
            "/console/duplicates/merge",
            Some(&reviewer),
            Some(&form),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("已合并"), "{}", again.body);
    // A decision on the record merged away, from a page opened before: refused, nothing written.
    let decided = console
        .request(
            "POST",
            &format!("/console/records/{twin}/review"),
            Some(&reviewer),
            Some(&format!("csrf={token}&decision=approve")),
        )
        .await;
    assert_eq!(decided.status, StatusCode::CONFLICT, "{}", decided.body);
    let itself = console
        .request(
            "POST",
            "/console/duplicates/merge",
            Some(&reviewer),
            Some(&format!("csrf={token}&from={person}&into={person}")),
        )
        .await;
    assert_eq!(itself.status, StatusCode::BAD_REQUEST);
    assert_eq!((history(twin), history(person)), before, "nothing written");
}

/// The summary row of `entity` as stored, every column but the entity id.
fn summary_row(console: &Console, entity: Uuid) -> Vec<String> {
    console
        .db
        .call_blocking(move |conn| {
            Ok(conn.query_row(
                "SELECT kind, village, label, id_number, name, plate, address, phone,
                        review_status, deleted, created_by, created_at, updated_seq
                 FROM summary WHERE entity = ?1",
                [entity.to_string()],
                |r| {
                    (0..13)
                        .map(|i| {
                            r.get::<_, baylink_server::store::conn::Value>(i)
                                .map(|v| format!("{v:?}"))
                        })
                        .collect()
                },
            )?)
        })
        .unwrap()
}

/// The row a summary recomputed from nothing has (the full write, not the recency-only one).
fn recomputed_row(console: &Console, entity: Uuid) -> Vec<String> {
    console
        .db
        .call_blocking(move |conn| {
            conn.execute(
                "DELETE FROM summary WHERE entity = ?1",
                [entity.to_string()],
            )?;
            baylink_server::store::summary::refresh_summary(conn, &entity.to_string())
        })
        .unwrap();
    summary_row(console, entity)
}

#[tokio::test]
async fn a_summary_after_each_write_is_what_a_recompute_gives_and_search_follows_renames() {
    let (console, person) = Console::new();
    let id_number = baylink_domain::synthetic::resident_id(43);
    let other = person_id("resident_id", &id_number);
    push_as_officer(
        &console,
        "person",
        other,
        &person_fields("resident_id", &id_number, "李强"),
    );
    let ids = |query: Option<&str>| {
        let filter = baylink_server::store::records::Filter {
            kind: Some("person".into()),
            query: query.map(Into::into),
            ..Default::default()
        };
        console
            .db
            .call_blocking(move |conn| {
                baylink_server::store::records::list(conn, &[VILLAGE.to_owned()], &filter, 10, 0)
            })
            .unwrap()
            .into_iter()
            .map(|row| row.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(None)[0], other.to_string(), "newest first");

    // A note changes no listed column: only the record's recency moves, to the front.
    let before = summary_row(&console, person);
    push_as_officer(&console, "person", person, &[("notes", json!("二楼东"))]);
    let after = summary_row(&console, person);
    assert_eq!(before[..12], after[..12], "listed columns kept");
    assert_ne!(before[12], after[12], "recency moved");
    assert_eq!(
        ids(None)[0],
        person.to_string(),
        "an edited record lists first"
    );
    assert_eq!(after, recomputed_row(&console, person));

    // A rename rewrites the name and label: search finds the new name, not the old.
    push_as_officer(&console, "person", person, &[("name", json!("王芳华"))]);
    let renamed = summary_row(&console, person);
    assert_ne!(renamed[2], after[2], "label follows the name");
    assert_eq!(renamed, recomputed_row(&console, person));
    assert!(ids(Some("王芳华")).contains(&person.to_string()));
    push_as_officer(&console, "person", person, &[("name", json!("张伟"))]);
    assert!(!ids(Some("王芳")).contains(&person.to_string()), "old name");
    assert!(ids(Some("张伟")).contains(&person.to_string()));
    assert!(
        ids(Some(" 张 伟")).contains(&person.to_string()),
        "typed with spaces, as Chinese is not written"
    );

    // A phone and a note together: the phone column changes, so the whole row is written.
    push_as_officer(
        &console,
        "person",
        person,
        &[("phone", json!("13900139000")), ("notes", json!("三楼"))],
    );
    let row = summary_row(&console, person);
    assert!(row[7].contains("13900139000"), "{row:?}");
    assert_eq!(row, recomputed_row(&console, person));
}

#[tokio::test]
async fn a_record_created_and_written_twice_in_one_push_merges_the_second_write() {
    let (console, _) = Console::new();
    let id_number = baylink_domain::synthetic::resident_id(44);
    let entity = person_id("resident_id", &id_number);
    // The newer name first, then an older one for the same field of the new record.
    let results = push_ticked(
        &console,
        "person",
        entity,
        &[
            ("village", json!(VILLAGE), 0),
            ("id_type", json!("resident_id"), 0),
            ("id_number", json!(id_number), 0),
            ("name", json!("新名"), 2),
            ("name", json!("旧名"), 1),
        ],
    );
    assert!(
        results
            .iter()
            .all(|r| r.status == baylink_sync::wire::ChangeStatus::Accepted),
        "{results:?}"
    );
    let (history, value) = console
        .db
        .call_blocking(move |conn| {
            let history: Vec<(Option<String>, String, bool)> = conn
                .prepare(
                    "SELECT CASE WHEN c.value ->> '$[1]' IS NULL THEN NULL ELSE c.value -> '$[0]' END,
                            c.value -> '$[2]', c.value ->> '$[3]'
                     FROM history h JOIN json_each(h.changes) c
                     WHERE h.entity = ?1 AND c.key = 'name' ORDER BY h.seq",
                )?
                .query_map([entity.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            let value: String = conn.query_row(
                "SELECT state -> '$.f.name[0]' FROM entity WHERE id = ?1",
                [entity.to_string()],
                |r| r.get(0),
            )?;
            Ok((history, value))
        })
        .unwrap();
    assert_eq!(value, "\"新名\"", "the newer write stays");
    assert_eq!(
        history,
        vec![
            (None, "\"新名\"".to_owned(), true),
            (Some("\"新名\"".to_owned()), "\"旧名\"".to_owned(), false),
        ],
        "the second write was merged against the first"
    );
}

/// Person 42's duplicate (王芳, one digit off, also from 北京): its id and ID number.
/// A village of 霞涌 (station 007).
const XIAYONG: &str = "441303007001";

/// Officer o7 of 霞涌 with phone 7 (push as `("o7", 7, XIAYONG)`).
fn add_o7(console: &Console) {
    let hash = auth::password::hash(PASSWORD).unwrap();
    console
        .db
        .call_blocking(move |conn| {
            let new = NewAccount {
                username: "o7".into(),
                display_name: "o7".into(),
                role: Role::Officer,
                station: Some("441303007".into()),
                password_hash: hash,
                villages: vec![XIAYONG.into()],
            };
            let o7 = accounts::create_account(conn, Actor::Operator, &new, 0)?;
            devices::register_device(
                conn,
                &NodeId(Uuid::from_u128(7)).to_string(),
                o7,
                "phone",
                0,
            )
        })
        .unwrap();
}

fn twin_of_42(console: &Console) -> (Uuid, String) {
    let body = "11010819491231001";
    let twin_id = format!(
        "{body}{}",
        baylink_domain::id_number::check_char(body.as_bytes())
    );
    let twin = person_id("resident_id", &twin_id);
    push_as_officer(
        console,
        "person",
        twin,
        &person_fields("resident_id", &twin_id, "王芳"),
    );
    (twin, twin_id)
}

#[tokio::test]
async fn a_person_merged_away_raises_no_alert_and_her_old_ones_are_not_listed() {
    use baylink_server::store::{alerts, duplicates};
    let (console, person) = Console::new();
    // Her duplicate, one digit off (both from 北京, a region on the watch list).
    let (twin, _) = twin_of_42(&console);
    let reviewer = Caller {
        account: 0,
        role: Role::Admin,
        device: "console".into(),
        villages: vec![VILLAGE.into()],
    };
    let listed = |console: &Console| {
        let villages = vec![VILLAGE.to_owned()];
        console
            .db
            .call_blocking(move |c| {
                let list = alerts::list(c, &villages, AlertsShown::All, 50)?;
                Ok((
                    list,
                    baylink_server::store::dashboard::open_count(c, &villages)?,
                ))
            })
            .unwrap()
    };
    let (from, into) = (twin.to_string(), person.to_string());
    console
        .db
        .call_blocking(move |c| {
            let admin = accounts::account_by_username(c, "admin")?.map_or(0, |a| a.id);
            let rule = baylink_domain::watch::Rule::region("11").unwrap();
            alerts::add_rule(c, admin, &rule, "test", 1)?;
            Ok(())
        })
        .unwrap();
    let (before, open) = listed(&console);
    assert_eq!((before.len(), open), (2, 2), "both records match");
    console
        .db
        .call_blocking(move |c| duplicates::merge(c, &reviewer, &from, &into, 2).map(drop))
        .unwrap();
    let (after, open) = listed(&console);
    assert_eq!((after.len(), open), (1, 1), "{after:?}");
    assert_eq!(after[0].entity, person.to_string());

    // An officer's later write to the merged-away record raises nothing.
    push_as_officer(&console, "person", twin, &[("phone", json!("13800138000"))]);
    assert_eq!(listed(&console).0.len(), 1);
}

#[tokio::test]
async fn a_watched_persons_alert_follows_her_to_the_record_kept_when_her_duplicate_is_merged() {
    use baylink_server::store::{alerts, duplicates};
    let (console, person) = Console::new();
    let (twin, twin_id) = twin_of_42(&console);
    let watched = twin_id;
    console
        .db
        .call_blocking(move |c| {
            let admin = accounts::account_by_username(c, "admin")?.map_or(0, |a| a.id);
            let rule = baylink_domain::watch::Rule::id_number(&watched).unwrap();
            alerts::add_rule(c, admin, &rule, "test", 1)?;
            Ok(())
        })
        .unwrap();
    let reviewer = Caller {
        account: 0,
        role: Role::Admin,
        device: "console".into(),
        villages: vec![VILLAGE.into()],
    };
    // The watched record is the duplicate: merged into the other, her hit stays listed.
    let (from, into) = (twin.to_string(), person.to_string());
    let list = console
        .db
        .call_blocking(move |c| {
            duplicates::merge(c, &reviewer, &from, &into, 2)?;
            alerts::list(c, &[VILLAGE.to_owned()], AlertsShown::All, 50)
        })
        .unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].entity, person.to_string());
}

#[tokio::test]
async fn a_reviewer_merges_only_her_own_villages_records_not_a_person_who_moved_in() {
    let (console, person) = Console::new();
    add_o7(&console);
    let accepted = |results: Vec<baylink_sync::wire::ChangeResult>| {
        assert!(
            results
                .iter()
                .all(|r| r.status == baylink_sync::wire::ChangeStatus::Accepted),
            "{results:?}"
        );
    };
    let at_once = |fields: &[(&'static str, serde_json::Value)]| -> Vec<_> {
        fields.iter().map(|(f, v)| (*f, v.clone(), 0)).collect()
    };
    // 王芳's duplicate, at home in 霞涌 (station 007), renting a room there.
    let body = "11010819491231001";
    let twin_id = format!(
        "{body}{}",
        baylink_domain::id_number::check_char(body.as_bytes())
    );
    let twin = person_id("resident_id", &twin_id);
    let mut fields = person_fields("resident_id", &twin_id, "王芳");
    fields[0] = ("village", json!(XIAYONG));
    let o7 = ("o7", 7, XIAYONG);
    accepted(push_by(&console, o7, "person", twin, &at_once(&fields)));
    let house = |village: &str, address: &str| {
        vec![
            ("village", json!(village)),
            ("address", json!(address)),
            ("use", json!("rental")),
            ("status", json!("in_use")),
        ]
    };
    let residence = |person: Uuid, house: Uuid, village: &str, moved_in: &str| {
        vec![
            ("village", json!(village)),
            ("person", json!(person.to_string())),
            ("house", json!(house.to_string())),
            ("moved_in", json!(moved_in)),
            ("relation", json!("tenant")),
        ]
    };
    let home = Uuid::now_v7();
    accepted(push_by(
        &console,
        o7,
        "house",
        home,
        &at_once(&house(XIAYONG, "霞涌路1号")),
    ));
    let at_home = residence_id(twin, home, "2025-01-01");
    accepted(push_by(
        &console,
        o7,
        "residence",
        at_home,
        &at_once(&residence(twin, home, XIAYONG, "2025-01-01")),
    ));
    // She moves into a house of 澳头 too: r006 sees her now.
    let rented = Uuid::now_v7();
    push_as_officer(&console, "house", rented, &house(VILLAGE, "桥西路9号"));
    push_as_officer(
        &console,
        "residence",
        residence_id(twin, rented, "2026-03-01"),
        &residence(twin, rented, VILLAGE, "2026-03-01"),
    );

    let reviewer = console.sign_in("r006").await;
    let seen = console
        .get(&format!("/console/records/{twin}"), &reviewer)
        .await;
    assert_eq!(seen.status, StatusCode::OK, "a moved-in person is seen");
    // Seen, not offered what would be refused: no review form, a word on who decides.
    assert!(
        seen.body.contains("审核和合并由其所属派出所进行") && !seen.body.contains("/review\""),
        "{}",
        seen.body
    );
    // Her residence at home is listed by kind and id, not by what its label says.
    assert!(
        seen.body.contains(&at_home.to_string()) && !seen.body.contains("2025-01-01"),
        "{}",
        seen.body
    );
    let token = csrf(&seen.body);
    let state_of = |id: Uuid| {
        console
            .db
            .call_blocking(move |c| records::record(c, &id.to_string()))
            .unwrap()
            .unwrap()
            .fields
    };
    let before = (state_of(twin), state_of(person), state_of(at_home));
    for (from, into) in [(twin, person), (person, twin)] {
        let refused = console
            .request(
                "POST",
                "/console/duplicates/merge",
                Some(&reviewer),
                Some(&format!("csrf={token}&from={from}&into={into}")),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        assert!(refused.body.contains("其他派出所辖区"), "{}", refused.body);
    }
    assert_eq!(
        (state_of(twin), state_of(person), state_of(at_home)),
        before,
        "nothing written: not her home station's person, nor its residence"
    );

    // Nor may she review her, or dismiss her as a pair of another's: her home station decides.
    for (path, form) in [
        (
            format!("/console/records/{twin}/review"),
            format!("csrf={token}&decision=return&comment=x"),
        ),
        (
            "/console/duplicates/dismiss".to_owned(),
            format!("csrf={token}&a={twin}&b={person}"),
        ),
    ] {
        let refused = console
            .request("POST", &path, Some(&reviewer), Some(&form))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            refused.body
        );
        assert!(
            refused.body.contains("由其所属派出所处理"),
            "{}",
            refused.body
        );
    }
    assert_eq!(state_of(twin), before.0, "no review written");
    // Her move-in notice is 澳头's to close, not her home station's, which also sees her.
    let notice: i64 = console
        .db
        .call_blocking(move |c| {
            Ok(c.query_row(
                "SELECT id FROM alert WHERE entity = ?1 AND rule_kind = 'moved_in'",
                [twin.to_string()],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    let home = console.sign_in("r007").await;
    let home_page = console.get("/console/alerts", &home).await;
    assert!(
        home_page.body.contains("由迁入地派出所处理"),
        "the home station is offered no button it would be refused: {}",
        home_page.body
    );
    let closed_by = |who: String, token: String| {
        let console = &console;
        async move {
            console
                .request(
                    "POST",
                    &format!("/console/alerts/{notice}/acknowledge"),
                    Some(&who),
                    Some(&format!("csrf={token}")),
                )
                .await
                .status
        }
    };
    assert_eq!(
        closed_by(home.clone(), csrf(&home_page.body)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        closed_by(reviewer.clone(), token.clone()).await,
        StatusCode::SEE_OTHER
    );

    // A residence's line in a list says who lives where (her name, the house), then its date
    // and relation in words.
    let list = console
        .get("/console/records?kind=residence", &reviewer)
        .await;
    assert!(
        list.body.contains("王芳 → 桥西路9号 · 2026-03-01 租客"),
        "{}",
        list.body
    );
    assert!(!list.body.contains("tenant"), "{}", list.body);

    // An administrator may: 霞涌's residence now names the record kept.
    let admin = console.sign_in("admin").await;
    let page = console.get("/console/duplicates", &admin).await;
    let merged = console
        .request(
            "POST",
            "/console/duplicates/merge",
            Some(&admin),
            Some(&format!(
                "csrf={}&from={twin}&into={person}",
                csrf(&page.body)
            )),
        )
        .await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    assert_eq!(
        state_of(at_home).get("person"),
        Some(&json!(person.to_string()).to_string())
    );
}

#[tokio::test]
async fn a_console_address_that_names_no_page_answers_a_page_not_json() {
    let (console, _) = Console::new();
    let cookie = console.sign_in("r006").await;
    for path in ["/console/recrods", "/console/records/x/y/z"] {
        let page = console.get(path, &cookie).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            page.body.contains("没有这个页面") && page.body.contains("<html"),
            "{path}: {}",
            page.body
        );
    }
    let bare = console.get("/console", &cookie).await;
    assert_eq!(bare.location.as_deref(), Some("/console/"));
    // The server's address alone, typed into a browser, leads to the console.
    let root = console.get("/", &cookie).await;
    assert_eq!(root.location.as_deref(), Some("/console/"));
    // The API keeps its JSON.
    let api = console.get("/api/v1/nothing", &cookie).await;
    assert!(api.body.starts_with('{'), "{}", api.body);
}

#[tokio::test]
async fn signing_in_returns_to_the_page_asked_for_and_to_no_other_site() {
    let (console, person) = Console::new();
    let asked = format!("/console/records/{person}");
    let page = console.request("GET", &asked, None, None).await;
    let to = page.location.expect("sent to sign in");
    assert_eq!(to, format!("/console/login?next={asked}"));
    let form = console.request("GET", &to, None, None).await;
    assert!(
        form.body
            .contains(&format!("name=\"next\" value=\"{asked}\"")),
        "{}",
        form.body
    );
    let revealed = format!("{asked}?reveal=1");
    for (next, lands) in [
        (asked.as_str(), asked.as_str()),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/", "/console/"),
        ("/console/logout", "/console/"),
        ("/console/./logout", "/console/"),
        ("/console/%2e%2e/%2e%2e/evil", "/console/"),
        // A link's query is left behind: signing in runs no export, reveal or search by number
        // under her name.
        ("/console/export?format=csv&kind=person", "/console/"),
        (revealed.as_str(), asked.as_str()),
        ("/console/records?q=110105", "/console/records"),
    ] {
        let (cookie, token) = console.login_form().await;
        let signed = console
            .request(
                "POST",
                "/console/login",
                Some(&cookie),
                Some(&format!(
                    "username=r006&password={PASSWORD}&csrf={token}&next={}",
                    next.replace('%', "%25")
                        .replace('/', "%2F")
                        .replace(':', "%3A")
                        .replace('?', "%3F")
                        .replace('&', "%26")
                        .replace('=', "%3D")
                )),
            )
            .await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
        assert_eq!(signed.location.as_deref(), Some(lands), "{next}");
    }
}

#[tokio::test]
async fn the_duplicates_page_offers_no_merge_that_would_rewrite_another_stations_records() {
    let (console, person) = Console::new();
    let (twin, _) = twin_of_42(&console);
    add_o7(&console);
    // 王芳 of 桥西 rents a room in 霞涌 too: its residence, 霞涌's, names her.
    let at_once = |fields: Vec<(&'static str, serde_json::Value)>| -> Vec<_> {
        fields.into_iter().map(|(f, v)| (f, v, 0)).collect()
    };
    let o7 = ("o7", 7, XIAYONG);
    let house = Uuid::now_v7();
    push_by(
        &console,
        o7,
        "house",
        house,
        &at_once(vec![
            ("village", json!(XIAYONG)),
            ("address", json!("霞涌路2号")),
            ("use", json!("rental")),
            ("status", json!("in_use")),
        ]),
    );
    push_by(
        &console,
        o7,
        "residence",
        residence_id(person, house, "2026-03-01"),
        &at_once(vec![
            ("village", json!(XIAYONG)),
            ("person", json!(person.to_string())),
            ("house", json!(house.to_string())),
            ("moved_in", json!("2026-03-01")),
            ("relation", json!("tenant")),
        ]),
    );
    let reviewer = console.sign_in("r006").await;
    let list = console.get("/console/duplicates", &reviewer).await;
    assert!(list.body.contains("须由管理员进行"), "{}", list.body);
    let page = console
        .get(
            &format!("/console/duplicates/pair?a={person}&b={twin}"),
            &reviewer,
        )
        .await;
    // Merging her away would repoint 霞涌's residence: said, not offered; keeping her is offered.
    let offered = |from: Uuid, into: Uuid| {
        page.body.contains(&format!(
            "name=\"from\" value=\"{from}\"><input type=\"hidden\" name=\"into\" value=\"{into}\""
        ))
    };
    assert!(page.body.contains("须由管理员进行"), "{}", page.body);
    assert!(
        !offered(person, twin) && offered(twin, person),
        "{}",
        page.body
    );
    // And the server refuses what the page does not offer.
    let token = csrf(&page.body);
    let refused = console
        .request(
            "POST",
            "/console/duplicates/merge",
            Some(&reviewer),
            Some(&format!("csrf={token}&from={person}&into={twin}")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
}
