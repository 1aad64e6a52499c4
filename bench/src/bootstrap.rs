//! A fresh phone's first sync of a whole village over loopback HTTP (login excluded): seconds
//! and bytes on the wire, against a plain HTTP GET of the same records as gzip JSON; then the
//! same phone, up to date, edits 100 records and syncs, against an empty sync.

use std::path::Path;
use std::time::{Duration, Instant};

use baylink_domain::{EntityKind, Input};

use crate::Figure;
use crate::district::PASSWORD;
use crate::proxy::CountingProxy;

fn quiet(_: &str, _: u64, _: u64) {}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Bootstrap of `village` by its officer `username` from the server at `url`, and then
/// `rounds` incremental syncs of 100 edits on the bootstrapped phone; the baseline's GET goes to
/// `baseline_url` (another process, so that its memory is not the server's). `records` is how
/// many records the village holds, to check the phone got them all.
pub fn figures(
    (url, baseline_url): (&str, &str),
    username: &str,
    village: &str,
    records: usize,
    rounds: usize,
) -> Vec<Figure> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let proxy = CountingProxy::start(url);
    let baseline_proxy = CountingProxy::start(baseline_url);

    // Baseline: one GET of the village's records as gzip JSON, decoded and parsed.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let start = Instant::now();
    let text = agent
        .get(format!("{}/bench/village/{village}", baseline_proxy.url))
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("baseline GET")
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .expect("baseline body");
    let json: serde_json::Value = serde_json::from_str(&text).expect("baseline JSON");
    let get_time = start.elapsed();
    let get_bytes = baseline_proxy.bytes().0;
    let got = json.as_array().map_or(0, Vec::len);
    assert_eq!(
        got, records,
        "the baseline answers every record of the village"
    );

    let mut phone = mobile_core::Store::open(dir.path().join("phone.db")).expect("phone store");
    mobile_core::sync::login(&mut phone, &proxy.url, username, PASSWORD, "bench").expect("login");
    let before = proxy.bytes();
    let start = Instant::now();
    let report = mobile_core::sync::sync(&mut phone, &quiet).expect("bootstrap");
    let sync_time = start.elapsed();
    let sync_bytes = proxy.bytes().0 - before.0;
    let mut held = 0;
    for kind in EntityKind::ALL {
        held += phone
            .list(kind, Some(village), u32::MAX, 0)
            .expect("list")
            .len();
    }
    assert_eq!(held, records, "the phone holds every record of the village");

    let mut figures = vec![
        Figure {
            name: format!(
                "fresh phone bootstrap of one village ({records} records, {} values), seconds",
                report.pulled
            ),
            value: sync_time.as_secs_f64(),
            unit: "s".into(),
            baseline: Some(get_time.as_secs_f64()),
            ratio: Some(sync_time.as_secs_f64() / get_time.as_secs_f64()),
        },
        Figure {
            name: "fresh phone bootstrap of one village, bytes received".into(),
            value: sync_bytes as f64,
            unit: "bytes".into(),
            baseline: Some(get_bytes as f64),
            ratio: Some(sync_bytes as f64 / get_bytes as f64),
        },
    ];

    // The bootstrapped phone is up to date: 100 edits and a sync, against an empty sync.
    let persons = phone
        .list(EntityKind::Person, Some(village), 1_000, 0)
        .expect("persons");
    let mut with_changes = Vec::new();
    let mut empty = Vec::new();
    for round in 0..rounds {
        let start = Instant::now();
        mobile_core::sync::sync(&mut phone, &quiet).expect("empty sync");
        empty.push(start.elapsed());
        for (i, person) in persons
            .iter()
            .cycle()
            .skip(round * 100)
            .take(100)
            .enumerate()
        {
            let notes: Input = [("notes".to_owned(), format!("第{round}轮第{i}次修改"))]
                .into_iter()
                .collect();
            let id = person.id.parse().expect("record id");
            phone.edit(id, &notes).expect("edit");
        }
        let start = Instant::now();
        let report = mobile_core::sync::sync(&mut phone, &quiet).expect("sync");
        with_changes.push(start.elapsed());
        assert_eq!(report.pushed, 100);
    }
    let (changes, baseline) = (median(with_changes), median(empty));
    figures.push(Figure {
        name: format!(
            "incremental sync of 100 changes, up-to-date phone holding {records} records, loopback HTTP"
        ),
        value: changes.as_secs_f64() * 1e3,
        unit: "ms".into(),
        baseline: Some(baseline.as_secs_f64() * 1e3),
        ratio: Some(changes.as_secs_f64() / baseline.as_secs_f64()),
    });
    figures
}

/// `baylink-bench phone-bootstrap URL USERNAME DIR`: a phone in a process of its own signs in,
/// bootstraps its village into a fresh store in DIR, and prints its peak resident memory and
/// the values it pulled as JSON. The benchmark's own process holds the district it built, so the
/// phone's memory is measured alone, as on a phone.
pub fn phone_main(url: &str, username: &str, dir: &Path) {
    let mut phone = mobile_core::Store::open(dir.join("phone.db")).expect("phone store");
    mobile_core::sync::login(&mut phone, url, username, PASSWORD, "bench").expect("login");
    let report = mobile_core::sync::sync(&mut phone, &quiet).expect("bootstrap");
    let peak = crate::serve::peak_rss("/proc/self/status");
    println!(
        "{}",
        serde_json::json!({ "peak_rss": peak, "pulled": report.pulled })
    );
}

/// The phone's peak memory while it bootstraps the village (`records` records), in a process of
/// its own (`exe phone-bootstrap`); the budget for a small phone is 150 MiB.
pub fn phone_memory(exe: &Path, url: &str, username: &str, records: usize) -> Vec<Figure> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = std::process::Command::new(exe)
        .arg("phone-bootstrap")
        .args([url, username])
        .arg(dir.path())
        .output()
        .expect("the phone process runs");
    assert!(
        out.status.success(),
        "phone-bootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("phone-bootstrap prints JSON");
    let peak = said["peak_rss"].as_f64().expect("the phone's peak memory");
    assert!(
        said["pulled"].as_u64().is_some_and(|n| n > 0),
        "the phone pulled the village: {said}"
    );
    vec![Figure {
        name: format!(
            "phone peak memory while it bootstraps the village ({records} records), in a process of its own (budget 150 MiB)"
        ),
        value: peak / (1024.0 * 1024.0),
        unit: "MiB".into(),
        baseline: None,
        ratio: None,
    }]
}
