//! A phone syncing through a proxy on loopback that cuts requests, truncates and drops answers,
//! and stalls: the sync retries with backoff and a per-request time limit and completes, every
//! change reaching the server exactly once; when the network stays bad it gives up with the outbox
//! intact and the next sync finishes the job.

use std::time::Duration;

use baylink_domain::EntityKind;
use baylink_sync::Change;
use baylink_sync::wire::{PullResponse, PushResponse};
use baylink_tests::fault_proxy::{Fault, FaultProxy};
use baylink_tests::harness::{Device, Server, VILLAGE, resident_id};
use mobile_core::Store;
use mobile_core::sync::{Http, Transport, sync_with};

/// Short, so that stalls cost seconds, not minutes.
const TIME_LIMIT: Duration = Duration::from_secs(1);

fn sync(device: &mut Device) -> Result<mobile_core::SyncReport, mobile_core::Error> {
    sync_with(
        &mut device.store,
        &mut Http::with_timeout(TIME_LIMIT),
        &|_: &str, _, _| {},
    )
}

/// Captures `count` distinct persons of the village on the phone, offline.
fn capture_persons(phone: &mut Device, count: u64) {
    for n in 0..count {
        let number = resident_id(&format!(
            "4413021990{:02}{:02}{:03}",
            n % 12 + 1,
            n % 28 + 1,
            n
        ));
        phone.capture(
            EntityKind::Person,
            &[
                ("village", VILLAGE),
                ("id_number", &number),
                ("name", "陈静"),
            ],
        );
    }
}

/// HTTP, counting the pushes made ready while the one before was on its way, then sent on its
/// answer while the phone settled it.
struct CountingAhead {
    http: Http,
    ready: usize,
}

impl Transport for CountingAhead {
    fn push(&mut self, store: &mut Store, changes: &[Change]) -> mobile_core::Result<PushResponse> {
        self.http.push(store, changes)
    }
    fn pull(
        &mut self,
        store: &mut Store,
        cursor: Option<String>,
        limit: u32,
    ) -> mobile_core::Result<PullResponse> {
        self.http.pull(store, cursor, limit)
    }
    fn push_ahead(&mut self, store: &Store, changes: &[Change]) {
        self.http.push_ahead(store, changes);
    }
    fn ready_next(&mut self, store: &Store, changes: &[Change]) {
        self.http.ready_next(store, changes);
    }
    fn send_ready(&mut self, store: &Store, changes: &[Change]) -> bool {
        let sent = self.http.send_ready(store, changes);
        self.ready += usize::from(sent);
        sent
    }
    fn drop_ready(&mut self) {
        self.http.drop_ready();
    }
    fn prefetch(&mut self, store: &Store, cursor: String, limit: u32) {
        self.http.prefetch(store, cursor, limit);
    }
    fn fetched(&mut self, cursor: &str) -> Option<PullResponse> {
        self.http.fetched(cursor)
    }
    fn pause(&mut self, duration: Duration) {
        self.http.pause(duration);
    }
}

/// An officer's phone that reaches `server` through a fault proxy and holds 150 persons captured
/// offline: the phone, the proxy, and the changes waiting.
fn officer_behind_proxy(server: &Server) -> (Device, FaultProxy, u64) {
    server.add_officer("o1", VILLAGE);
    let mut phone = Device::new("o1");
    phone.login(server, "o1");
    let proxy = FaultProxy::start(&server.url);
    phone
        .store
        .set_server_url(&proxy.url)
        .expect("proxy address saved");
    capture_persons(&mut phone, 150);
    let changes = phone.store.pending_count().expect("pending");
    (phone, proxy, changes)
}

/// Changes in the server's history from this phone, and how many of them appear more than once.
fn history_of(server: &Server, device: &Device) -> (i64, i64) {
    let node = device.store.node_id().to_string();
    server.query(|c| {
        let total = c
            .query_row(
                "SELECT COUNT(*) FROM history h JOIN json_each(h.changes) WHERE h.device = ?1",
                [&node],
                |r| r.get(0),
            )
            .expect("count");
        let twice = c
            .query_row(
                "SELECT COUNT(*) FROM (SELECT 1 FROM history h JOIN json_each(h.changes) c
                 WHERE h.device = ?1 GROUP BY h.entity, c.key, h.stamp HAVING COUNT(*) > 1)",
                [&node],
                |r| r.get(0),
            )
            .expect("count");
        (total, twice)
    })
}

#[test]
fn sync_through_a_hostile_network_completes_after_retries_with_nothing_lost_or_doubled() {
    let server = Server::start();
    let (mut phone, proxy, changes) = officer_behind_proxy(&server);
    assert!(changes > 1_000, "a push of some size");

    // The first push: cut off, then its answer truncated, then stalled past the time limit.
    proxy.plan(&[
        Fault::CutRequest,
        Fault::TruncateAnswer,
        Fault::Stall(Duration::from_secs(3)),
    ]);
    let report = sync(&mut phone).expect("the sync completes after retries");
    assert_eq!(report.pushed, changes);
    assert_eq!(history_of(&server, &phone), (changes as i64, 0));

    // Edits whose answers are dropped twice (the server applied them each time) and truncated.
    let ids: Vec<_> = phone
        .store
        .list(EntityKind::Person, None, 10, 0)
        .expect("list")
        .into_iter()
        .map(|r| uuid::Uuid::parse_str(&r.id).expect("id"))
        .collect();
    for id in &ids {
        phone.edit(*id, &[("occupation", "渔民")]);
    }
    proxy.plan(&[Fault::DropAnswer, Fault::DropAnswer, Fault::TruncateAnswer]);
    let report = sync(&mut phone).expect("completes");
    assert_eq!(report.pushed, ids.len() as u64);
    assert_eq!(
        history_of(&server, &phone),
        (changes as i64 + ids.len() as i64, 0)
    );

    // Nothing to push: the pull's answers are cut and truncated.
    proxy.plan(&[Fault::TruncateAnswer, Fault::CutRequest]);
    sync(&mut phone).expect("the pull completes");
    assert_eq!(proxy.pending(), 0, "every planned fault was met");

    // A network that stays bad: the sync gives up after its attempts, keeping the outbox...
    phone.edit(ids[0], &[("occupation", "厨师")]);
    proxy.plan(&[Fault::CutRequest; 4]);
    let failed = sync(&mut phone);
    assert!(
        matches!(failed, Err(mobile_core::Error::Network(_))),
        "{failed:?}"
    );
    assert_eq!(phone.store.pending_count().expect("pending"), 1);
    // A proxy in front of a server that is down answers 502 in HTML: the same, the server
    // cannot be reached (not a refusal of the officer's session).
    proxy.plan(&[Fault::BadGateway; 4]);
    let failed = sync(&mut phone);
    assert!(
        matches!(&failed, Err(mobile_core::Error::Network(m))
            if m.kind == mobile_core::NetworkKind::Unavailable && m.detail.contains("502")),
        "{failed:?}"
    );
    assert_eq!(phone.store.pending_count().expect("pending"), 1);
    // ...and the next sync, on a good network, finishes.
    sync(&mut phone).expect("completes");
    assert_eq!(phone.store.pending_count().expect("pending"), 0);
    let seen = proxy.seen();
    for fault in [
        "request cut",
        "answer truncated",
        "answer dropped",
        "stalled",
        "bad gateway",
    ] {
        assert!(
            seen.get(fault).copied().unwrap_or(0) > 0,
            "{fault}: {seen:?}"
        );
    }
    let stands = server
        .snapshot()
        .value(ids[0], "occupation")
        .expect("occupation")
        .to_string();
    assert_eq!(stands, "\"厨师\"");
    println!("network faults met: {seen:?}");
}

#[test]
fn pull_pages_travel_gzip_compressed_to_phones_that_accept_it() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let mut phone = Device::new("o1");
    phone.login(&server, "o1");
    capture_persons(&mut phone, 200);
    // The phone's own client asks for gzip and reads it: a whole sync goes through, without the
    // phone's own 2,400 values coming back (the raw pulls below, which do not say what the
    // phone holds, are sent them all).
    let report = sync(&mut phone).expect("sync");
    assert_eq!(report.pushed, 2_400);
    assert!(report.pulled < 2_000, "{report:?}");
    // The same pull, with and without accepting gzip.
    let token = phone.store.access_token_for_tests().expect("signed in");
    let auth = format!("Bearer {token}");
    let body = br#"{"protocol": 1, "limit": 5000}"#;
    let pull = |accept: Option<&str>| {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Authorization", auth.as_str()),
        ];
        if let Some(accept) = accept {
            headers.push(("Accept-Encoding", accept));
        }
        baylink_tests::raw_http::send(
            &server.url,
            "POST",
            "/api/v1/sync/pull",
            &headers,
            body,
            None,
        )
    };
    let (plain, packed) = (pull(None), pull(Some("gzip")));
    assert_eq!((plain.status, packed.status), (200, 200));
    assert!(
        packed
            .head
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{}",
        packed.head
    );
    assert!(!plain.head.to_ascii_lowercase().contains("content-encoding"));
    assert!(
        packed.body.len() * 4 < plain.body.len(),
        "gzip {} bytes against {} plain",
        packed.body.len(),
        plain.body.len()
    );
    println!(
        "a pull page of {} values: {} bytes plain, {} gzip",
        server.snapshot().values.len(),
        plain.body.len(),
        packed.body.len()
    );
}

#[test]
fn a_bootstrap_fetching_its_next_page_ahead_survives_those_requests_failing() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    server.add_officer("o2", VILLAGE);
    let mut first = Device::new("o1");
    first.login(&server, "o1");
    capture_persons(&mut first, 1_000);
    sync(&mut first).expect("sync");
    let values = server.snapshot().values.len();
    assert!(values > 10_000, "three pages: {values}");

    let mut fresh = Device::new("o2");
    fresh.login(&server, "o2");
    let proxy = FaultProxy::start(&server.url);
    fresh
        .store
        .set_server_url(&proxy.url)
        .expect("proxy address saved");
    // Page 1; page 2 asked for ahead, its answer truncated, then asked for again: three more
    // failures and the fourth attempt answered (a request asked for ahead is not one of the
    // four attempts, so without it the sync would give up here); page 3 asked for ahead, its
    // answer dropped, and asked for again.
    proxy.plan(&[
        Fault::Pass,
        Fault::TruncateAnswer,
        Fault::TruncateAnswer,
        Fault::TruncateAnswer,
        Fault::TruncateAnswer,
        Fault::Pass,
        Fault::DropAnswer,
        Fault::Pass,
    ]);
    let report = sync(&mut fresh).expect("the bootstrap completes");
    assert_eq!(proxy.pending(), 0, "every planned fault was met");
    assert_eq!(report.pulled as usize, values);
    assert_eq!(fresh.states(), first.states());
}

#[test]
fn pushes_sent_while_the_one_before_is_settled_lose_nothing_and_double_nothing_on_a_bad_network() {
    // A server taking bodies of 24 KiB at most: 150 persons go in a score of pushes, each sent
    // while the phone settles the answer to the one before.
    let server = Server::start_with(|config| config.max_body_bytes = 24 * 1024);
    let (mut phone, proxy, changes) = officer_behind_proxy(&server);
    // Answers lost after the server applied the push, cut short, requests cut: wherever they
    // fall among the pushes, sent the ordinary way or ahead.
    proxy.plan(&[
        Fault::Pass,
        Fault::Pass,
        Fault::Pass,
        Fault::Pass,
        Fault::Pass,
        Fault::DropAnswer,
        Fault::Pass,
        Fault::TruncateAnswer,
        Fault::Pass,
        Fault::CutRequest,
        Fault::Pass,
        Fault::DropAnswer,
    ]);
    let mut http = CountingAhead {
        http: Http::with_timeout(TIME_LIMIT),
        ready: 0,
    };
    let report = sync_with(&mut phone.store, &mut http, &|_: &str, _, _| {})
        .expect("the sync completes after retries");
    assert_eq!(report.pushed, changes, "{report:?}");
    assert_eq!(phone.store.pending_count().expect("pending"), 0);
    assert_eq!(history_of(&server, &phone), (changes as i64, 0));
    let seen = proxy.seen();
    let requests: u64 = seen.values().sum();
    assert!(requests >= 12, "several pushes: {seen:?}");
    // Made ready while the one before was on its way, and sent on its answer.
    assert!(http.ready >= 3, "pushes made ready: {}", http.ready);
    assert_eq!(proxy.pending(), 0, "every planned fault was met: {seen:?}");
    // The phone holds what the server holds.
    let held = server.snapshot();
    for person in phone
        .store
        .list(EntityKind::Person, None, 200, 0)
        .expect("list")
    {
        let id = uuid::Uuid::parse_str(&person.id).expect("id");
        assert_eq!(
            held.value(id, "name")
                .and_then(|v| v.as_str().map(str::to_owned)),
            phone
                .store
                .get(id)
                .expect("readable")
                .and_then(|r| r.fields.get("name").cloned()),
        );
    }
}
