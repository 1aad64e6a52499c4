//! Everything the server holds about records, backend-neutral: what tests and consistency checks
//! compare, instead of reading one backend's tables.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::conn::Conn;
use baylink_sync::Stamp;
use serde_json::Value;
use uuid::Uuid;

use crate::store::error::StoreError;
use crate::store::pull::parse_entity;
use crate::store::values::corrupt;

/// A record's identity as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity {
    /// Its kind.
    pub kind: String,
    /// Its home village, when it has one.
    pub village: Option<String>,
    /// The sequence number of its last write or resend: where it stands in its villages' feeds.
    pub seq: i64,
}

/// A field's current value with its stamp and sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// The value.
    pub value: Value,
    /// Who wrote it, when (the merge order).
    pub stamp: Stamp,
    /// Its sequence number (the order pulls send values in).
    pub seq: i64,
}

/// One entry of a village's feed: a record whose devices of that village are sent its values
/// written or resent after their cursor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedEntry {
    /// The record's sequence number.
    pub seq: i64,
    /// The record.
    pub entity: Uuid,
}

/// One accepted field change, as the history keeps it (one entry per action, one of these per
/// field it wrote).
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The action's place in the history.
    pub seq: i64,
    /// Record.
    pub entity: Uuid,
    /// Field.
    pub field: String,
    /// Value written.
    pub value: Value,
    /// Whether it won the merge.
    pub won: bool,
    /// Device that pushed it (none for the server's own writes).
    pub device: Option<String>,
    /// Account it was written for.
    pub account: Option<i64>,
}

/// A record's summary, as lists and searches read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summarised {
    /// Its label.
    pub label: String,
    /// Its review status, if any.
    pub review_status: Option<String>,
    /// Whether it is deleted or merged away.
    pub deleted: bool,
}

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audited {
    /// Account, none for the operator.
    pub account: Option<i64>,
    /// Action.
    pub action: String,
    /// Target.
    pub target: Option<String>,
}

/// The server's records in one snapshot.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Records by id.
    pub entities: BTreeMap<Uuid, Entity>,
    /// Current values by (record, field).
    pub values: BTreeMap<(Uuid, String), Stored>,
    /// The villages each record is in (its scope).
    pub scopes: BTreeSet<(Uuid, String)>,
    /// Each village's feed, in sequence order.
    pub feeds: BTreeMap<String, Vec<FeedEntry>>,
    /// Every accepted write, in sequence order.
    pub history: Vec<Written>,
    /// The audit log, oldest first.
    pub audit: Vec<Audited>,
    /// Open (unsettled) conflicts by record.
    pub open_conflicts: BTreeMap<Uuid, usize>,
    /// Summaries by record.
    pub summaries: BTreeMap<Uuid, Summarised>,
    /// Watch-list alerts: (record, rule kind, rule value).
    pub alerts: BTreeSet<(Uuid, String, String)>,
    /// The last sequence number issued.
    pub last_seq: i64,
}

impl Snapshot {
    /// A field's current value, if it has one.
    pub fn value(&self, entity: Uuid, field: &str) -> Option<&Value> {
        self.values
            .get(&(entity, field.to_owned()))
            .map(|s| &s.value)
    }

    /// How many audit entries of this action there are.
    pub fn audited(&self, action: &str) -> usize {
        self.audit.iter().filter(|a| a.action == action).count()
    }
}

fn json(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt("stored value"))
}

/// Reads the snapshot (inside one read transaction).
pub fn read(conn: &Conn<'_>) -> Result<Snapshot, StoreError> {
    let mut out = Snapshot {
        last_seq: crate::store::values::current_seq(conn)?,
        ..Snapshot::default()
    };
    let mut stmt = conn.prepare("SELECT id, kind, village, seq, state FROM entity")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        let id = parse_entity(&r.get::<_, String>(0)?)?;
        out.entities.insert(
            id,
            Entity {
                kind: r.get(1)?,
                village: r.get(2)?,
                seq: r.get(3)?,
            },
        );
        for (field, slot) in crate::store::state::decode(&r.get::<_, String>(4)?)? {
            let stored = Stored {
                value: slot.version.value,
                stamp: slot.version.stamp,
                seq: slot.seq,
            };
            out.values.insert((id, field), stored);
        }
    }
    let mut stmt =
        conn.prepare("SELECT e.id, s.village FROM scope s JOIN entity e ON e.pos = s.pos")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        out.scopes
            .insert((parse_entity(&r.get::<_, String>(0)?)?, r.get(1)?));
    }
    let mut stmt = conn.prepare(
        "SELECT f.village, f.seq, e.id FROM feed f JOIN entity e ON e.pos = f.pos
         ORDER BY f.village, f.seq",
    )?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        let entry = FeedEntry {
            seq: r.get(1)?,
            entity: parse_entity(&r.get::<_, String>(2)?)?,
        };
        out.feeds.entry(r.get(0)?).or_default().push(entry);
    }
    let mut stmt = conn.prepare(conn.pick(
        "SELECT h.seq, h.entity, c.key, c.value -> '$[2]', c.value ->> '$[3]', h.device, h.account
         FROM history h JOIN json_each(h.changes) c ORDER BY h.seq, c.id",
        "SELECT h.seq, h.entity, c.key, c.value -> 2, CAST(c.value ->> 3 AS boolean), h.device,
                h.account
         FROM history h CROSS JOIN LATERAL json_each(CAST(h.changes AS json)) WITH ORDINALITY
              AS c(key, value, id)
         ORDER BY h.seq, c.id",
    ))?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        out.history.push(Written {
            seq: r.get(0)?,
            entity: parse_entity(&r.get::<_, String>(1)?)?,
            field: r.get(2)?,
            value: json(&r.get::<_, String>(3)?)?,
            won: r.get(4)?,
            device: r.get(5)?,
            account: r.get(6)?,
        });
    }
    let mut stmt = conn.prepare("SELECT account, action, target FROM audit ORDER BY id")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        out.audit.push(Audited {
            account: r.get(0)?,
            action: r.get(1)?,
            target: r.get(2)?,
        });
    }
    let mut stmt = conn.prepare(
        "SELECT entity, COUNT(*) FROM conflict WHERE settled_ms IS NULL GROUP BY entity",
    )?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(1)?;
        out.open_conflicts
            .insert(parse_entity(&r.get::<_, String>(0)?)?, n as usize);
    }
    let mut stmt = conn.prepare("SELECT entity, label, review_status, deleted FROM summary")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        let summary = Summarised {
            label: r.get(1)?,
            review_status: r.get(2)?,
            deleted: r.get(3)?,
        };
        out.summaries
            .insert(parse_entity(&r.get::<_, String>(0)?)?, summary);
    }
    let mut stmt = conn.prepare("SELECT entity, rule_kind, rule_value FROM alert")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        out.alerts
            .insert((parse_entity(&r.get::<_, String>(0)?)?, r.get(1)?, r.get(2)?));
    }
    Ok(out)
}
