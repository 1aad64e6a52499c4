//! The district benchmark: Daya Bay's 64 villages filled deterministically (about 400,000
//! persons, 100,000 houses and 1,000,000 vehicles at scale 1; `scale` multiplies) plus one large
//! village to bootstrap, and every figure measured on it beside a baseline measured in the same
//! run: device capture and search, server ingest, bootstrap, incremental sync, many phones at
//! once, and the server's peak memory.

pub mod bootstrap;
pub mod capture;
pub mod district;
pub mod ingest;
pub mod load;
pub mod postgres;
pub mod proxy;
pub mod retention;
pub mod search;
pub mod serve;
pub mod upload;

use std::path::{Path, PathBuf};

use baylink_server::demo::Counts;

/// One measured figure and its baseline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figure {
    /// What is measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The baseline measured in the same run, if the figure has one.
    pub baseline: Option<f64>,
    /// How the value compares with the baseline: for rates baseline time / store time (higher
    /// is better), for times and sizes value / baseline (lower is better).
    pub ratio: Option<f64>,
}

/// The district at `scale`: per-village counts.
pub fn counts(scale: f64) -> Counts {
    let per_village = |district: f64| ((district * scale / 64.0).round() as u64).max(1);
    Counts {
        persons: per_village(400_000.0),
        houses: per_village(100_000.0),
        vehicles: per_village(1_000_000.0),
        mistyped: false,
    }
}

/// The large village a fresh phone bootstraps: `persons` with houses and vehicles in the
/// district's proportions (a house per four persons, five vehicles per two).
pub fn large_village(persons: u64) -> Counts {
    Counts {
        persons,
        houses: (persons / 4).max(1),
        vehicles: persons * 5 / 2,
        mistyped: false,
    }
}

/// What a run measures, and how big.
#[derive(Clone, Debug)]
pub struct Options {
    /// The district's scale (1: Daya Bay).
    pub scale: f64,
    /// Persons in the village bootstrapped (the 64th village, whatever the scale).
    pub bootstrap_persons: u64,
    /// Persons captured on a phone.
    pub capture_count: u64,
    /// New persons an officer's phone captures form by form and uploads.
    pub upload_count: u64,
    /// Records on the phone searched.
    pub search_records: u64,
    /// Incremental syncs measured.
    pub sync_rounds: usize,
    /// Phones at once.
    pub devices: usize,
    /// How long they run, seconds.
    pub load_seconds: f64,
    /// Mean wait between a phone's rounds, milliseconds.
    pub think_ms: u64,
    /// Changes per push, at most, as the district is built (a current phone's
    /// [`mobile_core::sync::PUSH_BATCH`]; [`district::OLD_BATCH`] as protocol 2's phones sent).
    pub push_changes: usize,
    /// Where to build the district and keep it; a directory already holding one is served as
    /// it is (capture, search and ingest are then not measured; the upload adds new persons to
    /// it). A temporary directory if unset.
    pub keep: Option<PathBuf>,
    /// The benchmark binary, which serves the district in its own process (`serve DIR`).
    pub server_exe: PathBuf,
    /// A PostgreSQL cluster (a connection string) to measure again on, beside SQLite: the
    /// district built in a fresh database of it, served by two nodes.
    pub postgres: Option<String>,
}

/// A district on disk, ready to serve.
struct Built {
    data: PathBuf,
    villages: Vec<String>,
    seq: i64,
    large_records: usize,
}

/// Builds the district in `dir` (ingest measured on the way) or, when `dir` already holds one
/// (`--keep`), opens it as it is.
fn build(options: &Options, dir: &Path, add: &mut dyn FnMut(Vec<Figure>)) -> Built {
    let data = dir.join("server");
    let built = data.join("baylink.db").exists();
    let db = if built {
        baylink_server::store::Db::open(&data.join("baylink.db")).expect("kept district")
    } else {
        let (db, officers) = district::create(&data, options.devices);
        add(ingest::figures(
            &db,
            &officers,
            counts(options.scale),
            options.push_changes,
            dir,
        ));
        fill_rest(&db, &officers, options);
        db
    };
    built_of(&db, &data)
}

/// The rest of the district after the ingest's 51 villages, untimed; the last village is the
/// large one.
fn fill_rest(db: &baylink_server::store::Db, officers: &[district::Officer], options: &Options) {
    let last = officers.len() - 1;
    let counts = counts(options.scale);
    std::thread::scope(|s| {
        for (i, officer) in officers.iter().enumerate().skip(51) {
            let counts = if i == last {
                large_village(options.bootstrap_persons)
            } else {
                counts
            };
            s.spawn(move || {
                let changes = district::changes_of(i, officer, counts);
                district::push_all(db, &officer.caller, &changes, options.push_changes);
            });
        }
    });
}

/// What a built district holds, read from its database.
fn built_of(db: &baylink_server::store::Db, data: &Path) -> Built {
    db.call_blocking(|c| {
        let villages: Vec<String> = c
            .prepare("SELECT code FROM village ORDER BY code")?
            .query_map((), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let seq = baylink_server::store::values::current_seq(c)?;
        let large = villages.last().cloned().unwrap_or_default();
        let records: i64 = c.query_row(
            "SELECT count(*) FROM scope WHERE village = ?1",
            [&large],
            |r| r.get(0),
        )?;
        Ok(Built {
            data: data.to_owned(),
            villages,
            seq,
            large_records: records as usize,
        })
    })
    .expect("district built")
}

/// Measures every figure, reporting each as it is measured.
pub fn run(options: &Options, report: &mut dyn FnMut(&Figure)) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut add = |new: Vec<Figure>| {
        for f in new {
            report(&f);
            figures.push(f);
        }
    };
    let temporary = tempfile::tempdir().expect("temporary directory");
    let dir = options.keep.as_deref().unwrap_or(temporary.path());
    let kept = dir.join("server").join("baylink.db").exists();
    if !kept {
        add(capture::figures(options.capture_count, 3));
        add(search::figures(options.search_records));
    }
    let built = build(options, dir, &mut add);

    // The baseline's plain JSON endpoint runs in a process of its own, so that the memory it
    // takes to build a village's JSON is not counted as the server's.
    let baseline = serve::Server::spawn(&options.server_exe, &built.data);
    let server = serve::Server::spawn(&options.server_exe, &built.data);
    let large = built.villages.last().expect("villages");
    add(bootstrap::figures(
        (&server.url, &baseline.url),
        &district::officer_username(large),
        large,
        built.large_records,
        options.sync_rounds,
    ));
    add(bootstrap::phone_memory(
        &options.server_exe,
        &server.url,
        &district::officer_username(large),
        built.large_records,
    ));
    add(load::figures(
        &[&server.url],
        &built.villages,
        options.devices,
        built.seq,
        options.load_seconds,
        options.think_ms,
    ));
    let peak = server.peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    add(vec![Figure {
        name: "server process peak memory (serving the district through all of the above)".into(),
        value: peak,
        unit: "MiB".into(),
        baseline: None,
        ratio: None,
    }]);
    // Last, as it grows the first village by the persons uploaded: an evening's upload (on a
    // kept district too, of persons past those earlier runs uploaded).
    let first = built.villages.first().expect("villages");
    add(upload::figures(
        &server,
        &baseline,
        &district::officer_username(first),
        first,
        options.upload_count,
    ));
    drop(server);
    drop(baseline);
    // The same figures on PostgreSQL, beside these.
    if let Some(cluster) = &options.postgres {
        let on_postgres = postgres::figures(options, cluster, &figures);
        for f in &on_postgres {
            report(f);
        }
        figures.extend(on_postgres);
    }
    figures
}
