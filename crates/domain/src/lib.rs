//! Baylink's domain: the entity kinds and their fields, validation and normalisation of what
//! officers type (resident ID numbers, plates, phones, dates), natural-key identity and the
//! summary that lists and searches show. Pure code: no I/O, no clock (callers pass today's date).

pub mod date;
pub mod duplicates;
pub mod error;
pub mod form;
pub mod id_number;
pub mod identity;
pub mod phone;
pub mod plate;
pub mod regions;
pub mod schema;
pub mod scope;
pub mod search;
pub mod summary;
pub mod synthetic;
mod text;
pub mod validate;
pub mod watch;

pub use date::Date;
pub use error::{Error, FieldError, Result};
pub use identity::{KEY_FIELDS, natural_id, natural_key};
pub use schema::{EntityKind, FieldSpec, FieldType, Writer};
pub use summary::{Summary, summarize, summarize_with};
pub use text::{cut_to, excerpt, hidden_char};
pub use validate::{
    Fields, Input, missing_derived, read_with, to_text, validate_capture, validate_edit,
    validate_record, validate_value, validate_values,
};
