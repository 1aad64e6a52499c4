//! `baylink-bench [--scale F] [--bootstrap-persons N] [--capture N] [--upload N] [--devices N]
//! [--seconds S] [--think-ms M] [--push-changes N] [--keep DIR] [--postgres CONNINFO]` (or
//! `--help`): builds the district (scale 1: about 400,000 persons, 100,000 houses, 1,000,000
//! vehicles in 64 villages, the last one a village of 20,000 persons) and prints each figure
//! beside its baseline, as a table and as JSON; with `--postgres`, the server's figures again on a fresh database of that
//! PostgreSQL cluster, beside SQLite's.
//! `baylink-bench serve DIR` is the district's server process it starts.

/// The server's allocator (`baylink-server`'s `main.rs`): this binary is also the district's
/// server process (`serve`). Its phone side allocates with it too, which a phone app does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    let Some(text) = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
    else {
        return default;
    };
    text.parse().unwrap_or_else(|_| {
        eprintln!("baylink-bench: {name} `{text}` is not a number");
        std::process::exit(2);
    })
}

/// Options that take a value; anything else is a mistake, not a full run of most of an hour.
const OPTIONS: [&str; 10] = [
    "--scale",
    "--bootstrap-persons",
    "--capture",
    "--upload",
    "--devices",
    "--seconds",
    "--think-ms",
    "--push-changes",
    "--keep",
    "--postgres",
];

const USAGE: &str = "usage: baylink-bench [--scale F] [--bootstrap-persons N] [--capture N] \
[--upload N] [--devices N] [--seconds S] [--think-ms M] [--push-changes N] [--keep DIR] \
[--postgres CONNINFO]
       baylink-bench serve DIR
       baylink-bench phone-bootstrap URL USERNAME DIR
       baylink-bench retention [--scale F]   (a simulated year, then a compaction; 0.01)
A full run (scale 1) takes most of an hour and 13 GB of disk; see docs/performance.md.";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let dir = args.get(2).expect("baylink-bench serve DIR");
        baylink_bench::serve::main(std::path::Path::new(dir));
        return;
    }
    if let (Some("phone-bootstrap"), Some(url), Some(username), Some(dir)) = (
        args.get(1).map(String::as_str),
        args.get(2),
        args.get(3),
        args.get(4),
    ) {
        baylink_bench::bootstrap::phone_main(url, username, std::path::Path::new(dir));
        return;
    }
    if args.get(1).map(String::as_str) == Some("retention") {
        let dir = tempfile::tempdir().expect("temporary directory");
        baylink_bench::retention::main(arg(&args, "--scale", 0.01), dir.path());
        return;
    }
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            return;
        }
        if !OPTIONS.contains(&a.as_str()) || rest.next().is_none() {
            eprintln!("baylink-bench: `{a}` is not an option here (or lacks its value)\n{USAGE}");
            std::process::exit(2);
        }
    }
    if arg(&args, "--push-changes", 1usize) == 0 {
        eprintln!("baylink-bench: --push-changes must be at least 1\n{USAGE}");
        std::process::exit(2);
    }
    let options = baylink_bench::Options {
        scale: arg(&args, "--scale", 1.0),
        bootstrap_persons: arg(&args, "--bootstrap-persons", 20_000),
        capture_count: arg(&args, "--capture", 100_000),
        upload_count: arg(&args, "--upload", 100_000),
        search_records: 100_000,
        sync_rounds: 21,
        devices: arg(&args, "--devices", 200),
        load_seconds: arg(&args, "--seconds", 30.0),
        think_ms: arg(&args, "--think-ms", 1_000),
        push_changes: arg(&args, "--push-changes", mobile_core::sync::PUSH_BATCH),
        keep: args
            .iter()
            .position(|a| a == "--keep")
            .and_then(|i| args.get(i + 1))
            .map(Into::into),
        server_exe: std::env::current_exe().expect("this program's path"),
        postgres: args
            .iter()
            .position(|a| a == "--postgres")
            .and_then(|i| args.get(i + 1))
            .cloned(),
    };
    let counts = baylink_bench::counts(options.scale);
    println!(
        "district at scale {}: per village {} persons, {} houses, {} vehicles (63 villages), \
         and a village of {} persons to bootstrap",
        options.scale, counts.persons, counts.houses, counts.vehicles, options.bootstrap_persons
    );
    let unit = |v: f64, unit: &str| match unit {
        "bytes" => format!("{:.0} KB", v / 1000.0),
        _ => format!("{v:.1} {unit}"),
    };
    let figures = baylink_bench::run(&options, &mut |f| match (f.baseline, f.ratio) {
        (Some(b), Some(r)) => eprintln!(
            "measured: {} = {} (baseline {}, ratio {r:.2})",
            f.name,
            unit(f.value, &f.unit),
            unit(b, &f.unit)
        ),
        _ => eprintln!("measured: {} = {}", f.name, unit(f.value, &f.unit)),
    });
    println!("\n| figure | value | baseline | ratio |\n| --- | ---: | ---: | ---: |");
    for f in &figures {
        println!(
            "| {} | {} | {} | {} |",
            f.name,
            unit(f.value, &f.unit),
            f.baseline.map_or("—".into(), |b| unit(b, &f.unit)),
            f.ratio.map_or("—".into(), |r| format!("{r:.2}")),
        );
    }
    println!(
        "\n{}",
        serde_json::to_string_pretty(&figures).unwrap_or_default()
    );
}
