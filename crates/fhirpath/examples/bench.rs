//! Micro-benchmark: `cargo run --release -p fhirpath --example bench [patient.json]`.
//! Prints µs per evaluation for a few typical invariants and search expressions.

use fhirpath::{evaluate, evaluate_to_bool, parse, EvalContext};
use std::hint::black_box;
use std::time::Instant;

const PATIENT: &str = r#"{
  "resourceType": "Patient", "id": "example",
  "meta": {"versionId": "1", "lastUpdated": "2024-01-01T10:00:00Z"},
  "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter James Chalmers</div>"},
  "identifier": [{"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
    "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009", "period": {"start": "2001-05-06"},
    "assigner": {"display": "Acme Healthcare"}}],
  "active": true,
  "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
           {"use": "usual", "given": ["Jim"]},
           {"use": "maiden", "family": "Windsor", "given": ["Peter", "James"], "period": {"end": "2002"}}],
  "telecom": [{"use": "home"}, {"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1},
              {"system": "phone", "value": "(03) 3410 5613", "use": "mobile", "rank": 2},
              {"system": "email", "value": "p.chalmers@example.org", "use": "old", "period": {"end": "2014"}}],
  "gender": "male", "birthDate": "1974-12-25",
  "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
  "deceasedBoolean": false,
  "address": [{"use": "home", "type": "both", "text": "534 Erewhon St PeasantVille, Rainbow, Vic  3999",
    "line": ["534 Erewhon St"], "city": "PleasantVille", "district": "Rainbow", "state": "Vic", "postalCode": "3999",
    "period": {"start": "1974-12-25"}}],
  "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
    "name": {"family": "du Marché", "given": ["Bénédicte"]}, "telecom": [{"system": "phone", "value": "+33 (237) 998327"}],
    "address": {"use": "home", "type": "both", "line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"},
    "gender": "female", "period": {"start": "2012"}}],
  "managingOrganization": {"reference": "Organization/1"}
}"#;

fn bench(label: &str, src: &str, res: &serde_json::Value, iters: u32) {
    let expr = parse(src).expect("parses");
    let ctx = EvalContext::new();
    // warm up (also initialises the type model)
    for _ in 0..1000 {
        black_box(evaluate(&expr, res, &ctx).expect("evaluates"));
    }
    let t = Instant::now();
    for _ in 0..iters {
        black_box(evaluate_to_bool(&expr, black_box(res), &ctx).ok());
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
    println!("{:>8.3} µs/op  {:<28} {}", us, label, src);
}

fn main() {
    let text = match std::env::args().nth(1) {
        Some(p) => std::fs::read_to_string(p).expect("read input"),
        None => PATIENT.to_string(),
    };
    let res: serde_json::Value = serde_json::from_str(&text).expect("json");
    println!("resource: {} bytes", text.len());
    let n = 200_000;
    bench(
        "invariant (pat-1 style)",
        "name.exists() or identifier.exists()",
        &res,
        n,
    );
    bench("invariant (dom-2)", "contained.contained.empty()", &res, n);
    bench(
        "invariant (dom-4)",
        "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",
        &res,
        n,
    );
    bench("invariant (pat-1)", "contact.all(name.exists() or telecom.exists() or address.exists() or organization.exists())", &res, n);
    bench("invariant (dom-6)", "text.`div`.exists()", &res, n);
    bench(
        "search (phone)",
        "Patient.telecom.where(system='phone')",
        &res,
        n,
    );
    bench(
        "search (birthdate cmp)",
        "Patient.birthDate < @2000-01-01",
        &res,
        n,
    );
    bench(
        "search (deceased)",
        "Patient.deceased.exists() and Patient.deceased != false",
        &res,
        n,
    );
    bench(
        "search (organization)",
        "Patient.managingOrganization.where(resolve() is Organization)",
        &res,
        n,
    );
    bench("descendants count", "descendants().count()", &res, n / 10);
}
