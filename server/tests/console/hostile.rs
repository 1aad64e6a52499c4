//! A hostile reviewer, generated: reviewers of two stations and of a third that holds none of
//! the world's records act at random through the console — merge, dismiss, review, settle,
//! acknowledge, search, record pages with and without the audited reveal, exports, the lists —
//! naming any record, conflict or alert, over three villages (two of 澳头's, one of 霞涌's) whose
//! persons include namesakes across stations, passport holders, persons who moved into another
//! station's village, watched persons and conflicted ones. After every action:
//! - no record whose home village is not the actor's changed (values and stamps, summary and
//!   review, open conflicts); no conflict of such a record was settled, no pair naming one was
//!   dismissed, no watch-list hit on one was closed; a move-in notice was closed only by the
//!   station moved into;
//! - a search whose text reaches past the mask of any stored ID number or phone left a
//!   `search_hidden` entry of the actor; a reveal or an export that answered left its entry;
//! - no page holds a stored ID number or phone in full (but the one record a reveal shows, the
//!   rows of an export, and what the actor typed), nor the name of a person the actor may not
//!   see (one no person she sees shares);
//! - a decision leads to the first record waiting in the list its form names (her persons,
//!   another station's village, a search by a whole number: the list as the list page shows it
//!   without the search, or back to the record decided), and searches nothing; a page whose
//!   address says a decision or a merge led to it says so only of a record she may open that is
//!   decided, or one merged into it.

use std::collections::{BTreeMap, BTreeSet};

use super::{Console, PASSWORD, csrf, listed};
use axum::http::StatusCode;
use baylink_domain::date::CHINA_OFFSET_MINUTES;
use baylink_domain::{Date, EntityKind, natural_id, synthetic, validate_capture};
use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::caller::Caller;
use baylink_server::store::conn::Conn;
use baylink_server::store::contract::Actor;
use baylink_server::store::snapshot::Snapshot;
use baylink_server::store::{alerts, devices, now_ms, push};
use baylink_server::{AppState, Config, auth, demo};
use baylink_sync::{Change, ChangeId, Hlc, NodeId, Stamp};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// Two villages of 澳头 and one of 霞涌.
const VILLAGES: [&str; 3] = ["441303006001", "441303006002", "441303007001"];
/// The reviewers and their stations: 澳头, 霞涌, and 西区, which holds none of the world.
const REVIEWERS: [(&str, &str); 3] = [
    ("r006", "441303006"),
    ("r007", "441303007"),
    ("r008", "441303008"),
];

/// A person of the world, with what masks hide of her.
struct Person {
    id: Uuid,
    number: String,
    phone: String,
    name: String,
}

struct World {
    console: Console,
    runtime: tokio::runtime::Runtime,
    persons: Vec<Person>,
    /// Every record: persons, houses, residences, vehicles.
    records: Vec<Uuid>,
    /// Each reviewer's session cookie and CSRF token, in [`REVIEWERS`]' order.
    sessions: Vec<(String, String)>,
    /// Each village's officer's two phones.
    phones: std::cell::RefCell<Vec<Vec<Phone>>>,
}

fn today() -> Date {
    Date::from_unix_ms(now_ms() as i64, CHINA_OFFSET_MINUTES)
}

/// An officer's phone: the caller the server knows and its next counter.
struct Phone {
    caller: Caller,
    counter: u64,
}

impl Phone {
    /// Captures a whole record as the officer's form would; its id.
    fn capture(&mut self, conn: &Conn<'_>, kind: EntityKind, pairs: &[(&str, String)]) -> Uuid {
        let input = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let fields = validate_capture(kind, &input, today()).unwrap();
        let id = natural_id(kind, &fields).unwrap_or_else(Uuid::now_v7);
        let fields: Vec<(String, Value)> = fields.into_iter().collect();
        self.push(conn, kind, id, &fields, 0);
        id
    }

    /// Pushes fields of a record, stamped `tick` ms after now, each of which must be accepted.
    fn push(
        &mut self,
        conn: &Conn<'_>,
        kind: EntityKind,
        id: Uuid,
        fields: &[(String, Value)],
        tick: u64,
    ) {
        let results = self.send(conn, kind, id, fields, tick);
        assert!(results.iter().all(|r| r.code.is_none()), "{results:?}");
    }

    /// Pushes fields of a record, stamped `tick` ms after now; the server's answers.
    fn send(
        &mut self,
        conn: &Conn<'_>,
        kind: EntityKind,
        id: Uuid,
        fields: &[(String, Value)],
        tick: u64,
    ) -> Vec<baylink_sync::wire::ChangeResult> {
        let node = NodeId(Uuid::parse_str(&self.caller.device).unwrap());
        let stamp = Stamp::new(Hlc::new(now_ms() + tick, 0), node);
        let changes: Vec<Change> = fields
            .iter()
            .map(|(field, value)| {
                self.counter += 1;
                Change {
                    id: ChangeId {
                        device: node,
                        counter: self.counter,
                    },
                    kind: kind.as_str().into(),
                    entity: id,
                    field: field.clone(),
                    value: value.clone(),
                    stamp,
                    base: None,
                }
            })
            .collect();
        push::push(conn, &self.caller, &changes, now_ms(), 60_000).unwrap()
    }
}

/// The world: per village a house, four persons (one of each station's namesakes 王芳, a
/// passport holder, one who moved into the next village, of another station for the last),
/// two residences and a car; watched persons, move-in notices and a conflict on each village's
/// first person and on its moved-away one.
fn world(database: Option<String>) -> World {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.database = database;
    let (state, db) = AppState::open(config).unwrap();
    let hash = auth::password::hash(PASSWORD).unwrap();
    let (persons, records, phones) = db
        .call_blocking(move |conn| {
            demo::seed_places(conn)?;
            let account = |name: &str, role, station: Option<&str>, villages: Vec<String>| {
                let new = NewAccount {
                    username: name.to_owned(),
                    display_name: name.to_owned(),
                    role,
                    station: station.map(str::to_owned),
                    password_hash: hash.clone(),
                    villages,
                };
                accounts::create_account(conn, Actor::Operator, &new, 0)
            };
            for (name, station) in REVIEWERS {
                account(name, Role::Reviewer, Some(station), vec![])?;
            }
            let admin = account("admin", Role::Admin, None, vec![])?;
            // Each village's officer with two phones: the second never saw the first's values.
            let mut phones = Vec::new();
            for (v, village) in VILLAGES.iter().enumerate() {
                let officer = account(
                    &format!("o{v}"),
                    Role::Officer,
                    Some(&village[..9]),
                    vec![(*village).to_owned()],
                )?;
                let pair: Vec<Phone> = (0..2u128)
                    .map(|n| {
                        let device = Uuid::from_u128(0x100 + 2 * v as u128 + n).to_string();
                        devices::register_device(conn, &device, officer, "phone", 0)?;
                        Ok(Phone {
                            caller: Caller {
                                account: officer,
                                role: Role::Officer,
                                device,
                                villages: vec![(*village).to_owned()],
                            },
                            counter: 0,
                        })
                    })
                    .collect::<Result<_, baylink_server::store::StoreError>>()?;
                phones.push(pair);
            }
            let mut persons = Vec::new();
            let mut records = Vec::new();
            let mut houses = Vec::new();
            for (v, village) in VILLAGES.iter().enumerate() {
                let phone = &mut phones[v][0];
                let house = phone.capture(
                    conn,
                    EntityKind::House,
                    &[
                        ("village", (*village).to_owned()),
                        ("address", format!("海滨路{v}号")),
                        ("use", "rental".into()),
                        ("status", "in_use".into()),
                    ],
                );
                houses.push(house);
                records.push(house);
                for k in 0..4u64 {
                    // Synthetic numbers below 8,000 share a birth date: namesakes are pairs.
                    let n = 1 + 4 * v as u64 + k;
                    let (id_type, number, name) = match k {
                        1 => ("resident_id", synthetic::resident_id(n), "王芳".to_owned()),
                        2 => ("passport", format!("E9{n:07}"), synthetic::name(n)),
                        _ => ("resident_id", synthetic::resident_id(n), synthetic::name(n)),
                    };
                    let phone_number = format!("1380013{n:04}");
                    let id = phone.capture(
                        conn,
                        EntityKind::Person,
                        &[
                            ("village", (*village).to_owned()),
                            ("id_type", id_type.into()),
                            ("id_number", number.clone()),
                            ("name", name.clone()),
                            ("phone", phone_number.clone()),
                        ],
                    );
                    records.push(id);
                    persons.push(Person {
                        id,
                        number,
                        phone: phone_number,
                        name,
                    });
                }
            }
            for (v, village) in VILLAGES.iter().enumerate() {
                let first = persons[4 * v].id;
                let residence = |person: Uuid, house: Uuid, village: &str| {
                    vec![
                        ("village", village.to_owned()),
                        ("person", person.to_string()),
                        ("house", house.to_string()),
                        ("moved_in", "2025-01-01".to_owned()),
                        ("relation", "tenant".to_owned()),
                    ]
                };
                let home = phones[v][0].capture(
                    conn,
                    EntityKind::Residence,
                    &residence(first, houses[v], village),
                );
                // The previous village's fourth person moves in here.
                let from = (v + 2) % 3;
                let moved = persons[4 * from + 3].id;
                let arrived = phones[v][0].capture(
                    conn,
                    EntityKind::Residence,
                    &residence(moved, houses[v], village),
                );
                let car = phones[v][0].capture(
                    conn,
                    EntityKind::Vehicle,
                    &[
                        ("village", (*village).to_owned()),
                        ("plate", synthetic::plate(v as u64)),
                        ("vehicle_type", "car".into()),
                        ("owner", first.to_string()),
                    ],
                );
                records.extend([home, arrived, car]);
            }
            // Conflicts: each officer's second phone writes another number, later.
            for (v, pair) in phones.iter_mut().enumerate() {
                for k in [0, 3] {
                    let phone = json!(format!("1390013{:04}", 4 * v + k));
                    let fields = [("phone".to_owned(), phone)];
                    pair[1].push(conn, EntityKind::Person, persons[4 * v + k].id, &fields, 5);
                }
            }
            for k in [0, 1, 3] {
                for v in 0..3 {
                    let rule =
                        baylink_domain::watch::Rule::id_number(&persons[4 * v + k].number).unwrap();
                    alerts::add_rule(conn, admin, &rule, "关注", now_ms())?;
                }
            }
            Ok((persons, records, phones))
        })
        .unwrap();
    let console = Console {
        state,
        db,
        _dir: dir,
    };
    let sessions = REVIEWERS
        .iter()
        .map(|(name, _)| {
            runtime.block_on(async {
                let cookie = console.sign_in(name).await;
                let page = console.get("/console/", &cookie).await;
                (cookie, csrf(&page.body))
            })
        })
        .collect();
    World {
        console,
        runtime,
        persons,
        records,
        sessions,
        phones: std::cell::RefCell::new(phones),
    }
}

/// What the server holds, as far as the invariant reads it.
struct Held {
    snapshot: Snapshot,
    /// Alerts by id: record, rule kind, rule value, whether closed.
    alerts: BTreeMap<i64, (String, String, String, bool)>,
    /// Conflicts by id: record, whether settled.
    conflicts: BTreeMap<i64, (String, bool)>,
    dismissed: BTreeSet<(String, String)>,
    /// What only administrators change: accounts and whether disabled, devices and whether
    /// revoked, the watch list.
    administered: Vec<String>,
}

impl World {
    fn held(&self) -> Held {
        let snapshot = self
            .runtime
            .block_on(self.console.state.store.snapshot())
            .unwrap();
        let (alerts, conflicts, dismissed, administered) = self
            .console
            .db
            .call_blocking(|c| {
                let alerts = c
                    .prepare(
                        "SELECT id, entity, rule_kind, rule_value, acknowledged_ms FROM alert",
                    )?
                    .query_map((), |r| {
                        let closed: Option<i64> = r.get(4)?;
                        Ok((
                            r.get(0)?,
                            (r.get(1)?, r.get(2)?, r.get(3)?, closed.is_some()),
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
                let conflicts = c
                    .prepare("SELECT id, entity, settled_ms FROM conflict")?
                    .query_map((), |r| {
                        let settled: Option<i64> = r.get(2)?;
                        Ok((r.get(0)?, (r.get(1)?, settled.is_some())))
                    })?
                    .collect::<Result<_, _>>()?;
                let dismissed = c
                    .prepare("SELECT a, b FROM duplicate_dismissal")?
                    .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let mut administered = Vec::new();
                for sql in [
                    "SELECT username || ' ' || disabled || ' ' || role FROM account ORDER BY id",
                    "SELECT id || ' ' || revoked FROM device ORDER BY id",
                    "SELECT kind || ' ' || value FROM watch_rule ORDER BY id",
                    "SELECT account || ' ' || village FROM account_village ORDER BY 1",
                ] {
                    let rows: Vec<String> = c
                        .prepare(sql)?
                        .query_map((), |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    administered.extend(rows);
                }
                Ok((alerts, conflicts, dismissed, administered))
            })
            .unwrap();
        Held {
            snapshot,
            alerts,
            conflicts,
            dismissed,
            administered,
        }
    }
}

impl Held {
    /// A record's home village.
    fn home(&self, id: &str) -> Option<&str> {
        let id = Uuid::parse_str(id).ok()?;
        self.snapshot.entities.get(&id)?.village.as_deref()
    }

    /// Everything the invariant compares of one record.
    fn record(&self, id: Uuid) -> String {
        let s = &self.snapshot;
        let values: Vec<_> = s
            .values
            .range((id, String::new())..)
            .take_while(|((e, _), _)| *e == id)
            .collect();
        format!(
            "{:?} {values:?} {:?} {:?}",
            s.entities.get(&id),
            s.summaries.get(&id),
            s.open_conflicts.get(&id)
        )
    }

    /// Whether a reviewer of `station` sees the record: it lies in one of her villages.
    fn visible(&self, station: &str, id: Uuid) -> bool {
        self.snapshot
            .scopes
            .range((id, String::new())..)
            .take_while(|(e, _)| *e == id)
            .any(|(_, v)| v.starts_with(station))
    }

    fn audited(&self, account: i64, action: &str) -> usize {
        self.snapshot
            .audit
            .iter()
            .filter(|a| a.account == Some(account) && a.action == action)
            .count()
    }
}

/// One action of a reviewer; indexes pick from the world's records, persons, conflicts and
/// alerts (one past the end: an id that names nothing).
#[derive(Clone, Debug)]
enum Action {
    Merge(usize, usize),
    Dismiss(usize, usize),
    /// A decision (approve or return) with the list it claims to work through: none, her
    /// persons, another station's village, a search by a person's whole number.
    Review(usize, bool, u8, usize),
    Settle(usize, bool),
    Acknowledge(usize),
    /// A search: the text's source (0 a number, 1 a phone, 2 a name, 3 digits), its person, how
    /// much of it, and whether spaced and in lower case.
    Search(u8, usize, usize, bool),
    Export(usize, usize),
    Page(usize, u8),
    /// An administrator's page or form: users, devices, the audit log, the watch list; adding
    /// an account, disabling one, giving it villages, revoking a device, adding or removing a
    /// watch rule.
    Admin(u8, usize),
    /// The list filtered: kind, village, review status (indexes into a few of each).
    Filtered(u8, u8, u8),
    /// Not the reviewer's: an officer's phone (village, person of it, which phone) writes a
    /// new phone number the other phone has not seen, a conflict to settle.
    Officer(usize, usize, usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..13usize, 0..13usize).prop_map(|(a, b)| Action::Merge(a, b)),
        (0..13usize, 0..13usize).prop_map(|(a, b)| Action::Dismiss(a, b)),
        (0..25usize, any::<bool>(), 0..4u8, 0..12usize)
            .prop_map(|(r, approve, queue, p)| Action::Review(r, approve, queue, p)),
        (0..8usize, any::<bool>()).prop_map(|(c, kept)| Action::Settle(c, kept)),
        (0..20usize).prop_map(Action::Acknowledge),
        (0..4u8, 0..12usize, 1..19usize, any::<bool>())
            .prop_map(|(s, p, n, odd)| Action::Search(s, p, n, odd)),
        (0..12usize, 1..19usize).prop_map(|(p, n)| Action::Export(p, n)),
        (0..25usize, 0..11u8).prop_map(|(r, page)| Action::Page(r, page)),
        (0..10u8, 0..8usize).prop_map(|(route, n)| Action::Admin(route, n)),
        (0..4u8, 0..4u8, 0..4u8).prop_map(|(k, v, st)| Action::Filtered(k, v, st)),
        (0..3usize, 0..4usize, 0..2usize).prop_map(|(v, k, n)| Action::Officer(v, k, n)),
    ]
}

/// The `n`th id still open, else the `n`th of all (closed: refused), else one naming nothing.
fn nth_open(ids: impl Iterator<Item = (i64, bool)> + Clone, n: usize) -> i64 {
    let open = ids.clone().filter(|(_, closed)| !closed).map(|(id, _)| id);
    let open: Vec<i64> = open.collect();
    let all: Vec<i64> = ids.map(|(id, _)| id).collect();
    open.get(n)
        .or_else(|| all.get(n - open.len().min(n)))
        .copied()
        .unwrap_or(9_999)
}

/// The record a page's address names beside the one it opens (`?reviewed=`, `?merged=`): any
/// of the world's, or one naming nothing.
fn second(r: usize) -> usize {
    (r * 7 + 3) % 26
}

/// The list a decision claims to work through, as the record page's form would carry it.
fn queue(world: &World, which: u8, p: usize, station: &str, held: &Held) -> String {
    match which {
        0 => String::new(),
        1 => "kind=person&status=pending".into(),
        2 => {
            let elsewhere = held
                .snapshot
                .entities
                .values()
                .filter_map(|e| e.village.clone())
                .find(|v| !v.starts_with(station))
                .unwrap_or_default();
            format!("village={elsewhere}&status=pending")
        }
        _ => format!("q={}", world.persons[p].number),
    }
}

/// Every byte but letters and digits as `%XX`.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What one action did: the text typed (a search's or an export's), the records a reveal showed,
/// and the page answered.
struct Done {
    typed: Option<String>,
    revealed: Vec<Uuid>,
    export: bool,
    status: StatusCode,
    body: String,
    /// Where a form's answer sent her.
    location: Option<String>,
}

impl World {
    fn act(&self, who: usize, action: &Action, forged: u8, held: &Held) -> Done {
        let (cookie, own) = &self.sessions[who];
        // Another reviewer's token, or none of the server's: a cross-site post.
        let token = match forged {
            0 => &self.sessions[(who + 1) % self.sessions.len()].1,
            1 => &"0".repeat(own.len()),
            _ => own,
        };
        let person = |i: usize| {
            self.persons
                .get(i)
                .map_or_else(|| Uuid::from_u128(0xDEAD), |p| p.id)
        };
        let record = |i: usize| {
            self.records
                .get(i)
                .copied()
                .unwrap_or_else(|| Uuid::from_u128(0xDEAD))
        };
        let mut done = Done {
            typed: None,
            revealed: Vec::new(),
            export: false,
            status: StatusCode::OK,
            body: String::new(),
            location: None,
        };
        let post = |path: String, form: String| {
            self.runtime.block_on(self.console.request(
                "POST",
                &path,
                Some(cookie),
                Some(&format!("csrf={token}&{form}")),
            ))
        };
        let get = |path: String| self.runtime.block_on(self.console.get(&path, cookie));
        let page = match *action {
            Action::Merge(a, b) => post(
                "/console/duplicates/merge".into(),
                format!("from={}&into={}", person(a), person(b)),
            ),
            Action::Dismiss(a, b) => post(
                "/console/duplicates/dismiss".into(),
                format!("a={}&b={}", person(a), person(b)),
            ),
            Action::Review(r, approve, which, p) => post(
                format!("/console/records/{}/review", record(r)),
                format!(
                    "decision={}&comment={}&queue={}",
                    if approve { "approve" } else { "return" },
                    encode("地址不全"),
                    encode(&queue(self, which, p, REVIEWERS[who].1, held))
                ),
            ),
            Action::Settle(c, kept) => {
                let id = nth_open(held.conflicts.iter().map(|(id, c)| (*id, c.1)), c);
                post(
                    format!("/console/conflicts/{id}/settle"),
                    format!("choose={}", if kept { "kept" } else { "lost" }),
                )
            }
            Action::Acknowledge(a) => {
                let id = nth_open(held.alerts.iter().map(|(id, a)| (*id, a.3)), a);
                post(format!("/console/alerts/{id}/acknowledge"), String::new())
            }
            Action::Search(source, p, n, odd) => {
                let person = &self.persons[p];
                let mut text: String = match source {
                    0 => person.number.chars().take(n).collect(),
                    1 => person.phone.chars().take(n).collect(),
                    2 => person.name.chars().take(n).collect(),
                    _ => person.phone.chars().rev().take(n).collect(),
                };
                if odd {
                    text = text.to_lowercase();
                    let middle = text.char_indices().nth(text.chars().count() / 2);
                    if let Some((at, _)) = middle {
                        text.insert(at, ' ');
                    }
                }
                let page = get(format!("/console/records?q={}", encode(&text)));
                done.typed = Some(text);
                page
            }
            Action::Export(p, n) => {
                let text: String = self.persons[p].number.chars().take(n).collect();
                let page = get(format!(
                    "/console/export?format=csv&kind=person&q={}",
                    encode(&text)
                ));
                done.typed = Some(text);
                done.export = true;
                page
            }
            Action::Page(r, which) => get(match which {
                0 => format!("/console/records/{}", record(r)),
                1 => {
                    done.revealed = vec![record(r)];
                    format!("/console/records/{}?reveal=1", record(r))
                }
                // A duplicate pair's page naming any two records, masked or revealed.
                9 => format!(
                    "/console/duplicates/pair?a={}&b={}",
                    record(r),
                    record(second(r))
                ),
                10 => {
                    done.revealed = vec![record(r), record(second(r))];
                    format!(
                        "/console/duplicates/pair?a={}&b={}&reveal=1",
                        record(r),
                        record(second(r))
                    )
                }
                2 => "/console/duplicates".into(),
                3 => "/console/alerts".into(),
                4 => "/console/conflicts".into(),
                5 => "/console/alerts?all=1".into(),
                // Addresses saying a decision or a merge led here, naming any record.
                7 => format!(
                    "/console/records/{}?reviewed={}",
                    record(r),
                    record(second(r))
                ),
                8 => format!(
                    "/console/records/{}?merged={}",
                    record(r),
                    record(second(r))
                ),
                _ => "/console/".into(),
            }),
            Action::Admin(route, n) => {
                let account = ["o0", "o1", "o2", "r006", "r007", "admin"][n % 6];
                let device = Uuid::from_u128(0x100 + (n % 6) as u128);
                match route {
                    0 => get("/console/admin/users".into()),
                    1 => get("/console/admin/devices".into()),
                    2 => get("/console/admin/audit".into()),
                    3 => get("/console/admin/watch".into()),
                    4 => post(
                        "/console/admin/users".into(),
                        format!(
                            "username=mole{n}&display_name=m&role=admin&station=&villages=&password={}",
                            super::PASSWORD
                        ),
                    ),
                    5 => post(
                        format!("/console/admin/users/{account}/disable"),
                        String::new(),
                    ),
                    6 => post(
                        format!("/console/admin/users/{account}/villages"),
                        format!("villages={}", VILLAGES[n % 3]),
                    ),
                    7 => post(
                        format!("/console/admin/devices/{device}/revoke"),
                        String::new(),
                    ),
                    8 => post(
                        "/console/admin/watch".into(),
                        format!("kind=id_number&value={}", self.persons[n].number),
                    ),
                    _ => post(format!("/console/admin/watch/{n}/remove"), String::new()),
                }
            }
            Action::Filtered(kind, village, status) => {
                let mut query = vec![];
                if let Some(kind) = ["person", "house", "vehicle"].get(kind as usize) {
                    query.push(format!("kind={kind}"));
                }
                if let Some(village) = VILLAGES.get(village as usize) {
                    query.push(format!("village={village}"));
                }
                if let Some(status) = ["pending", "approved", "returned"].get(status as usize) {
                    query.push(format!("status={status}"));
                }
                get(format!("/console/records?{}", query.join("&")))
            }
            Action::Officer(v, k, n) => {
                let id = self.persons[4 * v + k].id;
                let mut phones = self.phones.borrow_mut();
                let phone = &mut phones[v][n];
                let number = format!("137{v}{n}{:06}", phone.counter);
                self.console
                    .db
                    .call_blocking(|conn| {
                        let fields = [("phone".to_owned(), json!(number))];
                        Ok(phone.send(conn, EntityKind::Person, id, &fields, 0))
                    })
                    .unwrap();
                return done;
            }
        };
        done.status = page.status;
        done.body = page.body;
        done.location = page.location;
        done
    }
}

/// Every ID number and phone a record holds or held, by record: what a page may show whole only
/// where the actor may read it whole.
fn numbers(held: &[&Held]) -> BTreeMap<String, (BTreeSet<Uuid>, bool)> {
    let mut numbers = BTreeMap::new();
    for held in held {
        for ((entity, field), stored) in &held.snapshot.values {
            let phone = field.ends_with("phone");
            if let (true, Some(text)) =
                (phone || field.ends_with("id_number"), stored.value.as_str())
            {
                numbers
                    .entry(text.to_owned())
                    .or_insert((BTreeSet::new(), phone))
                    .0
                    .insert(*entity);
            }
        }
        for written in &held.snapshot.history {
            let phone = written.field.ends_with("phone");
            if let (true, Some(text)) = (
                phone || written.field.ends_with("id_number"),
                written.value.as_str(),
            ) {
                numbers
                    .entry(text.to_owned())
                    .or_insert((BTreeSet::new(), phone))
                    .0
                    .insert(written.entity);
            }
        }
    }
    numbers
}

/// Whether an action posts a form (a write, refused without the session's own CSRF token).
fn posts(action: &Action) -> bool {
    match action {
        Action::Merge(..)
        | Action::Dismiss(..)
        | Action::Review(..)
        | Action::Settle(..)
        | Action::Acknowledge(..) => true,
        Action::Admin(route, _) => *route >= 4,
        _ => false,
    }
}

/// The invariant after one action of reviewer `who` (`forged`: the form's token was not her
/// session's).
fn holds(
    world: &World,
    (who, forged): (usize, bool),
    action: &Action,
    done: &Done,
    before: &Held,
    after: &Held,
) -> Result<(), TestCaseError> {
    let (_, station) = REVIEWERS[who];
    let mine = |home: Option<&str>| home.is_some_and(|v| v.starts_with(station));
    // A form posted with another's token, or none of the server's: refused, nothing written.
    if forged && posts(action) {
        prop_assert_eq!(
            done.status,
            StatusCode::FORBIDDEN,
            "{:?} with a forged token",
            action
        );
        for id in before.snapshot.entities.keys() {
            prop_assert_eq!(
                before.record(*id),
                after.record(*id),
                "{:?} forged wrote",
                action
            );
        }
        prop_assert_eq!(&before.alerts, &after.alerts);
        prop_assert_eq!(&before.conflicts, &after.conflicts);
        prop_assert_eq!(&before.dismissed, &after.dismissed);
    }
    // An administrator's pages and forms: refused to a reviewer, nothing of theirs changed.
    if matches!(action, Action::Admin(..)) {
        prop_assert!(
            matches!(done.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
            "{:?} answered {}",
            action,
            done.status
        );
    }
    prop_assert_eq!(&before.administered, &after.administered, "{:?}", action);
    // Writes: nothing outside her villages.
    for (id, entity) in &before.snapshot.entities {
        if !mine(entity.village.as_deref()) {
            prop_assert_eq!(
                before.record(*id),
                after.record(*id),
                "{:?} changed another station's record {}",
                action,
                id
            );
        }
    }
    prop_assert_eq!(
        before.snapshot.entities.keys().collect::<Vec<_>>(),
        after.snapshot.entities.keys().collect::<Vec<_>>()
    );
    // An alert closed, changed or gone: hers to close (a move-in notice the receiving
    // station's).
    let ids: BTreeSet<&i64> = before.alerts.keys().chain(after.alerts.keys()).collect();
    for id in ids {
        let (was, is) = (before.alerts.get(id), after.alerts.get(id));
        if was == is {
            continue;
        }
        let (entity, kind, value, _) = was.or(is).unwrap();
        let hers = if kind == "moved_in" {
            value.starts_with(station)
        } else {
            mine(before.home(entity))
        };
        prop_assert!(
            hers,
            "{:?} changed alert {} ({}) of {}: {:?} → {:?}",
            action,
            id,
            kind,
            entity,
            was,
            is
        );
    }
    for (id, (entity, settled)) in &after.conflicts {
        if *settled && !before.conflicts.get(id).is_some_and(|c| c.1) {
            prop_assert!(
                mine(before.home(entity)),
                "{:?} settled conflict {}",
                action,
                id
            );
        }
    }
    for (a, b) in after.dismissed.symmetric_difference(&before.dismissed) {
        prop_assert!(
            mine(before.home(a)) && mine(before.home(b)),
            "{:?} dismissed or restored {} and {}",
            action,
            a,
            b
        );
    }
    // A record she may not see answers as one that does not exist.
    let target = match *action {
        Action::Review(r, ..) | Action::Page(r, 0 | 1 | 7 | 8) => world.records.get(r),
        _ => None,
    };
    if let Some(id) = target
        && !forged
        && !before.visible(station, *id)
    {
        prop_assert_eq!(
            done.status,
            StatusCode::NOT_FOUND,
            "{:?} of an unseen record",
            action
        );
    }
    // A pair naming a record she may not see answers as one that does not exist, whichever side.
    if let (Action::Page(r, 9 | 10), false) = (action, forged) {
        let unseen = [*r, second(*r)]
            .iter()
            .filter_map(|i| world.records.get(*i))
            .any(|id| !before.visible(station, *id));
        if unseen {
            prop_assert_eq!(done.status, StatusCode::NOT_FOUND, "{:?}", action);
        }
    }
    // Audits: a search past a mask, a reveal, an export.
    let account = world
        .console
        .db
        .call_blocking(|c| accounts::account_by_username(c, REVIEWERS[who].0))
        .unwrap()
        .unwrap()
        .id;
    let more = |action: &str| after.audited(account, action) > before.audited(account, action);
    let numbers = numbers(&[before, after]);
    if let (Some(typed), false) = (&done.typed, done.export) {
        let compact: String = typed
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_uppercase();
        let past: Vec<Uuid> = numbers
            .iter()
            .filter(|(number, (_, phone))| {
                let shown = match (phone, number.len() >= 10) {
                    (true, _) => 3,
                    (false, true) => 6,
                    (false, false) => 0,
                };
                number.starts_with(&compact) && compact.len() > shown
            })
            .flat_map(|(_, (entities, _))| entities.iter().copied())
            .collect();
        // One character is not looked up as a number: it reads nothing hidden, and finds no
        // one by a number (a listed namesake found by her name aside).
        if compact.chars().count() >= 2 && !past.is_empty() {
            prop_assert!(
                more("search_hidden"),
                "{:?} ({}) not audited",
                action,
                typed
            );
        }
        if !more("search_hidden") {
            for p in world.persons.iter().filter(|p| past.contains(&p.id)) {
                let by_name = world
                    .persons
                    .iter()
                    .any(|q| q.name == p.name && q.name.starts_with(&compact));
                prop_assert!(
                    by_name || !done.body.contains(&p.name),
                    "{:?} ({}) found {} by a number unaudited",
                    action,
                    typed,
                    p.name
                );
            }
        }
    }
    // A decision leads on to the first record waiting in the list it named, as the list itself
    // shows it (inside her villages, its search text aside: no one is found by a number
    // unaudited), below where the decided one stood (its sequence number before), else the
    // first from the top, else back to the record decided.
    if let (Action::Review(r, _, which, p), StatusCode::SEE_OTHER, false) =
        (action, done.status, forged)
    {
        let decided = world.records[*r];
        let to = done.location.as_deref().unwrap_or_default();
        let next = to
            .strip_prefix("/console/records/")
            .and_then(|rest| rest.split('?').next())
            .and_then(|id| Uuid::parse_str(id).ok());
        let slice = match queue(world, *which, *p, station, before) {
            q if q.is_empty() || q.starts_with("q=") => "status=pending".to_owned(),
            q => q,
        };
        let list = world.runtime.block_on(
            world
                .console
                .get(&format!("/console/records?{slice}"), &world.sessions[who].0),
        );
        prop_assert_eq!(list.status, StatusCode::OK);
        // The world's lists fit on one page: what is below is all on it.
        prop_assert!(!list.body.contains("下一页"), "a list longer than a page");
        let place = before.snapshot.entities.get(&decided).map(|e| e.seq);
        let seq = |id: &Uuid| after.snapshot.entities.get(id).map(|e| e.seq);
        let waiting: Vec<Uuid> = listed(&list.body)
            .into_iter()
            .filter_map(|id| Uuid::parse_str(&id).ok())
            .filter(|id| *id != decided)
            .collect();
        let first = waiting
            .iter()
            .find(|id| place.zip(seq(id)).is_some_and(|(place, s)| s < place))
            .or(waiting.first())
            .copied()
            .unwrap_or(decided);
        prop_assert_eq!(next, Some(first), "{:?} led to {}", action, to);
        prop_assert!(!more("search_hidden"), "{:?} searched", action);
    }
    // A page's word that a decision or a merge led to it: only as the server holds it.
    if let (Action::Page(r, 7 | 8), StatusCode::OK) = (action, done.status) {
        let (here, other) = (world.records[*r], world.records.get(second(*r)).copied());
        let value = |id: Uuid, field: &str| {
            after
                .snapshot
                .values
                .get(&(id, field.to_owned()))
                .map(|s| s.value.clone())
        };
        if done.body.contains("审核结果已保存") {
            let other = other.expect("a record named");
            prop_assert!(after.visible(station, other), "{:?}", action);
            prop_assert!(
                value(other, "review_status") != Some(serde_json::json!("pending")),
                "{:?} said a waiting record was decided",
                action
            );
        }
        if done.body.contains("已将重复记录") {
            let other = other.expect("a record named");
            prop_assert_eq!(
                value(other, "merged_into"),
                Some(serde_json::json!(here.to_string())),
                "{:?} said a merge that was not",
                action
            );
        }
    }
    if done.status == StatusCode::OK {
        if !done.revealed.is_empty() {
            prop_assert!(more("reveal_id_number"), "{:?} not audited", action);
        }
        if done.export {
            prop_assert!(more("export"), "{:?} not audited", action);
        }
    }
    // Reads: no number in full but what she may read in full, no name of a person unseen.
    let seen: BTreeSet<&str> = world
        .persons
        .iter()
        .filter(|p| after.visible(station, p.id))
        .map(|p| p.name.as_str())
        .collect();
    let body = done.body.to_uppercase();
    for (number, (entities, _)) in &numbers {
        let whole = entities.iter().any(|entity| {
            done.revealed.contains(entity) || (done.export && after.visible(station, *entity))
        });
        let typed = done
            .typed
            .as_ref()
            .is_some_and(|t| t.to_uppercase().contains(number.as_str()));
        prop_assert!(
            whole || typed || !body.contains(number.as_str()),
            "{:?} showed {} whole",
            action,
            number
        );
    }
    for p in &world.persons {
        let typed = done.typed.as_ref().is_some_and(|t| t.contains(&p.name));
        if !seen.contains(p.name.as_str()) && !typed {
            prop_assert!(
                !done.body.contains(&p.name),
                "{:?} showed {}, a person not seen",
                action,
                p.name
            );
        }
    }
    Ok(())
}

#[test]
fn a_hostile_reviewer_changes_nothing_of_another_station_and_reads_nothing_unaudited() {
    hostile_reviewer(None, 500);
}

/// The same reviewers against the server on PostgreSQL.
#[test]
fn a_hostile_reviewer_on_postgres_changes_nothing_of_another_station_either() {
    let Some(cluster) = baylink_server::store::pg::test_postgres() else {
        return;
    };
    let fresh = baylink_server::store::pg::FreshDatabase::new(&cluster).unwrap();
    hostile_reviewer(Some(fresh.url.clone()), 400);
}

/// Random cases of random reviewers' actions, each action followed by the invariant; then
/// that the cases reached both sides of every write.
fn hostile_reviewer(database: Option<String>, default_cases: u32) {
    let world = world(database);
    let before = world.held();
    let moved_in = before.alerts.values().filter(|a| a.1 == "moved_in").count();
    assert_eq!(moved_in, 3, "a notice for each person who moved in");
    assert_eq!(before.conflicts.len(), 6, "{:?}", before.conflicts);
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // The world persists across cases: one sequence every run, every failing case printed.
    let rng = proptest::test_runner::TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
    let tally = std::cell::RefCell::new(BTreeMap::<(&'static str, u16), usize>::new());
    let strategy = proptest::collection::vec((0..REVIEWERS.len(), action(), 0..8u8), 1..5);
    let result = runner.run(&strategy, |steps| {
        for (who, action, token) in &steps {
            let before = world.held();
            let done = world.act(*who, action, *token, &before);
            if matches!(action, Action::Officer(..)) {
                continue;
            }
            let after = world.held();
            let forged = *token < 2;
            holds(&world, (*who, forged), action, &done, &before, &after)
                .inspect_err(|e| eprintln!("failing case {steps:?}: {e}"))?;
            let name = format!("{action:?}");
            let name: &'static str = match (forged && posts(action), name.as_str()) {
                (true, _) => "forged",
                (_, n) if n.starts_with("Admin") => "Admin",
                (_, n) => ["Merge", "Dismiss", "Review", "Settle", "Acknowledge"]
                    .into_iter()
                    .find(|w| n.starts_with(w))
                    .unwrap_or("read"),
            };
            *tally
                .borrow_mut()
                .entry((name, done.status.as_u16()))
                .or_default() += 1;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner();
    eprintln!("{cases} cases: {tally:?}");
    // Every write was both done (a redirect) and refused (forbidden) along the way.
    for name in ["Merge", "Dismiss", "Review", "Settle", "Acknowledge"] {
        for status in [303, 403] {
            assert!(
                tally.get(&(name, status)).is_some_and(|n| *n > 0),
                "{name} never answered {status}: {tally:?}"
            );
        }
    }
}
