//! Race-freedom under concurrent writes.

use futures_util::future::join_all;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{nhs_number, patient, TestApp};

backend_tests!(
    concurrent_conditional_creates_make_one_resource,
    concurrent_updates_serialise_versions,
    mixed_conditional_writes_on_one_selection_make_one_resource,
);

async fn concurrent_conditional_creates_make_one_resource(app: TestApp) {
    let body = patient("9000000246", "Race");
    let condition = "identifier=https://fhir.nhs.uk/Id/nhs-number|9000000246";
    let headers = [("If-None-Exist", condition)];
    let requests = (0..30).map(|_| app.send_json("POST", "/fhir/Patient", &body, &headers));
    let responses = join_all(requests).await;
    let created = responses.iter().filter(|r| r.status == 201).count();
    let existing = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        created,
        1,
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(existing, 29);
    let ids: std::collections::BTreeSet<String> = responses
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "every response names the same resource");
    let b = app
        .get("/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9000000246")
        .await
        .json();
    assert_eq!(b["total"], 1);
    // Two matches make the condition ambiguous: 412.
    app.create(&body).await;
    let r = app
        .send_json(
            "POST",
            "/fhir/Patient",
            &body,
            &[("If-None-Exist", condition)],
        )
        .await;
    assert_eq!(r.status, 412);
    let r = app
        .send_json(
            "POST",
            "/fhir/Patient",
            &body,
            &[("If-None-Exist", "bogus=1")],
        )
        .await;
    assert_eq!(r.status, 400);
}

async fn concurrent_updates_serialise_versions(app: TestApp) {
    let app = &app;
    let requests = (0..20).map(|i| {
        let mut body = patient("9000000254", &format!("Name{i}"));
        body["id"] = json!("shared-id");
        async move { app.put("/fhir/Patient/shared-id", &body).await }
    });
    let responses = join_all(requests).await;
    assert!(
        responses.iter().all(|r| r.status == 200 || r.status == 201),
        "{:?}",
        responses
            .iter()
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>()
    );
    assert_eq!(responses.iter().filter(|r| r.status == 201).count(), 1);
    let mut versions: Vec<i64> = responses
        .iter()
        .map(|r| {
            r.json()["meta"]["versionId"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    assert_eq!(
        app.get("/fhir/Patient/shared-id/_history").await.json()["total"],
        20
    );
}

/// Conditional create, conditional update and a transaction's `ifNoneExist` on
/// the same criteria (written in different orders and forms) lock one key: 20
/// mixed concurrent requests per NHS number leave exactly one Patient, 5 times.
async fn mixed_conditional_writes_on_one_selection_make_one_resource(app: TestApp) {
    let app = &app;
    for trial in 0..5u32 {
        let nhs = nhs_number(700 + trial);
        let family = format!("Mixedrace{trial}");
        let sys = "https://fhir.nhs.uk/Id/nhs-number";
        // Same selection, different spellings (order of AND-ed parameters, OR order).
        let crit_a = format!("identifier={sys}|{nhs}&family={family}");
        let crit_b = format!("family={family}&identifier={sys}|{nhs}");
        let requests = (0..20u32).map(|i| {
            let body = patient(&nhs, &family);
            let crit = if i % 2 == 0 {
                crit_a.clone()
            } else {
                crit_b.clone()
            };
            async move {
                match i % 3 {
                    0 => {
                        app.send_json("POST", "/fhir/Patient", &body, &[("If-None-Exist", &crit)])
                            .await
                    }
                    1 => app.put(&format!("/fhir/Patient?{crit}"), &body).await,
                    _ => {
                        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
                            "fullUrl": "urn:uuid:4a1c2b3d-0000-4000-8000-000000000001",
                            "resource": body,
                            "request": {"method": "POST", "url": "Patient", "ifNoneExist": crit}
                        }]});
                        app.post("/fhir", &tx).await
                    }
                }
            }
        });
        let responses = join_all(requests).await;
        for r in &responses {
            assert!(
                matches!(r.status, 200 | 201),
                "trial {trial}: {} {}",
                r.status,
                r.text()
            );
        }
        let found = app
            .get(&format!("/fhir/Patient?identifier={sys}%7C{nhs}"))
            .await
            .json();
        assert_eq!(found["total"], 1, "trial {trial}: {found}");
    }
}
