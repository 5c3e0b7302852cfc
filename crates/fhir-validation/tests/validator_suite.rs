//! Runs the R4 subset of the HL7 validator test cases
//! (`FHIRBRIDGE_VALIDATOR_CASES_DIR`, e.g. /work/shared/conformance/validator)
//! against the core package (`FHIRBRIDGE_R4_EXAMPLES_DIR`, the unpacked
//! `hl7.fhir.r4.examples` package dir) and reports how often our valid/invalid
//! verdict agrees with the Java validator's expected outcome, per step (base
//! validation of every case, plus the profile step where the case has one).
//! Skips (passing) when either variable is unset.
//!
//! The Java harness's per-case settings are honoured as far as they apply
//! offline: `validateReference` / `assumeValidRestReferences` (type checks of
//! unresolvable references; `CHECK_EXISTS*`: relative references must resolve
//! in the enclosing Bundle/Parameters), `examples`, `noHtmlInMarkdown` and
//! `validateContains: IGNORE` (read from `manifest-r4-subset.json`).
//!
//! `FHIRBRIDGE_SUITE_VERBOSE=1` lists the disagreements with our issues
//! (`=all`: the issues of every step); `FHIRBRIDGE_SUITE_ONLY=text` runs the
//! cases whose name contains `text`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fhir_validation::{Registry, Severity, Validator, ValidatorOptions};
use serde_json::Value;

/// Agreement achieved when this test was written (steps agreeing / steps), minus a margin.
const MIN_AGREEMENT: f64 = 0.96; // achieved 342/354 = 96.6%

fn load(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "xml") {
        fhir_validation::xml_to_json(&text)
    } else {
        fhir_structure::check::parse_json(text.as_bytes()).map_err(|i| i.message)
    }
}

struct Outcome {
    valid: bool,
    errors: usize,
    issues: Vec<String>,
}

fn run_step(v: &Validator, instance: &Result<Value, String>, profiles: &[&str]) -> Outcome {
    match instance {
        Ok(json) => {
            let r = v.validate(json, profiles);
            Outcome {
                valid: r.is_valid(),
                errors: r.issues.iter().filter(|i| i.severity.is_error()).count(),
                issues: r
                    .issues
                    .iter()
                    .filter(|i| i.severity != Severity::Information)
                    .map(|i| i.to_string())
                    .collect(),
            }
        }
        Err(e) => Outcome {
            valid: false,
            errors: 1,
            issues: vec![format!("fatal: cannot read the instance: {e}")],
        },
    }
}

#[test]
fn validator_suite() {
    let (Some(cases_dir), Some(core)) = (
        std::env::var_os("FHIRBRIDGE_VALIDATOR_CASES_DIR"),
        std::env::var_os("FHIRBRIDGE_R4_EXAMPLES_DIR"),
    ) else {
        eprintln!(
            "skipped: set FHIRBRIDGE_VALIDATOR_CASES_DIR and FHIRBRIDGE_R4_EXAMPLES_DIR to run the validator suite"
        );
        return;
    };
    let cases_dir = PathBuf::from(cases_dir);
    let core = PathBuf::from(core);
    let verbose = std::env::var_os("FHIRBRIDGE_SUITE_VERBOSE").is_some();
    // `FHIRBRIDGE_SUITE_VERBOSE=all`: also the issues of agreeing steps
    let verbose_all = std::env::var("FHIRBRIDGE_SUITE_VERBOSE").is_ok_and(|v| v == "all");
    let only = std::env::var("FHIRBRIDGE_SUITE_ONLY").ok();
    let manifest: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(cases_dir.join("expectations-r4.json"))
            .expect("expectations-r4.json"),
    )
    .expect("valid JSON");
    // the upstream manifest, for the settings the expectations file leaves out
    let upstream: Value = std::fs::read_to_string(cases_dir.join("manifest-r4-subset.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let upstream_case = |name: &str| -> Value {
        upstream["test-cases"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"].as_str() == Some(name)))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let files = cases_dir.join("cases");
    let (mut steps, mut agree, mut count_agree) = (0usize, 0usize, 0usize);
    let (mut cases, mut cases_agree) = (0usize, 0usize);
    let (mut fp, mut fneg) = (0usize, 0usize);
    let start = std::time::Instant::now();
    for case in &manifest {
        let name = case["name"].as_str().unwrap_or("");
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        // base step: core + the case's supporting files; profile step: also the
        // profile's supporting files and the profile itself
        let registry = |with_profile: bool| {
            let mut b = Registry::from_core_package(&core).expect("core package");
            let mut add = |f: &str| {
                if let Ok(v) = load(&files.join(f)) {
                    let _ = b.add_resource(v);
                }
            };
            for s in case["supporting"].as_array().into_iter().flatten() {
                add(s.as_str().unwrap_or(""));
            }
            let mut url = None;
            if with_profile {
                if let Some(p) = case["profile"].as_object() {
                    for s in p["supporting"].as_array().into_iter().flatten() {
                        add(s.as_str().unwrap_or(""));
                    }
                    if let Some(src) = p["source"].as_str() {
                        if let Ok(v) = load(&files.join(src)) {
                            url = v["url"].as_str().map(str::to_string);
                            let _ = b.add_resource(v);
                        }
                    }
                }
            }
            (Arc::new(b.build().expect("registry")), url)
        };
        let instance = load(&files.join(case["file"].as_str().unwrap_or("")));
        // the Java test harness's settings: references that cannot be resolved
        // are not checked unless `validateReference` asks for it; example URLs
        // are allowed unless `examples` is false
        let settings = upstream_case(name);
        let check_refs = matches!(
            case["validateReference"].as_str(),
            Some("CHECK_TYPE" | "CHECK_EXISTS_AND_TYPE" | "CHECK_VALID")
        ) || settings["assumeValidRestReferences"].as_bool() == Some(true);
        let options = ValidatorOptions {
            check_unresolved_reference_types: check_refs,
            // CHECK_VALID needs the Java harness's fetcher, which resolves
            // references to files this subset does not carry: only the
            // CHECK_EXISTS policies are honoured for existence
            check_references_exist: matches!(
                case["validateReference"].as_str(),
                Some("CHECK_EXISTS" | "CHECK_EXISTS_AND_TYPE")
            ),
            allow_example_urls: settings["examples"].as_bool().unwrap_or(true),
            allow_html_in_markdown: settings["noHtmlInMarkdown"].as_bool() != Some(true),
            validate_contained: settings["validateContains"].as_str() != Some("IGNORE"),
            ..ValidatorOptions::default()
        };
        let profile_options = ValidatorOptions {
            check_unresolved_reference_types: check_refs
                || settings["profile"]["assumeValidRestReferences"].as_bool() == Some(true),
            ..options.clone()
        };
        let mut all = true;
        let mut step = |label: &str, expected: &Value, out: Outcome| {
            let want = expected["valid"].as_bool().unwrap_or(true);
            steps += 1;
            let ok = want == out.valid;
            if ok && verbose_all {
                println!(
                    "AGREE {name} [{label}] {}",
                    if want { "valid" } else { "invalid" }
                );
                for i in &out.issues {
                    println!("    {i}");
                }
            }
            if ok {
                agree += 1;
                if expected["errors"].as_u64() == Some(out.errors as u64) {
                    count_agree += 1;
                }
            } else {
                all = false;
                if want {
                    fp += 1;
                } else {
                    fneg += 1;
                }
                if verbose {
                    println!(
                        "DISAGREE {name} [{label}] expected {} got {}; expected messages: {}",
                        if want { "valid" } else { "invalid" },
                        if out.valid { "valid" } else { "invalid" },
                        expected["messages"]
                    );
                    for i in &out.issues {
                        println!("    {i}");
                    }
                }
            }
        };
        let (reg, _) = registry(false);
        let v = Validator::new(reg, options.clone());
        step("base", &case["expected_base"], run_step(&v, &instance, &[]));
        if let Some(p) = case["profile"].as_object() {
            let (reg, profile_url) = registry(true);
            let v = Validator::new(reg, profile_options.clone());
            match &profile_url {
                Some(url) => step("profile", &p["expected"], run_step(&v, &instance, &[url])),
                None => step(
                    "profile",
                    &p["expected"],
                    Outcome {
                        valid: false,
                        errors: 1,
                        issues: vec!["profile source unreadable".into()],
                    },
                ),
            }
        }
        cases += 1;
        if all {
            cases_agree += 1;
        }
    }
    let pct = |a: usize, n: usize| {
        if n == 0 {
            0.0
        } else {
            a as f64 * 100.0 / n as f64
        }
    };
    println!(
        "validator suite: {agree}/{steps} steps agree on valid/invalid ({:.1}%); {cases_agree}/{cases} cases agree on every step ({:.1}%); \
         {count_agree}/{steps} also on the error count ({:.1}%); false errors {fp}, missed errors {fneg}; {:.1}s",
        pct(agree, steps),
        pct(cases_agree, cases),
        pct(count_agree, steps),
        start.elapsed().as_secs_f64()
    );
    if only.is_none() {
        assert!(
            agree as f64 >= MIN_AGREEMENT * steps as f64,
            "agreement {agree}/{steps} fell below {MIN_AGREEMENT}"
        );
    }
}
