//! The GP-supplier bridge (issue 15, README "GP systems: the supplier
//! bridge"): the real server in front of a running sandbox supplier (a GP
//! Connect STU3 provider, `fhirbridge::sandbox`, on its own port and
//! thread), with a practice on local storage beside the bridged one. Real
//! signed tokens, real HTTP both ways, both backends.

use std::time::{Duration, Instant};

use fhirbridge::config::Settings;
use serde_json::{json, Value};

use crate::auth_support::*;
use crate::helpers::{nhs_number, Resp, TestApp, PG_ENV};

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";
const BOOKING_ORG: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-BookingOrganization";
const ANN: &str = "br-ann";
const BEN: &str = "br-ben";
const LOCAL: &str = "br-local";

/// A sandbox supplier on an ephemeral port, on its own thread.
pub struct Sandbox {
    pub port: u16,
    client: awc::Client,
}

impl Sandbox {
    pub fn start(repeat_plans: usize) -> Sandbox {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let opts = fhirbridge::sandbox::SandboxOptions {
            repeat_plans,
            ..Default::default()
        };
        std::thread::spawn(move || {
            let _ = actix_rt::System::new().block_on(fhirbridge::sandbox::serve(listener, opts));
        });
        Sandbox {
            port,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    pub async fn faults(&self, v: Value) {
        for _ in 0..50 {
            if let Ok(r) = self
                .client
                .put(format!("http://127.0.0.1:{}/admin/faults", self.port))
                .send_json(&v)
                .await
            {
                assert!(r.status().is_success());
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the sandbox does not answer");
    }

    /// Waits until the sandbox has created `n` Tasks, before `deadline`.
    pub async fn wait_tasks(&self, n: u64, deadline: Instant, poll_ms: u64) {
        loop {
            let s = self.stats().await;
            if s["tasks_created"] == n {
                return;
            }
            assert!(Instant::now() < deadline, "not all delivered: {s}");
            tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        }
    }

    pub async fn stats(&self) -> Value {
        let mut r = self
            .client
            .get(format!("http://127.0.0.1:{}/admin/stats", self.port))
            .send()
            .await
            .expect("stats");
        r.json().limit(1 << 20).await.expect("stats json")
    }
}

/// The `[[suppliers]]` entry for `sb` (holding A81002 and A81003), with
/// `changes` merged in.
pub fn supplier(sb: &Sandbox, changes: Value) -> fhirbridge::bridge::SupplierConfig {
    let mut v = json!({
        "name": "sandbox", "kind": "sandbox",
        "base_url": format!("http://127.0.0.1:{}/fhir", sb.port),
        "ods_codes": ["A81002", "A81003"],
        "types": ["Appointment", "Slot", "Schedule", "MedicationRequest", "MedicationStatement", "AllergyIntolerance", "Task"],
        "timeout_ms": 1500, "asid_from": "200000000359", "asid_to": "918999198993",
        "breaker_failures": 1000
    });
    for (k, x) in changes.as_object().cloned().unwrap_or_default() {
        v[k] = x;
    }
    serde_json::from_value(v).expect("supplier config")
}

pub fn bridged(s: &mut Settings, cfg: fhirbridge::bridge::SupplierConfig) {
    required(s);
    s.jobs.workers = 4;
    s.jobs.poll_ms = 100;
    s.suppliers = vec![cfg];
}

/// A server in front of `sb` on SQLite or (`pg`) PostgreSQL; `None` when
/// PostgreSQL is not configured.
pub async fn app(pg: bool, sb: &Sandbox, changes: Value) -> Option<TestApp> {
    let cfg = supplier(sb, changes);
    let app = if pg {
        TestApp::postgres_with(|s| bridged(s, cfg)).await?
    } else {
        TestApp::sqlite_with(|s| bridged(s, cfg)).await
    };
    seed(&app).await;
    Some(app)
}

/// Ann is registered at A81002 (an identifier-only generalPractitioner),
/// Ben at A81002 through a local Organization carrying the ODS code, and a
/// third patient at A81001, a practice on local storage.
async fn seed(app: &TestApp) {
    let admin = app.admin();
    let org = json!({"resourceType": "Organization", "id": "br-org-a81002", "name": "Sandbox Surgery",
        "identifier": [{"system": ODS, "value": "A81002"}]});
    assert_eq!(
        admin
            .put("/fhir/Organization/br-org-a81002", &org)
            .await
            .status,
        201
    );
    let patient = |id: &str, nhs: &str, gp: Value| {
        json!({"resourceType": "Patient", "id": id, "identifier": [{"system": NHS, "value": nhs}],
               "name": [{"family": id, "given": ["Test"]}], "gender": "female", "birthDate": "1980-01-01",
               "generalPractitioner": [gp]})
    };
    let local_nhs = nhs_number(4242);
    for p in [
        patient(
            ANN,
            "9000000009",
            json!({"identifier": {"system": ODS, "value": "A81002"}}),
        ),
        patient(
            BEN,
            "9000000017",
            json!({"reference": "Organization/br-org-a81002"}),
        ),
        patient(
            LOCAL,
            &local_nhs,
            json!({"identifier": {"system": ODS, "value": "A81001"}}),
        ),
    ] {
        let id = p["id"].as_str().unwrap().to_owned();
        let r = admin.put(&format!("/fhir/Patient/{id}"), &p).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let mr = json!({"resourceType": "MedicationRequest", "id": "br-local-mr", "status": "active", "intent": "order",
        "subject": {"reference": format!("Patient/{LOCAL}")},
        "medicationCodeableConcept": {"text": "Amlodipine 5mg tablets"}});
    assert_eq!(
        admin
            .put("/fhir/MedicationRequest/br-local-mr", &mr)
            .await
            .status,
        201
    );
}

fn patient(app: &TestApp, id: &str) -> String {
    let _ = app;
    FIXTURE.patient_token(id, "patient/*.cruds")
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn day(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

fn slot_search(days: i64) -> String {
    format!(
        "/fhir/Slot?status=free&start=ge{}&start=le{}&schedule.actor:Location.organization.identifier={ODS}|A81002&_include=Slot:schedule&_count=200",
        day(1),
        day(1 + days)
    )
}

fn booking(patient: &str, slot: &Value, location: &str) -> Value {
    json!({"resourceType": "Appointment", "status": "booked",
        "start": slot["start"], "end": slot["end"],
        "slot": [{"reference": format!("Slot/{}", slot["id"].as_str().unwrap())}],
        "created": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        "description": "Cough for two weeks",
        "contained": [{"resourceType": "Organization", "id": "app", "name": "A PHR app",
                       "identifier": [{"system": ODS, "value": "X99999"}],
                       "telecom": [{"system": "phone", "value": "0300 000 0000"}]}],
        "extension": [{"url": BOOKING_ORG, "valueReference": {"reference": "#app"}}],
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
            {"actor": {"reference": location}, "status": "accepted"}]})
}

fn renewal(patient: &str, plan: &str) -> Value {
    json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "103742009", "display": "Renewal of prescription"}]},
        "for": {"reference": format!("Patient/{patient}")},
        "focus": {"reference": format!("MedicationRequest/{plan}")},
        "authoredOn": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S+00:00").to_string()})
}

async fn put_if(who: &Authed<'_>, path: &str, body: &Value, etag: &str) -> Resp {
    who.request(
        "PUT",
        path,
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-Match", etag),
        ],
        Some(body.to_string().into_bytes()),
    )
    .await
}

/// Waits until local Task `id`'s delivery status (`businessStatus`) is
/// `want`, before `deadline`; returns the Task.
async fn delivery(app: &TestApp, id: &str, want: &str, deadline: Instant) -> Value {
    let admin = app.admin();
    loop {
        let t = admin.get(&format!("/fhir/Task/{id}")).await.json();
        if t["businessStatus"]["coding"][0]["code"] == want {
            return t;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spine(r: &Resp) -> String {
    r.json()["issue"][0]["details"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Read a bridged patient's record: ids carry the supplier, patient
/// references point at the local Patient, `meta.source` names the supplier;
/// the local practice's patient stays local; another patient's bridged
/// records are out of reach exactly like absent ones.
async fn bridged_record_beside_a_local_practice(pg: bool) {
    let sb = Sandbox::start(3);
    let Some(app) = app(pg, &sb, json!({})).await else {
        return;
    };
    let ann = app.bearer(&patient(&app, ANN));
    let ben = app.bearer(&patient(&app, BEN));
    let r = ann
        .get(&format!("/fhir/MedicationRequest?patient={ANN}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["total"], 6, "3 plans and 3 issues: {b}");
    for e in b["entry"].as_array().unwrap() {
        let m = &e["resource"];
        assert!(m["id"].as_str().unwrap().starts_with("sandbox."), "{m}");
        assert_eq!(m["subject"]["reference"], format!("Patient/{ANN}"));
        assert_eq!(
            m["meta"]["source"],
            format!("http://127.0.0.1:{}/fhir", sb.port)
        );
    }
    let plans = ann
        .get(&format!(
            "/fhir/MedicationRequest?patient={ANN}&intent=plan"
        ))
        .await
        .json();
    assert_eq!(plans["total"], 3);
    let plan = &plans["entry"][0]["resource"];
    assert_eq!(
        plan["courseOfTherapyType"]["coding"][0]["code"],
        "continuous"
    );
    assert_eq!(plan["dispenseRequest"]["numberOfRepeatsAllowed"], 6);
    let plan_id = plan["id"].as_str().unwrap().to_owned();
    let r = ann.get(&format!("/fhir/MedicationRequest/{plan_id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], plan_id.as_str());
    let r = ann
        .get(&format!("/fhir/Patient/{ANN}/AllergyIntolerance"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 1);
    assert_eq!(
        ann.get(&format!("/fhir/Patient/{ANN}/MedicationStatement"))
            .await
            .json()["total"],
        3
    );
    // Ben's practice is named through a local Organization.
    let r = ben
        .get(&format!("/fhir/MedicationRequest?patient={BEN}"))
        .await;
    assert_eq!(r.json()["total"], 6, "{}", r.text());
    let bens = ids(&r.json());
    // Ann cannot reach Ben's records: by id exactly as an absent one, by
    // search a 403 before anything is fetched.
    let hidden = ann
        .get(&format!("/fhir/MedicationRequest/{}", bens[0]))
        .await;
    let absent = ann.get("/fhir/MedicationRequest/sandbox.medreq-nope").await;
    assert_eq!((hidden.status, absent.status), (404, 404));
    assert_eq!(hidden.issues(), absent.issues());
    assert_eq!(
        ann.get(&format!("/fhir/MedicationRequest?patient={BEN}"))
            .await
            .status,
        403
    );
    // The practice on local storage answers from the local store.
    let admin = app.admin();
    let local = admin
        .get(&format!("/fhir/MedicationRequest?patient={LOCAL}"))
        .await
        .json();
    assert_eq!(ids(&local), vec!["br-local-mr".to_owned()]);
    // A search naming no patient stays local: nothing of the supplier's.
    let all = admin.get("/fhir/MedicationRequest").await.json();
    assert_eq!(ids(&all), vec!["br-local-mr".to_owned()]);
    // Supplier resources are not written through the local store: not by
    // DELETE, PUT, nor a transaction entry.
    let r = admin
        .delete(&format!("/fhir/MedicationRequest/{plan_id}"))
        .await;
    assert_eq!(r.status, 405, "{}", r.text());
    let mut changed = plan.clone();
    changed["status"] = json!("stopped");
    let r = admin
        .put(&format!("/fhir/MedicationRequest/{plan_id}"), &changed)
        .await;
    assert_eq!(r.status, 405, "{}", r.text());
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": changed, "request": {"method": "PUT", "url": format!("MedicationRequest/{plan_id}")}}]});
    let r = admin.post("/fhir", &tx).await;
    assert_eq!(r.status, 501, "{}", r.text());
    assert_eq!(
        ids(&admin.get("/fhir/MedicationRequest").await.json()),
        vec!["br-local-mr".to_owned()]
    );
    // The CapabilityStatement says what the bridged practices serve.
    let cs = admin.get("/fhir/metadata").await.json();
    let doc = cs["rest"][0]["documentation"].as_str().unwrap_or("");
    assert!(
        doc.contains("Practices on GP systems: sandbox (sandbox; practices A81002, A81003;"),
        "{doc}"
    );
    assert!(doc.contains("not vread, history, PATCH or DELETE"), "{doc}");
    // Ann's Consent denying an app binds her bridged records too: that
    // app's searches find nothing of hers and her plan reads as absent.
    let me = app.bearer(&FIXTURE.token(
        "patient/*.rs patient/Consent.cu",
        json!({"patient": ANN, "client_id": "nhs-app"}),
    ));
    crate::consent::record(&me, &crate::consent::deny_app(ANN, "app-x")).await;
    let denied = app.bearer(&FIXTURE.token("system/*.rs", json!({"client_id": "app-x"})));
    let r = denied
        .get(&format!("/fhir/MedicationRequest?patient={ANN}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 0, "{}", r.text());
    let r = denied
        .get(&format!("/fhir/MedicationRequest/{plan_id}"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let other = app.bearer(&FIXTURE.token("system/*.rs", json!({"client_id": "app-y"})));
    assert_eq!(
        other
            .get(&format!("/fhir/MedicationRequest?patient={ANN}"))
            .await
            .json()["total"],
        6
    );
    // Routed reads are audited like local ones, one event per patient,
    // each entity naming the supplier it came from.
    let auditor = FIXTURE.token("system/AuditEvent.rs", json!({"client_id": "audit-app"}));
    let r = app
        .bearer(&auditor)
        .get(&format!("/fhir/AuditEvent?patient={ANN}&_count=100"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.json();
    let from_supplier = events["entry"].as_array().unwrap().iter().any(|e| {
        e["resource"]["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| {
                x["what"]["reference"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("MedicationRequest/sandbox.")
                    && x["detail"][0]["valueString"] == format!("http://127.0.0.1:{}/fhir", sb.port)
            })
    });
    assert!(from_supplier, "{events}");
    let stats = sb.stats().await;
    assert!(
        stats["by_interaction"]
            ["urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"]
            .as_u64()
            .unwrap()
            >= 1,
        "{stats}"
    );
}

/// Free slots of the bridged practice, booking (one winner among 32
/// concurrent bookings of one slot), retrieval, amend and cancel with
/// `If-Match`, the freed slot free again.
async fn book_through_the_bridge(pg: bool) {
    let sb = Sandbox::start(1);
    let Some(app) = app(pg, &sb, json!({})).await else {
        return;
    };
    let ann = app.bearer(&patient(&app, ANN));
    let ben = app.bearer(&patient(&app, BEN));
    let r = ann.get(&slot_search(6)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let slots: Vec<Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"].clone())
        .collect();
    assert!(slots.len() > 10, "{b}");
    assert!(slots.iter().all(|s| s["id"]
        .as_str()
        .unwrap()
        .starts_with("sandbox.slot-A81002-")));
    assert!(slots
        .windows(2)
        .all(|w| w[0]["start"].as_str() <= w[1]["start"].as_str()));
    let schedule = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Schedule")
        .expect("included schedule")["resource"]
        .clone();
    let location = schedule["actor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reference"].as_str().unwrap().to_owned())
        .find(|r| r.starts_with("Location/"))
        .expect("location");
    // Slots and schedules read by id from what the search brought.
    let r = ann
        .get(&format!("/fhir/Slot/{}", slots[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["start"], slots[0]["start"]);
    let r = ann
        .get(&format!(
            "/fhir/Schedule/{}",
            schedule["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ann.get("/fhir/Slot/sandbox.slot-nope").await.status, 404);
    // A patient's search needs the window (GP Connect: at most 14 days).
    let r = ann
        .get(&format!(
            "/fhir/Slot?status=free&schedule.actor:Location.organization.identifier={ODS}|A81002"
        ))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = ann.get(&format!("/fhir/Slot?status=free&start=ge{}&start=le{}&schedule.actor:Location.organization.identifier={ODS}|A81002", day(1), day(30))).await;
    assert_eq!(r.status, 422, "{}", r.text());

    let r = ann
        .post("/fhir/Appointment", &booking(ANN, &slots[0], &location))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appt = r.json();
    let appt_id = appt["id"].as_str().unwrap().to_owned();
    assert!(appt_id.starts_with("sandbox."), "{appt}");
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert_eq!(
        appt["participant"][0]["actor"]["reference"],
        format!("Patient/{ANN}")
    );

    // A patient books only for themselves.
    let r = ben
        .post("/fhir/Appointment", &booking(ANN, &slots[2], &location))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // 32 concurrent bookings of one slot, by two patients and a system.
    let tokens = [
        patient(&app, ANN),
        patient(&app, BEN),
        FIXTURE.system_token(),
    ];
    let calls = (0..32).map(|i| {
        let who = if i % 3 == 1 { BEN } else { ANN };
        let body = booking(who, &slots[1], &location);
        let token = tokens[i % 3].clone();
        let app = &app;
        async move { app.bearer(&token).post("/fhir/Appointment", &body).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let refused: Vec<&Resp> = results.iter().filter(|r| r.status == 409).collect();
    assert_eq!(
        (created, refused.len()),
        (1, 31),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(refused.iter().all(|r| spine(r) == "DUPLICATE_REJECTED"));
    let metrics = app.get("/metrics").await.text();
    assert!(metrics.contains("fhirbridge_supplier_requests_total{operation=\"book\",outcome=\"refused_409\",supplier=\"sandbox\"} 31"), "{metrics}");
    assert_eq!(sb.stats().await["appointments_booked"], 2);

    // Retrieve, and another patient's appointment is out of reach.
    let mine = ann.get(&format!("/fhir/Patient/{ANN}/Appointment")).await;
    assert_eq!(mine.status, 200, "{}", mine.text());
    assert!(ids(&mine.json()).contains(&appt_id));
    assert_eq!(
        ben.get(&format!("/fhir/Appointment/{appt_id}"))
            .await
            .status,
        404
    );
    let read = ann.get(&format!("/fhir/Appointment/{appt_id}")).await;
    assert_eq!(read.status, 200, "{}", read.text());

    // Amend the description; a cancellation may change nothing else.
    let mut amended = read.json();
    amended["description"] = json!("Cough for three weeks");
    let r = put_if(
        &ann,
        &format!("/fhir/Appointment/{appt_id}"),
        &amended,
        "W/\"1\"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["meta"]["versionId"], "2");
    let mut cancel = r.json();
    cancel["status"] = json!("cancelled");
    cancel["cancelationReason"] = json!({"text": "Feeling better"});
    let mut moved = cancel.clone();
    moved["start"] = slots[3]["start"].clone();
    let r = put_if(
        &ann,
        &format!("/fhir/Appointment/{appt_id}"),
        &moved,
        "W/\"2\"",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let stale = put_if(
        &ann,
        &format!("/fhir/Appointment/{appt_id}"),
        &cancel,
        "W/\"1\"",
    )
    .await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    let r = put_if(
        &ann,
        &format!("/fhir/Appointment/{appt_id}"),
        &cancel,
        "W/\"2\"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(r.json()["cancelationReason"]["text"], "Feeling better");
    // The slot is free again (our write invalidated the cached search).
    let again = ids(&ann.get(&slot_search(6)).await.json());
    assert!(again.contains(&slots[0]["id"].as_str().unwrap().to_owned()));
    // Bundles and PATCH do not write supplier resources.
    let r = app
        .admin()
        .request(
            "PATCH",
            &format!("/fhir/Appointment/{appt_id}"),
            &[("Content-Type", "application/json-patch+json")],
            Some(br#"[{"op":"replace","path":"/description","value":"x"}]"#.to_vec()),
        )
        .await;
    assert!(matches!(r.status, 405 | 501), "{} {}", r.status, r.text());
}

/// The supplier down while 200 repeat requests are made: each is accepted
/// at once as a local Task (queued), none is lost and none duplicated at
/// the supplier once it returns; readiness stays up and reports it.
async fn outbox_survives_an_outage(pg: bool) {
    let outage: u64 = std::env::var("FHIRBRIDGE_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let sb = Sandbox::start(100);
    let Some(app) = app(pg, &sb, json!({})).await else {
        return;
    };
    sb.faults(json!({"down": true})).await;
    let down_at = Instant::now();
    let mut tasks = Vec::new();
    for chunk in 0..25 {
        let calls = (0..8).map(|k| {
            let n = chunk * 8 + k;
            let (who, nhs) = if n % 2 == 0 {
                (ANN, "9000000009")
            } else {
                (BEN, "9000000017")
            };
            let plan = format!("sandbox.medreq-{nhs}-{}-plan", n / 2 + 1);
            let token = patient(&app, who);
            let app = &app;
            async move {
                app.bearer(&token)
                    .post("/fhir/Task", &renewal(who, &plan))
                    .await
            }
        });
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.status, 201, "{}", r.text());
            let t = r.json();
            assert_eq!(t["businessStatus"]["coding"][0]["code"], "queued");
            tasks.push(t);
        }
    }
    assert_eq!(tasks.len(), 200);
    let keys: std::collections::HashSet<String> = tasks
        .iter()
        .map(|t| t["identifier"][0]["value"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 200, "one idempotency key per request");
    // A second request for a plan with an open one: 409.
    let r = app
        .bearer(&patient(&app, ANN))
        .post(
            "/fhir/Task",
            &renewal(ANN, "sandbox.medreq-9000000009-1-plan"),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["suppliers"]["sandbox"], "down");
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains("fhirbridge_outbox_depth{state=\"queued\",supplier=\"sandbox\"}")
            || metrics.contains("fhirbridge_outbox_depth{state=\"running\",supplier=\"sandbox\"}"),
        "{metrics}"
    );
    if let Some(left) = Duration::from_secs(outage).checked_sub(down_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    assert_eq!(sb.stats().await["tasks_created"], 0);
    sb.faults(json!({"down": false})).await;
    sb.wait_tasks(200, Instant::now() + Duration::from_secs(120), 500)
        .await;
    // Every local Task says delivered and names the supplier's record.
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in &tasks {
        let now = delivery(&app, t["id"].as_str().unwrap(), "delivered", deadline).await;
        assert!(now["output"][0]["valueReference"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Task/sandbox."));
    }
    let s = sb.stats().await;
    assert_eq!(s["tasks_created"], 200, "0 lost, 0 duplicated: {s}");
}

/// Two server instances on one PostgreSQL database: each outbox item is
/// delivered once.
async fn two_instances_deliver_once(pg: bool) {
    if !pg {
        return;
    }
    let sb = Sandbox::start(20);
    let Some(one) = app(true, &sb, json!({})).await else {
        return;
    };
    let mut settings = crate::helpers::settings_with(&one.db_url);
    bridged(&mut settings, supplier(&sb, json!({})));
    let two = TestApp::start(settings, "postgres", None, None);
    sb.faults(json!({"down": true})).await;
    for n in 0..40 {
        let (who, nhs) = if n % 2 == 0 {
            (ANN, "9000000009")
        } else {
            (BEN, "9000000017")
        };
        let app = if n % 4 < 2 { &one } else { &two };
        let plan = format!("sandbox.medreq-{nhs}-{}-plan", n / 2 + 1);
        let r = app
            .bearer(&patient(app, who))
            .post("/fhir/Task", &renewal(who, &plan))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    sb.faults(json!({"down": false})).await;
    sb.wait_tasks(40, Instant::now() + Duration::from_secs(90), 300)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = sb.stats().await;
    assert_eq!(
        (s["tasks_created"].as_u64(), s["task_posts"].as_u64()),
        (Some(40), Some(40)),
        "each item delivered once: {s}"
    );
}

/// Malformed and hostile answers are a 502 and nothing of them is shown or
/// stored; a supplier that does not answer in time is a 503 with
/// Retry-After naming it; the circuit breaker then fails fast; a slow
/// supplier never slows the local practice; a cached copy is served stale
/// (tagged) while the supplier is down.
async fn misbehaving_suppliers(pg: bool) {
    let sb = Sandbox::start(1);
    let Some(app) = app(pg, &sb, json!({"cache_ttl_secs": {"MedicationRequest": 1}, "breaker_failures": 6, "breaker_open_secs": 2, "timeout_ms": 800})).await else { return };
    let ann = app.bearer(&patient(&app, ANN));
    let admin = app.admin();
    let record = format!("/fhir/MedicationRequest?patient={ANN}");
    for mode in ["invalid-json", "wrong-type", "huge", "redirect", "drip"] {
        sb.faults(json!({"hostile": mode})).await;
        let r = ann.get(&record).await;
        assert_eq!(r.status, 502, "{mode}: {}", r.text());
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
        assert!(!r.text().contains("evil.example"), "{mode}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    sb.faults(json!({"hostile": null})).await;
    assert_eq!(
        ids(&admin.get("/fhir/MedicationRequest").await.json()),
        vec!["br-local-mr".to_owned()],
        "nothing stored"
    );
    // A good answer, cached; the supplier goes down; past the TTL the
    // cached copy is served, tagged stale.
    let r = ann.get(&record).await;
    assert_eq!(r.status, 200, "{}", r.text());
    sb.faults(json!({"down": true})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = ann.get(&record).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tag = &r.json()["entry"][0]["resource"]["meta"]["tag"][0];
    assert_eq!(tag["code"], "stale", "{}", r.text());
    // Nothing cached: 503 with Retry-After, naming the practice's supplier.
    let r = ann.get(&slot_search(3)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("sandbox"));
    // Too slow: 503; after six faults in a row the breaker answers at once.
    sb.faults(json!({"down": false, "latency_ms": 1500})).await;
    for _ in 0..6 {
        let r = ann.get(&slot_search(4)).await;
        assert_eq!(r.status, 503, "{}", r.text());
    }
    let started = Instant::now();
    let r = ann.get(&slot_search(5)).await;
    assert_eq!(r.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the open breaker fails fast"
    );
    assert!(app
        .get("/metrics")
        .await
        .text()
        .contains("fhirbridge_supplier_circuit_state{supplier=\"sandbox\"} 2"));
    let ready = app.get("/health/ready").await;
    assert_eq!(
        (
            ready.status,
            ready.json()["checks"]["suppliers"]["sandbox"].as_str()
        ),
        (200, Some("down"))
    );
    // A slow supplier does not slow the local practice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow_path = slot_search(6);
    let slow = ann.get(&slow_path);
    let local = async {
        let t = Instant::now();
        let r = admin.get(&format!("/fhir/Patient/{LOCAL}")).await;
        (r.status, t.elapsed())
    };
    let (_, (status, took)) = futures_util::future::join(slow, local).await;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(500),
        "local read took {took:?}"
    );
    sb.faults(json!({"latency_ms": 0})).await;
}

/// A dead-lettered outbox item: visible to `fhirbridge outbox list`, its
/// Task marked undeliverable, queued again by `outbox retry`, delivered.
async fn dead_letter_and_operator_retry(pg: bool) {
    if pg {
        return;
    }
    let sb = Sandbox::start(1);
    let Some(app) = app(false, &sb, json!({"outbox_max_attempts": 2})).await else {
        return;
    };
    sb.faults(json!({"down": true})).await;
    let r = app
        .bearer(&patient(&app, ANN))
        .post(
            "/fhir/Task",
            &renewal(ANN, "sandbox.medreq-9000000009-1-plan"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    delivery(
        &app,
        &id,
        "undeliverable",
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ops.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\ndatabase_url = \"{}\"\n", app.db_url),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let mut line = String::new();
    for _ in 0..50 {
        let (code, listed) = cli(&["outbox", "list"]);
        assert_eq!(code, Some(0));
        if let Some(l) = listed
            .lines()
            .find(|l| l.contains(&id) && l.contains(" dead "))
        {
            line = l.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!line.is_empty(), "the dead item is listed");
    assert!(
        !line.contains("9000000009"),
        "no patient data in the listing"
    );
    let job = line.split_whitespace().next().unwrap().to_owned();
    sb.faults(json!({"down": false})).await;
    let (code, out) = cli(&["outbox", "retry", &job]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(cli(&["outbox", "retry", "no-such-item"]).0, Some(1));
    sb.wait_tasks(1, Instant::now() + Duration::from_secs(30), 200)
        .await;
    // A second dead item, dropped by the operator: gone from the outbox.
    sb.faults(json!({"down": true})).await;
    let r = app
        .bearer(&patient(&app, BEN))
        .post(
            "/fhir/Task",
            &renewal(BEN, "sandbox.medreq-9000000017-1-plan"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let second = r.json()["id"].as_str().unwrap().to_owned();
    let mut item = String::new();
    for _ in 0..100 {
        let (_, listed) = cli(&["outbox", "list"]);
        if let Some(l) = listed
            .lines()
            .find(|l| l.contains(&second) && l.contains(" dead "))
        {
            item = l.split_whitespace().next().unwrap().to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!item.is_empty(), "the second item is dead");
    assert_eq!(cli(&["outbox", "drop", &item]).0, Some(0));
    let (_, listed) = cli(&["outbox", "list"]);
    assert!(!listed.contains(&item), "{listed}");
    assert_eq!(cli(&["outbox", "drop", &item]).0, Some(1));
}

macro_rules! bridge_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_rt::test]
                async fn sqlite() {
                    super::$name(false).await
                }
                #[actix_rt::test]
                async fn postgres() {
                    if std::env::var(super::PG_ENV).is_ok() {
                        super::$name(true).await
                    } else {
                        eprintln!("skipping PostgreSQL run: {} is not set", super::PG_ENV);
                    }
                }
            }
        )*
    };
}

bridge_tests!(
    bridged_record_beside_a_local_practice,
    book_through_the_bridge,
    outbox_survives_an_outage,
    two_instances_deliver_once,
    misbehaving_suppliers,
    dead_letter_and_operator_retry,
);

/// Another fhirbridge as an R4 upstream (`kind = "fhir"`, bearer token from
/// an environment variable): the patient's record from there, and a repeat
/// request delivered as a conditional create on its idempotency key, so
/// delivering it again makes no second Task upstream.
async fn an_r4_upstream(pg: bool) {
    if pg {
        return;
    }
    let upstream = TestApp::sqlite().await;
    let pat = json!({"resourceType": "Patient", "id": "up-ann", "identifier": [{"system": NHS, "value": "9000000009"}],
        "name": [{"family": "Upstream"}], "gender": "female", "birthDate": "1980-01-01"});
    assert_eq!(upstream.put("/fhir/Patient/up-ann", &pat).await.status, 201);
    let plan = json!({"resourceType": "MedicationRequest", "id": "up-plan", "status": "active", "intent": "plan",
        "subject": {"reference": "Patient/up-ann"},
        "medicationCodeableConcept": {"text": "Amlodipine 5mg tablets"},
        "courseOfTherapyType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "code": "continuous"}]},
        "dispenseRequest": {"numberOfRepeatsAllowed": 6}});
    assert_eq!(
        upstream
            .put("/fhir/MedicationRequest/up-plan", &plan)
            .await
            .status,
        201
    );
    std::env::set_var("FHIRBRIDGE_TEST_UPSTREAM_TOKEN", "not-a-real-secret");
    let cfg: fhirbridge::bridge::SupplierConfig = serde_json::from_value(json!({
        "name": "up", "kind": "fhir", "base_url": format!("{}/fhir", upstream.base),
        "ods_codes": ["A81002"], "types": ["MedicationRequest", "Task"], "timeout_ms": 3000,
        "auth": {"bearer_token_env": "FHIRBRIDGE_TEST_UPSTREAM_TOKEN"}}))
    .unwrap();
    let app = TestApp::sqlite_with(|s| {
        required(s);
        s.jobs.workers = 2;
        s.jobs.poll_ms = 100;
        s.suppliers = vec![cfg];
    })
    .await;
    seed(&app).await;
    let ann = app.bearer(&patient(&app, ANN));
    let r = ann
        .get(&format!("/fhir/MedicationRequest?patient={ANN}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&r.json()), vec!["up.up-plan".to_owned()]);
    assert_eq!(
        r.json()["entry"][0]["resource"]["subject"]["reference"],
        format!("Patient/{ANN}")
    );
    let r = ann.post("/fhir/Task", &renewal(ANN, "up.up-plan")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let task = r.json();
    let key = task["identifier"][0]["value"].as_str().unwrap().to_owned();
    let delivered = delivery(
        &app,
        task["id"].as_str().unwrap(),
        "delivered",
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    let remote = delivered["output"][0]["valueReference"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(remote.starts_with("Task/up."), "{remote}");
    let query = format!("/fhir/Task?identifier=https://fhirbridge.dev/Id/outbox|{key}");
    let found = upstream.get(&query).await.json();
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(
        found["entry"][0]["resource"]["focus"]["reference"],
        "MedicationRequest/up-plan"
    );
    assert_eq!(
        found["entry"][0]["resource"]["for"]["reference"],
        "Patient/up-ann"
    );
    // The same delivery again (a retry after a lost answer) finds the first.
    let again = upstream
        .request(
            "POST",
            "/fhir/Task",
            &[
                ("Content-Type", "application/fhir+json"),
                (
                    "If-None-Exist",
                    &format!("identifier=https://fhirbridge.dev/Id/outbox|{key}"),
                ),
            ],
            Some(found["entry"][0]["resource"].to_string().into_bytes()),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(upstream.get(&query).await.json()["total"], 1);
}

bridge_tests!(an_r4_upstream);

/// A cancellation while the GP system is down is not lost: 202 with a
/// local Task (queued, delivered when the supplier returns). A patient
/// queuing a cancellation of another patient's appointment under their own
/// name gets the same 202, and the delivery refuses it: the appointment
/// stays booked.
async fn cancellation_queued_while_down(pg: bool) {
    let sb = Sandbox::start(1);
    let Some(app) = app(pg, &sb, json!({})).await else {
        return;
    };
    let ann = app.bearer(&patient(&app, ANN));
    let ben = app.bearer(&patient(&app, BEN));
    let b = ann.get(&slot_search(6)).await.json();
    let slot = b["entry"][0]["resource"].clone();
    let schedule = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Schedule")
        .unwrap()["resource"]
        .clone();
    let location = schedule["actor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reference"].as_str().unwrap().to_owned())
        .find(|r| r.starts_with("Location/"))
        .unwrap();
    let r = ann
        .post("/fhir/Appointment", &booking(ANN, &slot, &location))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appt = r.json();
    let appt_id = appt["id"].as_str().unwrap().to_owned();
    sb.faults(json!({"down": true})).await;
    let mut cancel = appt.clone();
    cancel["status"] = json!("cancelled");
    cancel["cancelationReason"] = json!({"text": "Feeling better"});
    // Ben names Ann: 403 before anything is queued.
    assert_eq!(
        put_if(
            &ben,
            &format!("/fhir/Appointment/{appt_id}"),
            &cancel,
            "W/\"1\""
        )
        .await
        .status,
        403
    );
    // Ben names himself on Ann's appointment: queued, and refused on delivery.
    let mut lie = cancel.clone();
    lie["participant"][0]["actor"]["reference"] = json!(format!("Patient/{BEN}"));
    let r = put_if(
        &ben,
        &format!("/fhir/Appointment/{appt_id}"),
        &lie,
        "W/\"1\"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let ben_task = r.json()["id"].as_str().unwrap().to_owned();
    let r = put_if(
        &ann,
        &format!("/fhir/Appointment/{appt_id}"),
        &cancel,
        "W/\"1\"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let task = r.json();
    assert_eq!(task["resourceType"], "Task");
    assert_eq!(task["businessStatus"]["coding"][0]["code"], "queued");
    assert_eq!(task["focus"]["reference"], format!("Appointment/{appt_id}"));
    assert!(r
        .header("content-location")
        .unwrap()
        .ends_with(&format!("/Task/{}", task["id"].as_str().unwrap())));
    // A queued cancellation cannot be made by hand.
    let mut forged = task.clone();
    forged.as_object_mut().unwrap().remove("id");
    forged.as_object_mut().unwrap().remove("meta");
    assert_eq!(ann.post("/fhir/Task", &forged).await.status, 422);
    sb.faults(json!({"down": false})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = delivery(&app, &ben_task, "refused", deadline).await;
    assert_eq!(refused["status"], "rejected");
    let done = delivery(&app, task["id"].as_str().unwrap(), "delivered", deadline).await;
    assert_eq!(
        done["output"][0]["valueReference"]["reference"],
        format!("Appointment/{appt_id}")
    );
    let now = ann
        .get(&format!("/fhir/Appointment/{appt_id}"))
        .await
        .json();
    assert_eq!(now["status"], "cancelled", "{now}");
    assert_eq!(now["cancelationReason"]["text"], "Feeling better");
}

bridge_tests!(cancellation_queued_while_down);
