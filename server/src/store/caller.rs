//! Who is calling: the authenticated account, its role, device and villages, as every use case takes it.

/// Who is syncing.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Account id.
    pub account: i64,
    /// Role.
    pub role: Role,
    /// Device id (node id).
    pub device: String,
    /// Villages the caller sees and writes.
    pub villages: Vec<String>,
}

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A village officer: captures and syncs their villages.
    Officer,
    /// A station reviewer: the station's villages.
    Reviewer,
    /// An administrator: everything.
    Admin,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    /// The role of a stored name.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Officer, Role::Reviewer, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}
