//! Repeat prescriptions (issue 14, README "Booking, repeat prescriptions and
//! triage"): a patient orders the next issue of a repeat authorisation with
//! a renewal Task; the practice approves (one issue, the plan's count, the
//! Task's output, in one transaction) or rejects. Every refusal, the open
//! request rule and concurrent approvals. Both backends.

use serde_json::{json, Value};

use crate::auth_support::*;
use crate::booking::{assert_rule, at, patient_scopes, practice, ALICE, BOB};
use crate::helpers::{Resp, TestApp};

const REPEAT: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation";
const REVIEW: &str = "https://fhirbridge.dev/fhir/StructureDefinition/medication-review-date";
const COURSE: &str = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy";

/// A repeat authorisation of `patient`: `issued` of `allowed` used.
fn plan(id: &str, patient: &str, issued: u64, allowed: u64) -> Value {
    json!({"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "plan",
           "subject": {"reference": format!("Patient/{patient}")},
           "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": "39732311000001104", "display": "Amlodipine 5mg tablets"}]},
           "courseOfTherapyType": {"coding": [{"system": COURSE, "code": "continuous"}]},
           "dosageInstruction": [{"text": "One tablet daily"}],
           "dispenseRequest": {"numberOfRepeatsAllowed": allowed, "quantity": {"value": 28, "unit": "tablet"}},
           "substitution": {"allowedBoolean": true},
           "requester": {"reference": "Practitioner/bk-gp"},
           "extension": [{"url": REPEAT, "extension": [
               {"url": "numberOfPrescriptionsIssued", "valueUnsignedInt": issued},
               {"url": "authorisationExpiryDate", "valueDateTime": "2099-12-31"}]}]})
}

fn request(plan: &str, patient: &str) -> Value {
    json!({"resourceType": "Task", "status": "requested", "intent": "order",
           "code": {"coding": [{"system": "http://snomed.info/sct", "code": "103742009", "display": "Renewal of prescription"}]},
           "focus": {"reference": format!("MedicationRequest/{plan}")},
           "for": {"reference": format!("Patient/{patient}")},
           "authoredOn": at(0),
           "note": [{"text": "Running out on Friday"}],
           "input": [{"type": {"text": "pharmacy"},
                      "valueReference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "FA123"}}}]})
}

async fn seed(app: &TestApp) {
    practice(app).await;
    let admin = app.admin();
    let mut plans = vec![
        plan("rp-ok", ALICE, 1, 6),
        plan("rp-bob", BOB, 0, 6),
        plan("rp-used", ALICE, 6, 6),
        plan("rp-last", ALICE, 5, 6),
    ];
    let mut stopped = plan("rp-stopped", ALICE, 0, 6);
    stopped["status"] = json!("stopped");
    let mut order = plan("rp-order", ALICE, 0, 6);
    order["intent"] = json!("order");
    let mut acute = plan("rp-acute", ALICE, 0, 6);
    acute["courseOfTherapyType"]["coding"][0]["code"] = json!("acute");
    let mut expired = plan("rp-expired", ALICE, 0, 6);
    expired["extension"][0]["extension"][1]["valueDateTime"] = json!("2020-01-31");
    let mut review = plan("rp-review", ALICE, 0, 6);
    review["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({"url": REVIEW, "valueDate": "2021-06-01"}));
    plans.extend([stopped, order, acute, expired, review]);
    for p in plans {
        admin.upsert(&p).await;
    }
}

fn issued(plan: &Value) -> u64 {
    plan["extension"][0]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "numberOfPrescriptionsIssued")
        .and_then(|e| e["valueUnsignedInt"].as_u64())
        .unwrap()
}

async fn orders_of(app: &TestApp, plan: &str) -> Vec<Value> {
    let r = app
        .admin()
        .get(&format!(
            "/fhir/MedicationRequest?based-on=MedicationRequest/{plan}&intent=order"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

fn created_id(r: &Resp) -> String {
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn order_approve_and_reject(app: TestApp) {
    seed(&app).await;
    let alice = app.bearer(&FIXTURE.patient_token(ALICE, patient_scopes()));
    let gp = app.bearer(&FIXTURE.user_token("user/*.cruds", "bk-gp"));
    let sys = app.bearer(&FIXTURE.system_token());
    // Order; a second open request for the same plan is a duplicate.
    let task = created_id(&alice.post("/fhir/Task", &request("rp-ok", ALICE)).await);
    let r = alice.post("/fhir/Task", &request("rp-ok", ALICE)).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "DUPLICATE_REJECTED"
    );
    // The patient cancels it (JSON Patch), and may order again.
    let path = format!("/fhir/Task/{task}");
    let r = alice
        .patch(
            &path,
            &json!([{"op": "replace", "path": "/status", "value": "cancelled"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = alice
        .patch(
            &path,
            &json!([{"op": "replace", "path": "/status", "value": "requested"}]),
        )
        .await;
    assert_eq!(r.status, 409, "a cancelled request is final: {}", r.text());
    let task = created_id(&alice.post("/fhir/Task", &request("rp-ok", ALICE)).await);
    let path = format!("/fhir/Task/{task}");
    // The patient cannot approve their own request.
    let mut done = alice.get(&path).await.json();
    done["status"] = json!("completed");
    assert_rule(
        &alice.put(&path, &done).await,
        422,
        "cancel",
        "a patient completing",
    );
    // The clinician approves: one order basedOn the plan, the count, the output.
    let r = gp.put(&path, &done).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = r.json();
    let out = stored["output"][0]["valueReference"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let orders = orders_of(&app, "rp-ok").await;
    assert_eq!(orders.len(), 1);
    assert_eq!(
        format!("MedicationRequest/{}", orders[0]["id"].as_str().unwrap()),
        out
    );
    assert_eq!(orders[0]["status"], "active");
    assert_eq!(
        orders[0]["subject"]["reference"],
        format!("Patient/{ALICE}")
    );
    assert_eq!(orders[0]["requester"]["reference"], "Practitioner/bk-gp");
    assert_eq!(
        orders[0]["medicationCodeableConcept"]["coding"][0]["code"],
        "39732311000001104"
    );
    assert_eq!(
        orders[0]["dispenseRequest"]["performer"]["identifier"]["value"], "FA123",
        "the nominated pharmacy dispenses the issue"
    );
    let p = sys.get("/fhir/MedicationRequest/rp-ok").await.json();
    assert_eq!(issued(&p), 2);
    assert_eq!(p["meta"]["versionId"], "2");
    // The patient sees it completed, and the issue.
    let seen = alice.get(&path).await.json();
    assert_eq!(seen["status"], "completed");
    assert_eq!(alice.get(&format!("/fhir/{out}")).await.status, 200);
    // Actioned: no second approval.
    let r = gp.put(&path, &done).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(orders_of(&app, "rp-ok").await.len(), 1);
    // Reject needs a reason.
    let t2 = created_id(&alice.post("/fhir/Task", &request("rp-ok", ALICE)).await);
    let mut rej = alice.get(&format!("/fhir/Task/{t2}")).await.json();
    rej["status"] = json!("rejected");
    assert_rule(
        &sys.put(&format!("/fhir/Task/{t2}"), &rej).await,
        422,
        "statusReason",
        "reject without a reason",
    );
    rej["statusReason"] = json!({"text": "Please book a medication review"});
    assert_eq!(sys.put(&format!("/fhir/Task/{t2}"), &rej).await.status, 200);
    assert_eq!(orders_of(&app, "rp-ok").await.len(), 1);
    // The last issue: approved once, then the plan is used up.
    let t3 = created_id(&alice.post("/fhir/Task", &request("rp-last", ALICE)).await);
    let mut ok = alice.get(&format!("/fhir/Task/{t3}")).await.json();
    ok["status"] = json!("completed");
    assert_eq!(gp.put(&format!("/fhir/Task/{t3}"), &ok).await.status, 200);
    let r = alice.post("/fhir/Task", &request("rp-last", ALICE)).await;
    assert_rule(&r, 422, "numberOfRepeatsAllowed", "used up");
}

async fn requests_that_are_refused(app: TestApp) {
    seed(&app).await;
    let alice = app.bearer(&FIXTURE.patient_token(ALICE, patient_scopes()));
    for (plan, rule) in [
        ("rp-used", "numberOfRepeatsAllowed"),
        ("rp-stopped", "status"),
        ("rp-order", "intent=plan"),
        ("rp-acute", "courseOfTherapyType"),
        ("rp-expired", "authorisationExpiryDate"),
        ("rp-review", "reviewDate"),
        // Another patient's plan and no plan at all read alike.
        ("rp-bob", "not a repeat authorisation of this patient"),
        ("rp-none", "not a repeat authorisation of this patient"),
    ] {
        let r = alice.post("/fhir/Task", &request(plan, ALICE)).await;
        assert_rule(&r, 422, rule, plan);
    }
    // Naming another patient is access control's 403.
    let r = alice.post("/fhir/Task", &request("rp-bob", BOB)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A patient's request starts as requested.
    let mut t = request("rp-ok", ALICE);
    t["status"] = json!("completed");
    assert_rule(
        &alice.post("/fhir/Task", &t).await,
        422,
        "requested",
        "a patient creating a completed Task",
    );
    // The rules hold inside a transaction: one refusal fails it whole.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": request("rp-ok", ALICE), "request": {"method": "POST", "url": "Task"}},
        {"resource": request("rp-used", ALICE), "request": {"method": "POST", "url": "Task"}}]});
    let r = alice.post("/fhir", &bundle).await;
    assert_rule(&r, 422, "numberOfRepeatsAllowed", "a transaction");
    assert_eq!(app.admin().total("/fhir/Task?_total=accurate").await, 0);
}

async fn concurrent_approvals_issue_once(app: TestApp) {
    seed(&app).await;
    let alice = app.bearer(&FIXTURE.patient_token(ALICE, patient_scopes()));
    let task = created_id(&alice.post("/fhir/Task", &request("rp-ok", ALICE)).await);
    let mut done = alice.get(&format!("/fhir/Task/{task}")).await.json();
    done["status"] = json!("completed");
    let tokens: Vec<String> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                FIXTURE.system_token()
            } else {
                FIXTURE.user_token("user/*.cruds", "bk-gp")
            }
        })
        .collect();
    let path = format!("/fhir/Task/{task}");
    let calls = tokens.iter().map(|t| {
        let c = app.bearer(t);
        let (path, done) = (path.clone(), done.clone());
        async move { c.put(&path, &done).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let refused = results.iter().filter(|r| r.status == 409).count();
    let other: Vec<String> = results
        .iter()
        .filter(|r| r.status != 200 && r.status != 409)
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert_eq!((ok, refused), (1, 7), "one approval; others: {other:?}");
    assert_eq!(orders_of(&app, "rp-ok").await.len(), 1, "exactly one issue");
    let p = app
        .admin()
        .get("/fhir/MedicationRequest/rp-ok")
        .await
        .json();
    assert_eq!(issued(&p), 2);
    // Concurrent requests for one plan: exactly one open request.
    let t2: Vec<String> = (0..8)
        .map(|_| FIXTURE.patient_token(ALICE, patient_scopes()))
        .collect();
    let calls = t2.iter().map(|t| {
        let c = app.bearer(t);
        async move { c.post("/fhir/Task", &request("rp-last", ALICE)).await }
    });
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 1);
    assert_eq!(results.iter().filter(|r| r.status == 409).count(), 7);
}

crate::backend_tests!(with required;
    order_approve_and_reject,
    requests_that_are_refused,
    concurrent_approvals_issue_once,
);
