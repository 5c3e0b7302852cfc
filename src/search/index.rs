//! Write-time extraction of index rows from a resource: every supported
//! SearchParameter's FHIRPath expression is evaluated on the resource and the
//! resulting elements are turned into rows by parameter type. Storage writes
//! the rows in the same transaction as the resource.

use fhirpath::Value as Fp;
use serde_json::Value;

use super::parse::normalize;
use super::registry::{self, ParamDef, ParamKind};
use crate::model::{LogicalId, ResourceType};
use crate::storage::{IndexRow, IndexValue};

/// Longest string value indexed (longer values are cut at a char boundary).
const MAX_STRING: usize = 512;

/// Every index row for `resource` (a resource of type `ty`). `base_url` is
/// this server's base: absolute references under it are local.
pub fn extract(ty: ResourceType, resource: &Value, base_url: &str) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    let ctx = fhirpath::EvalContext::new().reference_stubs(true);
    for def in registry::registry().indexed(ty) {
        let Some(expr) = &def.compiled else {
            continue;
        };
        let Ok(values) = fhirpath::evaluate(expr, resource, &ctx) else {
            continue;
        };
        if def.kind == ParamKind::Composite {
            if !def.resource_level && def.union_of.is_empty() {
                composite_rows(def, &values, resource, base_url, &mut rows);
            }
            continue;
        }
        for v in &values {
            extract_one(def, v, base_url, &mut rows);
        }
    }
    rows.dedup();
    rows
}

/// A composite's rows: each component evaluated on each selected element,
/// stored under the component's code with the element's ordinal as group.
/// Elements lacking a value for some component contribute nothing (they could
/// never match).
fn composite_rows(
    def: &ParamDef,
    elements: &[Fp<'_>],
    resource: &Value,
    base_url: &str,
    rows: &mut Vec<IndexRow>,
) {
    let ctx = fhirpath::EvalContext::new()
        .reference_stubs(true)
        .resource(resource)
        .root_resource(resource);
    for (g, element) in elements.iter().enumerate() {
        let start = rows.len();
        let mut complete = true;
        for comp in &def.components {
            let Some(expr) = &comp.compiled else {
                complete = false;
                break;
            };
            let before = rows.len();
            if let Ok(values) = fhirpath::evaluate_values(expr, std::slice::from_ref(element), &ctx)
            {
                for v in &values {
                    extract_one(comp, v, base_url, rows);
                }
            }
            if rows.len() == before {
                complete = false;
                break;
            }
        }
        if !complete {
            rows.truncate(start);
            continue;
        }
        for r in &mut rows[start..] {
            r.group = Some(g as u32);
        }
    }
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_STRING {
        return s.to_owned();
    }
    let mut end = MAX_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => s.parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn extract_one(def: &ParamDef, v: &Fp<'_>, base_url: &str, rows: &mut Vec<IndexRow>) {
    let mut push = |param: &str, value: IndexValue| {
        rows.push(IndexRow {
            param: param.to_owned(),
            value,
            group: None,
        })
    };
    let code = def.code.as_str();
    let (node, ty) = match v {
        Fp::Node(n) => match n.json() {
            Some(j) => (j, n.fhir_type()),
            None => return,
        },
        Fp::Boolean(b) if def.kind == ParamKind::Token => {
            push(
                code,
                IndexValue::Token {
                    system: None,
                    code: b.to_string(),
                    text: None,
                },
            );
            return;
        }
        Fp::String(x) => {
            match def.kind {
                ParamKind::Token => push(
                    code,
                    IndexValue::Token {
                        system: None,
                        code: x.clone(),
                        text: None,
                    },
                ),
                ParamKind::String => push(
                    code,
                    IndexValue::String {
                        norm: cut(&normalize(x)),
                        exact: cut(x),
                    },
                ),
                ParamKind::Uri => push(code, IndexValue::Uri { value: x.clone() }),
                _ => {}
            }
            return;
        }
        Fp::Integer(i) if def.kind == ParamKind::Number => {
            push(code, IndexValue::Number { value: *i as f64 });
            return;
        }
        _ => return,
    };
    match def.kind {
        ParamKind::Token => token_rows(code, node, ty, &mut push),
        ParamKind::String => string_rows(code, node, ty, &mut push),
        ParamKind::Date => date_rows(code, node, ty, &mut push),
        ParamKind::Reference => reference_rows(def, node, ty, base_url, &mut push),
        ParamKind::Number => {
            if let Some(value) = number(node) {
                push(code, IndexValue::Number { value });
            }
        }
        ParamKind::Quantity => quantity_rows(code, node, ty, &mut push),
        ParamKind::Uri => {
            if let Some(u) = node.as_str() {
                push(
                    code,
                    IndexValue::Uri {
                        value: u.to_owned(),
                    },
                );
            }
        }
        ParamKind::Composite => {}
    }
}

fn token_rows(code: &str, node: &Value, ty: &str, push: &mut impl FnMut(&str, IndexValue)) {
    let coding = |c: &Value, text: Option<String>, push: &mut dyn FnMut(&str, IndexValue)| {
        if let Some(k) = s(c, "code") {
            push(
                code,
                IndexValue::Token {
                    system: s(c, "system").map(str::to_owned),
                    code: k.to_owned(),
                    text: text.or_else(|| s(c, "display").map(normalize)),
                },
            );
        }
    };
    match (ty, node) {
        (_, Value::String(x)) => push(
            code,
            IndexValue::Token {
                system: None,
                code: x.clone(),
                text: None,
            },
        ),
        (_, Value::Bool(b)) => push(
            code,
            IndexValue::Token {
                system: None,
                code: b.to_string(),
                text: None,
            },
        ),
        ("Coding", c) => coding(c, None, push),
        ("CodeableConcept", cc) => {
            let text = s(cc, "text").map(normalize);
            if let Some(Value::Array(codings)) = cc.get("coding") {
                for c in codings {
                    coding(c, text.clone(), push);
                }
            }
        }
        ("Identifier", id) => {
            if let Some(value) = s(id, "value") {
                let ty_text = id.get("type").and_then(|t| s(t, "text")).map(normalize);
                push(
                    code,
                    IndexValue::Token {
                        system: s(id, "system").map(str::to_owned),
                        code: value.to_owned(),
                        text: ty_text,
                    },
                );
                if let Some(Value::Array(codings)) = id.get("type").and_then(|t| t.get("coding")) {
                    for c in codings {
                        if let Some(k) = s(c, "code") {
                            push(
                                &format!("{code}:of-type"),
                                IndexValue::Token {
                                    system: s(c, "system").map(str::to_owned),
                                    code: format!("{k}|{value}"),
                                    text: None,
                                },
                            );
                        }
                    }
                }
            }
        }
        ("ContactPoint", cp) => {
            if let Some(value) = s(cp, "value") {
                push(
                    code,
                    IndexValue::Token {
                        system: None,
                        code: value.to_owned(),
                        text: None,
                    },
                );
            }
        }
        _ => {}
    }
}

fn string_rows(code: &str, node: &Value, ty: &str, push: &mut impl FnMut(&str, IndexValue)) {
    let mut one = |x: &str| {
        push(
            code,
            IndexValue::String {
                norm: cut(&normalize(x)),
                exact: cut(x),
            },
        )
    };
    let strings = |v: &Value, keys: &[&str], one: &mut dyn FnMut(&str)| {
        for k in keys {
            match v.get(*k) {
                Some(Value::String(x)) => one(x),
                Some(Value::Array(items)) => {
                    for i in items {
                        if let Some(x) = i.as_str() {
                            one(x);
                        }
                    }
                }
                _ => {}
            }
        }
    };
    match (ty, node) {
        (_, Value::String(x)) => one(x),
        ("HumanName", n) => strings(
            n,
            &["family", "given", "prefix", "suffix", "text"],
            &mut one,
        ),
        ("Address", a) => strings(
            a,
            &[
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
                "text",
            ],
            &mut one,
        ),
        _ => {}
    }
}

fn date_rows(code: &str, node: &Value, ty: &str, push: &mut impl FnMut(&str, IndexValue)) {
    use fhir_structure::primitive::parse_date_range;
    match (ty, node) {
        (_, Value::String(x)) => {
            if let Some((lo, hi)) = parse_date_range(x) {
                push(code, IndexValue::Date { lo, hi });
            }
        }
        ("Period", p) => {
            let lo = s(p, "start").and_then(parse_date_range).map(|r| r.0);
            let hi = s(p, "end").and_then(parse_date_range).map(|r| r.1);
            if lo.is_some() || hi.is_some() {
                push(
                    code,
                    IndexValue::Date {
                        lo: lo.unwrap_or(i64::MIN),
                        hi: hi.unwrap_or(i64::MAX),
                    },
                );
            }
        }
        ("Timing", t) => {
            if let Some(Value::Array(events)) = t.get("event") {
                for e in events {
                    if let Some((lo, hi)) = e.as_str().and_then(parse_date_range) {
                        push(code, IndexValue::Date { lo, hi });
                    }
                }
            }
        }
        _ => {}
    }
}

fn quantity_rows(code: &str, node: &Value, ty: &str, push: &mut impl FnMut(&str, IndexValue)) {
    match ty {
        "Money" => {
            if let Some(value) = node.get("value").and_then(number) {
                push(
                    code,
                    IndexValue::Quantity {
                        system: Some("urn:iso:std:iso:4217".into()),
                        code: s(node, "currency").map(str::to_owned),
                        unit: None,
                        value,
                    },
                );
            }
        }
        _ => {
            if let Some(value) = node.get("value").and_then(number) {
                push(
                    code,
                    IndexValue::Quantity {
                        system: s(node, "system").map(str::to_owned),
                        code: s(node, "code").map(str::to_owned),
                        unit: s(node, "unit").map(str::to_owned),
                        value,
                    },
                );
            }
        }
    }
}

fn reference_rows(
    def: &ParamDef,
    node: &Value,
    ty: &str,
    base_url: &str,
    push: &mut impl FnMut(&str, IndexValue),
) {
    let code = def.code.as_str();
    let reference = match (ty, node) {
        (_, Value::String(x)) => Some(x.as_str()),
        ("Reference", r) => {
            if let Some(id) = r.get("identifier") {
                if let Some(value) = s(id, "value") {
                    push(
                        &format!("{code}:identifier"),
                        IndexValue::Token {
                            system: s(id, "system").map(str::to_owned),
                            code: value.to_owned(),
                            text: None,
                        },
                    );
                }
            }
            s(r, "reference")
        }
        _ => None,
    };
    let Some(reference) = reference else {
        return;
    };
    if reference.starts_with('#') {
        return;
    }
    match resolve_reference(reference, base_url) {
        Some((t, id)) => {
            if def.targets.is_empty() || def.targets.contains(&t) {
                push(
                    code,
                    IndexValue::Reference {
                        target_type: t.as_str().to_owned(),
                        target_id: id,
                        url: None,
                    },
                );
            }
        }
        None => {
            if reference.contains(':') {
                push(
                    code,
                    IndexValue::Reference {
                        target_type: String::new(),
                        target_id: String::new(),
                        url: Some(cut(reference)),
                    },
                );
            }
        }
    }
}

/// A reference that names a resource on this server → (type, id):
/// `Type/id`, `Type/id/_history/n`, or an absolute URL under `base_url`.
/// Contained (`#x`), `urn:` and external references resolve to nothing.
pub fn resolve_reference(reference: &str, base_url: &str) -> Option<(ResourceType, String)> {
    let trimmed = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let local = if trimmed.contains("://") {
        let base = base_url.trim_end_matches('/');
        if base.is_empty() {
            return None;
        }
        trimmed.strip_prefix(base)?.strip_prefix('/')?
    } else {
        trimmed
    };
    let (ty, id) = local.split_once('/')?;
    let ty: ResourceType = ty.parse().ok()?;
    LogicalId::parse(id).map(|id| (ty, id.to_string()))
}

/// `Type/id` (relative or absolute, any base) → (type, id), for bundle
/// processing and compartment checks where the base does not matter.
pub fn split_reference(reference: &str) -> Option<(ResourceType, String)> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let trimmed = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let mut segs = trimmed.rsplit('/');
    let id = segs.next()?;
    let ty: ResourceType = segs.next()?.parse().ok()?;
    LogicalId::parse(id).map(|id| (ty, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASE: &str = "http://localhost:8080/fhir";

    fn has(rows: &[IndexRow], param: &str, pred: impl Fn(&IndexValue) -> bool) -> bool {
        rows.iter().any(|r| r.param == param && pred(&r.value))
    }

    #[test]
    fn extracts_every_parameter_type() {
        let mr = json!({
            "resourceType": "MedicationRequest",
            "status": "active",
            "identifier": [{"system": "urn:s", "value": "1"}, {"value": "2"}],
            "subject": {"reference": "Patient/p1"},
            "requester": {"identifier": {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "U1"}},
            "authoredOn": "2024-03-01",
            "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "39732311000001104", "display": "Amlodipine 5mg"}], "text": "Amlodipine"},
            "meta": {"tag": [{"system": "urn:t", "code": "x"}], "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest"]}
        });
        let rows = extract(ResourceType::MedicationRequest, &mr, BASE);
        assert!(has(
            &rows,
            "identifier",
            |v| matches!(v, IndexValue::Token { system: Some(s), code, .. } if s == "urn:s" && code == "1")
        ));
        assert!(has(
            &rows,
            "status",
            |v| matches!(v, IndexValue::Token { code, .. } if code == "active")
        ));
        for p in ["patient", "subject"] {
            assert!(
                has(
                    &rows,
                    p,
                    |v| matches!(v, IndexValue::Reference { target_type, target_id, .. } if target_type == "Patient" && target_id == "p1")
                ),
                "{p}"
            );
        }
        assert!(has(
            &rows,
            "requester:identifier",
            |v| matches!(v, IndexValue::Token { code, .. } if code == "U1")
        ));
        assert!(has(&rows, "authoredon", |v| matches!(
            v,
            IndexValue::Date { .. }
        )));
        assert!(has(
            &rows,
            "code",
            |v| matches!(v, IndexValue::Token { code, text: Some(t), .. } if code == "39732311000001104" && t == "amlodipine")
        ));
        assert!(has(
            &rows,
            "_tag",
            |v| matches!(v, IndexValue::Token { code, .. } if code == "x")
        ));
        assert!(has(
            &rows,
            "_profile",
            |v| matches!(v, IndexValue::Uri { value } if value.ends_with("UKCore-MedicationRequest"))
        ));
    }

    #[test]
    fn strings_are_normalised_and_names_split() {
        let p = json!({
            "resourceType": "Patient",
            "name": [{"family": "Żółć-Brontë", "given": ["Émile", "Anne"]}],
            "address": [{"line": ["1 High St"], "postalCode": "LS1 4AP"}],
            "birthDate": "1980-02-29",
            "deceasedBoolean": false,
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": "urn:mrn", "value": "M1"}]
        });
        let rows = extract(ResourceType::Patient, &p, BASE);
        assert!(has(
            &rows,
            "family",
            |v| matches!(v, IndexValue::String { norm, exact } if norm == "zołc-bronte" || (norm.starts_with("z") && exact == "Żółć-Brontë"))
        ));
        assert!(has(
            &rows,
            "given",
            |v| matches!(v, IndexValue::String { norm, .. } if norm == "emile")
        ));
        assert!(has(
            &rows,
            "name",
            |v| matches!(v, IndexValue::String { norm, .. } if norm == "anne")
        ));
        assert!(has(
            &rows,
            "address-postalcode",
            |v| matches!(v, IndexValue::String { norm, .. } if norm == "ls1 4ap")
        ));
        assert!(has(&rows, "birthdate", |v| matches!(
            v,
            IndexValue::Date { .. }
        )));
        assert!(has(
            &rows,
            "deceased",
            |v| matches!(v, IndexValue::Token { code, .. } if code == "false")
        ));
        assert!(has(
            &rows,
            "identifier:of-type",
            |v| matches!(v, IndexValue::Token { code, .. } if code == "MR|M1")
        ));
    }

    #[test]
    fn appointment_patient_only_counts_patient_actors() {
        let appt = json!({
            "resourceType": "Appointment",
            "status": "booked",
            "participant": [
                {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
                {"actor": {"reference": "http://localhost:8080/fhir/Patient/p2/_history/3"}, "status": "accepted"}
            ]
        });
        let rows = extract(ResourceType::Appointment, &appt, BASE);
        let patients: Vec<_> = rows.iter().filter(|r| r.param == "patient").collect();
        assert_eq!(patients.len(), 1);
        assert_eq!(
            patients[0].value,
            IndexValue::Reference {
                target_type: "Patient".into(),
                target_id: "p2".into(),
                url: None
            }
        );
        assert_eq!(rows.iter().filter(|r| r.param == "actor").count(), 2);
    }

    #[test]
    fn references_that_cannot_be_stored_locally() {
        assert_eq!(resolve_reference("#c1", BASE), None);
        assert_eq!(resolve_reference("urn:uuid:1234", BASE), None);
        assert_eq!(resolve_reference("Foo/1", BASE), None);
        assert_eq!(
            resolve_reference("http://other.org/fhir/Patient/1", BASE),
            None
        );
        assert_eq!(
            resolve_reference("Patient/1", BASE),
            Some((ResourceType::Patient, "1".into()))
        );
        assert_eq!(
            resolve_reference("Observation/1/_history/2", BASE),
            Some((ResourceType::Observation, "1".into()))
        );
    }
}
