//! Criterion benchmarks for one very large resource: every per-resource step
//! of a write (parse, structural check, profile validation, index extraction,
//! the SQLite insert) on two Observations of about 10 MB each, one with 14,000
//! full components, one with 100,000 small ones. Each step must be linear in
//! the size: a quadratic one (FHIRPath `|` over the components in index
//! extraction, issue 10 item 14) took 15 s for 4,000 components.
//!
//! Run: `cargo bench --bench large` (release). Validation needs the R4 core
//! package (`FHIRBRIDGE_R4_EXAMPLES_DIR`, or the `hl7.fhir.r4.examples#4.0.1`
//! package under `FHIR_PACKAGE_CACHE`); it is skipped with a message without.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fhirbridge::model::ResourceType;
use fhirbridge::service::write::{prepare_write, WriteTarget};
use fhirbridge::storage::sql::{SqlBackend, SqlOptions};
use fhirbridge::storage::{Backend, CreateRequest, RequestContext};
use serde_json::{json, Value};

const BASE: &str = "http://localhost/fhir";

/// About 725 bytes per component: coded, with a quantity, an interpretation
/// and a reference range (what a device panel sends).
fn full_components(n: usize) -> Value {
    let comps: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "code": {"coding": [{"system": "http://loinc.org", "code": format!("{}-{}", 8000 + i % 900, i % 10),
                                     "display": format!("Component measurement number {i} with a fairly long display text for realism")}],
                         "text": format!("component {i} text describing what was measured in some detail")},
                "valueQuantity": {"value": 100 + (i % 50), "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
                "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N", "display": "Normal"}]}],
                "referenceRange": [{"low": {"value": 90, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
                                    "high": {"value": 140, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
                                    "text": "normal range for this component of the observation"}]
            })
        })
        .collect();
    observation(comps)
}

/// About 100 bytes per component: a coding and a quantity.
fn small_components(n: usize) -> Value {
    let comps: Vec<Value> = (0..n)
        .map(|i| {
            json!({"code": {"coding": [{"system": "http://loinc.org", "code": format!("{}-8", i % 1000)}]},
                   "valueQuantity": {"value": i}})
        })
        .collect();
    observation(comps)
}

fn observation(components: Vec<Value>) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-01T10:00:00Z",
        "component": components
    })
}

fn core_package() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("FHIRBRIDGE_R4_EXAMPLES_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var("FHIR_PACKAGE_CACHE").ok()?;
    let dir = Path::new(&cache).join("hl7.fhir.r4.examples#4.0.1/package");
    dir.is_dir().then_some(dir)
}

fn validator() -> Option<fhir_validation::Validator> {
    let Some(core) = core_package() else {
        eprintln!("no R4 core package (FHIRBRIDGE_R4_EXAMPLES_DIR): validation is not measured");
        return None;
    };
    // UK Core is built in; no extra profile directory.
    let registry = fhirbridge::validation::build_registry(&core, None).expect("registry");
    Some(fhir_validation::Validator::new(
        Arc::new(registry),
        Default::default(),
    ))
}

fn large(c: &mut Criterion) {
    let validator = validator();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<SqlBackend> = Arc::new(
        SqlBackend::open(&SqlOptions {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            pool_size: 2,
            acquire_timeout: Duration::from_secs(30),
            sqlite_synchronous_full: false,
        })
        .expect("open"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let ctx = RequestContext::system("bench", std::sync::Arc::new(fhirbridge::policy::AllowAll));
    for (name, resource) in [
        ("observation_10mb_14k_components", full_components(14_000)),
        (
            "observation_10mb_100k_components",
            small_components(100_000),
        ),
    ] {
        let bytes = serde_json::to_vec(&resource).expect("serialises");
        let value = fhir_structure::check::parse_json(&bytes).expect("parses");
        let mut g = c.benchmark_group(name);
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(10))
            .throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("parse_json", |b| {
            b.iter(|| fhir_structure::check::parse_json(black_box(&bytes)))
        });
        g.bench_function("check_resource", |b| {
            b.iter(|| fhir_structure::check::check_resource(black_box(&value)))
        });
        if let Some(v) = &validator {
            g.bench_function("validate", |b| {
                b.iter(|| v.validate(black_box(&value), &[]))
            });
        }
        g.bench_function("extract_index", |b| {
            b.iter(|| {
                fhirbridge::search::index::extract(
                    ResourceType::Observation,
                    black_box(&value),
                    BASE,
                )
            })
        });
        let content = prepare_write(
            ResourceType::Observation,
            value.clone(),
            WriteTarget::Create,
            BASE,
        )
        .expect("valid");
        g.bench_function("create_sqlite", |b| {
            b.iter(|| {
                rt.block_on(backend.writer().expect("writer").create(
                    &ctx,
                    CreateRequest {
                        resource_type: ResourceType::Observation,
                        content: content.clone(),
                        if_none_exist: None,
                    },
                ))
                .expect("create")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, large);
criterion_main!(benches);
