//! An evening's upload: an officer's phone, up to date with its village, captures new persons
//! form by form (one transaction each, as forms are saved), then syncs over loopback HTTP until
//! the outbox is empty. Against the same records sent as one plain JSON POST and stored as one
//! JSON row each (another process, committed as durably). Wall time, the server's and the
//! phone's CPU seconds, bytes sent, and how many of its own values the same sync pulls back.

use std::time::{Duration, Instant};

use baylink_domain::{EntityKind, Input, synthetic};

use crate::Figure;
use crate::district::PASSWORD;
use crate::proxy::CountingProxy;
use crate::serve::{Server, cpu_seconds};

fn quiet(_: &str, _: u64, _: u64) {}

/// The `i`-th new person of `village`: an ID number past the district's, name, phone,
/// occupation and a note, as an officer fills the form.
fn person(i: u64, village: &str) -> Input {
    let n = 90_000_000 + i;
    [
        ("village", village.to_owned()),
        ("id_number", synthetic::resident_id(n)),
        ("name", synthetic::name(n)),
        ("phone", format!("136{:08}", n % 100_000_000)),
        ("occupation", "工人".to_owned()),
        ("notes", format!("晚间补录第{i}份")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Waits until everything written so far is on the disk (`sync`).
fn settle_disk() {
    let synced = std::process::Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync: {synced:?}"
    );
}

/// This process's CPU seconds so far.
fn own_cpu() -> f64 {
    cpu_seconds("/proc/self/stat").unwrap_or(0.0)
}

/// Uploads `count` new persons of `village`, captured by its officer `username` on a fresh
/// phone that first syncs the village (not timed), to `server`; the baseline's POST goes to
/// `baseline`.
pub fn figures(
    server: &Server,
    baseline: &Server,
    username: &str,
    village: &str,
    count: u64,
) -> Vec<Figure> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let proxy = CountingProxy::start(&server.url);
    let mut phone = mobile_core::Store::open(dir.path().join("phone.db")).expect("phone store");
    mobile_core::sync::login(&mut phone, &proxy.url, username, PASSWORD, "bench").expect("login");
    let before =
        mobile_core::sync::sync(&mut phone, &quiet).expect("the village, before the evening");
    // Numbered past the values the village holds: on a kept district, past every person an
    // earlier run uploaded (each added more values than persons), so these are new too.
    let first = before.pulled;
    let mut ids = Vec::with_capacity(count as usize);
    for i in 0..count {
        let id = phone
            .capture(EntityKind::Person, &person(first + i, village))
            .expect("capture");
        ids.push(id);
    }

    // Baseline: the same records (as the phone holds them) in one JSON POST, stored a row each.
    let records: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            let record = phone.get(*id).expect("readable").expect("captured");
            serde_json::json!({ "id": id.to_string(), "kind": "person", "fields": record.fields })
        })
        .collect();
    // The district just built (gigabytes) is still being written back to the disk: timed now,
    // both stores' commits would wait behind that, and the figure would say more of the run
    // than of them. Both start from a disk that has caught up.
    settle_disk();
    let baseline_proxy = CountingProxy::start(&baseline.url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let post_written = baseline.written_bytes();
    let start = Instant::now();
    let body = serde_json::to_vec(&records).expect("JSON");
    let answer = agent
        .post(format!("{}/bench/upload", baseline_proxy.url))
        .header("Content-Type", "application/json")
        .send(&body[..])
        .expect("baseline POST")
        .body_mut()
        .read_to_string()
        .expect("baseline answer");
    let post_time = start.elapsed().as_secs_f64();
    let stored: serde_json::Value = serde_json::from_str(&answer).expect("baseline JSON");
    assert_eq!(stored["stored"].as_u64(), Some(count), "{answer}");
    let post_bytes = baseline_proxy.bytes().1;
    // Its commit is on disk when it answers; the checkpoint after it is counted too (a row each
    // is the least a store writes).
    let post_written = baseline
        .written_bytes()
        .zip(post_written)
        .map(|(a, b)| a.saturating_sub(b));

    // The upload: one sync, until the push is answered and the outbox is empty.
    settle_disk();
    let (server_cpu, phone_cpu, sent) = (server.cpu_seconds(), own_cpu(), proxy.bytes().1);
    let written = server.written_bytes();
    let start = Instant::now();
    let report = mobile_core::sync::sync(&mut phone, &quiet).expect("upload");
    let upload_time = start.elapsed().as_secs_f64();
    let server_cpu = server
        .cpu_seconds()
        .zip(server_cpu)
        .map_or(0.0, |(a, b)| a - b);
    let phone_cpu = own_cpu() - phone_cpu;
    let written = server
        .written_bytes()
        .zip(written)
        .map(|(a, b)| a.saturating_sub(b));
    let sent = proxy.bytes().1 - sent;
    assert_eq!(
        phone.pending_count().expect("outbox"),
        0,
        "the outbox is empty"
    );
    let values = report.pushed;
    let name = |what: &str| {
        format!("upload of {count} persons captured form by form ({values} values), {what}")
    };
    vec![
        Figure {
            name: name("seconds until the outbox is empty"),
            value: upload_time,
            unit: "s".into(),
            baseline: Some(post_time),
            ratio: Some(upload_time / post_time),
        },
        Figure {
            name: name("server CPU seconds"),
            value: server_cpu,
            unit: "s".into(),
            baseline: None,
            ratio: None,
        },
        Figure {
            name: name("phone CPU seconds (with the byte-counting relay)"),
            value: phone_cpu,
            unit: "s".into(),
            baseline: None,
            ratio: None,
        },
        Figure {
            name: name("bytes sent"),
            value: sent as f64,
            unit: "bytes".into(),
            baseline: Some(post_bytes as f64),
            ratio: Some(sent as f64 / post_bytes as f64),
        },
        Figure {
            name: name("bytes the server wrote (its log, checkpoints and answers)"),
            value: written.unwrap_or(0) as f64,
            unit: "bytes".into(),
            baseline: post_written.filter(|b| *b > 0).map(|b| b as f64),
            ratio: written
                .zip(post_written)
                .filter(|(_, b)| *b > 0)
                .map(|(a, b)| a as f64 / b as f64),
        },
        Figure {
            name: name("values the same sync pulled back"),
            value: report.pulled as f64,
            unit: "values".into(),
            baseline: None,
            ratio: None,
        },
    ]
}
