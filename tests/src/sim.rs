//! Deterministic sync simulation: the server's store and a few officers' phones in one process,
//! driven by a schedule drawn from a seed — captures, edits, deletes, people moving between
//! villages, villages given and taken, reviewers' decisions, syncs — while the network loses,
//! duplicates, delays and reorders requests and answers, phones crash mid-sync (what they had
//! received but not committed is lost), the server restarts, and phone clocks run hours or days
//! wrong. After every schedule the network heals, every phone syncs, and the invariants are
//! checked: each phone holds exactly the server's state for its villages; every change the server
//! acknowledged is in the server's history once and still stands or was overwritten by a newer
//! one; nothing was applied twice; every refusal left can be dismissed, after which each phone
//! holds the server's state exactly; every record on the server is whole. Officers also capture in
//! villages not theirs, correct or dismiss refusals, edit ID numbers onto others' and swap phones.
//! The same seed replays the same schedule exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baylink_domain::{EntityKind, Input, synthetic};
use baylink_server::store::Db;
use baylink_server::store::accounts::{self, NewAccount, Role};
use baylink_server::store::audit::Actor;
use baylink_server::store::caller::Caller;
use baylink_server::store::conn::SqlError;
use baylink_server::store::devices;
use baylink_server::store::review::Verdict;
use baylink_sync::wire::{ChangeStatus, PullResponse, PushResponse};
use baylink_sync::{Change, EntityState, ManualClock, NodeId, Stamp, Versioned};
use mobile_core::sync::{Transport, sync_with};
use mobile_core::{Error, Store};
use uuid::Uuid;

/// Two villages of one station, so that people and officers can move between them.
const VILLAGES: [&str; 2] = ["441303006001", "441303006002"];
/// 2026-11-28T04:00:00Z: the simulated world's start.
const START_MS: u64 = 1_795_838_400_000;
/// The server's limit for stamps ahead of its clock (the default of `serve`).
const MAX_AHEAD_MS: u64 = 5 * 60 * 1000;
/// Distinct persons the schedule draws from: small, so that officers often meet the same people.
const PERSONS: u64 = 10;
/// Distinct houses per village.
const HOUSES: u64 = 3;
/// A phone unseen for longer does not hold a compaction back, and starts over at its next sync.
const COMPACT_IDLE_MS: u64 = 30 * 60_000;

/// splitmix64: a tiny, fast, well-mixed generator; the seed fixes everything.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What happened over the schedules run, for the reliability report.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Schedules run.
    pub schedules: u64,
    /// Steps (operations) run.
    pub steps: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Changes the server acknowledged to a phone.
    pub acknowledged: u64,
    /// Changes that reached the server (history rows from phones).
    pub applied: u64,
    /// Syncs attempted, the final rounds on a healed network included.
    pub syncs: u64,
    /// Changes restamped after the server found them stamped ahead (clock skew).
    pub restamped: u64,
    /// Acknowledged changes missing from the server at the end (must be 0).
    pub lost: u64,
}

impl Stats {
    /// Adds another run's figures.
    pub fn add(&mut self, other: &Stats) {
        self.schedules += other.schedules;
        self.steps += other.steps;
        for (k, v) in &other.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.acknowledged += other.acknowledged;
        self.applied += other.applied;
        self.syncs += other.syncs;
        self.restamped += other.restamped;
        self.lost += other.lost;
    }

    fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }
}

/// One change the server acknowledged as accepted to the phone that pushed it.
#[derive(Clone, Debug)]
struct Ack {
    entity: Uuid,
    field: String,
    stamp: Stamp,
}

/// The server: its database file, reopened on restart, and its clock.
struct Server {
    path: PathBuf,
    /// The PostgreSQL database it keeps its data in, when the schedule runs there.
    postgres: Option<crate::harness::Postgres>,
    db: Db,
    now: u64,
}

impl Server {
    /// The server's database opened (again): the SQLite file, or the PostgreSQL database.
    fn open(path: &Path, postgres: Option<&crate::harness::Postgres>) -> Db {
        match postgres {
            Some(pg) => Db::open_postgres(&pg.url).expect("server database"),
            None => Db::open(path).expect("server database"),
        }
    }
}

impl Server {
    fn caller(&self, username: &str, device: NodeId) -> Caller {
        self.db
            .call_blocking(|c| {
                let account = accounts::account_by_username(c, username)?.ok_or_else(|| {
                    baylink_server::store::error::StoreError::NotFound(username.into())
                })?;
                Ok(Caller {
                    account: account.id,
                    role: account.role,
                    device: device.to_string(),
                    villages: accounts::villages_of(c, &account)?,
                })
            })
            .expect("caller")
    }
}

/// One officer's phone.
struct Phone {
    officer: &'static str,
    path: PathBuf,
    node: NodeId,
    clock: Arc<ManualClock>,
    /// How far the phone's clock is off, in milliseconds.
    skew: i64,
    store: Store,
    partitioned: bool,
}

impl Phone {
    fn open(path: &Path, node: NodeId, clock: &Arc<ManualClock>, officer: &str) -> Store {
        let mut store = Store::open_as(path, node)
            .expect("phone store opens")
            .with_clock(clock.clone());
        store.set_user(officer).expect("user");
        store
    }

    fn set_time(&self, server_now: u64) {
        self.clock
            .set(server_now.saturating_add_signed(self.skew).max(1));
    }
}

/// A push that the network held back, delivered later (its answer lost).
struct Delayed {
    phone: usize,
    changes: Vec<Change>,
}

/// An answer that arrives a second time, late (a duplicate the network held back).
enum Echo {
    Push(usize, Vec<baylink_sync::wire::ChangeResult>),
    /// A pull answer, with the cursor it answered.
    Pull(usize, PullResponse, Option<String>),
}

/// The network between one phone and the server, with the schedule's faults.
struct Link<'a> {
    server: &'a mut Server,
    rng: &'a mut Rng,
    stats: &'a mut Stats,
    acks: &'a mut Vec<Ack>,
    delayed: &'a mut Vec<Delayed>,
    /// Answers the phone already had, kept to arrive again later, out of order.
    echoes: &'a mut Vec<Echo>,
    phone: usize,
    officer: &'static str,
    clock: Arc<ManualClock>,
    faults: bool,
    partitioned: bool,
    crashed: bool,
    /// A push sent ahead while the phone settled the one before: its counters and answer.
    ahead: Option<(Vec<u64>, mobile_core::Result<PushResponse>)>,
    /// A push made ready while the one before was on its way, to go once it is answered.
    ready: Option<(baylink_sync::NodeId, Vec<Change>)>,
    /// The most changes one push carries: a few, so that a sync pushes several batches.
    push_limit: usize,
}

impl Link<'_> {
    /// Whether the request is lost on the way (or the phone has no signal).
    fn request_lost(&mut self) -> bool {
        if self.partitioned {
            self.stats.fault("partitioned request");
            return true;
        }
        if self.faults && self.rng.chance(8) {
            self.stats.fault("request lost");
            return true;
        }
        false
    }

    /// What happens to an answer the server sent: delivered, lost, or the phone crashed.
    fn deliver<T>(&mut self, answer: T) -> mobile_core::Result<T> {
        if self.faults && self.rng.chance(8) {
            self.stats.fault("answer lost");
            return Err(Error::Network("answer lost".into()));
        }
        if self.faults && self.rng.chance(3) {
            self.stats.fault("phone crashed mid-sync");
            self.crashed = true;
            // Not retried: the sync stops here, as a dead phone's would.
            return Err(Error::Server {
                status: 499,
                code: "crash".into(),
                message: "the phone crashed".into(),
                retry_after: None,
            });
        }
        Ok(answer)
    }
}

impl Link<'_> {
    /// A push as it reaches the in-process server, with the faults of the way.
    fn send_push(
        &mut self,
        node: baylink_sync::NodeId,
        changes: &[Change],
    ) -> mobile_core::Result<PushResponse> {
        if self.request_lost() {
            return Err(Error::Network("request lost".into()));
        }
        let caller = self.server.caller(self.officer, node);
        if self.faults && self.rng.chance(5) {
            self.stats.fault("push delayed and reordered");
            self.delayed.push(Delayed {
                phone: self.phone,
                changes: changes.to_vec(),
            });
            return Err(Error::Network("request held back".into()));
        }
        let now = self.server.now;
        let owned = changes.to_vec();
        let mut results = self
            .server
            .db
            .call_blocking(|c| {
                baylink_server::store::push::push(c, &caller, &owned, now, MAX_AHEAD_MS)
            })
            .expect("push");
        if self.faults && self.rng.chance(5) {
            self.stats.fault("push duplicated");
            results = self
                .server
                .db
                .call_blocking(|c| {
                    baylink_server::store::push::push(c, &caller, &owned, now, MAX_AHEAD_MS)
                })
                .expect("push again");
        }
        let answer = PushResponse {
            server_time_ms: now,
            results,
            // A limit above the link's, or none (a server of before it said so): either way
            // the link's own keeps the pushes small.
            max_changes: self.rng.chance(50).then_some(self.push_limit as u32 * 4),
            extra: BTreeMap::new(),
        };
        let answer = self.deliver(answer)?;
        if self.faults && self.rng.chance(5) {
            self.echoes
                .push(Echo::Push(self.phone, answer.results.clone()));
        }
        for result in &answer.results {
            if result.status == ChangeStatus::Accepted
                && let Some(c) = changes.iter().find(|c| c.id.counter == result.counter)
            {
                self.acks.push(Ack {
                    entity: c.entity,
                    field: c.field.clone(),
                    stamp: c.stamp,
                });
            }
        }
        Ok(answer)
    }
}

impl Transport for Link<'_> {
    fn push(&mut self, store: &mut Store, changes: &[Change]) -> mobile_core::Result<PushResponse> {
        // The push sent ahead, if it is this one: its answer, or (lost) sent again, as HTTP's.
        if let Some((counters, answer)) = self.ahead.take()
            && counters
                .iter()
                .copied()
                .eq(changes.iter().map(|c| c.id.counter))
        {
            match answer {
                Ok(answer) => return Ok(answer),
                Err(e) if self.crashed => return Err(e),
                Err(_) => {}
            }
        }
        self.send_push(store.node_id(), changes)
    }

    fn push_ahead(&mut self, store: &Store, changes: &[Change]) {
        // Now and then the phone does not get to it, and pushes the batch the ordinary way.
        if self.ahead.is_some() || self.crashed || (self.faults && self.rng.chance(4)) {
            return;
        }
        self.stats.fault("push sent ahead");
        let counters = changes.iter().map(|c| c.id.counter).collect();
        let answer = self.send_push(store.node_id(), changes);
        self.ahead = Some((counters, answer));
    }

    fn ready_next(&mut self, store: &Store, changes: &[Change]) {
        // Made ready as HTTP's is, its changes as they were then; now and then not at all.
        let skipped = self.crashed || (self.faults && self.rng.chance(4));
        self.ready = (!skipped).then(|| (store.node_id(), changes.to_vec()));
    }

    fn send_ready(&mut self, _: &Store, changes: &[Change]) -> bool {
        let Some((node, ready)) = self.ready.take() else {
            return false;
        };
        if ready != changes || self.ahead.is_some() || self.crashed {
            return false;
        }
        self.stats
            .fault("push made ready, sent once the one before was answered");
        let counters = ready.iter().map(|c| c.id.counter).collect();
        let answer = self.send_push(node, &ready);
        self.ahead = Some((counters, answer));
        true
    }

    fn drop_ready(&mut self) {
        self.ready = None;
    }

    fn push_limit(&self) -> usize {
        self.push_limit
    }

    fn pull(
        &mut self,
        store: &mut Store,
        cursor: Option<String>,
        limit: u32,
    ) -> mobile_core::Result<PullResponse> {
        if self.request_lost() {
            return Err(Error::Network("request lost".into()));
        }
        let caller = self.server.caller(self.officer, store.node_id());
        // Small pages, so that paging and resuming mid-pull are exercised.
        let limit = limit.min(1 + self.rng.below(25) as u32);
        let cursor = cursor.map(baylink_sync::wire::Cursor);
        // A phone of this version says which of its own values it holds (the server sends none
        // of those back); one of an earlier version does not, and is sent everything.
        let own_held_after = if self.rng.chance(25) {
            None
        } else {
            Some(store.own_held_after()?)
        };
        // As the server pulls: the page read from a snapshot beside the writer, then the device's
        // bookkeeping in a transaction of its own.
        // On the simulated clock, as compactions and pushes are: when the phone last completed
        // a pull is what decides whether a compaction waits for it.
        let now = self.server.now;
        let read = self.server.db.read_blocking(|c| {
            let from = baylink_server::store::pull::parse_cursor(cursor.as_ref())?;
            let ask = baylink_server::store::pull::Ask {
                from,
                limit,
                own_held_after,
            };
            baylink_server::store::pull::read_page(c, &caller, ask, now)
        });
        let (page, settle) = match read {
            Err(baylink_server::store::StoreError::Expired(message)) => {
                self.stats.fault("pull: cursor expired by a compaction");
                return Err(Error::Server {
                    status: 410,
                    code: baylink_sync::wire::CURSOR_EXPIRED.to_owned(),
                    message,
                    retry_after: None,
                });
            }
            other => other.expect("pull"),
        };
        self.server
            .db
            .call_blocking(|c| baylink_server::store::pull::settle(c, &settle))
            .expect("pull bookkeeping");
        if let Ok(trace) = std::env::var("BAYLINK_SIM_TRACE") {
            let named = page.values.iter().any(|v| v.entity.to_string() == trace);
            let purged = page.purged.iter().any(|id| id.to_string() == trace);
            if named || purged {
                eprintln!(
                    "pull of phone {} from {:?}: values {named}, purged {purged}",
                    self.phone, cursor
                );
            }
        }
        let sent = PullResponse {
            server_time_ms: self.server.now,
            // Grouped by record, as a phone of this version is answered.
            values: Vec::new(),
            records: baylink_sync::wire::group(page.values),
            purged: page.purged,
            next_cursor: page.next,
            more: page.more,
            villages: Some(caller.villages),
            watch_hits: Vec::new(),
            extra: BTreeMap::new(),
        };
        // The server's stored JSON reaches the phone as text, which it parses.
        let text = serde_json::to_string(&sent).expect("page to JSON");
        let answer: PullResponse = serde_json::from_str(&text).expect("page from JSON");
        let answer = self.deliver(answer)?;
        if self.faults && self.rng.chance(5) {
            self.echoes
                .push(Echo::Pull(self.phone, answer.clone(), cursor.map(|c| c.0)));
        }
        Ok(answer)
    }

    fn now_ms(&self) -> u64 {
        baylink_sync::hlc::PhysicalClock::now_ms(self.clock.as_ref())
    }

    fn pause(&mut self, _: Duration) {
        // Simulated time: a retry waits no real time.
    }
}

fn input(pairs: &[(&str, String)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A simulated world for one schedule.
struct World {
    _dir: tempfile::TempDir,
    server: Server,
    phones: Vec<Phone>,
    rng: Rng,
    stats: Stats,
    acks: Vec<Ack>,
    delayed: Vec<Delayed>,
    echoes: Vec<Echo>,
    /// Villages of o3 (the one officer whose villages change): both, or the second only.
    o3_both: bool,
    /// The schedule's seed, and how many new installs (phones changing hands) it made.
    seed: u64,
    installs: u128,
    /// Tombstones and purge notes compactions removed.
    compacted: u64,
}

const OFFICERS: [&str; 3] = ["o1", "o2", "o3"];

impl World {
    fn new(seed: u64, postgres: Option<&str>) -> World {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("server.db");
        let postgres = postgres
            .map(|cluster| crate::harness::Postgres::new(cluster).expect("a fresh database"));
        let db = Server::open(&path, postgres.as_ref());
        db.call_blocking(|c| {
            // The server's node id stamps reviewers' writes: fixed, so that a seed replays exactly.
            let node = Uuid::from_u128((u128::from(seed) << 8) | 0xff).to_string();
            c.execute("UPDATE meta SET value = ?1 WHERE key = 'node'", [node])?;
            baylink_server::demo::seed_places(c)?;
            for (name, villages, role) in [
                ("o1", vec![VILLAGES[0]], Role::Officer),
                ("o2", vec![VILLAGES[0]], Role::Officer),
                ("o3", vec![VILLAGES[1]], Role::Officer),
                ("r006", vec![], Role::Reviewer),
            ] {
                let villages: Vec<String> = villages.into_iter().map(str::to_owned).collect();
                let new = NewAccount {
                    username: name.to_owned(),
                    display_name: name.to_owned(),
                    role,
                    station: Some("441303006".to_owned()),
                    // Nobody signs in: the simulation calls the store directly.
                    password_hash: "-".to_owned(),
                    villages,
                };
                accounts::create_account(c, Actor::Operator, &new, START_MS)?;
            }
            Ok(())
        })
        .expect("accounts");
        let mut rng = Rng::new(seed);
        let skews = [
            0,
            3 * 3_600_000,
            -2 * 86_400_000,
            2 * 86_400_000,
            -5 * 3_600_000,
            90_000,
        ];
        let mut phones = Vec::new();
        for (i, officer) in OFFICERS.into_iter().enumerate() {
            let node = NodeId(Uuid::from_u128((u128::from(seed) << 8) | (i as u128 + 1)));
            let skew = skews[rng.below(skews.len() as u64) as usize];
            let clock = Arc::new(ManualClock::new(START_MS));
            let path = dir.path().join(format!("phone{i}.db"));
            let store = Phone::open(&path, node, &clock, officer);
            let account = db
                .call_blocking(|c| {
                    Ok(accounts::account_by_username(c, officer)?
                        .map(|a| a.id)
                        .unwrap_or_default())
                })
                .expect("account");
            db.call_blocking(|c| {
                devices::register_device(c, &node.to_string(), account, "sim", START_MS)
            })
            .expect("device");
            let phone = Phone {
                officer,
                path,
                node,
                clock,
                skew,
                store,
                partitioned: false,
            };
            phone.set_time(START_MS);
            phones.push(phone);
        }
        World {
            server: Server {
                path,
                postgres,
                db,
                now: START_MS,
            },
            _dir: dir,
            phones,
            rng,
            stats: Stats::default(),
            acks: Vec::new(),
            delayed: Vec::new(),
            echoes: Vec::new(),
            o3_both: false,
            seed,
            installs: 0,
            compacted: 0,
        }
    }

    fn villages_of(&self, phone: usize) -> Vec<&'static str> {
        match (phone, self.o3_both) {
            (2, true) => VILLAGES.to_vec(),
            (2, false) => vec![VILLAGES[1]],
            _ => vec![VILLAGES[0]],
        }
    }

    fn advance(&mut self) {
        self.server.now += self.rng.below(5 * 60_000);
        for phone in &self.phones {
            phone.set_time(self.server.now);
        }
    }

    /// Records of a kind the phone holds, in id order (ids are natural keys: deterministic).
    fn held(&self, phone: usize, kind: EntityKind) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.phones[phone]
            .store
            .list(kind, None, 1_000, 0)
            .expect("list")
            .into_iter()
            .filter_map(|r| Uuid::parse_str(&r.id).ok())
            .collect();
        ids.sort_unstable();
        ids
    }

    fn pick(&mut self, ids: &[Uuid]) -> Option<Uuid> {
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize])
    }

    fn capture(&mut self, phone: usize, kind: EntityKind, pairs: &[(&str, String)]) {
        // Invalid input never leaves a phone; the schedule only draws valid records. A phone
        // that knows a record since edited onto the key refuses the capture, naming it.
        match self.phones[phone].store.capture(kind, &input(pairs)) {
            Ok(_) => {}
            Err(mobile_core::Error::Invalid(e))
                if e.field_errors().iter().all(|f| f.code == "duplicate") =>
            {
                self.stats
                    .fault("capture refused: key held by another record");
            }
            // A village taken from the officer since: the phone knows it from its last pull.
            Err(mobile_core::Error::Invalid(e))
                if e.field_errors().iter().all(|f| f.code == "not_yours") =>
            {
                self.stats
                    .fault("capture refused: village no longer the officer's");
            }
            Err(e) => panic!("a valid capture: {e:?}"),
        }
    }

    fn step(&mut self) {
        self.stats.steps += 1;
        if let Ok(trace) = std::env::var("BAYLINK_SIM_TRACE") {
            let id = Uuid::parse_str(&trace).expect("an entity id");
            let scope: Vec<String> = self
                .server
                .db
                .call_blocking(|c| {
                    Ok(c.prepare("SELECT s.village FROM entity e JOIN scope s ON s.pos = e.pos WHERE e.id = ?1")?
                        .query_map([trace.clone()], |r| r.get(0))?
                        .collect::<Result<_, SqlError>>()?)
                })
                .unwrap_or_default();
            eprintln!("step {} server scope {scope:?}", self.stats.steps);
            for (i, p) in self.phones.iter().enumerate() {
                let state = p.store.states().ok().and_then(|s| s.get(&id).cloned());
                let village = state.as_ref().and_then(|(_, s)| s.get("village").cloned());
                eprintln!(
                    "step {} phone {i}: village {village:?} outbox {:?}",
                    self.stats.steps,
                    p.store.outbox_rows_for_tests(id)
                );
            }
        }
        self.advance();
        let phone = self.rng.below(self.phones.len() as u64) as usize;
        let villages = self.villages_of(phone);
        let village = villages[self.rng.below(villages.len() as u64) as usize].to_owned();
        match self.rng.below(108) {
            0..=24 => {
                let n = self.rng.below(PERSONS);
                let mut pairs = vec![
                    ("village", village),
                    ("id_number", synthetic::resident_id(n * 97)),
                    ("name", synthetic::name(n)),
                ];
                if self.rng.chance(50) {
                    pairs.push(("phone", format!("138{:08}", self.rng.below(100_000_000))));
                }
                self.capture(phone, EntityKind::Person, &pairs);
            }
            25..=39 => {
                let persons = self.held(phone, EntityKind::Person);
                if let Some(id) = self.pick(&persons) {
                    let (field, value) = match self.rng.below(3) {
                        0 => ("phone", format!("139{:08}", self.rng.below(100_000_000))),
                        1 => (
                            "occupation",
                            ["工人", "厨师", "司机"][self.rng.below(3) as usize].to_owned(),
                        ),
                        _ => ("notes", format!("第{}次走访", self.rng.below(100))),
                    };
                    // A record whose fields are still arriving (a pull cut mid-record) may lack a
                    // required field: the edit is refused on the phone, as the officer would see.
                    let _ = self.phones[phone].store.edit(id, &input(&[(field, value)]));
                }
            }
            40..=43 => {
                let mut all = self.held(phone, EntityKind::Person);
                all.extend(self.held(phone, EntityKind::Residence));
                if let Some(id) = self.pick(&all) {
                    self.phones[phone].store.delete(id).expect("delete");
                }
            }
            44..=51 => {
                let h = self.rng.below(HOUSES);
                let code = format!("AC{}{h}", &village[9..]);
                let pairs = [
                    ("village", village.clone()),
                    ("address", format!("{village}号楼{h}")),
                    ("address_code", code),
                    ("use", "rental".to_owned()),
                    ("status", "in_use".to_owned()),
                ];
                self.capture(phone, EntityKind::House, &pairs);
            }
            52..=59 => {
                // Someone moves into (or out of) a house: their scope follows.
                let persons = self.held(phone, EntityKind::Person);
                let houses = self.held(phone, EntityKind::House);
                let residences = self.held(phone, EntityKind::Residence);
                if self.rng.chance(30) {
                    if let Some(id) = self.pick(&residences) {
                        let _ = self.phones[phone]
                            .store
                            .edit(id, &input(&[("moved_out", "2026-11-20".to_owned())]));
                    }
                } else if let (Some(person), Some(house)) =
                    (self.pick(&persons), self.pick(&houses))
                {
                    let house_village = self.phones[phone]
                        .store
                        .get(house)
                        .expect("get")
                        .and_then(|r| r.fields.get("village").cloned())
                        .unwrap_or_else(|| village.clone());
                    let pairs = [
                        ("village", house_village),
                        ("person", person.to_string()),
                        ("house", house.to_string()),
                        ("moved_in", format!("2026-0{}-01", 1 + self.rng.below(9))),
                        ("relation", "tenant".to_owned()),
                    ];
                    self.capture(phone, EntityKind::Residence, &pairs);
                }
            }
            60..=79 => {
                self.sync(phone, true);
            }
            80..=82 => {
                self.stats.fault("server restart");
                // The old handle is dropped first, as a process exit would.
                self.server.db = Db::open_in_memory().expect("placeholder");
                self.server.db = Server::open(&self.server.path, self.server.postgres.as_ref());
            }
            83..=85 => {
                self.stats.fault("phone restart");
                self.reopen(phone);
            }
            86..=88 => {
                self.phones[phone].partitioned = !self.phones[phone].partitioned;
                if self.phones[phone].partitioned {
                    self.stats.fault("partition");
                }
            }
            89..=90 => {
                // A village given to o3, or taken away again.
                self.o3_both = !self.o3_both;
                self.stats.fault("villages reassigned");
                let villages: Vec<String> =
                    self.villages_of(2).into_iter().map(str::to_owned).collect();
                self.server
                    .db
                    .call_blocking(|c| {
                        accounts::assign_villages(c, Actor::Operator, "o3", &villages, START_MS)
                    })
                    .expect("assign");
            }
            91..=93 => self.review(),
            94..=96 => {
                // The phone's clock is set wrong, or corrected.
                let skews = [0, 4 * 3_600_000, -86_400_000, 3 * 86_400_000];
                self.phones[phone].skew = skews[self.rng.below(4) as usize];
                self.phones[phone].set_time(self.server.now);
                self.stats.fault("clock changed");
            }
            97 => self.echo(),
            98..=99 => self.deliver_delayed(),
            100..=101 => {
                // An officer captures a person in a neighbouring village, not theirs.
                let elsewhere = VILLAGES.iter().find(|v| !villages.contains(v));
                if let Some(elsewhere) = elsewhere {
                    self.stats.fault("officer: capture in a village not theirs");
                    let n = self.rng.below(PERSONS);
                    let pairs = [
                        ("village", (*elsewhere).to_owned()),
                        ("id_number", synthetic::resident_id(n * 97)),
                        ("name", synthetic::name(n)),
                    ];
                    // Known on this phone already (she lives here), it is an edit of her
                    // village, which the phone may refuse; either way the schedule goes on.
                    let _ = self.phones[phone]
                        .store
                        .capture(EntityKind::Person, &input(&pairs));
                }
            }
            102..=103 => self.act_on_refusal(phone, &village),
            104 => self.hand_over(),
            105 => {
                // The operator compacts: what every phone seen in the last half hour has
                // applied goes; a phone unseen longer starts over at its next sync.
                self.stats.fault("compaction");
                let now = self.server.now;
                let done = self
                    .server
                    .db
                    .call_blocking(|c| {
                        baylink_server::store::retention::compact(
                            c,
                            Actor::Operator,
                            COMPACT_IDLE_MS,
                            now,
                        )
                    })
                    .expect("compaction");
                self.compacted += done.tombstones + done.purge_notes;
                if done.tombstones > 0 {
                    self.stats.fault("compaction: tombstones removed");
                }
                if done.purge_notes > 0 {
                    self.stats.fault("compaction: purge notes removed");
                }
            }
            _ => {
                // A corrected ID number that is another person's: refused, on the phone when
                // it holds her, else by the server, naming her.
                let persons = self.held(phone, EntityKind::Person);
                if let Some(id) = self.pick(&persons) {
                    self.stats.fault("officer: ID number edited onto another's");
                    let n = self.rng.below(PERSONS);
                    let number = synthetic::resident_id(n * 97);
                    let _ = self.phones[phone]
                        .store
                        .edit(id, &input(&[("id_number", number)]));
                }
            }
        }
    }

    /// o1 and o2 (one village) swap phones: allowed only once nothing of either waits or stands
    /// refused (the phone refuses another officer's sign-in before), and each phone then starts
    /// again as a new device of its new officer, with nothing of the last one's.
    fn hand_over(&mut self) {
        let busy = |w: &World, i: usize| {
            w.phones[i].store.pending_records().unwrap_or(1) > 0
                || !w.phones[i].store.refused().unwrap_or_default().is_empty()
                || w.delayed.iter().any(|d| d.phone == i)
                || w.echoes.iter().any(|e| match e {
                    Echo::Push(p, _) | Echo::Pull(p, _, _) => *p == i,
                })
        };
        if busy(self, 0) || busy(self, 1) {
            return;
        }
        self.stats.fault("officer: phones changed hands");
        let officers = (self.phones[1].officer, self.phones[0].officer);
        for (i, officer) in [(0, officers.0), (1, officers.1)] {
            self.installs += 1;
            let node = NodeId(Uuid::from_u128(
                (u128::from(self.seed) << 8) | (0x10 + self.installs),
            ));
            let now = self.server.now;
            self.server
                .db
                .call_blocking(|c| {
                    let account = accounts::account_by_username(c, officer)?.ok_or_else(|| {
                        baylink_server::store::error::StoreError::NotFound(officer.into())
                    })?;
                    devices::register_device(c, &node.to_string(), account.id, "phone", now)
                })
                .expect("the new device registers");
            let p = &mut self.phones[i];
            p.path = p.path.with_extension(format!("{}.db", self.installs));
            p.node = node;
            p.officer = officer;
            p.store = Phone::open(&p.path, node, &p.clock, officer);
        }
    }

    /// An officer reads a refused record and corrects it (its village, when that was the
    /// reason: the record goes again whole) or dismisses it.
    fn act_on_refusal(&mut self, phone: usize, village: &str) {
        let refused = self.phones[phone]
            .store
            .refused_records()
            .expect("refusals read");
        let Some(record) = refused.first() else {
            return;
        };
        let Ok(id) = Uuid::parse_str(&record.id) else {
            return;
        };
        let wrong_village = record
            .fields
            .iter()
            .any(|f| f.field == "village" && f.code == "out_of_scope");
        if std::env::var("BAYLINK_SIM_DEBUG").is_ok() {
            eprintln!("phone {phone} acts on {record:?}");
        }
        if wrong_village && self.rng.chance(50) {
            self.stats.fault("officer: refused record corrected");
            let _ = self.phones[phone]
                .store
                .edit(id, &input(&[("village", village.to_owned())]));
        } else {
            self.stats.fault("officer: refusal dismissed");
            self.phones[phone]
                .store
                .dismiss_refused(id)
                .expect("a listed refusal dismisses");
        }
    }

    /// Runs a check on the server's tables whose rows are the differences it found (none: the
    /// check holds); an error of `what` with the first few otherwise.
    fn agree(server: &Server, what: &str, sqlite: &str, postgres: &str) -> Result<(), String> {
        let differing: Vec<String> = server
            .db
            .call_blocking(|c| {
                Ok(c.prepare(c.pick(sqlite, postgres))?
                    .query_map((), |r| r.get(0))?
                    .collect::<Result<_, SqlError>>()?)
            })
            .expect(what);
        if differing.is_empty() {
            return Ok(());
        }
        Err(format!("{what}: {}", differing.join("; ")))
    }

    fn reopen(&mut self, phone: usize) {
        let p = &mut self.phones[phone];
        // Replace the store: the old connection closes; what it committed is on disk.
        let fresh = Phone::open(&p.path, p.node, &p.clock, p.officer);
        p.store = fresh;
    }

    fn review(&mut self) {
        let now = self.server.now;
        let reviewer = self.server.caller("r006", NodeId(Uuid::nil()));
        let entity: Option<String> = self
            .server
            .db
            .call_blocking(|c| {
                let ids: Vec<String> = c
                    .prepare("SELECT id FROM entity ORDER BY id")?
                    .query_map((), |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(ids)
            })
            .ok()
            .and_then(|ids| {
                (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize].clone())
            });
        let Some(entity) = entity.and_then(|e| Uuid::parse_str(&e).ok()) else {
            return;
        };
        let comment = "请补充联系电话".to_owned();
        let verdict = if self.rng.chance(60) {
            Verdict::Approve(comment)
        } else {
            Verdict::Return(comment)
        };
        let _ = self.server.db.call_blocking(|c| {
            baylink_server::store::review::review(c, &reviewer, &entity, &verdict, now)
        });
    }

    /// A duplicate of an answer the phone already applied arrives late and is applied again:
    /// a push's results settled twice, or an old pull page (with its older cursor) once more,
    /// which the phone must drop.
    fn echo(&mut self) {
        if self.echoes.is_empty() {
            return;
        }
        let i = self.rng.below(self.echoes.len() as u64) as usize;
        match self.echoes.remove(i) {
            Echo::Push(phone, results) => {
                self.stats.fault("push answer duplicated late");
                self.phones[phone]
                    .store
                    .settle(&results)
                    .expect("a late answer settles");
            }
            Echo::Pull(phone, page, from) => {
                self.stats.fault("pull answer duplicated late");
                if std::env::var("BAYLINK_SIM_TRACE").is_ok() {
                    eprintln!(
                        "step {}: phone {phone} applies a late page again (cursor {:?})",
                        self.stats.steps, page.next_cursor
                    );
                }
                let now =
                    baylink_sync::hlc::PhysicalClock::now_ms(self.phones[phone].clock.as_ref());
                self.phones[phone]
                    .store
                    .apply_pulls_from(vec![page], from.as_deref(), now)
                    .expect("a late page is applied or dropped");
            }
        }
    }

    fn deliver_delayed(&mut self) {
        if self.delayed.is_empty() {
            return;
        }
        let i = self.rng.below(self.delayed.len() as u64) as usize;
        let held = self.delayed.remove(i);
        let node = self.phones[held.phone].node;
        let caller = self.server.caller(self.phones[held.phone].officer, node);
        let now = self.server.now;
        self.server
            .db
            .call_blocking(|c| {
                baylink_server::store::push::push(c, &caller, &held.changes, now, MAX_AHEAD_MS)
            })
            .expect("late push");
    }

    /// One sync of a phone through the network; with `faults`, anything may go wrong.
    fn sync(&mut self, phone: usize, faults: bool) -> Option<mobile_core::Error> {
        self.stats.syncs += 1;
        let (officer, clock, partitioned) = {
            let p = &self.phones[phone];
            (p.officer, p.clock.clone(), p.partitioned && faults)
        };
        let push_limit = 64 + self.rng.below(192) as usize;
        let mut link = Link {
            server: &mut self.server,
            rng: &mut self.rng,
            stats: &mut self.stats,
            acks: &mut self.acks,
            delayed: &mut self.delayed,
            echoes: &mut self.echoes,
            phone,
            officer,
            clock,
            faults,
            partitioned,
            crashed: false,
            ahead: None,
            ready: None,
            push_limit,
        };
        let outcome = sync_with(
            &mut self.phones[phone].store,
            &mut link,
            &|_: &str, _, _| {},
        );
        let crashed = link.crashed;
        if crashed {
            self.reopen(phone);
        }
        match outcome {
            Ok(report) => {
                self.stats.restamped += report.restamped;
                None
            }
            Err(e) => Some(e),
        }
    }

    /// Heals the network and syncs every phone until nothing moves, then checks the invariants.
    fn settle_and_check(&mut self) -> Result<(), String> {
        while !self.delayed.is_empty() {
            self.deliver_delayed();
        }
        for p in &mut self.phones {
            p.partitioned = false;
        }
        for round in 0..4 {
            self.advance();
            for phone in 0..self.phones.len() {
                if let Some(e) = self.sync(phone, false) {
                    return Err(format!("round {round}: phone {phone} could not sync: {e}"));
                }
            }
        }
        self.check()?;
        // Every refusal left is one the officer can act on: listed with its reasons, and
        // dismissed; then nothing of it is left and the phones hold the server's state exactly.
        for phone in 0..self.phones.len() {
            let refused = self.phones[phone]
                .store
                .refused_records()
                .map_err(|e| e.to_string())?;
            for record in refused {
                if record.fields.is_empty()
                    || record
                        .fields
                        .iter()
                        .any(|f| f.message.is_empty() || f.label.is_empty())
                {
                    return Err(format!(
                        "phone {phone}: a refusal without its reason: {record:?}"
                    ));
                }
                let id = Uuid::parse_str(&record.id).map_err(|e| e.to_string())?;
                if std::env::var("BAYLINK_SIM_DEBUG").is_ok() {
                    eprintln!("phone {phone} dismisses at the end {record:?}");
                }
                self.phones[phone]
                    .store
                    .dismiss_refused(id)
                    .map_err(|e| format!("phone {phone}: {record:?} cannot be dismissed: {e}"))?;
                self.stats.fault("officer: refusal dismissed at the end");
            }
        }
        for round in 0..2 {
            self.advance();
            for phone in 0..self.phones.len() {
                if let Some(e) = self.sync(phone, false) {
                    return Err(format!(
                        "after dismissals, round {round}: phone {phone}: {e}"
                    ));
                }
            }
        }
        for phone in 0..self.phones.len() {
            let left = self.phones[phone]
                .store
                .refused()
                .map_err(|e| e.to_string())?;
            if !left.is_empty() {
                return Err(format!(
                    "phone {phone}: refusals left after dismissals: {left:?}"
                ));
            }
        }
        self.check()?;
        self.every_record_whole()
    }

    /// Every record on the server has its required fields (a new record is taken only whole,
    /// and no later write may take one away).
    fn every_record_whole(&self) -> Result<(), String> {
        let today = baylink_domain::Date::new(2026, 12, 31).ok_or("date")?;
        let records: Vec<(String, String, String)> = self
            .server
            .db
            .call_blocking(|c| {
                Ok(c.prepare(c.pick(
                    "SELECT e.id, e.kind, json_group_object(f.key, json(f.value -> '$[0]'))
                     FROM entity e JOIN json_each(e.state, '$.f') f GROUP BY e.id",
                    "SELECT e.id, e.kind, CAST(json_object_agg(f.key, f.value -> 0) AS text)
                     FROM entity e CROSS JOIN LATERAL json_each(CAST(e.state AS json) -> 'f') f
                     GROUP BY e.id, e.kind",
                ))?
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, SqlError>>()?)
            })
            .map_err(|e| e.to_string())?;
        for (id, kind, fields) in records {
            let Some(kind) = EntityKind::parse(&kind) else {
                continue;
            };
            let values: baylink_domain::Fields =
                serde_json::from_str(&fields).map_err(|e| e.to_string())?;
            let missing: Vec<_> = baylink_domain::validate_record(kind, &values, today)
                .into_iter()
                .filter(|e| e.code == "required")
                .collect();
            if !missing.is_empty() {
                return Err(format!("{kind:?} {id} on the server lacks {missing:?}"));
            }
        }
        Ok(())
    }

    fn server_state(&self, villages: &[&str]) -> BTreeMap<Uuid, EntityState> {
        let held = self
            .server
            .db
            .call_blocking(baylink_server::store::snapshot::read)
            .expect("server state");
        let scoped: BTreeSet<Uuid> = held
            .scopes
            .iter()
            .filter(|(_, v)| villages.contains(&v.as_str()))
            .map(|(e, _)| *e)
            .collect();
        let mut state: BTreeMap<Uuid, EntityState> = BTreeMap::new();
        for ((entity, field), stored) in &held.values {
            if scoped.contains(entity) {
                state.entry(*entity).or_default().insert(
                    field.clone(),
                    Versioned::new(stored.value.clone(), stored.stamp),
                );
            }
        }
        state
    }

    fn check(&mut self) -> Result<(), String> {
        for phone in 0..self.phones.len() {
            let villages = self.villages_of(phone);
            let expected = self.server_state(&villages);
            let store = &self.phones[phone].store;
            // Changes refused for good stay on the phone for the officer to correct. Only
            // `out_of_scope` (a village taken away with edits pending) and key collisions can
            // happen here, and what follows from them: a later change of a record refused so,
            // pushed in a later batch (the server never had it whole), or a record naming one
            // (the server has no such record to name).
            let refused = store.refused().map_err(|e| e.to_string())?;
            // An ID number edited onto another person's is refused naming her (or her village),
            // as is a new record with a number another was edited onto, or a capture given a
            // fresh id by a phone whose copy of the number's record was behind. So is one whose
            // derived fields two phones' edits of the number left disagreeing.
            let collision = |r: &mobile_core::RefusedChange| {
                r.code == "invalid"
                    && [
                        "另一条记录",
                        "其他村（社区）的一条记录",
                        "与身份证号不符",
                        "请同步后重新采集",
                    ]
                    .iter()
                    .any(|m| r.message.contains(m))
            };
            // A change of a record a compaction removed (deleted, and every phone seen lately
            // told) reaches the server as a record it does not know: refused as not whole.
            let on_server: BTreeSet<String> = if self.compacted > 0 {
                self.server
                    .db
                    .call_blocking(baylink_server::store::snapshot::read)
                    .map_err(|e| e.to_string())?
                    .entities
                    .keys()
                    .map(Uuid::to_string)
                    .collect()
            } else {
                BTreeSet::new()
            };
            let compacted_away = |r: &mobile_core::RefusedChange| {
                self.compacted > 0 && !on_server.contains(&r.entity)
            };
            let elsewhere: BTreeSet<&str> = refused
                .iter()
                .filter(|r| r.code == "out_of_scope" || collision(r) || compacted_away(r))
                .map(|r| r.entity.as_str())
                .collect();
            let follows = |r: &mobile_core::RefusedChange| {
                elsewhere.contains(r.entity.as_str())
                    || Uuid::parse_str(&r.entity)
                        .ok()
                        .and_then(|id| store.get(id).ok().flatten())
                        .is_some_and(|record| {
                            ["person", "house", "owner"].iter().any(|f| {
                                record
                                    .fields
                                    .get(*f)
                                    .is_some_and(|v| elsewhere.contains(v.as_str()))
                            })
                        })
            };
            if let Some(r) = refused.iter().find(|r| {
                r.code != "out_of_scope" && !follows(r) && !collision(r) && !compacted_away(r)
            }) {
                return Err(format!("phone {phone}: unexpected refusal {r:?}"));
            }
            let skip: BTreeSet<String> = refused.iter().map(|r| r.entity.clone()).collect();
            if store.pending_count().map_err(|e| e.to_string())? > refused.len() as u64 {
                return Err(format!(
                    "phone {phone}: changes still waiting after the sync"
                ));
            }
            // A deleted or merged-away record a compaction removed from the server stays, gone,
            // on a phone that had applied its deletion (nothing tells it to drop what it hides).
            let gone = |state: &EntityState| {
                state
                    .get("deleted")
                    .is_some_and(|v| v.value == serde_json::Value::Bool(true))
                    || state.get("merged_into").is_some_and(|v| !v.value.is_null())
            };
            let held: BTreeMap<Uuid, EntityState> = store
                .states()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(id, (_, state))| (id, state))
                .filter(|(id, _)| !skip.contains(&id.to_string()))
                .filter(|(id, state)| {
                    !(self.compacted > 0 && gone(state) && !expected.contains_key(id))
                })
                .collect();
            let expected: BTreeMap<Uuid, EntityState> = expected
                .into_iter()
                .filter(|(id, _)| !skip.contains(&id.to_string()))
                .collect();
            if held != expected {
                let differing: Vec<String> = expected
                    .keys()
                    .chain(held.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|id| held.get(id) != expected.get(id))
                    .take(3)
                    .map(|id| {
                        let (scope, history): (Vec<String>, i64) = self
                            .server
                            .db
                            .call_blocking(|c| {
                                let scope = c
                                    .prepare("SELECT s.village FROM entity e JOIN scope s ON s.pos = e.pos WHERE e.id = ?1")?
                                    .query_map([id.to_string()], |r| r.get(0))?
                                    .collect::<Result<_, SqlError>>()?;
                                let history = c.query_row(
                                    c.pick(
                                        "SELECT COUNT(*) FROM history h JOIN json_each(h.changes) WHERE h.entity = ?1",
                                        "SELECT COUNT(*) FROM history h CROSS JOIN LATERAL json_each(CAST(h.changes AS json)) c WHERE h.entity = ?1",
                                    ),
                                    [id.to_string()],
                                    |r| r.get(0),
                                )?;
                                // BAYLINK_SIM_DEBUG=1 prints the record's history and purges.
                                if std::env::var("BAYLINK_SIM_DEBUG").is_ok() {
                                    let mut stmt = c.prepare("SELECT h.seq, c.key, c.value -> '$[2]', h.stamp, c.value ->> '$[3]', h.device FROM history h JOIN json_each(h.changes) c WHERE h.entity = ?1 ORDER BY h.seq, c.id")?;
                                    let rows: Vec<(i64, String, String, String, bool, Option<String>)> = stmt.query_map([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?.collect::<Result<_, SqlError>>()?;
                                    eprintln!("history {rows:#?}");
                                    let mut stmt = c.prepare("SELECT seq, village FROM purge WHERE entity = ?1")?;
                                    let rows: Vec<(i64, String)> = stmt.query_map([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, SqlError>>()?;
                                    eprintln!("purge {rows:?}");
                                }
                                Ok((scope, history))
                            })
                            .unwrap_or_default();
                        format!(
                            "{id} (server scope {scope:?}, {history} history rows): phone {:?} server {:?}",
                            held.get(id),
                            expected.get(id)
                        )
                    })
                    .collect();
                return Err(format!(
                    "phone {phone} ({}) differs from the server's state for {villages:?}: {}",
                    self.phones[phone].officer,
                    differing.join("; ")
                ));
            }
        }
        // Each village's feed holds the records in its scope, each once, at the number of its
        // newest value.
        let held = self
            .server
            .db
            .call_blocking(baylink_server::store::snapshot::read)
            .expect("server state");
        let mut newest: BTreeMap<Uuid, i64> = BTreeMap::new();
        for ((entity, _), stored) in &held.values {
            let at = newest.entry(*entity).or_default();
            *at = (*at).max(stored.seq);
        }
        for (village, entries) in &held.feeds {
            let fed: Vec<(i64, Uuid)> = entries.iter().map(|e| (e.seq, e.entity)).collect();
            let mut scoped: Vec<(i64, Uuid)> = held
                .scopes
                .iter()
                .filter(|(_, v)| v == village)
                .map(|(e, _)| (newest.get(e).copied().unwrap_or(0), *e))
                .collect();
            scoped.sort_unstable();
            if fed != scoped {
                return Err(format!(
                    "the feed of {village} differs from its scope's records: {fed:?} vs {scoped:?}"
                ));
            }
        }
        if let Some((e, v)) = held
            .scopes
            .iter()
            .find(|(_, v)| !held.feeds.contains_key(v))
        {
            return Err(format!("{e} is in {v}, whose feed is empty"));
        }
        // Each record's scope is what its current fields make it, worked out here from scratch: its
        // own village and, for a person, the villages of the houses of their open residences.
        Self::agree(
            &self.server,
            "the scopes differ from what the records' fields make them",
            &scopes_check(
                "SELECT r.state ->> '$.f.person[0]' AS person, h.village FROM entity r
                 JOIN entity h ON h.id = r.state ->> '$.f.house[0]'
                 WHERE r.kind = 'residence' AND h.village IS NOT NULL
                   AND r.state ->> '$.f.person[0]' IS NOT NULL
                   AND coalesce(r.state -> '$.f.moved_out[0]', 'null') = 'null'
                   AND coalesce(r.state -> '$.f.deleted[0]', 'null') <> 'true'",
            ),
            &scopes_check(
                "SELECT CAST(r.state AS jsonb) #>> '{f,person,0}' AS person, h.village
                 FROM entity r JOIN entity h ON h.id = CAST(r.state AS jsonb) #>> '{f,house,0}'
                 WHERE r.kind = 'residence' AND h.village IS NOT NULL
                   AND CAST(r.state AS jsonb) #>> '{f,person,0}' IS NOT NULL
                   AND CAST(r.state AS jsonb) #>> '{f,moved_out,0}' IS NULL
                   AND coalesce(CAST(r.state AS jsonb) #>> '{f,deleted,0}', 'null') <> 'true'",
            ),
        )?;
        // Every action is filed under its record's position (or, its record compacted away,
        // the one it had), a position is one record's, and every summary stands at its record's.
        Self::agree(
            &self.server,
            "the positions records are filed under",
            POSITIONS_CHECK,
            POSITIONS_CHECK,
        )?;
        // Every acknowledged change is in the history exactly once, and what stands is it or newer.
        let history: BTreeMap<(String, String, String), i64> = self
            .server
            .db
            .call_blocking(|c| {
                Ok(c.prepare(c.pick(
                    "SELECT h.entity, c.key, h.stamp, COUNT(*) FROM history h JOIN json_each(h.changes) c
                     WHERE h.device <> 'console' GROUP BY h.entity, c.key, h.stamp",
                    "SELECT h.entity, c.key, h.stamp, COUNT(*) FROM history h
                     CROSS JOIN LATERAL json_each(CAST(h.changes AS json)) c
                     WHERE h.device <> 'console' GROUP BY h.entity, c.key, h.stamp",
                ))?
                .query_map((), |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))?
                .collect::<Result<_, SqlError>>()?)
            })
            .expect("history");
        if let Some((key, n)) = history.iter().find(|(_, n)| **n > 1) {
            return Err(format!("change applied {n} times: {key:?}"));
        }
        self.stats.applied += history.len() as u64;
        let held = self
            .server
            .db
            .call_blocking(baylink_server::store::snapshot::read)
            .expect("server state");
        for ack in &self.acks {
            self.stats.acknowledged += 1;
            let key = (
                ack.entity.to_string(),
                ack.field.clone(),
                ack.stamp.to_string(),
            );
            // A field the server keeps (who captured a record and when, its review state, the
            // home village of a person moving in) is acknowledged and written by the server in
            // its place, stamped after it.
            let replaced = || {
                history.keys().any(|(entity, field, stamp)| {
                    *entity == key.0
                        && *field == key.1
                        && stamp.parse::<Stamp>().is_ok_and(|s| s > ack.stamp)
                })
            };
            if !history.contains_key(&key) && !replaced() {
                self.stats.lost += 1;
                return Err(format!(
                    "acknowledged change missing from the history: {key:?}"
                ));
            }
            // A record compacted away (deleted, every active phone told) stands no more.
            if self.compacted > 0 && !held.entities.contains_key(&ack.entity) {
                continue;
            }
            let standing = held
                .values
                .get(&(ack.entity, ack.field.clone()))
                .map(|stored| stored.stamp);
            if standing.is_none_or(|s| s < ack.stamp) {
                self.stats.lost += 1;
                return Err(format!(
                    "acknowledged change {key:?} was replaced by an older value {standing:?}"
                ));
            }
        }
        Ok(())
    }
}

/// The check that each record's scope is what its fields make it, over `lives` (the query of
/// persons and the villages of the houses of their open residences, in a backend's SQL): its rows
/// are the differences.
fn scopes_check(lives: &str) -> String {
    format!(
        "WITH lives AS ({lives}),
         expected AS (
             SELECT id AS entity, village FROM entity WHERE village IS NOT NULL
             UNION
             SELECT l.person, l.village FROM lives l
             JOIN entity e ON e.id = l.person AND e.kind = 'person'),
         -- A scope row at a position no record holds shows as one of its own.
         filed AS (
             SELECT COALESCE(e.id, 'position ' || s.pos) AS entity, s.village
             FROM scope s LEFT JOIN entity e ON e.pos = s.pos)
         SELECT 'extra ' || entity || ' in ' || village
             FROM (SELECT entity, village FROM filed EXCEPT SELECT * FROM expected) x
         UNION ALL
         SELECT 'missing ' || entity || ' in ' || village
             FROM (SELECT * FROM expected EXCEPT SELECT entity, village FROM filed) y
         LIMIT 6"
    )
}

/// Differences between where the history, summaries and compacted records are filed and the
/// records' positions (the same SQL on both backends).
const POSITIONS_CHECK: &str =
    "SELECT 'action ' || h.seq || ' of ' || h.entity || ' filed under ' || h.pos FROM history h
     WHERE NOT EXISTS (SELECT 1 FROM entity e WHERE e.pos = h.pos AND e.id = h.entity)
       AND NOT EXISTS (SELECT 1 FROM compacted c WHERE c.pos = h.pos AND c.id = h.entity)
     UNION ALL
     SELECT 'position ' || c.pos || ' both live and compacted' FROM compacted c
     JOIN entity e ON e.pos = c.pos
     UNION ALL
     SELECT 'summary of ' || s.entity || ' at ' || s.pos FROM summary s
     WHERE NOT EXISTS (SELECT 1 FROM entity e WHERE e.pos = s.pos AND e.id = s.entity)
     LIMIT 6";

/// Runs the schedule of `seed` with `steps` operations; `Err` describes the broken invariant.
pub fn run(seed: u64, steps: u64) -> Result<Stats, String> {
    run_on(seed, steps, None)
}

/// [`run`] with the server's data on a fresh database of the PostgreSQL cluster `postgres`
/// names, when it names one.
pub fn run_on(seed: u64, steps: u64, postgres: Option<&str>) -> Result<Stats, String> {
    let mut world = World::new(seed, postgres);
    for _ in 0..steps {
        world.step();
    }
    world.settle_and_check()?;
    world.stats.schedules = 1;
    Ok(world.stats)
}
