//! Times `recommend_by_eta` for a hazardous-chemicals grade II incident in the embedded sample
//! region (49 units): the issue asks for well under a millisecond per recommendation.
//!
//! Run with `cargo bench -p domain --bench recommend`; prints min / median / p99 per call.
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a few calls as a smoke test.

use std::hint::black_box;
use std::time::Instant;

use domain::dispatch::{RecommendOptions, UnitView, recommend_by_eta};
use domain::grade::Grade;
use domain::region::Region;
use domain::unit::UnitStatus;

const ITERATIONS: usize = 20_000;
const WARM_UP_ITERATIONS: usize = 1_000;
const NOW_UNIX_MS: i64 = 1_750_000_000_000;

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let (iterations, warm_up_iterations) = if benchmarking {
        (ITERATIONS, WARM_UP_ITERATIONS)
    } else {
        (50, 5)
    };
    let region = Region::embedded_default();
    let plan = region
        .plans
        .plan_for("accident.hazardous_chemicals", Some(Grade::II))
        .expect("the sample region has a hazchem grade II plan");
    // An incident in Donghu (390102001); the lead is its county.
    let incident_at = region
        .township_centroid("390102001")
        .expect("the sample region has township 390102001");
    // Every unit available, positions five minutes old: the most work per call.
    let views: Vec<UnitView> = region
        .units
        .iter()
        .map(|unit| UnitView::new(unit, UnitStatus::Available, NOW_UNIX_MS - 5 * 60_000))
        .collect();
    let options = RecommendOptions {
        home_jurisdiction: Some("390102".to_string()),
        ..RecommendOptions::for_region(&region)
    };

    let run = || {
        recommend_by_eta(
            black_box(&plan.resources),
            black_box(incident_at),
            black_box(&views),
            black_box(&options),
            black_box(NOW_UNIX_MS),
        )
    };
    let sample = run();
    for _ in 0..warm_up_iterations {
        black_box(run());
    }
    let mut elapsed_ns: Vec<u128> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let recommendation = run();
        elapsed_ns.push(start.elapsed().as_nanos());
        black_box(recommendation);
    }
    elapsed_ns.sort_unstable();
    let micros = |ns: u128| ns as f64 / 1000.0;
    let at = |fraction: f64| elapsed_ns[((elapsed_ns.len() - 1) as f64 * fraction) as usize];
    println!(
        "recommend_by_eta, plan {} ({} requirements, {} units, {} picks, {} gaps), {iterations} calls:",
        plan.id,
        plan.resources.len(),
        views.len(),
        sample.picks.len(),
        sample.gaps.len()
    );
    println!(
        "  min {:.1} µs   median {:.1} µs   p99 {:.1} µs   max {:.1} µs",
        micros(elapsed_ns[0]),
        micros(at(0.5)),
        micros(at(0.99)),
        micros(elapsed_ns[elapsed_ns.len() - 1])
    );
}
