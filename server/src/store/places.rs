//! Stations and villages loaded from a division-code list (`code,name,level,parent`, as in
//! `server/data/dayawan-villages.csv`): each `street` row is a police station, each `village`
//! row a village of the station its parent names. A fresh server holds no places until some are
//! loaded, and accounts can only be given places it holds.

use crate::store::conn::{Conn, params};

use crate::store::audit::{Actor, audit, require_admin};
use crate::store::error::StoreError;

/// What an import stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Stations added or renamed.
    pub stations: usize,
    /// Villages added, renamed or moved.
    pub villages: usize,
}

/// The header a list must start with.
const HEADER: &str = "code,name,level,parent";

/// A street's police station: `大亚湾澳头街道` → `澳头派出所` (the district's own prefix
/// dropped, as the stations call themselves).
fn station_name(street: &str) -> String {
    let name = street.trim_start_matches("大亚湾");
    let name = name.strip_suffix("街道").unwrap_or(name);
    format!("{name}派出所")
}

fn bad(line: usize, message: &str) -> StoreError {
    StoreError::Invalid(format!("places, line {line}: {message}"))
}

/// Loads the stations and villages of a list, in one transaction with its audit entry: a list
/// with any bad row stores nothing, and loading a list again changes only what differs.
pub fn import(
    conn: &Conn<'_>,
    actor: Actor,
    list: &str,
    now_ms: u64,
) -> Result<Imported, StoreError> {
    let mut lines = list.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    match lines.next() {
        Some((_, header)) if header.trim_start_matches('\u{feff}') == HEADER => {}
        _ => return Err(bad(1, &format!("the list must start with `{HEADER}`"))),
    }
    let mut streets = Vec::new();
    let mut villages = Vec::new();
    for (line, text) in lines.filter(|(_, l)| !l.is_empty()) {
        let row: Vec<&str> = text.split(',').map(str::trim).collect();
        let [code, name, level, parent] = row[..] else {
            return Err(bad(
                line,
                &format!("4 fields expected, {} found", row.len()),
            ));
        };
        let digits = |n: usize| code.len() == n && code.bytes().all(|b| b.is_ascii_digit());
        if name.is_empty() {
            return Err(bad(line, &format!("name: empty for `{code}`")));
        }
        match level {
            "street" if digits(9) => streets.push((code, name)),
            "village" if digits(12) => villages.push((line, code, name, parent)),
            "street" | "village" => {
                let n = if level == "street" { 9 } else { 12 };
                return Err(bad(line, &format!("code: `{code}` is not {n} digits")));
            }
            // Counties, districts and the like carry no station or village of their own.
            _ => {}
        }
    }
    let tx = conn.transaction()?;
    require_admin(&tx, actor)?;
    let mut imported = Imported::default();
    for (code, name) in &streets {
        imported.stations += upsert_station(&tx, code, &station_name(name))?;
    }
    for &(line, code, name, parent) in &villages {
        if !holds(&tx, Place::Station, parent)? {
            return Err(bad(
                line,
                &format!("parent: no station `{parent}` in the list or on the server"),
            ));
        }
        imported.villages += upsert_village(&tx, code, name, parent)?;
    }
    let detail = format!(
        "{} stations, {} villages",
        imported.stations, imported.villages
    );
    audit(
        &tx,
        actor.account(),
        "import_places",
        None,
        Some(&detail),
        now_ms,
    )?;
    tx.commit()?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn places(conn: &Conn<'_>) -> Vec<(String, String, String)> {
        conn.prepare(
            "SELECT v.code, v.name, s.name FROM village v JOIN station s ON s.code = v.station
             ORDER BY v.code",
        )
        .unwrap()
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn daya_bays_list_loads_once_and_again_changes_nothing() {
        let db = Db::open_in_memory().unwrap();
        db.call_blocking(|c| {
            let first = import(c, Actor::Operator, crate::demo::VILLAGES, 0)?;
            assert_eq!(
                first,
                Imported {
                    stations: 3,
                    villages: 64
                }
            );
            let held = places(c);
            assert_eq!(held.len(), 64);
            assert!(
                held.contains(&(
                    "441303006001".into(),
                    "桥西社区居民委员会".into(),
                    "澳头派出所".into()
                )),
                "{held:?}"
            );
            assert_eq!(
                import(c, Actor::Operator, crate::demo::VILLAGES, 0)?,
                Imported::default()
            );
            // A village renamed and moved to another station: only it changes.
            let moved = "code,name,level,parent\n441303006001,桥西社区,village,441303007\n";
            assert_eq!(
                import(c, Actor::Operator, moved, 0)?,
                Imported {
                    stations: 0,
                    villages: 1
                }
            );
            let held = places(c);
            assert!(
                held.contains(&(
                    "441303006001".into(),
                    "桥西社区".into(),
                    "霞涌派出所".into()
                )),
                "{held:?}"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_bad_row_is_named_and_nothing_of_its_list_is_stored() {
        let db = Db::open_in_memory().unwrap();
        let cases = [
            ("441303006,某街道,street,441303\n", "line 1"),
            (
                "code,name,level,parent\n441303006,某街道,street,441303\n44130300600,短码村,village,441303006\n",
                "line 3: code: `44130300600` is not 12 digits",
            ),
            (
                "code,name,level,parent\n441303006,某街道,street,441303\n441303006001,某村,village\n",
                "line 3: 4 fields expected, 3 found",
            ),
            (
                "code,name,level,parent\n441303006,某街道,street,441303\n441303006001,某村,village,441303006\n441303009001,他村,village,441303009\n",
                "line 4: parent: no station `441303009`",
            ),
            (
                "code,name,level,parent\n441303006,,street,441303\n",
                "line 2: name: empty",
            ),
        ];
        for (list, expected) in cases {
            let error = db
                .call_blocking(|c| import(c, Actor::Operator, list, 0))
                .unwrap_err();
            assert!(
                matches!(&error, StoreError::Invalid(m) if m.contains(expected)),
                "{list:?}: {error:?}"
            );
        }
        let stored: i64 = db
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM station) + (SELECT count(*) FROM village)",
                    (),
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(stored, 0, "a refused list stored part of itself");
    }
}

/// Adds or renames a station: 1 when that changed anything, else 0.
pub fn upsert_station(conn: &Conn<'_>, code: &str, name: &str) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "INSERT INTO station (code, name) VALUES (?1, ?2)
         ON CONFLICT (code) DO UPDATE SET name = excluded.name WHERE station.name IS DISTINCT FROM excluded.name",
        params![code, name],
    )?)
}

/// Adds, renames or moves a village: 1 when that changed anything, else 0.
pub fn upsert_village(
    conn: &Conn<'_>,
    code: &str,
    name: &str,
    station: &str,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "INSERT INTO village (code, name, station) VALUES (?1, ?2, ?3)
         ON CONFLICT (code) DO UPDATE SET name = excluded.name, station = excluded.station
         WHERE village.name IS DISTINCT FROM excluded.name
            OR village.station IS DISTINCT FROM excluded.station",
        params![code, name, station],
    )?)
}

/// A station with its villages.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Station {
    /// Station code (the street's division code).
    pub code: String,
    /// Name.
    pub name: String,
    /// Its villages: (code, name).
    pub villages: Vec<(String, String)>,
}

/// The names of the villages with these codes, by code (a code the server has no place for is
/// left out).
pub fn village_names(
    conn: &Conn<'_>,
    codes: &[String],
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM village WHERE code = ?1")?;
    let mut names = std::collections::BTreeMap::new();
    for code in codes {
        let name: Option<String> = stmt.query_map([code], |r| r.get(0))?.next().transpose()?;
        if let Some(name) = name {
            names.insert(code.clone(), name);
        }
    }
    Ok(names)
}

/// Every station with its villages.
pub fn stations(conn: &Conn<'_>) -> Result<Vec<Station>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT code, name FROM station ORDER BY code")?;
    let rows: Vec<(String, String)> = stmt
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut villages =
        conn.prepare("SELECT code, name FROM village WHERE station = ?1 ORDER BY code")?;
    for (code, name) in rows {
        let list = villages
            .query_map([&code], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        out.push(Station {
            code,
            name,
            villages: list,
        });
    }
    Ok(out)
}

/// A kind of place an account can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A police station (a street).
    Station,
    /// A village.
    Village,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Station => "station",
            Place::Village => "village",
        }
    }
}

/// Whether the server holds the place with this code.
pub fn holds(conn: &Conn<'_>, place: Place, code: &str) -> Result<bool, StoreError> {
    let sql = match place {
        Place::Station => "SELECT EXISTS (SELECT 1 FROM station WHERE code = ?1)",
        Place::Village => "SELECT EXISTS (SELECT 1 FROM village WHERE code = ?1)",
    };
    Ok(conn.query_row(sql, [code], |r| r.get(0))?)
}

/// The error for a place the server does not hold, naming it and how places are loaded.
pub(crate) fn unknown(place: Place, code: &str) -> StoreError {
    StoreError::Invalid(format!(
        "{} `{code}` does not exist (places are loaded with `baylink-server station import`)",
        place.name()
    ))
}
