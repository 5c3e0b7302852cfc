//! Round-trips every HL7 R4 example of the supported types (from the npm package
//! `hl7.fhir.r4.examples`, pointed at by `FHIRBRIDGE_R4_EXAMPLES_DIR`): PUT then
//! GET must return the same JSON apart from server-owned meta, and the XML
//! rendition must convert back to the same JSON.

use fhirbridge::model::ResourceType;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{without_server_meta, TestApp};

pub const EXAMPLES_ENV: &str = "FHIRBRIDGE_R4_EXAMPLES_DIR";

/// Every example file of a supported type, as (file name, resource).
pub fn load_examples() -> Option<Vec<(String, Value)>> {
    let Ok(dir) = std::env::var(EXAMPLES_ENV) else {
        eprintln!("skipping HL7 examples round trip: {EXAMPLES_ENV} is not set");
        return None;
    };
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{EXAMPLES_ENV}={dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(prefix) = name.split('-').next() else {
            continue;
        };
        if prefix.parse::<ResourceType>().is_err() || !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["resourceType"] == prefix {
            out.push((name, v));
        }
    }
    assert!(
        out.len() > 100,
        "expected the HL7 examples in {dir}, found {}",
        out.len()
    );
    Some(out)
}

backend_tests!(hl7_examples_round_trip);

/// HL7 examples that violate R4 itself (missing `SearchParameter.base`, a
/// Questionnaire item without `linkId`, an id longer than 64 characters).
const KNOWN_INVALID: [&str; 12] = [
    "Questionnaire-qs1.json",
    "SearchParameter-codesystem-extensions-CodeSystem-author.json",
    "SearchParameter-codesystem-extensions-CodeSystem-effective.json",
    "SearchParameter-codesystem-extensions-CodeSystem-end.json",
    "SearchParameter-codesystem-extensions-CodeSystem-keyword.json",
    "SearchParameter-codesystem-extensions-CodeSystem-workflow.json",
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json",
    "SearchParameter-valueset-extensions-ValueSet-author.json",
    "SearchParameter-valueset-extensions-ValueSet-effective.json",
    "SearchParameter-valueset-extensions-ValueSet-end.json",
    "SearchParameter-valueset-extensions-ValueSet-keyword.json",
    "SearchParameter-valueset-extensions-ValueSet-workflow.json",
];

/// HL7's Consent examples whose rules this server cannot enforce (categories
/// other than information access/disclosure, actors without an identifier,
/// provisions on data, classes, actions or labels): refused with 422, never
/// stored and ignored.
const UNENFORCEABLE: [&str; 10] = [
    "Consent-consent-example-Emergency.json",
    "Consent-consent-example-Out.json",
    "Consent-consent-example-grantor.json",
    "Consent-consent-example-notAuthor.json",
    "Consent-consent-example-notOrg.json",
    "Consent-consent-example-notThem.json",
    "Consent-consent-example-notThis.json",
    "Consent-consent-example-pkb.json",
    "Consent-consent-example-signature.json",
    "Consent-consent-example-smartonfhir.json",
];

/// fhirbolt's XML writer changes this one (a very large terminology bundle).
const KNOWN_XML_DIFF: [&str; 1] = ["Bundle-terminologies.json"];

async fn hl7_examples_round_trip(app: TestApp) {
    let Some(examples) = load_examples() else {
        return;
    };
    let mut failures = Vec::new();
    let mut rejected = Vec::new();
    let mut refused = Vec::new();
    let mut oversize = 0;
    for (name, example) in &examples {
        if serde_json::to_vec(example).unwrap().len() > 1 << 20 {
            oversize += 1; // the test server's body limit is 1 MiB
            continue;
        }
        let ty = example["resourceType"].as_str().unwrap();
        let id = example["id"].as_str().unwrap();
        let path = format!("/fhir/{ty}/{id}");
        let put = app.put(&path, example).await;
        if KNOWN_INVALID.contains(&name.as_str()) {
            // These HL7 examples break R4's own rules; the server must say so.
            assert_eq!(put.status, 400, "{name} must be rejected: {}", put.text());
            rejected.push(name.clone());
            continue;
        }
        if ty == "AuditEvent" {
            // The audit trail is the server's own and append-only.
            assert_eq!(put.status, 405, "{name}: {}", put.text());
            refused.push(name.clone());
            continue;
        }
        if UNENFORCEABLE.contains(&name.as_str()) {
            assert_eq!(put.status, 422, "{name}: {}", put.text());
            assert!(
                put.text().contains("cannot be enforced"),
                "{name}: {}",
                put.text()
            );
            refused.push(name.clone());
            continue;
        }
        if put.status != 201 && put.status != 200 {
            failures.push(format!("{name}: PUT {} {}", put.status, put.text()));
            continue;
        }
        let got = app.get(&path).await;
        if without_server_meta(got.json()) != without_server_meta(example.clone()) {
            failures.push(format!("{name}: GET differs from what was PUT"));
            continue;
        }
        let xml = app.get(&format!("{path}?_format=xml")).await;
        match fhirbolt_shim::xml_to_json(&xml.text()) {
            Ok(back) if back == got.json() => {}
            Ok(_) if KNOWN_XML_DIFF.contains(&name.as_str()) => {}
            Ok(_) => failures.push(format!("{name}: XML rendition differs")),
            Err(e) => failures.push(format!("{name}: XML rendition unreadable: {e}")),
        }
    }
    eprintln!(
        "HL7 examples round trip ({}): {} of {} passed, {} invalid examples rejected, {} refused by rule (AuditEvent, unenforceable Consent), {} over the test body limit",
        app.backend,
        examples.len() - failures.len() - rejected.len() - refused.len() - oversize,
        examples.len(),
        rejected.len(),
        refused.len(),
        oversize
    );
    assert_eq!(rejected.len(), KNOWN_INVALID.len());
    let unenforceable = refused.iter().filter(|n| n.starts_with("Consent-")).count();
    assert_eq!(unenforceable, UNENFORCEABLE.len(), "{refused:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
