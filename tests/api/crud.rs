//! create, read, vread, update (incl. update-as-create), delete.

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{patient, without_server_meta, TestApp};

backend_tests!(
    create_assigns_id_version_and_headers,
    read_returns_stored_resource,
    update_increments_version_and_vread_sees_each,
    update_as_create_uses_client_id,
    identical_update_writes_no_new_version,
    delete_then_read_is_gone,
    delete_is_idempotent,
    all_supported_types_round_trip,
);

async fn create_assigns_id_version_and_headers(app: TestApp) {
    let mut body = patient("9000000009", "Smith");
    body["id"] = json!("client-chosen");
    let r = app.post("/fhir/Patient", &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let id = v["id"].as_str().unwrap();
    assert_ne!(id, "client-chosen", "server assigns ids on create");
    assert_eq!(v["meta"]["versionId"], "1");
    assert!(v["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert!(r.header("last-modified").is_some());
    let loc = r.header("location").unwrap();
    assert!(
        loc.ends_with(&format!("/fhir/Patient/{id}/_history/1")),
        "{loc}"
    );
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
    assert_eq!(without_server_meta(v.clone())["name"], body["name"]);
}

async fn read_returns_stored_resource(app: TestApp) {
    let created = app.create(&patient("9000000017", "Jones")).await;
    let id = created["id"].as_str().unwrap();
    let r = app.get(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), created);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    let missing = app.get("/fhir/Patient/does-not-exist").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.issues()[0]["code"], "not-found");
}

async fn update_increments_version_and_vread_sees_each(app: TestApp) {
    let mut v = app.create(&patient("9000000025", "Brown")).await;
    let id = v["id"].as_str().unwrap().to_owned();
    v["name"][0]["family"] = json!("Browne");
    let r = app.put(&format!("/fhir/Patient/{id}"), &v).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["meta"]["versionId"], "2");
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    let v1 = app.get(&format!("/fhir/Patient/{id}/_history/1")).await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.json()["name"][0]["family"], "Brown");
    let v2 = app.get(&format!("/fhir/Patient/{id}/_history/2")).await;
    assert_eq!(v2.json()["name"][0]["family"], "Browne");
    assert_eq!(
        app.get(&format!("/fhir/Patient/{id}/_history/3"))
            .await
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/fhir/Patient/{id}/_history/x"))
            .await
            .status,
        400
    );
}

async fn update_as_create_uses_client_id(app: TestApp) {
    let mut body = patient("9000000033", "Green");
    body["id"] = json!("green-1");
    let r = app.put("/fhir/Patient/green-1", &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["id"], "green-1");
    assert_eq!(r.json()["meta"]["versionId"], "1");
    assert!(r
        .header("location")
        .unwrap()
        .contains("/fhir/Patient/green-1/_history/1"));
    assert_eq!(app.get("/fhir/Patient/green-1").await.status, 200);
}

async fn identical_update_writes_no_new_version(app: TestApp) {
    let v = app.create(&patient("9000000041", "White")).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let r = app.put(&format!("/fhir/Patient/{id}"), &v).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["meta"]["versionId"],
        "1",
        "a retried identical PUT must not create versions"
    );
    let h = app
        .get(&format!("/fhir/Patient/{id}/_history"))
        .await
        .json();
    assert_eq!(h["total"], 1);
}

async fn delete_then_read_is_gone(app: TestApp) {
    let v = app.create(&patient("9000000068", "Black")).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let r = app.delete(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    let g = app.get(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(g.status, 410);
    assert_eq!(g.issues()[0]["code"], "deleted");
    // The version before the deletion is still readable; the deletion itself is gone.
    assert_eq!(
        app.get(&format!("/fhir/Patient/{id}/_history/1"))
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/fhir/Patient/{id}/_history/2"))
            .await
            .status,
        410
    );
    // Deleted resources are not found by search.
    let s = app.get(&format!("/fhir/Patient?_id={id}")).await.json();
    assert_eq!(s["total"], 0);
    // Update after delete resurrects it with the next version.
    let r = app.put(&format!("/fhir/Patient/{id}"), &v).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["meta"]["versionId"], "3");
}

async fn delete_is_idempotent(app: TestApp) {
    assert_eq!(app.delete("/fhir/Patient/never-existed").await.status, 204);
    let v = app.create(&patient("9000000076", "Grey")).await;
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&format!("/fhir/Patient/{id}")).await.status, 204);
    assert_eq!(app.delete(&format!("/fhir/Patient/{id}")).await.status, 204);
    let h = app
        .get(&format!("/fhir/Patient/{id}/_history"))
        .await
        .json();
    assert_eq!(h["total"], 2, "a second delete writes nothing");
    let r = app
        .request(
            "DELETE",
            &format!("/fhir/Patient/{id}"),
            &[("Prefer", "return=OperationOutcome")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.issues()[0]["severity"], "information");
}

async fn all_supported_types_round_trip(app: TestApp) {
    let samples = [
        json!({"resourceType": "Appointment", "status": "booked", "participant": [{"status": "accepted", "actor": {"reference": "Patient/p1"}}]}),
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "Amoxicillin"}}),
        json!({"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "INFA"}]}],
            "patient": {"reference": "Patient/consenting"},
            "policyRule": {"text": "data sharing"},
            "provision": {"type": "permit"}}),
        json!({"resourceType": "Slot", "status": "free", "schedule": {"reference": "Schedule/s1"}, "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:15:00Z"}),
        json!({"resourceType": "Schedule", "actor": [{"reference": "Practitioner/d1"}]}),
        json!({"resourceType": "Practitioner", "name": [{"family": "Who"}]}),
        json!({"resourceType": "PractitionerRole", "active": true}),
        json!({"resourceType": "Organization", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A12345"}], "name": "Test Surgery"}),
        json!({"resourceType": "Location", "name": "Room 1"}),
        json!({"resourceType": "Medication", "code": {"text": "Paracetamol 500mg"}}),
    ];
    for s in samples {
        let ty = s["resourceType"].as_str().unwrap();
        let created = app.create(&s).await;
        let id = created["id"].as_str().unwrap();
        let r = app.get(&format!("/fhir/{ty}/{id}")).await;
        assert_eq!(r.status, 200, "{ty}");
        let mut back = without_server_meta(r.json());
        back.as_object_mut().unwrap().remove("id");
        assert_eq!(back, s, "{ty} round trip");
    }
}
