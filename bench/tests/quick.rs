//! A small run of the district benchmark in every test run, so that it cannot rot: every figure
//! is measured, positive, and stands beside its baseline.

#[test]
fn a_small_district_is_measured_with_baselines() {
    let figures = baylink_bench::ingest(0.001);
    assert_eq!(figures.len(), 2);
    for f in &figures {
        assert!(
            f.value > 0.0 && f.baseline.is_some_and(|b| b > 0.0),
            "{f:?}"
        );
    }
}
