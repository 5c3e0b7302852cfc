//! Write-time extraction of index rows from a resource, driven by the registry.
//! The rows are written by storage in the same transaction as the resource.

use serde_json::Value;

use super::registry::{self, ParamDef, ParamKind};
use crate::model::{LogicalId, ResourceType};
use crate::storage::{IndexRow, IndexValue};

/// Every index row for `resource` (a resource of type `ty`).
pub fn extract(ty: ResourceType, resource: &Value) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    for def in registry::for_type(ty) {
        for path in def.paths {
            let mut nodes = Vec::new();
            collect(resource, path.split('.'), &mut nodes);
            for node in nodes {
                extract_one(def, node, &mut rows);
            }
        }
    }
    rows.dedup();
    rows
}

fn collect<'a, 'p>(
    value: &'a Value,
    mut path: impl Iterator<Item = &'p str> + Clone,
    out: &mut Vec<&'a Value>,
) {
    match value {
        Value::Array(items) => {
            for item in items {
                collect(item, path.clone(), out);
            }
        }
        _ => match path.next() {
            None => out.push(value),
            Some(step) => {
                if let Some(child) = value.get(step) {
                    collect(child, path, out);
                }
            }
        },
    }
}

fn extract_one(def: &ParamDef, node: &Value, rows: &mut Vec<IndexRow>) {
    let mut push = |value: IndexValue| {
        rows.push(IndexRow {
            param: def.code,
            value,
        })
    };
    match def.kind {
        ParamKind::Token => match node {
            Value::String(s) => push(IndexValue::Token {
                system: None,
                code: s.clone(),
            }),
            Value::Bool(b) => push(IndexValue::Token {
                system: None,
                code: b.to_string(),
            }),
            Value::Object(obj) => {
                // Identifier (system/value), Coding (system/code), CodeableConcept (coding[]).
                if let Some(v) = obj.get("value").and_then(Value::as_str) {
                    push(IndexValue::Token {
                        system: obj.get("system").and_then(Value::as_str).map(str::to_owned),
                        code: v.to_owned(),
                    });
                } else if let Some(c) = obj.get("code").and_then(Value::as_str) {
                    push(IndexValue::Token {
                        system: obj.get("system").and_then(Value::as_str).map(str::to_owned),
                        code: c.to_owned(),
                    });
                }
                if let Some(Value::Array(codings)) = obj.get("coding") {
                    for coding in codings {
                        if let Some(c) = coding.get("code").and_then(Value::as_str) {
                            push(IndexValue::Token {
                                system: coding
                                    .get("system")
                                    .and_then(Value::as_str)
                                    .map(str::to_owned),
                                code: c.to_owned(),
                            });
                        }
                    }
                }
            }
            _ => {}
        },
        ParamKind::Date => match node {
            Value::String(s) => {
                if let Some((lo, hi)) = fhir_structure::primitive::parse_date_range(s) {
                    push(IndexValue::Date { lo, hi });
                }
            }
            Value::Object(period) => {
                let lo = period
                    .get("start")
                    .and_then(Value::as_str)
                    .and_then(fhir_structure::primitive::parse_date_range)
                    .map(|r| r.0);
                let hi = period
                    .get("end")
                    .and_then(Value::as_str)
                    .and_then(fhir_structure::primitive::parse_date_range)
                    .map(|r| r.1);
                if lo.is_some() || hi.is_some() {
                    push(IndexValue::Date {
                        lo: lo.unwrap_or(i64::MIN),
                        hi: hi.unwrap_or(i64::MAX),
                    });
                }
            }
            _ => {}
        },
        ParamKind::Reference => {
            let Some(reference) = node.get("reference").and_then(Value::as_str) else {
                return;
            };
            if let Some((ty, id)) = split_reference(reference) {
                if def.targets.is_empty() || def.targets.contains(&ty) {
                    push(IndexValue::Reference {
                        target_type: ty.as_str().to_owned(),
                        target_id: id,
                    });
                }
            }
        }
    }
}

/// `Type/id`, `Type/id/_history/n` or an absolute URL ending so → (type, id).
/// Contained (`#x`) and `urn:` references have no stored target.
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

    #[test]
    fn extracts_identifiers_status_references_and_dates() {
        let mr = json!({
            "resourceType": "MedicationRequest",
            "status": "active",
            "identifier": [{"system": "urn:s", "value": "1"}, {"value": "2"}],
            "subject": {"reference": "Patient/p1"},
            "authoredOn": "2024-03-01"
        });
        let rows = extract(ResourceType::MedicationRequest, &mr);
        let has =
            |param: &str, v: IndexValue| rows.iter().any(|r| r.param == param && r.value == v);
        assert!(has(
            "identifier",
            IndexValue::Token {
                system: Some("urn:s".into()),
                code: "1".into()
            }
        ));
        assert!(has(
            "identifier",
            IndexValue::Token {
                system: None,
                code: "2".into()
            }
        ));
        assert!(has(
            "status",
            IndexValue::Token {
                system: None,
                code: "active".into()
            }
        ));
        assert!(has(
            "patient",
            IndexValue::Reference {
                target_type: "Patient".into(),
                target_id: "p1".into()
            }
        ));
        assert!(has(
            "subject",
            IndexValue::Reference {
                target_type: "Patient".into(),
                target_id: "p1".into()
            }
        ));
        assert!(rows
            .iter()
            .any(|r| r.param == "authoredon" && matches!(r.value, IndexValue::Date { .. })));
    }

    #[test]
    fn appointment_patient_only_counts_patient_actors() {
        let appt = json!({
            "resourceType": "Appointment",
            "participant": [
                {"actor": {"reference": "Practitioner/d1"}},
                {"actor": {"reference": "http://x/fhir/Patient/p2/_history/3"}}
            ]
        });
        let rows = extract(ResourceType::Appointment, &appt);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].value,
            IndexValue::Reference {
                target_type: "Patient".into(),
                target_id: "p2".into()
            }
        );
    }

    #[test]
    fn references_that_cannot_be_stored_are_skipped() {
        assert_eq!(split_reference("#c1"), None);
        assert_eq!(split_reference("urn:uuid:1234"), None);
        assert_eq!(split_reference("Observation/1"), None);
        assert_eq!(
            split_reference("Patient/1"),
            Some((ResourceType::Patient, "1".into()))
        );
    }
}
