//! What real clients hit on day one: trailing slashes, inputs an interaction does
//! not understand, empty JSON values in responses, every failing transaction
//! entry at once, `GET /` and `GET /fhir`, a summarised and compressed
//! CapabilityStatement, request `Content-Encoding`, keep-alive after errors and
//! the body read deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::backend_tests;
use crate::helpers::{nhs_number, patient, TestApp};

backend_tests!(
    trailing_slash_is_the_same_endpoint,
    no_response_holds_an_empty_value,
    query_string_on_create_is_an_error,
    query_parameters_other_interactions_do_not_take,
    precondition_headers_an_interaction_ignores,
    prefer_values_are_checked,
    transaction_names_every_failing_entry,
    bundle_entry_method_must_be_an_http_verb,
);

fn tx(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

async fn trailing_slash_is_the_same_endpoint(app: TestApp) {
    let p = patient(&nhs_number(401), "Slash");
    let r = app.post("/fhir/Patient/", &p).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = id_of(&r.json());
    let loc = r.header("location").unwrap();
    assert!(
        loc.contains(&format!("/fhir/Patient/{id}/_history/1")),
        "{loc}"
    );
    for path in [
        format!("/fhir/Patient/{id}/"),
        format!("/fhir/Patient/{id}"),
        format!("/fhir/Patient/{id}/_history/"),
        "/fhir/metadata/".to_owned(),
        "/fhir/Patient/?family=slash".to_owned(),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let search = app.get("/fhir/Patient/?family=slash").await.json();
    assert_eq!(search["total"], 1, "{search}");
    // the links name the canonical endpoint, not the slashed one
    let self_link = search["link"][0]["url"].as_str().unwrap();
    assert!(self_link.contains("/fhir/Patient?"), "{self_link}");
    let bundle = tx(
        "transaction",
        vec![json!({
            "fullUrl": "urn:uuid:0b7e0d4c-6a43-4d3e-9d6a-5b0e2c1a0001",
            "resource": patient(&nhs_number(402), "Slashtx"),
            "request": {"method": "POST", "url": "Patient"}
        })],
    );
    let r = app.post("/fhir/", &bundle).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "transaction-response");
    let batch = tx(
        "batch",
        vec![json!({"request": {"method": "GET", "url": format!("Patient/{id}")}})],
    );
    let r = app.post("/fhir/", &batch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["entry"][0]["response"]["status"], "200 OK");
}

/// Every JSON value the server writes: no `[]`, no `{}`, no `null` (FHIR JSON).
fn assert_no_empty(where_: &str, v: &Value, path: &str) {
    match v {
        Value::Null => panic!("{where_}: null at {path}"),
        Value::Array(a) => {
            assert!(!a.is_empty(), "{where_}: empty array at {path}");
            for (i, x) in a.iter().enumerate() {
                assert_no_empty(where_, x, &format!("{path}[{i}]"));
            }
        }
        Value::Object(o) => {
            assert!(!o.is_empty(), "{where_}: empty object at {path}");
            for (k, x) in o {
                assert_no_empty(where_, x, &format!("{path}.{k}"));
            }
        }
        Value::String(s) => assert!(!s.is_empty(), "{where_}: empty string at {path}"),
        _ => {}
    }
}

/// name, method, path, body, headers
type Case<'a> = (
    String,
    &'a str,
    String,
    Option<Value>,
    Vec<(&'a str, &'a str)>,
);

/// The property over every response shape the server has: each interaction,
/// its error answers, Bundles of every type (including searchsets nested in
/// batch responses) and every `Prefer: return` variant.
async fn no_response_holds_an_empty_value(app: TestApp) {
    let mut p = patient(&nhs_number(411), "Emptyless");
    p["gender"] = json!("female");
    let created = app.create(&p).await;
    let id = id_of(&created);
    let mut upd = created.clone();
    upd["gender"] = json!("male");
    let r = app.put(&format!("/fhir/Patient/{id}"), &upd).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mr = json!({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "Amlodipine 5mg tablets"},
        "subject": {"reference": format!("Patient/{id}")}
    });
    app.create(&mr).await;

    let nested_search = tx(
        "batch",
        vec![
            json!({"request": {"method": "GET", "url": "Patient?family=emptyless"}}),
            json!({"request": {"method": "GET", "url": "Patient?family=nobody-has-this"}}),
            json!({"request": {"method": "GET", "url": "Patient/does-not-exist"}}),
            json!({"request": {"method": "GET", "url": format!("Patient/{id}/_history/1")}}),
            json!({"request": {"method": "DELETE", "url": "Patient/not-there"}}),
            json!({"resource": {"resourceType": "Patient", "bogus": 1}, "request": {"method": "POST", "url": "Patient"}}),
        ],
    );
    let transaction = tx(
        "transaction",
        vec![
            json!({"fullUrl": "urn:uuid:5f0c7e57-1d2c-4d7e-8f6b-0c2a9d3e0001",
                   "resource": patient(&nhs_number(412), "Emptytx"),
                   "request": {"method": "POST", "url": "Patient"}}),
            json!({"request": {"method": "GET", "url": "Patient?family=emptyless&_include=*"}}),
        ],
    );
    let mut cases: Vec<Case> = vec![
        (
            "read".into(),
            "GET",
            format!("/fhir/Patient/{id}"),
            None,
            vec![],
        ),
        (
            "vread".into(),
            "GET",
            format!("/fhir/Patient/{id}/_history/1"),
            None,
            vec![],
        ),
        (
            "read _summary".into(),
            "GET",
            format!("/fhir/Patient/{id}?_summary=true"),
            None,
            vec![],
        ),
        (
            "read _elements".into(),
            "GET",
            format!("/fhir/Patient/{id}?_elements=gender"),
            None,
            vec![],
        ),
        (
            "search".into(),
            "GET",
            "/fhir/Patient?family=emptyless&_revinclude=MedicationRequest:subject".into(),
            None,
            vec![],
        ),
        (
            "empty search".into(),
            "GET",
            "/fhir/Patient?family=nobody-has-this".into(),
            None,
            vec![],
        ),
        (
            "count".into(),
            "GET",
            "/fhir/Patient?_summary=count".into(),
            None,
            vec![],
        ),
        (
            "lenient search".into(),
            "GET",
            "/fhir/Patient?unknown-param=1".into(),
            None,
            vec![("Prefer", "handling=lenient")],
        ),
        (
            "compartment".into(),
            "GET",
            format!("/fhir/Patient/{id}/MedicationRequest"),
            None,
            vec![],
        ),
        (
            "instance history".into(),
            "GET",
            format!("/fhir/Patient/{id}/_history"),
            None,
            vec![],
        ),
        (
            "type history".into(),
            "GET",
            "/fhir/Patient/_history?_count=1".into(),
            None,
            vec![],
        ),
        (
            "system history".into(),
            "GET",
            "/fhir/_history".into(),
            None,
            vec![],
        ),
        (
            "empty history".into(),
            "GET",
            "/fhir/Slot/_history".into(),
            None,
            vec![],
        ),
        (
            "metadata".into(),
            "GET",
            "/fhir/metadata".into(),
            None,
            vec![],
        ),
        (
            "metadata summary".into(),
            "GET",
            "/fhir/metadata?_summary=true".into(),
            None,
            vec![],
        ),
        (
            "batch".into(),
            "POST",
            "/fhir".into(),
            Some(nested_search),
            vec![],
        ),
        (
            "transaction".into(),
            "POST",
            "/fhir".into(),
            Some(transaction.clone()),
            vec![],
        ),
        (
            "transaction minimal".into(),
            "POST",
            "/fhir".into(),
            Some(transaction.clone()),
            vec![("Prefer", "return=minimal")],
        ),
        (
            "transaction outcome".into(),
            "POST",
            "/fhir".into(),
            Some(transaction),
            vec![("Prefer", "return=OperationOutcome")],
        ),
        (
            "create outcome".into(),
            "POST",
            "/fhir/Patient".into(),
            Some(patient(&nhs_number(413), "Emptyoo")),
            vec![("Prefer", "return=OperationOutcome")],
        ),
        (
            "$validate".into(),
            "POST",
            "/fhir/Patient/$validate".into(),
            Some(patient(&nhs_number(414), "Emptyval")),
            vec![],
        ),
        (
            "404".into(),
            "GET",
            "/fhir/Patient/nope".into(),
            None,
            vec![],
        ),
        (
            "400".into(),
            "POST",
            "/fhir/Patient".into(),
            Some(json!({"resourceType": "Patient", "x": 1})),
            vec![],
        ),
        (
            "405".into(),
            "DELETE",
            "/fhir/metadata".into(),
            None,
            vec![],
        ),
        (
            "412".into(),
            "PUT",
            format!("/fhir/Patient/{id}"),
            Some(upd.clone()),
            vec![("If-Match", "W/\"9\"")],
        ),
        (
            "unknown route".into(),
            "GET",
            "/nowhere".into(),
            None,
            vec![],
        ),
    ];
    cases.push((
        "delete outcome".into(),
        "DELETE",
        "/fhir/Patient/not-there".into(),
        None,
        vec![("Prefer", "return=OperationOutcome")],
    ));
    for (name, method, path, body, headers) in cases {
        let r = match body {
            Some(b) => app.send_json(method, &path, &b, &headers).await,
            None => app.request(method, &path, &headers, None).await,
        };
        assert!(!r.body.is_empty(), "{name}: no body (status {})", r.status);
        assert_no_empty(&name, &r.json(), "$");
    }
}

async fn query_string_on_create_is_an_error(app: TestApp) {
    let nhs = nhs_number(421);
    let p = patient(&nhs, "Getorcreate");
    let query = format!("/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}");
    for _ in 0..2 {
        let r = app.post(&query, &p).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let issues = r.issues();
        let text = issues[0]["diagnostics"].as_str().unwrap();
        assert!(text.contains("If-None-Exist"), "{text}");
    }
    // nothing was created
    assert_eq!(app.total("/fhir/Patient?family=getorcreate").await, 0);
    // the supported way creates one, then finds it
    let crit = format!("identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}");
    let first = app
        .send_json("POST", "/fhir/Patient", &p, &[("If-None-Exist", &crit)])
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = app
        .send_json("POST", "/fhir/Patient", &p, &[("If-None-Exist", &crit)])
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(app.total("/fhir/Patient?family=getorcreate").await, 1);
    // _format and _pretty are everyone's
    let r = app
        .post(
            "/fhir/Patient?_format=json&_pretty=true",
            &patient(&nhs_number(422), "Pretty"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn query_parameters_other_interactions_do_not_take(app: TestApp) {
    let created = app.create(&patient(&nhs_number(431), "Params")).await;
    let id = id_of(&created);
    let path = format!("/fhir/Patient/{id}");
    let mut upd = created.clone();
    upd["gender"] = json!("other");
    let r = app.put(&format!("{path}?family=x"), &upd).await;
    assert_eq!(r.status, 400, "update: {}", r.text());
    let r = app
        .request(
            "PATCH",
            &format!("{path}?x=1"),
            &[("Content-Type", "application/json-patch+json")],
            Some(br#"[{"op":"add","path":"/gender","value":"male"}]"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 400, "patch: {}", r.text());
    let r = app.delete(&format!("{path}?cascade=delete")).await;
    assert_eq!(r.status, 400, "delete: {}", r.text());
    let r = app.get(&format!("{path}?foo=bar")).await;
    assert_eq!(r.status, 400, "read: {}", r.text());
    assert_eq!(r.issues()[0]["expression"][0], "foo");
    let r = app.get(&format!("{path}/_history/1?foo=bar")).await;
    assert_eq!(r.status, 400, "vread: {}", r.text());
    let r = app.post("/fhir?foo=bar", &tx("batch", vec![])).await;
    assert_eq!(r.status, 400, "batch: {}", r.text());
    let r = app.get("/fhir/metadata?mode=terminology").await;
    assert_eq!(r.status, 400, "metadata mode: {}", r.text());
    // nothing above changed the resource
    let now = app.get(&path).await.json();
    assert_eq!(now["meta"]["versionId"], "1", "{now}");
    assert!(now.get("gender").is_some());
    assert_eq!(now["gender"], created["gender"]);

    // _summary and _elements are real on read and vread
    let r = app.get(&format!("{path}?_elements=gender")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["gender"], created["gender"]);
    assert!(v.get("name").is_none(), "{v}");
    assert_eq!(v["meta"]["tag"][0]["code"], "SUBSETTED");
    let v = app.get(&format!("{path}?_summary=true")).await.json();
    assert!(
        v.get("name").is_some() && v.get("identifier").is_some(),
        "{v}"
    );
    assert_eq!(v["meta"]["tag"][0]["code"], "SUBSETTED");
    let r = app.get(&format!("{path}?_summary=count")).await;
    assert_eq!(r.status, 400);
    let r = app.get(&format!("{path}?_elements=nonsense")).await;
    assert_eq!(r.status, 400);
    let v = app
        .get(&format!("{path}/_history/1?_elements=birthDate"))
        .await
        .json();
    assert!(
        v.get("name").is_none() && v.get("birthDate").is_some(),
        "{v}"
    );
}

async fn precondition_headers_an_interaction_ignores(app: TestApp) {
    let created = app.create(&patient(&nhs_number(441), "Precond")).await;
    let id = id_of(&created);
    let path = format!("/fhir/Patient/{id}");
    let p = patient(&nhs_number(442), "Precond");
    for (method, url, body, header) in [
        (
            "POST",
            "/fhir/Patient".to_owned(),
            Some(p.clone()),
            ("If-Match", "W/\"1\""),
        ),
        (
            "POST",
            "/fhir/Patient".to_owned(),
            Some(p.clone()),
            ("If-None-Match", "*"),
        ),
        (
            "POST",
            "/fhir/Patient".to_owned(),
            Some(p.clone()),
            ("If-Unmodified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ),
        (
            "PUT",
            path.clone(),
            Some(created.clone()),
            ("If-None-Exist", "family=x"),
        ),
        (
            "PUT",
            path.clone(),
            Some(created.clone()),
            ("If-Unmodified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ),
        ("GET", path.clone(), None, ("If-Match", "W/\"2\"")),
        (
            "GET",
            path.clone(),
            None,
            ("If-Unmodified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ),
        ("DELETE", path.clone(), None, ("If-None-Match", "W/\"1\"")),
        (
            "GET",
            "/fhir/Patient?family=precond".to_owned(),
            None,
            ("If-None-Exist", "family=x"),
        ),
        (
            "GET",
            format!("{path}/_history"),
            None,
            ("If-Match", "W/\"1\""),
        ),
        (
            "POST",
            "/fhir".to_owned(),
            Some(tx("batch", vec![])),
            ("If-Match", "W/\"1\""),
        ),
    ] {
        let r = match body {
            Some(b) => app.send_json(method, &url, &b, &[header]).await,
            None => app.request(method, &url, &[header], None).await,
        };
        assert_eq!(
            r.status,
            400,
            "{method} {url} with {}: {}",
            header.0,
            r.text()
        );
        let d = r.issues()[0]["diagnostics"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert!(d.contains(&header.0.to_lowercase()), "{d}");
    }
    // nothing was created or changed
    assert_eq!(app.total("/fhir/Patient?family=precond").await, 1);
    let now = app.get(&path).await.json();
    assert_eq!(now["meta"]["versionId"], "1");
    // the ones each interaction honours still work
    let r = app.get_with(&path, &[("If-None-Match", "W/\"1\"")]).await;
    assert_eq!(r.status, 304);
}

async fn prefer_values_are_checked(app: TestApp) {
    for bad in [
        "return=representaton",
        "handling=loose",
        "respond-async",
        "wait=10",
    ] {
        let r = app
            .send_json(
                "POST",
                "/fhir/Patient",
                &patient(&nhs_number(451), "Prefer"),
                &[("Prefer", bad)],
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        let r = app
            .get_with("/fhir/Patient?family=prefer", &[("Prefer", bad)])
            .await;
        assert_eq!(r.status, 400, "search {bad}: {}", r.text());
    }
    assert_eq!(app.total("/fhir/Patient?family=prefer").await, 0);
    // unknown preferences are ignored only when the client asks for leniency
    let r = app
        .send_json(
            "POST",
            "/fhir/Patient",
            &patient(&nhs_number(452), "Prefer"),
            &[("Prefer", "wait=10, handling=lenient, return=minimal")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.body.is_empty());
}

async fn transaction_names_every_failing_entry(app: TestApp) {
    let good = |n: u32| {
        json!({"fullUrl": format!("urn:uuid:9d3f6a1e-0c2b-4e8f-a7d1-3b5c7e9f{n:04}"),
               "resource": patient(&nhs_number(460 + n), "Everyfail"),
               "request": {"method": "POST", "url": "Patient"}})
    };
    let bad = |n: u32| {
        json!({"fullUrl": format!("urn:uuid:9d3f6a1e-0c2b-4e8f-a7d1-3b5c7e9f{n:04}"),
               "resource": {"resourceType": "Patient", "notAnElement": n},
               "request": {"method": "POST", "url": "Patient"}})
    };
    let failing = [2usize, 5, 7, 11];
    let entries: Vec<Value> = (0..12u32)
        .map(|i| {
            if failing.contains(&(i as usize)) {
                bad(i)
            } else {
                good(i)
            }
        })
        .collect();
    let r = app.post("/fhir", &tx("transaction", entries)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let issues = r.issues();
    for i in failing {
        let prefix = format!("Bundle.entry[{i}]");
        assert!(
            issues.iter().any(|x| x["expression"][0]
                .as_str()
                .is_some_and(|e| e.starts_with(&prefix))),
            "{prefix} not named: {issues:?}"
        );
    }
    assert_eq!(app.total("/fhir/Patient?family=everyfail").await, 0);

    // bounded: 1,500 failing entries give 1,000 issues and a count of the rest
    let entries: Vec<Value> = (0..1500u32)
        .map(|n| {
            json!({"resource": {"resourceType": "Patient", "notAnElement": n},
                   "request": {"method": "POST", "url": "Patient"}})
        })
        .collect();
    let r = app.post("/fhir", &tx("transaction", entries)).await;
    assert_eq!(r.status, 400);
    let issues = r.issues();
    assert_eq!(issues.len(), 1002, "1,000 issues, the count, the summary");
    let errors = issues.iter().filter(|i| i["severity"] == "error").count();
    assert_eq!(errors, 1000);
    assert!(issues
        .iter()
        .any(|i| i["diagnostics"] == "500 further issues are not listed"));
}

async fn bundle_entry_method_must_be_an_http_verb(app: TestApp) {
    for m in ["FOO", "get", "Post"] {
        let entry = json!({"resource": patient(&nhs_number(481), "Verb"),
                           "request": {"method": m, "url": "Patient"}});
        let r = app
            .post("/fhir", &tx("transaction", vec![entry.clone()]))
            .await;
        assert_eq!(r.status, 400, "{m}: {}", r.text());
        assert_eq!(
            r.issues()[0]["expression"][0],
            "Bundle.entry[0].request.method"
        );
        let r = app.post("/fhir", &tx("batch", vec![entry])).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["entry"][0]["response"]["status"],
            "400 Bad Request"
        );
    }
    assert_eq!(app.total("/fhir/Patient?family=verb").await, 0);
}

#[actix_rt::test]
async fn landing_page_and_base_get() {
    let app = TestApp::sqlite().await;
    let r = app.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("/fhir/metadata"), "{}", r.text());
    let r = app.get("/fhir").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let d = r.issues()[0]["diagnostics"].as_str().unwrap().to_owned();
    assert!(
        d.contains("system-level search") && d.contains("metadata"),
        "{d}"
    );
    let r = app.get("/fhir/").await;
    assert_eq!(r.status, 405);
}

#[actix_rt::test]
async fn metadata_summary_elements_and_compression() {
    let app = TestApp::sqlite().await;
    let full = app.get("/fhir/metadata").await;
    assert_eq!(full.status, 200);
    let summary = app.get("/fhir/metadata?_summary=true").await;
    assert_eq!(summary.status, 200);
    let s = summary.json();
    // summary elements only, also inside backbones: no search parameters or interactions
    let res = &s["rest"][0]["resource"];
    assert!(res.as_array().is_some_and(|a| a.len() > 100), "{res}");
    assert!(res[0].get("type").is_some() && res[0].get("searchParam").is_none());
    assert_eq!(s["fhirVersion"], "4.0.1");
    assert!(s.get("format").is_some() && s.get("software").is_some());
    assert_eq!(s["meta"]["tag"][0]["code"], "SUBSETTED");
    assert!(
        summary.body.len() * 5 < full.body.len(),
        "{} of {}",
        summary.body.len(),
        full.body.len()
    );
    let e = app.get("/fhir/metadata?_elements=software").await.json();
    assert!(
        e.get("software").is_some() && e.get("rest").is_none(),
        "{e}"
    );
    assert!(app.get("/fhir/metadata?_elements=nope").await.status == 400);

    let plain = full.json();
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("gzip, deflate, br", "br"),
        ("br;q=0.1, gzip", "gzip"),
    ] {
        let r = app
            .get_with("/fhir/metadata", &[("Accept-Encoding", accept)])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-encoding").as_deref(),
            Some(coding),
            "{accept}"
        );
        assert!(r
            .header("vary")
            .unwrap_or_default()
            .contains("accept-encoding"));
        assert!(
            r.body.len() * 5 < full.body.len(),
            "{coding}: {}",
            r.body.len()
        );
        let mut out = Vec::new();
        match coding {
            "gzip" => {
                flate2::read::GzDecoder::new(&r.body[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            _ => {
                brotli::Decompressor::new(&r.body[..], 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rest"], plain["rest"]);
    }
    // small answers and identity-only clients stay plain
    let r = app
        .get_with("/health/live", &[("Accept-Encoding", "gzip")])
        .await;
    assert!(r.header("content-encoding").is_none());
    let r = app
        .get_with("/fhir/metadata", &[("Accept-Encoding", "identity")])
        .await;
    assert!(r.header("content-encoding").is_none());
    // errors are compressed too when large enough, and stay OperationOutcomes
    let r = app
        .get_with("/fhir/Patient/nope", &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(r.status, 404);
}

#[actix_rt::test]
async fn request_content_encodings() {
    let app = TestApp::sqlite().await;
    let body = patient(&nhs_number(491), "Encoded").to_string();
    for coding in ["zstd", "compress", "garbage", "gzip, br"] {
        let r = app
            .request(
                "POST",
                "/fhir/Patient",
                &[
                    ("Content-Type", "application/fhir+json"),
                    ("Content-Encoding", coding),
                ],
                Some(body.clone().into_bytes()),
            )
            .await;
        assert_eq!(r.status, 415, "{coding}: {}", r.text());
        r.issues();
    }
    assert_eq!(app.total("/fhir/Patient?family=encoded").await, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let r = app
        .request(
            "POST",
            "/fhir/Patient",
            &[
                ("Content-Type", "application/fhir+json"),
                ("Content-Encoding", "gzip"),
            ],
            Some(gz.finish().unwrap()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(body.as_bytes()).unwrap();
    }
    let r = app
        .request(
            "POST",
            "/fhir/Patient",
            &[
                ("Content-Type", "application/fhir+json"),
                ("Content-Encoding", "br"),
            ],
            Some(br),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(app.total("/fhir/Patient?family=encoded").await, 2);
}

/// One raw HTTP/1.1 exchange on an open connection: status, lower-cased head, body.
fn exchange(conn: &mut TcpStream, request: &[u8]) -> (u16, String, Vec<u8>) {
    conn.write_all(request).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).unwrap();
        assert!(n == 1, "connection closed before a response head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    (status, head, body)
}

fn req(method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[actix_rt::test]
async fn connections_stay_alive_after_client_errors() {
    let app = TestApp::sqlite().await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let statuses = actix_rt::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let json = "Content-Type: application/fhir+json\r\n";
        let body = r#"{"resourceType":"Patient","name":[{"family":"Alive"}]}"#;
        let mut out = Vec::new();
        for (m, p, h, b) in [
            ("POST", "/fhir/NotAType", json, body),
            ("POST", "/fhir/metadata", json, body),
            ("POST", "/nowhere", json, body),
            ("POST", "/fhir/Patient", json, "{not json"),
            (
                "POST",
                "/fhir/Patient",
                json,
                r#"{"resourceType":"Patient","bad":1}"#,
            ),
            ("POST", "/fhir/Patient?identifier=x", json, body),
            ("PUT", "/fhir/Patient/abc", json, body),
            (
                "POST",
                "/fhir/Patient",
                "Content-Type: text/plain\r\n",
                body,
            ),
            ("GET", "/fhir/Patient/missing", "", ""),
            ("GET", "/fhir/metadata?_summary=true", "", ""),
        ] {
            let (status, head, _) = exchange(&mut conn, &req(m, p, h, b));
            assert!(!head.contains("connection: close"), "{m} {p}: {head}");
            assert!(head.contains("keep-alive: timeout="), "{head}");
            out.push(status);
        }
        out
    })
    .await
    .unwrap();
    assert_eq!(
        statuses,
        vec![404, 405, 404, 400, 400, 400, 400, 415, 404, 200]
    );
}

#[actix_rt::test]
async fn a_stalled_body_gets_408() {
    let app = TestApp::sqlite_with(|s| s.server.body_timeout_secs = 1).await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let (status, body) = actix_rt::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // announces 100 bytes, sends 10, then stalls
        conn.write_all(
            b"POST /fhir/Patient HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n{\"resourceT",
        )
        .unwrap();
        let mut all = Vec::new();
        let _ = conn.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all).into_owned();
        let status: u16 = text[9..12].parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    })
    .await
    .unwrap();
    assert_eq!(status, 408, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert_eq!(v["issue"][0]["code"], "timeout");
    // the server still answers
    assert_eq!(app.get("/fhir/metadata?_summary=true").await.status, 200);
}
