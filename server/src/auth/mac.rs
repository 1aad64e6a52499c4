//! Values the server signs and reads back (pull cursors, known-browser cookies): HMAC-SHA256
//! under a key derived from the token secret, one key per purpose, so a MAC made for one purpose
//! never passes for another.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Bytes of a MAC kept (128 bits).
const TAG_BYTES: usize = 16;

/// A key for one purpose.
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl MacKey {
    /// The key for `purpose` derived from the token secret.
    pub fn derive(purpose: &str, secret: &[u8]) -> MacKey {
        let mut hash = Sha256::new();
        hash.update(purpose.as_bytes());
        hash.update(b"\n");
        hash.update(secret);
        MacKey(hash.finalize().into())
    }

    fn mac(&self, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"\n");
            }
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The MAC of `parts` (joined by line breaks), as hex.
    pub fn tag(&self, parts: &[&str]) -> String {
        let tag = self.mac(parts).finalize().into_bytes();
        tag[..TAG_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `hex` is the MAC of `parts` (compared in constant time).
    pub fn verify(&self, parts: &[&str], hex: &str) -> bool {
        if hex.len() != TAG_BYTES * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        let tag: Vec<u8> = (0..TAG_BYTES)
            .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or_default())
            .collect();
        self.mac(parts).verify_truncated_left(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_verifies_for_its_parts_and_purpose_only() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let key = MacKey::derive("one", secret);
        let tag = key.tag(&["a", "b"]);
        assert!(key.verify(&["a", "b"], &tag));
        assert!(!key.verify(&["a", "c"], &tag));
        assert!(!key.verify(&["a\nb"], &tag[..30]));
        assert!(!MacKey::derive("two", secret).verify(&["a", "b"], &tag));
        assert!(!key.verify(&["a", "b"], "zz"));
    }
}
