//! Timing (ignored by default; run in release):
//! `cargo test --release -p fhir-validation --test timing -- --ignored --nocapture`
//! with `FHIRBRIDGE_R4_EXAMPLES_DIR` and `FHIRBRIDGE_UKCORE_DIR` set. Prints the
//! time to load and snapshot the UK Core StructureDefinitions and the time per
//! validation of a typical UKCore-Patient.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fhir_validation::{Registry, Validator, ValidatorOptions};

#[test]
#[ignore]
fn timing() {
    let (Some(core), Some(uk)) = (
        std::env::var_os("FHIRBRIDGE_R4_EXAMPLES_DIR"),
        std::env::var_os("FHIRBRIDGE_UKCORE_DIR"),
    ) else {
        eprintln!("skipped: set FHIRBRIDGE_R4_EXAMPLES_DIR and FHIRBRIDGE_UKCORE_DIR");
        return;
    };
    let uk = PathBuf::from(uk);
    let uk = if uk.join("stu2").is_dir() {
        uk.join("stu2")
    } else {
        uk
    };
    let t = Instant::now();
    let mut b = Registry::from_core_package(Path::new(&core)).unwrap();
    let n = b.add_dir(&uk.join("structuredefinitions")).unwrap();
    let reg = b.build().unwrap();
    let load = t.elapsed();
    println!(
        "load + snapshot of {n} UK Core StructureDefinitions (core index, lazy core): {load:?}"
    );
    let mut b = Registry::from_core_package(Path::new(&core)).unwrap();
    for sub in ["structuredefinitions", "valuesets", "codesystems"] {
        b.add_dir(&uk.join(sub)).unwrap();
    }
    let reg2 = Arc::new(b.build().unwrap());
    drop(reg);
    let xml = std::fs::read_to_string(uk.join("examples/UKCore-Patient-RichardSmith-Example.xml"))
        .unwrap();
    let patient = fhir_validation::xml_to_json(&xml).unwrap();
    let profile = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
    let v = Validator::new(reg2, ValidatorOptions::default());
    assert!(v.validate(&patient, &[profile]).is_valid());
    for _ in 0..500 {
        std::hint::black_box(v.validate(&patient, &[profile]));
    }
    // median of batches (the machine is shared: single averages are noisy);
    // FHIRBRIDGE_TIMING_RUNS sets the number of validations per batch
    let runs: u32 = std::env::var("FHIRBRIDGE_TIMING_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    // on-CPU time of this thread (Linux schedstat, ns): robust against other load
    let cpu_ns = || -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mut batches: Vec<(f64, Option<f64>)> = (0..9)
        .map(|_| {
            let c0 = cpu_ns();
            let t = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(v.validate(&patient, &[profile]));
            }
            let wall = t.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
            let cpu = match (c0, cpu_ns()) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e3 / f64::from(runs)),
                _ => None,
            };
            (wall, cpu)
        })
        .collect();
    batches.sort_by(|a, b| a.0.total_cmp(&b.0));
    let us = batches[batches.len() / 2].0;
    println!(
        "UKCore-Patient validation: {us:.1} µs/validation wall, median of {} batches of {runs} ({:.0} validations/s on one core; fastest batch {:.1} µs)",
        batches.len(),
        1e6 / us,
        batches[0].0
    );
    let mut cpu: Vec<f64> = batches.iter().filter_map(|b| b.1).collect();
    if !cpu.is_empty() {
        cpu.sort_by(f64::total_cmp);
        let c = cpu[cpu.len() / 2];
        println!(
            "UKCore-Patient validation: {c:.1} µs/validation on-CPU, median ({:.0} validations/s per core)",
            1e6 / c
        );
    }
}
