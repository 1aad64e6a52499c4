//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4): requests by route and
//! status with latency histograms, push changes accepted and refused by reason, pull pages,
//! login failures and throttles, and at each scrape the database's and its log's size and the
//! devices active in the last day. Counted in this process; a scraper sums the nodes. No label
//! carries anything personal: routes are templates, never paths with ids or queries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histograms' buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// One route's latency histogram.
#[derive(Clone, Default)]
pub struct Histogram {
    /// Observations at or below each bound.
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    const EMPTY: Histogram = Histogram {
        counts: [0; BUCKETS.len()],
        count: 0,
        sum: 0.0,
    };

    fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (count, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n{name}_sum{braces} {}\n{name}_count{braces} {}",
            self.count, self.sum, self.count
        );
    }
}

/// Checkpoints of the write-ahead log that copied frames, in this process (the checkpoint
/// thread beside the writer, `store::checkpoint`, knows no handler state).
static CHECKPOINTS: Mutex<Histogram> = Mutex::new(Histogram::EMPTY);

/// A checkpoint that copied frames took this long.
pub fn checkpointed(took: Duration) {
    lock(&CHECKPOINTS).observe(took);
}

/// Commits of pushes on the SQLite writer, and the pushes they held (`store::group`: pushes
/// waiting together are applied in one commit).
static PUSH_COMMITS: AtomicU64 = AtomicU64::new(0);
static PUSHES_COMMITTED: AtomicU64 = AtomicU64::new(0);

/// A commit of `pushes` pushes (applied together, or 1 alone).
pub fn push_commit(pushes: usize) {
    PUSH_COMMITS.fetch_add(1, Ordering::Relaxed);
    PUSHES_COMMITTED.fetch_add(pushes as u64, Ordering::Relaxed);
}

/// Connections closed on arrival: their address already held as many as it may.
static CONNECTIONS_REFUSED: AtomicU64 = AtomicU64::new(0);

/// A connection refused on arrival for its address's limit.
pub fn connection_refused() {
    CONNECTIONS_REFUSED.fetch_add(1, Ordering::Relaxed);
}

/// What this server process counted since it started.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    accepted: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    pull_pages: AtomicU64,
    login_failures: AtomicU64,
    login_throttled: AtomicU64,
}

/// Figures read at each scrape.
pub struct Gauges {
    /// Bytes of the database file (SQLite only: `None` on PostgreSQL).
    pub database_bytes: Option<u64>,
    /// Bytes of its write-ahead log (SQLite only).
    pub wal_bytes: Option<u64>,
    /// Devices that synced in the last 24 hours.
    pub active_devices: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// A request answered: its route template (`"unmatched"` when none), method, status, time.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        *lock(&self.requests)
            .entry((route.to_owned(), method_label(method).to_owned(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(route.to_owned())
            .or_default()
            .observe(took);
    }

    /// A push answered: how many changes were accepted, and the refusal codes of the others.
    pub fn push<'a>(&self, accepted: u64, refused: impl Iterator<Item = &'a str>) {
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        let mut counts = lock(&self.refused);
        for code in refused {
            *counts.entry(code.to_owned()).or_default() += 1;
        }
    }

    /// A pull page sent.
    pub fn pull_page(&self) {
        self.pull_pages.fetch_add(1, Ordering::Relaxed);
    }

    /// A login refused for its password (or unknown name).
    pub fn login_failed(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A login refused by the throttle before its password was checked.
    pub fn login_throttled(&self) {
        self.login_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "baylink_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "baylink_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        family(
            &mut out,
            "baylink_http_request_duration_seconds",
            "histogram",
            "Time to answer a request, by route template.",
        );
        for (route, h) in lock(&self.latency).iter() {
            h.write(
                &mut out,
                "baylink_http_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        family(
            &mut out,
            "baylink_checkpoint_duration_seconds",
            "histogram",
            "Time of the checkpoints that copied the write-ahead log into the database.",
        );
        lock(&CHECKPOINTS).write(&mut out, "baylink_checkpoint_duration_seconds", "");
        for (name, help, n) in [
            (
                "baylink_push_commits_total",
                "Commits of pushes on the SQLite writer (pushes waiting together share one).",
                &PUSH_COMMITS,
            ),
            (
                "baylink_push_commit_pushes_total",
                "Pushes those commits held.",
                &PUSHES_COMMITTED,
            ),
            (
                "baylink_connections_refused_total",
                "Connections closed on arrival: their client address already held as many as it may.",
                &CONNECTIONS_REFUSED,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", n.load(Ordering::Relaxed));
        }
        family(
            &mut out,
            "baylink_push_changes_total",
            "counter",
            "Changes pushed, by result (accepted, or the refusal's code).",
        );
        let _ = writeln!(
            out,
            "baylink_push_changes_total{{result=\"accepted\"}} {}",
            self.accepted.load(Ordering::Relaxed)
        );
        for (code, n) in lock(&self.refused).iter() {
            let _ = writeln!(
                out,
                "baylink_push_changes_total{{result=\"{}\"}} {n}",
                escape(code)
            );
        }
        let counters = [
            (
                "baylink_pull_pages_total",
                "Pull pages sent.",
                &self.pull_pages,
            ),
            (
                "baylink_login_failures_total",
                "Logins refused for their password or name.",
                &self.login_failures,
            ),
            (
                "baylink_login_throttled_total",
                "Logins refused by the throttle.",
                &self.login_throttled,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "baylink_database_bytes",
                "Size of the database file.",
                gauges.database_bytes,
            ),
            (
                "baylink_database_wal_bytes",
                "Size of the database's write-ahead log.",
                gauges.wal_bytes,
            ),
            (
                "baylink_active_devices",
                "Devices that synced in the last 24 hours.",
                Some(gauges.active_devices),
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else {
                continue;
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// A method as a label: the client chooses it, and a label a client can vary without end would
/// grow the counters without end, so any but the usual ones is `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// A label value as the format wants it (backslash, quote and line break escaped).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_are_written_in_the_exposition_format() {
        let m = Metrics::default();
        m.request("/api/v1/sync/push", "POST", 200, Duration::from_millis(3));
        m.request("/api/v1/sync/push", "POST", 200, Duration::from_millis(300));
        m.request("/api/v1/sync/push", "POST", 401, Duration::from_millis(1));
        m.push(7, ["out_of_scope", "out_of_scope", "invalid"].into_iter());
        // Methods a client makes up share one label.
        for n in 0..50 {
            m.request("unmatched", &format!("X{n}"), 404, Duration::from_millis(1));
        }
        m.login_failed();
        let text = m.render(&Gauges {
            database_bytes: Some(4096),
            wal_bytes: Some(0),
            active_devices: 2,
        });
        for line in [
            "baylink_http_requests_total{route=\"/api/v1/sync/push\",method=\"POST\",status=\"200\"} 2",
            "baylink_http_requests_total{route=\"/api/v1/sync/push\",method=\"POST\",status=\"401\"} 1",
            "baylink_http_request_duration_seconds_bucket{route=\"/api/v1/sync/push\",le=\"0.005\"} 2",
            "baylink_http_request_duration_seconds_bucket{route=\"/api/v1/sync/push\",le=\"+Inf\"} 3",
            "baylink_http_request_duration_seconds_count{route=\"/api/v1/sync/push\"} 3",
            "baylink_push_changes_total{result=\"accepted\"} 7",
            "baylink_push_changes_total{result=\"out_of_scope\"} 2",
            "baylink_login_failures_total 1",
            "baylink_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 50",
            "baylink_database_bytes 4096",
            "baylink_active_devices 2",
            "# TYPE baylink_checkpoint_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        checkpointed(Duration::from_millis(40));
        let text = m.render(&Gauges {
            database_bytes: Some(0),
            wal_bytes: Some(0),
            active_devices: 0,
        });
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("baylink_checkpoint_duration_seconds_count "))
            .and_then(|n| n.parse::<u64>().ok());
        assert!(count.is_some_and(|n| n >= 1), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("baylink_checkpoint_duration_seconds_bucket{le=\"0.05\"} "))
        );
    }

    #[test]
    fn the_sample_dashboard_asks_for_metrics_this_server_has() {
        let text = Metrics::default().render(&Gauges {
            database_bytes: Some(0),
            wal_bytes: Some(0),
            active_devices: 0,
        });
        let dashboard = include_str!("../../docs/grafana-dashboard.json");
        let mut asked = 0;
        for (at, _) in dashboard.match_indices("baylink_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(text.contains(&format!("# TYPE {family} ")), "{name}");
            asked += 1;
        }
        assert!(asked >= 8, "{asked}");
    }
}
