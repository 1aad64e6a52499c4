//! The PostgreSQL backend against the storage contract: the conformance suite, each scenario on
//! a fresh database of the cluster `BAYLINK_TEST_POSTGRES` names (`./scripts/test` starts a
//! throwaway one when it is not set).

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod conformance;

use std::sync::Arc;

use baylink_server::store::Db;
use baylink_server::store::pg::{drop_database, fresh_database};
use conformance::Backend;

/// Whether a cluster is named (a notice when not; a failure in CI).
fn ready() -> bool {
    baylink_server::store::pg::test_postgres().is_some()
}

/// A database of the test cluster, dropped when the test ends.
struct Fresh {
    cluster: String,
    name: String,
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = drop_database(&self.cluster, &self.name);
    }
}

/// A fresh PostgreSQL store.
fn postgres() -> Backend {
    let cluster = baylink_server::store::pg::test_postgres().unwrap();
    let (url, name) = fresh_database(&cluster).unwrap();
    let db = Db::open_postgres(&url).unwrap();
    Backend {
        store: Arc::new(db),
        keep: Box::new(Fresh { cluster, name }),
    }
}

crate::suite!(postgres, if ready);
