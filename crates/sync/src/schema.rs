//! Numbered schema migrations, decided the same way on the phone and the server: a database
//! records how many steps it has had; a build runs the steps it has beyond that, and refuses a
//! database that has had more steps than it knows (written by a newer build, whose schema it
//! would misread).

use std::ops::Range;

/// A database written by a newer build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("database schema version {found} is newer than this build knows ({known})")]
pub struct SchemaTooNew {
    /// The database's version.
    pub found: usize,
    /// The newest version this build knows.
    pub known: usize,
}

/// The steps (indices into the build's list of `known` steps) a database at version `found`
/// needs; a negative or missing version is a new database.
pub fn steps_to_run(found: i64, known: usize) -> Result<Range<usize>, SchemaTooNew> {
    let found = usize::try_from(found).unwrap_or(0);
    if found > known {
        return Err(SchemaTooNew { found, known });
    }
    Ok(found..known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_runs_the_steps_it_has_not_had_and_a_newer_one_is_refused() {
        assert_eq!(steps_to_run(0, 3), Ok(0..3));
        assert_eq!(steps_to_run(-1, 3), Ok(0..3));
        assert_eq!(steps_to_run(2, 3), Ok(2..3));
        assert_eq!(steps_to_run(3, 3), Ok(3..3));
        assert_eq!(steps_to_run(4, 3), Err(SchemaTooNew { found: 4, known: 3 }));
    }
}
