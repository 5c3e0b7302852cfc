//! Criterion benchmarks for the per-request CPU work and the storage write path:
//! parse → structural check → index extraction → store, plus JSON/XML output.
//! Run: `cargo bench --bench core` (release). Input: fixtures/patient-typical.json.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fhirbridge::model::{LogicalId, ResourceType};
use fhirbridge::service::write::{prepare_write, WriteTarget};
use fhirbridge::storage::sql::{SqlBackend, SqlOptions};
use fhirbridge::storage::{Backend, CreateRequest, RequestContext};

const PATIENT: &str = include_str!("../fixtures/patient-typical.json");

fn cpu(c: &mut Criterion) {
    let bytes = PATIENT.as_bytes();
    let value = fhir_structure::check::parse_json(bytes).expect("fixture parses");
    let mut g = c.benchmark_group("patient");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("parse_json", |b| {
        b.iter(|| fhir_structure::check::parse_json(black_box(bytes)))
    });
    g.bench_function("check_resource", |b| {
        b.iter(|| fhir_structure::check::check_resource(black_box(&value)))
    });
    g.bench_function("extract_index", |b| {
        b.iter(|| {
            fhirbridge::search::index::extract(
                ResourceType::Patient,
                black_box(&value),
                "http://localhost/fhir",
            )
        })
    });
    g.bench_function("prepare_write(parse+check+index)", |b| {
        b.iter(|| {
            let v = fhir_structure::check::parse_json(black_box(bytes)).expect("parses");
            prepare_write(
                ResourceType::Patient,
                v,
                WriteTarget::Create,
                "http://localhost/fhir",
            )
        })
    });
    g.bench_function("serialize_json", |b| {
        b.iter(|| serde_json::to_string(black_box(&value)))
    });
    g.bench_function("serialize_xml", |b| {
        b.iter(|| fhirbolt_shim::json_to_xml(black_box(&value)))
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<SqlBackend> = Arc::new(
        SqlBackend::open(&SqlOptions {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            pool_size: 4,
            acquire_timeout: std::time::Duration::from_secs(5),
            sqlite_synchronous_full: false,
        })
        .expect("open"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let value = fhir_structure::check::parse_json(PATIENT.as_bytes()).expect("parses");
    let content = prepare_write(
        ResourceType::Patient,
        value,
        WriteTarget::Create,
        "http://localhost/fhir",
    )
    .expect("valid");
    let ctx = RequestContext::system("bench", std::sync::Arc::new(fhirbridge::policy::AllowAll));
    let mut g = c.benchmark_group("sqlite");
    g.bench_function("create_patient", |b| {
        b.iter(|| {
            rt.block_on(backend.writer().expect("writer").create(
                &ctx,
                CreateRequest {
                    resource_type: ResourceType::Patient,
                    content: content.clone(),
                    if_none_exist: None,
                },
            ))
            .expect("create")
        })
    });
    let created = rt
        .block_on(backend.writer().expect("writer").create(
            &ctx,
            CreateRequest {
                resource_type: ResourceType::Patient,
                content: content.clone(),
                if_none_exist: None,
            },
        ))
        .expect("create");
    let id: LogicalId = created.stored.expect("stored").id;
    g.bench_function("read_patient", |b| {
        b.iter(|| {
            rt.block_on(
                backend
                    .reader()
                    .expect("reader")
                    .read(&ctx, ResourceType::Patient, &id),
            )
            .expect("read")
        })
    });
    g.finish();
}

criterion_group!(benches, cpu, store);
criterion_main!(benches);
