//! Records as the console reads them: one record with its history, lists and counts by filter, and what links to a record.

use crate::store::caller::Caller;
use crate::store::conn::{Conn, Optional, params};
use crate::store::error::StoreError;
use crate::store::scope::visible;
use baylink_domain::EntityKind;
use serde_json::Value;
use std::collections::BTreeMap;

/// One history entry of a record.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HistoryEntry {
    /// Field.
    pub field: String,
    /// Value before (JSON), if any.
    pub old_value: Option<String>,
    /// Value written (JSON).
    pub value: String,
    /// Stamp of the write.
    pub stamp: String,
    /// Whether it won the merge.
    pub won: bool,
    /// Pushing device.
    pub device: Option<String>,
    /// Username of the author.
    pub username: Option<String>,
    /// When the server accepted it.
    pub at_ms: u64,
}

/// A record as the server holds it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RecordView {
    /// Kind.
    pub kind: String,
    /// Where it stands in the lists (newest first): its summary's sequence number, the lists'
    /// order (a record sent again to a village it newly reaches keeps its place in them).
    pub seq: i64,
    /// Current fields, values as JSON.
    pub fields: BTreeMap<String, String>,
    /// Every accepted change, oldest first.
    pub history: Vec<HistoryEntry>,
}

impl RecordView {
    /// Whether it was deleted.
    pub fn deleted(&self) -> bool {
        self.fields.get("deleted").map(String::as_str) == Some("true")
    }

    /// Whether it waits for a review: pending (or never decided), neither merged away nor
    /// deleted.
    pub fn waiting(&self) -> bool {
        self.fields
            .get("review_status")
            .is_none_or(|status| status == "\"pending\"")
            && !self.fields.contains_key("merged_into")
            && !self.deleted()
    }

    /// What lists show of it (its label, ID number, name…), from its current fields.
    pub fn summary(&self) -> Option<baylink_domain::Summary> {
        let values: BTreeMap<&str, Value> = self
            .fields
            .iter()
            .filter_map(|(f, v)| Some((f.as_str(), serde_json::from_str(v).ok()?)))
            .collect();
        EntityKind::parse(&self.kind).map(|k| baylink_domain::summarize_with(k, |f| values.get(f)))
    }
}

/// A record's current fields (JSON values) and its full history, oldest first.
pub fn record(conn: &Conn<'_>, id: &str) -> Result<Option<RecordView>, StoreError> {
    let kind: Option<String> = conn
        .query_row("SELECT kind FROM entity WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    let Some(kind) = kind else { return Ok(None) };
    let state = crate::store::state::load(conn, id)?
        .map(|l| l.state)
        .unwrap_or_default();
    let seq: i64 = conn
        .query_row(
            "SELECT s.updated_seq FROM entity e JOIN summary s ON s.pos = e.pos WHERE e.id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let fields = state
        .into_iter()
        .map(|(field, slot)| (field, slot.version.value.to_string()))
        .collect();
    // One row per action, one entry per field it wrote: `[old, old stamp, value, won]`.
    let mut stmt = conn.prepare(conn.pick(
        "SELECT c.key, CASE WHEN c.value ->> '$[1]' IS NULL THEN NULL ELSE c.value -> '$[0]' END,
                c.value -> '$[2]', h.stamp, c.value ->> '$[3]', h.device, a.username, h.at_ms
         FROM history h JOIN json_each(h.changes) c LEFT JOIN account a ON a.id = h.account
         WHERE h.pos IN (SELECT pos FROM entity WHERE id = ?1 UNION ALL SELECT pos FROM compacted WHERE id = ?1)
         ORDER BY h.seq, c.id",
        "SELECT c.key, CASE WHEN c.value ->> 1 IS NULL THEN NULL ELSE c.value -> 0 END,
                c.value -> 2, h.stamp, CAST(c.value ->> 3 AS boolean), h.device, a.username, h.at_ms
         FROM history h CROSS JOIN LATERAL json_each(CAST(h.changes AS json)) WITH ORDINALITY
              AS c(key, value, id)
              LEFT JOIN account a ON a.id = h.account
         WHERE h.pos IN (SELECT pos FROM entity WHERE id = ?1 UNION ALL SELECT pos FROM compacted WHERE id = ?1)
         ORDER BY h.seq, c.id",
    ))?;
    let history = stmt
        .query_map([id], |r| {
            Ok(HistoryEntry {
                field: r.get(0)?,
                old_value: r.get(1)?,
                value: r.get(2)?,
                stamp: r.get(3)?,
                won: r.get(4)?,
                device: r.get(5)?,
                username: r.get(6)?,
                at_ms: r.get::<_, i64>(7)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(RecordView {
        kind,
        seq,
        fields,
        history,
    }))
}

/// One row of a console list.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// Entity id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Village code.
    pub village: Option<String>,
    /// Label (contains the full ID number: mask it before showing).
    pub label: String,
    /// ID number.
    pub id_number: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Review status.
    pub review_status: Option<String>,
    /// Capturing officer.
    pub created_by: Option<String>,
    /// Name (person, landlord).
    pub name: Option<String>,
    /// Plate (vehicle).
    pub plate: Option<String>,
    /// Address (house).
    pub address: Option<String>,
    /// When it was captured (local date-time).
    pub created_at: Option<String>,
}

/// A filter for console lists.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Kind.
    pub kind: Option<String>,
    /// One village (must be one of the caller's).
    pub village: Option<String>,
    /// Review status.
    pub status: Option<String>,
    /// Prefix of an ID number, name, plate, address or phone.
    pub query: Option<String>,
    /// Captured on or after this date (`YYYY-MM-DD`).
    pub from: Option<String>,
    /// Captured on or before this date (`YYYY-MM-DD`).
    pub to: Option<String>,
    /// Only records last written before this sequence number: the list onwards from a record's
    /// place in it (the console's queue sets it from the record as stored; no address does).
    pub before_seq: Option<i64>,
}

/// A page of records in `villages` matching the filter, newest first.
///
/// The SQL holds only the conditions the filter sets, so that SQLite can pick an index: one
/// village's list walks that village's index; a station's list walks the records newest first
/// (`summary_kind_recent`, `summary_recent`) and keeps those of its villages; a search unions the
/// prefix ranges of the search-key indexes. A `+` before a column keeps the planner off its index.
pub fn list(
    conn: &Conn<'_>,
    villages: &[String],
    filter: &Filter,
    limit: u32,
    offset: u32,
) -> Result<Vec<Row>, StoreError> {
    use crate::store::conn::Value as Sql;
    let mut sql = String::from(
        "SELECT entity, kind, village, label, id_number, phone, review_status, created_by,
                name, plate, address, created_at FROM summary WHERE +deleted = 0",
    );
    let mut args: Vec<Sql> = Vec::new();
    // Appends a clause whose `?` is the value's parameter number.
    fn arg(sql: &mut String, args: &mut Vec<Sql>, clause: &str, value: Sql) {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    }
    let query = filter
        .query
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty());
    let dated = filter.from.is_some() || filter.to.is_some();
    match &filter.village {
        Some(v) if villages.contains(v) => {
            let column = if query.is_some() {
                " AND +village = ?"
            } else {
                " AND village = ?"
            };
            arg(&mut sql, &mut args, column, Sql::Text(v.clone()));
        }
        Some(_) => return Ok(Vec::new()),
        None => {
            let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
            // A date range is narrow: read it per village from `summary_created`. Otherwise walk
            // the newest records and keep the station's.
            let clause = if dated && query.is_none() {
                " AND village IN (SELECT value FROM json_each(?))"
            } else {
                " AND +village IN (SELECT value FROM json_each(?))"
            };
            arg(&mut sql, &mut args, clause, Sql::Text(list));
        }
    }
    if let Some(kind) = &filter.kind {
        let column = if query.is_some() || dated {
            " AND +kind = ?"
        } else {
            " AND kind = ?"
        };
        arg(&mut sql, &mut args, column, Sql::Text(kind.clone()));
    }
    if let Some(status) = &filter.status {
        arg(
            &mut sql,
            &mut args,
            " AND +review_status = ?",
            Sql::Text(status.clone()),
        );
    }
    if let Some(from) = &filter.from {
        arg(
            &mut sql,
            &mut args,
            if dated && query.is_none() {
                " AND created_at >= ?"
            } else {
                " AND +created_at >= ?"
            },
            Sql::Text(from.clone()),
        );
    }
    if let Some(to) = &filter.to {
        arg(
            &mut sql,
            &mut args,
            if dated && query.is_none() {
                " AND created_at < ?"
            } else {
                " AND +created_at < ?"
            },
            Sql::Text(format!("{to} 99")),
        );
    }
    if let Some(q) = query {
        // Each column by its own prefix, normalised as it is stored (one rule, the phone's too).
        let mut ranges = Vec::new();
        for (column, prefix) in baylink_domain::search::prefixes(q) {
            arg(
                &mut sql,
                &mut args,
                "",
                Sql::Text(format!("{prefix}\u{10FFFF}")),
            );
            let hi = args.len();
            arg(&mut sql, &mut args, "", Sql::Text(prefix));
            let lo = args.len();
            ranges.push(format!("({column} >= ?{lo} AND {column} < ?{hi})"));
        }
        if ranges.is_empty() {
            ranges.push("0".to_owned());
        }
        sql.push_str(&format!(" AND ({})", ranges.join(" OR ")));
    }
    if let Some(seq) = filter.before_seq {
        arg(
            &mut sql,
            &mut args,
            " AND updated_seq < ?",
            Sql::Integer(seq),
        );
    }
    sql.push_str(" ORDER BY updated_seq DESC");
    arg(
        &mut sql,
        &mut args,
        " LIMIT ?",
        Sql::Integer(i64::from(limit)),
    );
    arg(
        &mut sql,
        &mut args,
        " OFFSET ?",
        Sql::Integer(i64::from(offset)),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(Row {
            id: r.get(0)?,
            kind: r.get(1)?,
            village: r.get(2)?,
            label: r.get(3)?,
            id_number: r.get(4)?,
            phone: r.get(5)?,
            review_status: r.get(6)?,
            created_by: r.get(7)?,
            name: r.get(8)?,
            plate: r.get(9)?,
            address: r.get(10)?,
            created_at: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A page's residences labelled by who lives where ([`residence_line`]): for the console's
/// lists, not exports (three reads a residence; an export keeps the stored label).
pub fn name_residences(
    conn: &Conn<'_>,
    villages: &[String],
    rows: &mut [Row],
) -> Result<(), StoreError> {
    for row in rows.iter_mut().filter(|r| r.kind == "residence") {
        row.label = residence_line(conn, villages, &row.id, &row.label)?;
    }
    Ok(())
}

/// A residence's line in a list: who lives where (the person's name, the house's label), then
/// its own label (moved in, relation, room), which alone reads alike across a village. Only
/// what lies in `villages` is named (a person who moved out is another village's now).
fn residence_line(
    conn: &Conn<'_>,
    villages: &[String],
    id: &str,
    own: &str,
) -> Result<String, StoreError> {
    let state = crate::store::state::load(conn, id)?
        .map(|l| l.state)
        .unwrap_or_default();
    let target = |field: &str| {
        state
            .get(field)
            .and_then(|slot| slot.version.value.as_str().map(str::to_owned))
    };
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut named = conn.prepare_cached(&format!(
        "SELECT s.name, s.label FROM entity e JOIN summary s ON s.pos = e.pos
         WHERE e.id = ?1 AND {}",
        crate::store::scope::in_villages("e.id", 2)
    ))?;
    let mut read =
        |target: Option<String>| -> Result<Option<(Option<String>, String)>, StoreError> {
            let Some(target) = target else {
                return Ok(None);
            };
            Ok(named
                .query_row(params![target, list], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        };
    // The person's name only: her label holds her ID number, which a list masks by the row's own.
    let person = read(target("person"))?.and_then(|(name, _)| name);
    let house = read(target("house"))?.map(|(_, label)| label);
    Ok(match (person, house) {
        (None, None) => own.to_owned(),
        (person, house) => format!(
            "{} → {} · {own}",
            person.as_deref().unwrap_or("?"),
            house.as_deref().unwrap_or("?")
        ),
    })
}

/// A record linked to the one shown: pointing at it (`incoming`) or pointed at by one of its
/// fields.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Linked {
    /// The field that holds the reference.
    pub field: String,
    /// Whether the other record points at this one.
    pub incoming: bool,
    /// The other record.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Its label (may contain an ID number: mask it before showing).
    pub label: String,
    /// Whether it is deleted or merged away.
    pub hidden: bool,
}

/// Whether opening a record shows its ID number in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reveal {
    /// Masked.
    Masked,
    /// In full, with an audit entry.
    Full,
}

/// A record as a reviewer opens it.
#[derive(Clone, Debug)]
pub struct RecordPage {
    /// The record.
    pub view: RecordView,
    /// Records linking to it and linked from it.
    pub links: Vec<Linked>,
    /// The watch-list rules the record matched (a person's).
    pub watched: Vec<Watched>,
    /// Whether the caller may change it (review, merge), not only see it: a person who moved
    /// into the caller's villages is seen there and changed by her home station.
    pub writable: bool,
    /// A residence's line as lists show it: who lives where, then its own label.
    pub line: Option<String>,
}

/// A watch-list rule a person matched, as her page says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    /// `id_number` or `region`.
    pub kind: String,
    /// The region's division prefix, for a region's rule (an ID number rule's value is her own
    /// number: not repeated).
    pub region: Option<String>,
    /// Whether its alert still waits for a reviewer.
    pub open: bool,
}

/// A record the caller may see, with its links. Another village's record is answered as one
/// that does not exist.
pub fn record_page(conn: &Conn<'_>, caller: &Caller, id: &str) -> Result<RecordPage, StoreError> {
    if !visible(conn, caller, id)? {
        return Err(StoreError::NotFound(
            "no such record in your villages".into(),
        ));
    }
    let view = record(conn, id)?.ok_or_else(|| StoreError::NotFound("no such record".into()))?;
    let mut links = linked(conn, id, &view.fields, EntityKind::parse(&view.kind))?;
    // A linked record the caller may not open (a moved-in person's vehicle at home, say) shows
    // its kind and id, not what its label says.
    for link in &mut links {
        if !visible(conn, caller, &link.id)? {
            link.label.clear();
        } else if link.kind == "residence" {
            // Who lives where, as lists say it: "2026-03-01 租客" alone reads alike everywhere.
            link.label = residence_line(conn, &caller.villages, &link.id, &link.label)?;
        }
    }
    let line = match view.kind.as_str() {
        "residence" => {
            let own = view.summary().map(|s| s.label).unwrap_or_default();
            Some(residence_line(conn, &caller.villages, id, &own)?)
        }
        _ => None,
    };
    let watched = conn
        .prepare_cached(
            "SELECT a.rule_kind, a.rule_value, a.acknowledged_ms IS NULL
             FROM alert a
             WHERE a.entity = ?1 AND a.rule_kind IN ('id_number', 'region') ORDER BY a.id",
        )?
        .query_map([id], |r| {
            let kind: String = r.get(0)?;
            let value: String = r.get(1)?;
            Ok(Watched {
                region: (kind == "region").then_some(value),
                kind,
                open: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(RecordPage {
        view,
        links,
        watched,
        writable: crate::store::scope::writable(conn, caller, id)?,
        line,
    })
}

/// The records linked to `id`: what its reference fields name, and what names it (residences,
/// vehicles, visits, duplicates merged into it).
pub fn linked(
    conn: &Conn<'_>,
    id: &str,
    fields: &std::collections::BTreeMap<String, String>,
    kind: Option<EntityKind>,
) -> Result<Vec<Linked>, StoreError> {
    let mut summary =
        conn.prepare_cached(
        "SELECT s.kind, s.label, s.deleted FROM entity e JOIN summary s ON s.pos = e.pos WHERE e.id = ?1",
    )?;
    let mut out = Vec::new();
    for (field, value) in fields {
        let is_ref = kind
            .and_then(|k| k.field(field))
            .is_some_and(|s| s.names_a_record());
        let Some(target) = is_ref
            .then(|| serde_json::from_str::<Value>(value).ok())
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned))
        else {
            continue;
        };
        let found: Option<(String, String, bool)> = summary
            .query_row([&target], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((kind, label, hidden)) = found {
            out.push(Linked {
                field: field.clone(),
                incoming: false,
                id: target,
                kind,
                label,
                hidden,
            });
        }
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT l.field, l.entity, s.kind, s.label, s.deleted FROM link l JOIN entity se ON se.id = l.entity JOIN summary s ON s.pos = se.pos
         WHERE {} AND l.target = ?1
         ORDER BY s.kind, s.updated_seq DESC LIMIT 500",
        crate::store::refs::among_references("l.field")
    ))?;
    let rows = stmt.query_map([id], |r| {
        Ok(Linked {
            field: r.get(0)?,
            incoming: true,
            id: r.get(1)?,
            kind: r.get(2)?,
            label: r.get(3)?,
            hidden: r.get(4)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}
