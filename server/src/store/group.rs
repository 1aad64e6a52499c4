//! Pushes waiting for the SQLite writer, applied together: in one transaction and one durable
//! commit.
//!
//! When officers sync at once, each push used to wait for the writer and then pay for a commit
//! of its own: a sync of the log to disk, and every index page its few records touched written
//! to the log again (the next push touched many of the same pages). Now every push queues, and
//! one of the waiting pushes' threads leads: holding the writer, it applies the oldest waiting
//! pushes (up to [`GROUP_CHANGES`]) in one transaction, commits once, answers each, lets the
//! writer go, and goes on with the next group until its own push is answered; then another
//! waiting thread leads. The others wait for their answer, not for the writer. A push is
//! answered only after its commit, so nothing is acknowledged before it is durable. Applied one
//! after another inside the transaction, each push sees what those before it wrote, exactly as
//! if each had committed; should one fail (a storage error or a fault, not a refusal) or the
//! commit, the group is undone and applied again in parts (`apply`).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use baylink_sync::Change;
use baylink_sync::wire::ChangeResult;
use rusqlite::Connection;

use crate::store::caller::Caller;
use crate::store::conn::Conn;
use crate::store::error::StoreError;
use crate::store::now_ms;
use crate::store::push::push_in;

/// Changes applied in one commit, at most (a push larger than this goes alone): the writer is
/// held about as long as for the largest single push the server takes (twice that when a push
/// fails in the group, applied again in parts), and let go between groups. The standard
/// library's mutex is not fair: another writer waiting (a sign-in, a review) gets its chance
/// there, not a turn.
pub(crate) const GROUP_CHANGES: usize = 20_000;

/// A push's answer.
pub(crate) type Answer = Result<Vec<ChangeResult>, StoreError>;

/// Pushes waiting for the writer, and whether one of their threads is applying them.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    /// Told when a group's pushes were answered, and when a leader steps down.
    changed: Condvar,
    /// Commits of pushes so far: of groups, and of pushes applied alone.
    commits: AtomicU64,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Waiting>,
    /// One thread applies the waiting pushes.
    leading: bool,
}

/// A push waiting, with where its answer goes.
struct Waiting {
    caller: Caller,
    changes: Vec<Change>,
    max_ahead_ms: u64,
    answer: SyncSender<Answer>,
}

impl Waiting {
    /// A push to wait, with where its answer comes.
    fn new(caller: Caller, changes: Vec<Change>, max_ahead_ms: u64) -> (Waiting, Receiver<Answer>) {
        let (answer, answered) = sync_channel(1);
        let push = Waiting {
            caller,
            changes,
            max_ahead_ms,
            answer,
        };
        (push, answered)
    }
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The longest run of waiting pushes, oldest first, within [`GROUP_CHANGES`] (the first
    /// whatever its size).
    fn take(&self) -> Vec<Waiting> {
        let waiting = &mut self.state().waiting;
        let mut group = Vec::new();
        let mut changes = 0;
        while let Some(next) = waiting.front() {
            if !group.is_empty() && changes + next.changes.len() > GROUP_CHANGES {
                break;
            }
            changes += next.changes.len();
            group.extend(waiting.pop_front());
        }
        group
    }
}

/// The leading thread's turn: when it ends, however it ends, another waiting thread may lead.
struct Leading<'q>(&'q Queue);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.state().leading = false;
        self.0.changed.notify_all();
    }
}

/// Applies a device's push on `writer`, with the pushes waiting beside it (or a thread ahead of
/// it does, with its own): answered once its commit is durable.
pub(crate) fn push(
    writer: &Mutex<Connection>,
    queue: &Queue,
    caller: Caller,
    changes: Vec<Change>,
    max_ahead_ms: u64,
) -> Answer {
    let (push, answered) = Waiting::new(caller, changes, max_ahead_ms);
    let mut state = queue.state();
    state.waiting.push_back(push);
    loop {
        if let Some(result) = received(&answered) {
            return result;
        }
        if state.leading {
            state = queue
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        state.leading = true;
        drop(state);
        let _turn = Leading(queue);
        // This push is still waiting, behind those that came before it: each group takes the
        // oldest, so one of them takes it. The writer is let go between groups, for the other
        // work that writes (a sign-in, a review, the checkpointer's finish).
        loop {
            let applied = {
                // The group is taken once the writer is had: those that came meanwhile join it.
                let conn = writer.lock().unwrap_or_else(PoisonError::into_inner);
                let group = queue.take();
                if group.is_empty() {
                    return received(&answered).unwrap_or_else(|| Err(unanswered()));
                }
                apply(&Conn::Sqlite(&conn), group, &now_ms)
            };
            queue.commits.fetch_add(applied.commits, Ordering::Relaxed);
            // Under the queue's lock, so that a waiter between looking at its answer and
            // waiting does not miss this wake-up (it would notice its answer a group late).
            drop(queue.state());
            queue.changed.notify_all();
            if let Some(result) = received(&answered) {
                return result;
            }
        }
    }
}

/// Applies `pushes` on `writer` as one group, as pushes found waiting for it together are:
/// whether they were committed together, and each push's answer (what a push can do to another
/// of its group, in tests beyond this crate's).
pub(crate) fn apply_waiting(
    writer: &Mutex<Connection>,
    pushes: Vec<(Caller, Vec<Change>)>,
    max_ahead_ms: u64,
) -> (bool, Vec<Answer>) {
    let (group, answered): (Vec<Waiting>, Vec<Receiver<Answer>>) = pushes
        .into_iter()
        .map(|(caller, changes)| Waiting::new(caller, changes, max_ahead_ms))
        .unzip();
    let applied = {
        let conn = writer.lock().unwrap_or_else(PoisonError::into_inner);
        apply(&Conn::Sqlite(&conn), group, &now_ms)
    };
    let answers = answered
        .iter()
        .map(|a| received(a).unwrap_or_else(|| Err(unanswered())))
        .collect();
    (applied.together, answers)
}

/// The push's answer, if it was given (or can no longer be).
fn received(answered: &Receiver<Answer>) -> Option<Answer> {
    match answered.try_recv() {
        Ok(result) => Some(result),
        Err(TryRecvError::Disconnected) => Some(Err(unanswered())),
        Err(TryRecvError::Empty) => None,
    }
}

fn unanswered() -> StoreError {
    StoreError::Backend("the push went unanswered: send it again".into())
}

/// What applying a group came to.
#[derive(Debug, PartialEq, Eq)]
struct Applied {
    /// Committed together, all in one commit (else in parts, or each push alone).
    together: bool,
    /// Commits made.
    commits: u64,
}

/// Applies `group` in one transaction at the time `now` says, and answers each push. Should
/// push k fail (a storage error, not a refusal), nothing of the group is kept: the pushes before
/// it are applied together again, push k alone, and those after it as a group of their own.
/// Should the commit fail, or a fault be met, each push is applied alone. Pushes are decided
/// from what the server holds, so each is answered as it would have been without a group, and
/// only a push that fails is answered with its failure. (A savepoint per push would undo one
/// alone, but SQLite copies every page a push touches before changing it: the benchmark's
/// upload at scale 0.01 took 4.5 s with them, against 4.0 s.)
fn apply(conn: &Conn<'_>, mut group: Vec<Waiting>, now: &dyn Fn() -> u64) -> Applied {
    if group.len() < 2 {
        return alone(conn, group, now);
    }
    match catch_unwind(AssertUnwindSafe(|| together(conn, &group, now))) {
        Ok(Ok(answers)) => {
            crate::metrics::push_commit(group.len());
            for (push, answer) in group.into_iter().zip(answers) {
                let _ = push.answer.send(Ok(answer));
            }
            Applied {
                together: true,
                commits: 1,
            }
        }
        Ok(Err((Some(k), e))) => {
            tracing::warn!(
                "push {} of {} applied together failed: {e}",
                k + 1,
                group.len()
            );
            let after = group.split_off(k + 1);
            let failed = group.split_off(k);
            let commits = apply(conn, group, now).commits
                + alone(conn, failed, now).commits
                + apply(conn, after, now).commits;
            Applied {
                together: false,
                commits,
            }
        }
        Ok(Err((None, e))) => {
            tracing::warn!("{} pushes applied together failed: {e}", group.len());
            alone(conn, group, now)
        }
        Err(_) => {
            tracing::error!("{} pushes applied together met a fault", group.len());
            alone(conn, group, now)
        }
    }
}

/// Applies each push of `group` in a transaction of its own, and answers it: a fault met
/// answers that push alone with an error.
fn alone(conn: &Conn<'_>, group: Vec<Waiting>, now: &dyn Fn() -> u64) -> Applied {
    let mut commits = 0;
    for push in group {
        let alone = catch_unwind(AssertUnwindSafe(|| {
            crate::store::push::push(conn, &push.caller, &push.changes, now(), push.max_ahead_ms)
        }));
        let answer = alone.unwrap_or_else(|_| {
            tracing::error!("a push met a fault");
            Err(StoreError::Backend(
                "the push met a fault in the server: nothing of it was stored".into(),
            ))
        });
        if answer.is_ok() {
            crate::metrics::push_commit(1);
            commits += 1;
        }
        let _ = push.answer.send(answer);
    }
    Applied {
        together: false,
        commits,
    }
}

/// Every push of `group` applied in one transaction, and committed: their answers. Failing,
/// the push that failed (none when the transaction or its commit did).
fn together(
    conn: &Conn<'_>,
    group: &[Waiting],
    now: &dyn Fn() -> u64,
) -> Result<Vec<Vec<ChangeResult>>, (Option<usize>, StoreError)> {
    let tx = conn.transaction().map_err(|e| (None, e.into()))?;
    let mut answers = Vec::with_capacity(group.len());
    for (k, push) in group.iter().enumerate() {
        let answer = push_in(&tx, &push.caller, &push.changes, now(), push.max_ahead_ms)
            .map_err(|e| (Some(k), e))?;
        answers.push(answer);
    }
    tx.commit().map_err(|e| (None, e.into()))?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    // Helpers here are part of the tests: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::demo::{Counts, officer_username, seed_places, village_changes};
    use crate::store::Db;
    use crate::store::accounts::{self, NewAccount, Role};
    use crate::store::audit::Actor;
    use crate::store::devices;
    use crate::store::push;
    use baylink_sync::wire::ChangeStatus;
    use baylink_sync::{Clock, NodeId};
    use proptest::prelude::*;
    use serde_json::Value;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use uuid::Uuid;

    /// 2026-12-01 10:00 in China.
    const NOW: u64 = 1_796_090_400_000;
    /// The officers' villages: two of 澳头 station, one of 霞涌.
    const VILLAGES: [&str; 3] = ["441303006001", "441303006002", "441303007001"];
    /// A name the test's trigger refuses to store: a push naming it fails in its middle, after
    /// it wrote its records' values (a disk fault, as far as the push can tell).
    const FAULT: &str = "故障";
    /// A name whose summary breaks a deferred constraint: the push's commit fails.
    const LATE_FAULT: &str = "迟误";

    /// A database with the places and, for each of [`VILLAGES`], an officer with a device, and
    /// a trigger failing any write of a summary named [`FAULT`]: its path and the callers.
    fn district(dir: &Path) -> (PathBuf, Vec<Caller>) {
        let path = dir.join("base.db");
        let db = Db::open(&path).unwrap();
        let callers = db
            .call_blocking(|c| {
                seed_places(c)?;
                c.execute_batch(&format!(
                    "CREATE TRIGGER fault_in BEFORE INSERT ON summary WHEN NEW.name = '{FAULT}'
                     BEGIN SELECT RAISE(ABORT, 'disk fault'); END;
                     CREATE TRIGGER fault_up BEFORE UPDATE ON summary WHEN NEW.name = '{FAULT}'
                     BEGIN SELECT RAISE(ABORT, 'disk fault'); END;
                     CREATE TABLE fault_target (x INTEGER PRIMARY KEY);
                     CREATE TABLE fault_ref (x INTEGER REFERENCES fault_target (x)
                         DEFERRABLE INITIALLY DEFERRED);
                     CREATE TRIGGER late_fault AFTER INSERT ON summary
                     WHEN NEW.name = '{LATE_FAULT}' BEGIN INSERT INTO fault_ref VALUES (1); END;"
                ))?;
                let mut callers = Vec::new();
                for (i, village) in VILLAGES.iter().enumerate() {
                    let officer = NewAccount {
                        username: officer_username(village),
                        display_name: format!("民警{i}"),
                        role: Role::Officer,
                        station: Some(village[..9].to_owned()),
                        password_hash: "x".into(),
                        villages: vec![(*village).to_owned()],
                    };
                    let account = accounts::create_account(c, Actor::Operator, &officer, NOW)?;
                    let device = Uuid::from_u128(0xD0 + i as u128).to_string();
                    devices::register_device(c, &device, account, "phone", NOW)?;
                    callers.push(Caller {
                        account,
                        role: Role::Officer,
                        device,
                        villages: vec![(*village).to_owned()],
                    });
                }
                Ok(callers)
            })
            .unwrap();
        db.sqlite_blocking(|c| Ok(c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?))
            .unwrap();
        (path, callers)
    }

    /// A copy of the database at `base`, opened (the same server, to the byte).
    fn copy(base: &Path, name: &str) -> Db {
        let path = base.with_file_name(name);
        std::fs::copy(base, &path).unwrap();
        Db::open(&path).unwrap()
    }

    /// Every row of every table, sorted within each table.
    fn dump(db: &Db) -> Vec<(String, Vec<String>)> {
        db.sqlite_blocking(|c| {
            let tables: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::new();
            for table in tables {
                let mut stmt = c.prepare(&format!("SELECT * FROM \"{table}\""))?;
                let width = stmt.column_count();
                let mut rows: Vec<String> = stmt
                    .query_map([], |r| {
                        (0..width)
                            .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                            .collect::<Result<Vec<_>, _>>()
                            .map(|v| v.join("|"))
                    })?
                    .collect::<Result<_, _>>()?;
                rows.sort();
                out.push((table, rows));
            }
            Ok(out)
        })
        .unwrap()
    }

    /// What a step of a case does with an officer's next batch of records.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Pushes it as captured.
        Next,
        /// Pushes again a batch pushed before (a phone that lost the answer).
        Again,
        /// Pushes it with its first record's village set to another officer's.
        Elsewhere,
        /// Pushes it with a person's name set to [`FAULT`]: the push fails in its middle.
        Fault,
        /// Pushes it with a person's name set to [`LATE_FAULT`]: the push's commit fails.
        LateFault,
        /// Pushes it with a value no form gives (refused).
        Garbage,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Next),
            1 => Just(Step::Again),
            1 => Just(Step::Elsewhere),
            1 => Just(Step::Fault),
            1 => Just(Step::LateFault),
            1 => Just(Step::Garbage),
        ]
    }

    /// The pushes of a case: (officer, changes), in arrival order.
    fn pushes(steps: &[(usize, Step, u8)]) -> Vec<(usize, Vec<Change>)> {
        let counts = Counts {
            persons: 8,
            houses: 3,
            vehicles: 3,
            mistyped: true,
        };
        // Each officer's records, in capture order, and the batches pushed so far.
        let mut records: Vec<Vec<Vec<Change>>> = VILLAGES
            .iter()
            .enumerate()
            .map(|(i, village)| {
                let node = NodeId(Uuid::from_u128(0xD0 + i as u128));
                let changes = village_changes(
                    i as u64 + 1,
                    village,
                    "村",
                    &officer_username(village),
                    node,
                    &mut Clock::default(),
                    NOW - 3_600_000,
                    counts,
                );
                changes
                    .chunk_by(|a, b| a.entity == b.entity)
                    .map(<[Change]>::to_vec)
                    .collect()
            })
            .collect();
        let mut sent: Vec<Vec<Vec<Change>>> = vec![Vec::new(); VILLAGES.len()];
        let mut out = Vec::new();
        for &(officer, step, size) in steps {
            if let (Step::Again, Some(before)) = (step, sent[officer].last()) {
                out.push((officer, before.clone()));
                continue;
            }
            let left = &mut records[officer];
            let take = (1 + size as usize % 4).min(left.len());
            if take == 0 {
                continue;
            }
            let mut batch: Vec<Change> = left.drain(..take).flatten().collect();
            let other = VILLAGES[(officer + 1) % VILLAGES.len()];
            let mut set = |field: &str, value: Value| {
                if let Some(c) = batch.iter_mut().find(|c| c.field == field) {
                    c.value = value;
                }
            };
            match step {
                Step::Next | Step::Again => {}
                Step::Elsewhere => set("village", Value::String(other.into())),
                Step::Fault => set("name", Value::String(FAULT.into())),
                Step::LateFault => set("name", Value::String(LATE_FAULT.into())),
                Step::Garbage => set("phone", Value::String("not a phone".into())),
            }
            sent[officer].push(batch.clone());
            out.push((officer, batch));
        }
        out
    }

    /// A push's answer, comparable: the results, or the error's text.
    fn answer(result: Result<Vec<ChangeResult>, StoreError>) -> Result<Vec<ChangeResult>, String> {
        result.map_err(|e| e.to_string())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Pushes applied together, in groups cut anywhere, answer and store exactly what they
        /// answer and store applied one by one, each committed alone: replays, refusals, and a
        /// push failing in its middle and one whose commit fails (its group undone and applied
        /// again in parts) included.
        #[test]
        fn pushes_applied_together_end_as_pushes_applied_one_by_one(
            steps in prop::collection::vec((0..VILLAGES.len(), step(), any::<u8>()), 1..16),
            cuts in prop::collection::vec(any::<bool>(), 16),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (base, callers) = district(dir.path());
            let pushes = pushes(&steps);

            let alone = copy(&base, "alone.db");
            let one_by_one: Vec<_> = pushes
                .iter()
                .map(|(officer, changes)| {
                    answer(alone.call_blocking(|c| {
                        push::push(c, &callers[*officer], changes, NOW, 60_000)
                    }))
                })
                .collect();

            let grouped = copy(&base, "grouped.db");
            let mut group = Vec::new();
            let faulty = |changes: &[Change]| {
                changes.iter().any(|c| c.value == FAULT || c.value == LATE_FAULT)
            };
            let flush = |group: &mut Vec<(Waiting, bool)>| {
                let (taken, faults): (Vec<Waiting>, Vec<bool>) = std::mem::take(group).into_iter().unzip();
                if taken.is_empty() {
                    return Ok(());
                }
                let several = taken.len() > 1;
                let applied = grouped.call_blocking(|c| Ok(apply(c, taken, &|| NOW))).unwrap();
                // Together exactly when there were several and none failed.
                prop_assert_eq!(applied.together, several && !faults.contains(&true));
                Ok(())
            };
            let (all, answers) = waiting(&callers, &pushes);
            for (i, (push, (_, changes))) in all.into_iter().zip(&pushes).enumerate() {
                group.push((push, faulty(changes)));
                if cuts[i] {
                    flush(&mut group)?;
                }
            }
            flush(&mut group)?;
            let together: Vec<_> = answers
                .into_iter()
                .map(|a| answer(a.recv().unwrap()))
                .collect();

            prop_assert_eq!(&together, &one_by_one);
            for ((_, changes), answer) in pushes.iter().zip(&one_by_one) {
                prop_assert_eq!(answer.is_err(), faulty(changes), "only a push naming a fault fails");
            }
            prop_assert_eq!(dump(&grouped), dump(&alone));
        }
    }

    #[test]
    fn pushes_waiting_for_the_writer_go_in_one_commit_and_all_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (base, callers) = district(dir.path());
        let db = Db::open(&base).unwrap();
        let pushes = pushes(&[(0, Step::Next, 3), (1, Step::Next, 3), (2, Step::Next, 3)]);
        let (writer, queue) = db.group_parts();
        // The writer held (a push being applied), three officers' pushes wait for it.
        let holding = writer.lock().unwrap();
        let pushing: Vec<_> = pushes
            .iter()
            .map(|(officer, changes)| {
                let (writer, queue) = (Arc::clone(&writer), Arc::clone(&queue));
                let (caller, changes) = (callers[*officer].clone(), changes.clone());
                std::thread::spawn(move || push(&writer, &queue, caller, changes, 60_000))
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while queue.state().waiting.len() < pushes.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "the pushes never all waited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(holding);
        for (thread, (_, changes)) in pushing.into_iter().zip(&pushes) {
            let results = thread.join().unwrap().unwrap();
            assert_eq!(results.len(), changes.len());
            assert!(results.iter().all(|r| r.status == ChangeStatus::Accepted));
        }
        assert_eq!(
            queue.commits.load(Ordering::Relaxed),
            1,
            "one commit for all"
        );
        assert!(!queue.state().leading, "the leader stepped down");
        // Durable: a database opened afresh holds every record of the three.
        drop(db);
        let again = Db::open(&base).unwrap();
        let stored: i64 = again
            .call_blocking(|c| Ok(c.query_row("SELECT count(*) FROM summary", (), |r| r.get(0))?))
            .unwrap();
        let records: std::collections::BTreeSet<Uuid> = pushes
            .iter()
            .flat_map(|(_, changes)| changes.iter().map(|c| c.entity))
            .collect();
        assert_eq!(stored as usize, records.len());
    }

    #[test]
    fn a_group_takes_the_oldest_pushes_within_its_bound_and_a_larger_one_alone() {
        let queue = Queue::default();
        let caller = Caller {
            account: 1,
            role: Role::Officer,
            device: "d".into(),
            villages: Vec::new(),
        };
        let change = pushes(&[(0, Step::Next, 0)]).remove(0).1.remove(0);
        let mut answers = Vec::new();
        for size in [
            GROUP_CHANGES / 2,
            GROUP_CHANGES / 2,
            1,
            GROUP_CHANGES + 1,
            1,
        ] {
            let (answer, answered) = sync_channel(1);
            answers.push(answered);
            queue.state().waiting.push_back(Waiting {
                caller: caller.clone(),
                changes: vec![change.clone(); size],
                max_ahead_ms: 0,
                answer,
            });
        }
        let sizes = |group: Vec<Waiting>| group.iter().map(|w| w.changes.len()).collect::<Vec<_>>();
        assert_eq!(sizes(queue.take()), [GROUP_CHANGES / 2, GROUP_CHANGES / 2]);
        assert_eq!(sizes(queue.take()), [1]);
        assert_eq!(sizes(queue.take()), [GROUP_CHANGES + 1]);
        assert_eq!(sizes(queue.take()), [1]);
        assert!(queue.take().is_empty());
    }

    #[test]
    fn a_fault_applying_a_group_fails_only_the_push_it_meets_again_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (base, callers) = district(dir.path());
        let db = Db::open(&base).unwrap();
        let pushes = pushes(&[(0, Step::Next, 3), (1, Step::Next, 3), (2, Step::Next, 3)]);
        let (group, answers) = waiting(&callers, &pushes);
        // The clock is read once a push: the second push meets a fault in the group (the second
        // reading), and again when applied alone (the fourth).
        let readings = std::cell::Cell::new(0);
        let now = || {
            readings.set(readings.get() + 1);
            assert!(![2, 4].contains(&readings.get()), "a fault");
            NOW
        };
        let applied = db.call_blocking(|c| Ok(apply(c, group, &now))).unwrap();
        assert_eq!(
            applied,
            Applied {
                together: false,
                commits: 2
            }
        );
        let answers: Vec<_> = answers.iter().map(|a| a.recv().unwrap()).collect();
        assert!(
            answers[0]
                .as_ref()
                .unwrap()
                .iter()
                .all(|r| r.status == ChangeStatus::Accepted)
        );
        assert!(answers[1].is_err());
        assert!(
            answers[2]
                .as_ref()
                .unwrap()
                .iter()
                .all(|r| r.status == ChangeStatus::Accepted)
        );
        // The first and third stored, nothing of the second, and the writer free for the next.
        let stored = |changes: &[Change]| {
            let id = changes[0].entity.to_string();
            db.call_blocking(|c| {
                Ok(
                    c.query_row("SELECT count(*) FROM entity WHERE id = ?1", [id], |r| {
                        r.get::<_, i64>(0)
                    })?,
                )
            })
            .unwrap()
        };
        assert_eq!(
            pushes.iter().map(|(_, c)| stored(c)).collect::<Vec<_>>(),
            [1, 0, 1]
        );
        let again = db
            .call_blocking(|c| push::push(c, &callers[1], &pushes[1].1, NOW, 60_000))
            .unwrap();
        assert!(again.iter().all(|r| r.status == ChangeStatus::Accepted));
    }

    /// The waiting pushes of `pushes`, with where each answer comes.
    fn waiting(
        callers: &[Caller],
        pushes: &[(usize, Vec<Change>)],
    ) -> (Vec<Waiting>, Vec<Receiver<Answer>>) {
        pushes
            .iter()
            .map(|(officer, changes)| {
                Waiting::new(callers[*officer].clone(), changes.clone(), 60_000)
            })
            .unzip()
    }

    #[test]
    fn a_push_failing_in_a_group_is_applied_alone_between_those_before_and_after_it_together() {
        let dir = tempfile::tempdir().unwrap();
        let (base, callers) = district(dir.path());
        let db = Db::open(&base).unwrap();
        let pushes = pushes(&[
            (0, Step::Next, 3),
            (1, Step::Next, 3),
            (1, Step::Fault, 3),
            (2, Step::Next, 3),
            (0, Step::Next, 3),
        ]);
        assert!(pushes[2].1.iter().any(|c| c.value == FAULT));
        let (group, answers) = waiting(&callers, &pushes);
        let applied = db.call_blocking(|c| Ok(apply(c, group, &|| NOW))).unwrap();
        // The two before it in one commit, the two after it in another: not four.
        assert_eq!(
            applied,
            Applied {
                together: false,
                commits: 2
            }
        );
        for (n, answer) in answers.iter().enumerate() {
            let answer = answer.recv().unwrap();
            match n {
                2 => assert!(answer.is_err()),
                _ => assert!(
                    answer
                        .unwrap()
                        .iter()
                        .all(|r| r.status == ChangeStatus::Accepted)
                ),
            }
        }
    }

    #[test]
    fn pushes_from_many_threads_at_once_are_all_answered_as_leaders_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let (base, callers) = district(dir.path());
        let db = Db::open(&base).unwrap();
        let (writer, queue) = db.group_parts();
        // Each officer's records in batches of 2 records, pushed one after another by a thread
        // of its own.
        let mut sent = 0;
        let (done, results) = std::sync::mpsc::channel();
        for (officer, caller) in callers.iter().enumerate() {
            let batches: Vec<Vec<Change>> = pushes(&vec![(officer, Step::Next, 1); 40])
                .into_iter()
                .map(|(_, changes)| changes)
                .collect();
            let (writer, queue, done) = (Arc::clone(&writer), Arc::clone(&queue), done.clone());
            let caller = caller.clone();
            sent += batches.len();
            std::thread::spawn(move || {
                for batch in batches {
                    let answer = push(&writer, &queue, caller.clone(), batch, 60_000);
                    done.send(answer).unwrap();
                }
            });
        }
        for _ in 0..sent {
            let answer = results
                .recv_timeout(std::time::Duration::from_secs(120))
                .expect("every push answered");
            assert!(
                answer
                    .unwrap()
                    .iter()
                    .all(|r| r.status == ChangeStatus::Accepted)
            );
        }
        assert!(!queue.state().leading, "the last leader stepped down");
        assert!(queue.state().waiting.is_empty());
        let commits = queue.commits.load(Ordering::Relaxed) as usize;
        assert!(
            (1..=sent).contains(&commits),
            "{commits} commits for {sent} pushes"
        );
    }
}
