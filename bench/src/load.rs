//! Many phones at once against one server over loopback HTTP: each signs in, then in rounds
//! waits a little (an officer between two forms), pushes a new registration and pulls what its
//! village's other phones wrote. Each request's latency is recorded; any failure is an error.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use baylink_domain::date::CHINA_OFFSET_MINUTES;
use baylink_domain::{Date, EntityKind, Input, natural_id, synthetic, validate_capture};
use baylink_server::store::now_ms;
use baylink_sync::{Change, ChangeId, Clock, NodeId, Stamp};
use mobile_core::sync::Client;
use uuid::Uuid;

use crate::Figure;
use crate::district::{PASSWORD, extra_username};

/// What one phone saw.
#[derive(Default)]
struct Tally {
    pushes: Vec<Duration>,
    pulls: Vec<Duration>,
    errors: Vec<String>,
}

/// A small deterministic generator (xorshift), for think times.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A new person registered in `village` as the `d`-th phone's `round`-th form.
fn registration(
    d: usize,
    round: usize,
    village: &str,
    node: NodeId,
    clock: &mut Clock,
    counter: &mut u64,
) -> Vec<Change> {
    let today = Date::from_unix_ms(now_ms() as i64, CHINA_OFFSET_MINUTES);
    // Synthetic persons past the district's (villages use 0 to 63 million).
    let n = 64_000_000 + d as u64 * 100_000 + round as u64;
    let form: Input = [
        ("village", village.to_owned()),
        ("id_number", synthetic::resident_id(n)),
        ("name", synthetic::name(n)),
        ("phone", format!("137{:08}", n % 100_000_000)),
        ("occupation", "工人".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let fields = validate_capture(EntityKind::Person, &form, today).expect("a valid person");
    let entity = natural_id(EntityKind::Person, &fields).unwrap_or_else(Uuid::new_v4);
    let stamp = Stamp::new(clock.tick(now_ms()), node);
    fields
        .into_iter()
        .map(|(field, value)| {
            *counter += 1;
            Change {
                id: ChangeId {
                    device: node,
                    counter: *counter,
                },
                kind: "person".into(),
                entity,
                field,
                value,
                stamp,
                base: None,
            }
        })
        .collect()
}

/// One phone's session: sign in, then rounds of think, push, pull until `until`.
fn phone(
    url: &str,
    d: usize,
    village: &str,
    seq: i64,
    think_ms: u64,
    (signed_in, seconds): (&Barrier, f64),
) -> Tally {
    let mut tally = Tally::default();
    let client = Client::new(url, Duration::from_secs(30));
    let node = NodeId(Uuid::new_v4());
    // Every phone signs in first (password hashing is the server's costliest call, and not what
    // is measured); the rounds start together.
    // An address has at most 64 sign-ins in flight (the throttle's bound on guessing): the 200
    // phones, all on loopback, are told to retry, and do, as an app does.
    let mut login = client.login(&extra_username(d), PASSWORD, node, "bench", None);
    for _ in 0..30 {
        match &login {
            Err(mobile_core::Error::Server { status: 429, .. }) => {
                std::thread::sleep(Duration::from_millis(200 + d as u64 % 50 * 20));
                login = client.login(&extra_username(d), PASSWORD, node, "bench", None);
            }
            _ => break,
        }
    }
    signed_in.wait();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let tokens = match login {
        Ok(tokens) => tokens,
        Err(e) => {
            tally.errors.push(format!("login: {e}"));
            return tally;
        }
    };
    // The phone is up to date with the district as built: it starts at the current position.
    let mut cursor = Some(format!("s{seq}:{village}"));
    let (mut clock, mut counter, mut rng) = (Clock::default(), 0u64, Rng(d as u64 * 7_919 + 1));
    let mut round = 0;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(rng.below(think_ms * 2)));
        let changes = registration(d, round, village, node, &mut clock, &mut counter);
        let start = Instant::now();
        match client.push(&tokens.access_token, node, changes) {
            Ok(answer) => {
                tally.pushes.push(start.elapsed());
                let refused = answer
                    .results
                    .iter()
                    .filter(|r| r.status != baylink_sync::wire::ChangeStatus::Accepted)
                    .count();
                if refused > 0 {
                    tally.errors.push(format!("push: {refused} refused"));
                }
            }
            Err(e) => tally.errors.push(format!("push: {e}")),
        }
        loop {
            let start = Instant::now();
            match client.pull(&tokens.access_token, cursor.clone(), 2_000, None) {
                Ok(page) => {
                    tally.pulls.push(start.elapsed());
                    cursor = Some(page.next_cursor.0);
                    if !page.more {
                        break;
                    }
                }
                Err(e) => {
                    tally.errors.push(format!("pull: {e}"));
                    break;
                }
            }
        }
        round += 1;
    }
    tally
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// `devices` phones (the district's extra officers, `d % 64`-th village each) for `seconds`,
/// each waiting 0 to 2 × `think_ms` between rounds; `villages` in code order and `seq` the
/// server's current sequence number (the phones start up to date).
pub fn figures(
    urls: &[&str],
    villages: &[String],
    devices: usize,
    seq: i64,
    seconds: f64,
    think_ms: u64,
) -> Vec<Figure> {
    let signed_in = Barrier::new(devices);
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .map(|d| {
                let village = &villages[d % villages.len()];
                let start = (&signed_in, seconds);
                // Phones spread over the nodes, as a load balancer would.
                let url = urls[d % urls.len()];
                s.spawn(move || phone(url, d, village, seq, think_ms, start))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("phone thread"))
            .collect()
    });
    let sorted = |of: fn(&Tally) -> &Vec<Duration>| {
        let mut all: Vec<Duration> = tallies.iter().flat_map(|t| of(t).clone()).collect();
        all.sort_unstable();
        all
    };
    let (pushes, pulls) = (sorted(|t| &t.pushes), sorted(|t| &t.pulls));
    let mut latencies: Vec<Duration> = pushes.iter().chain(&pulls).copied().collect();
    latencies.sort_unstable();
    let errors: Vec<&String> = tallies.iter().flat_map(|t| &t.errors).collect();
    if let Some(first) = errors.first() {
        eprintln!("{} errors under load, the first: {first}", errors.len());
    }
    let requests = latencies.len() + errors.len();
    let nodes = match urls.len() {
        1 => String::new(),
        n => format!(" across {n} nodes"),
    };
    let name = |what: &str| {
        format!(
            "{devices} concurrent phones{nodes}, push and pull ({requests} requests in {seconds:.0} s), {what}"
        )
    };
    vec![
        Figure {
            name: name("p50 latency"),
            value: percentile(&latencies, 0.50),
            unit: "ms".into(),
            baseline: None,
            ratio: None,
        },
        Figure {
            name: name("p99 latency"),
            value: percentile(&latencies, 0.99),
            unit: "ms".into(),
            baseline: None,
            ratio: None,
        },
        Figure {
            name: name("pushes' p99 latency"),
            value: percentile(&pushes, 0.99),
            unit: "ms".into(),
            baseline: None,
            ratio: None,
        },
        Figure {
            name: name("pulls' p99 latency"),
            value: percentile(&pulls, 0.99),
            unit: "ms".into(),
            baseline: None,
            ratio: None,
        },
        Figure {
            name: name("errors"),
            value: errors.len() as f64,
            unit: "requests".into(),
            baseline: None,
            ratio: None,
        },
    ]
}
