//! The leak suite (issue 12 point 3, "Tests"): two patients, A and B, each
//! with a MedicationRequest, Observations, an Appointment and a Consent,
//! plus shared Practitioners, an Organization, a Location, a Schedule, a
//! Slot and a Medication. A `patient/` token for A must never reveal
//! anything of B's, on every path: read, vread, writes, searches of every
//! type (GET and POST), totals and counts, paging links, `_include`,
//! `_revinclude`, `:iterate`, chains, `_has`, history at three levels,
//! compartment searches, batch and transaction entries, conditional
//! interactions and `If-None-Exist`, `$validate`. Where B's resource is
//! asked for by id, the answer must be exactly that for an id that never
//! existed. `user/` and `system/` tokens see both patients within their
//! scopes. Every test runs on both backends; every check can fail (the
//! system token is shown to see B's data where A must not).

use serde_json::{json, Value};

use crate::auth_support::*;
use crate::helpers::{nhs_number, Resp, TestApp};

const A: &str = "pat-alice";
const B: &str = "pat-bobby";
/// Strings that appear in B's data and nowhere in A's or the shared data.
fn b_markers() -> Vec<String> {
    vec!["bobby".into(), nhs_b(), "Bumblebee".into()]
}
fn a_markers() -> Vec<String> {
    vec!["alice".into(), nhs_a(), "Aardvark".into()]
}
fn nhs_a() -> String {
    nhs_number(101)
}
fn nhs_b() -> String {
    nhs_number(102)
}

fn token_a() -> String {
    FIXTURE.patient_token(A, "patient/*.cruds")
}
fn token_b() -> String {
    FIXTURE.patient_token(B, "patient/*.cruds")
}

fn reference(r: &str) -> Value {
    json!({"reference": r})
}

fn patient(id: &str, nhs: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
           "identifier": [{"system": NHS_SYSTEM, "value": nhs}],
           "name": [{"family": family, "given": ["Leak"]}],
           "managingOrganization": reference("Organization/org-1")})
}

fn medication_request(id: &str, subject: &str, identifiers: &[(&str, &str)]) -> Value {
    json!({"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
           "identifier": identifiers.iter().map(|(s, v)| json!({"system": s, "value": v})).collect::<Vec<_>>(),
           "medicationReference": reference("Medication/med-1"),
           "subject": reference(&format!("Patient/{subject}")),
           "requester": reference("Practitioner/prac-shared")})
    .pipe(drop_empty)
}

trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}
impl Pipe for Value {}

/// Removes empty arrays (FHIR allows none).
fn drop_empty(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.as_array().is_some_and(Vec::is_empty));
    }
    v
}

fn new_mr(subject: &str, tag: &str) -> Value {
    let mut m = medication_request("x", subject, &[("urn:leak:new", tag)]);
    m.as_object_mut().unwrap().remove("id");
    m
}

fn observation(id: &str, subject: &str, code: &str, performers: &[&str]) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "category": [{"coding": [{
               "system": "http://terminology.hl7.org/CodeSystem/observation-category",
               "code": "laboratory"}]}],
           "code": {"coding": [{"system": "urn:leak:code", "code": code}]},
           "subject": reference(&format!("Patient/{subject}")),
           "performer": performers.iter().map(|p| reference(&format!("Practitioner/{p}"))).collect::<Vec<_>>()})
    .pipe(drop_empty)
}

/// A's appointment holds the shared slot; B's, cancelled, still names it
/// (a slot is never held twice), so includes through the slot are a probe.
fn appointment(id: &str, patient: &str) -> Value {
    let status = if patient == A { "booked" } else { "cancelled" };
    json!({"resourceType": "Appointment", "id": id, "status": status,
           "cancelationReason": if patient == A { Value::Null } else { json!({"text": "patient request"}) },
           "start": "2030-01-02T09:00:00Z", "end": "2030-01-02T09:10:00Z",
           "slot": [reference("Slot/slot-1")],
           "participant": [
               {"actor": reference(&format!("Patient/{patient}")), "status": "accepted"},
               {"actor": reference("Practitioner/prac-shared"), "status": "accepted"}]})
    .pipe(|mut v| {
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
        }
        v
    })
}

fn consent(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": "active",
           "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                 "code": "patient-privacy"}]},
           "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
           "patient": reference(&format!("Patient/{patient}")),
           "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                      "code": "OPTIN"}]},
           "provision": {"type": "permit"}})
}

/// Everything A may see, by type (patient/*.cruds for A).
fn a_visible() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("Patient", vec!["Patient/pat-alice"]),
        ("MedicationRequest", vec!["MedicationRequest/mr-alice"]),
        (
            "Observation",
            vec![
                "Observation/obs-alice",
                "Observation/obs-alice-2",
                "Observation/obs-alice-3",
            ],
        ),
        ("Appointment", vec!["Appointment/appt-alice"]),
        ("Consent", vec!["Consent/consent-alice"]),
        (
            "Practitioner",
            vec!["Practitioner/prac-shared", "Practitioner/prac-solo"],
        ),
        ("Organization", vec!["Organization/org-1"]),
        ("Location", vec!["Location/loc-1"]),
        ("Schedule", vec!["Schedule/sched-1"]),
        ("Slot", vec!["Slot/slot-1"]),
        ("Medication", vec!["Medication/med-1"]),
    ]
}

/// B's resources with A's counterpart of the same type.
const PAIRS: [(&str, &str, &str); 5] = [
    ("Patient", "pat-bobby", "pat-alice"),
    ("MedicationRequest", "mr-bobby", "mr-alice"),
    ("Observation", "obs-bobby", "obs-alice"),
    ("Appointment", "appt-bobby", "appt-alice"),
    ("Consent", "consent-bobby", "consent-alice"),
];

async fn seed(app: &TestApp) {
    let admin = app.admin();
    for r in [
        json!({"resourceType": "Organization", "id": "org-1", "name": "Leak Surgery"}),
        json!({"resourceType": "Location", "id": "loc-1", "name": "Room 1",
               "managingOrganization": reference("Organization/org-1")}),
        json!({"resourceType": "Practitioner", "id": "prac-shared", "name": [{"family": "Shared"}]}),
        json!({"resourceType": "Practitioner", "id": "prac-solo", "name": [{"family": "Solo"}]}),
        json!({"resourceType": "Schedule", "id": "sched-1", "actor": [reference("Location/loc-1")]}),
        json!({"resourceType": "Slot", "id": "slot-1", "schedule": reference("Schedule/sched-1"),
               "status": "free", "start": "2030-01-02T09:00:00Z", "end": "2030-01-02T09:10:00Z"}),
        json!({"resourceType": "Medication", "id": "med-1",
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "322236009"}]}}),
        patient(A, &nhs_a(), "Aardvark"),
        patient(B, &nhs_b(), "Bumblebee"),
        medication_request("mr-alice", A, &[("urn:leak:mr", "mr-alice")]),
        medication_request(
            "mr-bobby",
            B,
            &[
                ("urn:leak:mr", "mr-bobby"),
                ("urn:leak:c", "bobby"),
                ("urn:leak:u", "bobby"),
                ("urn:leak:d", "bobby"),
                ("urn:leak:p", "bobby"),
            ],
        ),
        observation("obs-alice", A, "shared-code", &["prac-shared"]),
        observation("obs-alice-2", A, "shared-code", &["prac-shared"]),
        observation("obs-alice-3", A, "shared-code", &[]),
        observation("obs-bobby", B, "only-b", &["prac-shared", "prac-solo"]),
        observation("obs-bobby-gone", B, "only-b", &["prac-solo"]),
        appointment("appt-alice", A),
        appointment("appt-bobby", B),
        consent("consent-alice", A),
        consent("consent-bobby", B),
    ] {
        admin.upsert(&r).await;
    }
    // B's data has history: a second version and a deletion.
    let mut v2 = medication_request(
        "mr-bobby",
        B,
        &[
            ("urn:leak:mr", "mr-bobby"),
            ("urn:leak:c", "bobby"),
            ("urn:leak:u", "bobby"),
            ("urn:leak:d", "bobby"),
            ("urn:leak:p", "bobby"),
        ],
    );
    v2["status"] = json!("on-hold");
    admin.upsert(&v2).await;
    let r = admin.delete("/fhir/Observation/obs-bobby-gone").await;
    assert!((200..300).contains(&r.status), "{}", r.text());
}

/// The response's text without its Bundle links (which echo the query).
fn unlinked(r: &Resp) -> String {
    let mut v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    strip_links(&mut v);
    v.to_string()
}

fn strip_links(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("link");
            o.values_mut().for_each(strip_links);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_links),
        _ => {}
    }
}

fn assert_clean(text: &str, markers: &[String], what: &str) {
    for m in markers {
        assert!(!text.contains(m.as_str()), "{what}: reveals '{m}': {text}");
    }
}

/// Asserts that asking for `hidden` answered exactly as asking for
/// `absent` (same status, same body once the ids are swapped).
fn assert_same_as_absent(
    hidden: &Resp,
    absent: &Resp,
    hidden_id: &str,
    absent_id: &str,
    what: &str,
) {
    assert_eq!(
        hidden.status,
        absent.status,
        "{what}: {} vs absent {}",
        hidden.text(),
        absent.text()
    );
    let norm = |r: &Resp, id: &str| -> String {
        let mut v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("id");
            o.remove("meta");
        }
        strip_links(&mut v);
        v.to_string().replace(id, "ID")
    };
    assert_eq!(norm(hidden, hidden_id), norm(absent, absent_id), "{what}");
    assert_eq!(
        hidden.header("Content-Type"),
        absent.header("Content-Type"),
        "{what}"
    );
}

fn ids(r: &Resp, what: &str) -> Vec<String> {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    entry_ids(&r.json())
}

fn strs(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The version of a resource as the system sees it (None: absent/deleted).
async fn version(app: &TestApp, path: &str) -> Option<String> {
    let r = app.admin().get(path).await;
    (r.status == 200).then(|| r.json()["meta"]["versionId"].as_str().unwrap().to_owned())
}

/// `path` relative to the server base from an absolute link.
fn local(app: &TestApp, url: &str) -> String {
    url.strip_prefix(&app.base)
        .unwrap_or_else(|| panic!("link {url} is not under {}", app.base))
        .to_owned()
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

// ------------------------------------------------------------ tests

async fn reads_of_the_other_patient_answer_as_absent(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let b = app.bearer(&token_b());
    for (n, (ty, hidden, own)) in PAIRS.iter().enumerate() {
        assert_eq!(
            a.get(&format!("/fhir/{ty}/{own}")).await.status,
            200,
            "A reads its {ty}"
        );
        assert_eq!(
            b.get(&format!("/fhir/{ty}/{hidden}")).await.status,
            200,
            "B reads its {ty}"
        );
        let absent = format!("never-{n}");
        for suffix in ["", "/_history/1", "/_history", "/$validate"] {
            let h = a.get(&format!("/fhir/{ty}/{hidden}{suffix}")).await;
            let x = a.get(&format!("/fhir/{ty}/{absent}{suffix}")).await;
            let what = format!("A: GET {ty}/{hidden}{suffix}");
            assert_eq!(h.status, 404, "{what}: {}", h.text());
            assert_same_as_absent(&h, &x, hidden, &absent, &what);
        }
    }
    // A deleted resource of B's: 404 like an absent one (the system sees 410).
    assert_eq!(
        app.admin()
            .get("/fhir/Observation/obs-bobby-gone")
            .await
            .status,
        410
    );
    for suffix in ["", "/_history/1", "/_history/2", "/_history"] {
        let h = a
            .get(&format!("/fhir/Observation/obs-bobby-gone{suffix}"))
            .await;
        let x = a
            .get(&format!("/fhir/Observation/never-gone{suffix}"))
            .await;
        assert_same_as_absent(
            &h,
            &x,
            "obs-bobby-gone",
            "never-gone",
            &format!("deleted{suffix}"),
        );
    }
    // B's second version too.
    let h = a.get("/fhir/MedicationRequest/mr-bobby/_history/2").await;
    let x = a.get("/fhir/MedicationRequest/never/_history/2").await;
    assert_same_as_absent(&h, &x, "mr-bobby", "never", "vread of B's v2");
}

async fn writes_cannot_reach_into_the_other_compartment(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let admin = app.admin();
    let q = "/fhir/MedicationRequest?subject=Patient/pat-bobby";
    let b_mrs = || admin.total(q);
    assert_eq!(b_mrs().await, 1);
    // Create into B's compartment.
    assert_refused(
        &a.post("/fhir/MedicationRequest", &new_mr(B, "w1")).await,
        "A creating a MedicationRequest for B",
    );
    assert_refused(
        &a.post("/fhir/Observation", &{
            let mut o = observation("x", B, "c", &[]);
            o.as_object_mut().unwrap().remove("id");
            o
        })
        .await,
        "A creating an Observation for B",
    );
    assert_eq!(b_mrs().await, 1, "nothing was created for B");
    let r = a.post("/fhir/MedicationRequest", &new_mr(A, "w2")).await;
    assert_eq!(r.status, 201, "A creating its own: {}", r.text());
    // Moving A's resource into B's compartment.
    let before = version(&app, "/fhir/MedicationRequest/mr-alice").await;
    let moved = medication_request("mr-alice", B, &[("urn:leak:mr", "mr-alice")]);
    assert_refused(
        &a.put("/fhir/MedicationRequest/mr-alice", &moved).await,
        "moving mr-alice to B",
    );
    let r = a
        .patch(
            "/fhir/MedicationRequest/mr-alice",
            &json!([{"op": "replace", "path": "/subject/reference", "value": "Patient/pat-bobby"}]),
        )
        .await;
    assert_refused(&r, "patching mr-alice to B");
    assert_eq!(
        version(&app, "/fhir/MedicationRequest/mr-alice").await,
        before
    );
    let now = admin.get("/fhir/MedicationRequest/mr-alice").await.json();
    assert_eq!(now["subject"]["reference"], "Patient/pat-alice");
    // Writes by id to B's resources answer as to ids that do not exist.
    for (n, (ty, hidden, _)) in PAIRS.iter().enumerate() {
        let absent = format!("never-w{n}");
        let path = |id: &str| format!("/fhir/{ty}/{id}");
        let before = version(&app, &path(hidden)).await;
        assert!(before.is_some());
        let body_for = |id: &str| {
            let mut v = admin_body(ty, id);
            v["id"] = json!(id);
            v
        };
        let h = a.put(&path(hidden), &body_for(hidden)).await;
        let x = a.put(&path(&absent), &body_for(&absent)).await;
        assert_eq!(h.status, 403, "A: PUT {ty}/{hidden}: {}", h.text());
        assert_same_as_absent(&h, &x, hidden, &absent, &format!("PUT {ty}/{hidden}"));
        let ops = json!([{"op": "add", "path": "/language", "value": "en"}]);
        let h = a.patch(&path(hidden), &ops).await;
        let x = a.patch(&path(&absent), &ops).await;
        assert!(h.status >= 400, "A: PATCH {ty}/{hidden}: {}", h.text());
        assert_same_as_absent(&h, &x, hidden, &absent, &format!("PATCH {ty}/{hidden}"));
        let h = a.delete(&path(hidden)).await;
        let x = a.delete(&path(&absent)).await;
        assert_same_as_absent(&h, &x, hidden, &absent, &format!("DELETE {ty}/{hidden}"));
        assert_eq!(
            version(&app, &path(hidden)).await,
            before,
            "{ty}/{hidden} changed"
        );
        assert_eq!(
            version(&app, &path(&absent)).await,
            None,
            "{ty}/{absent} was created"
        );
    }
    // A can still write its own.
    let own = medication_request("mr-alice", A, &[("urn:leak:mr", "mr-alice")]);
    let r = a.put("/fhir/MedicationRequest/mr-alice", &own).await;
    assert_eq!(r.status, 200, "A updating its own: {}", r.text());
}

/// A body of `ty` that A would be allowed to write if it could see `id`.
fn admin_body(ty: &str, id: &str) -> Value {
    match ty {
        "Patient" => patient(id, &nhs_a(), "Aardvark"),
        "MedicationRequest" => medication_request(id, A, &[]),
        "Observation" => observation(id, A, "w", &[]),
        "Appointment" => appointment(id, A),
        "Consent" => consent(id, A),
        other => panic!("{other}"),
    }
}

async fn searches_see_only_the_compartment(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let admin = app.admin();
    let markers = b_markers();
    for (ty, expected) in a_visible() {
        let what = format!("A: {ty} search");
        let r = a.get(&format!("/fhir/{ty}")).await;
        assert_eq!(ids(&r, &what), strs(&expected), "{what}");
        assert_eq!(r.json()["total"], expected.len(), "{what}: total");
        assert_clean(&r.text(), &markers, &what);
        assert_eq!(
            a.total(&format!("/fhir/{ty}?_summary=count")).await,
            expected.len() as i64,
            "{what}: _summary=count"
        );
        assert_eq!(
            a.total(&format!("/fhir/{ty}?_total=accurate&_count=1"))
                .await,
            expected.len() as i64,
            "{what}: _total=accurate"
        );
        let r = a.post_search(&format!("/fhir/{ty}/_search"), "").await;
        assert_eq!(ids(&r, &what), strs(&expected), "{what} (POST)");
        assert_clean(&r.text(), &markers, &format!("{what} (POST)"));
    }
    // The system sees B's too (so the checks above can fail).
    assert_eq!(admin.total("/fhir/Observation").await, 4);
    assert_eq!(admin.total("/fhir/Patient").await, 2);
    // Criteria naming B's data find nothing.
    let nhs = format!("{NHS_SYSTEM}|{}", nhs_b());
    for q in [
        "Observation?subject=Patient/pat-bobby".to_owned(),
        "Observation?patient=pat-bobby".into(),
        "Observation?_id=obs-bobby".into(),
        "Observation?_id=obs-bobby,obs-bobby-gone".into(),
        "Observation?code=urn:leak:code|only-b".into(),
        format!("Observation?subject.identifier={nhs}"),
        "Observation?subject:Patient.family=Bumblebee".into(),
        "Observation?subject:Patient.name=Bumblebee".into(),
        format!("Observation?patient.identifier={nhs}"),
        "Observation?performer=Practitioner/prac-solo".into(),
        format!("Patient?identifier={nhs}"),
        "Patient?family=Bumblebee".into(),
        "Patient?_id=pat-bobby".into(),
        "MedicationRequest?identifier=urn:leak:mr|mr-bobby".into(),
        "MedicationRequest?status=on-hold".into(),
        format!("MedicationRequest?subject.identifier={nhs}"),
        "Appointment?actor=Patient/pat-bobby".into(),
        "Appointment?patient=pat-bobby".into(),
        "Consent?patient=pat-bobby".into(),
        format!("Consent?patient.identifier={nhs}"),
    ] {
        let sys = admin.total(&format!("/fhir/{q}")).await;
        assert!(sys >= 1, "the system finds {q} ({sys})");
        let r = a.get(&format!("/fhir/{q}")).await;
        if q.contains("patient=pat-bobby") {
            // Naming another patient is refused outright (A holds no proxy
            // Consent for B), the same answer whether B exists or not.
            assert_eq!(r.status, 403, "A: {q}: {}", r.text());
            let ghost = q.replace("pat-bobby", "pat-nobody");
            assert_eq!(
                a.get(&format!("/fhir/{ghost}")).await.status,
                403,
                "A: {ghost}"
            );
            let (ty, params) = q.split_once('?').unwrap();
            let r = a.post_search(&format!("/fhir/{ty}/_search"), params).await;
            assert_eq!(r.status, 403, "A: POST {q}: {}", r.text());
            assert_clean(&r.text(), &markers, &format!("A: POST {q}"));
            continue;
        }
        assert_eq!(r.status, 200, "A: {q}: {}", r.text());
        assert_eq!(r.json()["total"], 0, "A: {q}");
        assert_clean(&unlinked(&r), &markers, &format!("A: {q}"));
        assert_eq!(
            a.total(&format!("/fhir/{q}&_summary=count")).await,
            0,
            "A: {q} count"
        );
        let (ty, params) = q.split_once('?').unwrap();
        let r = a.post_search(&format!("/fhir/{ty}/_search"), params).await;
        assert_eq!(r.status, 200, "A: POST {q}: {}", r.text());
        assert_eq!(r.json()["total"], 0, "A: POST {q}");
        assert_clean(&r.text(), &markers, &format!("A: POST {q}"));
    }
    // The same criteria on A's data work (the chains are evaluated).
    let nhs_a = format!("{NHS_SYSTEM}|{}", nhs_a());
    assert_eq!(
        a.total(&format!("/fhir/Observation?subject.identifier={nhs_a}"))
            .await,
        3
    );
    assert_eq!(
        a.total("/fhir/Observation?subject:Patient.family=Aardvark")
            .await,
        3
    );
    assert_eq!(
        a.total("/fhir/Observation?performer=Practitioner/prac-shared")
            .await,
        2
    );
    // _has: B's data must not qualify anything.
    for (q, sys_expected) in [
        (
            "Practitioner?_has:Observation:performer:subject=Patient/pat-bobby",
            2,
        ),
        (
            "Practitioner?_has:Observation:performer:code=urn:leak:code|only-b",
            2,
        ),
        (
            "Practitioner?_has:MedicationRequest:requester:subject=Patient/pat-bobby",
            1,
        ),
        (
            "Practitioner?_has:Appointment:practitioner:patient=pat-bobby",
            1,
        ),
        ("Slot?_has:Appointment:slot:patient=pat-bobby", 1),
        (
            "Medication?_has:MedicationRequest:medication:status=on-hold",
            1,
        ),
        (
            "Patient?_has:Observation:subject:performer=Practitioner/prac-solo",
            1,
        ),
        ("Organization?_has:Patient:organization:family=Bumblebee", 1),
    ] {
        assert_eq!(
            admin.total(&format!("/fhir/{q}")).await,
            sys_expected,
            "system: {q}"
        );
        let r = a.get(&format!("/fhir/{q}")).await;
        assert_eq!(r.status, 200, "A: {q}: {}", r.text());
        assert_eq!(
            r.json()["total"],
            0,
            "A: {q} reveals B's data: {}",
            unlinked(&r)
        );
        assert_eq!(
            a.total(&format!("/fhir/{q}&_summary=count")).await,
            0,
            "A: {q} count"
        );
    }
    let r = a
        .get("/fhir/Practitioner?_has:Observation:performer:subject=Patient/pat-alice")
        .await;
    assert_eq!(ids(&r, "A: _has on A"), strs(&["Practitioner/prac-shared"]));
    let r = a
        .get("/fhir/Organization?_has:Patient:organization:family=Aardvark")
        .await;
    assert_eq!(
        ids(&r, "A: _has Patient on A"),
        strs(&["Organization/org-1"])
    );
}

async fn includes_and_revincludes_stay_inside(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let admin = app.admin();
    let markers = b_markers();
    // (query, what A sees); B's data adds to what the system sees on each
    // but the second.
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "Observation?_include=Observation:subject",
            vec!["Observation/obs-alice", "Observation/obs-alice-2", "Observation/obs-alice-3", "Patient/pat-alice"],
        ),
        (
            "Observation?_id=obs-alice&_include=Observation:performer",
            vec!["Observation/obs-alice", "Practitioner/prac-shared"],
        ),
        (
            "MedicationRequest?_include=MedicationRequest:subject&_include=MedicationRequest:medication",
            vec!["MedicationRequest/mr-alice", "Patient/pat-alice", "Medication/med-1"],
        ),
        (
            "Patient?_revinclude=Observation:subject",
            vec!["Patient/pat-alice", "Observation/obs-alice", "Observation/obs-alice-2", "Observation/obs-alice-3"],
        ),
        (
            "Practitioner?_revinclude=Observation:performer",
            vec!["Practitioner/prac-shared", "Practitioner/prac-solo", "Observation/obs-alice", "Observation/obs-alice-2"],
        ),
        (
            "Practitioner?_id=prac-shared&_revinclude=MedicationRequest:requester&_revinclude=Appointment:practitioner",
            vec!["Practitioner/prac-shared", "MedicationRequest/mr-alice", "Appointment/appt-alice"],
        ),
        ("Slot?_revinclude=Appointment:slot", vec!["Slot/slot-1", "Appointment/appt-alice"]),
        (
            "Medication?_revinclude=MedicationRequest:medication",
            vec!["Medication/med-1", "MedicationRequest/mr-alice"],
        ),
        (
            "Organization?_revinclude=Patient:organization",
            vec!["Organization/org-1", "Patient/pat-alice"],
        ),
        (
            "Observation?_id=obs-alice&_include=Observation:performer&_revinclude:iterate=Observation:performer",
            vec!["Observation/obs-alice", "Observation/obs-alice-2", "Practitioner/prac-shared"],
        ),
        (
            "Slot?_revinclude=Appointment:slot&_include:iterate=Appointment:actor",
            vec!["Slot/slot-1", "Appointment/appt-alice", "Patient/pat-alice", "Practitioner/prac-shared"],
        ),
        (
            "Practitioner?_id=prac-solo&_revinclude=Observation:performer&_include:iterate=Observation:subject",
            vec!["Practitioner/prac-solo"],
        ),
        (
            "Patient?_revinclude=Appointment:patient&_include:iterate=Appointment:slot&_revinclude:iterate=Appointment:slot",
            vec!["Patient/pat-alice", "Appointment/appt-alice", "Slot/slot-1"],
        ),
    ];
    for (q, expected) in cases {
        let r = a.get(&format!("/fhir/{q}")).await;
        assert_eq!(ids(&r, q), strs(&expected), "A: {q}");
        assert_clean(&r.text(), &markers, &format!("A: {q}"));
        if q == "Observation?_id=obs-alice&_include=Observation:performer" {
            continue;
        }
        // The system sees more on the same query (the restriction did it).
        let sys = admin.get(&format!("/fhir/{q}")).await;
        assert!(
            entry_ids(&sys.json()).len() > expected.len(),
            "system: {q} should include B's data: {:?}",
            entry_ids(&sys.json())
        );
    }
    // POST _search with the same parameters.
    let r = a
        .post_search(
            "/fhir/Practitioner/_search",
            "_revinclude=Observation:performer",
        )
        .await;
    assert_clean(&r.text(), &markers, "A: POST _revinclude");
    assert_eq!(entry_ids(&r.json()).len(), 4);
}

async fn paging_links_carry_no_access(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let b = app.bearer(&token_b());
    let a_obs = strs(&[
        "Observation/obs-alice",
        "Observation/obs-alice-2",
        "Observation/obs-alice-3",
    ]);
    for post in [false, true] {
        let what = if post { "POST _search" } else { "GET" };
        let first = if post {
            a.post_search("/fhir/Observation/_search", "_count=1").await
        } else {
            a.get("/fhir/Observation?_count=1").await
        };
        assert_eq!(first.status, 200, "{what}: {}", first.text());
        let first = first.json();
        assert_eq!(first["total"], 3, "{what}");
        let mut seen = entry_ids(&first);
        let mut link = next_link(&first);
        let mut links = Vec::new();
        while let Some(url) = link {
            let path = local(&app, &url);
            links.push(path.clone());
            let page = a.get(&path).await;
            assert_eq!(page.status, 200, "{what} {path}: {}", page.text());
            assert_clean(&page.text(), &b_markers(), &format!("A following {path}"));
            let page = page.json();
            assert_eq!(page["total"], 3, "{what} {path}");
            seen.extend(entry_ids(&page));
            link = next_link(&page);
            assert!(seen.len() <= 3, "{what}: more pages than results: {seen:?}");
        }
        seen.sort();
        assert_eq!(seen, a_obs, "{what}: A's pages");
        assert!(!links.is_empty(), "{what}: no next link");
        // B (and nobody) following A's links sees none of A's data.
        for path in &links {
            let r = b.get(path).await;
            assert!(r.status < 500, "B following {path}: {}", r.text());
            assert_clean(
                &unlinked(&r),
                &a_markers(),
                &format!("B following A's {path}"),
            );
            if r.status == 200 {
                let got = entry_ids(&r.json());
                assert!(
                    got.iter().all(|id| id == "Observation/obs-bobby"),
                    "B following {path}: {got:?}"
                );
                assert!(
                    r.json()["total"].as_i64().unwrap_or(0) <= 1,
                    "B following {path}: {}",
                    r.text()
                );
            }
            assert_no_token(&app.get(path).await, &format!("anonymous following {path}"));
        }
    }
    // And A following B's links sees nothing of B's.
    let r = b
        .get("/fhir/Observation?_count=1&_include=Observation:performer")
        .await
        .json();
    assert_eq!(r["total"], 1);
    let r = b.get("/fhir/Practitioner?_count=1").await.json();
    if let Some(url) = next_link(&r) {
        let r = a.get(&local(&app, &url)).await;
        assert_clean(&unlinked(&r), &b_markers(), "A following B's link");
    }
    let r = b
        .post_search(
            "/fhir/MedicationRequest/_search",
            "_count=1&_include=MedicationRequest:subject",
        )
        .await;
    let r = r.json();
    assert_eq!(
        entry_ids(&r),
        strs(&["MedicationRequest/mr-bobby", "Patient/pat-bobby"])
    );
    for l in r["link"].as_array().into_iter().flatten() {
        let path = local(&app, l["url"].as_str().unwrap());
        let got = a.get(&path).await;
        assert_clean(
            &unlinked(&got),
            &b_markers(),
            &format!("A following B's {path}"),
        );
    }
}

async fn history_is_confined_at_every_level(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let admin = app.admin();
    let markers = b_markers();
    // Type history.
    let r = a.get("/fhir/Observation/_history?_count=100").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_clean(&r.text(), &markers, "A: Observation/_history");
    let h = r.json();
    assert_eq!(h["total"], 3, "{h}");
    assert_eq!(h["entry"].as_array().map_or(0, Vec::len), 3);
    assert!(
        admin
            .get("/fhir/Observation/_history?_count=100")
            .await
            .json()["total"]
            .as_i64()
            > Some(3)
    );
    let r = a.get("/fhir/MedicationRequest/_history").await;
    assert_clean(&r.text(), &markers, "A: MedicationRequest/_history");
    assert_eq!(r.json()["total"], 1);
    let r = a.get("/fhir/Patient/_history?_summary=count").await;
    if r.status == 200 {
        assert_eq!(r.json()["total"], 1, "A: Patient/_history count");
    }
    // System history: everything but B's versions.
    let sys = admin.get("/fhir/_history?_count=500").await.json();
    let sys_total = sys["total"].as_i64().unwrap();
    let entries = sys["entry"].as_array().unwrap();
    assert_eq!(entries.len() as i64, sys_total);
    let b_versions = entries
        .iter()
        .filter(|e| {
            b_markers()
                .iter()
                .any(|m| e.to_string().contains(m.as_str()))
        })
        .count() as i64;
    // pat-bobby, mr-bobby ×2, obs-bobby, obs-bobby-gone ×2 (created, deleted), appt-bobby, consent-bobby.
    assert_eq!(b_versions, 8, "B's versions in the system history");
    let r = a.get("/fhir/_history?_count=500").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_clean(&r.text(), &markers, "A: _history");
    let h = r.json();
    assert_eq!(
        h["total"].as_i64(),
        Some(sys_total - b_versions),
        "A: _history total"
    );
    assert_eq!(
        h["entry"].as_array().map_or(0, Vec::len) as i64,
        sys_total - b_versions
    );
    // Paged system history.
    let r = a.get("/fhir/_history?_count=2").await.json();
    let mut link = next_link(&r);
    while let Some(url) = link {
        let page = a.get(&local(&app, &url)).await;
        assert_clean(&page.text(), &markers, "A: _history page");
        link = next_link(&page.json());
    }
}

async fn compartment_search_of_the_other_patient(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let admin = app.admin();
    for (target, own) in [
        ("Observation", 3),
        ("MedicationRequest", 1),
        ("Appointment", 1),
        ("Consent", 1),
    ] {
        assert_eq!(
            a.total(&format!("/fhir/Patient/pat-alice/{target}")).await,
            own,
            "A: own {target}"
        );
        assert!(
            admin
                .total(&format!("/fhir/Patient/pat-bobby/{target}"))
                .await
                >= 1
        );
        let h = a.get(&format!("/fhir/Patient/pat-bobby/{target}")).await;
        let x = a.get(&format!("/fhir/Patient/never-c/{target}")).await;
        assert_same_as_absent(
            &h,
            &x,
            "pat-bobby",
            "never-c",
            &format!("Patient/B/{target}"),
        );
        assert_clean(&unlinked(&h), &b_markers(), &format!("Patient/B/{target}"));
        if h.status == 200 {
            assert_eq!(h.json()["total"], 0);
        }
        let h = a
            .get(&format!("/fhir/Patient/pat-bobby/{target}?_summary=count"))
            .await;
        if h.status == 200 {
            assert_eq!(h.json()["total"], 0, "Patient/B/{target} count");
        }
    }
}

async fn bundles_authorise_each_entry(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let admin = app.admin();
    let before = version(&app, "/fhir/MedicationRequest/mr-bobby").await;
    let q = "/fhir/MedicationRequest?subject=Patient/pat-bobby";
    let b_mrs = || admin.total(q);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "MedicationRequest/mr-bobby"}},
        {"request": {"method": "GET", "url": "MedicationRequest/never-b"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/pat-bobby"}},
        {"request": {"method": "GET", "url": "Observation"}},
        {"request": {"method": "POST", "url": "MedicationRequest"}, "resource": new_mr(B, "b1")},
        {"request": {"method": "PUT", "url": "MedicationRequest/mr-bobby"},
         "resource": medication_request("mr-bobby", A, &[])},
        {"request": {"method": "PUT", "url": "MedicationRequest/never-b2"},
         "resource": medication_request("never-b2", A, &[])},
        {"request": {"method": "DELETE", "url": "MedicationRequest/mr-bobby"}},
        {"request": {"method": "DELETE", "url": "MedicationRequest/never-b3"}},
        {"request": {"method": "GET", "url": "Patient/pat-alice"}},
        {"request": {"method": "GET", "url": "Patient/pat-bobby/_history"}},
        {"request": {"method": "GET", "url": "Patient/never-b4/_history"}},
    ]});
    let r = a.post("/fhir", &batch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    let e = |i: usize| out["entry"][i].clone();
    let status = |i: usize| e(i)["response"]["status"].as_str().unwrap_or("").to_owned();
    let same = |i: usize, j: usize, hid: &str, abs: &str| {
        let mut x = e(i);
        let mut y = e(j);
        strip_links(&mut x);
        strip_links(&mut y);
        let norm = |v: &Value, id: &str, n: usize| {
            v.to_string()
                .replace(id, "ID")
                .replace(&format!("entry[{n}]"), "entry[N]")
        };
        assert_eq!(
            norm(&x, hid, i),
            norm(&y, abs, j),
            "batch entries {i} and {j}"
        );
    };
    assert!(status(0).starts_with("404"), "{}", e(0));
    same(0, 1, "mr-bobby", "never-b");
    assert_eq!(e(2)["resource"]["total"], 0, "{}", e(2));
    assert_eq!(e(3)["resource"]["total"], 3, "{}", e(3));
    assert!(status(4).starts_with("403"), "{}", e(4));
    assert!(status(5).starts_with("403"), "{}", e(5));
    same(5, 6, "mr-bobby", "never-b2");
    same(7, 8, "mr-bobby", "never-b3");
    assert!(status(9).starts_with("200"), "{}", e(9));
    same(10, 11, "pat-bobby", "never-b4");
    for i in [2, 3, 9] {
        assert_clean(
            &e(i)["resource"].to_string(),
            &b_markers(),
            &format!("batch entry {i}"),
        );
    }
    assert_eq!(
        version(&app, "/fhir/MedicationRequest/mr-bobby").await,
        before
    );
    assert_eq!(b_mrs().await, 1);
    assert_eq!(
        version(&app, "/fhir/MedicationRequest/never-b2").await,
        None
    );
    // A transaction with one forbidden entry fails whole.
    for forbidden in [
        json!({"request": {"method": "POST", "url": "MedicationRequest"}, "resource": new_mr(B, "t1")}),
        json!({"request": {"method": "PUT", "url": "MedicationRequest/mr-bobby"},
               "resource": medication_request("mr-bobby", A, &[])}),
        json!({"request": {"method": "PUT", "url": "MedicationRequest/mr-alice"},
               "resource": medication_request("mr-alice", B, &[])}),
    ] {
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "MedicationRequest"}, "resource": new_mr(A, "tx-ok")},
            forbidden,
        ]});
        let r = a.post("/fhir", &tx).await;
        assert_refused(&r, "transaction with a forbidden entry");
        assert_eq!(
            admin
                .total("/fhir/MedicationRequest?identifier=urn:leak:new|tx-ok")
                .await,
            0,
            "a refused transaction wrote its first entry"
        );
    }
    assert_eq!(
        version(&app, "/fhir/MedicationRequest/mr-bobby").await,
        before
    );
    assert_eq!(b_mrs().await, 1);
    // A transaction reading B's resource fails as for an absent one.
    let read = |id: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": format!("MedicationRequest/{id}")}}]})
    };
    let h = a.post("/fhir", &read("mr-bobby")).await;
    let x = a.post("/fhir", &read("never-t")).await;
    assert_same_as_absent(&h, &x, "mr-bobby", "never-t", "transaction GET of B's");
    // A transaction of A's own writes goes through.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "MedicationRequest"}, "resource": new_mr(A, "tx-fine")}]});
    let r = a.post("/fhir", &tx).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        admin
            .total("/fhir/MedicationRequest?identifier=urn:leak:new|tx-fine")
            .await,
        1
    );
}

async fn conditional_interactions_are_no_oracle(app: TestApp) {
    seed(&app).await;
    let a = app.bearer(&token_a());
    let before = version(&app, "/fhir/MedicationRequest/mr-bobby").await;
    let cond_create = |crit: String, tag: &'static str| {
        let a = &a;
        async move {
            a.send_json(
                "POST",
                "/fhir/MedicationRequest",
                &new_mr(A, tag),
                &[("If-None-Exist", &crit)],
            )
            .await
        }
    };
    // If-None-Exist on B's identifier: as if it did not exist.
    let h = cond_create("identifier=urn:leak:c|bobby".into(), "c1").await;
    let x = cond_create("identifier=urn:leak:c|never".into(), "c2").await;
    assert_eq!(h.status, 201, "If-None-Exist on B's: {}", h.text());
    assert_eq!(h.status, x.status);
    let h = cond_create("_id=mr-bobby".into(), "c3").await;
    assert_eq!(h.status, 201, "If-None-Exist _id=B's: {}", h.text());
    let h = cond_create(format!("subject.identifier={NHS_SYSTEM}|{}", nhs_b()), "c4").await;
    assert_eq!(
        h.status,
        201,
        "If-None-Exist on B's NHS number: {}",
        h.text()
    );
    // ... and on B's Patient record.
    let cond_patient = |nhs: String| {
        let a = &a;
        async move {
            let mut p = patient("x", &nhs, "Aardvark");
            p.as_object_mut().unwrap().remove("id");
            a.send_json(
                "POST",
                "/fhir/Patient",
                &p,
                &[("If-None-Exist", &format!("identifier={NHS_SYSTEM}|{nhs}"))],
            )
            .await
        }
    };
    let unused = nhs_number(199);
    let h = cond_patient(nhs_b()).await;
    let x = cond_patient(unused.clone()).await;
    assert_eq!(
        h.status,
        x.status,
        "If-None-Exist Patient: {} vs {}",
        h.text(),
        x.text()
    );
    assert_eq!(
        h.text().replace(&nhs_b(), "N"),
        x.text().replace(&unused, "N"),
        "If-None-Exist Patient"
    );
    // Conditional update selecting only B's: as if nothing matched.
    let body = new_mr(A, "u1");
    let h = a
        .put("/fhir/MedicationRequest?identifier=urn:leak:u|bobby", &body)
        .await;
    let x = a
        .put(
            "/fhir/MedicationRequest?identifier=urn:leak:u|never",
            &new_mr(A, "u2"),
        )
        .await;
    assert_eq!(
        h.status,
        x.status,
        "conditional update: {} vs {}",
        h.text(),
        x.text()
    );
    assert_ne!(h.status, 412, "conditional update");
    assert!(
        h.status != 200 || h.json()["id"] != "mr-bobby",
        "updated B's: {}",
        h.text()
    );
    // Conditional delete selecting only B's.
    let h = a
        .delete("/fhir/MedicationRequest?identifier=urn:leak:d|bobby")
        .await;
    let x = a
        .delete("/fhir/MedicationRequest?identifier=urn:leak:d|never")
        .await;
    assert_same_as_absent(&h, &x, "bobby", "never", "conditional delete");
    // Conditional PATCH selecting only B's.
    let ops = json!([{"op": "replace", "path": "/status", "value": "stopped"}]);
    let h = a
        .patch("/fhir/MedicationRequest?identifier=urn:leak:p|bobby", &ops)
        .await;
    let x = a
        .patch("/fhir/MedicationRequest?identifier=urn:leak:p|never", &ops)
        .await;
    assert_same_as_absent(&h, &x, "bobby", "never", "conditional patch");
    // B's MedicationRequest is untouched by all of it.
    assert_eq!(
        version(&app, "/fhir/MedicationRequest/mr-bobby").await,
        before
    );
    let now = app
        .admin()
        .get("/fhir/MedicationRequest/mr-bobby")
        .await
        .json();
    assert_eq!(now["status"], "on-hold");
    assert_eq!(now["subject"]["reference"], "Patient/pat-bobby");
}

async fn shared_user_and_system_callers(app: TestApp) {
    seed(&app).await;
    let f = &*FIXTURE;
    // Shared types need a scope that covers them.
    let obs_only = app.bearer(&f.patient_token(A, "patient/Observation.rs"));
    assert_eq!(obs_only.total("/fhir/Observation").await, 3);
    assert_forbidden(
        &obs_only.get("/fhir/Practitioner").await,
        "patient/Observation.rs on Practitioner",
    );
    let shared = app.bearer(&f.patient_token(A, "patient/Practitioner.rs patient/Slot.rs"));
    assert_eq!(shared.total("/fhir/Practitioner").await, 2);
    assert_eq!(shared.get("/fhir/Practitioner/prac-solo").await.status, 200);
    assert_eq!(shared.total("/fhir/Slot").await, 1);
    assert_forbidden(
        &shared.get("/fhir/Observation").await,
        "patient/Practitioner.rs on Observation",
    );
    // user/: across patients, within scopes.
    let user = app.bearer(&f.user_token("user/*.rs", "prac-shared"));
    let r = user.get("/fhir/MedicationRequest").await;
    assert_eq!(
        ids(&r, "user MRs"),
        strs(&["MedicationRequest/mr-alice", "MedicationRequest/mr-bobby"])
    );
    assert_eq!(user.total("/fhir/Observation").await, 4);
    assert_eq!(user.get("/fhir/Patient/pat-bobby").await.status, 200);
    assert_eq!(user.total("/fhir/Patient/pat-bobby/Observation").await, 1);
    assert_forbidden(
        &user
            .post("/fhir/MedicationRequest", &new_mr(B, "user"))
            .await,
        "user/*.rs creating",
    );
    let user_obs = app.bearer(&f.user_token("user/Observation.rs", "prac-shared"));
    assert_eq!(user_obs.total("/fhir/Observation").await, 4);
    assert_forbidden(
        &user_obs.get("/fhir/MedicationRequest").await,
        "user/Observation.rs on MR",
    );
    let user_write = app.bearer(&f.user_token("user/MedicationRequest.cu", "prac-shared"));
    let r = user_write
        .post("/fhir/MedicationRequest", &new_mr(B, "user-w"))
        .await;
    assert_eq!(
        r.status,
        201,
        "user/MedicationRequest.cu for B: {}",
        r.text()
    );
    // system/: everything within scopes.
    let system = app.bearer(&f.token("system/*.rs", json!({})));
    assert_eq!(system.total("/fhir/Patient").await, 2);
    assert_eq!(system.total("/fhir/Observation").await, 4);
    let r = system.get("/fhir/_history?_count=500").await;
    assert!(
        r.text().contains("obs-bobby-gone"),
        "system history shows B's deletion"
    );
}

async fn nhs_login_patients_are_confined(app: TestApp) {
    seed(&app).await;
    let f = &*FIXTURE;
    let a = app.bearer(&f.nhs_token(&nhs_a(), "P9.Cp.Cd", "patient/*.rs"));
    assert_eq!(a.get("/fhir/Patient/pat-alice").await.status, 200);
    let h = a.get("/fhir/Patient/pat-bobby").await;
    let x = a.get("/fhir/Patient/never-n").await;
    assert_same_as_absent(&h, &x, "pat-bobby", "never-n", "NHS login: B's Patient");
    let r = a.get("/fhir/Observation").await;
    assert_eq!(
        ids(&r, "NHS login: Observation"),
        strs(&[
            "Observation/obs-alice",
            "Observation/obs-alice-2",
            "Observation/obs-alice-3"
        ])
    );
    let r = a
        .get(&format!(
            "/fhir/Observation?subject.identifier={NHS_SYSTEM}|{}",
            nhs_b()
        ))
        .await;
    assert_eq!(r.json()["total"], 0);
    let r = a.get("/fhir/_history?_count=500").await;
    assert_clean(&r.text(), &b_markers(), "NHS login: _history");
    // Each issuer's configured claim decides the patient, not another claim
    // the token happens to carry.
    let t0 = now();
    let mixed = f
        .nhs
        .token(&json!({"iss": NHS_ISS, "aud": AUDIENCE, "sub": "nhs-mixed",
        "iat": t0, "exp": t0 + 300, "scope": "patient/*.rs", "vot": "P9.Cp.Cd",
        "nhs_number": nhs_a(), "patient": B}));
    let smart_mixed = f.token("patient/*.rs", json!({"patient": A, "nhs_number": nhs_b()}));
    for (t, what) in [
        (mixed, "NHS token with a patient claim"),
        (smart_mixed, "SMART token with an NHS number"),
    ] {
        let c = app.bearer(&t);
        assert_eq!(c.get("/fhir/Patient/pat-alice").await.status, 200, "{what}");
        assert_eq!(c.get("/fhir/Patient/pat-bobby").await.status, 404, "{what}");
        assert_eq!(c.total("/fhir/MedicationRequest").await, 1, "{what}");
    }
    // Below P9: nothing in a compartment.
    let low = app.bearer(&f.nhs_token(&nhs_a(), "P5.Cp.Ck", "patient/*.rs"));
    assert_refused(&low.get("/fhir/Observation").await, "P5: Observation");
    assert_refused(&low.get("/fhir/Patient/pat-alice").await, "P5: own Patient");
    assert_refused(
        &low.get("/fhir/MedicationRequest/mr-alice").await,
        "P5: own MR",
    );
    let b = app.bearer(&f.nhs_token(&nhs_b(), "P9.Cp.Cd", "patient/*.rs"));
    assert_eq!(b.get("/fhir/Patient/pat-bobby").await.status, 200);
    assert_eq!(b.get("/fhir/Patient/pat-alice").await.status, 404);
}

crate::backend_tests!(with required;
    reads_of_the_other_patient_answer_as_absent,
    writes_cannot_reach_into_the_other_compartment,
    searches_see_only_the_compartment,
    includes_and_revincludes_stay_inside,
    paging_links_carry_no_access,
    history_is_confined_at_every_level,
    compartment_search_of_the_other_patient,
    bundles_authorise_each_entry,
    conditional_interactions_are_no_oracle,
    shared_user_and_system_callers,
    nhs_login_patients_are_confined,
);

/// The suite can fail: under a policy that lets every caller see
/// everything (tokens still verified), every leak test above fails.
#[actix_rt::test]
async fn the_suite_fails_when_the_policy_is_open() {
    async fn open_app() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = fhirbridge::config::Settings::for_testing();
        s.storage.database_url = format!("sqlite://{}", dir.path().join("open.db").display());
        required(&mut s);
        TestApp::start_with(
            s,
            "sqlite",
            Some(dir),
            None,
            std::sync::Arc::new(fhirbridge::policy::AllowAll),
        )
    }
    macro_rules! must_fail {
        ($($name:ident),* $(,)?) => { $(
            let app = open_app().await;
            let outcome = actix_rt::spawn($name(app)).await;
            assert!(outcome.is_err(), "{} passed under an open policy", stringify!($name));
        )* };
    }
    must_fail!(
        reads_of_the_other_patient_answer_as_absent,
        writes_cannot_reach_into_the_other_compartment,
        searches_see_only_the_compartment,
        includes_and_revincludes_stay_inside,
        paging_links_carry_no_access,
        history_is_confined_at_every_level,
        compartment_search_of_the_other_patient,
        bundles_authorise_each_entry,
        conditional_interactions_are_no_oracle,
        shared_user_and_system_callers,
        nhs_login_patients_are_confined,
    );
}
