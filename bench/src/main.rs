//! `baylink-bench [--scale F] [--json]`: builds the district (scale 1: about 400,000 persons,
//! 100,000 houses, 1,000,000 vehicles in 64 villages) and prints each figure beside its baseline,
//! as a table and as JSON.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scale: f64 = args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let counts = baylink_bench::counts(scale);
    println!(
        "district at scale {scale}: per village {} persons, {} houses, {} vehicles (64 villages)",
        counts.persons, counts.houses, counts.vehicles
    );
    let mut figures = baylink_bench::ingest(scale);
    // The figure is at 100,000 records on the phone, whatever the district's scale.
    figures.extend(baylink_bench::device_search(100_000));
    figures.extend(baylink_bench::incremental_sync(21));
    println!("\n| figure | value | baseline | ratio |\n| --- | ---: | ---: | ---: |");
    for f in &figures {
        println!(
            "| {} | {:.1} {} | {} | {} |",
            f.name,
            f.value,
            f.unit,
            f.baseline
                .map_or("—".into(), |b| format!("{b:.1} {}", f.unit)),
            f.ratio.map_or("—".into(), |r| format!("{r:.2}")),
        );
    }
    println!(
        "\n{}",
        serde_json::to_string_pretty(&figures).unwrap_or_default()
    );
}
