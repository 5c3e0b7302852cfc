//! UK Core cross-check: fhirbridge's own UK Core conformance resources
//! (`profiles/ukcore/`) against the official UK Core definitions.
//!
//! Environment (the test prints a skip message and passes when either is unset):
//!
//! * `FHIRBRIDGE_UKCORE_DIR`: the UK Core snapshot (`shared/ukcore`) with
//!   `stu2/` and `stu3-currentbuild/`, each holding `structuredefinitions/`,
//!   `valuesets/`, `codesystems/` and `examples/` (XML).
//! * `FHIRBRIDGE_R4_EXAMPLES_DIR`: the unpacked `hl7.fhir.r4.examples` 4.0.1
//!   package (the directory holding `package.json`, or its parent).
//!
//! Two registries are built from the core package:
//!
//! * **ours**: + every resource in `profiles/ukcore/`;
//! * **official**: + the STU2 StructureDefinitions, ValueSets and CodeSystems,
//!   + the STU3-build `UKCore-Consent` and `ValueSet-UKCore-ConsentException`.
//!
//! Groups (each prints a table; the test fails at the end if any group failed):
//!
//! * **A** every official example of Patient, Appointment, MedicationRequest and
//!   Consent (both snapshots) is valid against the UK Core profile of its type
//!   in both registries. The validator runs in profile-validation mode (NHS
//!   number Modulus 11 as a warning): UK Core itself has no check-digit rule and
//!   its `UKCore-Patient-BabyPatient-Example` carries `9912003890`, which fails
//!   Modulus 11. XML files that are not FHIR XML (the STU2 PreferredDispenser
//!   example has no namespace) must be rejected by the parser and are listed.
//! * **B** mutations of those examples, generated here, are invalid in both
//!   registries, each with an error whose message or expression contains the
//!   expected key (case-insensitive). Run with default options (Modulus 11 is
//!   an error).
//! * **C** `fixtures/ukcore/*.json` are valid against our profiles (default
//!   options); `fixtures/ukcore/invalid/*.json` are invalid with the substring
//!   from `invalid/expectations.json`. The official registry's verdict is shown
//!   for information.

// A test: panicking on a broken set-up is the point (the crate denies these lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fhir_validation::{Registry, Severity, ValidationReport, Validator, ValidatorOptions};
use serde_json::{json, Value};

const SD: &str = "https://fhir.hl7.org.uk/StructureDefinition/";
const CS: &str = "https://fhir.hl7.org.uk/CodeSystem/";
const PATIENT: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
const APPOINTMENT: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Appointment";
const MEDREQ: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest";
const CONSENT: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Consent";
const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Official example files that are expected to be rejected by the XML parser.
const NOT_FHIR_XML: &[&str] =
    &["UKCore-Patient-Extension-PreferredDispenserOrganization-Example.xml"];

fn profile_for(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "Patient" => Some(PATIENT),
        "Appointment" => Some(APPOINTMENT),
        "MedicationRequest" => Some(MEDREQ),
        "Consent" => Some(CONSENT),
        _ => None,
    }
}

// ------------------------------------------------------------------ set-up

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn core_package_dir(dir: PathBuf) -> PathBuf {
    if dir.join("package.json").is_file() {
        dir
    } else {
        dir.join("package")
    }
}

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The two registries, with a default (strict) and a profile-mode validator each.
struct Side {
    name: &'static str,
    strict: Validator,
    profile_mode: Validator,
}

fn side(name: &'static str, registry: Registry) -> Side {
    for url in [PATIENT, APPOINTMENT, MEDREQ, CONSENT] {
        match registry.profile(url) {
            Some(p) => {
                for w in &p.warnings {
                    println!("  [{name}] snapshot warning in {url}: {w}");
                }
            }
            None => panic!("[{name}] profile {url} is not in the registry"),
        }
    }
    let registry = Arc::new(registry);
    let strict = Validator::new(registry.clone(), ValidatorOptions::default());
    let profile_mode = Validator::new(
        registry,
        ValidatorOptions {
            nhs_number: Severity::Warning,
            ..ValidatorOptions::default()
        },
    );
    Side {
        name,
        strict,
        profile_mode,
    }
}

fn build_ours(core: &Path) -> Side {
    let dir = repo_dir().join("profiles/ukcore");
    let mut b = Registry::from_core_package(core).expect("core package");
    let n = b.add_dir(&dir).expect("profiles/ukcore");
    println!("ours: {n} resources from {}", dir.display());
    assert!(
        n >= 59,
        "expected at least 59 conformance resources in profiles/ukcore, got {n}"
    );
    side("ours", b.build().expect("build ours"))
}

/// XML declarations that fhirbolt rejects although XML encoding names are
/// case-insensitive (`encoding="utf-8"`, used by 38 of the UK Core files).
/// Rewritten here so the official definitions load; see [`xml_to_json`].
const LOWERCASE_DECL: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>";

/// `fhirbolt_shim::xml_to_json`, retrying once with the XML declaration's
/// encoding name upper-cased. Returns whether the retry was needed.
fn xml_to_json(xml: &str) -> Result<(Value, bool), String> {
    match fhirbolt_shim::xml_to_json(xml) {
        Ok(v) => Ok((v, false)),
        Err(e)
            if xml
                .trim_start_matches('\u{feff}')
                .starts_with(LOWERCASE_DECL) =>
        {
            let fixed = xml.replacen(
                LOWERCASE_DECL,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                1,
            );
            fhirbolt_shim::xml_to_json(&fixed)
                .map(|v| (v, true))
                .map_err(|e2| format!("{e} (after encoding fix: {e2})"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Loads every XML definition in `dir` into `b`; returns (added, needed the encoding fix).
fn add_xml_dir(b: &mut fhir_validation::RegistryBuilder, dir: &Path) -> (usize, usize) {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    paths.sort();
    let (mut n, mut fixed) = (0, 0);
    for p in paths {
        let xml = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let (v, f) = xml_to_json(&xml).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        b.add_resource(v)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        n += 1;
        fixed += usize::from(f);
    }
    (n, fixed)
}

fn build_official(ukcore: &Path, core: &Path) -> Side {
    let mut b = Registry::from_core_package(core).expect("core package");
    let (mut n, mut fixed) = (0, 0);
    for sub in ["structuredefinitions", "valuesets", "codesystems"] {
        let (a, f) = add_xml_dir(&mut b, &ukcore.join("stu2").join(sub));
        n += a;
        fixed += f;
    }
    let stu3 = ukcore.join("stu3-currentbuild");
    for file in [
        "structuredefinitions/UKCore-Consent.xml",
        "valuesets/ValueSet-UKCore-ConsentException.xml",
    ] {
        let p = stu3.join(file);
        let xml = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let (v, f) = xml_to_json(&xml).unwrap_or_else(|e| panic!("{file}: {e}"));
        b.add_resource(v).unwrap_or_else(|e| panic!("{file}: {e}"));
        n += 1;
        fixed += usize::from(f);
    }
    println!(
        "official: {n} resources from {} ({fixed} only after upper-casing encoding=\"utf-8\": \
         fhirbolt-shim rejects them, and RegistryBuilder::add_dir would silently skip them)",
        ukcore.display()
    );
    side("official", b.build().expect("build official"))
}

// ------------------------------------------------------------------ helpers

fn errors(report: &ValidationReport) -> Vec<String> {
    report
        .issues
        .iter()
        .filter(|i| i.severity.is_error())
        .map(|i| {
            format!(
                "{} [{}] {}: {}",
                i.severity.as_str(),
                i.code,
                i.expression,
                i.message
            )
        })
        .collect()
}

/// An error issue whose message or expression contains one of `keys` (case-insensitive).
fn has_error_with(report: &ValidationReport, keys: &[&str]) -> bool {
    report.issues.iter().any(|i| {
        i.severity.is_error() && {
            let m = i.message.to_lowercase();
            let e = i.expression.to_lowercase();
            keys.iter().any(|k| {
                let k = k.to_lowercase();
                m.contains(&k) || e.contains(&k)
            })
        }
    })
}

/// The sorted, de-duplicated expressions of the error issues (to compare registries).
fn error_locations(report: &ValidationReport) -> Vec<String> {
    let mut v: Vec<String> = report
        .issues
        .iter()
        .filter(|i| i.severity.is_error())
        .map(|i| i.expression.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn first_errors(report: &ValidationReport, n: usize) -> String {
    let e = errors(report);
    if e.is_empty() {
        "(no errors)".into()
    } else {
        e.into_iter().take(n).collect::<Vec<_>>().join(" | ")
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

fn ptr<'a>(v: &'a mut Value, pointer: &str) -> &'a mut Value {
    v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("mutation base has no {pointer}"))
}

/// Replaces the value at `pointer`, or adds it when only the last (object key) segment is missing.
fn set(v: &mut Value, pointer: &str, new: Value) {
    if let Some(old) = v.pointer_mut(pointer) {
        *old = new;
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    match ptr(v, parent) {
        Value::Object(m) => {
            m.insert(last.to_string(), new);
        }
        _ => panic!("{parent} is not an object"),
    }
}

/// Removes the member at `pointer` (its last segment is an object key or array index).
fn remove(v: &mut Value, pointer: &str) -> Value {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    match ptr(v, parent) {
        Value::Object(m) => m
            .shift_remove(last)
            .unwrap_or_else(|| panic!("mutation base has no {pointer}")),
        Value::Array(a) => a.remove(last.parse::<usize>().expect("index")),
        _ => panic!("{parent} is not a container"),
    }
}

fn push(v: &mut Value, pointer: &str, item: Value) {
    match v.pointer_mut(pointer) {
        Some(Value::Array(a)) => a.push(item),
        Some(_) => panic!("{pointer} is not an array"),
        None => {
            let (parent, last) = pointer.rsplit_once('/').expect("pointer");
            match ptr(v, parent) {
                Value::Object(m) => {
                    m.insert(last.to_string(), json!([item]));
                }
                _ => panic!("{parent} is not an object"),
            }
        }
    }
}

/// Pointer of the extension with `url` ending in `suffix` in the `extension` array at `at`.
fn ext_ptr(v: &Value, at: &str, suffix: &str) -> String {
    let arr = v
        .pointer(&format!("{at}/extension"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no extensions at {at}"));
    let i = arr
        .iter()
        .position(|e| {
            e.get("url")
                .and_then(Value::as_str)
                .is_some_and(|u| u.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no extension {suffix} at {at}"));
    format!("{at}/extension/{i}")
}

fn ext_clone(v: &Value, at: &str, suffix: &str) -> Value {
    let p = ext_ptr(v, at, suffix);
    v.pointer(&p).cloned().expect("extension")
}

fn cc(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

// ------------------------------------------------------------------ official examples

struct Example {
    file: String,
    snapshot: &'static str,
    value: Value,
}

fn load_examples(ukcore: &Path) -> (Vec<Example>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    for snapshot in ["stu2", "stu3-currentbuild"] {
        let dir = ukcore.join(snapshot).join("examples");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        paths.sort();
        for p in paths {
            let file = p
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("?")
                .to_string();
            let xml =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            match xml_to_json(&xml) {
                Ok((value, _)) => {
                    let rt = value
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if profile_for(rt).is_some() {
                        out.push(Example {
                            file,
                            snapshot,
                            value,
                        });
                    }
                }
                Err(e) => rejected.push((format!("{snapshot}/{file}"), e.to_string())),
            }
        }
    }
    (out, rejected)
}

/// The official example with `id`: STU2 copy first, else the STU3-build one.
fn base<'a>(examples: &'a [Example], id: &str) -> &'a Value {
    examples
        .iter()
        .filter(|e| e.value.get("id").and_then(Value::as_str) == Some(id))
        .min_by_key(|e| e.snapshot != "stu2")
        .map(|e| &e.value)
        .unwrap_or_else(|| panic!("official example {id} not found"))
}

// ------------------------------------------------------------------ mutations

struct Mutation {
    name: &'static str,
    base: &'static str,
    /// Any of these (case-insensitive) in the message or expression of an error.
    expect: &'static [&'static str],
    edit: fn(&mut Value),
}

const RICHARD: &str = "UKCore-Patient-RichardSmith-Example";
const ADDRESS_KEY: &str = "UKCore-Patient-Extension-AddressKey-Example";
const OTHER_CONTACT: &str = "UKCore-Patient-Extension-OtherContactSystem-Example";
const LANGUAGES: &str = "UKCore-Patient-Sn-MultipleLanguages-Example";
const BIRTH_TIME: &str = "UKCore-Patient-Extension-BirthTime-Example";
const NHS_UNAVAILABLE: &str = "UKCore-Patient-Extension-NHSNumberUnavailableReason-Example";
const ORTHO: &str = "UKCore-Appointment-OrthopaedicSurgery-Example";
const EYE_DROPS: &str = "UKCore-MedicationRequest-EyeDrops-Example";
const REPEAT: &str = "UKCore-MedicationRequest-Extension-RepeatInformation-Example";
const CONSENT_EX: &str = "UKCore-Consent-ForInformationAccess-Example";

const VERIF: &str = "Extension-UKCore-NHSNumberVerificationStatus";

fn mutations() -> Vec<Mutation> {
    vec![
        // ---------------------------------------------------------- NHS number slice
        Mutation {
            name: "nhsNumber slice max 1: second NHS number",
            base: RICHARD,
            expect: &["nhsNumber"],
            edit: |r| {
                push(
                    r,
                    "/identifier",
                    json!({"system": NHS_NUMBER, "value": "9000000009"}),
                )
            },
        },
        Mutation {
            name: "nhsNumber.value 1..1: value removed",
            base: RICHARD,
            expect: &["nhsNumber", "identifier[0].value"],
            edit: |r| {
                remove(r, "/identifier/0/value");
            },
        },
        Mutation {
            name: "nhsNumber.value 1..1: identifier with the NHS number system only",
            base: NHS_UNAVAILABLE,
            expect: &["nhsNumber", "identifier[0].value"],
            edit: |r| push(r, "/identifier", json!({"system": NHS_NUMBER})),
        },
        Mutation {
            name: "NHS number Modulus 11: wrong check digit",
            base: RICHARD,
            expect: &["modulus 11", "check digit"],
            edit: |r| set(r, "/identifier/0/value", json!("9912003889")),
        },
        Mutation {
            name: "NHS number Modulus 11: check digit 10 (never issued)",
            base: RICHARD,
            expect: &["modulus 11", "check digit"],
            edit: |r| set(r, "/identifier/0/value", json!("1234567890")),
        },
        Mutation {
            name: "NHS number Modulus 11: printed 3-3-4 form",
            base: RICHARD,
            expect: &["modulus 11", "check digit", "10 digits"],
            edit: |r| set(r, "/identifier/0/value", json!("991 200 3888")),
        },
        Mutation {
            name: "NHS number Modulus 11: nine digits",
            base: RICHARD,
            expect: &["modulus 11", "check digit", "10 digits"],
            edit: |r| set(r, "/identifier/0/value", json!("991200388")),
        },
        // ---------------------------------------------------------- verification status
        Mutation {
            name: "verification status: code 09 not in England code system",
            base: RICHARD,
            expect: &["UKCore-NHSNumberVerificationStatus"],
            edit: |r| {
                set(
                    r,
                    "/identifier/0/extension/0/valueCodeableConcept/coding/0/code",
                    json!("09"),
                )
            },
        },
        Mutation {
            name: "verification status: PDS-era code system URL",
            base: RICHARD,
            expect: &["UKCore-NHSNumberVerificationStatus"],
            edit: |r| {
                set(
                    r,
                    "/identifier/0/extension/0/valueCodeableConcept/coding/0/system",
                    json!("https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus"),
                )
            },
        },
        Mutation {
            name: "verification status: valueCoding (PDS shape) instead of CodeableConcept",
            base: RICHARD,
            expect: &["NHSNumberVerificationStatus", "valueCoding"],
            edit: |r| {
                let ext = ptr(r, "/identifier/0/extension/0");
                let coding = ext["valueCodeableConcept"]["coding"][0].clone();
                ext.as_object_mut()
                    .expect("ext")
                    .shift_remove("valueCodeableConcept");
                ext["valueCoding"] = coding;
            },
        },
        Mutation {
            name: "verification status: wrong context (Patient root)",
            base: RICHARD,
            expect: &[VERIF],
            edit: |r| {
                let ext = remove(r, "/identifier/0/extension/0");
                push(r, "/extension", ext);
            },
        },
        // ---------------------------------------------------------- base required bindings
        Mutation {
            name: "gender required binding: 'M'",
            base: RICHARD,
            expect: &["administrative-gender"],
            edit: |r| set(r, "/gender", json!("M")),
        },
        Mutation {
            name: "gender required binding: 'intersex'",
            base: RICHARD,
            expect: &["administrative-gender"],
            edit: |r| set(r, "/gender", json!("intersex")),
        },
        Mutation {
            name: "communication.language required all-languages: SNOMED only",
            base: LANGUAGES,
            expect: &["all-languages"],
            edit: |r| {
                set(
                    r,
                    "/communication/0/language",
                    cc("http://snomed.info/sct", "703963007", "Makaton vocabulary"),
                )
            },
        },
        // ---------------------------------------------------------- Patient extensions
        Mutation {
            name: "birthSex required UKCore-BirthSex: code X",
            base: RICHARD,
            expect: &["UKCore-BirthSex"],
            edit: |r| {
                push(
                    r,
                    "/extension",
                    json!({"url": format!("{SD}Extension-UKCore-BirthSex"),
                           "valueCodeableConcept": cc("http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender", "X", "Other")}),
                )
            },
        },
        Mutation {
            name: "birthSex max 1: twice",
            base: RICHARD,
            expect: &["birthSex"],
            edit: |r| {
                let e = json!({"url": format!("{SD}Extension-UKCore-BirthSex"),
                               "valueCodeableConcept": cc("http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender", "M", "Male")});
                push(r, "/extension", e.clone());
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "ethnicCategory max 1 (profile): twice",
            base: RICHARD,
            expect: &["ethnicCategory"],
            edit: |r| {
                let e = ext_clone(r, "", "Extension-UKCore-EthnicCategory");
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "EthnicCategory value type: valueCoding",
            base: RICHARD,
            expect: &["EthnicCategory", "valueCoding"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-EthnicCategory");
                let ext = ptr(r, &p);
                let coding = ext["valueCodeableConcept"]["coding"][0].clone();
                ext.as_object_mut()
                    .expect("ext")
                    .shift_remove("valueCodeableConcept");
                ext["valueCoding"] = coding;
            },
        },
        Mutation {
            name: "residentialStatus max 1: twice",
            base: RICHARD,
            expect: &["residentialStatus"],
            edit: |r| {
                let e = ext_clone(r, "", "Extension-UKCore-ResidentialStatus");
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "nhsNumberUnavailableReason max 1: twice",
            base: NHS_UNAVAILABLE,
            expect: &["nhsNumberUnavailableReason"],
            edit: |r| {
                let e = ext_clone(r, "", "Extension-UKCore-NHSNumberUnavailableReason");
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "ContactPreference context: on Patient.contact",
            base: RICHARD,
            expect: &["ContactPreference"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-ContactPreference");
                let e = remove(r, &p);
                push(r, "/contact/0/extension", e);
            },
        },
        Mutation {
            name: "ContactPreference value[x] 0..0: top-level value added",
            base: RICHARD,
            expect: &["ext-1", "maximum allowed = 0"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-ContactPreference");
                ptr(r, &p)["valueString"] = json!("phone please");
            },
        },
        Mutation {
            name: "ContactPreference PreferredContactMethod max 1: twice",
            base: RICHARD,
            expect: &["PreferredContactMethod"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-ContactPreference");
                let sub = ext_clone(r, &p, "PreferredContactMethod");
                push(r, &format!("{p}/extension"), sub);
            },
        },
        Mutation {
            name: "ContactPreference PreferredContactTimes type: valueBoolean",
            base: RICHARD,
            expect: &["PreferredContactTimes", "Timing"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-ContactPreference");
                let sp = ext_ptr(r, &p, "PreferredContactTimes");
                set(
                    r,
                    &sp,
                    json!({"url": "PreferredContactTimes", "valueBoolean": true}),
                );
            },
        },
        Mutation {
            name: "DeathNotificationStatus: status sub-extension missing",
            base: RICHARD,
            expect: &["deathNotificationStatus"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-DeathNotificationStatus");
                let sp = ext_ptr(r, &p, "deathNotificationStatus");
                remove(r, &sp);
            },
        },
        Mutation {
            name: "DeathNotificationStatus systemEffectiveDate type: valueString",
            base: RICHARD,
            expect: &["systemEffectiveDate", "dateTime"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-DeathNotificationStatus");
                let sp = ext_ptr(r, &p, "systemEffectiveDate");
                set(
                    r,
                    &sp,
                    json!({"url": "systemEffectiveDate", "valueString": "last August"}),
                );
            },
        },
        Mutation {
            name: "ContactRank type: valueInteger",
            base: RICHARD,
            expect: &["ContactRank", "positiveInt"],
            edit: |r| {
                let p = ext_ptr(r, "/contact/0", "Extension-UKCore-ContactRank");
                set(
                    r,
                    &p,
                    json!({"url": format!("{SD}Extension-UKCore-ContactRank"), "valueInteger": 1}),
                );
            },
        },
        Mutation {
            name: "ContactRank context: on Patient root",
            base: RICHARD,
            expect: &["ContactRank"],
            edit: |r| {
                let p = ext_ptr(r, "/contact/0", "Extension-UKCore-ContactRank");
                let e = remove(r, &p);
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "CopyCorrespondenceIndicator type: valueString",
            base: RICHARD,
            expect: &["CopyCorrespondenceIndicator", "boolean"],
            edit: |r| {
                let p = ext_ptr(
                    r,
                    "/contact/0",
                    "Extension-UKCore-CopyCorrespondenceIndicator",
                );
                set(
                    r,
                    &p,
                    json!({"url": format!("{SD}Extension-UKCore-CopyCorrespondenceIndicator"), "valueString": "yes"}),
                );
            },
        },
        Mutation {
            name: "OtherContactSystem context: on Patient root",
            base: OTHER_CONTACT,
            expect: &["OtherContactSystem"],
            edit: |r| {
                let e = remove(r, "/telecom/0/_system/extension/0");
                remove(r, "/telecom/0/_system");
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "OtherContactSystem context: on ContactPoint, not ContactPoint.system",
            base: OTHER_CONTACT,
            expect: &["OtherContactSystem"],
            edit: |r| {
                let e = remove(r, "/telecom/0/_system/extension/0");
                remove(r, "/telecom/0/_system");
                push(r, "/telecom/0/extension", e);
            },
        },
        Mutation {
            name: "AddressKey: value sub-extension missing",
            base: ADDRESS_KEY,
            expect: &["AddressKey", "slice 'value'"],
            edit: |r| {
                let p = ext_ptr(r, "/address/0", "Extension-UKCore-AddressKey");
                let sp = ext_ptr(r, &p, "value");
                remove(r, &sp);
            },
        },
        Mutation {
            name: "AddressKey context: on Patient root",
            base: ADDRESS_KEY,
            expect: &["AddressKey"],
            edit: |r| {
                let p = ext_ptr(r, "/address/0", "Extension-UKCore-AddressKey");
                let e = remove(r, &p);
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "patient-birthTime context: on Patient root",
            base: BIRTH_TIME,
            expect: &["birthTime"],
            edit: |r| {
                let e = remove(r, "/_birthDate/extension/0");
                remove(r, "/_birthDate");
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "proficiency max 1 (profile): twice on one communication",
            base: LANGUAGES,
            expect: &["proficiency"],
            edit: |r| {
                let e = ext_clone(r, "/communication/0", "patient-proficiency");
                push(r, "/communication/0/extension", e);
            },
        },
        Mutation {
            name: "maritalStatus extensible: unknown code in UK Core England code system",
            base: RICHARD,
            expect: &["UKCore-PersonMaritalStatusEngland"],
            edit: |r| {
                r["maritalStatus"] = cc(
                    &format!("{CS}UKCore-PersonMaritalStatusEngland"),
                    "Q",
                    "Quietly married",
                );
            },
        },
        Mutation {
            name: "contact.relationship extensible: unknown UK Core relationship code",
            base: RICHARD,
            expect: &["UKCore-AdditionalPersonRelationshipRole"],
            edit: |r| {
                set(
                    r,
                    "/contact/0/relationship/0/coding/0/code",
                    json!("Friend"),
                )
            },
        },
        Mutation {
            name: "pat-1: contact with neither name, telecom, address nor organization",
            base: RICHARD,
            expect: &["pat-1"],
            edit: |r| {
                for k in ["name", "telecom", "address"] {
                    remove(r, &format!("/contact/0/{k}"));
                }
            },
        },
        // ---------------------------------------------------------- Appointment
        Mutation {
            name: "app-1: participant without type or actor",
            base: ORTHO,
            expect: &["app-1"],
            edit: |r| {
                remove(r, "/participant/0/actor");
            },
        },
        Mutation {
            name: "app-2: start without end (proposed)",
            base: ORTHO,
            expect: &["app-2"],
            edit: |r| {
                set(r, "/status", json!("proposed"));
                remove(r, "/end");
            },
        },
        Mutation {
            name: "app-3: booked without start and end",
            base: ORTHO,
            expect: &["app-3"],
            edit: |r| {
                remove(r, "/start");
                remove(r, "/end");
            },
        },
        Mutation {
            name: "app-4: cancelationReason on a booked appointment",
            base: ORTHO,
            expect: &["app-4"],
            edit: |r| {
                r["cancelationReason"] = cc(
                    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
                    "pat",
                    "Patient",
                );
            },
        },
        Mutation {
            name: "Appointment.status required appointmentstatus: 'confirmed'",
            base: ORTHO,
            expect: &["appointmentstatus"],
            edit: |r| set(r, "/status", json!("confirmed")),
        },
        Mutation {
            name: "Appointment.status 1..1: removed",
            base: ORTHO,
            expect: &["status"],
            edit: |r| {
                remove(r, "/status");
            },
        },
        Mutation {
            name: "Appointment.participant 1..*: removed",
            base: ORTHO,
            expect: &["participant"],
            edit: |r| {
                remove(r, "/participant");
            },
        },
        Mutation {
            name: "participant.status required participationstatus: 'maybe'",
            base: ORTHO,
            expect: &["participationstatus"],
            edit: |r| set(r, "/participant/0/status", json!("maybe")),
        },
        Mutation {
            name: "participant.required required participantrequired: 'always'",
            base: ORTHO,
            expect: &["participantrequired"],
            edit: |r| set(r, "/participant/0/required", json!("always")),
        },
        Mutation {
            name: "deliveryChannel max 1 (profile): twice",
            base: ORTHO,
            expect: &["deliveryChannel"],
            edit: |r| {
                let e = ext_clone(r, "", "Extension-UKCore-DeliveryChannel");
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "DeliveryChannel context: on Appointment.participant",
            base: ORTHO,
            expect: &["DeliveryChannel"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-DeliveryChannel");
                let e = remove(r, &p);
                push(r, "/participant/0/extension", e);
            },
        },
        Mutation {
            name: "DeliveryChannel extensible: unknown code in UK Core code system",
            base: ORTHO,
            expect: &["UKCore-DeliveryChannel"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-DeliveryChannel");
                set(
                    r,
                    &format!("{p}/valueCodeableConcept/coding/0/code"),
                    json!("Online"),
                );
            },
        },
        Mutation {
            name: "BookingOrganization type: valueString",
            base: ORTHO,
            expect: &["BookingOrganization", "Reference"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-BookingOrganization");
                set(
                    r,
                    &p,
                    json!({"url": format!("{SD}Extension-UKCore-BookingOrganization"), "valueString": "White Rose Medical Centre"}),
                );
            },
        },
        Mutation {
            name: "BookingOrganization target: Reference to a Patient",
            base: ORTHO,
            expect: &["Organization"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-BookingOrganization");
                set(
                    r,
                    &format!("{p}/valueReference"),
                    json!({"reference": "Patient/UKCore-Patient-RichardSmith-Example"}),
                );
            },
        },
        Mutation {
            name: "bookingOrganization max 1: twice",
            base: ORTHO,
            expect: &["bookingOrganization"],
            edit: |r| {
                let e = ext_clone(r, "", "Extension-UKCore-BookingOrganization");
                push(r, "/extension", e);
            },
        },
        // ---------------------------------------------------------- MedicationRequest
        Mutation {
            name: "substitution 1..1 (UK Core): removed",
            base: EYE_DROPS,
            expect: &["substitution"],
            edit: |r| {
                remove(r, "/substitution");
            },
        },
        Mutation {
            name: "substitution.allowed[x] 1..1: only a reason",
            base: EYE_DROPS,
            expect: &["allowed"],
            edit: |r| {
                set(
                    r,
                    "/substitution",
                    json!({"reason": cc("http://terminology.hl7.org/CodeSystem/v3-ActReason", "CT", "continuing therapy")}),
                )
            },
        },
        Mutation {
            name: "intent required medicationrequest-intent: 'prescription'",
            base: EYE_DROPS,
            expect: &["medicationrequest-intent"],
            edit: |r| set(r, "/intent", json!("prescription")),
        },
        Mutation {
            name: "intent 1..1: removed",
            base: EYE_DROPS,
            expect: &["intent"],
            edit: |r| {
                remove(r, "/intent");
            },
        },
        Mutation {
            name: "status required medicationrequest-status: 'suspended'",
            base: EYE_DROPS,
            expect: &["medicationrequest-status"],
            edit: |r| set(r, "/status", json!("suspended")),
        },
        Mutation {
            name: "priority required request-priority: 'high'",
            base: REPEAT,
            expect: &["request-priority"],
            edit: |r| set(r, "/priority", json!("high")),
        },
        Mutation {
            name: "subject 1..1: removed",
            base: EYE_DROPS,
            expect: &["subject"],
            edit: |r| {
                remove(r, "/subject");
            },
        },
        Mutation {
            name: "medication[x] 1..1: removed",
            base: EYE_DROPS,
            expect: &["medication"],
            edit: |r| {
                remove(r, "/medicationReference");
            },
        },
        Mutation {
            name: "courseOfTherapyType extensible: unknown UK Core course-of-therapy code",
            base: REPEAT,
            expect: &["UKCore-MedicationRequestCourseOfTherapy"],
            edit: |r| {
                set(
                    r,
                    "/courseOfTherapyType/coding/0/code",
                    json!("continuous-repeat"),
                )
            },
        },
        Mutation {
            name: "medicationRepeatInformation max 1: twice",
            base: REPEAT,
            expect: &["medicationRepeatInformation"],
            edit: |r| {
                let e = ext_clone(r, "", "Extension-UKCore-MedicationRepeatInformation");
                push(r, "/extension", e);
            },
        },
        Mutation {
            name: "MedicationRepeatInformation numberOfPrescriptionsIssued type: valueString",
            base: REPEAT,
            expect: &["numberOfPrescriptionsIssued", "unsignedInt"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-MedicationRepeatInformation");
                let sp = ext_ptr(r, &p, "numberOfPrescriptionsIssued");
                set(
                    r,
                    &sp,
                    json!({"url": "numberOfPrescriptionsIssued", "valueString": "one"}),
                );
            },
        },
        Mutation {
            name: "MedicationRepeatInformation context: on dosageInstruction",
            base: REPEAT,
            expect: &["MedicationRepeatInformation"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-MedicationRepeatInformation");
                let e = remove(r, &p);
                push(r, "/dosageInstruction/0/extension", e);
            },
        },
        Mutation {
            name: "MedicationRepeatInformation value[x] 0..0: top-level value added",
            base: REPEAT,
            expect: &["ext-1", "maximum allowed = 0"],
            edit: |r| {
                let p = ext_ptr(r, "", "Extension-UKCore-MedicationRepeatInformation");
                ptr(r, &p)["valueUnsignedInt"] = json!(1);
            },
        },
        // ---------------------------------------------------------- Consent
        Mutation {
            name: "ppc-1: neither policy nor policyRule",
            base: CONSENT_EX,
            expect: &["ppc-1"],
            edit: |r| {
                remove(r, "/policy");
            },
        },
        Mutation {
            name: "Consent.status required consent-state-codes: 'granted'",
            base: CONSENT_EX,
            expect: &["consent-state-codes"],
            edit: |r| set(r, "/status", json!("granted")),
        },
        Mutation {
            name: "Consent.scope 1..1: removed",
            base: CONSENT_EX,
            expect: &["scope"],
            edit: |r| {
                remove(r, "/scope");
            },
        },
        Mutation {
            name: "Consent.category 1..*: removed",
            base: CONSENT_EX,
            expect: &["category"],
            edit: |r| {
                remove(r, "/category");
            },
        },
        Mutation {
            name: "provision.type required consent-provision-type: 'refuse'",
            base: CONSENT_EX,
            expect: &["consent-provision-type"],
            edit: |r| set(r, "/provision/type", json!("refuse")),
        },
        Mutation {
            name: "provision.data.meaning required consent-data-meaning: 'everything'",
            base: CONSENT_EX,
            expect: &["consent-data-meaning"],
            edit: |r| {
                set(
                    r,
                    "/provision/data",
                    json!([{"meaning": "everything", "reference": {"reference": "Patient/UKCore-Patient-RichardSmith-Example"}}]),
                )
            },
        },
    ]
}

// ------------------------------------------------------------------ fixtures

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| p.file_name().is_some_and(|f| f != "expectations.json"))
        .collect();
    v.sort();
    v
}

fn verdict(r: &ValidationReport) -> &'static str {
    if r.is_valid() {
        "valid"
    } else {
        "INVALID"
    }
}

// ------------------------------------------------------------------ the test

#[test]
fn ukcore_cross_check() {
    let (Some(ukcore), Some(r4)) = (
        env_dir("FHIRBRIDGE_UKCORE_DIR"),
        env_dir("FHIRBRIDGE_R4_EXAMPLES_DIR"),
    ) else {
        println!(
            "skipping UK Core cross-check: set FHIRBRIDGE_UKCORE_DIR (shared/ukcore) and \
             FHIRBRIDGE_R4_EXAMPLES_DIR (unpacked hl7.fhir.r4.examples 4.0.1)"
        );
        return;
    };
    let core = core_package_dir(r4);
    let sides = [build_ours(&core), build_official(&ukcore, &core)];
    let mut failures: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();

    // ---------------------------------------------------------------- A
    let (examples, rejected) = load_examples(&ukcore);
    println!(
        "\n== A: official examples ({}) against both registries (profile-validation mode)",
        examples.len()
    );
    println!("{:<68} {:<8} {:<8}", "example", "ours", "official");
    for ex in &examples {
        let rt = ex.value["resourceType"].as_str().unwrap_or("");
        let profile = profile_for(rt).expect("four types only");
        let mut cols = Vec::new();
        for s in &sides {
            let rep = s.profile_mode.validate(&ex.value, &[profile]);
            cols.push(if rep.is_valid() { "pass" } else { "FAIL" });
            if !rep.is_valid() {
                failures.entry("A").or_default().push(format!(
                    "{}/{} [{}]: {}",
                    ex.snapshot,
                    ex.file,
                    s.name,
                    first_errors(&rep, 6)
                ));
            }
        }
        println!(
            "{:<68} {:<8} {:<8}",
            short(&format!("{}/{}", ex.snapshot, ex.file), 68),
            cols[0],
            cols[1]
        );
    }
    for (file, err) in &rejected {
        let expected = NOT_FHIR_XML.iter().any(|n| file.ends_with(n));
        println!(
            "{:<68} parser rejected ({}): {}",
            short(file, 68),
            if expected { "expected" } else { "UNEXPECTED" },
            short(err, 80)
        );
        if !expected {
            failures
                .entry("A")
                .or_default()
                .push(format!("{file}: not parsed: {err}"));
        }
    }
    let per_type = |t: &str| {
        examples
            .iter()
            .filter(|e| e.value["resourceType"] == t)
            .count()
    };
    for t in ["Patient", "Appointment", "MedicationRequest", "Consent"] {
        assert!(per_type(t) > 0, "no official {t} example found");
    }

    // ---------------------------------------------------------------- B
    let muts = mutations();
    assert!(
        muts.len() >= 40,
        "need at least 40 mutations, have {}",
        muts.len()
    );
    println!(
        "\n== B: {} mutations of official examples must fail both registries with the expected key",
        muts.len()
    );
    println!(
        "{:<3} {:<72} {:<8} {:<8} error locations ours vs official",
        "#", "mutation (expected key)", "ours", "official"
    );
    let mut diverging = 0;
    for (n, m) in muts.iter().enumerate() {
        let mut r = base(&examples, m.base).clone();
        (m.edit)(&mut r);
        let rt = r["resourceType"].as_str().unwrap_or("").to_string();
        let profile = profile_for(&rt).expect("four types only");
        let mut cols = Vec::new();
        let mut error_sets = Vec::new();
        for s in &sides {
            let rep = s.strict.validate(&r, &[profile]);
            error_sets.push(error_locations(&rep));
            let ok = !rep.is_valid() && has_error_with(&rep, m.expect);
            cols.push(if ok {
                "fail ok"
            } else if rep.is_valid() {
                "PASSED"
            } else {
                "NO KEY"
            });
            if !ok {
                failures.entry("B").or_default().push(format!(
                    "#{} {} [{}] expected {:?}: {}",
                    n + 1,
                    m.name,
                    s.name,
                    m.expect,
                    first_errors(&rep, 6)
                ));
            }
        }
        let same = error_sets[0] == error_sets[1];
        if !same {
            diverging += 1;
        }
        println!(
            "{:<3} {:<72} {:<8} {:<8} {}",
            n + 1,
            short(&format!("{} ({})", m.name, m.expect.join("|")), 72),
            cols[0],
            cols[1],
            if same { "same" } else { "DIFFERENT" }
        );
    }

    println!("mutations whose error locations differ between the registries: {diverging}");

    // ---------------------------------------------------------------- C
    let fixtures = repo_dir().join("fixtures/ukcore");
    let valid = json_files(&fixtures);
    println!(
        "\n== C: fixtures/ukcore ({} valid, default options)",
        valid.len()
    );
    println!("{:<60} {:<8} {:<8}", "fixture", "ours", "official");
    let mut per_type_fixtures: BTreeMap<String, usize> = BTreeMap::new();
    for p in &valid {
        let v = read_json(p);
        let rt = v["resourceType"].as_str().unwrap_or("").to_string();
        *per_type_fixtures.entry(rt.clone()).or_default() += 1;
        let profile =
            profile_for(&rt).unwrap_or_else(|| panic!("{}: unexpected type {rt}", p.display()));
        let ours = sides[0].strict.validate(&v, &[profile]);
        let official = sides[1].strict.validate(&v, &[profile]);
        let name = p.file_name().and_then(|f| f.to_str()).unwrap_or("?");
        println!(
            "{:<60} {:<8} {:<8}",
            short(name, 60),
            verdict(&ours),
            verdict(&official)
        );
        if !ours.is_valid() {
            failures
                .entry("C")
                .or_default()
                .push(format!("{name} [ours]: {}", first_errors(&ours, 6)));
        }
        if !official.is_valid() {
            println!("    (official: {})", first_errors(&official, 3));
        }
    }
    for t in ["Patient", "Appointment", "MedicationRequest", "Consent"] {
        assert!(
            per_type_fixtures.get(t).copied().unwrap_or(0) >= 2,
            "need at least 2 valid {t} fixtures"
        );
    }
    let invalid_dir = fixtures.join("invalid");
    let expectations = read_json(&invalid_dir.join("expectations.json"));
    let files = expectations["files"]
        .as_object()
        .expect("expectations.files");
    let on_disk = json_files(&invalid_dir);
    println!("\n== C: fixtures/ukcore/invalid ({} files)", on_disk.len());
    println!(
        "{:<60} {:<30} {:<8} {:<8}",
        "fixture", "expected", "ours", "official"
    );
    for p in &on_disk {
        let name = p
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("?")
            .to_string();
        let Some(exp) = files.get(&name) else {
            failures
                .entry("C")
                .or_default()
                .push(format!("invalid/{name} has no entry in expectations.json"));
            continue;
        };
        let key = exp["expect"].as_str().expect("expect");
        let profile = exp["profile"].as_str().expect("profile");
        let v = read_json(p);
        let mut cols = Vec::new();
        for (i, s) in sides.iter().enumerate() {
            let rep = s.strict.validate(&v, &[profile]);
            let ok = !rep.is_valid() && has_error_with(&rep, &[key]);
            cols.push(if ok {
                "fail ok"
            } else if rep.is_valid() {
                "PASSED"
            } else {
                "NO KEY"
            });
            if !ok {
                let msg = format!(
                    "invalid/{name} [{}] expected {key:?}: {}",
                    s.name,
                    first_errors(&rep, 6)
                );
                if i == 0 {
                    failures.entry("C").or_default().push(msg);
                } else {
                    println!("    (official: {msg})");
                }
            }
        }
        println!(
            "{:<60} {:<30} {:<8} {:<8}",
            short(&name, 60),
            short(key, 30),
            cols[0],
            cols[1]
        );
    }
    for name in files.keys() {
        if !invalid_dir.join(name).is_file() {
            failures
                .entry("C")
                .or_default()
                .push(format!("expectations.json lists missing file {name}"));
        }
    }

    // ---------------------------------------------------------------- summary
    println!("\n== summary");
    for g in ["A", "B", "C"] {
        let f = failures.get(g).map_or(0, Vec::len);
        println!(
            "group {g}: {}",
            if f == 0 {
                "pass".to_string()
            } else {
                format!("{f} failure(s)")
            }
        );
    }
    if !failures.is_empty() {
        for (g, list) in &failures {
            println!("\n-- group {g} failures");
            for f in list {
                println!("  {f}");
            }
        }
        panic!(
            "UK Core cross-check failed: {}",
            failures
                .iter()
                .map(|(g, l)| format!("group {g}: {}", l.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
