//! Basic search: parameters, AND/OR, paging, strict and lenient handling.

use serde_json::{json, Value};

use crate::backend_tests;
use crate::helpers::{nhs_number, patient, TestApp};

backend_tests!(
    identifier_search_by_system_and_value,
    id_and_last_updated,
    references_status_and_dates,
    paging_with_next_links_visits_everything_once,
    unknown_parameters_are_rejected_unless_lenient,
    post_search_with_form_body,
    summary_count_and_total_none,
);

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == "match")
                .map(|x| x["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn identifier_search_by_system_and_value(app: TestApp) {
    let a = app.create(&patient("9000000157", "A")).await;
    let mut other = patient("9000000157", "B");
    other["identifier"][0]["system"] = json!("urn:other");
    app.create(&other).await;
    let sys = "https://fhir.nhs.uk/Id/nhs-number";
    let r = app
        .get(&format!("/fhir/Patient?identifier={sys}%7C9000000157"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "searchset");
    assert_eq!(b["total"], 1);
    assert_eq!(ids(&b), vec![a["id"].as_str().unwrap().to_owned()]);
    assert!(b["entry"][0]["fullUrl"]
        .as_str()
        .unwrap()
        .ends_with(a["id"].as_str().unwrap()));
    assert!(b["link"][0]["url"]
        .as_str()
        .unwrap()
        .contains("identifier="));
    // Value only: any system.
    assert_eq!(
        app.get("/fhir/Patient?identifier=9000000157").await.json()["total"],
        2
    );
    // System only.
    assert_eq!(
        app.get("/fhir/Patient?identifier=urn:other%7C")
            .await
            .json()["total"],
        1
    );
    // No system.
    assert_eq!(
        app.get("/fhir/Patient?identifier=%7C9000000157")
            .await
            .json()["total"],
        0
    );
    // OR.
    let r = app
        .get(&format!(
            "/fhir/Patient?identifier={sys}%7C9000000157,urn:other%7C9000000157"
        ))
        .await;
    assert_eq!(r.json()["total"], 2);
    assert_eq!(
        app.get("/fhir/Patient?identifier=nope").await.json()["total"],
        0
    );
}

async fn id_and_last_updated(app: TestApp) {
    let a = app.create(&patient("9000000165", "A")).await;
    let b = app.create(&patient("9000000173", "B")).await;
    let (ia, ib) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    assert_eq!(
        app.get(&format!("/fhir/Patient?_id={ia}")).await.json()["total"],
        1
    );
    assert_eq!(
        app.get(&format!("/fhir/Patient?_id={ia},{ib}"))
            .await
            .json()["total"],
        2
    );
    assert_eq!(
        app.get(&format!("/fhir/Patient?_id={ia}&_id={ib}"))
            .await
            .json()["total"],
        0,
        "repeats are AND"
    );
    assert_eq!(
        app.get("/fhir/Patient?_lastUpdated=gt2000-01-01")
            .await
            .json()["total"],
        2
    );
    assert_eq!(
        app.get("/fhir/Patient?_lastUpdated=lt2000-01-01")
            .await
            .json()["total"],
        0
    );
    let lu = b["meta"]["lastUpdated"].as_str().unwrap();
    let r = app
        .get(&format!(
            "/fhir/Patient?_lastUpdated=ge{}",
            lu.replace(':', "%3A")
        ))
        .await
        .json();
    assert!(ids(&r).contains(&ib.to_owned()), "{r}");
    assert_eq!(
        app.get("/fhir/Patient?_lastUpdated=2020-02-30")
            .await
            .status,
        400
    );
}

async fn references_status_and_dates(app: TestApp) {
    let p = app.create(&patient("9000000181", "Ref")).await;
    let pid = p["id"].as_str().unwrap();
    for (status, day) in [
        ("active", "2024-03-01"),
        ("completed", "2024-04-15"),
        ("active", "2025-01-01"),
    ] {
        app.create(&json!({
            "resourceType": "MedicationRequest", "status": status, "intent": "order",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": format!("Patient/{pid}")}, "authoredOn": day
        }))
        .await;
    }
    app.create(
        &json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "y"}, "subject": {"reference": "Patient/other"}}),
    )
    .await;
    assert_eq!(
        app.total(&format!("/fhir/MedicationRequest?patient={pid}"))
            .await,
        3
    );
    assert_eq!(
        app.total(&format!("/fhir/MedicationRequest?patient=Patient/{pid}"))
            .await,
        3
    );
    assert_eq!(
        app.total(&format!(
            "/fhir/MedicationRequest?subject={pid}&status=active"
        ))
        .await,
        2
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?status=active,completed")
            .await,
        4
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?authoredon=2024").await,
        2
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?authoredon=ge2024-04-01")
            .await,
        2
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?authoredon=lt2024-04-01")
            .await,
        1
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?authoredon=ge2024-01-01&authoredon=le2024-12-31")
            .await,
        2
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?authoredon=sa2024-12-31")
            .await,
        1
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?authoredon=eb2024-03-02")
            .await,
        1
    );
    assert_eq!(
        app.total("/fhir/MedicationRequest?authoredon=ne2024-03-01")
            .await,
        2
    );
    // Appointment by patient and date.
    app.create(&json!({"resourceType": "Appointment", "status": "booked", "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:10:00Z",
        "participant": [{"status": "accepted", "actor": {"reference": format!("Patient/{pid}")}}]})).await;
    assert_eq!(
        app.total(&format!("/fhir/Appointment?patient={pid}&date=2026-12-01"))
            .await,
        1
    );
    assert_eq!(
        app.total(&format!("/fhir/Appointment?patient={pid}&date=2026-12-02"))
            .await,
        0
    );
    assert_eq!(
        app.get("/fhir/MedicationRequest?patient=Practitioner/1")
            .await
            .status,
        400
    );
}

async fn paging_with_next_links_visits_everything_once(app: TestApp) {
    let mut created = Vec::new();
    for i in 0..25 {
        let v = app.create(&patient(&nhs_number(i), "Page")).await;
        created.push(v["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut url = "/fhir/Patient?_count=10".to_owned();
    let mut pages = 0;
    loop {
        let b = app.get(&url).await.json();
        assert_eq!(b["total"], 25);
        seen.extend(ids(&b));
        pages += 1;
        let next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next");
        match next {
            Some(l) => {
                let full = l["url"].as_str().unwrap();
                url = full[full.find("/fhir/").unwrap()..].to_owned();
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "every resource exactly once");
    created.sort();
    assert_eq!(sorted, created);
}

async fn unknown_parameters_are_rejected_unless_lenient(app: TestApp) {
    let r = app.get("/fhir/Patient?foo=bar").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.issues()[0]["expression"][0], "foo");
    assert_eq!(
        app.get("/fhir/Patient?identifier:contains=x").await.status,
        400
    );
    assert_eq!(app.get("/fhir/Patient?_count=-1").await.status, 400);
    let r = app
        .get_with(
            "/fhir/Patient?foo=bar&_count=5",
            &[("Prefer", "handling=lenient")],
        )
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    let self_url = b["link"][0]["url"].as_str().unwrap();
    assert!(!self_url.contains("foo"), "{self_url}");
    let outcome = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
}

async fn post_search_with_form_body(app: TestApp) {
    let a = app.create(&patient("9000000203", "Form")).await;
    let r = app
        .request(
            "POST",
            "/fhir/Patient/_search",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(format!("_id={}", a["id"].as_str().unwrap()).into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 1);
    let r = app
        .request(
            "POST",
            "/fhir/Patient/_search",
            &[("Content-Type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(r.status, 415);
}

async fn summary_count_and_total_none(app: TestApp) {
    app.create(&patient("9000000211", "Count")).await;
    let b = app.get("/fhir/Patient?_summary=count").await.json();
    assert_eq!(b["total"], 1);
    assert!(b.get("entry").is_none());
    let b = app.get("/fhir/Patient?_total=none").await.json();
    assert!(b.get("total").is_none());
    assert_eq!(ids(&b).len(), 1);
}
