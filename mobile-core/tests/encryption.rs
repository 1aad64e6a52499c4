//! The store encrypted at rest: unlocked offline by the officer's passphrase, refused with a clear
//! error for a wrong one, unreadable as plain SQLite, and without a plaintext ID number or name
//! anywhere in its files.

use std::path::Path;

use baylink_domain::{EntityKind, Input};
use mobile_core::{Error, Store};

const ID_NUMBER: &str = "11010519491231002X";
const NAME: &str = "王芳";

fn person() -> Input {
    [
        ("village", "441303006001"),
        ("id_number", ID_NUMBER),
        ("name", NAME),
        ("phone", "13800138000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Every file the store wrote, concatenated (the database, its WAL and shared memory, the salt).
fn bytes_on_disk(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("directory") {
        let path = entry.expect("entry").path();
        all.extend(std::fs::read(&path).expect("readable"));
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn an_encrypted_store_opens_with_its_passphrase_only_and_holds_no_plaintext() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("field.db");
    let id = {
        let mut store = Store::open_encrypted(&path, "正确的口令 correct horse").expect("created");
        store
            .capture(EntityKind::Person, &person())
            .expect("captured")
    };

    // Offline, with the right passphrase: everything is there.
    let store = Store::open_encrypted(&path, "正确的口令 correct horse").expect("unlocked");
    let record = store.get(id).expect("readable").expect("found");
    assert_eq!(
        record.fields.get("id_number").map(String::as_str),
        Some(ID_NUMBER)
    );
    assert_eq!(store.search(NAME, 10).expect("search").len(), 1);
    drop(store);

    // A wrong passphrase is told as such, and changes nothing.
    match Store::open_encrypted(&path, "wrong") {
        Err(Error::WrongPassphrase) => {}
        Err(other) => panic!("expected WrongPassphrase, got {other}"),
        Ok(_) => panic!("a wrong passphrase opened the store"),
    }
    assert!(Store::open_encrypted(&path, "正确的口令 correct horse").is_ok());

    // Without the key the file is no SQLite database at all.
    let plain = rusqlite::Connection::open(&path).expect("the file opens as a file");
    let read = plain.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    });
    match read {
        Err(rusqlite::Error::SqliteFailure(e, _)) => {
            assert_eq!(e.code, rusqlite::ErrorCode::NotADatabase);
        }
        other => panic!("read as plain SQLite: {other:?}"),
    }
    drop(plain);

    let disk = bytes_on_disk(dir.path());
    assert!(!contains(&disk, ID_NUMBER), "a plaintext ID number on disk");
    assert!(!contains(&disk, NAME), "a plaintext name on disk");
    assert!(!contains(&disk, "SQLite format 3"), "a plain SQLite header");
}

#[test]
fn the_plaintext_check_finds_what_an_unencrypted_store_leaves_on_disk() {
    // The same capture in a plain store: the scan above would see it.
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = Store::open(dir.path().join("field.db")).expect("plain store");
        store
            .capture(EntityKind::Person, &person())
            .expect("captured");
    }
    let disk = bytes_on_disk(dir.path());
    assert!(contains(&disk, ID_NUMBER) && contains(&disk, NAME));
}

#[test]
fn an_unencrypted_store_is_not_mistaken_for_a_wrong_passphrase() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("field.db");
    drop(Store::open(&path).expect("plain store"));
    match Store::open_encrypted(&path, "anything") {
        Err(Error::Corrupt(message)) => {
            assert!(message.contains("without encryption"), "{message}")
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a plain store opened as encrypted"),
    }
}
