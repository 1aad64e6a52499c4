//! The facade apps call (`FieldStore`) on a file, with a change listener registered: every write
//! an officer makes before a sync (captures, a known number captured again, edits of the same
//! record one after another) succeeds and is heard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mobile_core::{ChangeListener, FieldStore, StoreChange};

const VILLAGE: &str = "441303006001";

#[derive(Default)]
struct Heard(Mutex<Vec<StoreChange>>);

impl ChangeListener for Heard {
    fn changed(&self, change: StoreChange) {
        self.0.lock().expect("listener lock").push(change);
    }
}

fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn writes_before_a_sync_succeed_with_a_listener_and_each_is_heard() {
    let dir = tempfile::tempdir().unwrap();
    let store = FieldStore::open(dir.path().join("field.db").display().to_string()).unwrap();
    let heard = Arc::new(Heard::default());
    store.add_listener(heard.clone());
    let person = |name: &str| {
        form(&[
            ("village", VILLAGE),
            ("id_number", "11010519491231002X"),
            ("name", name),
        ])
    };
    let id = store.capture("person".into(), person("王芳")).unwrap();
    // The same number again, renamed: the record is updated, still unsynced.
    let again = store
        .capture_detailed("person".into(), person("王芳芳"))
        .unwrap();
    assert!(again.existed && again.id == id);
    // Edits of the same record one after another, the name and others.
    for (field, value) in [
        ("name", "王芳"),
        ("phone", "13800138000"),
        ("name", "王小芳"),
    ] {
        assert_eq!(store.edit(id.clone(), form(&[(field, value)])).unwrap(), 1);
    }
    let house = store
        .capture(
            "house".into(),
            form(&[
                ("village", VILLAGE),
                ("address", "澳头石化大道1号"),
                ("use", "rental"),
                ("status", "in_use"),
            ]),
        )
        .unwrap();
    store
        .edit(house.clone(), form(&[("address", "澳头石化大道2号")]))
        .unwrap();
    store.delete(house.clone()).unwrap();
    let heard = heard.0.lock().expect("listener lock");
    assert_eq!(heard.len(), 8, "every write heard once: {heard:?}");
    assert!(heard.iter().all(|c| c.source == "local" && c.ids_complete));
    assert_eq!(heard.iter().filter(|c| c.ids == [id.clone()]).count(), 5);
    assert_eq!(heard.iter().filter(|c| c.ids == [house.clone()]).count(), 3);
}
