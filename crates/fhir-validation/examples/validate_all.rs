//! Debugging aid: validates every JSON/XML file under the given directories
//! (recursively) against its base definition and the files' own profiles,
//! printing the slowest files; any panic aborts.
//! `cargo run --release -p fhir-validation --example validate_all -- <core dir> <dir>…`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json" || x == "xml") {
            out.push(p);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(core) = args.first() else {
        eprintln!("usage: validate_all <core dir> <dir>…");
        return;
    };
    let mut all = Vec::new();
    for d in args.iter().skip(1) {
        files(Path::new(d), &mut all);
    }
    let mut b = fhir_validation::Registry::from_core_package(Path::new(core)).unwrap();
    let mut values = Vec::new();
    for f in &all {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let v = if f.extension().is_some_and(|x| x == "xml") {
            fhir_validation::xml_to_json(&text).ok()
        } else {
            serde_json::from_str::<serde_json::Value>(&text).ok()
        };
        if let Some(v) = v {
            if std::env::var_os("NO_ADD").is_none() {
                let _ = b.add_resource(v.clone());
            }
            values.push((f.clone(), v));
        }
    }
    let reg = std::sync::Arc::new(b.build().unwrap());
    let v = fhir_validation::Validator::new(reg, fhir_validation::ValidatorOptions::default());
    let mut times = Vec::new();
    let t0 = Instant::now();
    for (f, json) in &values {
        let t = Instant::now();
        let r = v.validate(json, &[]);
        let errors: Vec<String> = r
            .issues
            .iter()
            .filter(|i| i.severity.is_error())
            .map(|i| i.to_string())
            .collect();
        if std::env::var_os("SHOW_ERRORS").is_some() && !errors.is_empty() {
            println!("== {}", f.display());
            for e in errors.iter().take(5) {
                println!("   {e}");
            }
        }
        times.push((t.elapsed(), f.clone(), r.issues.len()));
    }
    println!("{} files in {:?}", values.len(), t0.elapsed());
    times.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (d, f, n) in times.iter().take(8) {
        println!("{d:?} {} ({n} issues)", f.display());
    }
}
