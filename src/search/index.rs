//! Write-time extraction of index rows from a resource: every supported
//! SearchParameter's FHIRPath expression is evaluated on the resource and the
//! resulting elements are turned into rows by parameter type. Storage writes
//! the rows in the same transaction as the resource.

use fhirpath::Value as Fp;
use serde_json::Value;

use super::parse::normalize;
use super::registry::{self, ParamDef, ParamKind};
use super::rows::{IndexRow, IndexValue};
use crate::model::{LogicalId, ResourceType};

/// Longest normalised string indexed for string and `:text` search, in bytes
/// (longer values are cut at a char boundary: prefix and substring search see
/// their first 512 bytes). Exact values are kept whole: storage bounds them
/// (`rows::index_key`).
pub const MAX_STRING: usize = 512;

/// Every index row for `resource` (a resource of type `ty`). `base_url` is
/// this server's base: absolute references under it are local.
///
/// Linear in the size of the resource: a union expression is evaluated operand
/// by operand (see `ParamDef::parts`), composites that have no rows of their
/// own are not evaluated, and each parameter's rows are deduplicated by sorting.
pub fn extract(ty: ResourceType, resource: &Value, base_url: &str) -> Vec<IndexRow> {
    extract_defs(registry::registry().indexed(ty), resource, base_url)
}

/// The index rows of only the parameters named in `codes` (the access
/// policy's in-memory checks: a compartment test reads one or two).
pub fn extract_params(
    ty: ResourceType,
    resource: &Value,
    base_url: &str,
    codes: &[&str],
) -> Vec<IndexRow> {
    extract_defs(
        registry::registry()
            .indexed(ty)
            .filter(|d| codes.contains(&d.code.as_str())),
        resource,
        base_url,
    )
}

fn extract_defs<'d>(
    defs: impl Iterator<Item = &'d ParamDef>,
    resource: &Value,
    base_url: &str,
) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    let ctx = fhirpath::EvalContext::new().reference_stubs(true);
    for def in defs {
        let Some(expr) = &def.compiled else {
            continue;
        };
        if def.kind == ParamKind::Composite && (def.resource_level || !def.union_of.is_empty()) {
            continue;
        }
        let values = if def.parts.is_empty() {
            fhirpath::evaluate(expr, resource, &ctx)
        } else {
            def.parts
                .iter()
                .map(|part| fhirpath::evaluate(part, resource, &ctx))
                .collect::<Result<Vec<_>, _>>()
                .map(|all| all.into_iter().flatten().collect())
        };
        let Ok(values) = values else {
            continue;
        };
        let start = rows.len();
        if def.kind == ParamKind::Composite {
            composite_rows(def, &values, resource, base_url, &mut rows);
        } else {
            for v in &values {
                extract_one(def, v, base_url, &mut rows);
            }
        }
        dedup_rows(&mut rows, start);
    }
    rows
}

/// Removes duplicate rows from `rows[start..]` (one parameter's), keeping
/// the first of each; O(n log n).
fn dedup_rows(rows: &mut Vec<IndexRow>, start: usize) {
    if rows.len() - start < 2 {
        return;
    }
    let mut tail = rows.split_off(start);
    tail.sort_by(row_order);
    tail.dedup();
    rows.append(&mut tail);
}

/// A total order on rows (for deduplication; numbers by `total_cmp`).
fn row_order(a: &IndexRow, b: &IndexRow) -> std::cmp::Ordering {
    use IndexValue as V;
    fn rank(v: &IndexValue) -> u8 {
        match v {
            V::Token { .. } => 0,
            V::Date { .. } => 1,
            V::Reference { .. } => 2,
            V::String { .. } => 3,
            V::Number { .. } => 4,
            V::Quantity { .. } => 5,
            V::Uri { .. } => 6,
        }
    }
    let value = || match (&a.value, &b.value) {
        (
            V::Token {
                system: s1,
                code: c1,
                text: t1,
            },
            V::Token {
                system: s2,
                code: c2,
                text: t2,
            },
        ) => (c1, s1, t1).cmp(&(c2, s2, t2)),
        (V::Date { lo: l1, hi: h1 }, V::Date { lo: l2, hi: h2 }) => (l1, h1).cmp(&(l2, h2)),
        (
            V::Reference {
                target_type: t1,
                target_id: i1,
                url: u1,
            },
            V::Reference {
                target_type: t2,
                target_id: i2,
                url: u2,
            },
        ) => (i1, t1, u1).cmp(&(i2, t2, u2)),
        (
            V::String {
                norm: n1,
                exact: e1,
            },
            V::String {
                norm: n2,
                exact: e2,
            },
        ) => (n1, e1).cmp(&(n2, e2)),
        (V::Number { value: x }, V::Number { value: y }) => x.total_cmp(y),
        (
            V::Quantity {
                system: s1,
                code: c1,
                unit: u1,
                value: x,
            },
            V::Quantity {
                system: s2,
                code: c2,
                unit: u2,
                value: y,
            },
        ) => x.total_cmp(y).then_with(|| (s1, c1, u1).cmp(&(s2, c2, u2))),
        (V::Uri { value: x }, V::Uri { value: y }) => x.cmp(y),
        _ => rank(&a.value).cmp(&rank(&b.value)),
    };
    (&a.param, a.group)
        .cmp(&(&b.param, b.group))
        .then_with(value)
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

/// The `:text` form of a display: normalised, cut like string values.
fn norm_cut(s: &str) -> String {
    cut(&normalize(s))
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
                        system: def.code_system.clone(),
                        code: x.clone(),
                        text: None,
                    },
                ),
                ParamKind::String => push(
                    code,
                    IndexValue::String {
                        norm: cut(&normalize(x)),
                        exact: x.clone(),
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
        ParamKind::Token => token_rows(code, def.code_system.as_deref(), node, ty, &mut push),
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

/// `code_system`: the implicit system of a `code` element's values (see
/// `ParamDef::code_system`).
fn token_rows(
    code: &str,
    code_system: Option<&str>,
    node: &Value,
    ty: &str,
    push: &mut impl FnMut(&str, IndexValue),
) {
    let coding = |c: &Value, text: Option<String>, push: &mut dyn FnMut(&str, IndexValue)| {
        if let Some(k) = s(c, "code") {
            push(
                code,
                IndexValue::Token {
                    system: s(c, "system").map(str::to_owned),
                    code: k.to_owned(),
                    text: text.or_else(|| s(c, "display").map(norm_cut)),
                },
            );
        }
    };
    match (ty, node) {
        (_, Value::String(x)) => push(
            code,
            IndexValue::Token {
                system: code_system.map(str::to_owned),
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
            let text = s(cc, "text").map(norm_cut);
            if let Some(Value::Array(codings)) = cc.get("coding") {
                for c in codings {
                    coding(c, text.clone(), push);
                }
            }
        }
        ("Identifier", id) => {
            if let Some(value) = s(id, "value") {
                let ty_text = id.get("type").and_then(|t| s(t, "text")).map(norm_cut);
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
                exact: x.to_owned(),
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
                        url: Some(reference.to_owned()),
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
