//! Pull cursors a device cannot forge: the server appends a MAC (HMAC-SHA256 under a key
//! derived from the token secret, bound to the device) to every cursor it issues, and reads back
//! only cursors that carry a valid one. A cursor names the villages the device holds, which
//! decides what a pull tells it to drop: unsigned, a device could name other villages and be
//! told every record id in them.

use baylink_sync::wire::Cursor;

use crate::auth::mac::MacKey;
use crate::error::AppError;

/// Separates a cursor from its MAC.
const SEPARATOR: char = '~';

/// The key cursors are signed with.
#[derive(Clone)]
pub struct CursorKey(MacKey);

impl CursorKey {
    /// The cursor key of a token secret (a key of its own, so a cursor is never a token MAC).
    pub fn from_secret(secret: &[u8]) -> CursorKey {
        CursorKey(MacKey::derive("baylink pull cursor", secret))
    }

    /// The cursor as sent to `device` by the database `instance`, its MAC appended.
    pub fn sign(&self, device: &str, cursor: &Cursor, instance: &str) -> Cursor {
        let tag = self.0.tag(&mac_parts(device, &cursor.0, instance));
        Cursor(format!("{}{SEPARATOR}{tag}", cursor.0))
    }

    /// The cursor `device` presents, as the server issued it. A cursor without a MAC comes from
    /// a server before signed cursors: its position stands, the villages it names are ignored
    /// (the server's record of what the device holds decides). A wrong MAC is refused.
    pub fn open(
        &self,
        device: &str,
        cursor: Option<Cursor>,
        instance: &str,
    ) -> Result<Option<Cursor>, AppError> {
        let Some(Cursor(text)) = cursor else {
            return Ok(None);
        };
        let Some((body, tag)) = text.rsplit_once(SEPARATOR) else {
            return Ok(Some(position_only(&text)));
        };
        if !self.0.verify(&mac_parts(device, body, instance), tag) {
            return Err(AppError::BadCursor(
                "cursor: not one this server issued: pull from the start".into(),
            ));
        }
        Ok(Some(Cursor(body.to_owned())))
    }
}

/// What a cursor's MAC covers: the device, the cursor and, once the database was put back from a
/// backup, its instance (`store::db::instance`): cursors signed by the database that went on
/// after the backup do not open on the copy, and their devices pull from the start. A database
/// never restored has none, so its cursors keep the MAC they always had.
fn mac_parts<'a>(device: &'a str, body: &'a str, instance: &'a str) -> Vec<&'a str> {
    if instance.is_empty() {
        vec![device, body]
    } else {
        vec![device, body, instance]
    }
}

/// A cursor's position without the villages and the record position it names: what is read of a
/// cursor from before signed cursors, or one signed with a key since retired. The server's
/// record of the device's villages stands for them, and should one have been taken the device
/// starts over (`cursor_expired`): naming nothing gains a device nothing.
pub fn position_only(text: &str) -> Cursor {
    let position = text.split_once(':').map_or(text, |(p, _)| p);
    Cursor(position.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_signed_cursor_opens_for_its_device_only_and_a_changed_one_not_at_all() {
        let key = CursorKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let cursor = Cursor("s42:441303006001".into());
        let signed = key.sign("dev-a", &cursor, "");
        assert_eq!(
            key.open("dev-a", Some(signed.clone()), "").unwrap(),
            Some(cursor)
        );
        assert!(key.open("dev-b", Some(signed.clone()), "").is_err());
        let widened = Cursor(
            signed
                .0
                .replace(":441303006001", ":441303006001.441303007001"),
        );
        assert!(key.open("dev-a", Some(widened), "").is_err());
        let other_key = CursorKey::from_secret(b"another secret of thirty-two bytes");
        assert!(other_key.open("dev-a", Some(signed.clone()), "").is_err());
        // Signed before the database was put back from a backup: not opened by the copy.
        assert!(key.open("dev-a", Some(signed), "restored-1").is_err());
        let after = key.sign("dev-a", &Cursor("s7".into()), "restored-1");
        assert!(key.open("dev-a", Some(after), "restored-1").is_ok());
        // An earlier server's cursor keeps its position and loses the villages it names.
        let old = Cursor("s42:441303006001.441303007001".into());
        assert_eq!(
            key.open("dev-a", Some(old), "").unwrap(),
            Some(Cursor("s42".into()))
        );
        assert_eq!(key.open("dev-a", None, "").unwrap(), None);
    }
}
