//! A bootstrap builds the phone's search indexes once its pull is complete: one cut short by the
//! network must not leave the phone searching without them.

// Helpers here are part of the tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use baylink_sync::wire::{Cursor, FieldValue, PullResponse, PushResponse};
use baylink_sync::{Change, Hlc, NodeId, Stamp};
use mobile_core::sync::{Transport, sync_with};
use mobile_core::{Error, Result, Store};
use uuid::Uuid;

/// A server that answers the first page of a village (more to come), then nothing.
struct CutShort {
    pulls: usize,
}

impl Transport for CutShort {
    fn push(&mut self, _: &mut Store, _: &[Change]) -> Result<PushResponse> {
        Err(Error::Network("nothing to push here".into()))
    }

    fn pull(&mut self, _: &mut Store, _: Option<String>, _: u32) -> Result<PullResponse> {
        self.pulls += 1;
        if self.pulls > 1 {
            return Err(Error::Network("connection lost".into()));
        }
        let stamp = Stamp::new(Hlc::new(1_700_000_000_000, 0), NodeId(Uuid::from_u128(99)));
        let value = |field: &str, value: &str| FieldValue {
            kind: "person".into(),
            entity: Uuid::from_u128(1),
            field: field.into(),
            value: value.into(),
            stamp,
            extra: BTreeMap::new(),
        };
        Ok(PullResponse {
            server_time_ms: 1_700_000_000_000,
            values: vec![value("village", "441303006001"), value("name", "张三")],
            records: Vec::new(),
            purged: Vec::new(),
            next_cursor: Cursor("b1".into()),
            more: true,
            villages: None,
            watch_hits: Vec::new(),
            extra: BTreeMap::new(),
        })
    }

    fn pause(&mut self, _: Duration) {}
}

fn indexes(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'record' AND sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_bootstrap_cut_short_leaves_the_search_indexes_built() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phone.db");
    let mut store = Store::open(&path).unwrap();
    let before = indexes(&path);
    assert!(before.contains(&"record_name".to_owned()), "{before:?}");
    let mut server = CutShort { pulls: 0 };
    let failed = sync_with(&mut store, &mut server, &|_: &str, _: u64, _: u64| {});
    assert!(matches!(failed, Err(Error::Network(_))), "{failed:?}");
    assert!(
        server.pulls > 1,
        "the first page was applied, the next failed"
    );
    // The page that arrived is kept and found, through the indexes again.
    assert_eq!(store.search("张三", 10).unwrap().len(), 1);
    assert_eq!(indexes(&path), before);
}
