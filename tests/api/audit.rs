//! The audit trail (issue 13 point 5): every access leaves an AuditEvent,
//! durable before the response (even across `kill -9`); AuditEvents are
//! read and searched only, within the caller's reach, and never written
//! through the API.

use std::time::Duration;

use serde_json::{json, Value};

use crate::auth_support::{claims, now, required, with, CLIENT_RS, FIXTURE};
use crate::backend_tests;
use crate::helpers::{spawn_server, TestApp};

fn adjust(s: &mut fhirbridge::config::Settings) {
    required(s);
}

backend_tests!(with adjust;
    accesses_are_audited,
    patients_see_only_their_own_events,
    audit_events_cannot_be_altered,
    refusals_and_tokens_are_audited,
);

/// A token from `client` with `scope` (and `changes`).
fn token(scope: &str, client: &str, changes: Value) -> String {
    let mut c = with(claims(scope), json!({"client_id": client}));
    c = with(c, changes);
    FIXTURE.smart_key("RS256").token(&c)
}

fn auditor() -> String {
    token("system/AuditEvent.rs", "audit-app", json!({}))
}

/// The events a search returns (asserting 200).
async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app
        .bearer(&auditor())
        .get(&format!("/fhir/AuditEvent?{query}"))
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

fn code(v: &Value, field: &str) -> String {
    v[field][0]["code"].as_str().unwrap_or_default().to_owned()
}

fn entities(v: &Value) -> Vec<String> {
    v["entity"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["what"]["reference"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn seed(app: &TestApp) {
    let admin = app.admin();
    for p in ["p1", "p2"] {
        let r = admin
            .put(
                &format!("/fhir/Patient/{p}"),
                &json!({"resourceType": "Patient", "id": p}),
            )
            .await;
        assert!(r.status < 300, "{}", r.text());
        let r = admin
            .put(
                &format!("/fhir/Observation/o-{p}"),
                &json!({"resourceType": "Observation", "id": format!("o-{p}"),
                    "status": "final", "code": {"text": "x"},
                    "subject": {"reference": format!("Patient/{p}")}}),
            )
            .await;
        assert!(r.status < 300, "{}", r.text());
    }
}

async fn accesses_are_audited(app: TestApp) {
    seed(&app).await;
    let writes = events(&app, "agent=unknown-none").await;
    assert!(writes.is_empty());
    let clinician = token(
        "user/*.rs",
        "clinic-app",
        json!({"fhirUser": "Practitioner/d1"}),
    );
    let c = app.bearer(&clinician);
    assert_eq!(c.get("/fhir/Patient/p1").await.status, 200);
    assert_eq!(c.get("/fhir/Observation?patient=p1").await.status, 200);
    assert_eq!(c.get("/fhir/Patient/nobody").await.status, 404);
    assert_eq!(c.get("/fhir/Observation/o-p1/_history/1").await.status, 200);

    let got = events(&app, "agent=clinic-app&_sort=date").await;
    assert_eq!(got.len(), 4, "{got:#?}");
    let subtypes: Vec<String> = got.iter().map(|e| code(e, "subtype")).collect();
    assert_eq!(subtypes, ["read", "search-type", "read", "vread"]);
    let outcomes: Vec<&str> = got.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["0", "0", "4", "0"]);
    assert_eq!(entities(&got[0]), ["Patient/p1", "Patient/p1/_history/1"]);
    assert_eq!(
        entities(&got[1]),
        ["Patient/p1", "Observation/o-p1/_history/1"]
    );
    assert!(got[1]["entity"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["query"].is_string()));
    assert_eq!(entities(&got[2]), Vec::<String>::new());
    for e in &got {
        assert_eq!(e["type"]["code"], "rest");
        assert_eq!(e["action"], "R");
        assert_eq!(
            e["agent"][0]["who"]["identifier"]["value"], "clinic-app",
            "{e}"
        );
        assert_eq!(e["agent"][0]["requestor"], true);
        assert_eq!(e["agent"][0]["network"]["address"], "127.0.0.1");
        assert_eq!(e["agent"][1]["who"]["reference"], "Practitioner/d1");
    }
    // The writes were audited too (create/update by the admin).
    let by_patient = events(&app, "patient=p1&subtype=update,create").await;
    assert_eq!(by_patient.len(), 2, "{by_patient:#?}");
    // Reads, searches and `entity`, `date`, `_id` filters.
    let one = events(&app, "entity=Observation/o-p1&subtype=search-type").await;
    assert_eq!(one.len(), 1);
    let bare = events(&app, "entity=o-p1&subtype=search-type").await;
    assert_eq!(bare, one);
    let id = one[0]["id"].as_str().unwrap();
    let r = app
        .bearer(&auditor())
        .get(&format!("/fhir/AuditEvent/{id}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id);
    assert_eq!(events(&app, &format!("_id={id}")).await.len(), 1);
    assert!(events(&app, "date=lt2000-01-01").await.is_empty());
    assert!(!events(&app, "date=ge2000-01-01").await.is_empty());
    // Paging.
    let page = app
        .bearer(&auditor())
        .get("/fhir/AuditEvent?agent=clinic-app&_count=3")
        .await
        .json();
    assert_eq!(page["entry"].as_array().unwrap().len(), 3);
    let next = page["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("next link")["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = &next[next.find("/fhir/").unwrap()..];
    let rest = app.bearer(&auditor()).get(path).await.json();
    assert_eq!(rest["entry"].as_array().unwrap().len(), 1, "{rest}");
    // Unknown parameters are refused.
    let r = app
        .bearer(&auditor())
        .get("/fhir/AuditEvent?address=x")
        .await;
    assert_eq!(r.status, 400);
}

async fn patients_see_only_their_own_events(app: TestApp) {
    seed(&app).await;
    let clinician = token(
        "user/*.rs",
        "clinic-app",
        json!({"fhirUser": "Practitioner/d1"}),
    );
    let r = app.bearer(&clinician).get("/fhir/Observation").await;
    assert_eq!(r.status, 200);
    // One event per patient, each naming only that patient's resources.
    let got = events(&app, "agent=clinic-app").await;
    assert_eq!(got.len(), 2, "{got:#?}");
    for e in &got {
        let refs = entities(e);
        let p = refs[0].clone();
        assert!(p.starts_with("Patient/"), "{refs:?}");
        let pid = &p["Patient/".len()..];
        assert_eq!(refs[1], format!("Observation/o-{pid}/_history/1"));
        assert_eq!(refs.len(), 2);
    }
    let p2_event = events(&app, "agent=clinic-app&patient=p2").await;
    assert_eq!(p2_event.len(), 1);
    let p2_id = p2_event[0]["id"].as_str().unwrap().to_owned();

    let mine = token("patient/AuditEvent.rs", "nhs-app", json!({"patient": "p1"}));
    let r = app.bearer(&mine).get("/fhir/AuditEvent").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(!text.contains("p2"), "{text}");
    let seen: Vec<Value> = r.json()["entry"].as_array().cloned().unwrap_or_default();
    // The patient's and the observation's writes, and the clinician's search.
    assert_eq!(seen.len(), 3, "{text}");
    for e in &seen {
        assert_eq!(entities(&e["resource"])[0], "Patient/p1");
    }
    assert!(seen
        .iter()
        .any(|e| e["resource"]["agent"][0]["who"]["identifier"]["value"] == "clinic-app"));
    let r = app
        .bearer(&mine)
        .get(&format!("/fhir/AuditEvent/{p2_id}"))
        .await;
    assert_eq!(r.status, 404);
    // Naming the other patient finds nothing.
    let r = app.bearer(&mine).get("/fhir/AuditEvent?patient=p2").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["entry"].is_null());
}

async fn audit_events_cannot_be_altered(app: TestApp) {
    seed(&app).await;
    let any = events(&app, "patient=p1").await;
    let id = any[0]["id"].as_str().unwrap().to_owned();
    let admin = app.admin();
    let body = json!({"resourceType": "AuditEvent", "id": id,
        "type": {"code": "rest"}, "recorded": "2020-01-01T00:00:00Z",
        "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}});
    assert_eq!(admin.post("/fhir/AuditEvent", &body).await.status, 405);
    assert_eq!(
        admin
            .put(&format!("/fhir/AuditEvent/{id}"), &body)
            .await
            .status,
        405
    );
    assert_eq!(
        admin
            .patch(&format!("/fhir/AuditEvent/{id}"), &json!([]))
            .await
            .status,
        405
    );
    assert_eq!(
        admin.delete(&format!("/fhir/AuditEvent/{id}")).await.status,
        405
    );
    assert_eq!(admin.put("/fhir/AuditEvent?_id=x", &body).await.status, 405);
    assert_eq!(admin.delete("/fhir/AuditEvent?_id=x").await.status, 405);
    assert_eq!(admin.get("/fhir/AuditEvent/_history").await.status, 405);
    assert_eq!(
        admin
            .get(&format!("/fhir/AuditEvent/{id}/_history"))
            .await
            .status,
        405
    );
    let reader = app.bearer(&auditor());
    assert_eq!(reader.post("/fhir/AuditEvent", &body).await.status, 405);
    assert_eq!(
        reader
            .delete(&format!("/fhir/AuditEvent/{id}"))
            .await
            .status,
        405
    );
    for kind in ["transaction", "batch"] {
        let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
            {"resource": body, "request": {"method": "POST", "url": "AuditEvent"}}]});
        let r = admin.post("/fhir", &bundle).await;
        let text = r.text();
        // Refused by scope (no wildcard reaches AuditEvent) or as unsupported.
        if kind == "transaction" {
            assert!(matches!(r.status, 403 | 405), "{text}");
        } else {
            assert!(text.contains("403") || text.contains("405"), "{text}");
        }
    }
    // The event is unchanged and there is still exactly one with its id.
    let after = events(&app, &format!("_id={id}")).await;
    assert_eq!(after, vec![any[0].clone()]);
    // Wildcards do not reach AuditEvent; a grant naming it does.
    let wide = token("system/*.rs", "wide-app", json!({}));
    assert_eq!(app.bearer(&wide).get("/fhir/AuditEvent").await.status, 403);
    assert_eq!(app.admin().get("/fhir/AuditEvent").await.status, 403);
    assert_eq!(
        app.bearer(&auditor()).get("/fhir/AuditEvent").await.status,
        200
    );
}

async fn refusals_and_tokens_are_audited(app: TestApp) {
    // 401: no token.
    assert_eq!(app.get("/fhir/Patient/p1").await.status, 401);
    // 403: a scope that does not cover the type.
    let narrow = token("system/Patient.rs", "narrow-app", json!({}));
    assert_eq!(
        app.bearer(&narrow).get("/fhir/Observation").await.status,
        403
    );
    let refused = events(&app, "outcome=4&type=rest").await;
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused
        .iter()
        .any(|e| e["agent"][0]["who"]["identifier"]["value"] == "narrow-app"));

    // Token issuance: one refused (bad assertion) and one issued.
    let post = |body: String| {
        let app = &app;
        async move {
            app.request(
                "POST",
                "/auth/token",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                Some(body.into_bytes()),
            )
            .await
        }
    };
    let form = |assertion: &str| {
        serde_urlencoded::to_string([
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", "system/Patient.rs"),
        ])
        .unwrap()
    };
    let bad = FIXTURE
        .stranger
        .token(&json!({"iss": CLIENT_RS, "sub": CLIENT_RS,
        "aud": format!("{}/auth/token", app.base), "exp": now() + 60,
        "jti": uuid::Uuid::new_v4().to_string()}));
    let r = post(form(&bad)).await;
    assert!(r.status >= 400, "{}", r.text());
    let good = FIXTURE
        .client_rs
        .token(&json!({"iss": CLIENT_RS, "sub": CLIENT_RS,
        "aud": format!("{}/auth/token", app.base), "exp": now() + 60,
        "jti": uuid::Uuid::new_v4().to_string()}));
    let r = post(form(&good)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let logins = events(&app, "type=110114&_sort=date").await;
    assert_eq!(logins.len(), 2, "{logins:#?}");
    for (e, outcome) in logins.iter().zip(["4", "0"]) {
        assert_eq!(e["outcome"], outcome);
        assert_eq!(code(e, "subtype"), "110122");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], CLIENT_RS);
    }
}

/// M acknowledged reads, `kill -9`, restart: all M events are there.
#[actix_rt::test]
async fn acknowledged_accesses_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    let mut server = spawn_server(&db, None, Duration::from_secs(60)).await;
    let app = TestApp::attach(port_of(&server.base));
    let r = app
        .put(
            "/fhir/Patient/k9",
            &json!({"resourceType": "Patient", "id": "k9"}),
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    const M: usize = 60;
    let reads = (0..M).map(|_| app.get("/fhir/Patient/k9"));
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.status, 200);
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(server);
    let server = spawn_server(&db, None, Duration::from_secs(60)).await;
    let app = TestApp::attach(port_of(&server.base));
    let r = app
        .get("/fhir/AuditEvent?patient=k9&subtype=read&_count=1000")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json()["entry"].as_array().map_or(0, Vec::len);
    assert_eq!(n, M);
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}
