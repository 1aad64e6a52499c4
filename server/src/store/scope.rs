//! Which villages see a record (its scope) and which devices hold it: kept in the transaction of the write that changes it.

use baylink_domain::scope::{Residence, person_villages};

use crate::store::caller::Caller;
use crate::store::conn::{Conn, params};
use crate::store::error::StoreError;
use crate::store::state;
use crate::store::summary;
use crate::store::values::Scopes;
use crate::store::values::Sequence;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn scope_of(tx: &Conn<'_>, entity: &str) -> Result<BTreeSet<String>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT s.village FROM entity e JOIN scope s ON s.pos = e.pos WHERE e.id = ?1",
    )?;
    let rows = stmt.query_map([entity], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// After a push, per touched record, what the caller's device may now hold: the caller's villages
/// it lies in are noted as written (see `device_village`); a record in none of them is purged for
/// the caller's villages — an accepted change whose record another officer's newer write moved
/// elsewhere (a person registered here and, later by the clock, there) would otherwise stay on the
/// device, as it never entered the caller's scope and no other purge would reach it.
pub(crate) fn settle_device_holdings(
    tx: &Conn<'_>,
    seq: &mut Sequence,
    touched: &BTreeSet<String>,
    scopes: &Scopes,
    caller: &Caller,
) -> Result<(), StoreError> {
    if !touched.is_empty() {
        // Where its first accepted write stands: a pull of it from no cursor is judged by it
        // (`pull::own_records_elsewhere`).
        tx.prepare_cached(
            "UPDATE device SET first_write_seq = ?2 WHERE id = ?1 AND first_write_seq IS NULL",
        )?
        .execute(params![caller.device, seq.start + 1])?;
    }
    if caller.villages.is_empty() {
        return Ok(());
    }
    let mut written = BTreeSet::new();
    for entity in touched {
        let scope = scopes.get(entity).ok_or_else(|| {
            StoreError::Backend(format!("no scope set for the written record {entity}"))
        })?;
        let mine: Vec<&String> = caller
            .villages
            .iter()
            .filter(|v| scope.contains(*v))
            .collect();
        if mine.is_empty() {
            for village in &caller.villages {
                tx.prepare_cached("INSERT INTO purge (seq, entity, village) VALUES (?1, ?2, ?3)")?
                    .execute(params![seq.next(), entity, village])?;
            }
        }
        written.extend(mine);
    }
    for village in written {
        tx.prepare_cached(
            "INSERT INTO device_village (device, village, purged_seq) VALUES (?1, ?2, NULL)
             ON CONFLICT (device, village) DO UPDATE SET purged_seq = NULL",
        )?
        .execute(params![caller.device, village])?;
    }
    Ok(())
}

/// Recomputes the scope of touched entities (and of the people whose residences changed);
/// an entity that enters a village is resent whole to it, one that leaves is purged there.
/// Then every value written or resent in this write goes into the feeds of its entity's villages.
/// Returns the villages it set, for the rest of the write. The rows, scopes and residences it
/// reads are read a statement per step for every record at once (`Pending::prefetch`).
pub(crate) fn rescope(
    tx: &Conn<'_>,
    seq: &mut Sequence,
    touched: &BTreeSet<String>,
    persons: &BTreeSet<String>,
) -> Result<Scopes, StoreError> {
    // Everything below reads the tables.
    seq.flush(tx)?;
    // The records just stored, as stored (read again only those an earlier flush stored): each
    // goes back to the unit's known rows once `set_scope` is done with it.
    let mut flushed = seq.pending.take_flushed();
    seq.pending
        .prefetch(tx, touched.iter().filter(|e| !flushed.contains_key(*e)))?;
    seq.pending.prefetch_scopes(tx, touched)?;
    let mut created = Vec::new();
    for entity in touched {
        match flushed.get(entity) {
            Some(record) if seq.pending.created_here(entity) => {
                created.extend(summary::summary_row(entity, record));
            }
            Some(record) => summary::write_summary(tx, entity, record)?,
            None => {
                if let Some(record) = seq.pending.stored(tx, entity)? {
                    summary::write_summary(tx, entity, record)?;
                }
            }
        }
    }
    summary::insert_summaries(tx, &created)?;
    let mut people = persons.clone();
    let mut houses = Vec::new();
    let mut scopes = Scopes::new();
    for entity in touched {
        let (kind, village, person) = {
            let record = match flushed.get(entity) {
                Some(record) => record,
                None => seq
                    .pending
                    .stored(tx, entity)?
                    .ok_or_else(|| StoreError::Backend(format!("no record {entity}")))?,
            };
            let person = text_in(record, "person").map(str::to_owned);
            (record.kind.clone(), record.village.clone(), person)
        };
        match kind.as_str() {
            "residence" => people.extend(person),
            "person" => {
                people.insert(entity.clone());
                continue;
            }
            "house" => houses.push(entity.clone()),
            _ => {}
        }
        let village = baylink_domain::scope::record_villages(village.as_deref());
        set_scope(tx, seq, entity, &village, flushed.remove(entity))?;
        scopes.insert(entity.clone(), village);
    }
    // The people living in a touched house.
    let in_houses: Vec<String> = residences_naming_all(tx, "house", &houses)?
        .into_values()
        .flatten()
        .collect();
    seq.pending.prefetch(tx, &in_houses)?;
    for residence in &in_houses {
        if let Some(record) = seq.pending.stored(tx, residence)? {
            people.extend(text_in(record, "person").map(str::to_owned));
        }
    }
    // People whose scope may have grown (and their values been resent), beyond the touched:
    // their rows, scopes and residences, then the houses of those residences.
    let untouched: Vec<&String> = people
        .iter()
        .filter(|p| !flushed.contains_key(*p))
        .collect();
    seq.pending.prefetch(tx, untouched)?;
    seq.pending.prefetch_scopes(tx, &people)?;
    let people_list: Vec<String> = people.iter().cloned().collect();
    let mut residences = residences_naming_all(tx, "person", &people_list)?;
    seq.pending.prefetch(tx, residences.values().flatten())?;
    let mut homes = Vec::new();
    for residence in residences.values().flatten() {
        if let Some(record) = seq.pending.stored(tx, residence)? {
            homes.extend(text_in(record, "house").map(str::to_owned));
        }
    }
    seq.pending.prefetch(tx, &homes)?;
    let mut resent = BTreeSet::new();
    for person in people {
        let home = match flushed.get(&person) {
            Some(record) => record.village.clone(),
            None => match seq.pending.stored(tx, &person)? {
                Some(record) => record.village.clone(),
                None => continue,
            },
        };
        let mut lives = Vec::new();
        for residence in residences.remove(&person).unwrap_or_default() {
            let Some(record) = seq.pending.stored(tx, &residence)? else {
                continue;
            };
            let value = |field| record.state.get(field).map(|s| &s.version.value);
            let moved_out = value("moved_out").is_some_and(|v| !v.is_null());
            let deleted = value("deleted") == Some(&Value::Bool(true));
            // The house of a residence the rule will not count is not read.
            let house = match moved_out || deleted {
                true => None,
                false => text_in(record, "house").map(str::to_owned),
            };
            let house_village = match house {
                Some(house) => seq
                    .pending
                    .stored(tx, &house)?
                    .and_then(|h| h.village.clone()),
                None => None,
            };
            lives.push(Residence {
                house_village,
                moved_out,
                deleted,
            });
        }
        let villages = person_villages(home.as_deref(), &lives);
        let stored = flushed.remove(&person);
        if set_scope(tx, seq, &person, &villages, stored)? && !touched.contains(&person) {
            resent.insert(person.clone());
        }
        scopes.insert(person, villages);
    }
    seq.pending.store_scopes(tx)?;
    publish(tx, touched.iter().chain(&resent))?;
    Ok(scopes)
}

/// A field's text in a record as loaded.
fn text_in<'r>(record: &'r state::Loaded, field: &str) -> Option<&'r str> {
    record
        .state
        .get(field)
        .and_then(|s| s.version.value.as_str())
}

/// [`residences_naming`]'s query: `?1` the field, `?2` the record named.
pub(crate) const RESIDENCES_NAMING: &str =
    "SELECT l.entity FROM link l JOIN entity e ON e.id = l.entity AND e.kind = 'residence'
     WHERE l.field = ?1 AND l.target = ?2";

/// The residences whose `field` (`person` or `house`) names `target`, found through the index
/// of links (`link`).
pub(crate) fn residences_naming(
    tx: &Conn<'_>,
    field: &'static str,
    target: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare_cached(RESIDENCES_NAMING)?;
    let rows = stmt.query_map(params![field, target], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// [`residences_naming`] for several records at once, in one statement: by record named.
pub(crate) fn residences_naming_all(
    tx: &Conn<'_>,
    field: &'static str,
    targets: &[String],
) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if targets.is_empty() {
        return Ok(found);
    }
    let rows: Vec<(String, String)> = tx
        .prepare_cached(tx.pick(
            "SELECT l.target, l.entity FROM link l JOIN entity e ON e.id = l.entity AND e.kind = 'residence'
             WHERE l.field = ?1 AND l.target IN (SELECT value FROM json_each(?2))",
            // A lookup per record named (see `state::id_list`).
            "SELECT l.target, l.entity FROM json_array_elements_text(CAST(?2 AS json)) t
             CROSS JOIN LATERAL (SELECT target, entity FROM link WHERE field = ?1 AND target = t.value OFFSET 0) l
             JOIN entity e ON e.id = l.entity AND e.kind = 'residence'",
        ))?
        .query_map(params![field, state::id_list(targets)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    for (target, residence) in rows {
        found.entry(target).or_default().push(residence);
    }
    Ok(found)
}

/// Puts records into the feeds of their villages, each at the number of its last write or
/// resend: one statement for them all.
pub(crate) fn publish<'e>(
    tx: &Conn<'_>,
    entities: impl IntoIterator<Item = &'e String>,
) -> Result<(), StoreError> {
    let list = state::id_list(entities);
    tx.prepare_cached(tx.pick(
        "INSERT OR IGNORE INTO feed (village, seq, pos)
         SELECT s.village, e.seq, e.pos FROM entity e JOIN scope s ON s.pos = e.pos
         WHERE e.id IN (SELECT value FROM json_each(?1)) AND e.seq > 0",
        // A lookup per record (see `state::id_list`).
        "INSERT OR IGNORE INTO feed (village, seq, pos)
         SELECT s.village, e.seq, e.pos FROM json_array_elements_text(CAST(?1 AS json)) t
         CROSS JOIN LATERAL (SELECT seq, pos FROM entity WHERE id = t.value AND seq > 0 OFFSET 0) e
         CROSS JOIN LATERAL (SELECT village FROM scope WHERE pos = e.pos OFFSET 0) s",
    ))?
    .execute([list])?;
    Ok(())
}

/// Takes a record out of one village's feed.
pub(crate) fn unpublish(tx: &Conn<'_>, entity: &str, village: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "DELETE FROM feed WHERE village = ?2 AND seq = (SELECT seq FROM entity WHERE id = ?1)",
    )?
    .execute(params![entity, village])?;
    Ok(())
}

/// Sets an entity's villages; true when it was resent (it entered a village). `stored`: the
/// record as its row holds it, when the caller has it (read from the row otherwise). The
/// villages it enters are stored by `Pending::store_scopes`.
pub(crate) fn set_scope(
    tx: &Conn<'_>,
    seq: &mut Sequence,
    entity: &str,
    villages: &BTreeSet<String>,
    stored: Option<state::Loaded>,
) -> Result<bool, StoreError> {
    let before = seq.pending.scope(tx, entity)?;
    if &before == villages {
        if let Some(record) = stored {
            seq.pending.restored(entity, record);
        }
        return Ok(false);
    }
    for gone in before.difference(villages) {
        tx.prepare_cached(
            "DELETE FROM scope WHERE pos = (SELECT pos FROM entity WHERE id = ?1) AND village = ?2",
        )?
        .execute(params![entity, gone])?;
        seq.pending.remove_scope(entity, gone);
        // A village's feed holds only records in the village.
        unpublish(tx, entity, gone)?;
        tx.prepare_cached("INSERT INTO purge (seq, entity, village) VALUES (?1, ?2, ?3)")?
            .execute(params![seq.next(), entity, gone])?;
    }
    let added: Vec<&String> = villages.difference(&before).collect();
    for village in &added {
        seq.pending.add_scope(entity, village);
    }
    if added.is_empty() {
        return Ok(false);
    }
    // Devices of the new villages are past the sequence numbers of the values written before
    // this write: those are resent, at a new number, to every village (this write's own values
    // have theirs). Its entries at the old number go from the villages kept.
    let record = match stored {
        Some(record) => Some(record),
        None => seq.pending.stored(tx, entity)?.cloned(),
    };
    let Some(mut record) = record else {
        return Ok(false);
    };
    let older = record.state.values().any(|s| s.seq <= seq.start);
    if !older {
        seq.pending.restored(entity, record);
        return Ok(false);
    }
    for kept in before.intersection(villages) {
        unpublish(tx, entity, kept)?;
    }
    let resent = seq.next();
    for slot in record.state.values_mut() {
        if slot.seq <= seq.start {
            slot.seq = resent;
        }
    }
    record.seq = resent;
    tx.prepare_cached("UPDATE entity SET seq = ?2, state = ?3 WHERE id = ?1")?
        .execute(params![entity, resent, state::encode(&record.state)])?;
    seq.pending.restored(entity, record);
    Ok(true)
}

/// The condition that the record a column names (`entity`, its id) lies in one of the villages
/// of the JSON list parameter `?{list}`: through its row to its scope, by position. Its aliases
/// (`in_e`, `in_s`) are its own, so that it names the column of the statement around it.
pub(crate) fn in_villages(entity: &str, list: u8) -> String {
    format!(
        "EXISTS (SELECT 1 FROM entity in_e JOIN scope in_s ON in_s.pos = in_e.pos
                 WHERE in_e.id = {entity} AND in_s.village IN (SELECT value FROM json_each(?{list})))"
    )
}

/// Whether the console caller may see a record: administrators every record, reviewers the
/// records in their station's villages (a person also where they live), officers none (they
/// sync; the console's use cases are not theirs).
pub fn visible(
    conn: &Conn<'_>,
    caller: &crate::store::caller::Caller,
    entity: &str,
) -> Result<bool, StoreError> {
    station_holds(conn, caller, entity, &in_villages("?1", 2))
}

/// Whether the console caller may change a record that is not only seen: administrators every
/// record, reviewers those whose home village is one of their station's (a person who moved into
/// one of them is seen there, and stays her own station's to change), officers none.
pub fn writable(
    conn: &Conn<'_>,
    caller: &crate::store::caller::Caller,
    entity: &str,
) -> Result<bool, StoreError> {
    station_holds(
        conn,
        caller,
        entity,
        "EXISTS (SELECT 1 FROM entity WHERE id = ?1 AND village IN (SELECT value FROM json_each(?2)))",
    )
}

/// Administrators yes, officers no, a reviewer by `condition` on the record's id (`?1`) and her
/// villages (`?2`, a JSON list) as the server holds them.
fn station_holds(
    conn: &Conn<'_>,
    caller: &crate::store::caller::Caller,
    entity: &str,
    condition: &str,
) -> Result<bool, StoreError> {
    match caller.role {
        crate::store::caller::Role::Admin => return Ok(true),
        crate::store::caller::Role::Officer => return Ok(false),
        crate::store::caller::Role::Reviewer => {}
    }
    let list = serde_json::to_string(&caller.villages).unwrap_or_else(|_| "[]".into());
    Ok(conn
        .prepare_cached(&format!("SELECT {condition}"))?
        .query_row(params![entity, list], |r| r.get(0))?)
}

/// Why a console action on a record the caller sees but may not change is refused.
pub(crate) fn not_writable() -> StoreError {
    StoreError::Forbidden(
        "此记录属其他派出所辖区（迁入人员），只能查看，由其所属派出所处理 / this record is another station's (a person who moved in): seen here, changed by her own station"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn who_lives_where_is_read_through_the_index_of_links() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&dir.path().join("baylink.db")).unwrap();
        let plan: Vec<String> = db
            .read_blocking(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {RESIDENCES_NAMING}"))?;
                let rows = stmt.query_map(params!["house", "h"], |r| r.get(3))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("PRIMARY KEY (field=? AND target=?)")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN")),
            "{plan:?}"
        );
    }
}
