//! The store's encryption key: argon2id over the officer's passphrase and a random salt kept in a
//! file beside the database (`field.db.salt`; the salt is not secret, the passphrase is never
//! stored). Unlocking needs no server: the phone derives the key itself, offline.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bytes of salt.
const SALT_LEN: usize = 16;

/// Where the salt of the database at `db` lives.
pub(crate) fn salt_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".salt");
    PathBuf::from(name)
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Corrupt(format!("{what}: {e}"))
}

/// The 256-bit key of the database at `db` for this passphrase; a new database gets a new salt.
pub(crate) fn derive(db: &Path, passphrase: &str) -> Result<[u8; 32]> {
    let salt_file = salt_path(db);
    let salt = match std::fs::read(&salt_file) {
        Ok(salt) if salt.len() == SALT_LEN => salt,
        Ok(_) => return Err(Error::Corrupt("the key salt file is damaged".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if db.exists() {
                return Err(Error::Corrupt(
                    "this store was created without encryption".into(),
                ));
            }
            let salt = uuid::Uuid::new_v4().into_bytes().to_vec();
            std::fs::write(&salt_file, &salt).map_err(io("write the key salt"))?;
            salt
        }
        Err(e) => return Err(io("read the key salt")(e)),
    };
    let mut key = [0u8; 32];
    // argon2id with the library's defaults (19 MiB, 2 passes): a guess costs an attacker with
    // the file the same as the phone's one unlock.
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
        .map_err(|e| Error::Corrupt(format!("key derivation: {e}")))?;
    Ok(key)
}
