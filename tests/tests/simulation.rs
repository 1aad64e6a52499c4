//! The deterministic sync simulation (see `baylink_tests::sim`): at least 1,000 seeded schedules
//! in the test suite. A failing seed is printed with the command that replays it:
//! `BAYLINK_SIM_SEED=<seed> cargo test -p baylink-tests --test simulation -- --nocapture`.
//! `BAYLINK_SIM_SCHEDULES=N` runs N schedules per test instead (four tests share the work).

use baylink_tests::sim::{Stats, run, run_on};

/// Operations per schedule.
const STEPS: u64 = 60;
/// Schedules per test (four tests: 1,000 in all).
const SCHEDULES: u64 = 250;

fn schedules(first_seed: u64) {
    if let Ok(seed) = std::env::var("BAYLINK_SIM_SEED") {
        let seed: u64 = seed.parse().expect("BAYLINK_SIM_SEED is a number");
        match run(seed, STEPS) {
            Ok(stats) => println!("seed {seed}: ok {stats:?}"),
            Err(why) => panic!("seed {seed}: {why}"),
        }
        return;
    }
    let count = std::env::var("BAYLINK_SIM_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SCHEDULES);
    let mut total = Stats::default();
    for seed in first_seed..first_seed + count {
        match run(seed, STEPS) {
            Ok(stats) => total.add(&stats),
            Err(why) => panic!(
                "seed {seed} broke an invariant: {why}\n\
                 replay: BAYLINK_SIM_SEED={seed} cargo test -p baylink-tests --test simulation -- --nocapture"
            ),
        }
    }
    assert_eq!(total.schedules, count);
    assert_eq!(total.lost, 0, "acknowledged changes lost");
    assert!(
        total.acknowledged > count,
        "the schedules acknowledged too little to mean anything"
    );
    println!("schedules from seed {first_seed}: {total:?}");
}

/// Schedules with the server's data on PostgreSQL (`BAYLINK_SIM_PG_SCHEDULES`, 200 by
/// default), each on a fresh database of the test cluster, seeds from 100,000.
#[test]
fn schedules_on_postgres() {
    let Some(cluster) = baylink_tests::harness::test_postgres() else {
        return;
    };
    let count: u64 = std::env::var("BAYLINK_SIM_PG_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let mut total = Stats::default();
    for seed in 100_000..100_000 + count {
        match run_on(seed, STEPS, Some(&cluster)) {
            Ok(stats) => total.add(&stats),
            Err(why) => panic!("seed {seed} on PostgreSQL broke an invariant: {why}"),
        }
    }
    assert_eq!(total.schedules, count);
    assert_eq!(total.lost, 0, "acknowledged changes lost");
    println!("schedules on PostgreSQL: {total:?}");
}

#[test]
fn schedules_0_to_249() {
    schedules(0);
}

#[test]
fn schedules_250_to_499() {
    schedules(250);
}

#[test]
fn schedules_500_to_749() {
    schedules(500);
}

#[test]
fn schedules_750_to_999() {
    schedules(750);
}
