//! Extractors: the authenticated device (bearer access token), the client address, and a JSON
//! body whose rejections use the app's error shape.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::AppError;
use crate::state::AppState;
use crate::store::caller::Caller;

/// The caller of a device endpoint: a valid access token of a live device and enabled account.
pub struct AuthDevice(pub Caller);

impl FromRequestParts<AppState> for AuthDevice {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(token) = header.strip_prefix("Bearer ") else {
            return Err(AppError::Unauthorized(
                baylink_sync::auth::unauthorized::MISSING_TOKEN,
                "an access token is required".into(),
            ));
        };
        let claims = state
            .keys
            .verify(token.trim(), state.store.as_ref())
            .await?;
        let device = uuid::Uuid::parse_str(&claims.dev).map_err(|_| invalid_token())?;
        let holder = state.store.token_holder(device, claims.sub).await?;
        let caller = match (holder.device, holder.account) {
            (Some(d), _) if d.revoked => {
                return Err(AppError::Unauthorized(
                    baylink_sync::auth::unauthorized::DEVICE_REVOKED,
                    "this device was revoked: its data must be wiped".into(),
                ));
            }
            (Some(d), Some(a))
                if d.account == a.id
                    && !a.disabled
                    && (d.token_gen, a.token_gen) == (claims.dgen, claims.agen) =>
            {
                Caller {
                    account: a.id,
                    role: a.role,
                    device: d.id,
                    villages: holder.villages,
                }
            }
            (_, Some(a)) if a.disabled => {
                return Err(AppError::Unauthorized(
                    baylink_sync::auth::unauthorized::ACCOUNT_DISABLED,
                    "this account is disabled".into(),
                ));
            }
            _ => return Err(invalid_token()),
        };
        // A token a reviewer's or administrator's device was given before the rule below.
        held_by_an_officer(caller.role)?;
        Ok(AuthDevice(caller))
    }
}

/// A device session of a reviewer or an administrator, opened before [`phones_are_officers`]:
/// answered as a revoked device, so that the phone wipes what it pulled of the station.
pub(crate) fn held_by_an_officer(role: crate::store::caller::Role) -> Result<(), AppError> {
    phones_are_officers(role).map_err(|_| {
        AppError::Unauthorized(
            baylink_sync::auth::unauthorized::DEVICE_REVOKED,
            "审核员和管理员不能使用手机端，本机数据须清除，请在网页工作台（/console/）登录 / reviewers and administrators do not use the device API: this device's data must be wiped; sign in on the console (/console/)".into(),
        )
    })
}

/// The device API is the officers' phones': a reviewer or an administrator reads her station in
/// the console, where every full ID number she opens is audited; a pull would hand her all of
/// them, unmasked and unaudited.
pub(crate) fn phones_are_officers(role: crate::store::caller::Role) -> Result<(), AppError> {
    if role == crate::store::caller::Role::Officer {
        return Ok(());
    }
    Err(AppError::Forbidden(
        "审核员和管理员请在网页工作台（/console/）登录，手机端仅供民警使用 / reviewers and administrators sign in on the console (/console/): the device API is for officers' phones".into(),
    ))
}

fn invalid_token() -> AppError {
    AppError::Unauthorized(
        baylink_sync::auth::unauthorized::INVALID_TOKEN,
        "access token invalid".into(),
    )
}

/// The client's address, when the server was started with connection info: the connection's,
/// or behind a trusted proxy the one it forwarded (`forwarded`).
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Some(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
        else {
            return Ok(ClientAddr(None));
        };
        let config = &state.config;
        if config.trusted_proxies.is_empty() {
            return Ok(ClientAddr(Some(peer)));
        }
        let header = config.forwarded_header;
        // As bytes: a hop that is not text (the client's own, left of the proxy's) must not
        // take the whole line with it.
        let values: Vec<&[u8]> = parts
            .headers
            .get_all(header.name())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        Ok(ClientAddr(Some(crate::forwarded::client_addr(
            peer,
            &config.trusted_proxies,
            header,
            &values,
        ))))
    }
}

/// Characters of a malformed body's error said back, at most.
const ERROR_CHARS: usize = 500;

/// A JSON body; malformed input is a 400 with the app's error shape. Its values are read within
/// a budget of memory in proportion to its length ([`baylink_sync::bounded`]): a body whose
/// values would take more is refused as too large (the phone sends fewer changes a push),
/// before it could cost the server many times its size.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if !json_content_type(req.headers()) {
            return Err(AppError::BadRequest(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::too_large()
                } else {
                    AppError::BadRequest(rejection.body_text())
                }
            })?;
        let budget = baylink_sync::bounded::budget_for(bytes.len());
        let exceeded = |_| {
            AppError::TooLarge(
                "value: the values take more memory than a body of this size may: send fewer \
                 changes at once"
                    .into(),
            )
        };
        // Read plainly; only a body that fails is read again for the error naming where (a
        // push's body is megabytes, and tracking the path through it cost a tenth of its read).
        match baylink_sync::bounded::within(budget, || serde_json::from_slice(&bytes))
            .map_err(exceeded)?
        {
            Ok(value) => Ok(AppJson(value)),
            Err(_) => {
                match baylink_sync::bounded::within(budget, || axum::Json::<T>::from_bytes(&bytes))
                    .map_err(exceeded)?
                {
                    Ok(axum::Json(value)) => Ok(AppJson(value)),
                    // serde's words may quote a string of the body whole: cut.
                    Err(rejection) => Err(AppError::BadRequest(baylink_domain::cut_to(
                        &rejection.body_text(),
                        ERROR_CHARS,
                    ))),
                }
            }
        }
    }
}

/// Whether the body is declared JSON: `application/json` (perhaps with parameters such as a
/// charset) or a type of the `+json` suffix, as axum's own extractor takes them.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    top.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

#[cfg(test)]
mod tests {
    // Helpers here are part of the tests: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_malformed_body_is_told_back_in_part() {
        // A list of numbers holding a string of a megabyte: serde's words quote it.
        let body = format!(r#"["{}"]"#, "x".repeat(1 << 20));
        let request = Request::builder()
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let Err(AppError::BadRequest(message)) =
            AppJson::<Vec<u64>>::from_request(request, &()).await
        else {
            panic!("a malformed body was taken");
        };
        assert!(message.contains("invalid type"), "{message}");
        assert_eq!(message.chars().count(), ERROR_CHARS + 1);
    }
}
