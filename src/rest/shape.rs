//! `_summary` and `_elements`: which elements of a resource a response carries
//! (searchsets, read, vread and the CapabilityStatement). Anything left out is
//! marked `SUBSETTED` in `meta.tag`, as the specification asks.

use serde_json::{json, Value};

use super::error::{ApiError, OoIssue};
use crate::model::ResourceType;
use crate::search::parse::{self as search_parse, Summary};
use crate::storage::StoredResource;

/// `_summary` / `_elements` applied to each returned resource.
pub(crate) struct Shape {
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
}

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

impl Shape {
    /// Reads `_summary` (true, text, data, false) and `_elements` for a single
    /// resource of type `ty` (read, vread, metadata); `_summary=count` is a search-only value.
    pub fn from_params(ty: ResourceType, pairs: &[(String, String)]) -> Result<Shape, ApiError> {
        let mut shape = Shape {
            summary: None,
            elements: None,
        };
        for (name, value) in pairs {
            match name.as_str() {
                "_summary" => match Summary::parse(value) {
                    Some(Summary::Count) | None => {
                        return Err(ApiError::BadRequest(vec![OoIssue::error(
                            "value",
                            "Parameter '_summary' must be true, text, data or false here",
                        )
                        .at("_summary")]))
                    }
                    s => shape.summary = s,
                },
                "_elements" => {
                    shape.elements = Some(
                        search_parse::parse_elements(ty, value)
                            .map_err(crate::service::search::search_error)?,
                    )
                }
                _ => {}
            }
        }
        if shape.summary.is_some() && shape.elements.is_some() {
            return Err(ApiError::bad_request(
                "invalid",
                "_summary and _elements cannot be combined",
            ));
        }
        Ok(shape)
    }

    /// Every element of every resource, unchanged.
    pub fn is_identity(&self) -> bool {
        matches!(self.summary, None | Some(Summary::False)) && self.elements.is_none()
    }

    /// The shaped content of a stored resource (None for a deletion).
    pub fn apply(&self, r: &StoredResource) -> Result<Option<Value>, ApiError> {
        let Some(content) = &r.content else {
            return Ok(None);
        };
        let resource: Value =
            serde_json::from_str(content).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Some(self.apply_value(r.resource_type.as_str(), resource)))
    }

    /// Shapes a resource of type `ty`.
    pub fn apply_value(&self, ty: &str, mut resource: Value) -> Value {
        let keep: Option<Vec<String>> = match (self.summary, &self.elements) {
            (Some(Summary::True), _) => Some(summary_elements(ty)),
            (Some(Summary::Text), _) => {
                let mut k = mandatory_elements(ty);
                k.push("text".into());
                Some(k)
            }
            (Some(Summary::Data), _) => {
                if let Some(obj) = resource.as_object_mut() {
                    obj.shift_remove("text");
                }
                mark_subsetted(&mut resource);
                None
            }
            (_, Some(list)) => {
                let mut k = mandatory_elements(ty);
                k.extend(list.iter().cloned());
                Some(k)
            }
            _ => None,
        };
        if let Some(keep) = keep {
            if let Some(obj) = resource.as_object_mut() {
                obj.retain(|k, _| {
                    let name = k.strip_prefix('_').unwrap_or(k);
                    k == "resourceType"
                        || k == "id"
                        || k == "meta"
                        || keep.iter().any(|e| {
                            e == name || (name.starts_with(e.as_str()) && is_choice_of(ty, e, name))
                        })
                });
            }
            if self.summary == Some(Summary::True) {
                if let Some(obj) = resource.as_object_mut() {
                    for (k, v) in obj.iter_mut() {
                        summarise_backbone(ty, k, v, 0);
                    }
                    obj.retain(|_, v| !emptied(v));
                }
            }
            mark_subsetted(&mut resource);
        }
        resource
    }
}

/// `_summary=true` inside backbone elements (`CapabilityStatement.rest`, …):
/// only their summary and mandatory children stay. Depth is bounded by the model.
fn summarise_backbone(owner: &str, key: &str, value: &mut Value, depth: usize) {
    use fhir_structure::model::Kind;
    if depth > 16 || key.starts_with('_') {
        return;
    }
    let model = fhir_structure::model::Model::r4();
    let Some(elem) = model.element(owner, key) else {
        return;
    };
    let ty = elem.type_name;
    if model.type_def(ty).map(|t| t.kind) != Some(Kind::Backbone) {
        return;
    }
    let items: Vec<&mut Value> = match value {
        Value::Array(a) => a.iter_mut().collect(),
        v => vec![v],
    };
    for item in items {
        if let Some(obj) = item.as_object_mut() {
            obj.retain(|k, _| {
                let name = k.strip_prefix('_').unwrap_or(k);
                k == "id"
                    || model
                        .element(ty, name)
                        .is_some_and(|e| e.def.summary || e.def.min > 0)
            });
            for (k, v) in obj.iter_mut() {
                summarise_backbone(ty, k, v, depth + 1);
            }
            obj.retain(|_, v| !emptied(v));
        }
    }
}

/// Whether a backbone value has nothing left after summarising (an object
/// none of whose children are summary elements, e.g. a `security` with only
/// a `description`); arrays lose their emptied items. FHIR JSON has no `{}`.
fn emptied(v: &mut Value) -> bool {
    match v {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => {
            a.retain(|x| !x.as_object().is_some_and(|o| o.is_empty()));
            a.is_empty()
        }
        _ => false,
    }
}

fn is_choice_of(ty: &str, base: &str, json_name: &str) -> bool {
    fhir_structure::model::Model::r4()
        .element(ty, json_name)
        .is_some_and(|e| e.choice && e.def.name.strip_suffix("[x]") == Some(base))
}

fn element_base_name(name: &str) -> String {
    name.strip_suffix("[x]").unwrap_or(name).to_owned()
}

fn summary_elements(ty: &str) -> Vec<String> {
    fhir_structure::model::Model::r4()
        .all_elements(ty)
        .into_iter()
        .filter(|e| e.summary || e.min > 0)
        .map(|e| element_base_name(&e.name))
        .collect()
}

fn mandatory_elements(ty: &str) -> Vec<String> {
    fhir_structure::model::Model::r4()
        .all_elements(ty)
        .into_iter()
        .filter(|e| e.min > 0)
        .map(|e| element_base_name(&e.name))
        .collect()
}

fn mark_subsetted(resource: &mut Value) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("meta")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(meta) = meta {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(arr) = tags.as_array_mut() {
            arr.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
        }
    }
}
