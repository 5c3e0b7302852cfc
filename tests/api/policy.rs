//! The policy chokepoint: under a test policy that hides one Patient and one
//! Observation, neither is visible on any path that returns resources (read,
//! vread, search matches and totals, counts, `_include`, `_revinclude`,
//! compartments, history at all three levels and its totals, batch and
//! transaction GET entries, conditional-write matches, `$validate`), and
//! "hidden" answers exactly as "absent" does.

use std::sync::Arc;

use fhirbridge::model::{LogicalId, ResourceType};
use fhirbridge::policy::DenyResources;
use serde_json::{json, Value};

use crate::helpers::{entry_ids, TestApp};

fn policy() -> Arc<DenyResources> {
    let id = |s: &str| LogicalId::parse(s).expect("id");
    Arc::new(DenyResources::new([
        (ResourceType::Patient, id("hidden")),
        (ResourceType::Observation, id("obs-hidden")),
    ]))
}

fn patient(id: &str, nhs: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
           "identifier": [{"system": "urn:test:policy", "value": nhs}],
           "name": [{"family": "Policyfamily"}]})
}

fn observation(id: &str, subject: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"reference": subject}})
}

fn issues(v: &Value) -> Value {
    v["issue"].clone()
}

async fn seed(app: &TestApp) {
    for (path, body) in [
        ("/fhir/Patient/hidden", patient("hidden", "111")),
        ("/fhir/Patient/shown", patient("shown", "222")),
        ("/fhir/Patient/hidden", {
            let mut p = patient("hidden", "111");
            p["gender"] = json!("female");
            p
        }),
        (
            "/fhir/Observation/obs-of-hidden",
            observation("obs-of-hidden", "Patient/hidden"),
        ),
        (
            "/fhir/Observation/obs-shown",
            observation("obs-shown", "Patient/shown"),
        ),
        (
            "/fhir/Observation/obs-hidden",
            observation("obs-hidden", "Patient/shown"),
        ),
    ] {
        let r = app.put(path, &body).await;
        assert!(r.status == 200 || r.status == 201, "{path}: {}", r.text());
    }
}

async fn hidden_resources_are_absent_everywhere(app: TestApp) {
    seed(&app).await;

    // read / vread: the same answer as for an id that never existed.
    let hidden = app.get("/fhir/Patient/hidden").await;
    let absent = app.get("/fhir/Patient/never").await;
    assert_eq!(hidden.status, 404);
    assert_eq!(issues(&hidden.json()), issues(&absent.json()));
    let hv = app.get("/fhir/Patient/hidden/_history/1").await;
    assert_eq!(hv.status, 404, "{}", hv.text());
    assert_eq!(app.get("/fhir/Patient/shown").await.status, 200);
    assert_eq!(app.get("/fhir/Observation/obs-hidden").await.status, 404);

    // Search matches, totals and counts.
    let s = app.get("/fhir/Patient?family=Policyfamily").await.json();
    assert_eq!(entry_ids(&s), vec!["Patient/shown"]);
    assert_eq!(s["total"], 1);
    assert_eq!(
        app.total("/fhir/Patient?family=Policyfamily&_summary=count")
            .await,
        1
    );
    assert_eq!(
        app.total("/fhir/Patient?identifier=urn:test:policy|111")
            .await,
        0
    );
    assert_eq!(
        app.total("/fhir/Observation?subject=Patient/shown").await,
        1
    );
    assert_eq!(
        app.total("/fhir/Observation?code=http://loinc.org|8867-4&_summary=count")
            .await,
        2
    );

    // _include / _revinclude are computed under the same restriction.
    let s = app
        .get("/fhir/Observation?code=http://loinc.org|8867-4&_include=Observation:subject")
        .await
        .json();
    assert_eq!(
        entry_ids(&s),
        vec![
            "Observation/obs-of-hidden",
            "Observation/obs-shown",
            "Patient/shown"
        ]
    );
    let s = app
        .get("/fhir/Patient?family=Policyfamily&_revinclude=Observation:subject")
        .await
        .json();
    assert_eq!(
        entry_ids(&s),
        vec!["Observation/obs-shown", "Patient/shown"]
    );

    // Compartment search.
    let s = app.get("/fhir/Patient/shown/Observation").await.json();
    assert_eq!(entry_ids(&s), vec!["Observation/obs-shown"]);

    // History: instance (as absent), type and system, with their totals.
    let h = app.get("/fhir/Patient/hidden/_history").await;
    assert_eq!(h.status, 404);
    let h = app.get("/fhir/Patient/_history").await.json();
    assert_eq!(h["total"], 1);
    assert_eq!(entry_ids(&h), vec!["Patient/shown"]);
    let h = app.get("/fhir/_history").await.json();
    assert_eq!(h["total"], 3, "{h}");
    assert!(!h.to_string().contains("\"hidden\""), "{h}");
    assert!(!h.to_string().contains("obs-hidden"), "{h}");

    // Batch and transaction GET entries.
    for kind in ["batch", "transaction"] {
        let b = json!({"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": "GET", "url": "Patient/hidden"}},
            {"request": {"method": "GET", "url": "Patient?family=Policyfamily"}},
        ]});
        let r = app.post("/fhir", &b).await;
        if kind == "transaction" {
            // The read of a hidden resource fails the transaction as an absent one would.
            assert_eq!(r.status, 404, "{}", r.text());
            let b = json!({"resourceType": "Bundle", "type": kind, "entry": [
                {"request": {"method": "GET", "url": "Patient?family=Policyfamily"}},
            ]});
            let r = app.post("/fhir", &b).await.json();
            let nested = &r["entry"][0]["resource"];
            assert_eq!(nested["total"], 1);
            assert_eq!(entry_ids(nested), vec!["Patient/shown"]);
        } else {
            let r = r.json();
            assert!(r["entry"][0]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("404"));
            assert_eq!(entry_ids(&r["entry"][1]["resource"]), vec!["Patient/shown"]);
        }
    }

    // $validate on an instance.
    assert_eq!(app.get("/fhir/Patient/hidden/$validate").await.status, 404);

    // Conditional writes do not match what the caller cannot see: a
    // conditional create on the hidden Patient's NHS number creates, and a
    // conditional delete selecting only it deletes nothing.
    let r = app
        .request(
            "POST",
            "/fhir/Patient",
            &[
                ("Content-Type", "application/fhir+json"),
                ("If-None-Exist", "identifier=urn:test:policy|111"),
            ],
            Some(patient("x", "111").to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = app.delete("/fhir/Patient?_id=hidden").await;
    assert!(r.status == 204 || r.status == 200, "{}", r.text());
    // (It is still there: the version count of the system history is unchanged
    // for visible resources and the hidden one was not deleted.)
    assert_eq!(app.get("/fhir/Patient/hidden").await.status, 404);
}

macro_rules! policy_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_rt::test]
                async fn sqlite() {
                    super::$name(crate::helpers::TestApp::sqlite_with_policy(super::policy()).await).await
                }
                #[actix_rt::test]
                async fn postgres() {
                    if let Some(app) = crate::helpers::TestApp::postgres_with_policy(super::policy()).await {
                        super::$name(app).await
                    }
                }
            }
        )*
    };
}

policy_tests!(hidden_resources_are_absent_everywhere);
