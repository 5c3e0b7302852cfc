//! HTTP semantics: conditional requests, Prefer, content negotiation, XML, ids.

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{patient, TestApp};

backend_tests!(
    if_match_guards_update_and_delete,
    if_none_match_star_is_create_only,
    conditional_read_returns_304,
    prefer_return_variants,
    content_negotiation_and_pretty,
    xml_in_and_out,
    request_and_correlation_ids_are_echoed,
);

async fn if_match_guards_update_and_delete(app: TestApp) {
    let v = app.create(&patient("9000000084", "Match")).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let path = format!("/fhir/Patient/{id}");
    let mut v2 = v.clone();
    v2["gender"] = json!("male");
    let stale = app
        .send_json("PUT", &path, &v2, &[("If-Match", "W/\"7\"")])
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    let ok = app
        .send_json("PUT", &path, &v2, &[("If-Match", "W/\"1\"")])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let bad = app
        .send_json("PUT", &path, &v2, &[("If-Match", "nonsense")])
        .await;
    assert_eq!(bad.status, 400);
    let del_stale = app
        .request("DELETE", &path, &[("If-Match", "W/\"1\"")], None)
        .await;
    assert_eq!(del_stale.status, 412);
    let del = app
        .request("DELETE", &path, &[("If-Match", "\"2\"")], None)
        .await;
    assert_eq!(del.status, 204);
}

async fn if_none_match_star_is_create_only(app: TestApp) {
    let mut body = patient("9000000092", "Only");
    body["id"] = json!("only-once");
    let first = app
        .send_json(
            "PUT",
            "/fhir/Patient/only-once",
            &body,
            &[("If-None-Match", "*")],
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    body["gender"] = json!("male");
    let second = app
        .send_json(
            "PUT",
            "/fhir/Patient/only-once",
            &body,
            &[("If-None-Match", "*")],
        )
        .await;
    assert_eq!(second.status, 412);
}

async fn conditional_read_returns_304(app: TestApp) {
    let v = app.create(&patient("9000000106", "Cache")).await;
    let path = format!("/fhir/Patient/{}", v["id"].as_str().unwrap());
    let r = app.get_with(&path, &[("If-None-Match", "W/\"1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert_eq!(
        app.get_with(&path, &[("If-None-Match", "W/\"9\"")])
            .await
            .status,
        200
    );
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    assert_eq!(
        app.get_with(&path, &[("If-Modified-Since", future)])
            .await
            .status,
        304
    );
    let past = "Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(
        app.get_with(&path, &[("If-Modified-Since", past)])
            .await
            .status,
        200
    );
}

async fn prefer_return_variants(app: TestApp) {
    let body = patient("9000000114", "Prefer");
    let minimal = app
        .send_json(
            "POST",
            "/fhir/Patient",
            &body,
            &[("Prefer", "return=minimal")],
        )
        .await;
    assert_eq!(minimal.status, 201);
    assert!(minimal.body.is_empty());
    assert!(minimal.header("location").is_some());
    assert_eq!(minimal.header("etag").as_deref(), Some("W/\"1\""));
    let oo = app
        .send_json(
            "POST",
            "/fhir/Patient",
            &body,
            &[("Prefer", "return=OperationOutcome")],
        )
        .await;
    assert_eq!(oo.status, 201);
    assert_eq!(oo.issues()[0]["severity"], "information");
    let rep = app
        .send_json(
            "POST",
            "/fhir/Patient",
            &body,
            &[("Prefer", "return=representation")],
        )
        .await;
    assert_eq!(rep.json()["resourceType"], "Patient");
}

async fn content_negotiation_and_pretty(app: TestApp) {
    let v = app.create(&patient("9000000122", "Nego")).await;
    let path = format!("/fhir/Patient/{}", v["id"].as_str().unwrap());
    let r = app.get_with(&path, &[("Accept", "text/plain")]).await;
    assert_eq!(r.status, 406);
    assert_eq!(r.issues()[0]["code"], "not-supported");
    let r = app.get_with(&path, &[("Accept", "application/json")]).await;
    assert_eq!(r.status, 200);
    let pretty = app.get(&format!("{path}?_pretty=true")).await;
    assert!(pretty.text().contains("\n  \""), "pretty JSON is indented");
    assert_eq!(pretty.json(), v);
    let r = app.get(&format!("{path}?_format=html")).await;
    assert_eq!(r.status, 406);
    let unsupported = app
        .request(
            "POST",
            "/fhir/Patient",
            &[("Content-Type", "text/plain")],
            Some(b"hello".to_vec()),
        )
        .await;
    assert_eq!(unsupported.status, 415);
    assert_eq!(unsupported.issues()[0]["code"], "not-supported");
}

async fn xml_in_and_out(app: TestApp) {
    let xml = r#"<Patient xmlns="http://hl7.org/fhir"><active value="true"/><name><family value="Xml"/><given value="Ann"/><given value="Marie"/></name><birthDate value="1990-02-03"/></Patient>"#;
    let r = app
        .request(
            "POST",
            "/fhir/Patient",
            &[
                ("Content-Type", "application/fhir+xml"),
                ("Accept", "application/fhir+xml"),
            ],
            Some(xml.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+xml"));
    assert!(
        r.text().contains("<given value=\"Marie\"/>"),
        "{}",
        r.text()
    );
    let loc = r.header("location").unwrap();
    let id = loc.split('/').rev().nth(2).unwrap().to_owned();
    let json = app.get(&format!("/fhir/Patient/{id}")).await.json();
    assert_eq!(json["name"][0]["given"], json!(["Ann", "Marie"]));
    assert_eq!(json["active"], json!(true));
    let as_xml = app.get(&format!("/fhir/Patient/{id}?_format=xml")).await;
    let back = fhirbolt_shim::xml_to_json(&as_xml.text()).unwrap();
    assert_eq!(back, json);
    // Errors follow the negotiated format too.
    let bad = app
        .request(
            "GET",
            "/fhir/Patient/nope",
            &[("Accept", "application/fhir+xml")],
            None,
        )
        .await;
    assert_eq!(bad.status, 404);
    assert!(bad.text().contains("<OperationOutcome"), "{}", bad.text());
    let malformed = app
        .request(
            "POST",
            "/fhir/Patient",
            &[("Content-Type", "application/fhir+xml")],
            Some(b"<Patient xmlns=\"http://hl7.org/fhir\"><bogus/></Patient>".to_vec()),
        )
        .await;
    assert_eq!(malformed.status, 400);
}

async fn request_and_correlation_ids_are_echoed(app: TestApp) {
    let r = app
        .get_with(
            "/fhir/metadata",
            &[("X-Request-ID", "abc-123"), ("X-Correlation-ID", "corr-9")],
        )
        .await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
    assert_eq!(r.header("x-correlation-id").as_deref(), Some("corr-9"));
    let r = app.get("/fhir/metadata").await;
    assert_eq!(
        r.header("x-request-id").map(|s| s.len()),
        Some(36),
        "generated when absent"
    );
}
