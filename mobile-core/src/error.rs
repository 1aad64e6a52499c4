//! Errors of the device engine, and the smaller error that apps see through UniFFI.

use baylink_domain::FieldError;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is invalid; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] baylink_domain::Error),
    /// No record has this id.
    #[error("no record with id {0}")]
    NotFound(String),
    /// The id is not a UUID.
    #[error("`{0}` is not a record id")]
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
    Network(String),
    /// The server refused the request.
    #[error("{message} [{status} {code}]")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's message.
        message: String,
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

impl Error {
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
    },
    /// The server could not be reached; everything stays in the outbox.
    #[error("network unavailable")]
    Network,
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
    #[error("{message}")]
    Other {
        /// A short description without personal data.
        message: String,
    },
}

impl From<Error> for MobileError {
    fn from(e: Error) -> MobileError {
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
                message: "database from a newer app version".into(),
            },
            Error::Sqlite(_) => MobileError::Other {
                message: "storage error".into(),
            },
            Error::Corrupt(_) => MobileError::Other {
                message: "corrupt stored data".into(),
            },
            Error::Network(_) => MobileError::Network,
            Error::Server {
                status: 401 | 429,
                code,
                ..
            } => MobileError::Auth { code },
            Error::Server { code, .. } => MobileError::Other {
                message: format!("server: {code}"),
            },
            Error::NotSignedIn => MobileError::Auth {
                code: "not_signed_in".into(),
            },
            Error::Revoked => MobileError::Revoked,
            Error::WrongPassphrase => MobileError::WrongPassphrase,
            Error::Cancelled => MobileError::Cancelled,
        }
    }
}
