//! Authentication: password hashing, access tokens, login throttling.

pub mod cursor;
pub mod keyring;
pub mod known;
pub mod mac;
pub mod password;
pub mod throttle;
pub mod token;
