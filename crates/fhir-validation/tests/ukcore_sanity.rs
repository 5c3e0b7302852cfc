//! Sanity checks against the UK Core STU2 definitions and examples: the
//! examples validate; mutated ones (NHS number system misspelt, bad check
//! digit, app-3 violation, wrong choice type, closed-slice/cardinality
//! violations) fail with the rule named in the message.
//!
//! Needs `FHIRBRIDGE_R4_EXAMPLES_DIR` (the core package dir) and
//! `FHIRBRIDGE_UKCORE_DIR` (the UK Core snapshot holding `stu2/`, e.g.
//! /work/shared/ukcore; a `stu2` folder itself also works); skips otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fhir_validation::{Registry, Severity, Validator, ValidatorOptions};
use serde_json::{json, Value};

const PATIENT: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
const APPOINTMENT: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Appointment";

fn setup() -> Option<(Arc<Registry>, PathBuf)> {
    let core = std::env::var_os("FHIRBRIDGE_R4_EXAMPLES_DIR")?;
    let uk = PathBuf::from(std::env::var_os("FHIRBRIDGE_UKCORE_DIR")?);
    let uk = if uk.join("stu2").is_dir() {
        uk.join("stu2")
    } else {
        uk
    };
    let mut b = Registry::from_core_package(Path::new(&core)).expect("core");
    for sub in ["structuredefinitions", "valuesets", "codesystems"] {
        b.add_dir(&uk.join(sub)).expect("ukcore dir");
    }
    Some((Arc::new(b.build().expect("registry")), uk))
}

fn example(uk: &Path, name: &str) -> Value {
    let xml = std::fs::read_to_string(uk.join("examples").join(name)).expect("example");
    fhir_validation::xml_to_json(&xml).expect("xml")
}

fn errors(v: &Validator, r: &Value, profile: &str) -> Vec<String> {
    v.validate(r, &[profile])
        .issues
        .into_iter()
        .filter(|i| i.severity.is_error())
        .map(|i| i.to_string())
        .collect()
}

#[test]
fn ukcore_examples_and_mutations() {
    let Some((reg, uk)) = setup() else {
        eprintln!("skipped: set FHIRBRIDGE_R4_EXAMPLES_DIR and FHIRBRIDGE_UKCORE_DIR");
        return;
    };
    assert!(reg.profile_urls().iter().any(|u| u == PATIENT));
    let lenient = Validator::new(
        reg.clone(),
        ValidatorOptions {
            nhs_number: Severity::Warning,
            ..Default::default()
        },
    );
    let strict = Validator::new(reg.clone(), ValidatorOptions::default());

    let patient = example(&uk, "UKCore-Patient-RichardSmith-Example.xml");
    assert_eq!(errors(&strict, &patient, PATIENT), Vec::<String>::new());

    // BabyPatient's NHS number fails Modulus 11: error by default, warning when lenient
    let baby = example(&uk, "UKCore-Patient-BabyPatient-Example.xml");
    assert!(lenient.validate(&baby, &[PATIENT]).is_valid());
    let e = errors(&strict, &baby, PATIENT);
    assert!(e.iter().any(|m| m.contains("Modulus 11")), "{e:?}");

    // misspelt NHS number system
    let mut p = patient.clone();
    p["identifier"][0]["system"] = json!("http://fhir.nhs.uk/Id/nhs-number");
    let e = errors(&strict, &p, PATIENT);
    assert!(e.iter().any(|m| m.contains("Slice 'nhsNumber'")), "{e:?}");

    // nhsNumber slice without a value
    let mut p = patient.clone();
    p["identifier"][0].as_object_mut().unwrap().remove("value");
    let e = errors(&strict, &p, PATIENT);
    assert!(
        e.iter()
            .any(|m| m.contains("nhsNumber") && m.contains("minimum")),
        "{e:?}"
    );

    // two NHS numbers: slice max 1
    let mut p = patient.clone();
    let id = p["identifier"][0].clone();
    p["identifier"].as_array_mut().unwrap().push(id);
    let e = errors(&strict, &p, PATIENT);
    assert!(e.iter().any(|m| m.contains("Slice 'nhsNumber'")), "{e:?}");

    // a required binding (gender)
    let mut p = patient.clone();
    p["gender"] = json!("mail");
    let e = errors(&strict, &p, PATIENT);
    assert!(
        e.iter().any(|m| m.contains("administrative-gender")),
        "{e:?}"
    );

    // Appointment: app-3
    let appt = example(&uk, "UKCore-Appointment-OrthopaedicSurgery-Example.xml");
    assert_eq!(errors(&strict, &appt, APPOINTMENT), Vec::<String>::new());
    let mut a = appt.clone();
    let o = a.as_object_mut().unwrap();
    o.remove("start");
    o.remove("end");
    o.insert("status".into(), json!("booked"));
    let e = errors(&strict, &a, APPOINTMENT);
    assert!(e.iter().any(|m| m.contains("app-3")), "{e:?}");

    // extension value type restricted by the extension definition
    let ext = example(&uk, "UKCore-Patient-Extension-EthnicCategory-Example.xml");
    assert_eq!(errors(&strict, &ext, PATIENT), Vec::<String>::new());
    let mut x = ext.clone();
    let e0 = x["extension"][0].as_object_mut().unwrap();
    e0.remove("valueCodeableConcept");
    e0.insert("valueString".into(), json!("A"));
    let e = errors(&strict, &x, PATIENT);
    assert!(e.iter().any(|m| m.contains("not allowed")), "{e:?}");

    // unknown profile given explicitly
    let r = strict.validate(&patient, &["https://example.org/StructureDefinition/nope"]);
    assert!(r
        .issues
        .iter()
        .any(|i| i.code == "not-found" && i.severity.is_error()));
}
