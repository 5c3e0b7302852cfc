//! Race-freedom under concurrent writes.

use futures_util::future::join_all;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{patient, TestApp};

backend_tests!(
    concurrent_conditional_creates_make_one_resource,
    concurrent_updates_serialise_versions
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
