//! Pull cursors a device cannot forge: the server appends a MAC (HMAC-SHA256 under a key
//! derived from the token secret, bound to the device) to every cursor it issues, and reads back
//! only cursors that carry a valid one. A cursor names the villages the device holds, which
//! decides what a pull tells it to drop: unsigned, a device could name other villages and be
//! told every record id in them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use baylink_sync::wire::Cursor;

use crate::error::AppError;

/// Separates a cursor from its MAC.
const SEPARATOR: char = '~';
/// Bytes of the MAC kept (128 bits).
const TAG_BYTES: usize = 16;

/// The key cursors are signed with.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    /// The cursor key of a token secret (a key of its own, so a cursor is never a token MAC).
    pub fn from_secret(secret: &[u8]) -> CursorKey {
        let mut hash = Sha256::new();
        hash.update(b"baylink pull cursor\n");
        hash.update(secret);
        CursorKey(hash.finalize().into())
    }

    fn tag(&self, device: &str, text: &str) -> Hmac<Sha256> {
        // A 32-byte key is always accepted.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(device.as_bytes());
        mac.update(b"\n");
        mac.update(text.as_bytes());
        mac
    }

    /// The cursor as sent to `device`, its MAC appended.
    pub fn sign(&self, device: &str, cursor: &Cursor) -> Cursor {
        let tag = self.tag(device, &cursor.0).finalize().into_bytes();
        let hex: String = tag[..TAG_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Cursor(format!("{}{SEPARATOR}{hex}", cursor.0))
    }

    /// The cursor `device` presents, as the server issued it. A cursor without a MAC comes from
    /// a server before signed cursors: its position stands, the villages it names are ignored
    /// (the server's record of what the device holds decides). A wrong MAC is refused.
    pub fn open(&self, device: &str, cursor: Option<Cursor>) -> Result<Option<Cursor>, AppError> {
        let Some(Cursor(text)) = cursor else {
            return Ok(None);
        };
        let bad = || AppError::BadRequest("cursor: not one this server issued".into());
        let Some((body, hex)) = text.rsplit_once(SEPARATOR) else {
            let position = text.split_once(':').map_or(text.as_str(), |(p, _)| p);
            return Ok(Some(Cursor(position.to_owned())));
        };
        if hex.len() != TAG_BYTES * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let tag: Vec<u8> = (0..TAG_BYTES)
            .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or_default())
            .collect();
        self.tag(device, body)
            .verify_truncated_left(&tag)
            .map_err(|_| bad())?;
        Ok(Some(Cursor(body.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_signed_cursor_opens_for_its_device_only_and_a_changed_one_not_at_all() {
        let key = CursorKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let cursor = Cursor("s42:441303006001".into());
        let signed = key.sign("dev-a", &cursor);
        assert_eq!(
            key.open("dev-a", Some(signed.clone())).unwrap(),
            Some(cursor)
        );
        assert!(key.open("dev-b", Some(signed.clone())).is_err());
        let widened = Cursor(
            signed
                .0
                .replace(":441303006001", ":441303006001.441303007001"),
        );
        assert!(key.open("dev-a", Some(widened)).is_err());
        let other_key = CursorKey::from_secret(b"another secret of thirty-two bytes");
        assert!(other_key.open("dev-a", Some(signed)).is_err());
        // An earlier server's cursor keeps its position and loses the villages it names.
        let old = Cursor("s42:441303006001.441303007001".into());
        assert_eq!(
            key.open("dev-a", Some(old)).unwrap(),
            Some(Cursor("s42".into()))
        );
        assert_eq!(key.open("dev-a", None).unwrap(), None);
    }
}
