//! What Consent enforcement costs one request: the policy's decisions for a
//! backend app with 100,000 patients' data-sharing Consents in force (1% deny
//! that app by client id, 5% a national-opt-out style purpose deny, the rest
//! permits), against the same decisions with no Consents. `denied/cold` is a
//! decision after a Consent write (the per-subject cache is empty); `warm`
//! is every other request.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use fhirbridge::auth::scope::Scopes;
use fhirbridge::auth::Caller;
use fhirbridge::consent::{ConsentIndex, Subject};
use fhirbridge::context::{Principal, RequestContext};
use fhirbridge::model::{Instant, LogicalId, ResourceType, StoredResource};
use fhirbridge::policy::smart::SmartPolicy;
use serde_json::json;

const PATIENTS: usize = 100_000;

fn consent(patient: usize) -> serde_json::Value {
    let provision = if patient % 100 == 0 {
        json!({"type": "permit", "provision": [{"type": "deny", "actor": [{"reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/client-id", "value": "app-x"}}}]}]})
    } else if patient % 20 == 1 {
        json!({"type": "deny", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]})
    } else {
        json!({"type": "permit"})
    };
    json!({"resourceType": "Consent", "status": "active",
           "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "INFA"}]}],
           "patient": {"reference": format!("Patient/p{patient}")},
           "provision": provision})
}

fn caller(client: &str, purposes: &[&str]) -> Caller {
    Caller {
        issuer: "https://iss.test".into(),
        subject: "bench".into(),
        client_id: Some(client.into()),
        scopes: Scopes::parse("system/*.rs"),
        patient: None,
        fhir_user: None,
        proofing_ok: true,
        expires_at: i64::MAX,
        nhs_number: None,
        ods_code: None,
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
    }
}

fn decisions(c: &mut Criterion) {
    let full = Arc::new(ConsentIndex::new());
    for p in 0..PATIENTS {
        full.apply(&format!("c{p}"), 1, Some(&consent(p)));
    }
    let empty = Arc::new(ConsentIndex::new());
    let mr = StoredResource {
        resource_type: ResourceType::MedicationRequest,
        id: LogicalId::parse("mr-1").unwrap(),
        version: 1,
        last_updated: Instant(0),
        content: Some(
            json!({"resourceType": "MedicationRequest", "id": "mr-1", "status": "active",
                   "intent": "order", "medicationCodeableConcept": {"text": "x"},
                   "subject": {"reference": "Patient/p5"}})
            .to_string(),
        ),
    };
    let mut g = c.benchmark_group("consent");
    for (name, index) in [("none", empty.clone()), ("100k", full.clone())] {
        let policy = Arc::new(SmartPolicy::with_consents(
            "https://bench.test/fhir",
            index.clone(),
            fhirbridge::consent::ConsentSettings::default().withheld(),
        ));
        let ctx = RequestContext::new(
            "bench".into(),
            Principal::Caller(Arc::new(caller("app-x", &[]))),
            policy,
        );
        g.bench_function(format!("restrict/{name}"), |b| {
            b.iter(|| black_box(ctx.restriction(ResourceType::MedicationRequest)))
        });
        g.bench_function(format!("admit/{name}"), |b| {
            b.iter(|| black_box(ctx.admit(&mr)))
        });
    }
    let s = Subject {
        client: Some("app-x".into()),
        ..Default::default()
    };
    g.bench_function("denied/warm", |b| b.iter(|| black_box(full.denied(&s))));
    let research = Subject {
        client: Some("research-app".into()),
        purposes: vec!["HRESCH".into()],
        ..Default::default()
    };
    g.bench_function("denied/warm-research", |b| {
        b.iter(|| black_box(full.denied(&research)))
    });
    g.bench_function("denied/cold", |b| {
        b.iter(|| {
            // A write in between: the cache is dropped.
            full.apply("c1", 1, Some(&consent(1)));
            black_box(full.denied(&s))
        })
    });
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
