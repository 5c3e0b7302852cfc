//! `fhirbridge reindex` (the real binary) against the test server's database:
//! lost index rows come back, an interrupted run resumes from its cursor (the
//! cursor of its job row, as a crashed or a queued run leaves it).

use std::process::Command;

use crate::backend_tests;
use crate::helpers::{db_sql, nhs_number, patient, TestApp};

backend_tests!(reindex_rebuilds_lost_rows_and_resumes);

fn reindex(app: &TestApp, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
        .arg("reindex")
        .args(["--database", &app.db_url, "--quiet"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fhirbridge reindex");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn reindex_rebuilds_lost_rows_and_resumes(app: TestApp) {
    let mut ids = Vec::new();
    let mut numbers = Vec::new();
    for i in 0..5 {
        let nhs = nhs_number(700 + i);
        let p = app.create(&patient(&nhs, &format!("Reidx{i}"))).await;
        ids.push(p["id"].as_str().unwrap().to_owned());
        numbers.push(nhs);
    }
    app.create(&serde_json::json!({"resourceType": "Location", "name": "Reidx room"}))
        .await;
    assert_eq!(
        app.delete(&format!("/fhir/Patient/{}", ids[4]))
            .await
            .status,
        204
    );
    let by_name = "/fhir/Patient?family=Reidx";
    assert_eq!(app.total(by_name).await, 4);

    // Index rows lost (as after an upgrade that adds parameters).
    db_sql(&app, "DELETE FROM idx_string; DELETE FROM idx_token;");
    assert_eq!(app.total(by_name).await, 0);

    // An interrupted run over Patients stopped after the second current one.
    let mut current = ids[..4].to_vec();
    current.sort();
    db_sql(
        &app,
        &format!(
            "INSERT INTO jobs (id, kind, dedupe_key, params, state, attempts, max_attempts, \
             lease_owner, lease_until, cursor, done_units, created_at, updated_at, run_after) \
             VALUES ('crashed-run', 'reindex', 'reindex:Patient', '{{\"types\":[\"Patient\"]}}', \
             'running', 1, 5, 'a-process-that-died', 0, 'Patient/{}', 2, 0, 0, 0)",
            current[1]
        ),
    );
    let (code, out) = reindex(&app, &["--type", "Patient"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "resumed an interrupted run after Patient/{}",
            current[1]
        )),
        "{out}"
    );
    assert!(out.contains("reindexed 2 resources"), "{out}");
    assert_eq!(app.total(by_name).await, 2);
    let found = app.get(&format!("{by_name}&_elements=id")).await.json();
    let mut got: Vec<&str> = found["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, vec![current[2].as_str(), current[3].as_str()]);

    // The finished run forgot its cursor: the next one covers every type.
    let (code, out) = reindex(&app, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("resumed"), "{out}");
    assert!(out.contains("reindexed 5 resources"), "{out}");
    assert_eq!(app.total(by_name).await, 4);
    assert_eq!(app.total("/fhir/Location?name=reidx").await, 1);
    let by_nhs = format!(
        "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
        numbers[3]
    );
    assert_eq!(app.total(&by_nhs).await, 1);
    // Deleted resources stay out of the index.
    let deleted = format!(
        "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
        numbers[4]
    );
    assert_eq!(app.total(&deleted).await, 0);

    // Rerunning is harmless (no duplicate rows), and --restart ignores a cursor.
    db_sql(
        &app,
        &format!(
            "INSERT INTO jobs (id, kind, dedupe_key, params, state, attempts, max_attempts, \
             cursor, done_units, created_at, updated_at, run_after) \
             VALUES ('queued-run', 'reindex', 'reindex', '{{\"types\":[]}}', 'queued', 0, 5, \
             'Patient/{}', 4, 0, 0, 0)",
            current[3]
        ),
    );
    let (code, out) = reindex(&app, &["--restart"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reindexed 5 resources"), "{out}");
    assert_eq!(app.total(by_name).await, 4);
    assert_eq!(app.total(&by_nhs).await, 1);

    let (code, out) = reindex(&app, &["--type", "Nonsense"]);
    assert_eq!(code, 2, "{out}");
}
