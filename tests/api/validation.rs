//! Profile validation in the server: the write gate (422), per-type policy,
//! `$validate`, the CapabilityStatement, and the `fhirbridge validate` CLI.
//! Needs the R4 core package (`FHIRBRIDGE_R4_EXAMPLES_DIR`); skips without it.

use std::process::Command;

use serde_json::{json, Value};

use crate::examples::EXAMPLES_ENV;
use crate::helpers::{messages, uk_patient, TestApp};

fn core_dir() -> Option<String> {
    let dir = std::env::var(EXAMPLES_ENV).ok();
    if dir.is_none() {
        eprintln!("skipping validation tests: {EXAMPLES_ENV} is not set");
    }
    dir
}

async fn validating_app(policy: Option<(&str, &str)>) -> Option<TestApp> {
    let dir = core_dir()?;
    Some(
        TestApp::sqlite_with(|s| {
            s.validation.enabled = true;
            s.validation.core_package_dir = Some(dir);
            if let Some((ty, p)) = policy {
                s.validation.policy.insert(ty.into(), p.into());
            }
        })
        .await,
    )
}

#[actix_rt::test]
async fn writes_are_validated_against_uk_core() {
    let Some(app) = validating_app(None).await else {
        return;
    };
    let ok = app.post("/fhir/Patient", &uk_patient("9000000009")).await;
    assert_eq!(ok.status, 201, "{}", ok.text());

    let bad = app.post("/fhir/Patient", &uk_patient("9000000001")).await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    let issues = bad.issues();
    assert!(
        messages(&issues).contains("Modulus 11"),
        "{}",
        messages(&issues)
    );
    assert!(
        issues.iter().any(|i| i["expression"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("Patient.identifier[0]")),
        "{}",
        messages(&issues)
    );

    let appt = json!({"resourceType": "Appointment", "status": "booked",
        "participant": [{"status": "accepted", "actor": {"reference": "Patient/x"}}]});
    let r = app.post("/fhir/Appointment", &appt).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        messages(&r.issues()).contains("app-3"),
        "{}",
        messages(&r.issues())
    );

    // Nothing invalid was stored.
    assert_eq!(app.total("/fhir/Patient").await, 1);
    assert_eq!(app.total("/fhir/Appointment").await, 0);
}

#[actix_rt::test]
async fn policy_warn_does_not_block() {
    let Some(app) = validating_app(Some(("Patient", "warn"))).await else {
        return;
    };
    let r = app.post("/fhir/Patient", &uk_patient("9000000001")).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[actix_rt::test]
async fn validate_operation_reports_without_storing() {
    let Some(app) = validating_app(None).await else {
        return;
    };
    let r = app
        .post("/fhir/Patient/$validate", &uk_patient("9000000001"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.issues().iter().any(|i| i["severity"] == "error"),
        "{}",
        r.text()
    );

    let r = app
        .post("/fhir/Patient/$validate", &uk_patient("9000000009"))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.issues().iter().all(|i| i["severity"] != "error"),
        "{}",
        r.text()
    );

    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": uk_patient("9000000009")},
        {"name": "profile", "valueUri": "http://example.org/StructureDefinition/unknown"}
    ]});
    let r = app.post("/fhir/Patient/$validate", &params).await;
    assert_eq!(r.status, 200);
    assert!(
        r.issues()
            .iter()
            .any(|i| i["severity"] == "error" && i["code"] == "not-found"),
        "{}",
        r.text()
    );

    let stored = app.create(&uk_patient("9000000009")).await;
    let r = app
        .get(&format!(
            "/fhir/Patient/{}/$validate",
            stored["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        app.total("/fhir/Patient").await,
        1,
        "$validate stores nothing"
    );

    let r = app
        .post(
            "/fhir/Patient/$validate?mode=bogus",
            &uk_patient("9000000009"),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = app
        .post("/fhir/Patient/$validate", &json!({"resourceType": "Slot"}))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.issues().iter().any(|i| i["severity"] == "error"));
}

#[actix_rt::test]
async fn capability_statement_advertises_validation() {
    let Some(app) = validating_app(None).await else {
        return;
    };
    let cs = app.get("/fhir/metadata").await.json();
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    assert_eq!(patient["operation"][0]["name"], "validate");
    assert_eq!(
        patient["supportedProfile"][0],
        "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"
    );
}

#[test]
fn cli_exit_codes_and_reports() {
    let Some(dir) = core_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.json");
    let bad = tmp.path().join("bad.json");
    let xml = tmp.path().join("good.xml");
    std::fs::write(&good, uk_patient("9000000009").to_string()).unwrap();
    std::fs::write(&bad, uk_patient("9000000001").to_string()).unwrap();
    std::fs::write(&xml, r#"<Patient xmlns="http://hl7.org/fhir"><identifier><system value="https://fhir.nhs.uk/Id/nhs-number"/><value value="9000000009"/></identifier></Patient>"#).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
            .arg("validate")
            .args(args)
            .env("RUST_LOG", "error")
            .env_remove("FHIRBRIDGE_PROFILES_DIR")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[validation]\ncore_package_dir = \"{dir}\"\n"),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = run(&[
        "--config",
        cfg,
        good.to_str().unwrap(),
        xml.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Success"));
    let out = run(&[
        "--config",
        cfg,
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("*FAILURE*") && text.contains("Modulus 11"),
        "{text}"
    );
    let out = run(&["--config", cfg, "--format", "json", bad.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["valid"], false);
    assert_eq!(v[0]["outcome"]["resourceType"], "OperationOutcome");
    let out = run(&["--config", cfg, "/no/such/file.json"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--config", cfg, "--format", "yaml", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
