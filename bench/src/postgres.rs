//! The figures again with the server's data on PostgreSQL, each beside the same figure on SQLite
//! measured earlier in the run: the district built in a fresh database of the cluster (ingest
//! from 1 and from 50 devices timed on the way), then served by two server processes over that
//! database; a fresh phone bootstraps the large village through one node, and the run's phones
//! push and pull spread over both.

use std::time::Duration;

use crate::{
    Figure, Options, bootstrap, built_of, counts, district, fill_rest, ingest, load, serve,
};

/// `figure` on PostgreSQL beside the figure of the same name on SQLite: the ratio is
/// PostgreSQL's speed as a share of SQLite's (above 1: faster).
fn beside(mut figure: Figure, sqlite: &[Figure]) -> Figure {
    // Counts of failed requests stand alone: zero is no baseline.
    let same = sqlite
        .iter()
        .filter(|_| figure.unit != "requests")
        .find(|f| key(&f.name) == key(&figure.name));
    figure.baseline = same.map(|f| f.value);
    figure.ratio = same.and_then(|f| {
        let faster_when_higher = figure.unit.ends_with("/s");
        let (pg, lite) = (figure.value, f.value);
        match faster_when_higher {
            true if lite > 0.0 => Some(pg / lite),
            false if pg > 0.0 => Some(lite / pg),
            _ => None,
        }
    });
    figure.name = format!("PostgreSQL: {}", figure.name);
    figure
}

/// A figure's name without what varies from run to run (how many requests the phones made).
fn key(name: &str) -> String {
    match (name.find(" ("), name.find(" s)")) {
        (Some(open), Some(close)) if name[open..close].contains(" requests in ") => {
            format!("{}{}", &name[..open], &name[close + 3..])
        }
        _ => name.to_owned(),
    }
}

fn rate(changes: usize, time: Duration) -> f64 {
    changes as f64 / time.as_secs_f64()
}

/// Measures on a fresh database of `cluster`, beside `sqlite`, the run's figures on SQLite.
pub fn figures(options: &Options, cluster: &str, sqlite: &[Figure]) -> Vec<Figure> {
    let fresh = baylink_server::store::pg::FreshDatabase::new(cluster)
        .expect("a fresh PostgreSQL database");
    let database = fresh.url.clone();
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("server");
    let mut out = Vec::new();

    let (db, officers) = district::create_on(&data, options.devices, Some(&database));
    let counts = counts(options.scale);
    let (one, took) = ingest::push_one(&db, &officers, counts, options.push_changes);
    out.push(Figure {
        name: format!(
            "server ingest, 1 device ({} changes{})",
            one.len(),
            ingest::pushes(options.push_changes)
        ),
        value: rate(one.len(), took),
        unit: "changes/s".into(),
        baseline: None,
        ratio: None,
    });
    let (all, took) = ingest::push_fifty(&db, &officers, counts, options.push_changes);
    out.push(Figure {
        name: format!(
            "server ingest, 50 devices at once ({} changes{})",
            all.len(),
            ingest::pushes(options.push_changes)
        ),
        value: rate(all.len(), took),
        unit: "changes/s".into(),
        baseline: None,
        ratio: None,
    });
    fill_rest(&db, &officers, options);
    let built = built_of(&db, &data);
    drop(db);

    // Two nodes over the one database; each its own data directory (nothing is kept there).
    let nodes = [
        serve::Server::spawn_on(&options.server_exe, &data, Some(&database)),
        serve::Server::spawn_on(
            &options.server_exe,
            &dir.path().join("second"),
            Some(&database),
        ),
    ];
    // The plain GET of the village, from the same database, in a process of its own.
    let baseline = serve::Server::spawn_on(
        &options.server_exe,
        &dir.path().join("plain"),
        Some(&database),
    );
    let large = built.villages.last().expect("villages");
    out.extend(bootstrap::figures(
        (&nodes[0].url, &baseline.url),
        &district::officer_username(large),
        large,
        built.large_records,
        options.sync_rounds,
    ));
    let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
    let spread = load::figures(
        &urls,
        &built.villages,
        options.devices,
        built.seq,
        options.load_seconds,
        options.think_ms,
    );
    // Beside the one node on SQLite: the same phones, the same figure names but the nodes'.
    let one_node = |name: &str| name.replace(" across 2 nodes", "");
    out.extend(spread.into_iter().map(|mut f| {
        let plain = one_node(&f.name);
        let named = std::mem::replace(&mut f.name, plain);
        let mut f = beside(f, sqlite);
        f.name = format!("PostgreSQL: {named}");
        f
    }));
    drop(nodes);
    drop(baseline);
    drop(fresh);
    out.into_iter()
        .map(|f| {
            if f.name.starts_with("PostgreSQL: ") {
                f
            } else {
                beside(f, sqlite)
            }
        })
        .collect()
}
