//! The audit trail: an R4 `AuditEvent` for every access to patient data,
//! durable before the response is sent.
//!
//! - [`AuditTrail`]: per request (the gate puts one into the request's
//!   extensions, the `Fhir` extractor attaches it to the `RequestContext`);
//!   the service records each resource that leaves for the caller
//!   (`service::admitted`/`admit_all`) and the REST encoders each resource a
//!   write stored ([`AuditTrail::touch`]).
//! - [`event`]: after the handler, the FHIR middleware turns the trail, the
//!   caller and the outcome into AuditEvents, one per patient touched.
//! - [`writer`]: the group-commit writer: the request waits until its events
//!   are committed (many requests' events in one transaction).
//!
//! Which patient a resource is about: the Patient itself, or the literal
//! `Patient/{id}` references in the elements its Patient-compartment search
//! parameters point at (`search::registry`), found by walking the JSON along
//! each parameter's simple path (`Observation.subject`,
//! `Observation.performer`; `.where(resolve() is Patient)` filters are
//! dropped, since only `Patient/` references are kept). Nothing is logged.

pub mod event;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::model::{ResourceType, StoredResource};
use crate::policy::Action;

pub use writer::AuditWriter;

/// The search parameters `AuditEvent` searches take (besides `_count`,
/// `_sort`, `_format`, `_pretty`).
pub const SEARCH_PARAMS: &[&str] = &[
    "_id", "patient", "date", "type", "subtype", "outcome", "agent", "entity",
];

/// One resource a request read or wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    pub resource_type: ResourceType,
    pub id: String,
    pub version: i64,
    pub action: Action,
    /// The patients it is about (empty: none).
    pub patients: Vec<String>,
    /// Where a resource held by a GP supplier came from (`meta.source`).
    pub source: Option<String>,
}

impl Touch {
    /// `Type/id/_history/v`.
    pub fn reference(&self) -> String {
        format!(
            "{}/{}/_history/{}",
            self.resource_type, self.id, self.version
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    touched: Vec<Touch>,
    /// The search's parameters (`a=b&c=d`), for `entity.query`.
    query: Option<String>,
    /// The client named by a token request (before any token exists).
    client: Option<String>,
    /// The interaction, when the handler knows better than its label
    /// (`batch` for a batch Bundle).
    subtype: Option<&'static str>,
}

/// What one request touched (shared by its context and the middleware).
#[derive(Debug, Clone, Default)]
pub struct AuditTrail(Arc<Mutex<Inner>>);

impl AuditTrail {
    pub fn new() -> AuditTrail {
        AuditTrail::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `resource` left for the caller (`Read`) or was written.
    pub fn touch(&self, resource: &StoredResource, action: Action) {
        let patients = patients_of(resource);
        let mut inner = self.inner();
        let id = resource.id.as_str();
        if let Some(t) = inner.touched.iter_mut().find(|t| {
            t.resource_type == resource.resource_type && t.id == id && t.version == resource.version
        }) {
            if action != Action::Read {
                t.action = action;
            }
            return;
        }
        // Supplier resources have `{supplier}.{id}` ids: only those are read for a source.
        let source = if id.contains('.') {
            resource
                .content
                .as_deref()
                .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
                .and_then(|v| v.pointer("/meta/source")?.as_str().map(str::to_owned))
        } else {
            None
        };
        inner.touched.push(Touch {
            resource_type: resource.resource_type,
            id: id.to_owned(),
            version: resource.version,
            action,
            patients,
            source,
        });
    }

    /// Records a search's parameters (`entity.query`).
    pub fn set_query(&self, query: String) {
        self.inner().query = (!query.is_empty()).then_some(query);
    }

    /// Records the client a token request named.
    pub fn set_client(&self, client: String) {
        self.inner().client = Some(client);
    }

    /// Overrides the interaction code (`batch`).
    pub fn set_subtype(&self, subtype: &'static str) {
        self.inner().subtype = Some(subtype);
    }

    pub fn subtype(&self) -> Option<&'static str> {
        self.inner().subtype
    }

    pub fn touched(&self) -> Vec<Touch> {
        self.inner().touched.clone()
    }

    pub fn query(&self) -> Option<String> {
        self.inner().query.clone()
    }

    pub fn client(&self) -> Option<String> {
        self.inner().client.clone()
    }
}

/// The patients `resource` is about (see the module docs).
pub fn patients_of(resource: &StoredResource) -> Vec<String> {
    if resource.resource_type == ResourceType::Patient {
        return vec![resource.id.as_str().to_owned()];
    }
    let Some(content) = resource.content.as_deref() else {
        return Vec::new();
    };
    let paths = compartment_paths(resource.resource_type);
    if paths.is_empty() || !content.contains("Patient/") {
        return Vec::new();
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(content) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in paths {
        collect(&value, path, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn collect(v: &serde_json::Value, path: &[String], out: &mut Vec<String>) {
    match v {
        serde_json::Value::Array(items) => {
            for i in items {
                collect(i, path, out);
            }
        }
        serde_json::Value::Object(obj) => match path.split_first() {
            Some((key, rest)) => {
                if let Some(child) = obj.get(key.as_str()) {
                    collect(child, rest, out);
                }
            }
            None => {
                if let Some(id) = obj
                    .get("reference")
                    .and_then(|r| r.as_str())
                    .and_then(patient_id_of)
                {
                    out.push(id.to_owned());
                }
            }
        },
        _ => {}
    }
}

/// `Patient/{id}` (or `…/Patient/{id}`) → `id`.
fn patient_id_of(reference: &str) -> Option<&str> {
    let at = reference.rfind("Patient/")?;
    if at > 0 && !reference[..at].ends_with('/') {
        return None;
    }
    let id = &reference[at + "Patient/".len()..];
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Each Patient-compartment parameter's element path (`["subject"]`).
fn compartment_paths(ty: ResourceType) -> &'static [Vec<String>] {
    static PATHS: OnceLock<HashMap<ResourceType, Vec<Vec<String>>>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            let reg = crate::search::registry::registry();
            ResourceType::ALL
                .iter()
                .map(|ty| {
                    let mut paths = Vec::new();
                    for code in reg.patient_compartment(*ty) {
                        let Some(def) = crate::search::registry::lookup(*ty, code) else {
                            continue;
                        };
                        for part in def.expression.split('|') {
                            if let Some(p) = simple_path(*ty, part.trim()) {
                                if !paths.contains(&p) {
                                    paths.push(p);
                                }
                            }
                        }
                    }
                    (*ty, paths)
                })
                .collect()
        })
        .get(&ty)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `Type.a.b[.where(…)]` → `["a", "b"]` (`None` for anything else).
fn simple_path(ty: ResourceType, expr: &str) -> Option<Vec<String>> {
    let expr = expr.trim_start_matches('(').trim_end_matches(')');
    let rest = expr.strip_prefix(ty.as_str())?.strip_prefix('.')?;
    let rest = match rest.find(".where(") {
        Some(at) => &rest[..at],
        None => rest,
    };
    let parts: Vec<String> = rest.split('.').map(str::to_owned).collect();
    parts
        .iter()
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        .then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Instant, LogicalId};

    fn stored(ty: ResourceType, json: &str) -> StoredResource {
        StoredResource {
            resource_type: ty,
            id: LogicalId::parse("x1").unwrap(),
            version: 1,
            last_updated: Instant(0),
            content: Some(json.to_owned()),
        }
    }

    #[test]
    fn the_patients_of_a_resource_come_from_its_compartment_references() {
        let obs = stored(
            ResourceType::Observation,
            r#"{"resourceType":"Observation","subject":{"reference":"Patient/p1"},
                "performer":[{"reference":"Practitioner/d"},{"reference":"Patient/p2"}],
                "focus":[{"reference":"Patient/p3"}]}"#,
        );
        assert_eq!(patients_of(&obs), vec!["p1", "p2"]);
        let none = stored(
            ResourceType::Practitioner,
            r#"{"resourceType":"Practitioner"}"#,
        );
        assert!(patients_of(&none).is_empty());
        let full = stored(
            ResourceType::Condition,
            r#"{"resourceType":"Condition","subject":{"reference":"http://x/fhir/Patient/p9"}}"#,
        );
        assert_eq!(patients_of(&full), vec!["p9"]);
    }
}
