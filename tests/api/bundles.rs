//! Batch and transaction Bundles, conditional update/delete and PATCH, on both
//! backends; Synthea ingest when `FHIRBRIDGE_SYNTHEA_DIR` is set.

use serde_json::{json, Value};

use crate::backend_tests;
use crate::helpers::{nhs_number, patient, TestApp};

backend_tests!(
    transaction_rewrites_urn_uuid_references_everywhere,
    transaction_is_all_or_nothing,
    transaction_order_and_conditional_entries,
    transaction_rejects_duplicate_identities_and_bad_references,
    batch_entries_are_independent,
    conditional_update_create_update_and_ambiguous,
    conditional_delete_single_multiple_and_cap,
    concurrent_conditional_updates_make_one_resource,
    json_patch_and_fhirpath_patch,
    large_transaction_does_not_block_reads,
    synthea_ingest,
    transaction_puts_create_and_update,
);

fn tx(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn post_entry(full_url: &str, resource: Value) -> Value {
    let ty = resource["resourceType"].as_str().unwrap().to_owned();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": ty}})
}

fn id_of(location: &str) -> String {
    location.split('/').nth(1).unwrap().to_owned()
}

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

async fn transaction_rewrites_urn_uuid_references_everywhere(app: TestApp) {
    let p = "urn:uuid:6c1b6bb2-8f0e-4c55-9a51-4d3a1e2f0001";
    let mr = json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Amlodipine 5mg tablets"},
        "subject": {"reference": p},
        "extension": [{"url": "http://example.org/ext/about", "valueReference": {"reference": p}}],
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"{p}\">patient</a></div>")}
    });
    let r = app
        .post(
            "/fhir",
            &tx(vec![
                post_entry("urn:uuid:mr-1", mr),
                post_entry(p, patient(&nhs_number(11), "Urnuuid")),
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "transaction-response");
    let entries = b["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(e["response"]["status"], "201 Created");
        assert_eq!(e["response"]["etag"], "W/\"1\"");
    }
    let mr_loc = entries[0]["response"]["location"].as_str().unwrap();
    let p_id = id_of(entries[1]["response"]["location"].as_str().unwrap());
    let stored = app
        .get(&format!("/fhir/MedicationRequest/{}", id_of(mr_loc)))
        .await
        .json();
    let expected = format!("Patient/{p_id}");
    assert_eq!(stored["subject"]["reference"], expected.as_str());
    assert_eq!(
        stored["extension"][0]["valueReference"]["reference"],
        expected.as_str()
    );
    assert!(stored["text"]["div"].as_str().unwrap().contains(&expected));
    // And the index points at the new patient.
    assert_eq!(
        app.total(&format!("/fhir/MedicationRequest?patient={p_id}"))
            .await,
        1
    );
}

async fn transaction_is_all_or_nothing(app: TestApp) {
    let before = app.total("/fhir/Patient?_summary=count").await;
    let bad = json!({"resourceType": "Patient", "birthDate": "2024-02-30"});
    let r = app
        .post(
            "/fhir",
            &tx(vec![
                post_entry("urn:uuid:a", patient(&nhs_number(12), "Kept")),
                post_entry("urn:uuid:b", bad),
            ]),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let issue = &r.issues()[0];
    assert!(
        issue["expression"][0]
            .as_str()
            .unwrap()
            .starts_with("Bundle.entry[1]"),
        "{issue}"
    );
    assert_eq!(app.total("/fhir/Patient?_summary=count").await, before);
    // A failure inside the database phase (version conflict) also rolls back.
    let created = app.create(&patient(&nhs_number(13), "Conflict")).await;
    let id = created["id"].as_str().unwrap();
    let mut changed = created.clone();
    changed["gender"] = json!("male");
    let r = app
        .post(
            "/fhir",
            &tx(vec![
                post_entry("urn:uuid:c", patient(&nhs_number(14), "NotKept")),
                json!({"resource": changed, "request": {"method": "PUT", "url": format!("Patient/{id}"), "ifMatch": "W/\"7\""}}),
            ]),
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(app.total("/fhir/Patient?_summary=count").await, before + 1);
    assert_eq!(app.total("/fhir/Patient?family=notkept").await, 0);
    // Not a Bundle / wrong type.
    assert_eq!(
        app.post("/fhir", &patient(&nhs_number(15), "X"))
            .await
            .status,
        400
    );
    let r = app
        .post(
            "/fhir",
            &json!({"resourceType": "Bundle", "type": "collection"}),
        )
        .await;
    assert_eq!(r.status, 400);
}

async fn transaction_order_and_conditional_entries(app: TestApp) {
    let old = app.create(&patient(&nhs_number(21), "Gone")).await;
    let old_id = old["id"].as_str().unwrap();
    let existing = app.create(&patient(&nhs_number(22), "Existing")).await;
    let existing_id = existing["id"].as_str().unwrap();
    let nhs22 = nhs_number(22);
    let mr = |subject: &str| {
        json!({
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": subject}
        })
    };
    let r = app
        .post(
            "/fhir",
            &tx(vec![
                // GET runs last: it sees the new MedicationRequests.
                json!({"request": {"method": "GET", "url": format!("MedicationRequest?patient={existing_id}")}}),
                // Conditional create that matches: no new patient, references follow.
                json!({
                    "fullUrl": "urn:uuid:p22",
                    "resource": patient(&nhs22, "Existing"),
                    "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier={NHS}|{nhs22}")}
                }),
                post_entry("urn:uuid:mr-a", mr("urn:uuid:p22")),
                // A conditional reference.
                post_entry("urn:uuid:mr-b", mr(&format!("Patient?identifier={NHS}|{nhs22}"))),
                json!({"request": {"method": "DELETE", "url": format!("Patient/{old_id}")}}),
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json()["entry"].as_array().unwrap().clone();
    assert_eq!(e[0]["response"]["status"], "200 OK");
    assert_eq!(e[0]["resource"]["total"], 2, "GET ran after the POSTs");
    assert_eq!(e[1]["response"]["status"], "200 OK", "ifNoneExist matched");
    assert_eq!(
        id_of(e[1]["response"]["location"].as_str().unwrap()),
        existing_id
    );
    assert_eq!(e[4]["response"]["status"], "204 No Content");
    assert_eq!(
        app.get(&format!("/fhir/Patient/{old_id}")).await.status,
        410
    );
    assert_eq!(
        app.total(&format!("/fhir/Patient?identifier={NHS}|{nhs22}"))
            .await,
        1
    );
}

async fn transaction_rejects_duplicate_identities_and_bad_references(app: TestApp) {
    let p = json!({"resourceType": "Patient", "id": "dup1", "gender": "male"});
    let put = json!({"resource": p, "request": {"method": "PUT", "url": "Patient/dup1"}});
    let r = app.post("/fhir", &tx(vec![put.clone(), put])).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(app.get("/fhir/Patient/dup1").await.status, 404);
    // A conditional reference that matches nothing.
    let mr = json!({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient?identifier=urn:nothing|0"}
    });
    let r = app
        .post("/fhir", &tx(vec![post_entry("urn:uuid:x", mr)]))
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
    // Entries that reference each other in a cycle are fine (ids are assigned first).
    let a = json!({"resourceType": "Organization", "name": "A", "partOf": {"reference": "urn:uuid:org-b"}});
    let b = json!({"resourceType": "Organization", "name": "B", "partOf": {"reference": "urn:uuid:org-a"}});
    let r = app
        .post(
            "/fhir",
            &tx(vec![
                post_entry("urn:uuid:org-a", a),
                post_entry("urn:uuid:org-b", b),
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Unknown method, missing request, unknown type.
    for bad in [
        json!({"request": {"method": "TRACE", "url": "Patient"}}),
        json!({"resource": {"resourceType": "Patient"}}),
        json!({"request": {"method": "GET", "url": "Nope/1"}}),
    ] {
        let r = app.post("/fhir", &tx(vec![bad.clone()])).await;
        assert!(
            r.status >= 400 && r.status < 500 || r.status == 501,
            "{bad}: {}",
            r.status
        );
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
    }
}

async fn batch_entries_are_independent(app: TestApp) {
    let r = app
        .post(
            "/fhir",
            &json!({"resourceType": "Bundle", "type": "batch", "entry": [
                post_entry("urn:uuid:1", patient(&nhs_number(31), "BatchOk")),
                post_entry("urn:uuid:2", json!({"resourceType": "Patient", "birthDate": "1980-13-01"})),
                {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
                post_entry("urn:uuid:3", patient(&nhs_number(32), "BatchOk")),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "batch-response");
    let e = b["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert!(e[1]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("400"));
    assert_eq!(
        e[1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert!(e[2]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("404"));
    assert_eq!(e[3]["response"]["status"], "201 Created");
    assert_eq!(app.total("/fhir/Patient?family=batchok").await, 2);
}

async fn conditional_update_create_update_and_ambiguous(app: TestApp) {
    let nhs = nhs_number(41);
    let url = format!("/fhir/Patient?identifier={NHS}|{nhs}");
    let r = app.put(&url, &patient(&nhs, "Cond")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let mut changed = patient(&nhs, "Cond");
    changed["gender"] = json!("male");
    let r = app.put(&url, &changed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["meta"]["versionId"], "2");
    // A body id that differs from the match.
    let mut other = changed.clone();
    other["id"] = json!("someone-else");
    assert_eq!(app.put(&url, &other).await.status, 400);
    // Two matches → 412.
    app.create(&patient(&nhs_number(42), "Twin")).await;
    app.create(&patient(&nhs_number(43), "Twin")).await;
    let r = app
        .put(
            "/fhir/Patient?family=twin",
            &patient(&nhs_number(44), "Twin"),
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
    // No criteria → not a conditional update.
    assert_eq!(app.put("/fhir/Patient", &changed).await.status, 405);
    // Unknown criteria → 400.
    assert_eq!(app.put("/fhir/Patient?nope=1", &changed).await.status, 400);
}

async fn conditional_delete_single_multiple_and_cap(app: TestApp) {
    for i in 0..3 {
        app.create(&patient(&nhs_number(50 + i), "Delme")).await;
    }
    let r = app.delete("/fhir/Patient?family=nobody").await;
    assert_eq!(r.status, 204);
    let r = app.delete("/fhir/Patient?family=delme").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(app.total("/fhir/Patient?family=delme").await, 0);
    // Over the cap (the test server allows 100): 412 and nothing deleted.
    let mut entries = Vec::new();
    for i in 0..101 {
        entries.push(post_entry(
            &format!("urn:uuid:cap-{i}"),
            json!({"resourceType": "Basic", "code": {"text": "capped"}}),
        ));
    }
    assert_eq!(app.post("/fhir", &tx(entries)).await.status, 200);
    assert_eq!(app.total("/fhir/Basic?_summary=count").await, 101);
    let r = app.delete("/fhir/Basic?_lastUpdated=gt2000-01-01").await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(app.total("/fhir/Basic?_summary=count").await, 101);
    assert_eq!(app.delete("/fhir/Basic").await.status, 405);
}

async fn concurrent_conditional_updates_make_one_resource(app: TestApp) {
    let nhs = nhs_number(61);
    let url = format!("/fhir/Patient?identifier={NHS}|{nhs}");
    let body = patient(&nhs, "Racer");
    let futures: Vec<_> = (0..20).map(|_| app.put(&url, &body)).collect();
    let results = futures_util::future::join_all(futures).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(created, 1, "exactly one create");
    assert_eq!(
        created + ok,
        20,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        app.total(&format!("/fhir/Patient?identifier={NHS}|{nhs}"))
            .await,
        1
    );
    // Concurrent conditional deletes and creates of the same identifier stay consistent.
    let futures: Vec<_> = (0..10).map(|_| app.delete(&url)).collect();
    for r in futures_util::future::join_all(futures).await {
        assert_eq!(r.status, 204);
    }
    assert_eq!(
        app.total(&format!("/fhir/Patient?identifier={NHS}|{nhs}"))
            .await,
        0
    );
}

async fn json_patch_and_fhirpath_patch(app: TestApp) {
    let created = app.create(&patient(&nhs_number(71), "Patchy")).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/fhir/Patient/{id}");
    let patch = json!([
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/name/0/given/-", "value": "Second"}
    ]);
    let send = |body: Vec<u8>, ct: &'static str, if_match: Option<&'static str>| {
        let mut h = vec![("Content-Type", ct)];
        if let Some(m) = if_match {
            h.push(("If-Match", m));
        }
        let path = path.clone();
        let app = &app;
        async move { app.request("PATCH", &path, &h, Some(body)).await }
    };
    let r = send(
        patch.to_string().into_bytes(),
        "application/json-patch+json",
        Some("W/\"1\""),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = app.get(&path).await.json();
    assert_eq!(v["gender"], "male");
    assert_eq!(v["name"][0]["given"][1], "Second");
    assert_eq!(v["meta"]["versionId"], "2");
    // Stale If-Match → 412, nothing written.
    let r = send(
        patch.to_string().into_bytes(),
        "application/json-patch+json",
        Some("W/\"1\""),
    )
    .await;
    assert_eq!(r.status, 412);
    // Malformed patch → 400; well-formed but inapplicable → 422.
    let r = send(
        b"[{\"op\":\"jump\"}]".to_vec(),
        "application/json-patch+json",
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send(
        json!([{"op": "remove", "path": "/nothing/here"}])
            .to_string()
            .into_bytes(),
        "application/json-patch+json",
        None,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    // A patch that makes the resource invalid → 422, nothing written.
    let r = send(
        json!([{"op": "replace", "path": "/birthDate", "value": "not-a-date"}])
            .to_string()
            .into_bytes(),
        "application/json-patch+json",
        None,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(app.get(&path).await.json()["meta"]["versionId"], "2");
    // FHIRPath Patch.
    let params = json!({"resourceType": "Parameters", "parameter": [{
        "name": "operation",
        "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.birthDate"},
            {"name": "value", "valueDate": "1999-12-31"}
        ]
    }]});
    let r = send(
        params.to_string().into_bytes(),
        "application/fhir+json",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.get(&path).await.json()["birthDate"], "1999-12-31");
    // Unknown id → 404; wrong media type → 415.
    let r = app
        .request(
            "PATCH",
            "/fhir/Patient/nope",
            &[("Content-Type", "application/json-patch+json")],
            Some(b"[]".to_vec()),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = send(b"x".to_vec(), "text/plain", None).await;
    assert_eq!(r.status, 415);
}

async fn large_transaction_does_not_block_reads(app: TestApp) {
    let probe = app.create(&patient(&nhs_number(81), "Probe")).await;
    let probe_path = format!("/fhir/Patient/{}", probe["id"].as_str().unwrap());
    let n = 10_000;
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            post_entry(
                &format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
                json!({"resourceType": "Basic", "code": {"coding": [{"system": "urn:bulk", "code": format!("c{i}")}]}}),
            )
        })
        .collect();
    let bundle = tx(entries);
    let big = app.post("/fhir", &bundle);
    let reads = async {
        // Reads keep being served while the transaction runs.
        let mut served = 0;
        for _ in 0..20 {
            let r = app.get(&probe_path).await;
            assert_eq!(r.status, 200);
            served += 1;
        }
        served
    };
    let (r, served) = futures_util::future::join(big, reads).await;
    assert_eq!(served, 20);
    assert_eq!(r.status, 200, "{}", &r.text()[..r.text().len().min(500)]);
    assert_eq!(r.json()["entry"].as_array().unwrap().len(), n);
    assert_eq!(app.total("/fhir/Basic?_summary=count").await, n as i64);
    assert_eq!(app.total("/fhir/Basic?code=urn:bulk|c9999").await, 1);
}

async fn synthea_ingest(app: TestApp) {
    let Ok(dir) = std::env::var("FHIRBRIDGE_SYNTHEA_DIR") else {
        eprintln!("skipping Synthea ingest: FHIRBRIDGE_SYNTHEA_DIR is not set");
        return;
    };
    let dir = std::path::Path::new(&dir);
    let dir = if dir.join("R4").is_dir() {
        dir.join("R4")
    } else {
        dir.to_path_buf()
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 90,
        "expected the Synthea bundles in {}",
        dir.display()
    );
    let mut entries = 0;
    let started = std::time::Instant::now();
    for f in &files {
        let body = std::fs::read(f).unwrap();
        let r = app
            .request(
                "POST",
                "/fhir",
                &[
                    ("Content-Type", "application/fhir+json"),
                    ("Prefer", "return=minimal"),
                ],
                Some(body),
            )
            .await;
        assert_eq!(
            r.status,
            200,
            "{}: {}",
            f.display(),
            &r.text()[..r.text().len().min(2000)]
        );
        let b = r.json();
        for e in b["entry"].as_array().unwrap() {
            assert_eq!(e["response"]["status"], "201 Created");
            entries += 1;
        }
    }
    eprintln!(
        "Synthea ingest ({}): {entries} resources from {} bundles in {:.1} s (debug build)",
        app.backend,
        files.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(entries, 12_096);
    assert_eq!(app.total("/fhir/Observation?_summary=count").await, 5_937);
    assert_eq!(app.total("/fhir/Patient?_summary=count").await, 96);
    // References were rewritten: every MedicationRequest's patient exists.
    let r = app
        .get("/fhir/MedicationRequest?_count=5&_include=MedicationRequest:patient")
        .await
        .json();
    let entries = r["entry"].as_array().unwrap();
    let matches = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .count();
    let included = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .count();
    assert_eq!(matches, 5);
    assert!(included >= 1);
    assert!(
        app.total("/fhir/Observation?code=http://loinc.org|8302-2")
            .await
            > 0
    );
}

/// PUTs to new ids (created together, recorded as PUT) mixed with PUTs to
/// existing, deleted and unchanged resources, and `If-None-Match: *`.
async fn transaction_puts_create_and_update(app: TestApp) {
    let put = |id: &str, family: &str, n: u32| {
        let mut p = patient(&nhs_number(n), family);
        p["id"] = json!(id);
        json!({"resource": p, "request": {"method": "PUT", "url": format!("Patient/{id}")}})
    };
    app.put("/fhir/Patient/old", &{
        let mut p = patient(&nhs_number(40), "Old");
        p["id"] = json!("old");
        p
    })
    .await;
    app.put("/fhir/Patient/gone", &{
        let mut p = patient(&nhs_number(41), "Gone");
        p["id"] = json!("gone");
        p
    })
    .await;
    assert_eq!(app.delete("/fhir/Patient/gone").await.status, 204);
    let mut guarded = put("guarded", "Guarded", 44);
    guarded["request"]["ifNoneMatch"] = json!("*");
    let r = app
        .post(
            "/fhir",
            &tx(vec![
                put("new1", "New", 42),
                put("old", "Older", 40),
                put("gone", "Back", 41),
                put("new2", "New", 43),
                guarded,
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "[{}] {}", app.backend, r.text());
    let b = r.json();
    let statuses: Vec<&str> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "201 Created",
            "200 OK",
            "201 Created",
            "201 Created",
            "201 Created"
        ],
        "[{}] {b}",
        app.backend
    );
    let etags: Vec<&str> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["etag"].as_str().unwrap())
        .collect();
    assert_eq!(
        etags,
        ["W/\"1\"", "W/\"2\"", "W/\"3\"", "W/\"1\"", "W/\"1\""],
        "[{}]",
        app.backend
    );
    assert_eq!(
        b["entry"][0]["response"]["location"], "Patient/new1/_history/1",
        "[{}] {b}",
        app.backend
    );
    // Readable, searchable, and in history as a PUT.
    let p = app.get("/fhir/Patient/new2").await.json();
    assert_eq!(p["meta"]["versionId"], "1");
    assert_eq!(app.total("/fhir/Patient?family=New").await, 2);
    let h = app.get("/fhir/Patient/new1/_history").await.json();
    assert_eq!(
        h["entry"][0]["request"]["method"], "PUT",
        "[{}] {h}",
        app.backend
    );
    // The same Bundle again: everything exists now; If-None-Match: * fails
    // and takes the whole transaction with it.
    let mut again = vec![put("new1", "New", 42), put("new2", "Newer", 43)];
    let r = app.post("/fhir", &tx(again.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(
        b["entry"][0]["response"]["etag"], "W/\"1\"",
        "unchanged content keeps its version"
    );
    assert_eq!(b["entry"][1]["response"]["etag"], "W/\"2\"");
    let mut guarded = put("guarded", "Guarded", 44);
    guarded["request"]["ifNoneMatch"] = json!("*");
    again.push(guarded);
    again.push(put("new3", "New", 45));
    let r = app.post("/fhir", &tx(again)).await;
    assert_eq!(r.status, 412, "[{}] {}", app.backend, r.text());
    assert_eq!(app.get("/fhir/Patient/new3").await.status, 404);
}
