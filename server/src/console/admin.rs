//! Administration pages (administrators only): accounts, devices, the audit log. Every change is
//! audited; passwords are hashed off the async workers and never logged.

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{ConsoleUser, CsrfForm, PageError, pages};
use crate::auth::password;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::accounts::Role;
use crate::store::contract::{Access, Actor, NewAccount};
use uuid::Uuid;

impl ConsoleUser {
    pub(super) fn require_admin(&self) -> Result<(), AppError> {
        if self.account.role == Role::Admin {
            Ok(())
        } else {
            Err(AppError::Forbidden("administrators only".into()))
        }
    }
}

pub(super) async fn users(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    user.require_admin()?;
    let rows = (state.store.accounts().await?, state.store.stations().await?);
    Ok(pages::admin_users(&user, &rows.0, &rows.1).into_response())
}

/// The form that adds an account.
#[derive(Deserialize)]
pub(super) struct NewUserForm {
    csrf: String,
    username: String,
    display_name: String,
    role: String,
    #[serde(default)]
    station: String,
    #[serde(default)]
    villages: String,
    password: String,
}

fn villages_of_text(text: &str) -> Vec<String> {
    text.split([',', '，', ' ', ';'])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) async fn add_user(
    State(state): State<AppState>,
    user: ConsoleUser,
    Form(form): Form<NewUserForm>,
) -> Result<Response, PageError> {
    user.require_admin()?;
    user.check_csrf(&form.csrf)?;
    let username = form.username.trim().to_owned();
    if username.is_empty()
        || username.len() > 32
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(
            AppError::BadRequest("username: 1 to 32 letters, digits, _ or -".into()).into(),
        );
    }
    if form.password.chars().count() < 8 {
        return Err(AppError::BadRequest("password: at least 8 characters".into()).into());
    }
    let role = Role::parse(&form.role)
        .ok_or_else(|| AppError::BadRequest("role: officer, reviewer or admin".into()))?;
    let password = form.password;
    let hash = password::hash_off_thread(password).await?;
    let display_name = match form.display_name.trim() {
        "" => username.clone(),
        name => name.to_owned(),
    };
    let new = NewAccount {
        username,
        display_name,
        role,
        station: Some(form.station.trim().to_owned()).filter(|s| !s.is_empty()),
        password_hash: hash,
        villages: villages_of_text(&form.villages),
    };
    let admin = Actor::Account(user.account.id);
    state.store.create_account(admin, new).await?;
    Ok(Redirect::to("/console/admin/users").into_response())
}

/// A form that sets an account's villages.
#[derive(Deserialize)]
pub(super) struct VillagesForm {
    csrf: String,
    villages: String,
}

pub(super) async fn assign(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(username): Path<String>,
    Form(form): Form<VillagesForm>,
) -> Result<Response, PageError> {
    user.require_admin()?;
    user.check_csrf(&form.csrf)?;
    let admin = Actor::Account(user.account.id);
    let villages = villages_of_text(&form.villages);
    state
        .store
        .assign_villages(admin, username, villages)
        .await?;
    Ok(Redirect::to("/console/admin/users").into_response())
}

pub(super) async fn set_disabled(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path((username, verb)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.require_admin()?;
    user.check_csrf(&form.csrf)?;
    let access = match verb.as_str() {
        "disable" => Access::Disabled,
        "enable" => Access::Enabled,
        _ => return Err(AppError::NotFound("no such action".into()).into()),
    };
    let admin = Actor::Account(user.account.id);
    state.store.set_access(admin, username, access).await?;
    Ok(Redirect::to("/console/admin/users").into_response())
}

pub(super) async fn devices(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    user.require_admin()?;
    let rows = state.store.devices().await?;
    Ok(pages::admin_devices(&user, &rows).into_response())
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.require_admin()?;
    user.check_csrf(&form.csrf)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::NotFound(format!("no device `{id}`")))?;
    let admin = Actor::Account(user.account.id);
    state.store.revoke_device(admin, id).await?;
    Ok(Redirect::to("/console/admin/devices").into_response())
}

/// The audit log page's filters, from its query string.
#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    /// Only this action.
    #[serde(default)]
    action: String,
    /// Only this account's (`operator`: the command line's).
    #[serde(default)]
    user: String,
    /// The page older than this entry.
    before: Option<i64>,
}

/// Entries on one page of the audit log.
const AUDIT_PAGE: u32 = 100;

pub(super) async fn audit(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    user.require_admin()?;
    let given = |text: &str| Some(text.trim().to_owned()).filter(|t| !t.is_empty());
    let filter = crate::store::contract::AuditFilter {
        action: given(&query.action),
        username: given(&query.user),
        since_ms: None,
        before: query.before,
    };
    let (page, actions) = state.store.audit_page(filter.clone(), AUDIT_PAGE).await?;
    Ok(pages::admin_audit(&user, &page, &actions, &filter).into_response())
}
