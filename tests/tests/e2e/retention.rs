//! Retention: a compaction removes what every active phone has applied (deleted records, purge
//! notes); a phone unseen for longer than the idle time is told its cursor expired, starts over
//! as a new one and ends with exactly what the server holds, its unsent captures kept and sent.

use std::time::Duration;

use baylink_domain::EntityKind;
use baylink_server::store::accounts::Role;
use baylink_server::store::contract::Actor;
use baylink_sync::Change;
use baylink_sync::wire::{PullResponse, PushResponse};
use baylink_tests::harness::{Device, Server, VILLAGE, real_now_ms, resident_id};
use mobile_core::Store;
use mobile_core::sync::{Http, Transport, sync_with};
use uuid::Uuid;

const DAY_MS: u64 = 86_400_000;

fn capture_person(phone: &mut Device, n: u32) -> Uuid {
    let number = resident_id(&format!("4413031990010{:04}", 5000 + n));
    phone.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", &number),
            ("name", "张三"),
        ],
    )
}

#[test]
fn a_compaction_removes_what_active_phones_applied_and_an_unseen_phone_starts_over() {
    let server = Server::start();
    server.add_officer("oa", VILLAGE);
    server.add_officer("ob", VILLAGE);
    let mut a = Device::new("oa");
    a.login(&server, "oa");
    let people: Vec<Uuid> = (0..6).map(|n| capture_person(&mut a, n)).collect();
    a.sync();
    let mut b = Device::new("ob");
    b.login(&server, "ob");
    b.sync();
    assert_eq!(b.states().len(), 6);
    // b goes quiet for a hundred days; meanwhile a deletes two of the people.
    for id in &people[..2] {
        a.store.delete(*id).expect("deleted");
    }
    a.sync();
    // A server notes where a phone stands at most once a minute: a's next sync, a few minutes
    // on, is noted.
    let a_device = a.store.node_id().to_string();
    let unseen_since = |device: &str, ms: u64| {
        server.query(|c| {
            c.execute(
                "UPDATE device SET last_sync_ms = ?1 WHERE id = ?2",
                baylink_server::store::conn::params![(real_now_ms() - ms) as i64, device],
            )
            .expect("last sync set")
        });
    };
    unseen_since(&a_device, 5 * 60_000);
    a.sync();
    unseen_since(&b.store.node_id().to_string(), 100 * DAY_MS);
    let before = server.snapshot();
    assert!(people.iter().all(|id| before.entities.contains_key(id)));

    let done = server
        .run(server.state.store.compact(Actor::Operator, 60 * DAY_MS))
        .expect("compacted");
    assert_eq!(done.active_devices, 1, "{done:?}");
    assert_eq!(done.tombstones, 2, "{done:?}");
    let after = server.snapshot();
    assert!(
        people[..2]
            .iter()
            .all(|id| !after.entities.contains_key(id))
    );
    assert!(people[2..].iter().all(|id| after.entities.contains_key(id)));
    assert!(
        after.feeds.values().flatten().count() < before.feeds.values().flatten().count(),
        "the tombstones' feed entries go with them"
    );
    // Nothing is left to remove the second time.
    let again = server
        .run(server.state.store.compact(Actor::Operator, 60 * DAY_MS))
        .expect("compacted");
    assert_eq!((again.tombstones, again.purge_notes), (0, 0), "{again:?}");

    // The active phone syncs on as before.
    let report = a.try_sync().expect("a's cursor is above the horizon");
    assert_eq!(report.pulled, 0, "{report:?}");
    assert!(!report.started_over);

    // b captured while away; its cursor is below the horizon: it starts over.
    let while_away = capture_person(&mut b, 99);
    let report = b.sync();
    assert_eq!(report.pushed_records, 1, "{report:?}");
    assert!(report.started_over, "{report:?}");
    let held = b.states();
    assert!(
        people[..2].iter().all(|id| !held.contains_key(id)),
        "the deletions compacted away reach b all the same"
    );
    assert!(people[2..].iter().all(|id| held.contains_key(id)));
    assert!(held.contains_key(&while_away), "its unsent capture stays");
    assert!(server.snapshot().entities.contains_key(&while_away));
    // b is up to date with the server now: its next sync is an ordinary one.
    assert_eq!(b.sync().pulled, 0);
    a.sync();
    let (on_a, on_b) = (a.states(), b.states());
    for id in people[2..].iter().chain([&while_away]) {
        assert_eq!(on_a[id], on_b[id], "{id}");
    }
    // A new phone bootstraps what is left, the deleted people not among it.
    let mut c = Device::new("oa");
    c.login(&server, "oa");
    c.sync();
    let fresh = c.states();
    assert_eq!(fresh.len(), 5, "{:?}", fresh.keys());

    // Registered again in its village, a compacted person is a new record, on every phone;
    // from another station's village it is not that officer's, as the tombstone would not have
    // been.
    server.add_officer("oz", "441303007001");
    let mut z = Device::new("oz");
    z.login(&server, "oz");
    let number = resident_id(&format!("4413031990010{:04}", 5000));
    let elsewhere = z.capture(
        EntityKind::Person,
        &[
            ("village", "441303007001"),
            ("id_number", &number),
            ("name", "张三"),
        ],
    );
    assert_eq!(elsewhere, people[0], "the same person, by her number");
    let report = z.sync();
    assert_eq!(report.refused_records, 1, "{report:?}");
    let refused = z.store.refused().expect("refused");
    assert_eq!(refused[0].code, "out_of_scope", "{refused:?}");
    assert!(!server.snapshot().entities.contains_key(&people[0]));
    let again = capture_person(&mut c, 0);
    assert_eq!(again, people[0]);
    let report = c.sync();
    let refused = c.store.refused().expect("refused");
    assert_eq!(
        (report.pushed_records, report.refused),
        (1, 0),
        "{refused:?}\n{report:?}"
    );
    for phone in [&mut a, &mut b, &mut c] {
        phone.sync();
    }
    let server_has = server.snapshot();
    assert!(server_has.entities.contains_key(&people[0]));
    for phone in [&a, &b, &c] {
        let (_, state) = &phone.states()[&people[0]];
        assert_ne!(
            state.get("deleted").map(|v| &v.value),
            Some(&serde_json::Value::Bool(true)),
            "registered again, live on every phone"
        );
    }
    // Its history is one: the actions before the compaction stay filed under the position it
    // had, those since under a new one past it, and its page shows them all.
    let id = people[0].to_string();
    let (now_at, was_at, filed, shown) = server.query(|c| {
        use baylink_server::store::conn::Optional;
        let now_at: i64 = c
            .query_row("SELECT pos FROM entity WHERE id = ?1", [&id], |r| r.get(0))
            .expect("live again");
        let was_at: Option<i64> = c
            .query_row("SELECT pos FROM compacted WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .optional()
            .expect("read");
        let filed: Vec<i64> = c
            .prepare("SELECT DISTINCT pos FROM history WHERE entity = ?1 ORDER BY pos")
            .and_then(|mut s| s.query_map([&id], |r| r.get(0))?.collect::<Result<_, _>>())
            .expect("read");
        let shown = baylink_server::store::records::record(c, &id)
            .expect("read")
            .expect("live again")
            .history
            .iter()
            .filter(|h| h.field == "deleted")
            .map(|h| h.value.clone())
            .collect::<Vec<_>>();
        (now_at, was_at, filed, shown)
    });
    let was_at = was_at.expect("its old position kept");
    assert!(now_at > was_at, "{now_at} {was_at}");
    assert_eq!(filed, [was_at, now_at]);
    assert_eq!(
        shown.first().map(String::as_str),
        Some("true"),
        "its deletion, from before the compaction, first: {shown:?}"
    );
}

/// HTTP for pushes; every pull fails, as on a link that drops once the push is answered.
struct PushOnly(Http);

impl Transport for PushOnly {
    fn push(&mut self, store: &mut Store, changes: &[Change]) -> mobile_core::Result<PushResponse> {
        self.0.push(store, changes)
    }
    fn pull(
        &mut self,
        _: &mut Store,
        _: Option<String>,
        _: u32,
    ) -> mobile_core::Result<PullResponse> {
        Err(mobile_core::Error::Network("the link dropped".into()))
    }
    fn pause(&mut self, _: Duration) {}
}

#[test]
fn a_phone_that_never_completed_a_pull_drops_its_record_moved_away_before_a_compaction() {
    const OTHER: &str = "441303006002";
    let server = Server::start();
    server.add_officer("oa", VILLAGE);
    server.add_account("ob", Role::Officer, &[VILLAGE.to_owned(), OTHER.to_owned()]);
    let mut a = Device::new("oa");
    a.login(&server, "oa");
    let person = capture_person(&mut a, 0);
    // a's push is accepted; its pull never completes.
    let cut = sync_with(
        &mut a.store,
        &mut PushOnly(Http::default()),
        &|_: &str, _, _| {},
    );
    assert!(cut.is_err(), "{cut:?}");
    assert_eq!(a.store.pending_count().expect("pending"), 0);
    // An officer of both villages moves her to the other one: a's village drops her.
    let mut b = Device::new("ob");
    b.login(&server, "ob");
    b.sync();
    b.edit(person, &[("village", OTHER)]);
    b.sync();
    // A server notes where a phone stands at most once a minute: b's next sync, a few minutes
    // on, is noted.
    server.query(|c| {
        c.execute(
            "UPDATE device SET last_sync_ms = ?1 WHERE id = ?2",
            baylink_server::store::conn::params![
                (real_now_ms() - 5 * 60_000) as i64,
                b.store.node_id().to_string()
            ],
        )
        .expect("last sync set")
    });
    b.sync();
    // b is active and has applied the drop; a, never seen to complete a pull, holds nothing
    // back: the drop's note is compacted away.
    let done = server
        .run(server.state.store.compact(Actor::Operator, 60 * DAY_MS))
        .expect("compacted");
    assert_eq!(done.active_devices, 1, "{done:?}");
    assert!(done.purge_notes > 0, "{done:?}");
    // a pulls from no cursor: she is dropped all the same, as she is in none of a's villages.
    a.sync();
    assert!(!a.states().contains_key(&person), "{:?}", a.states().keys());
    assert!(b.states().contains_key(&person));
    // A phone that wrote after the compaction is sent no such drops: a new one of the same
    // officer, whose first pull follows its first push.
    let mut c = Device::new("oa");
    c.login(&server, "oa");
    let other = capture_person(&mut c, 1);
    let report = c.sync();
    assert_eq!(report.purged, 0, "{report:?}");
    assert!(c.states().contains_key(&other));
}
