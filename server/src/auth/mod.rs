//! Authentication: password hashing, access tokens, login throttling.

pub mod password;
pub mod throttle;
pub mod token;
