//! Duplicate persons: candidate pairs for a station, a reviewer's "not the same person", and the
//! merge — the duplicate redirects to the record kept (`merged_into`), everything that pointed at
//! it is pointed at the kept record, and fields only the duplicate had fill the kept record's
//! gaps. All of it is ordinary server writes, so it reaches every device; no history is removed.

use std::collections::BTreeSet;

use crate::store::conn::{Conn, Optional, params};
use baylink_domain::EntityKind;
use baylink_domain::duplicates::{PersonKey, Reasons, merge_fills};
use serde_json::Value;
use uuid::Uuid;

use crate::store::audit::audit;
use crate::store::caller::Caller;
use crate::store::error::StoreError;
use crate::store::scope::visible;
use crate::store::write::write_in;

/// One side of a candidate pair.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Side {
    /// Record id.
    pub id: String,
    /// Label (contains the ID number: mask it before showing).
    pub label: String,
    /// Home village.
    pub village: Option<String>,
    /// ID number.
    pub id_number: Option<String>,
    /// Birth date.
    pub birth_date: Option<String>,
    /// Capturing officer.
    pub created_by: Option<String>,
    /// Whether a record outside the villages asked about names this person (her residence or
    /// vehicle of another station): merging her away would rewrite it, which a reviewer of
    /// these villages may not (`merge`; an administrator may).
    pub linked_elsewhere: bool,
}

/// A candidate pair of persons who may be one.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Pair {
    /// One person.
    pub a: Side,
    /// The other.
    pub b: Side,
    /// Same name and birth date.
    pub same_name_and_birth_date: bool,
    /// ID numbers one character apart.
    pub id_number_one_apart: bool,
}

/// Candidate duplicate pairs, and whether the search that found them went to its end.
#[derive(Clone, Debug)]
pub struct Pairs {
    /// The pairs, at most the limit asked for.
    pub pairs: Vec<Pair>,
    /// Whether the search stopped at its bound on comparisons: pairs beyond these may exist.
    pub stopped: bool,
}

/// Candidate pairs among the persons whose home is in these villages, not yet dismissed.
pub fn candidates(conn: &Conn<'_>, villages: &[String], limit: usize) -> Result<Pairs, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    struct Person {
        side: Side,
        name: Option<String>,
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT s.entity, s.label, s.village, s.id_number, s.name, {}, s.created_by
         FROM summary s JOIN entity e ON e.pos = s.pos
         WHERE s.kind = 'person' AND s.deleted = 0 AND s.village IN (SELECT value FROM json_each(?1))",
        conn.pick(
            "e.state ->> '$.f.birth_date[0]'",
            "CAST(e.state AS jsonb) #>> '{f,birth_date,0}'"
        )
    ))?;
    let people: Vec<Person> = stmt
        .query_map([list.as_str()], |r| {
            let birth: Option<String> = r.get(5)?;
            Ok(Person {
                side: Side {
                    id: r.get(0)?,
                    label: r.get(1)?,
                    village: r.get(2)?,
                    id_number: r.get(3)?,
                    birth_date: birth,
                    created_by: r.get(6)?,
                    linked_elsewhere: false,
                },
                name: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let keys: Vec<PersonKey<'_>> = people
        .iter()
        .map(|p| PersonKey {
            name: p.name.as_deref(),
            birth_date: p.side.birth_date.as_deref(),
            id_number: p.side.id_number.as_deref(),
        })
        .collect();
    let dismissed: BTreeSet<(String, String)> = conn
        .prepare("SELECT a, b FROM duplicate_dismissal")?
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    // Dismissed pairs are left out below: found beyond the limit by as many.
    let most = limit.saturating_add(dismissed.len());
    let searched = baylink_domain::duplicates::search(&keys, most);
    let stopped = searched.stopped;
    for found in searched.pairs {
        let (a, b) = (&people[found.a].side, &people[found.b].side);
        if dismissed.contains(&ordered(&a.id, &b.id)) {
            continue;
        }
        let Reasons {
            same_name_and_birth_date,
            id_number_one_apart,
        } = found.reasons;
        out.push(Pair {
            a: a.clone(),
            b: b.clone(),
            same_name_and_birth_date,
            id_number_one_apart,
        });
        if out.len() >= limit {
            break;
        }
    }
    let ids: Vec<&str> = out
        .iter()
        .flat_map(|p| [p.a.id.as_str(), p.b.id.as_str()])
        .collect();
    let elsewhere = linked_elsewhere(conn, &ids, &list)?;
    for pair in &mut out {
        for side in [&mut pair.a, &mut pair.b] {
            side.linked_elsewhere = elsewhere.contains(&side.id);
        }
    }
    Ok(Pairs {
        pairs: out,
        stopped,
    })
}

/// Which of `ids` a record whose home village is not among `villages` (a JSON list) names.
fn linked_elsewhere(
    conn: &Conn<'_>,
    ids: &[&str],
    villages: &str,
) -> Result<BTreeSet<String>, StoreError> {
    let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    let found = conn
        .prepare(&format!(
            "SELECT DISTINCT l.target FROM link l JOIN entity e ON e.id = l.entity
             WHERE {} AND l.target IN (SELECT value FROM json_each(?1))
               AND (e.village IS NULL OR e.village NOT IN (SELECT value FROM json_each(?2)))",
            crate::store::refs::among_references("l.field")
        ))?
        .query_map(params![ids, villages], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(found)
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

fn check_pair(conn: &Conn<'_>, caller: &Caller, a: &str, b: &str) -> Result<String, StoreError> {
    if a == b {
        return Err(StoreError::Invalid(
            "a record cannot be merged with itself".into(),
        ));
    }
    let mut kinds = Vec::new();
    for id in [a, b] {
        let row: Option<(String, bool)> = conn
            .query_row(
                "SELECT s.kind, s.deleted FROM entity e JOIN summary s ON s.pos = e.pos WHERE e.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (kind, hidden) = row.ok_or_else(|| StoreError::NotFound(format!("no record {id}")))?;
        // Another station's record is answered as one that does not exist: nothing to learn.
        if !visible(conn, caller, id)? {
            return Err(StoreError::NotFound(format!("no record {id}")));
        }
        if hidden {
            return Err(StoreError::Conflict(format!(
                "记录已删除或已合并 / record {id} is deleted or already merged"
            )));
        }
        kinds.push(kind);
    }
    if kinds[0] != kinds[1] {
        return Err(StoreError::Invalid(
            "only records of one kind can be merged".into(),
        ));
    }
    Ok(kinds.swap_remove(0))
}

/// Records that two persons are not the same: the pair is not proposed again.
pub fn dismiss(
    conn: &Conn<'_>,
    caller: &Caller,
    a: &str,
    b: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    check_pair(&tx, caller, a, b)?;
    // The dismissal hides the pair from every station: both must be the caller's to decide.
    for id in [a, b] {
        if !crate::store::scope::writable(&tx, caller, id)? {
            return Err(crate::store::scope::not_writable());
        }
    }
    let (a, b) = ordered(a, b);
    tx.execute(
        "INSERT OR IGNORE INTO duplicate_dismissal (a, b, account, at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![a, b, caller.account, now_ms as i64],
    )?;
    audit(
        &tx,
        Some(caller.account),
        "dismiss_duplicate",
        Some(&a),
        Some(&b),
        now_ms,
    )?;
    tx.commit()?;
    Ok(())
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeReport {
    /// Fields copied from the duplicate into gaps of the kept record.
    pub filled: Vec<String>,
    /// Records that pointed at the duplicate and now point at the kept record.
    pub repointed: usize,
}

fn current(conn: &Conn<'_>, entity: &str) -> Result<Vec<(String, Value)>, StoreError> {
    let state = crate::store::state::load(conn, entity)?
        .map(|l| l.state)
        .unwrap_or_default();
    Ok(state
        .into_iter()
        .map(|(field, slot)| (field, slot.version.value))
        .collect())
}

/// Merges the duplicate `from` into `into`, in one transaction.
pub fn merge(
    conn: &Conn<'_>,
    caller: &Caller,
    from: &str,
    into: &str,
    now_ms: u64,
) -> Result<MergeReport, StoreError> {
    let tx = conn.transaction()?;
    let kind = check_pair(&tx, caller, from, into)?;
    let kind = EntityKind::parse(&kind);
    let (from_id, into_id) = (parse(from)?, parse(into)?);
    let pointing: Vec<(String, String)> = tx
        .prepare(&format!(
            "SELECT entity, field FROM link WHERE {} AND target = ?1",
            crate::store::refs::among_references("field")
        ))?
        .query_map([from], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    // A merge writes both records and every record pointing at the duplicate: each must be the
    // caller's to change, not only to see (a person who moved into a village is seen there; her
    // home station's records, her vehicles among them, are not the new station's to rewrite).
    let touched = [from, into]
        .into_iter()
        .chain(pointing.iter().map(|(entity, _)| entity.as_str()));
    for id in touched {
        if !crate::store::scope::writable(&tx, caller, id)? {
            return Err(StoreError::Forbidden(
                "合并会改动其他派出所辖区的记录，请由管理员合并 / the merge would change records outside your villages: an administrator can merge them".into(),
            ));
        }
    }
    let kept = current(&tx, into)?;
    let fills = merge_fills(kind, &kept, current(&tx, from)?);
    let mut report = MergeReport {
        filled: fills.iter().map(|(f, _)| f.clone()).collect(),
        repointed: 0,
    };
    if !fills.is_empty() {
        let fields: Vec<(&str, Value)> =
            fills.iter().map(|(f, v)| (f.as_str(), v.clone())).collect();
        write_in(&tx, caller.account, &into_id, &fields, now_ms)?;
    }
    for (entity, field) in pointing {
        write_in(
            &tx,
            caller.account,
            &parse(&entity)?,
            &[(field.as_str(), Value::String(into.to_owned()))],
            now_ms,
        )?;
        report.repointed += 1;
    }
    write_in(
        &tx,
        caller.account,
        &from_id,
        &[("merged_into", Value::String(into.to_owned()))],
        now_ms,
    )?;
    // Her alerts follow her to the record kept (a watched person's hit must not vanish because
    // her duplicate was the one kept); one the kept record has already stays once.
    tx.execute(
        "UPDATE alert SET entity = ?2 WHERE entity = ?1
           AND NOT EXISTS (SELECT 1 FROM alert k WHERE k.entity = ?2
                           AND k.rule_kind = alert.rule_kind AND k.rule_value = alert.rule_value)",
        params![from, into],
    )?;
    let detail = serde_json::to_string(&report).unwrap_or_default();
    audit(
        &tx,
        Some(caller.account),
        "merge",
        Some(from),
        Some(&format!("into {into} {detail}")),
        now_ms,
    )?;
    tx.commit()?;
    Ok(report)
}

fn parse(id: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(id).map_err(|_| StoreError::NotFound(format!("no record {id}")))
}
