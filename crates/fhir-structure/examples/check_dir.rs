//! Sanity run: structurally check every JSON resource in a directory and
//! summarise the errors.
//!
//! `cargo run --release --example check_dir -- /tmp/r4pkg/package [--all]`
//!
//! Definitional resources (StructureDefinition, ValueSet, CodeSystem,
//! SearchParameter, ...) are skipped unless `--all` is given.

use std::collections::BTreeMap;

use fhir_structure::{check_resource, parse_json};

const DEFINITIONAL: &[&str] = &[
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "SearchParameter",
    "ConceptMap",
    "OperationDefinition",
    "CompartmentDefinition",
    "CapabilityStatement",
    "ImplementationGuide",
    "NamingSystem",
    "StructureMap",
    "GraphDefinition",
    "MessageDefinition",
    "TerminologyCapabilities",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: check_dir DIR [--all]");
        std::process::exit(2);
    };
    let all = args.any(|a| a == "--all");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("cannot read {dir}");
        std::process::exit(2);
    };
    let mut paths: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    let (mut checked, mut with_errors, mut skipped) = (0, 0, 0);
    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("?")
            .to_string();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let value = match parse_json(&bytes) {
            Ok(v) => v,
            Err(e) => {
                checked += 1;
                with_errors += 1;
                by_file.entry(file).or_default().push(e.to_string());
                continue;
            }
        };
        let rt = value
            .get("resourceType")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !all && (DEFINITIONAL.contains(&rt) || rt.is_empty()) {
            skipped += 1;
            continue;
        }
        checked += 1;
        let errors: Vec<String> = check_resource(&value)
            .iter()
            .filter(|i| i.severity.is_error())
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            with_errors += 1;
            by_file.insert(file, errors);
        }
    }
    for (file, errors) in &by_file {
        println!("{file}:");
        for e in errors {
            println!("    {e}");
        }
    }
    println!("checked {checked}, skipped {skipped} definitional, {with_errors} with errors");
}
