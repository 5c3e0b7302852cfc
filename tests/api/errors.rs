//! Bad input: every malformed request gets a 4xx OperationOutcome naming the
//! element, and nothing is written.

use serde_json::{json, Value};

use crate::backend_tests;
use crate::helpers::{patient, TestApp};

backend_tests!(
    structural_errors_name_the_element,
    malformed_bodies_are_400,
    type_and_id_mismatches_are_400,
    unknown_types_routes_and_methods,
    body_limit_is_413,
    bad_input_writes_nothing,
);

fn expressions(issues: &[Value]) -> Vec<String> {
    issues
        .iter()
        .filter_map(|i| i["expression"][0].as_str().map(str::to_owned))
        .collect()
}

async fn structural_errors_name_the_element(app: TestApp) {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"resourceType": "Patient", "birthDate": "2020-13-45"}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": "yesterday"}),
            "Patient.birthDate",
        ),
        (json!({"resourceType": "Patient", "foo": 1}), "Patient.foo"),
        (
            json!({"resourceType": "Patient", "active": "true"}),
            "Patient.active",
        ),
        (
            json!({"resourceType": "Patient", "name": {"family": "x"}}),
            "Patient.name",
        ),
        (
            json!({"resourceType": "Patient", "gender": ["male"]}),
            "Patient.gender",
        ),
        (
            json!({"resourceType": "Patient", "name": []}),
            "Patient.name",
        ),
        (
            json!({"resourceType": "Patient", "name": [{"given": [""]}]}),
            "Patient.name[0].given[0]",
        ),
        (
            json!({"resourceType": "Patient", "gender": null}),
            "Patient.gender",
        ),
        (
            json!({"resourceType": "Patient", "multipleBirthInteger": 1.5}),
            "Patient.multipleBirthInteger",
        ),
        (
            json!({"resourceType": "Patient", "deceasedString": "x"}),
            "Patient.deceasedString",
        ),
        (
            json!({"resourceType": "Patient", "identifier": [{"system": "not a uri", "value": "1"}]}),
            "Patient.identifier[0].system",
        ),
        (
            json!({"resourceType": "Slot", "status": "free", "schedule": {"reference": "Schedule/1"}, "start": "2026-01-01T09:00:00", "end": "2026-01-01T09:15:00Z"}),
            "Slot.start",
        ),
        (
            json!({"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01"}}),
            "Patient.meta.lastUpdated",
        ),
        (
            json!({"resourceType": "Patient", "contact": [{"gender": "male", "telecom": [{"system": 5}]}]}),
            "Patient.contact[0].telecom[0].system",
        ),
    ];
    for (body, expr) in cases {
        let ty = body["resourceType"].as_str().unwrap().to_owned();
        let r = app.post(&format!("/fhir/{ty}"), &body).await;
        assert_eq!(r.status, 400, "{body} -> {}", r.text());
        let exprs = expressions(&r.issues());
        assert!(
            exprs.iter().any(|e| e == expr),
            "{body}: expected {expr}, got {exprs:?}"
        );
    }
    // All problems are reported at once.
    let r = app
        .post(
            "/fhir/Patient",
            &json!({"resourceType": "Patient", "birthDate": "2020-02-30", "foo": 1, "active": 1}),
        )
        .await;
    assert!(r.issues().len() >= 3, "{}", r.text());
}

async fn malformed_bodies_are_400(app: TestApp) {
    for body in [
        &b"{not json"[..],
        b"",
        b"[]",
        b"\"Patient\"",
        b"{\"resourceType\": \"Patient\", \"gender\": \"male\", \"gender\": \"female\"}",
        b"{\"resourceType\": \"Patient\"} trailing",
        b"\xff\xfe",
    ] {
        let r = app
            .request(
                "POST",
                "/fhir/Patient",
                &[("Content-Type", "application/fhir+json")],
                Some(body.to_vec()),
            )
            .await;
        assert_eq!(
            r.status,
            400,
            "{:?} -> {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        assert!(!r.issues().is_empty());
    }
    let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let r = app
        .request(
            "POST",
            "/fhir/Patient",
            &[("Content-Type", "application/fhir+json")],
            Some(deep.into_bytes()),
        )
        .await;
    assert_eq!(r.status, 400);
}

async fn type_and_id_mismatches_are_400(app: TestApp) {
    let r = app
        .post("/fhir/Patient", &json!({"resourceType": "Slot"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(expressions(&r.issues()), vec!["resourceType"]);
    let r = app
        .post("/fhir/Patient", &json!({"name": [{"family": "x"}]}))
        .await;
    assert_eq!(r.status, 400);
    let mut body = patient("9000000130", "Mismatch");
    body["id"] = json!("abc");
    let r = app.put("/fhir/Patient/xyz", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(expressions(&r.issues()), vec!["Patient.id"]);
    let r = app
        .put("/fhir/Patient/xyz", &patient("9000000130", "NoId"))
        .await;
    assert_eq!(r.status, 400);
    let r = app.put("/fhir/Patient/bad$id", &body).await;
    assert_eq!(r.status, 400);
    let long = "a".repeat(65);
    assert_eq!(app.get(&format!("/fhir/Patient/{long}")).await.status, 400);
}

async fn unknown_types_routes_and_methods(app: TestApp) {
    // Every concrete R4 type is served; abstract and unknown names are not.
    assert_eq!(app.get("/fhir/Observation/1").await.status, 404);
    let r = app.get("/fhir/Foo/1").await;
    assert_eq!(r.status, 404);
    assert!(r.issues()[0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("Unknown resource type"));
    assert_eq!(app.get("/fhir/Foo").await.status, 404);
    assert_eq!(app.get("/fhir/DomainResource").await.status, 404);
    assert_eq!(
        app.post("/fhir/Resource", &json!({"resourceType": "Resource"}))
            .await
            .status,
        404
    );
    let r = app.get("/nowhere").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.issues()[0]["code"], "not-found");
    let r = app
        .request("PATCH", "/fhir/Patient/1", &[], Some(b"[]".to_vec()))
        .await;
    assert_eq!(r.status, 415, "PATCH needs a patch media type");
    let r = app.request("DELETE", "/fhir/metadata", &[], None).await;
    assert_eq!(r.status, 405);
    let r = app
        .post(
            "/fhir",
            &json!({"resourceType": "Bundle", "type": "document"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.issues()[0]["code"], "invalid");
}

async fn body_limit_is_413(app: TestApp) {
    // The test server's limit is 1 MiB.
    let mut body = patient("9000000149", "Big");
    body["name"][0]["text"] = json!("x".repeat(2 * 1024 * 1024));
    let r = app.post("/fhir/Patient", &body).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.issues()[0]["code"], "too-costly");
}

async fn bad_input_writes_nothing(app: TestApp) {
    let _ = app
        .post(
            "/fhir/Patient",
            &json!({"resourceType": "Patient", "birthDate": "nope"}),
        )
        .await;
    let _ = app
        .post(
            "/fhir/Patient",
            &json!({"resourceType": "Patient", "name": []}),
        )
        .await;
    let h = app.get("/fhir/Patient/_history").await.json();
    assert_eq!(h["total"], 0, "{h}");
}
