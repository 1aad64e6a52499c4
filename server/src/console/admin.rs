//! Administration pages (administrators only): accounts, devices, the audit log. Every change is
//! audited; passwords are hashed off the async workers and never logged.

use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{ConsoleUser, CsrfForm, PageError, pages};
use crate::auth::password;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::accounts::{self, NewAccount, Role};
use crate::store::audit;
use crate::store::devices;
use crate::store::now_ms;
use crate::store::places;

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
    let rows = state
        .db
        .read(|conn| {
            let mut out = Vec::new();
            for account in accounts::accounts(conn)? {
                let villages = if account.role == Role::Officer {
                    accounts::villages_of(conn, &account)?
                } else {
                    Vec::new()
                };
                out.push((account, villages));
            }
            Ok((out, places::stations(conn)?))
        })
        .await?;
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
    let admin = user.account.id;
    state
        .db
        .call(move |conn| {
            let villages = villages_of_text(&form.villages);
            let station = Some(form.station.trim()).filter(|s| !s.is_empty());
            let display = if form.display_name.trim().is_empty() {
                username.as_str()
            } else {
                form.display_name.trim()
            };
            let new = NewAccount {
                username: &username,
                display_name: display,
                role,
                station,
                password_hash: &hash,
                villages: &villages,
            };
            accounts::create_account(conn, &new, now_ms())?;
            audit::audit(
                conn,
                Some(admin),
                "add_account",
                Some(&username),
                Some(role.as_str()),
                now_ms(),
            )
        })
        .await?;
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
    let admin = user.account.id;
    state
        .db
        .call(move |conn| {
            let villages = villages_of_text(&form.villages);
            accounts::assign_villages(conn, &username, &villages)?;
            audit::audit(
                conn,
                Some(admin),
                "assign_villages",
                Some(&username),
                Some(&villages.join(",")),
                now_ms(),
            )
        })
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
    let disable = match verb.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(AppError::NotFound("no such action".into()).into()),
    };
    let admin = user.account.id;
    state
        .db
        .call(move |conn| {
            accounts::set_disabled(conn, &username, disable)?;
            audit::audit(
                conn,
                Some(admin),
                if disable {
                    "disable_account"
                } else {
                    "enable_account"
                },
                Some(&username),
                None,
                now_ms(),
            )
        })
        .await?;
    Ok(Redirect::to("/console/admin/users").into_response())
}

pub(super) async fn devices(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    user.require_admin()?;
    let rows = state.db.read(devices::devices).await?;
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
    let admin = user.account.id;
    state
        .db
        .call(move |conn| {
            devices::revoke_device(conn, &id)?;
            audit::audit(
                conn,
                Some(admin),
                "revoke_device",
                Some(&id),
                None,
                now_ms(),
            )
        })
        .await?;
    Ok(Redirect::to("/console/admin/devices").into_response())
}

pub(super) async fn audit(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, PageError> {
    user.require_admin()?;
    let rows = state.db.read(|conn| audit::audit_log(conn, 500)).await?;
    Ok(pages::admin_audit(&user, &rows).into_response())
}
