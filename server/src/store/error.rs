//! The store's own error: what went wrong in storage terms. The HTTP edge maps it once
//! (`From<StoreError> for AppError` in `server/src/error.rs`); nothing here knows of HTTP.

/// Everything a storage use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record, account, device or place.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The input breaks a rule of the data (a code that does not exist, a missing comment).
    #[error("{0}")]
    Invalid(String),
    /// It exists already, or the stored state forbids it now.
    #[error("{0}")]
    Conflict(String),
    /// The backend failed (I/O, a corrupt row, a task that died).
    #[error("{0}")]
    Backend(String),
    /// The backend is busy (its writer lock not free in time): try again shortly.
    #[error("{0}")]
    Busy(String),
    /// A pull cursor below what was compacted away: the device must bootstrap again.
    #[error("{0}")]
    Expired(String),
}

impl From<crate::store::conn::SqlError> for StoreError {
    fn from(e: crate::store::conn::SqlError) -> StoreError {
        use crate::store::conn::SqlError;
        match e {
            SqlError::Unstorable(m) => StoreError::Invalid(m),
            SqlError::Busy(m) => StoreError::Busy(m),
            e => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend(format!("sqlite: {e}"))
    }
}
