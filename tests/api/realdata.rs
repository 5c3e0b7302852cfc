//! What real clients and real data hit (issue 10): vendor extensions under UK
//! Core's open extension slicing, primitives that carry only an extension, the
//! UK Core definitions built into the binary (whatever the working directory),
//! deeply nested input, control characters, and JSON Patches that multiply a
//! document. Validation tests need the R4 core package
//! (`FHIRBRIDGE_R4_EXAMPLES_DIR`) and skip without it.

use std::process::Command;

use serde_json::{json, Value};

use crate::backend_tests;
use crate::examples::EXAMPLES_ENV;
use crate::helpers::{messages, uk_patient, TestApp};

fn core_dir() -> Option<String> {
    let dir = std::env::var(EXAMPLES_ENV).ok();
    if dir.is_none() {
        eprintln!("skipping: {EXAMPLES_ENV} is not set");
    }
    dir
}

/// A server with validation on, default settings otherwise (no profiles_dir).
async fn validating_app(adjust: impl FnOnce(&mut fhirbridge::config::Settings)) -> Option<TestApp> {
    let dir = core_dir()?;
    Some(
        TestApp::sqlite_with(|s| {
            s.validation.enabled = true;
            s.validation.core_package_dir = Some(dir);
            assert!(s.validation.profiles_dir.is_none());
            adjust(s);
        })
        .await,
    )
}

const VENDOR_EXT: &str = "https://fhir.example-gp-supplier.co.uk/StructureDefinition/record-source";
const SYNTHEA_EXT: &str = "http://synthetichealth.github.io/synthea/disability-adjusted-life-years";

fn with_vendor_extensions(mut v: Value) -> Value {
    v["extension"] = json!([
        {"url": VENDOR_EXT, "valueString": "practice-system"},
        {"url": SYNTHEA_EXT, "valueDecimal": 0.27}
    ]);
    v
}

fn appointment() -> Value {
    json!({
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2024-03-01T09:00:00Z",
        "end": "2024-03-01T09:10:00Z",
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]
    })
}

// ---------------------------------------------------------------------------
// item 5: unknown extensions
// ---------------------------------------------------------------------------

#[actix_rt::test]
async fn vendor_extensions_are_warnings_by_default() {
    let Some(app) = validating_app(|_| {}).await else {
        return;
    };
    let p = with_vendor_extensions(uk_patient("9000000009"));
    let r = app.post("/fhir/Patient", &p).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = app
        .post("/fhir/Appointment", &with_vendor_extensions(appointment()))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // the warning is visible in $validate
    let r = app.post("/fhir/Patient/$validate", &p).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let issues = r.issues();
    let warned = |url: &str| {
        issues.iter().any(|i| {
            i["severity"] == "warning"
                && i["diagnostics"].as_str().unwrap_or("").contains(url)
                && i["expression"][0]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Patient.extension[")
        })
    };
    assert!(warned(VENDOR_EXT), "{}", messages(&issues));
    assert!(warned(SYNTHEA_EXT), "{}", messages(&issues));
    assert!(
        !issues.iter().any(|i| i["severity"] == "error"),
        "{}",
        messages(&issues)
    );
}

#[actix_rt::test]
async fn unknown_extensions_setting_error_is_strict() {
    let Some(app) = validating_app(|s| s.validation.unknown_extensions = "error".into()).await
    else {
        return;
    };
    let r = app
        .post(
            "/fhir/Patient",
            &with_vendor_extensions(uk_patient("9000000009")),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(messages(&r.issues()).contains(VENDOR_EXT));
    let r = app
        .post("/fhir/Appointment", &with_vendor_extensions(appointment()))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    // the setting is checked
    let mut s = fhirbridge::config::Settings::for_testing();
    s.validation.unknown_extensions = "ignore".into();
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("validation.unknown_extensions"), "{e}");
}

#[actix_rt::test]
async fn unknown_modifier_extensions_and_bad_known_extensions_stay_errors() {
    for strict in [false, true] {
        let Some(app) = validating_app(|s| {
            if strict {
                s.validation.unknown_extensions = "error".into();
            }
        })
        .await
        else {
            return;
        };
        let mut p = uk_patient("9000000009");
        p["modifierExtension"] = json!([{"url": VENDOR_EXT, "valueBoolean": true}]);
        let r = app.post("/fhir/Patient", &p).await;
        assert_eq!(r.status, 422, "strict={strict}: {}", r.text());
        assert!(messages(&r.issues()).contains("modifierExtension"));

        // a known UK Core extension is still fully validated
        let mut p = uk_patient("9000000009");
        p["extension"] = json!([{
            "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
            "valueString": "A"
        }]);
        let r = app.post("/fhir/Patient", &p).await;
        assert_eq!(r.status, 422, "strict={strict}: {}", r.text());
        assert_eq!(app.total("/fhir/Patient?_summary=count").await, 0);
    }
}

fn synthea_files(limit: usize) -> Option<Vec<std::path::PathBuf>> {
    let Ok(dir) = std::env::var("FHIRBRIDGE_SYNTHEA_DIR") else {
        eprintln!("skipping Synthea import: FHIRBRIDGE_SYNTHEA_DIR is not set");
        return None;
    };
    let dir = std::path::Path::new(&dir);
    let dir = if dir.join("R4").is_dir() {
        dir.join("R4")
    } else {
        dir.to_path_buf()
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("hospital") || n.starts_with("practitioner"))
        })
        .collect();
    files.sort();
    files.truncate(limit);
    assert!(!files.is_empty(), "no Synthea bundles in {}", dir.display());
    Some(files)
}

/// The bundled Synthea sample imports under the default validation settings.
#[actix_rt::test]
async fn synthea_bundles_import_under_default_validation() {
    let Some(core) = core_dir() else { return };
    let Some(files) = synthea_files(4) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = fhirbridge::config::Settings::for_testing();
    s.storage.database_url = format!("sqlite://{}", dir.path().join("s.db").display());
    s.validation.enabled = true;
    s.validation.core_package_dir = Some(core);
    // UK Core (STU2) makes MedicationRequest.substitution mandatory, and Synthea
    // does not write it: those MedicationRequests are rightly refused under
    // `enforce` (see below), so here they are only warned about.
    s.validation
        .policy
        .insert("MedicationRequest".into(), "warn".into());
    let summary = fhirbridge::import::import(s.clone(), files.clone(), 500, false)
        .await
        .unwrap();
    assert!(
        summary.resources > 100,
        "{} resources: {:?}",
        summary.resources,
        summary.failures.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        summary.failed,
        0,
        "{} of {} failed from {} files:\n{}",
        summary.failed,
        summary.resources + summary.failed,
        files.len(),
        summary
            .failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // under the full defaults, what fails is the missing substitution
    let dir = tempfile::tempdir().unwrap();
    s.storage.database_url = format!("sqlite://{}", dir.path().join("s.db").display());
    s.validation.policy.clear();
    let summary = fhirbridge::import::import(s, files, 500, false)
        .await
        .unwrap();
    assert!(!summary.failures.is_empty());
    for f in &summary.failures {
        assert!(
            f.contains(": 422: MedicationRequest.substitution: minimum required = 1"),
            "{f}"
        );
    }
}

// ---------------------------------------------------------------------------
// item 6: primitives carrying only an extension
// ---------------------------------------------------------------------------

async fn primitive_with_extension_only(app: TestApp) {
    let p = json!({
        "resourceType": "Patient",
        "name": [{
            "family": "Cox",
            "given": ["Richard", null],
            "_given": [null, {"extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown"
            }]}]
        }],
        "_birthDate": {"id": "b1", "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
            "valueCode": "asked-unknown"
        }]}
    });
    let r = app.post("/fhir/Patient", &p).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let got = app.get(&format!("/fhir/Patient/{id}")).await.json();
    assert_eq!(got["name"][0]["given"], json!(["Richard", null]));
    assert_eq!(
        got["name"][0]["_given"][1]["extension"][0]["valueCode"],
        "unknown"
    );
    assert_eq!(got["_birthDate"]["id"], "b1");
    // the same as XML, in a transaction, and by PUT
    let xml = r#"<Patient xmlns="http://hl7.org/fhir"><name><family value="Cox"/><given value="Richard"/><given><extension url="http://hl7.org/fhir/StructureDefinition/data-absent-reason"><valueCode value="unknown"/></extension></given></name></Patient>"#;
    let r = app
        .request(
            "POST",
            "/fhir/Patient",
            &[
                ("Content-Type", "application/fhir+xml"),
                ("Accept", "application/fhir+json"),
            ],
            Some(xml.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["name"][0]["given"], json!(["Richard", null]));
    let mut with_id = p.clone();
    with_id["id"] = json!(id);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": p, "request": {"method": "POST", "url": "Patient"}},
        {"resource": with_id, "request": {"method": "PUT", "url": format!("Patient/{id}")}}
    ]});
    let r = app.post("/fhir", &tx).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = app
        .get_with(
            &format!("/fhir/Patient/{id}"),
            &[("Accept", "application/fhir+xml")],
        )
        .await;
    assert_eq!(got.status, 200);
    assert!(got.text().contains("data-absent-reason"), "{}", got.text());
    // still errors: mismatched lengths, null on both sides
    let mut bad = p.clone();
    bad["name"][0]["_given"] = json!([null]);
    assert_eq!(app.post("/fhir/Patient", &bad).await.status, 400);
    let mut bad = p.clone();
    bad["name"][0]["_given"] = json!([null, null]);
    assert_eq!(app.post("/fhir/Patient", &bad).await.status, 400);
}

#[actix_rt::test]
async fn primitive_with_extension_only_validated() {
    let Some(app) = validating_app(|_| {}).await else {
        return;
    };
    let mut p = uk_patient("9000000009");
    p["name"][0]["given"] = json!(["Jane", null]);
    p["name"][0]["_given"] = json!([null, {"extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "valueCode": "unknown"
    }]}]);
    let r = app.post("/fhir/Patient", &p).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

// ---------------------------------------------------------------------------
// item 7: UK Core is built in
// ---------------------------------------------------------------------------

#[actix_rt::test]
async fn uk_core_is_enforced_without_a_profiles_dir() {
    let Some(app) = validating_app(|_| {}).await else {
        return;
    };
    let r = app.post("/fhir/Patient", &uk_patient("9000000001")).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(messages(&r.issues()).contains("Modulus 11"));
    let r = app.post("/fhir/Patient", &uk_patient("9000000009")).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn a_profiles_dir_or_core_package_that_cannot_be_loaded_is_a_startup_error() {
    let Some(core) = core_dir() else { return };
    let empty = tempfile::tempdir().unwrap();
    let cases: Vec<(Option<String>, Option<String>)> = vec![
        (Some(core.clone()), Some("/nonexistent/profiles".into())),
        (Some(core.clone()), Some(empty.path().display().to_string())),
        (Some("/nonexistent/core".into()), None),
    ];
    for (core, profiles) in cases {
        let mut s = fhirbridge::config::Settings::for_testing();
        s.validation.enabled = true;
        s.validation.core_package_dir = core.clone();
        s.validation.profiles_dir = profiles.clone();
        let sys = actix_rt::System::new();
        let r = sys.block_on(async { fhirbridge::Application::build(s).map(|_| ()) });
        let e = r.expect_err(&format!("{core:?} {profiles:?} must not start"));
        let text = format!("{e:#}");
        assert!(
            text.contains("profiles_dir") || text.contains("core_package_dir"),
            "{text}"
        );
    }
    // a profiles_dir that adds to (and may repeat) the built-in definitions is fine
    let mut s = fhirbridge::config::Settings::for_testing();
    s.validation.enabled = true;
    s.validation.core_package_dir = Some(core);
    s.validation.profiles_dir =
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/ukcore").into());
    let sys = actix_rt::System::new();
    sys.block_on(async { fhirbridge::Application::build(s).map(|_| ()) })
        .expect("builds");
}

#[test]
fn cli_validate_from_another_directory_uses_uk_core() {
    let Some(core) = core_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("good.json"),
        uk_patient("9000000009").to_string(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("bad.json"),
        uk_patient("9000000001").to_string(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("c.toml"),
        format!("[validation]\ncore_package_dir = \"{core}\"\n"),
    )
    .unwrap();
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
            .args(["validate", "--config", "c.toml", file])
            .env("RUST_LOG", "error")
            .env_remove("FHIRBRIDGE_PROFILES_DIR")
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let out = run("good.json");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("bad.json");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Modulus 11"), "{text}");
}

// ---------------------------------------------------------------------------
// item 12: deep nesting never overflows a stack
// ---------------------------------------------------------------------------

async fn deeply_nested_xml_is_a_400(app: TestApp) {
    let n = 10_000;
    let ext = format!(
        "<Patient xmlns=\"http://hl7.org/fhir\">{}{}</Patient>",
        "<extension url=\"http://x\">".repeat(n),
        "</extension>".repeat(n)
    );
    let unknown = format!(
        "<Patient xmlns=\"http://hl7.org/fhir\">{}{}</Patient>",
        "<a>".repeat(n),
        "</a>".repeat(n)
    );
    for body in [ext, unknown] {
        let r = app
            .request(
                "POST",
                "/fhir/Patient",
                &[
                    ("Content-Type", "application/fhir+xml"),
                    ("Accept", "application/fhir+json"),
                ],
                Some(body.into_bytes()),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(messages(&r.issues()).contains("nested"), "{}", r.text());
    }
    // the server is still up and stored nothing
    assert_eq!(app.total("/fhir/Patient?_summary=count").await, 0);
}

async fn deeply_nested_patches_are_rejected(app: TestApp) {
    let p = app
        .create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let path = format!("/fhir/Patient/{id}");
    // a FHIRPath Patch whose path is ((((…)))) ×10,000
    let deep_path = format!("{}Patient{}", "(".repeat(10_000), ")".repeat(10_000));
    let params = json!({"resourceType": "Parameters", "parameter": [{
        "name": "operation",
        "part": [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": deep_path},
            {"name": "name", "valueString": "gender"},
            {"name": "value", "valueCode": "male"}
        ]
    }]});
    let r = app.send_json("PATCH", &path, &params, &[]).await;
    assert!(matches!(r.status, 400 | 422), "{}", r.text());
    r.issues();
    // a JSON Patch value nested just under the body's own limit, added deep in the resource
    let mut value = json!("x");
    for _ in 0..124 {
        value = json!({ "a": value });
    }
    let ops = json!([
        {"op": "add", "path": "/extension", "value": [{"url": "http://x", "extension": [{"url": "http://y", "extension": [{"url": "http://z", "valueString": "v"}]}]}]},
        {"op": "add", "path": "/extension/0/extension/0/extension/0/_valueString", "value": value}
    ]);
    let r = app
        .request(
            "PATCH",
            &path,
            &[("Content-Type", "application/json-patch+json")],
            Some(ops.to_string().into_bytes()),
        )
        .await;
    assert!(matches!(r.status, 400 | 422), "{}", r.text());
    r.issues();
    // copying the resource into itself, over and over
    let ops: Vec<Value> = (0..200)
        .map(|_| json!({"op": "copy", "from": "", "path": "/contained"}))
        .collect();
    let r = app
        .request(
            "PATCH",
            &path,
            &[("Content-Type", "application/json-patch+json")],
            Some(Value::Array(ops).to_string().into_bytes()),
        )
        .await;
    assert!(matches!(r.status, 400 | 422), "{}", r.text());
    assert!(messages(&r.issues()).contains("nested too deeply"));
    let now = app.get(&path).await.json();
    assert_eq!(now["meta"]["versionId"], "1");
    assert!(now.get("contained").is_none());
}

// ---------------------------------------------------------------------------
// item 13a: control characters
// ---------------------------------------------------------------------------

async fn control_characters_are_a_400(app: TestApp) {
    for (body, expr) in [
        (
            json!({"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "\u{0}"}]}}),
            "Observation.code.coding[0].code",
        ),
        (
            json!({"resourceType": "Observation", "status": "final",
                   "code": {"text": "blood\u{1}pressure"}}),
            "Observation.code.text",
        ),
        (
            json!({"resourceType": "Observation", "status": "final",
                   "code": {"text": "x"}, "note": [{"text": "a\u{7f}b\u{0}"}]}),
            "Observation.note[0].text",
        ),
    ] {
        let r = app.post("/fhir/Observation", &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let issues = r.issues();
        assert!(
            issues.iter().any(|i| i["expression"][0] == expr),
            "{expr}: {}",
            messages(&issues)
        );
    }
    // tab, CR and LF are fine
    let ok = json!({"resourceType": "Observation", "status": "final",
                    "code": {"text": "a\tb\r\nc"}});
    assert_eq!(app.post("/fhir/Observation", &ok).await.status, 201);
    assert_eq!(app.total("/fhir/Observation?_summary=count").await, 1);
}

// ---------------------------------------------------------------------------
// item 16b: JSON Patch results are bounded like bodies
// ---------------------------------------------------------------------------

async fn doubling_json_patch_is_bounded(app: TestApp) {
    let p = app
        .create(&json!({"resourceType": "Basic", "code": {"text": "x".repeat(1000)}}))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let path = format!("/fhir/Basic/{id}");
    // each copy doubles the resource: 1 KB × 2^40 if unbounded
    let mut ops = vec![json!({"op": "add", "path": "/extension",
                              "value": [{"url": "http://x", "valueString": "x".repeat(1000)}]})];
    for _ in 0..40 {
        ops.push(json!({"op": "copy", "from": "/extension", "path": "/extension/-"}));
    }
    let r = app
        .request(
            "PATCH",
            &path,
            &[("Content-Type", "application/json-patch+json")],
            Some(Value::Array(ops).to_string().into_bytes()),
        )
        .await;
    assert!(matches!(r.status, 413 | 422), "{}", r.text());
    assert!(messages(&r.issues()).contains("limit"), "{}", r.text());
    let now = app.get(&path).await.json();
    assert_eq!(now["meta"]["versionId"], "1");
}

backend_tests!(
    primitive_with_extension_only,
    deeply_nested_xml_is_a_400,
    deeply_nested_patches_are_rejected,
    control_characters_are_a_400,
    doubling_json_patch_is_bounded,
);
