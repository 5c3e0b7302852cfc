//! Operational endpoints and the CapabilityStatement.

use crate::backend_tests;
use crate::helpers::{patient, TestApp};

backend_tests!(
    health_endpoints,
    metrics_count_requests,
    capability_statement_is_honest
);

async fn health_endpoints(app: TestApp) {
    let live = app.get("/health/live").await;
    assert_eq!(live.status, 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["checks"]["database"], "pass");
}

async fn metrics_count_requests(app: TestApp) {
    let p = app.create(&patient("9000000262", "Metric")).await;
    app.get(&format!("/fhir/Patient/{}", p["id"].as_str().unwrap()))
        .await;
    app.get("/fhir/Patient/missing").await;
    let m = app.get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(text.contains(r#"fhirbridge_http_requests_total{interaction="create",resource_type="Patient",status_class="2xx"} 1"#), "{text}");
    assert!(text.contains(r#"fhirbridge_http_requests_total{interaction="read",resource_type="Patient",status_class="2xx"} 1"#));
    assert!(text.contains(r#"interaction="read",resource_type="Patient",status_class="4xx"} 1"#));
    assert!(text.contains("fhirbridge_http_request_duration_seconds_bucket"));
    assert!(text.contains(&format!(
        r#"fhirbridge_db_pool_connections{{backend="{}",state="idle"}}"#,
        app.backend
    )));
    assert!(!text.contains("9000000262"), "no patient data in metrics");
}

async fn capability_statement_is_honest(app: TestApp) {
    let r = app.get("/fhir/metadata").await;
    assert_eq!(r.status, 200);
    let cs = r.json();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    let types: Vec<&str> = resources
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    for t in [
        "Observation",
        "Patient",
        "Appointment",
        "MedicationRequest",
        "Consent",
        "Slot",
        "Schedule",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Medication",
    ] {
        assert!(types.contains(&t), "{t} missing");
    }
    assert_eq!(types.len(), 146, "every concrete R4 resource type");
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let interactions: Vec<&str> = patient["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(interactions.contains(&"patch"));
    assert_eq!(patient["conditionalCreate"], true);
    assert_eq!(patient["conditionalUpdate"], true);
    assert_eq!(patient["conditionalDelete"], "multiple");
    let system: Vec<&str> = cs["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(system.contains(&"transaction") && system.contains(&"batch"));
    // Every advertised search parameter is accepted by the server, on every type.
    for res in resources {
        let ty = res["type"].as_str().unwrap();
        for p in res["searchParam"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let sample = |kind: &str| match kind {
                "date" => "2024-01-01",
                "number" | "quantity" => "1",
                "uri" => "http://x.org/y",
                _ => "x",
            };
            let value = match p["type"].as_str().unwrap() {
                // One value per component, joined by '$'.
                "composite" => {
                    let t: fhirbridge::model::ResourceType = ty.parse().unwrap();
                    let def = fhirbridge::search::registry::lookup(t, name).unwrap();
                    assert!(def.components.len() >= 2, "{ty}?{name}");
                    def.components
                        .iter()
                        .map(|c| sample(c.kind.code()))
                        .collect::<Vec<_>>()
                        .join("$")
                }
                kind => sample(kind).to_owned(),
            };
            let r = app.get(&format!("/fhir/{ty}?{name}={value}")).await;
            assert_eq!(r.status, 200, "{ty}?{name}: {}", r.text());
        }
    }
    // The structural validator accepts our own CapabilityStatement.
    let issues = fhir_structure::check::check_resource(&cs);
    assert!(issues.iter().all(|i| !i.severity.is_error()), "{issues:?}");
    // XML too.
    let x = app.get("/fhir/metadata?_format=xml").await;
    assert!(
        x.text().starts_with("<CapabilityStatement") || x.text().contains("<CapabilityStatement")
    );
}
