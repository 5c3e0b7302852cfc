//! History at instance, type and system level, with `_since`, `_count` and paging.

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{nhs_number, patient, TestApp};

backend_tests!(
    instance_type_and_system_history,
    history_since_and_paging,
    history_rejects_unknown_params
);

async fn instance_type_and_system_history(app: TestApp) {
    let mut v = app.create(&patient("9000000238", "Hist")).await;
    let id = v["id"].as_str().unwrap().to_owned();
    v["gender"] = json!("male");
    assert_eq!(
        app.put(&format!("/fhir/Patient/{id}"), &v).await.status,
        200
    );
    assert_eq!(app.delete(&format!("/fhir/Patient/{id}")).await.status, 204);
    app.create(&json!({"resourceType": "Location", "name": "Room"}))
        .await;

    let h = app.get(&format!("/fhir/Patient/{id}/_history")).await;
    assert_eq!(h.status, 200);
    let b = h.json();
    assert_eq!(b["type"], "history");
    assert_eq!(b["total"], 3);
    let entries = b["entry"].as_array().unwrap();
    // Newest first.
    assert_eq!(entries[0]["request"]["method"], "DELETE");
    assert!(entries[0].get("resource").is_none());
    assert_eq!(entries[0]["response"]["etag"], "W/\"3\"");
    assert_eq!(entries[1]["request"]["method"], "PUT");
    assert_eq!(entries[1]["resource"]["meta"]["versionId"], "2");
    assert_eq!(entries[2]["request"]["method"], "POST");
    assert_eq!(entries[2]["response"]["status"], "201 Created");

    assert_eq!(app.get("/fhir/Patient/_history").await.json()["total"], 3);
    assert_eq!(app.get("/fhir/Location/_history").await.json()["total"], 1);
    assert_eq!(app.get("/fhir/_history").await.json()["total"], 4);
    assert_eq!(app.get("/fhir/Patient/unknown/_history").await.status, 404);
}

async fn history_since_and_paging(app: TestApp) {
    for i in 0..7 {
        app.create(&patient(&nhs_number(i), "Page")).await;
    }
    let all = app.get("/fhir/_history").await.json();
    let entries = all["entry"].as_array().unwrap();
    let third_newest = entries[2]["response"]["lastModified"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = app
        .get(&format!(
            "/fhir/_history?_since={}",
            third_newest.replace(':', "%3A").replace('+', "%2B")
        ))
        .await;
    assert_eq!(since.status, 200, "{}", since.text());
    let n = since.json()["total"].as_i64().unwrap();
    assert!((3..=7).contains(&n), "{n}");
    assert_eq!(
        app.get("/fhir/_history?_since=2100-01-01T00:00:00Z")
            .await
            .json()["total"],
        0
    );

    let mut url = "/fhir/Patient/_history?_count=3".to_owned();
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let b = app.get(&url).await.json();
        seen += b["entry"].as_array().map(|e| e.len()).unwrap_or(0);
        pages += 1;
        match b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => {
                let full = l["url"].as_str().unwrap();
                url = full[full.find("/fhir/").unwrap()..].to_owned();
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!((seen, pages), (7, 3));
}

async fn history_rejects_unknown_params(app: TestApp) {
    assert_eq!(app.get("/fhir/_history?_at=2020").await.status, 400);
    assert_eq!(app.get("/fhir/_history?_since=notadate").await.status, 400);
    assert_eq!(
        app.get("/fhir/_history?_since=2020-01-01").await.status,
        400,
        "_since needs an instant"
    );
    assert_eq!(
        app.get_with("/fhir/_history?_at=2020", &[("Prefer", "handling=lenient")])
            .await
            .status,
        200
    );
}
