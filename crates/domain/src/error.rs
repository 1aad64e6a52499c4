//! Validation errors: each names the field and says what is wrong, in Chinese and in English.

use serde::{Deserialize, Serialize};

/// What is wrong with one field, in words an officer can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's name in the data model (`id_number`).
    pub field: String,
    /// A stable machine-readable reason (`checksum`, `required`, ...).
    pub code: String,
    /// The message in Chinese, starting with the field's Chinese label.
    pub message_zh: String,
    /// The message in English, starting with the field's English label.
    pub message_en: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {}", self.message_zh, self.message_en)
    }
}

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// One or more fields are invalid; nothing may be stored.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The entity kind is not one this version knows how to capture.
    #[error("unknown kind `{0}`")]
    UnknownKind(String),
}

impl Error {
    /// The field errors, if this is a validation error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Error::Invalid(errors) => errors,
            Error::UnknownKind(_) => &[],
        }
    }
}

/// Result of domain operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A reason before it is attached to a field: the code and the two texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// Stable code.
    pub code: &'static str,
    /// What is wrong, in Chinese.
    pub zh: String,
    /// What is wrong, in English.
    pub en: String,
}

impl Reason {
    /// A reason from its code and two texts.
    pub fn new(code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> Reason {
        Reason {
            code,
            zh: zh.into(),
            en: en.into(),
        }
    }

    /// The error for the field with these labels.
    pub fn for_field(self, field: &str, label_zh: &str, label_en: &str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            code: self.code.to_owned(),
            message_zh: format!("{label_zh}：{}", self.zh),
            message_en: format!("{label_en}: {}", self.en),
        }
    }
}
