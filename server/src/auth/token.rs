//! Short-lived access tokens: HS256 JWTs naming the account, role and device, and the key
//! (`kid`) that signed them. The keys live in the database (`store::token_keys`, held by each
//! node in `auth::keyring`) and never leave the server.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::store::accounts::Role;

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Account id.
    pub sub: i64,
    /// Username.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Device id.
    pub dev: String,
    /// Issued at (seconds since the Unix epoch).
    pub iat: u64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: u64,
    /// The device's token generation it was issued in (see `device.token_gen`).
    #[serde(default)]
    pub dgen: i64,
    /// The account's token generation it was issued in.
    #[serde(default)]
    pub agen: i64,
}

/// The signing and verifying keys of one token key's secret.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The key pull cursors are signed with, derived from the same secret.
    pub cursor: crate::auth::cursor::CursorKey,
    /// The key known-browser cookies are signed with.
    pub browser: crate::auth::known::BrowserKey,
}

impl Keys {
    /// Keys from a secret of at least 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Keys, AppError> {
        let bad = |e: jsonwebtoken::errors::Error| AppError::Internal(format!("token key: {e}"));
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret).map_err(bad)?,
            decoding: DecodingKey::from_secret(secret).map_err(bad)?,
            cursor: crate::auth::cursor::CursorKey::from_secret(secret),
            browser: crate::auth::known::BrowserKey::from_secret(secret),
        })
    }

    /// Signs claims.
    pub fn issue(&self, claims: &Claims) -> Result<String, AppError> {
        self.issue_with(&Header::new(Algorithm::HS256), claims)
    }

    /// Signs claims under a header of the caller's (HS256, naming the key).
    pub fn issue_with(&self, header: &Header, claims: &Claims) -> Result<String, AppError> {
        jsonwebtoken::encode(header, claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("token: {e}")))
    }

    /// Verifies a token: signature, algorithm (HS256 only) and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, AppError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => AppError::Unauthorized(
                        baylink_sync::auth::unauthorized::TOKEN_EXPIRED,
                        "access token expired: refresh it".into(),
                    ),
                    _ => AppError::Unauthorized(
                        baylink_sync::auth::unauthorized::INVALID_TOKEN,
                        "access token invalid".into(),
                    ),
                }
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Claims of account 1's device `d`, expiring at `exp`.
    pub(crate) fn claims(exp: u64) -> Claims {
        Claims {
            sub: 1,
            name: "o1".into(),
            role: Role::Officer,
            dev: "d".into(),
            iat: 0,
            exp,
            dgen: 0,
            agen: 0,
        }
    }

    #[test]
    fn tokens_verify_with_their_key_only_and_expire() {
        let keys = Keys::from_secret(&[7; 32]).unwrap();
        let far = 4_000_000_000;
        let token = keys.issue(&claims(far)).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), claims(far));
        let other = Keys::from_secret(&[8; 32]).unwrap();
        assert!(other.verify(&token).is_err());
        let old = keys.issue(&claims(1_000)).unwrap();
        let err = keys.verify(&old).unwrap_err();
        assert!(
            matches!(
                err,
                AppError::Unauthorized(baylink_sync::auth::unauthorized::TOKEN_EXPIRED, _)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        let keys = Keys::from_secret(&[7; 32]).unwrap();
        let token = keys.issue(&claims(4_000_000_000)).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(keys.verify(&forged).is_err());
    }
}
