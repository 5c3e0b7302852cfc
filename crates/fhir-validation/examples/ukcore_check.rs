//! Loads the R4 core package and a UK Core folder, validates every example
//! and prints the issues; with `--bench`, times validation of a UKCore-Patient.
//!
//! `cargo run --release -p fhir-validation --example ukcore_check -- <core-package-dir> <ukcore-dir> [--bench]`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fhir_validation::{Registry, Severity, Validator, ValidatorOptions};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let core = args
        .get(1)
        .ok_or("usage: ukcore_check <core-dir> <ukcore-dir> [--bench]")?;
    let uk = args
        .get(2)
        .ok_or("usage: ukcore_check <core-dir> <ukcore-dir> [--bench]")?;
    let bench = args.iter().any(|a| a == "--bench");
    let t = Instant::now();
    let mut b = Registry::from_core_package(Path::new(core))?;
    let t_index = t.elapsed();
    let t2 = Instant::now();
    let mut n = 0;
    for sub in ["structuredefinitions", "valuesets", "codesystems"] {
        n += b.add_dir(&Path::new(uk).join(sub))?;
    }
    let reg = Arc::new(b.build()?);
    println!(
        "index {:?}; {n} UK Core resources loaded + snapshots in {:?}",
        t_index,
        t2.elapsed()
    );
    for url in reg.profile_urls() {
        if let Some(p) = reg.profile(&url) {
            for w in &p.warnings {
                println!("  snapshot warning {}: {w}", p.name);
            }
        }
    }
    let opts = ValidatorOptions {
        nhs_number: Severity::Warning,
        ..Default::default()
    };
    let v = Validator::new(reg.clone(), opts);
    let mut dir: Vec<_> = std::fs::read_dir(Path::new(uk).join("examples"))
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    dir.sort();
    for p in &dir {
        let xml = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
        let json = match fhir_validation::xml_to_json(&xml) {
            Ok(j) => j,
            Err(e) => {
                println!("ERR  {}: {e}", p.display());
                continue;
            }
        };
        let rt = json
            .get("resourceType")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let profile = format!("https://fhir.hl7.org.uk/StructureDefinition/UKCore-{rt}");
        let profiles: Vec<&str> = if reg.profile(&profile).is_some() {
            vec![profile.as_str()]
        } else {
            vec![]
        };
        let r = v.validate(&json, &profiles);
        println!(
            "{} {} ({} issues)",
            if r.is_valid() { "PASS" } else { "FAIL" },
            p.file_name().and_then(|f| f.to_str()).unwrap_or(""),
            r.issues.len()
        );
        for i in &r.issues {
            if i.severity != Severity::Information || std::env::var_os("SHOW_INFO").is_some() {
                println!("    {i}");
            }
        }
    }
    if bench {
        let xml = std::fs::read_to_string(
            Path::new(uk).join("examples/UKCore-Patient-RichardSmith-Example.xml"),
        )
        .map_err(|e| e.to_string())?;
        let json = fhir_validation::xml_to_json(&xml)?;
        let profile = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
        let v = Validator::new(reg.clone(), ValidatorOptions::default());
        for _ in 0..200 {
            std::hint::black_box(v.validate(&json, &[profile]));
        }
        let n = 5000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(v.validate(&json, &[profile]));
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!(
            "UKCore-Patient (RichardSmith): {us:.1} µs/validation ({:.0}/s per core)",
            1e6 / us
        );
    }
    Ok(())
}
