//! `/api/v1/auth`: login (registers the device), refresh (rotating, reuse revokes the device's
//! session), logout.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use baylink_sync::auth::{AccountView, LoginRequest, RefreshRequest, Session, unauthorized};

use crate::auth::token::Claims;
use crate::auth::{known, password, throttle};
use crate::error::AppError;
use crate::extract::{AppJson, AuthDevice, ClientAddr};
use crate::state::AppState;
use crate::store::accounts::Account;
use crate::store::contract::{NewKey, Refreshed, SignInLookup};
use crate::store::devices::{KeyMatch, RefreshRefused};
use crate::store::now_ms;

/// The auth routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
}

/// Longest device key looked at (keys are 64 characters); a longer one proves nothing.
const MAX_DEVICE_KEY: usize = 128;

fn bad_credentials() -> AppError {
    AppError::Unauthorized(
        unauthorized::BAD_CREDENTIALS,
        "用户名或密码错误 / wrong username or password".into(),
    )
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    AppJson(req): AppJson<LoginRequest>,
) -> Result<Json<Session>, AppError> {
    let device = uuid::Uuid::parse_str(req.device_id.trim())
        .map_err(|_| AppError::BadRequest("device_id: must be a UUID".into()))?;
    let address_keys = throttle::login_keys(&req.username, addr).ok_or_else(|| {
        AppError::BadRequest(format!(
            "username: at most {} characters",
            throttle::MAX_USERNAME
        ))
    })?;
    let device_key = req.device_key.filter(|k| k.len() <= MAX_DEVICE_KEY);
    let presented = device_key.clone();
    let SignInLookup {
        account,
        key: matched,
    } = state
        .store
        .sign_in_lookup(req.username.clone(), device, device_key)
        .await?;
    let proven = matched != KeyMatch::No;
    // A device that proves it is the account's has a throttle of its own (auth::known).
    let keys = if proven {
        known::device_throttle_key(&device.to_string())
    } else {
        address_keys
    };
    let reservation = throttle::Reservation::reserve(&state.store, keys)
        .await
        .inspect_err(|e| {
            if matches!(e, AppError::Throttled(_)) {
                state.metrics.login_throttled();
                tracing::info!(username = ?req.username, client = %addr.map_or_else(|| "-".to_owned(), |a| a.to_string()), "login throttled");
            }
        })?;
    let stored = account
        .as_ref()
        .map_or_else(|| password::decoy().to_owned(), |a| a.password_hash.clone());
    let password = req.password;
    let matches = password::verify_off_thread(password, stored).await?;
    let account = match account {
        Some(account) if matches && !account.disabled => account,
        _ => {
            reservation.fail().await?;
            state.metrics.login_failed();
            // The name is logged escaped (bounded above).
            tracing::info!(username = ?req.username, client = %addr.map_or_else(|| "-".to_owned(), |a| a.to_string()), "login refused");
            return Err(bad_credentials());
        }
    };
    reservation.succeed().await?;
    // Refused before a device is registered for it; the password was right, so the answer
    // tells the caller nothing a guesser could use.
    crate::extract::phones_are_officers(account.role)?;
    let name = if req.device_name.trim().is_empty() {
        "device".to_owned()
    } else {
        req.device_name.trim().to_owned()
    };
    let registered = state
        .store
        .register_device(device, account.id, name)
        .await?;
    if registered.revoked {
        return Err(AppError::Unauthorized(
            unauthorized::DEVICE_REVOKED,
            "this device was revoked: its data must be wiped".into(),
        ));
    }
    tracing::info!(username = %account.username, device = %device, proven, "login");
    let new_key = match matched {
        KeyMatch::Current => NewKey::Keep,
        KeyMatch::Previous => NewKey::Rotate(presented),
        KeyMatch::No => NewKey::Rotate(None),
    };
    session(&state, account, device, new_key).await.map(Json)
}

/// Issues an access token and a new refresh token.
async fn session(
    state: &AppState,
    account: Account,
    device: uuid::Uuid,
    new_key: NewKey,
) -> Result<Session, AppError> {
    // A refresh token a reviewer's or administrator's device was given before the rule.
    crate::extract::held_by_an_officer(account.role)?;
    let now = now_ms();
    let ttl = state.config.refresh_ttl_s * 1000;
    let opened = state
        .store
        .open_device_session(device, account.clone(), ttl, new_key)
        .await?;
    let claims = Claims {
        sub: account.id,
        name: account.username.clone(),
        role: account.role,
        dev: device.to_string(),
        iat: now / 1000,
        exp: now / 1000 + state.config.access_ttl_s,
        dgen: opened.device_gen,
        agen: account.token_gen,
    };
    let access_token = state.keys.current().issue(&claims)?;
    Ok(Session {
        access_token,
        expires_in: state.config.access_ttl_s,
        refresh_token: opened.refresh_token,
        account: AccountView {
            username: account.username,
            display_name: account.display_name,
            role: account.role.as_str().to_owned(),
            station: account.station,
        },
        villages: opened.villages,
        village_names: opened.village_names,
        server_time_ms: now_ms(),
        device_key: opened.device_key,
    })
}

async fn refresh(
    State(state): State<AppState>,
    AppJson(req): AppJson<RefreshRequest>,
) -> Result<Json<Session>, AppError> {
    let device = req.device_id.trim().to_owned();
    let Refreshed {
        outcome,
        account,
        revoked,
    } = state
        .store
        .spend_refresh_token(req.refresh_token, device.clone())
        .await?;
    if revoked {
        return Err(AppError::Unauthorized(
            unauthorized::DEVICE_REVOKED,
            "this device was revoked: its data must be wiped".into(),
        ));
    }
    match (outcome, account) {
        (Ok(_), Some(account)) if !account.disabled => {
            // A token is spent only by the device it was issued to, whose id is a UUID.
            let device = uuid::Uuid::parse_str(&device).map_err(|_| {
                AppError::Unauthorized(unauthorized::INVALID_TOKEN, "refresh token invalid".into())
            })?;
            session(&state, account, device, NewKey::IfMissing)
                .await
                .map(Json)
        }
        (Err(RefreshRefused::Reused), _) => {
            tracing::warn!(%device, "refresh token reused: device session revoked");
            Err(AppError::Unauthorized(
                "token_reused",
                "refresh token already used: sign in again".into(),
            ))
        }
        _ => Err(AppError::Unauthorized(
            unauthorized::INVALID_TOKEN,
            "登录已失效（已过期，或密码已更改），请重新登录 / the session ended (it expired, or the \
             password was changed): sign in again"
                .into(),
        )),
    }
}

async fn logout(
    State(state): State<AppState>,
    AuthDevice(caller): AuthDevice,
) -> Result<StatusCode, AppError> {
    let device = uuid::Uuid::parse_str(&caller.device)
        .map_err(|_| AppError::Internal("a caller with no device".into()))?;
    state.store.end_device_session(device).await?;
    Ok(StatusCode::NO_CONTENT)
}
