//! Errors of the replication core: malformed identifiers and stamps met while decoding.

/// What went wrong decoding replication data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A stamp's text form is malformed.
    #[error("malformed stamp `{0}`")]
    BadStamp(String),
    /// A node id is not a UUID.
    #[error("malformed node id `{0}`")]
    BadNodeId(String),
}

/// Result of the replication core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
