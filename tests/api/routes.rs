//! The route walk (issue 12 "Tests"): every route the router declares
//! (`fhirbridge::rest::routes()`), with every method, is called with no
//! token (401 unless public), with a token whose only scope is `openid`
//! (never 2xx; 403 wherever the all-powerful token succeeds), and with a
//! `system/*.cruds` token (never the server's "no authorisation decision"
//! refusal, never a 5xx). A route added without an access check fails here.

use serde_json::{json, Value};

use crate::auth_support::*;
use crate::helpers::{nhs_number, Resp, TestApp};

const NO_DECISION: &str = "no authorisation decision";

fn resource(ty: &str, id: Option<&str>, n: usize) -> Value {
    let mut v = match ty {
        "Patient" => json!({"resourceType": "Patient",
            "identifier": [{"system": NHS_SYSTEM, "value": nhs_number(500 + n as u32)}],
            "name": [{"family": "Walker"}]}),
        "MedicationRequest" => json!({"resourceType": "MedicationRequest", "status": "active",
            "intent": "order", "subject": {"reference": "Patient/walk-p"},
            "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "322236009"}]}}),
        "Observation" => json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/walk-p"}}),
        other => panic!("no walk body for {other}"),
    };
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

/// `pattern` with its placeholders filled, and the request body for `method`.
struct Call {
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
}

fn call(pattern: &str, method: &str, ty: &str, id: &str, n: usize) -> Call {
    let mut path = pattern
        .replace("{type}", ty)
        .replace("{id}", id)
        .replace("{vid}", "1")
        .replace("{target}", "Observation");
    let json_body = |v: Value| Some(v.to_string().into_bytes());
    let (content_type, body) = match (pattern, method) {
        (_, "GET") => (None, None),
        ("/auth/token", "POST") => (
            Some("application/x-www-form-urlencoded"),
            Some(b"grant_type=client_credentials".to_vec()),
        ),
        ("/fhir", "POST") => (
            Some("application/fhir+json"),
            json_body(
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"request": {"method": "POST", "url": "MedicationRequest"},
                 "resource": resource("MedicationRequest", None, n)}]}),
            ),
        ),
        ("/fhir/{type}/_search", "POST") => (
            Some("application/x-www-form-urlencoded"),
            Some(format!("_id={id}").into_bytes()),
        ),
        (_, "PATCH") => (
            Some("application/json-patch+json"),
            json_body(json!([{"op": "add", "path": "/language", "value": "en"}])),
        ),
        ("/fhir/{type}", "PUT") | ("/fhir/{type}", "DELETE") => {
            path.push_str(&format!("?identifier=urn:walk|none-{n}"));
            let body = (method == "PUT").then(|| resource(ty, None, n).to_string().into_bytes());
            (body.as_ref().map(|_| "application/fhir+json"), body)
        }
        (p, "PUT") if p.ends_with("{id}") => (
            Some("application/fhir+json"),
            json_body(resource(ty, Some(id), n)),
        ),
        (_, "DELETE") => (None, None),
        _ => (
            Some("application/fhir+json"),
            json_body(resource(
                if ty.is_empty() {
                    "MedicationRequest"
                } else {
                    ty
                },
                None,
                n,
            )),
        ),
    };
    Call {
        path,
        content_type,
        body,
    }
}

async fn send(app: &TestApp, method: &str, c: &Call, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if let Some(ct) = c.content_type {
        headers.push(("Content-Type", ct));
    }
    app.request(method, &c.path, &headers, c.body.clone()).await
}

#[actix_rt::test]
async fn every_guarded_route_takes_an_authorisation_decision() {
    let routes = fhirbridge::rest::routes();
    assert!(!routes.is_empty(), "the router lists no routes");
    let listed: Vec<(&str, &str, bool)> = routes
        .iter()
        .flat_map(|r| r.methods.iter().map(move |m| (r.path, *m, r.public)))
        .collect();
    // The known routes are listed, with the right public flag (so the walk
    // cannot pass over an empty or partial table).
    for (path, method, public) in [
        ("/", "GET", true),
        ("/health/live", "GET", true),
        ("/health/ready", "GET", true),
        ("/metrics", "GET", true),
        ("/fhir/metadata", "GET", true),
        ("/fhir/.well-known/smart-configuration", "GET", true),
        ("/auth/token", "POST", true),
        ("/auth/jwks", "GET", true),
        ("/fhir", "POST", false),
        ("/fhir/_history", "GET", false),
        ("/fhir/{type}", "GET", false),
        ("/fhir/{type}", "POST", false),
        ("/fhir/{type}", "PUT", false),
        ("/fhir/{type}", "DELETE", false),
        ("/fhir/{type}/_search", "POST", false),
        ("/fhir/{type}/_history", "GET", false),
        ("/fhir/{type}/$validate", "POST", false),
        ("/fhir/{type}/{id}", "GET", false),
        ("/fhir/{type}/{id}", "PUT", false),
        ("/fhir/{type}/{id}", "PATCH", false),
        ("/fhir/{type}/{id}", "DELETE", false),
        ("/fhir/{type}/{id}/_history", "GET", false),
        ("/fhir/{type}/{id}/_history/{vid}", "GET", false),
        ("/fhir/{type}/{id}/$validate", "GET", false),
        ("/fhir/{type}/{id}/{target}", "GET", false),
    ] {
        assert!(
            listed.contains(&(path, method, public)),
            "{method} {path} (public: {public}) is not in rest::routes(): {listed:?}"
        );
    }
    // Nothing else is public.
    let public_listed = listed.iter().filter(|(_, _, p)| *p).count();
    assert_eq!(public_listed, 8, "public routes: {listed:?}");

    let app = TestApp::sqlite_with(required).await;
    let admin = app.admin();
    let mut p = resource("Patient", Some("walk-p"), 0);
    p["id"] = json!("walk-p");
    admin.upsert(&p).await;
    admin
        .upsert(&resource("MedicationRequest", Some("walk-mr"), 0))
        .await;
    admin
        .upsert(&resource("Observation", Some("walk-obs"), 0))
        .await;
    let system = FIXTURE.system_token();
    let openid = FIXTURE.token("openid profile", json!({}));
    let mut walked = 0;
    let mut n = 0;
    for r in &routes {
        let types: &[(&str, &str)] = if r.path.contains("{target}") {
            &[("Patient", "walk-p")]
        } else if r.path.contains("{type}") {
            &[("MedicationRequest", "walk-mr"), ("Patient", "walk-p")]
        } else {
            &[("", "")]
        };
        for method in &r.methods {
            for (ty, id) in types {
                n += 1;
                let what = format!("{method} {} ({ty})", r.path);
                let mut id = id.to_string();
                if *method == "DELETE" && r.path.ends_with("{id}") {
                    // A throwaway, so later calls still find their resource.
                    id = format!("walk-del-{n}");
                    admin.upsert(&resource(ty, Some(&id), n)).await;
                }
                let c = call(r.path, method, ty, &id, n);
                let anon = send(&app, method, &c, None).await;
                if r.public {
                    // Not the gate's challenge (the token endpoint may answer
                    // an RFC 6749 401 invalid_client of its own).
                    let challenged = anon
                        .header("WWW-Authenticate")
                        .is_some_and(|w| w.starts_with(CHALLENGE));
                    assert!(
                        !challenged && anon.status < 500,
                        "{what} is public: {} {}",
                        anon.status,
                        anon.text()
                    );
                    continue;
                }
                walked += 1;
                assert_no_token(&anon, &format!("anonymous {what}"));
                let weak = send(&app, method, &c, Some(&openid)).await;
                let strong = send(&app, method, &c, Some(&system)).await;
                assert!(
                    !(200..300).contains(&weak.status),
                    "{what} with only openid: {} {}",
                    weak.status,
                    weak.text()
                );
                assert!(
                    weak.status < 500,
                    "{what} with only openid: {}",
                    weak.text()
                );
                if (200..300).contains(&strong.status) {
                    assert_eq!(weak.status, 403, "{what} with only openid: {}", weak.text());
                }
                assert!(
                    strong.status < 500,
                    "{what} with system/*.cruds: {} {}",
                    strong.status,
                    strong.text()
                );
                assert!(
                    !(strong.status == 403 && strong.text().contains(NO_DECISION)),
                    "{what} took no authorisation decision: {}",
                    strong.text()
                );
            }
        }
    }
    assert!(walked >= 30, "only {walked} guarded calls walked");
}
