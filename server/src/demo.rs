//! `serve --demo`: Daya Bay's three stations (one per street) and 64 villages from the embedded
//! division data, one officer per village (一村一警), a reviewer per station, an administrator,
//! and a few thousand synthetic but valid records, pushed through the same path as a device's.

use std::collections::BTreeMap;
use std::io::Write;

use baylink_domain::date::{CHINA_OFFSET_MINUTES, datetime_from_unix_ms};
use baylink_domain::{Date, EntityKind, Input, natural_id, synthetic, validate_capture};
use baylink_sync::{Change, ChangeId, Clock, NodeId, Stamp};
use serde_json::Value;
use uuid::Uuid;

use crate::auth::password;
use crate::store::accounts::{self, NewAccount, Role};
use crate::store::audit::Actor;
use crate::store::caller::Caller;
use crate::store::devices;
use crate::store::error::StoreError;
use crate::store::places;
use crate::store::push;
use crate::store::{Db, now_ms};

/// The streets (stations) and villages of Daya Bay: code, name, level, parent.
pub const VILLAGES: &str = include_str!("../data/dayawan-villages.csv");
/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "baylink-demo";
/// How much one village's officer registers (the demo's, or a benchmark's district).
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// Persons, each living in one of the houses.
    pub persons: u64,
    /// Houses.
    pub houses: u64,
    /// Vehicles, the first ones owned by the first persons.
    pub vehicles: u64,
    /// Whether one person is registered twice, the second time with a mistyped ID number.
    pub mistyped: bool,
}

/// What the demo seeds per village.
const DEMO_COUNTS: Counts = Counts {
    persons: 24,
    houses: 8,
    vehicles: 10,
    mistyped: true,
};

/// The synthetic person on the demo's watch list (village 1, person 5).
const WATCHED: u64 = 1_005;

/// Seeds the demo data once (later runs only print the credentials) and says how to sign in.
pub fn seed(db: &Db, out: &mut impl Write) -> Result<(), StoreError> {
    db.call_blocking(|conn| {
        if !accounts::accounts(conn)?.is_empty() {
            return Ok(());
        }
        match seed_into(conn, out) {
            // Another node started with `--demo` at the same moment (on PostgreSQL) took the
            // first account: it seeds the demo, this one serves it.
            Err(StoreError::Conflict(_)) if !accounts::accounts(conn)?.is_empty() => Ok(()),
            seeded => seeded,
        }
    })?;
    let summary = db.call_blocking(|conn| {
        let stations = places::stations(conn)?;
        let officers = accounts::accounts(conn)?
            .into_iter()
            .filter(|a| a.role == Role::Officer)
            .count();
        Ok((stations, officers))
    })?;
    let (stations, officers) = summary;
    let print = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(out, "Demo accounts (password for all: {DEMO_PASSWORD}):")?;
        writeln!(out, "  admin            administrator")?;
        for places::Station {
            code,
            name,
            villages,
        } in &stations
        {
            let suffix = &code[code.len() - 3..];
            writeln!(
                out,
                "  r{suffix:<15} reviewer, {name} ({} villages)",
                villages.len()
            )?;
            if let Some((village, vname)) = villages.first() {
                writeln!(
                    out,
                    "  o{:<15} officer of {vname} ({village}); o<street><village> for the others",
                    &village[6..]
                )?;
            }
        }
        writeln!(out, "  {officers} officers in all")
    };
    print(out).map_err(|e| StoreError::Backend(format!("print: {e}")))
}

/// Username of a village's officer: `o` + street and village digits (`o006001`).
pub fn officer_username(village: &str) -> String {
    format!("o{}", &village[6..])
}

/// Daya Bay's stations (one per street) and villages, without accounts or records.
pub fn seed_places(conn: &crate::store::conn::Conn<'_>) -> Result<(), StoreError> {
    crate::store::places::import(conn, Actor::Operator, VILLAGES, now_ms())?;
    Ok(())
}

/// The demo password's hash.
fn demo_hash() -> Result<String, StoreError> {
    password::hash(DEMO_PASSWORD).map_err(|e| StoreError::Backend(format!("password hash: {e}")))
}

fn seed_into(conn: &crate::store::conn::Conn<'_>, out: &mut impl Write) -> Result<(), StoreError> {
    seed_places(conn)?;
    let rows: Vec<Vec<&str>> = VILLAGES
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let now = now_ms();
    let admin_hash = demo_hash()?;
    let admin = NewAccount {
        username: "admin".into(),
        display_name: "系统管理员".into(),
        role: Role::Admin,
        station: None,
        password_hash: admin_hash,
        villages: Vec::new(),
    };
    let admin = accounts::create_account(conn, Actor::Operator, &admin, now)?;
    // One watched person, so the demo's alert list has an alert raised by an officer's sync.
    let watched = baylink_domain::watch::Rule::id_number(&synthetic::resident_id(WATCHED))
        .map_err(|e| StoreError::Backend(format!("demo watch rule: {}", e.en)))?;
    crate::store::alerts::add_rule(conn, admin, &watched, "演示：重点关注人员", now)?;
    for places::Station { code, name, .. } in places::stations(conn)? {
        let h = demo_hash()?;
        let username = format!("r{}", &code[code.len() - 3..]);
        let display = format!("{name}审核员");
        let reviewer = NewAccount {
            username,
            display_name: display,
            role: Role::Reviewer,
            station: Some(code),
            password_hash: h,
            villages: Vec::new(),
        };
        accounts::create_account(conn, Actor::Operator, &reviewer, now)?;
    }
    let villages: Vec<(String, String, String)> = rows
        .iter()
        .filter(|r| r.get(2) == Some(&"village"))
        .map(|r| (r[0].to_owned(), r[1].to_owned(), r[3].to_owned()))
        .collect();
    let mut clock = Clock::default();
    for (index, (village, vname, station)) in villages.iter().enumerate() {
        let h = demo_hash()?;
        let username = officer_username(village);
        let display = format!("{vname}民警");
        let officer = NewAccount {
            username: username.clone(),
            display_name: display,
            role: Role::Officer,
            station: Some(station.clone()),
            password_hash: h,
            villages: vec![village.clone()],
        };
        let account = accounts::create_account(conn, Actor::Operator, &officer, now)?;
        // The seeding device of this officer, so the history names a device like any capture.
        let device = Uuid::new_v5(
            &baylink_domain::identity::NAMESPACE,
            format!("demo-device/{username}").as_bytes(),
        );
        devices::register_device(conn, &device.to_string(), account, "demo seed", now)?;
        let changes = village_changes(
            index as u64,
            village,
            vname,
            &username,
            NodeId(device),
            &mut clock,
            now,
            DEMO_COUNTS,
        );
        let caller = Caller {
            account,
            role: Role::Officer,
            device: device.to_string(),
            villages: vec![village.clone()],
        };
        let results = push::push(conn, &caller, &changes, now_ms(), 60_000)?;
        if let Some(r) = results
            .iter()
            .find(|r| r.status != baylink_sync::wire::ChangeStatus::Accepted)
        {
            return Err(StoreError::Backend(format!(
                "demo change refused: {:?}",
                r.message
            )));
        }
    }
    writeln!(
        out,
        "Seeded {} stations, {} villages and their records.",
        3,
        villages.len()
    )
    .map_err(|e| StoreError::Backend(format!("print: {e}")))
}

fn input(pairs: &[(&str, String)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The changes an officer's phone would push after registering a village's houses, residents,
/// residences and vehicles: deterministic, valid, distinct across villages (the `index`-th
/// village's persons are synthetic persons `index × 1,000,000 + p`).
#[allow(clippy::too_many_arguments)]
pub fn village_changes(
    index: u64,
    village: &str,
    vname: &str,
    officer: &str,
    node: NodeId,
    clock: &mut Clock,
    now: u64,
    counts: Counts,
) -> Vec<Change> {
    let today = Date::from_unix_ms(now as i64, CHINA_OFFSET_MINUTES);
    let Counts {
        persons,
        houses,
        vehicles,
        mistyped,
    } = counts;
    // The demo keeps its small numbers (village × 1,000); larger runs need room.
    let stride = if persons <= 1_000 { 1_000 } else { 1_000_000 };
    let mut records: Vec<(EntityKind, Uuid, BTreeMap<String, Value>)> = Vec::new();
    let mut capture = |kind: EntityKind, form: Input, key: String| {
        let Ok(mut fields) = validate_capture(kind, &form, today) else {
            return None;
        };
        // A record with no natural key gets a time-ordered id as a phone gives it (the server
        // takes no other), its random part drawn from the record's key.
        let id = natural_id(kind, &fields).unwrap_or_else(|| {
            let drawn = Uuid::new_v5(&baylink_domain::identity::NAMESPACE, key.as_bytes());
            let mut random = [0u8; 10];
            random.copy_from_slice(&drawn.as_bytes()[6..]);
            uuid::Builder::from_unix_timestamp_millis(now, &random).into_uuid()
        });
        fields.insert("created_by".into(), Value::String(officer.to_owned()));
        fields.insert(
            "created_at".into(),
            Value::String(datetime_from_unix_ms(now as i64, CHINA_OFFSET_MINUTES)),
        );
        fields.insert("review_status".into(), Value::String("pending".into()));
        records.push((kind, id, fields));
        Some(id)
    };
    let mut house_ids = Vec::new();
    for h in 0..houses {
        let form = input(&[
            ("village", village.to_owned()),
            (
                "address",
                format!("{vname}{}巷{}号", h / 4 + 1, h % 4 * 2 + 1),
            ),
            (
                "use",
                ["rental", "rental", "self_occupied", "dormitory", "shop"][(h % 5) as usize]
                    .to_owned(),
            ),
            ("status", "in_use".to_owned()),
            ("room_count", format!("{}", 2 + h % 6)),
            ("landlord_name", synthetic::short_name(index * 100 + h)),
            ("landlord_phone", format!("139{:08}", index * 1000 + h)),
        ]);
        house_ids.extend(capture(
            EntityKind::House,
            form,
            format!("demo/house/{village}/{h}"),
        ));
    }
    let mut person_ids = Vec::new();
    for p in 0..persons {
        let n = index * stride + p;
        let form = input(&[
            ("village", village.to_owned()),
            ("id_number", synthetic::resident_id(n)),
            ("name", synthetic::name(n)),
            ("phone", format!("138{n:08}")),
            (
                "occupation",
                ["工人", "厨师", "司机", "店员", "保安"][(p % 5) as usize].to_owned(),
            ),
        ]);
        person_ids.extend(capture(
            EntityKind::Person,
            form,
            format!("demo/person/{n}"),
        ));
    }
    // Every eighth village has one person captured twice, the second time with a mistyped ID
    // number: the console's duplicate list proposes the pair.
    if mistyped && index.is_multiple_of(8) {
        let n = index * stride;
        let right = synthetic::resident_id(n);
        // 441303 (惠阳) typed as 441323 (惠东): no synthetic person comes from there.
        let first17 = format!("441323{}", &right[6..17]);
        let check = baylink_domain::id_number::check_char(first17.as_bytes());
        let form = input(&[
            ("village", village.to_owned()),
            ("id_number", format!("{first17}{check}")),
            ("name", synthetic::name(n)),
            ("employer", "大亚湾石化区".to_owned()),
        ]);
        capture(EntityKind::Person, form, format!("demo/person/{n}/again"));
    }
    for (p, person) in person_ids.iter().enumerate() {
        let Some(house) = house_ids.get(p % house_ids.len().max(1)) else {
            break;
        };
        let form = input(&[
            ("village", village.to_owned()),
            ("person", person.to_string()),
            ("house", house.to_string()),
            (
                "moved_in",
                format!("2025-{:02}-{:02}", p % 12 + 1, p % 28 + 1),
            ),
            ("relation", "tenant".to_owned()),
        ]);
        capture(EntityKind::Residence, form, String::new());
    }
    for v in 0..vehicles {
        let plate = synthetic::plate(index * 100_000 + v);
        let mut pairs = vec![
            ("village", village.to_owned()),
            ("plate", plate),
            (
                "vehicle_type",
                ["car", "car", "e_bike", "motorcycle", "truck"][(v % 5) as usize].to_owned(),
            ),
            (
                "colour",
                ["白", "黑", "银", "红"][(v % 4) as usize].to_owned(),
            ),
        ];
        if let Some(owner) = person_ids.get(v as usize) {
            pairs.push(("owner", owner.to_string()));
        }
        capture(EntityKind::Vehicle, input(&pairs), String::new());
    }
    let mut changes = Vec::new();
    for (kind, id, fields) in records {
        let stamp = Stamp::new(clock.tick(now), node);
        for (field, value) in fields {
            let counter = changes.len() as u64 + 1;
            changes.push(Change {
                id: ChangeId {
                    device: node,
                    counter,
                },
                kind: kind.as_str().to_owned(),
                entity: id,
                field,
                value,
                stamp,
                base: None,
            });
        }
    }
    changes
}
