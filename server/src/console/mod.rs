//! The review console for station staff, under `/console/`: server-rendered pages in Chinese,
//! signed in with a session cookie (HttpOnly, SameSite=Strict), every form carrying the session's
//! CSRF token. ID numbers and phones are masked in lists; showing a full ID number is audited.

mod admin;
mod alerts;
mod duplicates;
mod export;

pub use export::csv_field;
mod pages;

use axum::Router;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{known, password, throttle};
use crate::error::AppError;
use crate::extract::ClientAddr;
use crate::state::AppState;
use crate::store::accounts::{Account, Role};
use crate::store::caller::Caller;
use crate::store::contract::{ConsoleSession, Keep, Reveal, Verdict};
use crate::store::now_ms;
use crate::store::records::Filter;

const COOKIE_NAME: &str = "baylink_console";
/// A console session lasts a working day.
const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Rows per list page.
const PAGE: u32 = 50;

/// The console routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/", get(dashboard))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/records", get(records))
        .route("/console/records/{id}", get(record))
        .route("/console/records/{id}/review", post(review))
        .route("/console/export", get(export))
        .route("/console/conflicts", get(conflicts))
        .route("/console/conflicts/{id}/settle", post(settle))
        .route("/console/duplicates", get(duplicates::list))
        .route("/console/duplicates/pair", get(duplicates::pair))
        .route("/console/duplicates/merge", post(duplicates::merge))
        .route("/console/duplicates/dismiss", post(duplicates::dismiss))
        .route("/console/alerts", get(alerts::list))
        .route(
            "/console/alerts/{id}/acknowledge",
            post(alerts::acknowledge),
        )
        .route(
            "/console/admin/watch",
            get(alerts::rules).post(alerts::add_rule),
        )
        .route(
            "/console/admin/watch/{id}/remove",
            post(alerts::remove_rule),
        )
        .route(
            "/console/admin/users",
            get(admin::users).post(admin::add_user),
        )
        .route(
            "/console/admin/users/{username}/villages",
            post(admin::assign),
        )
        .route(
            "/console/admin/users/{username}/{verb}",
            post(admin::set_disabled),
        )
        .route("/console/admin/devices", get(admin::devices))
        .route("/console/admin/devices/{id}/revoke", post(admin::revoke))
        .route("/console/admin/audit", get(admin::audit))
        .route("/console/static/console.css", get(css))
        // A mistyped or stale console address answers a page, not the API's JSON.
        .route("/console", get(|| async { Redirect::to("/console/") }))
        // The server's own address typed into a browser: the console is what a person wants.
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console/{*rest}", axum::routing::any(no_such_page))
        .layer(axum::middleware::map_response(protect))
}

/// A console address that names no page.
async fn no_such_page() -> Response {
    let message = "没有这个页面";
    (StatusCode::NOT_FOUND, pages::error(404, message)).into_response()
}

/// Headers on every console answer: pages with personal data are never cached (a shared station
/// computer's back button or disk cache would show them), never framed, and load nothing but the
/// console's own stylesheet.
async fn protect(mut response: Response) -> Response {
    use axum::http::HeaderValue;
    use axum::http::header::{
        CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
        X_FRAME_OPTIONS,
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (CACHE_CONTROL, "no-store"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
        (
            CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An error shown as a page of the console (the API answers JSON; a browser deserves a page).
pub struct PageError(AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> PageError {
        PageError(e)
    }
}

impl From<crate::store::error::StoreError> for PageError {
    fn from(e: crate::store::error::StoreError) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        // A refusal that says why in Chinese (a stale form; a merge past the station's
        // villages) is shown as it says; others by their status.
        let why = match &self.0 {
            AppError::Forbidden(m) => m.split_once(" / ").map(|(zh, _)| zh.to_owned()),
            _ => None,
        };
        let json = self.0.into_response();
        let status = json.status();
        let message = match status {
            StatusCode::NOT_FOUND => "没有这条记录，或它不在您的辖区".to_owned(),
            StatusCode::FORBIDDEN => {
                why.unwrap_or_else(|| "您无权进行此操作（或表单已过期，请刷新后重试）".to_owned())
            }
            StatusCode::BAD_REQUEST => "请求有误，请检查填写的内容".to_owned(),
            StatusCode::CONFLICT => {
                "记录已有变化（已存在、已删除或已合并），请刷新后重试".to_owned()
            }
            _ => "服务器出错，请稍后再试".to_owned(),
        };
        (status, pages::error(status.as_u16(), &message)).into_response()
    }
}

/// A signed-in reviewer or administrator.
pub struct ConsoleUser {
    account: Account,
    villages: Vec<String>,
    csrf: String,
    cookie: String,
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE_NAME)
}

fn cookie_named(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted).then(|| value.to_owned())
        })
}

/// The cookie that carries the sign-in form's CSRF token (double submit: the form and the cookie
/// must agree, which a page of another site cannot arrange).
const LOGIN_COOKIE: &str = "baylink_login";

/// The sign-in form with a fresh CSRF token, set in its cookie too.
fn login_form(
    state: &AppState,
    status: StatusCode,
    error: Option<&str>,
    (username, next): (&str, &str),
) -> Response {
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let next = back_to(next).unwrap_or_default();
    let mut response = (status, pages::login(error, &token, username, next)).into_response();
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

impl FromRequestParts<AppState> for ConsoleUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // A page asked for is returned to after signing in (a form posted is not sent again).
        let asked = Some(parts.uri.path())
            .filter(|_| parts.method == axum::http::Method::GET)
            .and_then(back_to)
            .filter(|p| *p != "/console/");
        let to_login = || {
            match asked {
                // `back_to` let through no character a query's value would need escaped.
                Some(page) => Redirect::to(&format!("/console/login?next={page}")),
                None => Redirect::to("/console/login"),
            }
            .into_response()
        };
        let Some(cookie) = cookie_value(&parts.headers) else {
            return Err(to_login());
        };
        let found = state
            .store
            .console_session(cookie.clone())
            .await
            .map_err(|e| AppError::from(e).into_response())?;
        match found {
            Some(ConsoleSession {
                account,
                villages,
                csrf,
            }) => Ok(ConsoleUser {
                account,
                villages,
                csrf,
                cookie,
            }),
            None => Err(to_login()),
        }
    }
}

impl ConsoleUser {
    fn caller(&self) -> Caller {
        Caller {
            account: self.account.id,
            role: self.account.role,
            device: "console".into(),
            villages: self.villages.clone(),
        }
    }

    fn check_csrf(&self, token: &str) -> Result<(), AppError> {
        // Constant-time enough for a 256-bit random token compared once per form post.
        if token.len() == self.csrf.len()
            && token
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0, |acc, (a, b)| acc | (a ^ b))
                == 0
        {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "表单已过期，请刷新后重试 / stale or forged form: reload and retry".into(),
            ))
        }
    }
}

async fn css() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
}

/// Where the sign-in page was asked to return to.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

async fn login_page(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    login_form(&state, StatusCode::OK, None, ("", &query.next))
}

/// A console page to return to after signing in: one of the console's own addresses, nothing
/// that leaves it (an address of another site, or of the sign-in itself).
///
/// Only a page's path, its query left behind: a link sent to a reviewer would otherwise run
/// what it asks (an export of full numbers, a reveal, a search by number) under her name, each
/// audited as hers, the moment she signs in. Letters, digits, `/`, `-` and `_` only: no dot
/// segments, escapes or other sites. Nor the export, the sign-in or the sign-out.
fn back_to(next: &str) -> Option<&str> {
    let path = next.split('?').next().unwrap_or_default();
    let console = path.starts_with("/console/")
        && !["/console/login", "/console/logout", "/console/export"]
            .iter()
            .any(|p| path.starts_with(p))
        && path.len() <= 512
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'));
    console.then_some(path)
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
    /// The page to return to (`back_to`).
    #[serde(default)]
    next: String,
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let fresh = cookie_named(&headers, LOGIN_COOKIE)
        .is_some_and(|token| !token.is_empty() && token == form.csrf);
    if !fresh {
        let error = "表单已过期，请重新登录 / the form expired: sign in again";
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            Some(error),
            (&form.username, &form.next),
        );
    }
    let Some(address_keys) = throttle::login_keys(&form.username, addr) else {
        return login_form(
            &state,
            StatusCode::BAD_REQUEST,
            Some("用户名过长"),
            ("", &form.next),
        );
    };
    let account = match state.store.account_by_username(form.username.clone()).await {
        Ok(account) => account,
        Err(e) => return AppError::from(e).into_response(),
    };
    // A browser that signed in to this account before has a throttle of its own (auth::known).
    let now_s = now_ms() / 1000;
    let known = match (
        cookie_named(&headers, known::BROWSER_COOKIE),
        account.as_ref(),
    ) {
        (Some(cookie), Some(a)) => {
            let store = state.store.as_ref();
            state.keys.check_browser(&cookie, a, now_s, store).await
        }
        _ => None,
    };
    let keys = known.unwrap_or(address_keys);
    let reservation = match throttle::Reservation::reserve(&state.store, keys).await {
        Ok(reservation) => reservation,
        Err(AppError::Throttled(wait)) => {
            state.metrics.login_throttled();
            tracing::info!(username = ?form.username, client = %addr.map_or_else(|| "-".to_owned(), |a| a.to_string()), "console login throttled");
            let error = format!("尝试次数过多，请约 {} 分钟后再试", wait.div_ceil(60));
            let mut response = login_form(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&error),
                (&form.username, &form.next),
            );
            if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            return response;
        }
        Err(e) => return e.into_response(),
    };
    let stored = account
        .as_ref()
        .map_or_else(|| password::decoy().to_owned(), |a| a.password_hash.clone());
    let given = form.password;
    let matches = password::verify_off_thread(given, stored)
        .await
        .unwrap_or(false);
    let account = match account {
        Some(a) if matches && !a.disabled && a.role != Role::Officer => a,
        _ => {
            if let Err(e) = reservation.fail().await {
                return e.into_response();
            }
            state.metrics.login_failed();
            tracing::info!(username = ?form.username, client = %addr.map_or_else(|| "-".to_owned(), |a| a.to_string()), "console login refused");
            return login_form(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("用户名或密码错误"),
                (&form.username, &form.next),
            );
        }
    };
    if let Err(e) = reservation.succeed().await {
        return e.into_response();
    }
    let id = account.id;
    let opened = state.store.open_console_session(id, SESSION_TTL_MS).await;
    match opened {
        Ok(cookie) => {
            let secure = if state.config.secure_cookies {
                "; Secure"
            } else {
                ""
            };
            let value = format!(
                "{COOKIE_NAME}={cookie}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                SESSION_TTL_MS / 1000
            );
            let browser = format!(
                "{}={}; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                known::BROWSER_COOKIE,
                state.keys.current().issue_browser(&account, now_s),
                known::BROWSER_TTL_S
            );
            let page = back_to(&form.next).unwrap_or("/console/");
            let mut response = Redirect::to(page).into_response();
            for cookie in [value, browser] {
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(SET_COOKIE, v);
                }
            }
            response
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

/// A form that only carries the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    user: ConsoleUser,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    state
        .store
        .close_console_session(user.cookie.clone())
        .await?;
    let mut response = Redirect::to("/console/login").into_response();
    let expired = format!("{COOKIE_NAME}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(response)
}

async fn dashboard(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    let villages = user.villages.clone();
    // The last 30 days, China time.
    let today = baylink_domain::Date::from_unix_ms(
        now_ms() as i64,
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    );
    let since = baylink_domain::Date::from_days(today.to_days() - 29);
    let overview = state.store.overview(villages, since).await?;
    let data = pages::Dashboard { overview, since };
    Ok(pages::dashboard(&user, &data).into_response())
}

/// List filters from the query string.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    kind: Option<String>,
    village: Option<String>,
    status: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    // Text, not a number: a number inside a flattened struct does not deserialize from a query.
    page: Option<String>,
}

impl ListQuery {
    /// The filter these parameters ask for; empty and malformed values are ignored.
    fn filter(self) -> Filter {
        let date =
            |d: Option<String>| non_empty(d).filter(|d| baylink_domain::Date::parse(d).is_some());
        Filter {
            kind: non_empty(self.kind),
            village: non_empty(self.village),
            status: non_empty(self.status),
            query: non_empty(self.q),
            from: date(self.from),
            to: date(self.to),
            before_seq: None,
        }
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

async fn records(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let page: u32 = query
        .page
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let filter = query.filter();
    let rows = state
        .store
        .records(
            user.villages.clone(),
            filter.clone(),
            PAGE + 1,
            page.saturating_mul(PAGE),
        )
        .await?;
    // A search reaching past what the masks show is audited before the page goes out.
    if let Some(typed) = filter
        .query
        .as_deref()
        .filter(|q| pages::searches_past_masks(q))
    {
        let typed = baylink_domain::cut_to(typed, 64);
        state
            .store
            .audit_access(user.account.id, "search_hidden".into(), typed)
            .await?;
    }
    let stations = state.store.stations().await?;
    let names = stations.into_iter().flat_map(|s| s.villages).collect();
    Ok(pages::records(&user, &filter, &rows, page, PAGE as usize, &names).into_response())
}

/// Most rows in one export.
const EXPORT_LIMIT: u32 = 200_000;

/// An export request: the list's filters and the format.
#[derive(Deserialize)]
pub struct ExportQuery {
    format: String,
    #[serde(flatten)]
    list: ListQuery,
}

async fn export(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<ExportQuery>,
) -> Result<Response, PageError> {
    let xlsx = match query.format.as_str() {
        "csv" => false,
        "xlsx" => true,
        _ => return Err(AppError::BadRequest("format: csv or xlsx".into()).into()),
    };
    let filter = query.list.filter();
    let rows = state
        .store
        .export(
            user.account.id,
            user.villages.clone(),
            filter,
            query.format.clone(),
            EXPORT_LIMIT,
        )
        .await?;
    let stations = state.store.stations().await?;
    let names: std::collections::BTreeMap<String, String> =
        stations.into_iter().flat_map(|s| s.villages).collect();
    let village_name = |code: &str| names.get(code).cloned().unwrap_or_else(|| code.to_owned());
    let stamp = baylink_domain::date::datetime_from_unix_ms(
        now_ms() as i64,
        baylink_domain::date::CHINA_OFFSET_MINUTES,
    )
    .replace([' ', ':'], "-");
    let (body, content_type, extension) = if xlsx {
        (
            export::xlsx(&rows, &village_name)?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        )
    } else {
        (
            export::csv(&rows, &village_name),
            "text/csv; charset=utf-8",
            "csv",
        )
    };
    let disposition = format!("attachment; filename=\"baylink-{stamp}.{extension}\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Whether to show the full ID number; the record decided just before, when a decision led
/// here, or the duplicate merged into this one, when a merge did; the list she opened it from
/// (its filters as a query string), whose next waiting record a decision leads to.
#[derive(Deserialize, Default)]
pub struct RecordQuery {
    reveal: Option<u8>,
    reviewed: Option<String>,
    merged: Option<String>,
    #[serde(default)]
    queue: String,
}

/// The list filters a `queue` names (unknown or malformed ones ignored, as in a list's address).
fn queue_filter(queue: &str) -> Filter {
    let uri: Option<axum::http::Uri> = format!("/?{queue}").parse().ok();
    uri.and_then(|uri| Query::<ListQuery>::try_from_uri(&uri).ok())
        .map(|Query(list)| list.filter())
        .unwrap_or_default()
}

/// The next record waiting for review in `queue`'s slice of her station (the list's order),
/// other than `after`: the first below `place` (where `after` stood in the list, newest first),
/// else the first from the top, so that a record she passes over comes round again only after
/// the rest; `after` itself when none waits. The list's search text is left out: a search by
/// number reaches past the masks and is audited where she types it (the list), and an address
/// or form is anyone's to write — here it would find, unaudited, who holds a number.
async fn next_waiting(
    state: &AppState,
    user: &ConsoleUser,
    queue: &Filter,
    after: Uuid,
    place: Option<i64>,
) -> Result<(Uuid, bool), PageError> {
    let mut waiting = queue.clone();
    waiting.status = Some("pending".into());
    waiting.query = None;
    let starts = match place {
        Some(seq) => vec![Some(seq), None],
        None => vec![None],
    };
    for start in starts {
        waiting.before_seq = start;
        let rows = state
            .store
            .records(user.villages.clone(), waiting.clone(), 2, 0)
            .await?;
        let next = rows
            .iter()
            .filter_map(|row| Uuid::parse_str(&row.id).ok())
            .find(|next| *next != after);
        if let Some(next) = next {
            return Ok((next, false));
        }
    }
    Ok((after, true))
}

async fn record(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    Query(query): Query<RecordQuery>,
) -> Result<Response, PageError> {
    let id = Uuid::parse_str(&id).map_err(|_| AppError::NotFound("no such record".into()))?;
    let reveal = query.reveal == Some(1);
    // An id, or nothing: the page links to it (a record page checks who may open it).
    let id_in = |text: &Option<String>| text.as_deref().and_then(|t| Uuid::parse_str(t).ok());
    let queue = queue_filter(&query.queue);
    let arrival = match (id_in(&query.reviewed), id_in(&query.merged)) {
        // Said only as far as what the server holds says it (an address is anyone's to write):
        // of a record she may open that is decided, and that none else waits when none does.
        (Some(before), _) => match decided(&state, &user, before).await {
            Some(decision) => {
                // Whether none is left is said only on the record decided itself.
                let none_left =
                    before == id && next_waiting(&state, &user, &queue, before, None).await?.1;
                (before != id || none_left).then(|| pages::Arrival::Reviewed {
                    before: before.to_string(),
                    decision,
                    none_left,
                })
            }
            None => None,
        },
        (None, Some(from)) => Some(pages::Arrival::Merged(from.to_string())),
        _ => None,
    };
    let came = pages::Came {
        arrival,
        ..pages::Came::listed(queue)
    };
    record_page(&state, &user, id, reveal, None, came).await
}

/// The decision on `id` (its review status's code) when it is a record the user may open whose
/// review is decided (approved or returned).
async fn decided(state: &AppState, user: &ConsoleUser, id: Uuid) -> Option<String> {
    let page = state
        .store
        .record_page(user.caller(), id, Reveal::Masked)
        .await
        .ok()?;
    let status = page.view.fields.get("review_status")?;
    let status: String = serde_json::from_str(status).ok()?;
    (status != "pending").then_some(status)
}

/// A record's page, with a review form to correct when `draft` says what is wrong with it.
async fn record_page(
    state: &AppState,
    user: &ConsoleUser,
    id: Uuid,
    reveal: bool,
    draft: Option<pages::ReviewDraft>,
    mut came: pages::Came,
) -> Result<Response, PageError> {
    let reveal = if reveal { Reveal::Full } else { Reveal::Masked };
    let page = state.store.record_page(user.caller(), id, reveal).await?;
    // A record waiting for her decision may be passed over: to the next one below it.
    // Not from a search: the next record is chosen without its text (see `next_waiting`), and
    // a link saying "the next" in a searched list would leave the search unsaid.
    if page.view.waiting() && page.writable && came.queue.query.is_none() {
        let (next, none) = next_waiting(state, user, &came.queue, id, Some(page.view.seq)).await?;
        came.skip = (!none).then(|| next.to_string());
    }
    let status = if draft.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let stations = state.store.stations().await?;
    let names = stations.into_iter().flat_map(|s| s.villages).collect();
    let page = pages::record(
        user,
        &id.to_string(),
        &page,
        reveal == Reveal::Full,
        draft.as_ref(),
        &came,
        &names,
    );
    Ok((status, page).into_response())
}

/// A review decision.
#[derive(Deserialize)]
pub struct ReviewForm {
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
    /// The list she works through (its filters as a query string).
    #[serde(default)]
    queue: String,
}

async fn review(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    Form(form): Form<ReviewForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    let entity = Uuid::parse_str(&id).map_err(|_| AppError::NotFound("no such record".into()))?;
    let queue = queue_filter(&form.queue);
    let verdict = match form.decision.as_str() {
        "approve" => Verdict::Approve(form.comment.clone()),
        "return" => Verdict::Return(form.comment.clone()),
        _ => return Err(AppError::BadRequest("decision: approve or return".into()).into()),
    };
    if matches!(verdict, Verdict::Return(_)) && form.comment.trim().is_empty() {
        // The form comes back with what is wrong, nothing lost.
        let draft = pages::ReviewDraft {
            error: "退回须填写原因，以便警员改正".into(),
            comment: form.comment,
        };
        let came = pages::Came::listed(queue);
        return record_page(&state, &user, entity, false, Some(draft), came).await;
    }
    // Where it stood in her list before the decision moves it: the next is found below it.
    let place = state
        .store
        .record_page(user.caller(), entity, Reveal::Masked)
        .await
        .ok()
        .map(|page| page.view.seq);
    match state.store.review(user.caller(), entity, verdict).await {
        // A comment the schema refuses comes back as the form too, saying why.
        Err(crate::store::error::StoreError::Invalid(why)) if why.starts_with("comment: ") => {
            let draft = pages::ReviewDraft {
                error: why["comment: ".len()..].to_owned(),
                comment: form.comment,
            };
            let came = pages::Came::listed(queue);
            record_page(&state, &user, entity, false, Some(draft), came).await
        }
        Err(e) => Err(e.into()),
        // On to the next record waiting for her in the list she works through (her own
        // station's: a list holds no other), saying this one's decision was kept; back to this
        // one when none is left.
        Ok(()) => {
            let (next, _) = next_waiting(&state, &user, &queue, entity, place).await?;
            let queue = pages::query_escape(&pages::queue_of(&queue));
            Ok(Redirect::to(&format!(
                "/console/records/{next}?reviewed={entity}&queue={queue}"
            ))
            .into_response())
        }
    }
}

async fn conflicts(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    let list = state.store.conflicts(user.villages.clone(), 200).await?;
    Ok(pages::conflicts(&user, &list).into_response())
}

/// A reviewer's choice between the two values of a conflict.
#[derive(Deserialize)]
pub struct SettleForm {
    csrf: String,
    /// `kept` (the value that stands) or `lost`.
    choose: String,
}

async fn settle(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<i64>,
    Form(form): Form<SettleForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    let keep = match form.choose.as_str() {
        "kept" => Keep::Kept,
        "lost" => Keep::Lost,
        _ => return Err(AppError::BadRequest("choose: kept or lost".into()).into()),
    };
    state.store.settle_conflict(user.caller(), id, keep).await?;
    Ok(Redirect::to("/console/conflicts").into_response())
}
