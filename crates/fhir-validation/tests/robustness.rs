//! Robustness: the validator never panics, whatever the input. Every node of
//! the official UK Core examples (and of Bundle/Parameters/contained shapes
//! built from them) is replaced, one at a time, by values of the wrong shape,
//! and each mutant is validated against the UK Core profile of its type and
//! the base definition. Needs `FHIRBRIDGE_R4_EXAMPLES_DIR` and
//! `FHIRBRIDGE_UKCORE_DIR` (skips, passing, otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fhir_validation::{Registry, Validator, ValidatorOptions};
use serde_json::{json, Value};

/// JSON pointers of every node of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

fn wrong_values() -> Vec<Value> {
    let mut deep = json!("x");
    for _ in 0..200 {
        deep = json!({ "extension": [{ "url": "u", "extension": [deep] }] });
    }
    vec![
        Value::Null,
        json!({}),
        json!([]),
        json!([null, {}]),
        json!(""),
        json!("#"),
        json!("urn:uuid:x/_history/"),
        json!(-1),
        json!(1e300),
        json!(true),
        json!({"reference": "#", "resourceType": "Bundle", "entry": [{}]}),
        json!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"#\">&bogus;</a></div>"),
        deep,
    ]
}

#[test]
fn mutants_never_panic() {
    let (Some(core), Some(uk)) = (
        std::env::var_os("FHIRBRIDGE_R4_EXAMPLES_DIR"),
        std::env::var_os("FHIRBRIDGE_UKCORE_DIR"),
    ) else {
        eprintln!("skipped: set FHIRBRIDGE_R4_EXAMPLES_DIR and FHIRBRIDGE_UKCORE_DIR");
        return;
    };
    let core = PathBuf::from(core);
    let core = if core.join("package.json").is_file() {
        core
    } else {
        core.join("package")
    };
    let uk = PathBuf::from(uk);
    let uk = if uk.join("stu2").is_dir() {
        uk.join("stu2")
    } else {
        uk
    };
    let mut b = Registry::from_core_package(Path::new(&core)).unwrap();
    for sub in ["structuredefinitions", "valuesets", "codesystems"] {
        b.add_dir(&uk.join(sub)).unwrap();
    }
    let reg = Arc::new(b.build().unwrap());
    let v = Validator::new(reg, ValidatorOptions::default());
    let mut examples: Vec<Value> = std::fs::read_dir(uk.join("examples"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| fhir_validation::xml_to_json(&t).ok())
        .filter(|r| {
            matches!(
                r["resourceType"].as_str(),
                Some("Patient" | "Appointment" | "MedicationRequest")
            )
        })
        .take(6)
        .collect();
    assert!(!examples.is_empty());
    // containers built from the first example
    let first = examples[0].clone();
    let rt = first["resourceType"].as_str().unwrap_or("").to_string();
    examples.push(json!({
        "resourceType": "Bundle", "type": "document",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Composition", "status": "final",
             "type": {"text": "t"}, "date": "2020", "title": "t", "author": [{"reference": "urn:uuid:2"}],
             "subject": {"reference": format!("{rt}/x")},
             "section": [{"entry": [{"reference": "urn:uuid:2/_history/1"}]}]}},
            {"fullUrl": "urn:uuid:2", "resource": first.clone()},
            {"fullUrl": "http://x/Patient/1", "resource": first.clone()}
        ]
    }));
    examples.push(json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "a", "resource": first.clone(), "part": [{"name": "b", "resource": first.clone()}]}]
    }));
    let mut with_contained = first.clone();
    with_contained["contained"] = json!([first.clone(), {"resourceType": "Basic", "id": "b"}]);
    examples.push(with_contained);
    let profile_of = |t: &str| match t {
        "Patient" => Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"),
        "Appointment" => Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-Appointment"),
        "MedicationRequest" => {
            Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest")
        }
        _ => None,
    };
    let wrong = wrong_values();
    let mut runs = 0usize;
    for ex in &examples {
        let mut ptrs = Vec::new();
        pointers(ex, String::new(), &mut ptrs);
        let profiles: Vec<&str> = profile_of(ex["resourceType"].as_str().unwrap_or(""))
            .into_iter()
            .collect();
        for p in &ptrs {
            for w in &wrong {
                let mut m = ex.clone();
                if let Some(slot) = m.pointer_mut(p) {
                    *slot = w.clone();
                }
                let _ = v.validate(&m, &profiles);
                runs += 1;
            }
        }
    }
    println!("{runs} mutants validated without a panic");
}
