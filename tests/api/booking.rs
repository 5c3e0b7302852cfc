//! Booking GP appointments from free slots (issue 14, README "Booking,
//! repeat prescriptions and triage"): the practice's free-slot search, the
//! booking rules for everyone (free, adjacent, busy in the same
//! transaction, never double-booked) and for patients (window, practice
//! rules, triage), cancel and amend, and slots held by appointments. Real
//! signed tokens for two patients, a clinician and a system. Both backends.

use serde_json::{json, Value};

use crate::auth_support::*;
use crate::helpers::{nhs_number, Resp, TestApp};

pub const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const RULES: &str = "https://fhirbridge.dev/fhir/StructureDefinition/practice-booking-rules";
pub const SVC: &str = "https://fhirbridge.dev/fhir/CodeSystem/service-type";
pub const CHANNEL_EXT: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DeliveryChannel";
pub const CHANNEL_SYS: &str = "https://fhir.hl7.org.uk/CodeSystem/UKCore-DeliveryChannel";
pub const BOOKING_ORG: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-BookingOrganization";
pub const TRIAGE_Q: &str = "https://fhirbridge.dev/fhir/Questionnaire/gp-triage";

pub const ALICE: &str = "bk-alice";
pub const BOB: &str = "bk-bob";

/// An instant `minutes` from now, on a 15-minute boundary.
pub fn at(minutes: i64) -> String {
    let t = (now() / 900 + minutes / 15) * 900;
    chrono::DateTime::from_timestamp(t, 0)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn day(days: i64) -> String {
    chrono::DateTime::from_timestamp(now() + days * 86_400, 0)
        .expect("time")
        .format("%Y-%m-%d")
        .to_string()
}

fn rf(s: &str) -> Value {
    json!({"reference": s})
}

fn service(code: &str) -> Value {
    json!([{"coding": [{"system": SVC, "code": code}], "text": code}])
}

fn channel(code: &str) -> Value {
    json!([{"url": CHANNEL_EXT, "valueCodeableConcept": {"coding": [{"system": CHANNEL_SYS, "code": code}]}}])
}

/// A slot on `schedule` starting `minutes` from now, 15 minutes long.
pub fn slot(id: &str, schedule: &str, minutes: i64, svc: &str, ch: &str) -> Value {
    json!({"resourceType": "Slot", "id": id, "schedule": rf(&format!("Schedule/{schedule}")),
           "status": "free", "start": at(minutes), "end": at(minutes + 15),
           "serviceType": service(svc), "extension": channel(ch)})
}

/// Two practices (A81001 with rules, B82002 without), each with a location
/// and a clinician's schedule; slots on A: tomorrow from 10:00 (`a1`..`a4`
/// adjacent GP consultations by video, `n1` a nurse clinic, `bt1` a blood
/// test, `far` beyond the horizon), a past one (`past`), and `b1` on B.
pub async fn practice(app: &TestApp) {
    let admin = app.admin();
    let rules = json!([{"url": RULES, "extension": [
        {"url": "maxFutureAppointments", "valueUnsignedInt": 2},
        {"url": "bookingHorizonDays", "valueUnsignedInt": 7},
        {"url": "onlineServiceType", "valueCoding": {"system": SVC, "code": "gp-consultation"}},
        {"url": "onlineServiceType", "valueCoding": {"system": SVC, "code": "nurse-clinic"}},
        {"url": "triage", "extension": [
            {"url": "serviceType", "valueCoding": {"system": SVC, "code": "nurse-clinic"}},
            {"url": "questionnaire", "valueCanonical": TRIAGE_Q},
            {"url": "validDays", "valueUnsignedInt": 7}]}]}]);
    for r_ in [
        json!({"resourceType": "Organization", "id": "bk-prac-a", "name": "Practice A",
               "identifier": [{"system": ODS, "value": "A81001"}], "extension": rules}),
        json!({"resourceType": "Organization", "id": "bk-prac-b", "name": "Practice B",
               "identifier": [{"system": ODS, "value": "B82002"}]}),
        json!({"resourceType": "Location", "id": "bk-loc-a", "name": "A main",
               "managingOrganization": rf("Organization/bk-prac-a")}),
        json!({"resourceType": "Location", "id": "bk-loc-b", "name": "B main",
               "managingOrganization": rf("Organization/bk-prac-b")}),
        json!({"resourceType": "Practitioner", "id": "bk-gp", "name": [{"family": "Gee", "prefix": ["Dr"]}]}),
        json!({"resourceType": "Practitioner", "id": "bk-nurse", "name": [{"family": "Nurse"}]}),
        json!({"resourceType": "Practitioner", "id": "bk-gp-b", "name": [{"family": "Bee"}]}),
        json!({"resourceType": "Schedule", "id": "bk-s-gp",
               "actor": [rf("Practitioner/bk-gp"), rf("Location/bk-loc-a")]}),
        json!({"resourceType": "Schedule", "id": "bk-s-nurse",
               "actor": [rf("Practitioner/bk-nurse"), rf("Location/bk-loc-a")]}),
        json!({"resourceType": "Schedule", "id": "bk-s-b",
               "actor": [rf("Practitioner/bk-gp-b"), rf("Location/bk-loc-b")]}),
        json!(serde_json::from_str::<Value>(include_str!(
            "../../fixtures/triage/questionnaire-triage.json"
        ))
        .unwrap()),
    ] {
        admin.upsert(&r_).await;
    }
    let base = 24 * 60;
    for (i, id) in ["a1", "a2", "a3", "a4"].iter().enumerate() {
        admin
            .upsert(&slot(
                id,
                "bk-s-gp",
                base + 15 * i as i64,
                "gp-consultation",
                "Video",
            ))
            .await;
    }
    for s in [
        slot("a6", "bk-s-gp", base + 120, "gp-consultation", "Telephone"),
        slot("n1", "bk-s-nurse", base + 15, "nurse-clinic", "In-person"),
        slot("bt1", "bk-s-nurse", base + 60, "blood-test", "In-person"),
        slot("far", "bk-s-gp", 10 * 24 * 60, "gp-consultation", "Video"),
        slot("past", "bk-s-gp", -120, "gp-consultation", "Video"),
        slot("b1", "bk-s-b", base, "gp-consultation", "Video"),
    ] {
        admin.upsert(&s).await;
    }
    for (pid, n) in [(ALICE, 701), (BOB, 702)] {
        admin
            .upsert(&json!({"resourceType": "Patient", "id": pid,
                "identifier": [{"system": NHS_SYSTEM, "value": nhs_number(n)}],
                "name": [{"family": pid}], "generalPractitioner": [rf("Organization/bk-prac-a")]}))
            .await;
    }
}

pub fn patient_scopes() -> &'static str {
    "patient/*.cruds"
}

/// A patient's booking of `slots` (ids), with the booking organisation.
pub fn booking(patient: &str, slots: &[&str], start: &str, end: &str) -> Value {
    json!({"resourceType": "Appointment", "status": "booked",
           "extension": [{"url": BOOKING_ORG, "valueReference": rf("#org")}],
           "contained": [{"resourceType": "Organization", "id": "org", "name": "An app",
                          "identifier": [{"system": ODS, "value": "X26"}]}],
           "slot": slots.iter().map(|s| rf(&format!("Slot/{s}"))).collect::<Vec<_>>(),
           "start": start, "end": end, "description": "Cough",
           "participant": [{"actor": rf(&format!("Patient/{patient}")), "status": "accepted"},
                           {"actor": rf("Practitioner/bk-gp"), "status": "accepted"}]})
}

pub async fn slot_of(app: &TestApp, id: &str) -> Value {
    let r = app.admin().get(&format!("/fhir/Slot/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn ids(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn assert_rule(r: &Resp, status: u16, rule: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert!(
        r.text().contains(rule),
        "{what}: the outcome names '{rule}': {}",
        r.text()
    );
}

fn assert_duplicate(r: &Resp, what: &str) {
    assert_eq!(r.status, 409, "{what}: {}", r.text());
    let issue = &r.json()["issue"][0];
    assert_eq!(issue["code"], "duplicate", "{what}");
    assert_eq!(
        issue["details"]["coding"][0]["code"], "DUPLICATE_REJECTED",
        "{what}"
    );
}

fn slot_window(app: &TestApp) -> String {
    let _ = app;
    format!("status=free&start=ge{}&start=le{}", day(0), day(8))
}

async fn free_slot_search(app: TestApp) {
    practice(&app).await;
    let alice = app.bearer(&FIXTURE.patient_token(ALICE, patient_scopes()));
    let q = format!(
        "/fhir/Slot?{}&schedule.actor:Location.organization.identifier={ODS}|A81001&_include=Slot:schedule&_include:iterate=Schedule:actor",
        slot_window(&app)
    );
    let mut found = ids(&alice.get(&q).await);
    found.sort();
    let want = [
        "Location/bk-loc-a",
        "Practitioner/bk-gp",
        "Practitioner/bk-nurse",
        "Schedule/bk-s-gp",
        "Schedule/bk-s-nurse",
        "Slot/a1",
        "Slot/a2",
        "Slot/a3",
        "Slot/a4",
        "Slot/a6",
        "Slot/bt1",
        "Slot/n1",
    ];
    assert_eq!(
        found, want,
        "practice A's free future slots inside its 7-day window, with schedules and actors"
    );
    // Filters.
    let base = format!("/fhir/Slot?{}", slot_window(&app));
    let cases = [
        ("&schedule.actor:Practitioner=Practitioner/bk-nurse", vec!["Slot/bt1", "Slot/n1"]),
        ("&schedule.actor:Location=Location/bk-loc-b", vec!["Slot/b1"]),
        (&format!("&service-type={SVC}|nurse-clinic") as &str, vec!["Slot/n1"]),
        ("&delivery-channel=Telephone", vec!["Slot/a6"]),
        (&format!("&delivery-channel={CHANNEL_SYS}|Video&schedule.actor:Location.organization.identifier={ODS}|B82002") as &str, vec!["Slot/b1"]),
    ];
    for (f, want) in cases {
        let mut got = ids(&alice.get(&format!("{base}{f}")).await);
        got.sort();
        assert_eq!(got, want, "{f}");
    }
    // A busy slot is not free.
    let mut a = slot_of(&app, "a6").await;
    a["status"] = json!("busy");
    app.admin().upsert(&a).await;
    let got = ids(&alice
        .get(&format!("{base}&delivery-channel=Telephone"))
        .await);
    assert!(got.is_empty(), "{got:?}");
    // A patient's search is at most 14 days and never in the past.
    let r = alice
        .get(&format!(
            "/fhir/Slot?status=free&start=ge{}&start=le{}",
            day(0),
            day(15)
        ))
        .await;
    assert_rule(&r, 422, "14 days", "a 15-day search");
    let r = alice.get("/fhir/Slot?status=free").await;
    assert_rule(&r, 422, "start=ge", "an unbounded search");
    let past = alice
        .get(&format!(
            "/fhir/Slot?status=free&start=ge{}&start=le{}",
            day(-3),
            day(3)
        ))
        .await;
    assert!(
        !ids(&past).contains(&"Slot/past".to_owned()),
        "no past slot for a patient"
    );
    // Staff search without those limits.
    let staff = app.bearer(&FIXTURE.system_token());
    let all = ids(&staff.get("/fhir/Slot?status=free&_count=50").await);
    assert!(
        all.contains(&"Slot/past".to_owned()) && all.contains(&"Slot/far".to_owned()),
        "{all:?}"
    );
}

async fn book_and_refuse(app: TestApp) {
    practice(&app).await;
    let alice = app.bearer(&FIXTURE.patient_token(ALICE, patient_scopes()));
    let bob = app.bearer(&FIXTURE.patient_token(BOB, patient_scopes()));
    let base = 24 * 60;
    // Two adjacent slots: one booking, both busy, each one version more.
    let r = alice
        .post(
            "/fhir/Appointment",
            &booking(ALICE, &["a1", "a2"], &at(base), &at(base + 30)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for s in ["a1", "a2"] {
        let v = slot_of(&app, s).await;
        assert_eq!(v["status"], "busy", "{s}");
        assert_eq!(v["meta"]["versionId"], "2", "{s}");
    }
    // Taken → 409 DUPLICATE_REJECTED, for anyone.
    let r = bob
        .post(
            "/fhir/Appointment",
            &booking(BOB, &["a2"], &at(base + 15), &at(base + 30)),
        )
        .await;
    assert_duplicate(&r, "a taken slot");
    let staff = app.bearer(&FIXTURE.system_token());
    let r = staff
        .post(
            "/fhir/Appointment",
            &booking(BOB, &["a1"], &at(base), &at(base + 15)),
        )
        .await;
    assert_duplicate(&r, "a taken slot, by a system");
    // Refusals, each naming its rule.
    let mut no_org = booking(BOB, &["a3"], &at(base + 30), &at(base + 45));
    no_org.as_object_mut().unwrap().remove("extension");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            booking(BOB, &["past"], &at(-120), &at(-105)),
            "past",
            "a past slot",
        ),
        (
            booking(BOB, &["far"], &at(10 * 24 * 60), &at(10 * 24 * 60 + 15)),
            "bookingHorizonDays",
            "beyond the horizon",
        ),
        (
            booking(BOB, &["a3"], &at(base + 45), &at(base + 60)),
            "start and end",
            "start/end not the slot's",
        ),
        (
            booking(BOB, &["a3", "a6"], &at(base + 30), &at(base + 135)),
            "adjacent",
            "non-adjacent slots",
        ),
        (
            booking(BOB, &["a4", "n1"], &at(base + 15), &at(base + 60)),
            "same Schedule",
            "two schedules",
        ),
        (
            booking(BOB, &["bt1"], &at(base + 60), &at(base + 75)),
            "onlineServiceType",
            "not bookable online",
        ),
        (no_org, "bookingOrganization", "no booking organisation"),
        (
            json!({"resourceType": "Appointment", "status": "proposed", "participant": [{"actor": rf(&format!("Patient/{BOB}")), "status": "needs-action"}]}),
            "status booked",
            "not booked",
        ),
        (
            booking(BOB, &["nope"], &at(base), &at(base + 15)),
            "does not exist",
            "an unknown slot",
        ),
    ];
    for (body, rule, what) in cases {
        let r = bob.post("/fhir/Appointment", &body).await;
        assert_rule(&r, 422, rule, what);
    }
    // Nothing was written by the refusals.
    assert_eq!(slot_of(&app, "a3").await["meta"]["versionId"], "1");
    // Another patient as participant: access control, 403.
    let r = bob
        .post(
            "/fhir/Appointment",
            &booking(ALICE, &["a3"], &at(base + 30), &at(base + 45)),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // maxFutureAppointments (2): Alice holds one; a second is fine, a third not.
    let r = alice
        .post(
            "/fhir/Appointment",
            &booking(ALICE, &["a3"], &at(base + 30), &at(base + 45)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = alice
        .post(
            "/fhir/Appointment",
            &booking(ALICE, &["a4"], &at(base + 45), &at(base + 60)),
        )
        .await;
    assert_rule(
        &r,
        422,
        "maxFutureAppointments",
        "a third future appointment",
    );
    // Staff are not bound by the practice's rules (but by the slots').
    let r = staff
        .post(
            "/fhir/Appointment",
            &booking(ALICE, &["a4"], &at(base + 45), &at(base + 60)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // A booking in a transaction obeys the same rules and fails whole.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": rf(&format!("Patient/{BOB}"))},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": booking(BOB, &["a1"], &at(base), &at(base + 15)),
         "request": {"method": "POST", "url": "Appointment"}}]});
    let r = bob.post("/fhir", &bundle).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        bob.total(&format!("/fhir/Observation?patient={BOB}")).await,
        0
    );
    // A batch entry: that entry 409, the rest stands.
    let mut batch = bundle.clone();
    batch["type"] = json!("batch");
    let r = bob.post("/fhir", &batch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["entry"][1]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("409"));
}

async fn thirty_two_bookings_of_one_slot(app: TestApp) {
    practice(&app).await;
    let base = 24 * 60;
    let tokens: Vec<String> = (0..32)
        .map(|i| {
            if i % 2 == 0 {
                FIXTURE.system_token()
            } else {
                FIXTURE.patient_token(ALICE, patient_scopes())
            }
        })
        .collect();
    let calls = tokens.iter().map(|t| {
        let c = app.bearer(t);
        async move {
            c.post(
                "/fhir/Appointment",
                &booking(ALICE, &["a1"], &at(base), &at(base + 15)),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let dup = results
        .iter()
        .filter(|r| r.status == 409 && r.text().contains("DUPLICATE_REJECTED"))
        .count();
    let other: Vec<String> = results
        .iter()
        .filter(|r| r.status != 201 && r.status != 409)
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert_eq!(
        (created, dup),
        (1, 31),
        "one booking, 31 refusals; others: {other:?}"
    );
    let s = slot_of(&app, "a1").await;
    assert_eq!(s["status"], "busy");
    assert_eq!(s["meta"]["versionId"], "2", "the slot changed exactly once");
    let admin = app.admin();
    assert_eq!(
        admin
            .total("/fhir/Appointment?slot=Slot/a1&_total=accurate")
            .await,
        1
    );
}

async fn cancel_and_amend(app: TestApp) {
    practice(&app).await;
    let alice = app.bearer(&FIXTURE.patient_token(ALICE, patient_scopes()));
    let bob = app.bearer(&FIXTURE.patient_token(BOB, patient_scopes()));
    let staff = app.bearer(&FIXTURE.system_token());
    let base = 24 * 60;
    let r = alice
        .post(
            "/fhir/Appointment",
            &booking(ALICE, &["a1"], &at(base), &at(base + 15)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appt = r.json();
    let id = appt["id"].as_str().unwrap().to_owned();
    let path = format!("/fhir/Appointment/{id}");
    // Amend: comment yes, start or participants no.
    let mut amended = appt.clone();
    amended["comment"] = json!("I may be 5 minutes late");
    let r = alice.put(&path, &amended).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut moved = r.json();
    moved["start"] = json!(at(base + 15));
    assert_rule(
        &alice.put(&path, &moved).await,
        422,
        "start",
        "a patient moving the start",
    );
    let r = alice
        .patch(&path, &json!([{"op": "add", "path": "/participant/-", "value": {"actor": rf("Practitioner/bk-nurse"), "status": "accepted"}}]))
        .await;
    assert_rule(&r, 422, "participant", "a patient adding a participant");
    // Cancel without a reason: 422; with one (JSON Patch): 200 and the slot is free.
    let r = alice
        .patch(
            &path,
            &json!([{"op": "replace", "path": "/status", "value": "cancelled"}]),
        )
        .await;
    assert_rule(&r, 422, "cancelationReason", "cancel without a reason");
    // The other patient cannot see it.
    assert_eq!(bob.get(&path).await.status, 404);
    let r = alice
        .patch(&path, &json!([{"op": "replace", "path": "/status", "value": "cancelled"},
                              {"op": "add", "path": "/cancelationReason", "value": {"text": "Feeling better"}}]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(slot_of(&app, "a1").await["status"], "free");
    // A cancelled appointment stays cancelled; the slot is bookable again.
    let mut again = alice.get(&path).await.json();
    again["status"] = json!("booked");
    assert_rule(
        &alice.put(&path, &again).await,
        422,
        "cancelled",
        "rebooking a cancelled one",
    );
    let r = bob
        .post(
            "/fhir/Appointment",
            &booking(BOB, &["a1"], &at(base), &at(base + 15)),
        )
        .await;
    assert_eq!(r.status, 201, "the freed slot books again: {}", r.text());
    let bob_id = r.json()["id"].as_str().unwrap().to_owned();
    // A patient never deletes (cancels instead); a past appointment is fixed.
    assert_rule(
        &bob.delete(&format!("/fhir/Appointment/{bob_id}")).await,
        422,
        "cancel",
        "a patient's DELETE",
    );
    let r = staff
        .post(
            "/fhir/Appointment",
            &booking(BOB, &["past"], &at(-120), &at(-105)),
        )
        .await;
    assert_eq!(
        r.status,
        201,
        "a system records a past appointment: {}",
        r.text()
    );
    let mut past = r.json();
    past["status"] = json!("cancelled");
    past["cancelationReason"] = json!({"text": "late"});
    let r = bob
        .put(
            &format!("/fhir/Appointment/{}", past["id"].as_str().unwrap()),
            &past,
        )
        .await;
    assert_rule(&r, 422, "future", "cancelling a past appointment");
    // Staff move Bob's appointment to another free slot: old freed, new busy;
    // never onto a busy one.
    let mut m = staff
        .get(&format!("/fhir/Appointment/{bob_id}"))
        .await
        .json();
    m["slot"] = json!([rf("Slot/a3")]);
    m["start"] = json!(at(base + 30));
    m["end"] = json!(at(base + 45));
    let r = staff.put(&format!("/fhir/Appointment/{bob_id}"), &m).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(slot_of(&app, "a1").await["status"], "free");
    assert_eq!(slot_of(&app, "a3").await["status"], "busy");
    let r = staff
        .post(
            "/fhir/Appointment",
            &booking(ALICE, &["a2"], &at(base + 15), &at(base + 30)),
        )
        .await;
    assert_eq!(r.status, 201);
    let mut m = r.json();
    m["slot"] = json!([rf("Slot/a3")]);
    m["start"] = json!(at(base + 30));
    m["end"] = json!(at(base + 45));
    assert_duplicate(
        &staff
            .put(
                &format!("/fhir/Appointment/{}", m["id"].as_str().unwrap()),
                &m,
            )
            .await,
        "moving onto a busy slot",
    );
    // A held slot cannot be set free or deleted; patients never write slots.
    let mut s = slot_of(&app, "a3").await;
    s["status"] = json!("free");
    let r = staff.put("/fhir/Slot/a3", &s).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(staff.delete("/fhir/Slot/a3").await.status, 409);
    assert_eq!(bob.put("/fhir/Slot/a3", &s).await.status, 403);
    let mut fresh = slot("mine", "bk-s-gp", 3000, "gp-consultation", "Video");
    fresh.as_object_mut().unwrap().remove("id");
    assert_eq!(bob.post("/fhir/Slot", &fresh).await.status, 403);
    // My appointments, with slots and clinicians.
    let q = format!(
        "/fhir/Patient/{BOB}/Appointment?date=ge{}&_include=Appointment:slot&_include=Appointment:practitioner",
        at(0)
    );
    let mut got = ids(&bob.get(&q).await);
    got.sort();
    assert_eq!(
        got,
        vec![
            format!("Appointment/{bob_id}"),
            "Practitioner/bk-gp".into(),
            "Slot/a3".into()
        ]
    );
    let got = ids(&bob
        .get(&format!(
            "/fhir/Appointment?patient=Patient/{BOB}&status=booked&date=ge{}",
            at(0)
        ))
        .await);
    assert_eq!(got, vec![format!("Appointment/{bob_id}")]);
}

async fn create(c: &Authed<'_>, v: Value) -> String {
    let r = c.post("/fhir/QuestionnaireResponse", &v).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

/// A completed, valid triage response of `patient` authored `days_ago`.
pub fn triage_response(patient: &str, days_ago: i64) -> Value {
    let mut r: Value = serde_json::from_str(include_str!(
        "../../fixtures/triage/questionnaireresponse-example.json"
    ))
    .unwrap();
    r.as_object_mut().unwrap().remove("id");
    r["subject"] = json!({"reference": format!("Patient/{patient}")});
    r["authored"] = json!(at(-days_ago * 24 * 60));
    r
}

async fn triage_before_booking(app: TestApp) {
    practice(&app).await;
    let alice = app.bearer(&FIXTURE.patient_token(ALICE, patient_scopes()));
    let bob = app.bearer(&FIXTURE.patient_token(BOB, patient_scopes()));
    let base = 24 * 60;
    let nurse = |extra: Option<&str>| {
        let mut b = booking(ALICE, &["n1"], &at(base + 15), &at(base + 30));
        if let Some(qr) = extra {
            b["supportingInformation"] =
                json!([{"reference": format!("QuestionnaireResponse/{qr}")}]);
        }
        b
    };
    assert_rule(
        &alice.post("/fhir/Appointment", &nurse(None)).await,
        422,
        "triage",
        "no triage",
    );
    // An invalid response is refused when written.
    let mut bad = triage_response(ALICE, 0);
    bad["item"].as_array_mut().unwrap().remove(0);
    let r = alice.post("/fhir/QuestionnaireResponse", &bad).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("'reason'"), "{}", r.text());
    // Bob's response, an old one, an in-progress one: 422 each.
    let bobs = create(&bob, triage_response(BOB, 0)).await;
    let old = create(&alice, triage_response(ALICE, 10)).await;
    let mut draft = triage_response(ALICE, 0);
    draft["status"] = json!("in-progress");
    let draft = create(&alice, draft).await;
    for (qr, rule) in [
        (&bobs, "not a triage response of the booking patient"),
        (&old, "7 days"),
        (&draft, "not completed"),
    ] {
        assert_rule(
            &alice.post("/fhir/Appointment", &nurse(Some(qr))).await,
            422,
            rule,
            qr,
        );
    }
    // An absent one reads exactly like Bob's.
    let r = alice
        .post("/fhir/Appointment", &nurse(Some("no-such-response")))
        .await;
    assert_rule(
        &r,
        422,
        "not a triage response of the booking patient",
        "absent",
    );
    let good = create(&alice, triage_response(ALICE, 1)).await;
    let r = alice.post("/fhir/Appointment", &nurse(Some(&good))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(slot_of(&app, "n1").await["status"], "busy");
}

crate::backend_tests!(with required;
    free_slot_search,
    book_and_refuse,
    thirty_two_bookings_of_one_slot,
    cancel_and_amend,
    triage_before_booking,
);
