//! Pull cursors: where a device's next pull resumes, as the opaque text the server issues
//! (before signing it) and reads back. Pure: parsing and formatting, no storage.

use std::collections::BTreeSet;

use crate::wire::Cursor;

/// Where a pull resumes: after a sequence number, perhaps inside a snapshot of the device's
/// villages, and which villages' records the device may hold. The villages ride in the cursor
/// because the device stores the cursor in the same transaction as the page it came with: the
/// cursor it presents proves what it applied, where a note on the server could not tell a
/// delivered answer from a lost one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The device has every value and every drop up to this sequence number, once the snapshot
    /// it is inside (if any) is complete: a snapshot is taken at this number.
    pub after: i64,
    /// Inside a snapshot: the sequence number of the last record sent (records in the
    /// villages' feeds' order; past `after` once it reaches records written since the snapshot
    /// was taken).
    pub snapshot: Option<i64>,
    /// On the feed, inside a pull of several pages: the device has every value up to this
    /// number, and of the records up to `after` every value. A record written while the device
    /// pages moves past the pages already read, and its values after this number go with it.
    pub fields_after: Option<i64>,
    /// Villages whose records the device may hold; `None` for cursors of earlier servers.
    pub held: Option<BTreeSet<String>>,
    /// The last record position (first-write order) the server held when it issued the cursor:
    /// the device holds no record placed after it but those it wrote. `None` for cursors of
    /// earlier servers.
    pub placed: Option<i64>,
}

/// A cursor text this server did not issue (or no longer reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cursor: not one this server issued")]
pub struct CursorError;

/// Parses a cursor this server issued: `s<seq>` (or `r<seq>`, from earlier servers),
/// `c<seq>.<fields>` on the feed inside a pull of several pages (records read up to `seq`,
/// values sent after `fields`), or `b<seq>.<sent>` inside a snapshot taken at `seq` and sent up
/// to `sent`; then `:` and the villages the device holds, `.`-separated, and `/` and the last
/// record position the server held (`s1234:441303006001.441303006002/5678`; earlier servers'
/// cursors end with the villages, or before them). Earlier servers' snapshot cursors,
/// `b<seq>.<record>.<field>`, start their snapshot again.
pub fn parse(cursor: Option<&Cursor>) -> Result<Position, CursorError> {
    let Some(Cursor(text)) = cursor else {
        return Ok(Position {
            after: 0,
            snapshot: None,
            fields_after: None,
            held: Some(BTreeSet::new()),
            placed: Some(0),
        });
    };
    let bad = || CursorError;
    let (position, held, placed) = match text.split_once(':') {
        Some((position, rest)) => {
            let (villages, placed) = match rest.split_once('/') {
                Some((villages, placed)) => (villages, Some(number(placed).ok_or_else(bad)?)),
                None => (rest, None),
            };
            let held: BTreeSet<String> = villages
                .split('.')
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect();
            if held
                .iter()
                .any(|v| v.len() != 12 || !v.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(bad());
            }
            (position, Some(held), placed)
        }
        None => (text.as_str(), None, None),
    };
    let mut fields_after = None;
    let (digits, snapshot) = match position.split_at_checked(1) {
        // `r` marked a restart of the feed from 0 on earlier servers: a feed position all the same.
        Some(("s" | "r", digits)) => (digits, None),
        Some(("c", rest)) => match rest.split('.').collect::<Vec<_>>()[..] {
            [digits, fields] => {
                fields_after = Some(number(fields).ok_or_else(bad)?);
                (digits, None)
            }
            _ => return Err(bad()),
        },
        Some(("b", rest)) => match rest.split('.').collect::<Vec<_>>()[..] {
            [digits, sent] => (digits, Some(number(sent).ok_or_else(bad)?)),
            // Inside an earlier server's snapshot, in record order: sent again from the start
            // (the device merges what it holds already as unchanged).
            [digits, entity, field]
                if uuid::Uuid::parse_str(entity).is_ok()
                    && !field.is_empty()
                    && field
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                (digits, Some(0))
            }
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let after = number(digits).ok_or_else(bad)?;
    if fields_after.is_some_and(|f| f > after) {
        return Err(bad());
    }
    Ok(Position {
        after,
        snapshot,
        fields_after,
        held,
        placed,
    })
}

impl Position {
    /// The cursor text of this position: `s<after>` on the feed, `c<after>.<fields_after>` on
    /// the feed inside a pull of several pages, `b<after>.<sent>` inside a snapshot, then `:`
    /// and the villages held, and `/` and the last position placed (none for an earlier
    /// server's position).
    pub fn to_cursor(&self) -> Cursor {
        let position = match (self.snapshot, self.fields_after) {
            (Some(sent), _) => format!("b{}.{sent}", self.after),
            (None, Some(fields)) => format!("c{}.{fields}", self.after),
            (None, None) => format!("s{}", self.after),
        };
        let Some(held) = &self.held else {
            return Cursor(position);
        };
        let villages = held
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(".");
        match self.placed {
            Some(placed) => Cursor(format!("{position}:{villages}/{placed}")),
            None => Cursor(format!("{position}:{villages}")),
        }
    }
}

/// A sequence number in a cursor: digits, not negative.
fn number(digits: &str) -> Option<i64> {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<i64>().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn parsed(text: &str) -> Result<Position, CursorError> {
        parse(Some(&Cursor(text.to_owned())))
    }

    #[test]
    fn cursors_of_this_and_earlier_servers_are_read_and_others_refused() {
        let feed = parsed("s1234:441303006001.441303006002").unwrap();
        assert_eq!((feed.after, feed.snapshot), (1234, None));
        assert_eq!(feed.held.unwrap().len(), 2);
        assert_eq!(feed.placed, None);
        let placed = parsed("s1234:441303006001/5678").unwrap();
        assert_eq!((placed.after, placed.placed), (1234, Some(5678)));
        assert_eq!(parsed("s1234:/0").unwrap().placed, Some(0));
        assert_eq!(parsed("r7").unwrap().held, None);
        assert_eq!(parsed("b9.4:").unwrap().snapshot, Some(4));
        // A snapshot reads on past the number it was taken at.
        assert_eq!(parsed("b3.4:").unwrap().snapshot, Some(4));
        let paging = parsed("c9.4:").unwrap();
        assert_eq!(
            (paging.after, paging.snapshot, paging.fields_after),
            (9, None, Some(4))
        );
        let old_snapshot = format!("b9.{}.name", uuid::Uuid::nil());
        assert_eq!(parsed(&old_snapshot).unwrap().snapshot, Some(0));
        for bad in [
            "",
            "x1",
            "s-1",
            "s1:4413",
            "s1:44130300600a",
            "c3.4:",
            "c3:",
            "c3.x:",
            "b1.2.3.4",
            "s1:441303006001/",
            "s1:441303006001/-3",
            "s1:441303006001/x",
            "s1/3",
        ] {
            assert_eq!(parsed(bad), Err(CursorError), "{bad}");
        }
        assert_eq!(parse(None).unwrap().after, 0);
    }

    proptest! {
        #[test]
        fn every_position_reads_back_from_its_cursor(
            after in 0i64..i64::MAX / 2,
            sent in proptest::option::of(0i64..1_000_000),
            fields in proptest::option::of(0i64..1_000_000),
            held in proptest::option::of(proptest::collection::btree_set("[0-9]{12}", 0..4)),
            placed in proptest::option::of(0i64..i64::MAX / 2),
        ) {
            // A position is placed only with the villages it holds.
            let placed = held.as_ref().and(placed);
            let (after, fields_after) = match sent {
                Some(_) => (after, None),
                None => (after.max(fields.unwrap_or(0)), fields),
            };
            let position = Position { after, snapshot: sent, fields_after, held, placed };
            prop_assert_eq!(parse(Some(&position.to_cursor())), Ok(position));
        }
    }
}
