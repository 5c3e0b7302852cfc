//! Search predicates evaluated on one resource in memory, with the same
//! meaning storage gives them: the access policy decides single resources
//! (a read, a write's old and new content) with the very predicates it
//! restricts sets with (and the bridge filters a supplier's answers). Only
//! ids, token, reference, string, uri, date and `:missing` tests and AND/OR
//! are supported; anything
//! else evaluates to `None`, which callers treat as "no" (failing closed).

use std::cell::OnceCell;

use serde_json::Value;

use super::registry::ParamDef;
use super::rows::{IndexRow, IndexValue};
use super::types::{Predicate, StringMode, Test, TokenValue, UriMode};
use crate::model::ResourceType;

/// `predicate` on the resource `content` (of type `ty`, id `id`).
/// `None`: the predicate uses a test this evaluator does not support.
pub fn matches(
    ty: ResourceType,
    id: &str,
    content: &Value,
    base_url: &str,
    predicate: &Predicate,
) -> Option<bool> {
    matches_lazy(ty, id, || Some(content.clone()), base_url, predicate)
}

/// [`matches`] on borrowed content (no copy; the bridge filters many
/// resources at once).
pub fn matches_ref(
    ty: ResourceType,
    id: &str,
    content: &Value,
    base_url: &str,
    predicate: &Predicate,
) -> Option<bool> {
    let rows: OnceCell<Vec<IndexRow>> = OnceCell::new();
    let codes = codes_of(predicate);
    let rows_of = || -> Option<&Vec<IndexRow>> {
        Some(rows.get_or_init(|| super::index::extract_params(ty, content, base_url, &codes)))
    };
    eval(predicate, id, &rows_of)
}

/// [`matches`] with the content produced only when a test needs it (an id
/// test alone never parses the resource). `content` returning `None` (it
/// cannot be parsed) makes any test that needs it undecidable.
pub fn matches_lazy(
    ty: ResourceType,
    id: &str,
    content: impl FnOnce() -> Option<Value>,
    base_url: &str,
    predicate: &Predicate,
) -> Option<bool> {
    let rows: OnceCell<Option<Vec<IndexRow>>> = OnceCell::new();
    let codes = codes_of(predicate);
    let content = std::cell::Cell::new(Some(content));
    let rows_of = || -> Option<&Vec<IndexRow>> {
        rows.get_or_init(|| {
            let v = content.take().and_then(|f| f())?;
            Some(super::index::extract_params(ty, &v, base_url, &codes))
        })
        .as_ref()
    };
    eval(predicate, id, &rows_of)
}

fn codes_of(p: &Predicate) -> Vec<&str> {
    fn walk<'p>(p: &'p Predicate, out: &mut Vec<&'p str>) {
        match p {
            Predicate::Index { param, .. } | Predicate::Missing { param, .. } => {
                out.push(&param.code)
            }
            Predicate::AllOf(ps) | Predicate::AnyOf(ps) => ps.iter().for_each(|p| walk(p, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(p, &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

fn eval<'r>(p: &Predicate, id: &str, rows: &dyn Fn() -> Option<&'r Vec<IndexRow>>) -> Option<bool> {
    Some(match p {
        Predicate::Id { ids, not } => ids.iter().any(|i| i == id) != *not,
        Predicate::Index { param, test, not } => test_rows(param, test, rows()?)? != *not,
        Predicate::Missing { param, missing } => {
            rows()?.iter().all(|r| r.param != param.code) == *missing
        }
        Predicate::AllOf(ps) => {
            for p in ps {
                if !eval(p, id, rows)? {
                    return Some(false);
                }
            }
            true
        }
        Predicate::AnyOf(ps) => {
            let mut unknown = false;
            for p in ps {
                match eval(p, id, rows) {
                    Some(true) => return Some(true),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            if unknown {
                return None;
            }
            false
        }
        _ => return None,
    })
}

fn test_rows(param: &ParamDef, test: &Test, rows: &[IndexRow]) -> Option<bool> {
    let mine = || {
        rows.iter()
            .filter(|r| r.param == param.code && r.group.is_none())
    };
    Some(match test {
        Test::Token(values) => mine().any(|r| match &r.value {
            IndexValue::Token { system, code, .. } => values.iter().any(|v| token(v, system, code)),
            _ => false,
        }),
        Test::Reference(values) => mine().any(|r| match &r.value {
            IndexValue::Reference {
                target_type,
                target_id,
                url,
            } => values.iter().any(|v| {
                if v.url {
                    url.as_deref() == Some(v.id.as_str())
                } else {
                    *target_id == v.id
                        && v.target_type
                            .is_none_or(|t| t.as_str() == target_type.as_str())
                }
            }),
            _ => false,
        }),
        Test::String(mode, values) => mine().any(|r| match &r.value {
            IndexValue::String { norm, exact } => values.iter().any(|v| match mode {
                StringMode::StartsWith => norm.starts_with(v.as_str()),
                StringMode::Exact => exact == v,
                StringMode::Contains => norm.contains(v.as_str()),
            }),
            _ => false,
        }),
        Test::Date(values) => {
            if values.iter().any(|v| v.prefix == super::types::Prefix::Ap) {
                return None;
            }
            mine().any(|r| match &r.value {
                IndexValue::Date { lo, hi } => values.iter().any(|v| date(v, *lo, *hi)),
                _ => false,
            })
        }
        Test::Uri(mode, values) => mine().any(|r| match &r.value {
            IndexValue::Uri { value } => values.iter().any(|v| match mode {
                UriMode::Equals => value == v,
                UriMode::Below => value.starts_with(v.as_str()),
                UriMode::Above => v.starts_with(value.as_str()),
            }),
            _ => false,
        }),
        _ => return None,
    })
}

/// A date test on one stored range `[vlo, vhi]`, as storage's SQL has it
/// (`ap` is not decided in memory).
fn date(v: &super::types::DateValue, vlo: i64, vhi: i64) -> bool {
    use super::types::Prefix;
    let (lo, hi) = (v.range.lo, v.range.hi);
    let contains = vlo >= lo && vhi <= hi;
    match v.prefix {
        Prefix::Eq => contains,
        Prefix::Ne => !contains,
        Prefix::Gt => vhi > hi,
        Prefix::Lt => vlo < lo,
        Prefix::Ge => vhi > hi || contains,
        Prefix::Le => vlo < lo || contains,
        Prefix::Sa => vlo >= hi,
        Prefix::Eb => vhi <= lo,
        Prefix::Ap => false,
    }
}

fn token(v: &TokenValue, system: &Option<String>, code: &str) -> bool {
    if v.code.as_deref().is_some_and(|c| c != code) {
        return false;
    }
    match v.system.as_deref() {
        None => true,
        Some("") => system.is_none(),
        Some(s) => system.as_deref() == Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::compartment;
    use serde_json::json;

    #[test]
    fn compartment_membership_in_memory() {
        let mr = json!({"resourceType": "MedicationRequest", "status": "active",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"text": "x"}});
        let ty = ResourceType::MedicationRequest;
        let p1 = compartment::patient(ty, "p1").unwrap();
        let p2 = compartment::patient(ty, "p2").unwrap();
        assert_eq!(matches(ty, "m", &mr, "http://x/fhir", &p1), Some(true));
        assert_eq!(matches(ty, "m", &mr, "http://x/fhir", &p2), Some(false));
        let pat = compartment::patient(ResourceType::Patient, "p1").unwrap();
        assert_eq!(
            matches(ResourceType::Patient, "p1", &json!({}), "", &pat),
            Some(true)
        );
        assert_eq!(
            matches(ResourceType::Patient, "p2", &json!({}), "", &pat),
            Some(false)
        );
        assert!(compartment::patient(ResourceType::Organization, "p1").is_none());
    }
}
