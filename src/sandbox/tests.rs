//! Rule tests against the state, and end-to-end tests through the routes.

use std::sync::{Arc, Barrier, Mutex};

use actix_web::http::StatusCode;
use actix_web::test as atest;
use actix_web::{web, App};
use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};

use super::outcome::GpcError;
use super::ssp::{self, check_jwt, test_token};
use super::store::{profile_for, SlotRec, Store, BOOKING_ORG_URL, CANCELLATION_REASON_URL};
use super::time::uk;
use super::{appointments, configure, structured, tasks, Sandbox, SandboxOptions};

const P1: &str = "pat-9000000009";
const P2: &str = "pat-9000000017";

fn store() -> Store {
    Store::new(SandboxOptions::default(), Utc::now())
}

fn code(e: &GpcError) -> (u16, &'static str) {
    (e.status.as_u16(), e.code)
}

/// Two adjacent future slots of one schedule with one delivery channel.
fn future_pair(store: &Store, schedule_kind: &str) -> (String, String) {
    let now = Utc::now() + TimeDelta::hours(1);
    let mut slots: Vec<&SlotRec> = store
        .slots
        .values()
        .filter(|s| s.schedule.ends_with(schedule_kind) && s.start > now && s.free)
        .collect();
    slots.sort_by_key(|s| s.start);
    for a in &slots {
        if let Some(b) = slots
            .iter()
            .find(|b| b.schedule == a.schedule && b.start == a.end && b.channel == a.channel)
        {
            return (a.id.clone(), b.id.clone());
        }
    }
    panic!("no adjacent future slots");
}

fn location_of(store: &Store, slot: &str) -> String {
    let schedule = store.get("Schedule", &store.slots[slot].schedule).unwrap();
    schedule["actor"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a["reference"].as_str()?.strip_prefix("Location/"))
        .unwrap()
        .to_string()
}

fn appointment(store: &Store, slots: &[&str], patient: &str) -> Value {
    let first = &store.slots[slots[0]];
    let last = &store.slots[slots[slots.len() - 1]];
    json!({
        "resourceType": "Appointment",
        "meta": {"profile": [profile_for("Appointment")]},
        "contained": [{
            "resourceType": "Organization",
            "id": "1",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A1001"}],
            "name": "Test Consumer",
            "telecom": [{"system": "phone", "value": "0300 303 5678"}],
        }],
        "extension": [{"url": BOOKING_ORG_URL, "valueReference": {"reference": "#1"}}],
        "status": "booked",
        "description": "Review of medication",
        "start": uk(first.start),
        "end": uk(last.end),
        "slot": slots.iter().map(|s| json!({"reference": format!("Slot/{s}")})).collect::<Vec<_>>(),
        "created": uk(Utc::now()),
        "comment": "Prefers mornings",
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
            {"actor": {"reference": format!("Location/{}", location_of(store, slots[0]))}, "status": "accepted"},
        ],
    })
}

fn book(store: &mut Store, body: &Value) -> Result<Value, GpcError> {
    appointments::book(store, body, Utc::now(), "http://sandbox/fhir").map(|r| {
        assert_eq!(r.status, StatusCode::CREATED);
        r.body
    })
}

// ---- JWT ----

fn now() -> i64 {
    Utc::now().timestamp()
}

fn claims_token(edit: impl FnOnce(&mut Value)) -> String {
    let token = test_token(ssp::SCOPE_PATIENT_READ, now() - 10);
    let payload = token.split('.').nth(1).unwrap();
    let bytes = crate::base64::decode(payload, crate::base64::Alphabet::UrlSafe).unwrap();
    let mut claims: Value = serde_json::from_slice(&bytes).unwrap();
    edit(&mut claims);
    let enc = |v: &Value| {
        crate::base64::encode(v.to_string().as_bytes(), crate::base64::Alphabet::UrlSafe)
    };
    format!(
        "{}.{}.",
        enc(&json!({"alg": "none", "typ": "JWT"})),
        enc(&claims)
    )
}

type ClaimEdit = dyn FnOnce(&mut Value);

#[test]
fn jwt_claims_are_checked() {
    let ok = test_token(ssp::SCOPE_PATIENT_READ, now() - 10);
    let audit = check_jwt(
        Some(&format!("Bearer {ok}")),
        ssp::SCOPE_PATIENT_READ,
        now(),
    )
    .unwrap();
    assert_eq!(audit.requesting_ods, "A1001");
    assert_eq!(audit.practitioner_id, "10019");

    let bad = |auth: String, scope: &str| {
        let e = check_jwt(Some(&auth), scope, now()).unwrap_err();
        assert_eq!(code(&e), (400, "BAD_REQUEST"), "{}", e.diagnostics);
    };
    bad(format!("Bearer {ok}"), ssp::SCOPE_PATIENT_WRITE);
    bad(format!("Basic {ok}"), ssp::SCOPE_PATIENT_READ);
    bad(format!("Bearer {ok}sig"), ssp::SCOPE_PATIENT_READ);
    bad("Bearer a.b".into(), ssp::SCOPE_PATIENT_READ);
    assert!(check_jwt(None, ssp::SCOPE_PATIENT_READ, now()).is_err());
    let hs = {
        let enc = |v: &Value| {
            crate::base64::encode(v.to_string().as_bytes(), crate::base64::Alphabet::UrlSafe)
        };
        let payload = ok.split('.').nth(1).unwrap();
        format!("{}.{payload}.", enc(&json!({"alg": "HS256", "typ": "JWT"})))
    };
    bad(format!("Bearer {hs}"), ssp::SCOPE_PATIENT_READ);
    let t = now();
    let edits: Vec<Box<ClaimEdit>> = vec![
        Box::new(|c| c["exp"] = json!(c["iat"].as_i64().unwrap() + 301)),
        Box::new(move |c| {
            c["iat"] = json!(t + 60);
            c["exp"] = json!(t + 360);
        }),
        Box::new(move |c| {
            c["iat"] = json!(t - 400);
            c["exp"] = json!(t - 100);
        }),
        Box::new(|c| c["reason_for_request"] = json!("secondaryuses")),
        Box::new(|c| c["requested_scope"] = json!("patient/*.*")),
        Box::new(|c| c["sub"] = json!("someone-else")),
        Box::new(|c| c["aud"] = Value::Null),
        Box::new(|c| c["iss"] = json!("")),
        Box::new(|c| {
            c.as_object_mut().unwrap().remove("requesting_device");
        }),
        Box::new(|c| c["requesting_organization"]["identifier"] = json!([])),
        Box::new(|c| c["requesting_practitioner"]["resourceType"] = json!("Patient")),
        Box::new(|c| c["requesting_practitioner"]["name"] = json!([{"family": "Jones"}])),
    ];
    for edit in edits {
        bad(
            format!("Bearer {}", claims_token(edit)),
            ssp::SCOPE_PATIENT_READ,
        );
    }
}

// ---- booking ----

#[test]
fn booking_rules() {
    let mut st = store();
    let (a, b) = future_pair(&st, "gp");
    // Unknown slot, reason, long description, start mismatch, no booking org.
    let mut body = appointment(&st, &[&a], P1);
    body["slot"] = json!([{"reference": "Slot/nope"}]);
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "REFERENCE_NOT_FOUND")
    );
    let mut body = appointment(&st, &[&a], P1);
    body["reason"] = json!([{"text": "cough"}]);
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );
    let mut body = appointment(&st, &[&a], P1);
    body["description"] = json!("x".repeat(101));
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );
    let mut body = appointment(&st, &[&a], P1);
    body["comment"] = json!("y".repeat(501));
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );
    let mut body = appointment(&st, &[&a, &b], P1);
    body["end"] = json!(uk(st.slots[&a].end));
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );
    let mut body = appointment(&st, &[&a], P1);
    body.as_object_mut().unwrap().remove("extension");
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );
    let mut body = appointment(&st, &[&a], P1);
    body.as_object_mut().unwrap().remove("created");
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );
    let body = appointment(&st, &[&a], "pat-nobody");
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "REFERENCE_NOT_FOUND")
    );

    // Non-adjacent slots of one schedule; slots of two schedules.
    let later = st
        .slots
        .values()
        .filter(|s| s.schedule == st.slots[&a].schedule && s.start > st.slots[&b].end)
        .min_by_key(|s| s.start)
        .unwrap()
        .id
        .clone();
    let body = appointment(&st, &[&a, &later], P1);
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );
    let (n, _) = future_pair(&st, "nurse");
    let mut body = appointment(&st, &[&a], P1);
    body["slot"] = json!([{"reference": format!("Slot/{a}")}, {"reference": format!("Slot/{n}")}]);
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );

    // Adjacent slots with different delivery channels (09:45 / 10:00 GP).
    let cross = st
        .slots
        .values()
        .filter(|s| s.schedule.ends_with("gp") && s.start > Utc::now() && s.channel == "In-person")
        .find_map(|s| {
            let next = st
                .slots
                .values()
                .find(|n| n.schedule == s.schedule && n.start == s.end)?;
            (next.channel != s.channel).then(|| (s.id.clone(), next.id.clone()))
        })
        .unwrap();
    let body = appointment(&st, &[&cross.0, &cross.1], P1);
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (422, "INVALID_RESOURCE")
    );

    // Exactly 100 characters is kept as sent; two adjacent slots book together.
    let mut body = appointment(&st, &[&a, &b], P1);
    body["slot"].as_array_mut().unwrap().reverse();
    body["description"] = json!("d".repeat(100));
    let made = book(&mut st, &body).unwrap();
    assert_eq!(made["description"], json!("d".repeat(100)));
    assert_eq!(made["meta"]["versionId"], "1");
    assert_eq!(
        made["serviceType"][0]["text"],
        "General Practitioner Appointment"
    );
    assert!(made["extension"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["valueCode"].is_string()));
    assert!(!st.slots[&a].free && !st.slots[&b].free);
    assert_eq!(st.slots[&a].version, 2);
    // Booked again: 409.
    let body = appointment(&st, &[&a], P2);
    assert_eq!(
        code(&book(&mut st, &body).unwrap_err()),
        (409, "DUPLICATE_REJECTED")
    );
    assert_eq!(st.stats.appointments_booked, 1);
}

#[test]
fn concurrent_bookings_of_one_slot_give_one_success() {
    let st = store();
    let (a, _) = future_pair(&st, "nurse");
    let body = appointment(&st, &[&a], P1);
    let shared = Arc::new(Mutex::new(st));
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (shared, barrier, body) = (shared.clone(), barrier.clone(), body.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut st = shared.lock().unwrap();
                appointments::book(&mut st, &body, Utc::now(), "http://sandbox/fhir")
                    .map(|r| r.status)
                    .map_err(|e| e.status)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let created = results
        .iter()
        .filter(|r| **r == Ok(StatusCode::CREATED))
        .count();
    let conflicts = results
        .iter()
        .filter(|r| **r == Err(StatusCode::CONFLICT))
        .count();
    assert_eq!((created, conflicts), (1, 31));
    assert_eq!(shared.lock().unwrap().all("Appointment").count(), 1);
}

#[test]
fn amend_and_cancel() {
    let mut st = store();
    let (a, b) = future_pair(&st, "gp");
    let made = {
        let body = appointment(&st, &[&a, &b], P1);
        book(&mut st, &body)
    }
    .unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    let put = |st: &mut Store, body: &Value, interaction: &str, if_match: Option<&str>| {
        appointments::update(st, &id, body, interaction, if_match, Utc::now())
    };

    // Amend: description and comment only, at the current version.
    let mut amend = made.clone();
    amend["description"] = json!("Updated description");
    amend["comment"] = json!("z".repeat(500));
    let e = put(&mut st, &amend, ssp::UPDATE_APPOINTMENT, None).unwrap_err();
    assert_eq!(code(&e), (400, "BAD_REQUEST"));
    let e = put(&mut st, &amend, ssp::UPDATE_APPOINTMENT, Some("W/\"7\"")).unwrap_err();
    assert_eq!(code(&e), (409, "FHIR_CONSTRAINT_VIOLATION"));
    let mut moved = amend.clone();
    moved["start"] = json!(uk(st.slots[&b].start));
    let e = put(&mut st, &moved, ssp::UPDATE_APPOINTMENT, Some("W/\"1\"")).unwrap_err();
    assert_eq!(code(&e), (422, "INVALID_RESOURCE"));
    let mut status = amend.clone();
    status["status"] = json!("cancelled");
    let e = put(&mut st, &status, ssp::UPDATE_APPOINTMENT, Some("W/\"1\"")).unwrap_err();
    assert_eq!(code(&e), (422, "INVALID_RESOURCE"));
    let amended = put(&mut st, &amend, ssp::UPDATE_APPOINTMENT, Some("W/\"1\""))
        .unwrap()
        .body;
    assert_eq!(amended["meta"]["versionId"], "2");
    assert_eq!(amended["description"], "Updated description");

    // Cancel: status and reason only; the slots are free again.
    let mut cancel = amended.clone();
    cancel["status"] = json!("cancelled");
    let e = put(&mut st, &cancel, ssp::CANCEL_APPOINTMENT, Some("W/\"2\"")).unwrap_err();
    assert_eq!(code(&e), (422, "INVALID_RESOURCE"), "no reason");
    cancel["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({"url": CANCELLATION_REASON_URL, "valueString": "Patient is better"}));
    let mut sneaky = cancel.clone();
    sneaky["description"] = json!("changed too");
    let e = put(&mut st, &sneaky, ssp::CANCEL_APPOINTMENT, Some("W/\"2\"")).unwrap_err();
    assert_eq!(code(&e), (422, "INVALID_RESOURCE"));
    let e = put(&mut st, &cancel, ssp::CANCEL_APPOINTMENT, Some("W/\"1\"")).unwrap_err();
    assert_eq!(code(&e), (409, "FHIR_CONSTRAINT_VIOLATION"));
    let cancelled = put(&mut st, &cancel, ssp::CANCEL_APPOINTMENT, Some("W/\"2\""))
        .unwrap()
        .body;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["meta"]["versionId"], "3");
    assert!(st.slots[&a].free && st.slots[&b].free);
    assert_eq!(st.slots[&a].version, 3);
    // A cancelled appointment cannot be amended or cancelled again.
    let e = put(
        &mut st,
        &cancelled,
        ssp::UPDATE_APPOINTMENT,
        Some("W/\"3\""),
    )
    .unwrap_err();
    assert_eq!(code(&e), (422, "INVALID_RESOURCE"));
    // The freed slot books again.
    {
        let body = appointment(&st, &[&a], P2);
        book(&mut st, &body)
    }
    .unwrap();
}

#[test]
fn retrieve_appointment_parameters() {
    let mut st = store();
    let (a, _) = future_pair(&st, "gp");
    {
        let body = appointment(&st, &[&a], P1);
        book(&mut st, &body)
    }
    .unwrap();
    let today = super::time::uk_date(Utc::now());
    let day = |d: i64| (today + TimeDelta::days(d)).format("%Y-%m-%d").to_string();
    let q = |pairs: Vec<String>| -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|v| ("start".to_string(), v))
            .collect()
    };
    let run = |st: &Store, pairs| {
        appointments::for_patient(st, P1, &q(pairs), Utc::now(), "http://sandbox/fhir")
    };
    let found = run(&st, vec![format!("ge{}", day(0)), format!("le{}", day(14))]).unwrap();
    assert_eq!(found.body["total"], 1);
    for bad in [
        vec![format!("ge{}", day(0))],
        vec![format!("ge{}", day(-1)), format!("le{}", day(3))],
        vec![
            format!("ge{}T00:00:00+00:00", day(0)),
            format!("le{}", day(3)),
        ],
        vec![format!("ge{}", day(3)), format!("le{}", day(1))],
        vec![format!("gt{}", day(0)), format!("le{}", day(3))],
    ] {
        let e = run(&st, bad.clone()).unwrap_err();
        assert_eq!(code(&e), (422, "INVALID_PARAMETER"), "{bad:?}");
    }
    let e = appointments::for_patient(&st, "nobody", &[], Utc::now(), "").unwrap_err();
    assert_eq!(code(&e), (404, "PATIENT_NOT_FOUND"));
}

// ---- Task (sandbox extension) ----

fn task(patient: &str, plan: &str, key: &str) -> Value {
    json!({
        "resourceType": "Task",
        "identifier": [{"system": "https://bridge.example/Id/request", "value": key}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "103742009"}]},
        "for": {"reference": format!("Patient/{patient}")},
        "focus": {"reference": format!("MedicationRequest/{plan}")},
    })
}

#[test]
fn task_idempotency_and_focus() {
    let mut st = store();
    let now = Utc::now();
    let first = tasks::create(
        &mut st,
        &task(P1, "medreq-9000000009-1-plan", "k1"),
        now,
        "b",
    )
    .unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let again = tasks::create(
        &mut st,
        &task(P1, "medreq-9000000009-1-plan", "k1"),
        now,
        "b",
    )
    .unwrap();
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(st.all("Task").count(), 1);
    assert_eq!(st.stats.tasks_created, 1);
    let bad = |st: &mut Store, t: Value| code(&tasks::create(st, &t, now, "b").unwrap_err());
    // An issue, another patient's plan, an unknown plan: not an active plan of the patient.
    assert_eq!(
        bad(&mut st, task(P1, "medreq-9000000009-1-issue-1", "k2")),
        (422, "INVALID_RESOURCE")
    );
    assert_eq!(
        bad(&mut st, task(P1, "medreq-9000000017-1-plan", "k3")),
        (422, "INVALID_RESOURCE")
    );
    assert_eq!(
        bad(&mut st, task(P1, "nope", "k4")),
        (422, "INVALID_RESOURCE")
    );
    let mut no_key = task(P1, "medreq-9000000009-1-plan", "k5");
    no_key.as_object_mut().unwrap().remove("identifier");
    assert_eq!(bad(&mut st, no_key), (422, "INVALID_RESOURCE"));
    let found = tasks::search(
        &st,
        &[(
            "identifier".into(),
            "https://bridge.example/Id/request|k1".into(),
        )],
        "b",
    )
    .unwrap();
    assert_eq!(found.body["total"], 1);
}

// ---- structured record ----

fn params(extra: Value) -> Value {
    let mut p = vec![json!({
        "name": "patientNHSNumber",
        "valueIdentifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009"},
    })];
    p.extend(extra.as_array().cloned().unwrap_or_default());
    json!({"resourceType": "Parameters", "parameter": p})
}

#[test]
fn structured_parameter_validation() {
    let now = Utc::now();
    let err = |body: Value| code(&structured::parse(&body, now).unwrap_err());
    assert_eq!(
        err(json!({"resourceType": "Bundle"})),
        (422, "INVALID_RESOURCE")
    );
    assert_eq!(
        err(json!({"resourceType": "Parameters", "parameter": []})),
        (422, "INVALID_PARAMETER")
    );
    let mut bad_nhs = params(json!([]));
    bad_nhs["parameter"][0]["valueIdentifier"]["value"] = json!("9000000001");
    assert_eq!(err(bad_nhs), (400, "INVALID_NHS_NUMBER"));
    let mut bad_system = params(json!([]));
    bad_system["parameter"][0]["valueIdentifier"]["system"] = json!("https://example.org/id");
    assert_eq!(err(bad_system), (400, "INVALID_IDENTIFIER_SYSTEM"));
    let mut bad_type = params(json!([]));
    bad_type["parameter"][0] = json!({"name": "patientNHSNumber", "valueString": "9000000009"});
    assert_eq!(err(bad_type), (422, "INVALID_PARAMETER"));
    assert_eq!(
        err(params(json!([{"name": "includeAllergies"}]))),
        (422, "INVALID_PARAMETER")
    );
    assert_eq!(
        err(params(
            json!([{"name": "includeAllergies", "part": [{"name": "includeResolvedAllergies"}]}])
        )),
        (422, "INVALID_PARAMETER")
    );
    let tomorrow = (now + TimeDelta::days(2)).format("%Y-%m-%d").to_string();
    for date in [tomorrow.as_str(), "2017-02", "2017-02-01T10:00:00+00:00"] {
        let p = params(
            json!([{"name": "includeMedication", "part": [{"name": "medicationSearchFromDate", "valueDate": date}]}]),
        );
        assert_eq!(err(p), (422, "INVALID_PARAMETER"), "{date}");
    }
    let combo = params(json!([
        {"name": "includeConsultations"},
        {"name": "includeMedication", "part": [{"name": "medicationSearchFromDate", "valueDate": "2017-02-01"}]},
    ]));
    assert_eq!(err(combo), (422, "INVALID_PARAMETER"));
    let twice = params(json!([{"name": "includeMedication"}, {"name": "includeMedication"}]));
    assert_eq!(err(twice), (422, "INVALID_PARAMETER"));

    // Unmodelled and unknown parameters are warnings.
    let q = structured::parse(
        &params(json!([
            {"name": "includeProblems"},
            {"name": "includeInvalidMedications"},
            {"name": "includeMedication", "part": [{"name": "includeSomething", "valueBoolean": true}]},
        ])),
        now,
    )
    .unwrap();
    assert_eq!(
        q.unsupported,
        vec![
            "includeProblems",
            "includeInvalidMedications",
            "includeMedication.includeSomething"
        ]
    );
    assert!(q.medication.as_ref().unwrap().prescription_issues);
}

fn types(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn structured_bundle() {
    let st = store();
    let now = Utc::now();
    let q = structured::parse(
        &params(json!([
            {"name": "includeAllergies", "part": [{"name": "includeResolvedAllergies", "valueBoolean": true}]},
            {"name": "includeMedication"},
            {"name": "includeProblems"},
        ])),
        now,
    )
    .unwrap();
    let b = structured::build(&st, &q, "trace-1", now).unwrap().body;
    assert_eq!(b["id"], "trace-1");
    assert_eq!(b["type"], "collection");
    let t = types(&b);
    let count = |k: &str| t.iter().filter(|x| *x == k).count();
    assert_eq!(
        &t[..4],
        [
            "Patient",
            "Organization",
            "Practitioner",
            "PractitionerRole"
        ]
    );
    assert_eq!(count("List"), 3);
    assert_eq!(count("AllergyIntolerance"), 1);
    assert_eq!(count("MedicationStatement"), 3);
    assert_eq!(count("MedicationRequest"), 6);
    assert_eq!(count("Medication"), 3);
    assert_eq!(count("OperationOutcome"), 1);
    let resources: Vec<&Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let plan = resources
        .iter()
        .find(|r| r["resourceType"] == "MedicationRequest" && r["intent"] == "plan")
        .unwrap();
    assert!(plan["meta"].get("versionId").is_none());
    let repeat = &plan["extension"][0]["extension"];
    assert_eq!(repeat[0]["valuePositiveInt"], 6);
    assert_eq!(repeat[1]["valueUnsignedInt"], 1);
    let order = resources
        .iter()
        .find(|r| r["resourceType"] == "MedicationRequest" && r["intent"] == "order")
        .unwrap();
    assert!(order["basedOn"][0]["reference"]
        .as_str()
        .unwrap()
        .starts_with("MedicationRequest/"));
    assert_eq!(
        order["groupIdentifier"]["system"],
        "https://fhir.nhs.uk/Id/prescription-order-number"
    );
    let ended = resources
        .iter()
        .find(|r| r["title"] == "Ended allergies")
        .unwrap();
    assert_eq!(
        ended["emptyReason"]["coding"][0]["code"],
        "no-content-recorded"
    );

    let no_issues = structured::parse(
        &params(json!([{"name": "includeMedication", "part": [{"name": "includePrescriptionIssues", "valueBoolean": false}]}])),
        now,
    )
    .unwrap();
    let b = structured::build(&st, &no_issues, "t", now).unwrap().body;
    assert_eq!(
        types(&b)
            .iter()
            .filter(|x| *x == "MedicationRequest")
            .count(),
        3
    );

    let mut unknown = q.clone();
    unknown.nhs_number = "9476719931".into();
    let e = structured::build(&st, &unknown, "t", now).unwrap_err();
    assert_eq!(code(&e), (404, "PATIENT_NOT_FOUND"));
}

// ---- end to end ----

fn gpc(req: atest::TestRequest, interaction: &str) -> atest::TestRequest {
    let token = test_token(ssp::scope_for(interaction), Utc::now().timestamp() - 5);
    req.insert_header(("Ssp-TraceID", uuid::Uuid::new_v4().to_string()))
        .insert_header(("Ssp-From", "200000000359"))
        .insert_header(("Ssp-To", "918999198993"))
        .insert_header(("Ssp-InteractionID", interaction))
        .insert_header(("Authorization", format!("Bearer {token}")))
}

macro_rules! app {
    ($data:expr) => {
        atest::init_service(App::new().configure(|cfg| configure(cfg, $data.clone()))).await
    };
}

#[actix_web::test]
async fn e2e_search_book_and_read() {
    let data = web::Data::new(Sandbox::new(SandboxOptions::default()));
    let app = app!(data);
    let today = super::time::uk_date(Utc::now());
    let uri = format!(
        "/fhir/Slot?status=free&start=ge{}&end=le{}&_include=Slot:schedule&_include:recurse=Schedule:actor:Practitioner&_include:recurse=Schedule:actor:Location&searchFilter=https://fhir.nhs.uk/Id/ods-organization-code%7CA1001",
        today,
        today + TimeDelta::days(7)
    );
    let resp = atest::call_service(
        &app,
        gpc(atest::TestRequest::get().uri(&uri), ssp::SEARCH_SLOT).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/fhir+json;charset=utf-8"
    );
    let bundle: Value = atest::read_body_json(resp).await;
    let t = types(&bundle);
    for kind in [
        "Slot",
        "Schedule",
        "Practitioner",
        "Location",
        "Organization",
    ] {
        assert!(t.iter().any(|x| x == kind), "{kind}");
    }
    assert_eq!(t.iter().filter(|x| *x == "Organization").count(), 2);
    assert_eq!(t.iter().filter(|x| *x == "Schedule").count(), 4);

    // The wrong interaction for the URL.
    let resp = atest::call_service(
        &app,
        gpc(atest::TestRequest::get().uri(&uri), ssp::READ_PATIENT).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let oo: Value = atest::read_body_json(resp).await;
    assert_eq!(
        oo["issue"][0]["details"]["coding"][0]["code"],
        "BAD_REQUEST"
    );
    assert_eq!(
        oo["issue"][0]["details"]["coding"][0]["system"],
        "https://fhir.nhs.uk/STU3/ValueSet/Spine-ErrorOrWarningCode-1"
    );
    // No SSP headers at all.
    let resp = atest::call_service(&app, atest::TestRequest::get().uri(&uri).to_request()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Book through the route.
    let body = {
        let st = data.lock();
        let (a, _) = future_pair(&st, "gp");
        appointment(&st, &[&a], P1)
    };
    let resp = atest::call_service(
        &app,
        gpc(
            atest::TestRequest::post().uri("/fhir/Appointment"),
            ssp::CREATE_APPOINTMENT,
        )
        .set_payload(body.to_string())
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers().get("etag").unwrap(), "W/\"1\"");
    let location = resp
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        location.ends_with("/fhir/Appointment/appt-1/_history/1"),
        "{location}"
    );
    let resp = atest::call_service(
        &app,
        gpc(
            atest::TestRequest::get().uri("/fhir/Appointment/appt-1"),
            ssp::READ_APPOINTMENT,
        )
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = atest::call_service(
        &app,
        gpc(
            atest::TestRequest::get()
                .uri("/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9000000001"),
            ssp::SEARCH_PATIENT,
        )
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let oo: Value = atest::read_body_json(resp).await;
    assert_eq!(
        oo["issue"][0]["details"]["coding"][0]["code"],
        "INVALID_NHS_NUMBER"
    );
    let resp = atest::call_service(
        &app,
        gpc(
            atest::TestRequest::get()
                .uri("/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9000000017"),
            ssp::SEARCH_PATIENT,
        )
        .to_request(),
    )
    .await;
    let found: Value = atest::read_body_json(resp).await;
    assert_eq!(found["entry"][0]["resource"]["id"], P2);

    let stats = atest::call_service(
        &app,
        atest::TestRequest::get().uri("/admin/stats").to_request(),
    )
    .await;
    let stats: Value = atest::read_body_json(stats).await;
    assert_eq!(stats["requests"], 7);
    assert_eq!(stats["appointments_booked"], 1);
    assert_eq!(stats["by_interaction"][ssp::SEARCH_SLOT], 3);
}

#[actix_web::test]
async fn e2e_faults_and_reset() {
    let data = web::Data::new(Sandbox::new(SandboxOptions::default()));
    let app = app!(data);
    let metadata = || {
        gpc(
            atest::TestRequest::get().uri("/fhir/metadata"),
            ssp::METADATA,
        )
        .to_request()
    };
    let put_faults = |v: Value| {
        atest::TestRequest::put()
            .uri("/admin/faults")
            .set_payload(v.to_string())
            .to_request()
    };
    let resp = atest::call_service(&app, metadata()).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = atest::call_service(&app, put_faults(json!({"error_rate": 0.5}))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            atest::call_service(&app, metadata())
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 500, 200, 500]);

    let resp =
        atest::call_service(&app, put_faults(json!({"error_rate": 0.0, "down": true}))).await;
    let faults: Value = atest::read_body_json(resp).await;
    assert_eq!(
        faults,
        json!({"latency_ms": 0, "error_rate": 0.0, "down": true, "hostile": null})
    );
    let resp = atest::call_service(&app, metadata()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(atest::read_body(resp).await.is_empty());

    atest::call_service(
        &app,
        put_faults(json!({"down": false, "hostile": "redirect"})),
    )
    .await;
    let resp = atest::call_service(&app, metadata()).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        resp.headers().get("location").unwrap(),
        "http://evil.example/"
    );
    atest::call_service(&app, put_faults(json!({"hostile": "wrong-type"}))).await;
    let resp = atest::call_service(&app, metadata()).await;
    let body: Value = atest::read_body_json(resp).await;
    assert_eq!(body["resourceType"], "Bundle");
    atest::call_service(&app, put_faults(json!({"hostile": "invalid-json"}))).await;
    let resp = atest::call_service(&app, metadata()).await;
    assert!(serde_json::from_slice::<Value>(&atest::read_body(resp).await).is_err());
    atest::call_service(&app, put_faults(json!({"hostile": "huge"}))).await;
    let resp = atest::call_service(&app, metadata()).await;
    assert_eq!(atest::read_body(resp).await.len(), super::admin::HUGE_BYTES);

    let resp = atest::call_service(&app, put_faults(json!({"hostile": "nasty"}))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = atest::call_service(&app, put_faults(json!({"error_rate": 2}))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Reset: no faults, zeroed counters, seeded state.
    let resp = atest::call_service(
        &app,
        atest::TestRequest::post().uri("/admin/reset").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = atest::call_service(&app, metadata()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stats = atest::call_service(
        &app,
        atest::TestRequest::get().uri("/admin/stats").to_request(),
    )
    .await;
    let stats: Value = atest::read_body_json(stats).await;
    assert_eq!(stats["requests"], 1);
}

#[actix_web::test]
async fn e2e_task_and_structured_record() {
    let data = web::Data::new(Sandbox::new(SandboxOptions::default()));
    let app = app!(data);
    let post = |body: Value| {
        gpc(
            atest::TestRequest::post().uri("/fhir/Task"),
            ssp::CREATE_TASK,
        )
        .set_payload(body.to_string())
        .to_request()
    };
    let t = task(P2, "medreq-9000000017-2-plan", "retry-1");
    let first = atest::call_service(&app, post(t.clone())).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = atest::call_service(&app, post(t)).await;
    assert_eq!(second.status(), StatusCode::OK);
    let stats = atest::call_service(
        &app,
        atest::TestRequest::get().uri("/admin/stats").to_request(),
    )
    .await;
    let stats: Value = atest::read_body_json(stats).await;
    assert_eq!(
        (
            stats["task_posts"].as_u64(),
            stats["tasks_created"].as_u64()
        ),
        (Some(2), Some(1))
    );

    let trace = uuid::Uuid::new_v4().to_string();
    let resp = atest::call_service(
        &app,
        gpc(
            atest::TestRequest::post().uri("/fhir/Patient/%24gpc.getstructuredrecord"),
            ssp::GET_STRUCTURED_RECORD,
        )
        .insert_header(("Ssp-TraceID", trace.clone()))
        .set_payload(params(json!([{"name": "includeMedication"}])).to_string())
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bundle: Value = atest::read_body_json(resp).await;
    assert_eq!(bundle["id"], json!(trace));
    let resp = atest::call_service(
        &app,
        gpc(
            atest::TestRequest::post().uri("/fhir/Patient/$gpc.getstructuredrecord"),
            ssp::GET_STRUCTURED_RECORD,
        )
        .set_payload("{not json")
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = atest::call_service(
        &app,
        gpc(
            atest::TestRequest::get().uri("/fhir/Observation"),
            ssp::READ_PATIENT,
        )
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);
}

#[actix_web::test]
async fn serve_on_a_real_socket() {
    use futures_util::StreamExt as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    actix_web::rt::spawn(super::serve(listener, SandboxOptions::default()));
    let client = awc::Client::new();
    let url = format!("http://127.0.0.1:{port}/fhir/metadata");
    let get = || {
        let token = test_token(ssp::SCOPE_ORGANIZATION_READ, Utc::now().timestamp() - 5);
        client
            .get(&url)
            .insert_header(("Ssp-TraceID", uuid::Uuid::new_v4().to_string()))
            .insert_header(("Ssp-From", "200000000359"))
            .insert_header(("Ssp-To", "918999198993"))
            .insert_header(("Ssp-InteractionID", ssp::METADATA))
            .insert_header(("Authorization", format!("Bearer {token}")))
    };
    let mut resp = get().send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cs: Value = resp.json().limit(1 << 20).await.unwrap();
    assert_eq!(cs["fhirVersion"], "3.0.1");

    // drip: the headers and the first byte come at once, the rest slowly.
    let faults = format!("http://127.0.0.1:{port}/admin/faults");
    let resp = client
        .put(&faults)
        .send_json(&json!({"hostile": "drip"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = get().send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = tokio::time::timeout(std::time::Duration::from_secs(3), resp.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 1);
    let second = tokio::time::timeout(std::time::Duration::from_millis(300), resp.next()).await;
    assert!(second.is_err(), "the second byte waits a second");
}
