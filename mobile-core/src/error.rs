//! Errors of the device engine, and the smaller error that apps see through UniFFI.

use baylink_domain::FieldError;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is invalid; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] baylink_domain::Error),
    /// No record has this id.
    #[error("本机没有此记录 / no record with id {0}")]
    NotFound(String),
    /// The id is not a UUID.
    #[error("“{0}”不是记录编号（应为 36 位，如 show 或 list 所示） / `{0}` is not a record id")]
    BadId(String),
    /// The database was written by a newer app version.
    #[error("database schema version {found} is newer than this app knows ({known})")]
    SchemaTooNew {
        /// Version in the file.
        found: usize,
        /// Newest version this build knows.
        known: usize,
    },
    /// SQLite failed.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Stored data did not decode.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The server could not be reached or answered garbage.
    #[error("网络不通或服务器无应答 / network: {0}")]
    Network(Network),
    /// The server refused the request.
    #[error("{message} [{status} {code}]")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's message.
        message: String,
        /// Seconds the server asked to wait before asking again (`Retry-After`).
        retry_after: Option<u64>,
    },
    /// Not signed in to a server.
    #[error("未登录，请先登录 / not signed in: run login first")]
    NotSignedIn,
    /// The server revoked this device; its data has been wiped.
    #[error(
        "此设备已被管理员注销，本机数据已清除 / this device was revoked by an administrator; its data has been wiped"
    )]
    Revoked,
    /// The passphrase does not open this encrypted store.
    #[error("口令错误，无法打开本机数据 / wrong passphrase: it does not open this store")]
    WrongPassphrase,
    /// The sync was cancelled; what it had applied stays, the rest waits for the next one.
    #[error("同步已取消 / sync cancelled")]
    Cancelled,
}

/// What failed on the way to the server, told apart so that an app can say "no signal" from
/// "the server's certificate is not trusted". The detail names no person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkKind {
    /// The server's name did not resolve.
    Dns,
    /// No connection could be made (refused, no route).
    Connect,
    /// The TLS handshake failed: most often a certificate this phone does not trust.
    Tls,
    /// No answer within the time limit.
    Timeout,
    /// The connection broke while the request or its answer was on its way.
    Interrupted,
    /// A proxy or gateway answered for a server that is down or starting (502, 503, 504).
    Unavailable,
    /// Anything else (an answer that could not be read).
    Other,
}

impl NetworkKind {
    /// Its code, as apps and the CLI see it.
    pub fn code(self) -> &'static str {
        match self {
            NetworkKind::Dns => "dns",
            NetworkKind::Connect => "connect",
            NetworkKind::Tls => "tls",
            NetworkKind::Timeout => "timeout",
            NetworkKind::Interrupted => "interrupted",
            NetworkKind::Unavailable => "unavailable",
            NetworkKind::Other => "other",
        }
    }
}

/// A failure on the way to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// What failed.
    pub kind: NetworkKind,
    /// The details, for the log.
    pub detail: String,
    /// Seconds a gateway asked to wait (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl Network {
    /// A failure of a kind.
    pub fn new(kind: NetworkKind, detail: impl Into<String>) -> Network {
        Network {
            kind,
            detail: detail.into(),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

/// Test transports and the simulation lose requests without saying how.
impl From<&str> for Network {
    fn from(detail: &str) -> Network {
        Network::new(NetworkKind::Other, detail)
    }
}

impl Error {
    /// Whether signing in failed or the session ended (`401`), or sign-ins are throttled
    /// (`429 throttled`): the officer signs in again, or waits. A server busy with the
    /// account's other pushes (`429 busy`) is not one.
    pub fn is_auth(&self) -> bool {
        match self {
            Error::NotSignedIn => true,
            // Refused as the caller she is: a reviewer's sign-in on the device API.
            Error::Server {
                status: 401 | 403, ..
            } => true,
            Error::Server {
                status: 429, code, ..
            } => code != baylink_sync::wire::BUSY,
            _ => false,
        }
    }

    /// One field refused before anything is stored; the texts name the field themselves.
    pub(crate) fn field(
        field: &str,
        code: &str,
        message_zh: impl Into<String>,
        message_en: impl Into<String>,
    ) -> Error {
        Error::Invalid(baylink_domain::Error::Invalid(vec![FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            message_zh: message_zh.into(),
            message_en: message_en.into(),
        }]))
    }
}

/// Result of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field's problem, as apps show it next to the field.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FieldProblem {
    /// Field name.
    pub field: String,
    /// Stable reason code.
    pub code: String,
    /// Message in Chinese.
    pub message_zh: String,
    /// Message in English.
    pub message_en: String,
}

impl From<&FieldError> for FieldProblem {
    fn from(e: &FieldError) -> FieldProblem {
        FieldProblem {
            field: e.field.clone(),
            code: e.code.clone(),
            message_zh: e.message_zh.clone(),
            message_en: e.message_en.clone(),
        }
    }
}

/// The error apps act on. Its text carries no personal data.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum MobileError {
    /// Fix the fields and try again; the form keeps what was typed.
    #[error("invalid input in {} field(s)", problems.len())]
    Invalid {
        /// One entry per wrong field.
        problems: Vec<FieldProblem>,
    },
    /// The record does not exist on this device.
    #[error("record not found")]
    NotFound,
    /// Signing in failed, or the session ended: sign in again.
    #[error("authentication: {code}")]
    Auth {
        /// The server's code (`bad_credentials`, `token_reused`, `throttled`, ...).
        code: String,
        /// Seconds to wait before trying again (`throttled`), if the server said.
        retry_after_s: Option<u64>,
    },
    /// The server could not be reached; everything stays in the outbox.
    #[error("network unavailable ({kind})")]
    Network {
        /// What failed: `dns`, `connect`, `tls` (a certificate not trusted, most often),
        /// `timeout`, `interrupted`, `unavailable` (a gateway for a server that is down),
        /// `busy` (the server has as many of this account's pushes under way as it takes) or
        /// `other`.
        kind: String,
        /// Details for the log; nothing personal.
        detail: String,
        /// Seconds a gateway asked to wait before trying again, if it said.
        retry_after_s: Option<u64>,
    },
    /// An administrator revoked this device; its data was wiped.
    #[error("device revoked")]
    Revoked,
    /// The passphrase does not open the store on this phone: ask again.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The sync was cancelled ([`crate::FieldStore::cancel_sync`]); the store is consistent and
    /// the next sync goes on from where this one stopped.
    #[error("sync cancelled")]
    Cancelled,
    /// Anything else (storage, corrupt data); details are in the device log.
    #[error("{detail}")]
    Other {
        /// A short description without personal data (`detail`, not `message`: Kotlin's
        /// exceptions have a `message` of their own).
        detail: String,
    },
}

impl From<Error> for MobileError {
    fn from(e: Error) -> MobileError {
        let auth = e.is_auth();
        match e {
            Error::Invalid(baylink_domain::Error::Invalid(errors)) => MobileError::Invalid {
                problems: errors.iter().map(FieldProblem::from).collect(),
            },
            Error::Invalid(baylink_domain::Error::UnknownKind(kind)) => MobileError::Invalid {
                problems: vec![FieldProblem {
                    field: "kind".into(),
                    code: "unknown_kind".into(),
                    message_zh: format!("类型：不认识“{kind}”"),
                    message_en: format!("kind: `{kind}` is not known"),
                }],
            },
            Error::NotFound(_) | Error::BadId(_) => MobileError::NotFound,
            Error::SchemaTooNew { .. } => MobileError::Other {
                detail: "database from a newer app version".into(),
            },
            Error::Sqlite(_) => MobileError::Other {
                detail: "storage error".into(),
            },
            Error::Corrupt(_) => MobileError::Other {
                detail: "corrupt stored data".into(),
            },
            Error::Network(n) => MobileError::Network {
                kind: n.kind.code().into(),
                detail: n.detail,
                retry_after_s: n.retry_after,
            },
            Error::Server {
                code, retry_after, ..
            } if auth => MobileError::Auth {
                code,
                retry_after_s: retry_after,
            },
            // Busy: the outbox waits, as for a server not reached.
            Error::Server {
                status: 429,
                code,
                retry_after,
                ..
            } => MobileError::Network {
                kind: code.clone(),
                detail: format!("server: {code}"),
                retry_after_s: retry_after,
            },
            // The request did not arrive whole in the server's time (a slow link), after the
            // sync sent it again and in smaller pushes: the outbox waits for a better signal.
            Error::Server {
                status: 408,
                retry_after,
                ..
            } => MobileError::Network {
                kind: "timeout".into(),
                detail: "server: timeout".into(),
                retry_after_s: retry_after,
            },
            Error::Server { code, .. } => MobileError::Other {
                detail: format!("server: {code}"),
            },
            Error::NotSignedIn => MobileError::Auth {
                code: "not_signed_in".into(),
                retry_after_s: None,
            },
            Error::Revoked => MobileError::Revoked,
            Error::WrongPassphrase => MobileError::WrongPassphrase,
            Error::Cancelled => MobileError::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: u16, code: &str) -> Error {
        Error::Server {
            status,
            code: code.into(),
            message: String::new(),
            retry_after: Some(1),
        }
    }

    #[test]
    fn a_request_the_server_timed_out_waits_like_the_network() {
        for code in ["timeout", ""] {
            assert!(matches!(
                MobileError::from(server(408, code)),
                MobileError::Network { kind, .. } if kind == "timeout"
            ));
        }
    }

    #[test]
    fn a_busy_server_waits_like_the_network_and_only_a_refused_caller_signs_in_again() {
        assert!(matches!(
            MobileError::from(server(429, baylink_sync::wire::BUSY)),
            MobileError::Network { kind, retry_after_s: Some(1), .. } if kind == "busy"
        ));
        assert!(!server(429, baylink_sync::wire::BUSY).is_auth());
        for (status, code) in [
            (429, "throttled"),
            (401, "token_expired"),
            (403, "forbidden"),
        ] {
            assert!(server(status, code).is_auth());
            assert!(matches!(
                MobileError::from(server(status, code)),
                MobileError::Auth { code: c, .. } if c == code
            ));
        }
        assert!(!server(413, "too_large").is_auth());
        assert!(matches!(
            MobileError::from(server(413, "too_large")),
            MobileError::Other { .. }
        ));
        assert!(Error::NotSignedIn.is_auth());
    }
}
