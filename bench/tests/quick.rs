//! A small run of the district benchmark in every test run, so that it cannot rot: every figure
//! is measured, and those with baselines stand beside a positive one.

#[test]
fn a_small_district_is_measured_with_baselines() {
    let options = baylink_bench::Options {
        scale: 0.001,
        bootstrap_persons: 40,
        capture_count: 400,
        upload_count: 300,
        search_records: 2_000,
        sync_rounds: 2,
        devices: 8,
        load_seconds: 1.0,
        think_ms: 50,
        // Small pushes, so that each village goes in several.
        push_changes: 100,
        keep: None,
        server_exe: env!("CARGO_BIN_EXE_baylink-bench").into(),
        // The server's figures again on PostgreSQL, where the test script runs one.
        postgres: baylink_server::store::pg::test_postgres(),
    };
    let figures = baylink_bench::run(&options, &mut |_| {});
    let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
    for expected in [
        "device capture",
        "device search",
        "server ingest, 1 device",
        "server ingest, 50 devices",
        "bootstrap of one village (",
        "bootstrap of one village, bytes",
        "incremental sync",
        "p99 latency",
        "errors",
        "peak memory",
        "phone peak memory while it bootstraps",
        "seconds until the outbox is empty",
        "server CPU seconds",
        "bytes sent",
        "bytes the server wrote",
        "pulled back",
    ] {
        assert!(
            names.iter().any(|n| n.contains(expected)),
            "{expected} is measured: {names:?}"
        );
    }
    for f in &figures {
        assert!(f.value.is_finite() && f.value >= 0.0, "{f:?}");
        if let Some(b) = f.baseline {
            assert!(b > 0.0, "{f:?}");
        }
    }
    let errors = figures.iter().filter(|f| f.name.ends_with("errors"));
    assert!(errors.clone().count() >= 1, "errors are counted");
    for f in errors {
        assert_eq!(f.value, 0.0, "no request failed: {f:?}");
    }
    if options.postgres.is_some() {
        for expected in [
            "server ingest, 1 device",
            "server ingest, 50 devices",
            "bootstrap of one village (",
            "incremental sync",
            "8 concurrent phones across 2 nodes, push and pull",
        ] {
            let found = figures
                .iter()
                .find(|f| f.name.starts_with("PostgreSQL: ") && f.name.contains(expected));
            assert!(
                found.is_some_and(|f| f.baseline.is_some_and(|b| b > 0.0) || f.unit == "requests"),
                "{expected} is measured beside SQLite: {names:?}"
            );
        }
    }
    let memory = figures.iter().find(|f| f.name.contains("peak memory"));
    assert!(memory.is_some_and(|f| f.value > 1.0), "{memory:?}");
}
