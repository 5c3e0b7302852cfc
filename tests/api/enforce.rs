//! The Consent rules at work, end to end (issue 13): the core of each rule
//! on one small record, on both backends. The full leak-path sweep is in
//! `consent.rs` and `proxy.rs`.

use serde_json::{json, Value};

use crate::auth_support::*;
use crate::helpers::{nhs_number, TestApp};

const SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const CLIENT: &str = "https://fhir.nhs.uk/Id/client-id";

fn privacy(patient: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "status": "active",
           "scope": {"coding": [{"system": SCOPE, "code": "patient-privacy"}]},
           "category": [{"coding": [{"system": ACT, "code": "INFA"}]}],
           "patient": {"reference": format!("Patient/{patient}")},
           "policyRule": {"text": "patient preference"},
           "provision": provision})
}

fn deny_client(patient: &str, client: &str) -> Value {
    privacy(
        patient,
        json!({"type": "permit", "provision": [{"type": "deny",
               "actor": [{"role": {"text": "app"}, "reference": {"identifier": {"system": CLIENT, "value": client}}}]}]}),
    )
}

async fn seed(app: &TestApp, id: &str, nhs: &str) {
    let admin = app.admin();
    admin
        .upsert(&json!({"resourceType": "Patient", "id": id,
            "identifier": [{"system": NHS_SYSTEM, "value": nhs}], "name": [{"family": id}]}))
        .await;
    admin
        .upsert(
            &json!({"resourceType": "MedicationRequest", "id": format!("mr-{id}"),
            "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": format!("Patient/{id}")}}),
        )
        .await;
}

fn app_token(client: &str) -> String {
    FIXTURE.token("system/*.rs", json!({"client_id": client}))
}

async fn a_denied_app_sees_nothing_of_the_patient(app: TestApp) {
    seed(&app, "den-p", &nhs_number(301)).await;
    seed(&app, "den-q", &nhs_number(302)).await;
    let me = app.bearer(&FIXTURE.patient_token("den-p", "patient/*.cruds"));
    let r = me
        .post("/fhir/Consent", &deny_client("den-p", "app-x"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let consent = r.json();
    let x = app.bearer(&app_token("app-x"));
    let y = app.bearer(&app_token("app-y"));
    assert_eq!(x.get("/fhir/Patient/den-p").await.status, 404);
    assert_eq!(x.get("/fhir/MedicationRequest/mr-den-p").await.status, 404);
    assert_eq!(x.get("/fhir/Patient/den-q").await.status, 200);
    let r = x.get("/fhir/MedicationRequest?_total=accurate").await;
    let ids = crate::helpers::entry_ids(&r.json());
    assert!(
        ids.contains(&"MedicationRequest/mr-den-q".to_string()),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"MedicationRequest/mr-den-p".to_string()),
        "{ids:?}"
    );
    assert_eq!(y.get("/fhir/Patient/den-p").await.status, 200);
    // The patient's own app still sees their record.
    assert_eq!(me.get("/fhir/Patient/den-p").await.status, 200);
    // Withdrawn: the next request sees the data again.
    let mut w = consent.clone();
    w["status"] = json!("inactive");
    let r = me
        .put(
            &format!("/fhir/Consent/{}", consent["id"].as_str().unwrap()),
            &w,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(x.get("/fhir/Patient/den-p").await.status, 200);
}

async fn one_active_per_kind(app: TestApp) {
    seed(&app, "one-p", &nhs_number(303)).await;
    let me = app.bearer(&FIXTURE.patient_token("one-p", "patient/*.cruds"));
    let mut handles = Vec::new();
    for i in 0..30 {
        let c = deny_client("one-p", &format!("app-{i}"));
        let token = me.token.clone();
        let base = app.base.clone();
        handles.push(actix_rt::spawn(async move {
            awc::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .finish()
                .post(format!("{base}/fhir/Consent"))
                .insert_header(("Authorization", format!("Bearer {token}")))
                .insert_header(("Content-Type", "application/fhir+json"))
                .send_body(c.to_string())
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for h in handles {
        let s = h.await.unwrap().unwrap();
        assert!(s == 201 || s == 409, "status {s}");
    }
    let r = me.get("/fhir/Consent?patient=one-p&status=active").await;
    assert_eq!(r.json()["total"], 1, "{}", r.text());
}

async fn withheld_labels_hide_from_the_patient(app: TestApp) {
    seed(&app, "lab-p", &nhs_number(304)).await;
    app.admin()
        .upsert(&json!({"resourceType": "MedicationRequest", "id": "mr-lab-r",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
            "status": "active", "intent": "order", "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/lab-p"}}))
        .await;
    let me = app.bearer(&FIXTURE.patient_token("lab-p", "patient/*.rs"));
    assert_eq!(me.get("/fhir/MedicationRequest/mr-lab-r").await.status, 404);
    let r = me.get("/fhir/MedicationRequest?patient=lab-p").await;
    assert_eq!(r.json()["total"], 1, "{}", r.text());
    let sys = app.admin();
    assert_eq!(
        sys.get("/fhir/MedicationRequest/mr-lab-r").await.status,
        200
    );
}

async fn a_proxy_acts_for_the_child(app: TestApp) {
    let parent_nhs = nhs_number(305);
    seed(&app, "prx-parent", &parent_nhs).await;
    seed(&app, "prx-child", &nhs_number(306)).await;
    seed(&app, "prx-other", &nhs_number(307)).await;
    let parent = app.bearer(&FIXTURE.nhs_token(&parent_nhs, "P9.Cp.Cd", "patient/*.rs"));
    assert_eq!(
        parent
            .get("/fhir/MedicationRequest?patient=prx-child")
            .await
            .status,
        403
    );
    let grant = privacy(
        "prx-child",
        json!({"type": "permit", "actor": [{"role": {"text": "parent"}, "reference": {"type": "RelatedPerson",
            "identifier": {"system": NHS_SYSTEM, "value": parent_nhs}}}]}),
    );
    let r = app.admin().post("/fhir/Consent", &grant).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(parent.get("/fhir/Patient/prx-child").await.status, 200);
    let r = parent
        .get("/fhir/MedicationRequest?patient=prx-child")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 1);
    assert_eq!(
        parent
            .get("/fhir/MedicationRequest?patient=prx-other")
            .await
            .status,
        403
    );
    assert_eq!(
        parent
            .get("/fhir/MedicationRequest?patient=nobody")
            .await
            .status,
        403
    );
    assert_eq!(parent.get("/fhir/Patient/prx-other").await.status, 404);
}

crate::backend_tests!(with required;
    a_denied_app_sees_nothing_of_the_patient,
    one_active_per_kind,
    withheld_labels_hide_from_the_patient,
    a_proxy_acts_for_the_child,
);
