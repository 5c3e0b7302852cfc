//! Debugging aid: time of the structural check alone vs a full validation of
//! the UK Core Patient example (release build):
//! `cargo run --release -p fhir-validation --example bench_split -- <core dir> <ukcore stu2 dir>`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(core), Some(uk)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bench_split <core dir> <ukcore stu2 dir>");
        return;
    };
    let uk = std::path::Path::new(uk);
    let mut b = fhir_validation::Registry::from_core_package(std::path::Path::new(core)).unwrap();
    for sub in ["structuredefinitions", "valuesets", "codesystems"] {
        b.add_dir(&uk.join(sub)).unwrap();
    }
    let reg = std::sync::Arc::new(b.build().unwrap());
    let xml = std::fs::read_to_string(uk.join("examples/UKCore-Patient-RichardSmith-Example.xml"))
        .unwrap();
    let patient = fhir_validation::xml_to_json(&xml).unwrap();
    let profile = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
    let v = fhir_validation::Validator::new(reg, fhir_validation::ValidatorOptions::default());
    let n = 5000;
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(fhir_structure::check::check_resource(&patient));
        }
        let a = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(v.validate(&patient, &[profile]));
        }
        let b = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("round {round}: structural check {a:.1} µs, full validation {b:.1} µs");
    }
}
