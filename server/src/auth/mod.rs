//! Authentication: password hashing, access tokens, login throttling.

pub mod cursor;
pub mod password;
pub mod throttle;
pub mod token;
