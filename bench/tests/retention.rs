//! The simulated year of `baylink-bench retention`, small: a compaction removes the year's
//! deleted records and a vacuum gives their pages back, the history kept.

use baylink_bench::retention::year;

#[test]
fn a_compacted_year_holds_fewer_records_in_fewer_pages_and_the_whole_history() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let y = year(0.002, dir.path());
    assert!(y.done.tombstones > 0, "{y:?}");
    assert_eq!(
        y.compacted.records,
        y.year.records - y.done.tombstones as i64,
        "{y:?}"
    );
    assert!(y.year.history > y.before.history, "{y:?}");
    assert_eq!(y.vacuumed.history, y.year.history, "the history is kept");
    assert!(y.vacuumed.used < y.year.used, "{y:?}");
}
