//! Builds the CapabilityStatement from what the backend declares and what the
//! search registry supports. Nothing is listed that the code cannot do.

use serde_json::{json, Value};

use crate::search::registry;
use crate::storage::{Capabilities, Interaction};

pub const SOFTWARE_NAME: &str = "fhirbridge";

/// The formats served, in `CapabilityStatement.format`.
const FORMATS: [&str; 4] = [
    "application/fhir+json",
    "json",
    "application/fhir+xml",
    "xml",
];

/// UK Core profiles are advertised as `supportedProfile` when they are loaded.
pub fn capability_statement(
    caps: &Capabilities,
    transactions: bool,
    base_url: Option<&str>,
    validation: &crate::validation::ValidationService,
) -> Value {
    let resources: Vec<Value> = caps
        .types
        .iter()
        .map(|(ty, interactions)| {
            let reg = registry::registry();
            let search_params: Vec<Value> = reg
                .common()
                .chain(reg.for_type(*ty))
                .filter(|p| caps.supports_param(*ty, &p.code))
                .map(|p| {
                    json!({
                        "name": p.code,
                        "definition": p.url,
                        "type": p.kind.code(),
                        "documentation": p.description,
                    })
                })
                .collect();
            let mut resource = json!({
                "type": ty.as_str(),
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{ty}"),
                "interaction": interactions
                    .iter()
                    .map(|i| json!({"code": i.code()}))
                    .chain((transactions && interactions.contains(&Interaction::Update)).then(|| json!({"code": "patch"})))
                    .collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": interactions.contains(&Interaction::Vread),
                "updateCreate": caps.update_create && interactions.contains(&Interaction::Update),
                "conditionalCreate": caps.conditional_create && interactions.contains(&Interaction::Create),
                "conditionalRead": "full-support",
                "conditionalUpdate": transactions && interactions.contains(&Interaction::Update),
                "conditionalDelete": if transactions && interactions.contains(&Interaction::Delete) { "multiple" } else { "not-supported" },
            });
            if let Some(obj) = resource.as_object_mut() {
                obj.insert(
                    "operation".into(),
                    json!([{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]),
                );
                if let Some(p) = validation.profile_for(*ty) {
                    obj.insert("supportedProfile".into(), json!([p]));
                }
            }
            if interactions.contains(&Interaction::SearchType) {
                if let Some(obj) = resource.as_object_mut() {
                    obj.insert("searchParam".into(), Value::Array(search_params));
                    let mut includes = vec![json!("*")];
                    includes.extend(
                        reg.for_type(*ty)
                            .filter(|p| p.kind == registry::ParamKind::Reference)
                            .filter(|p| caps.supports_param(*ty, &p.code))
                            .map(|p| json!(format!("{ty}:{}", p.code))),
                    );
                    obj.insert("searchInclude".into(), Value::Array(includes));
                    let revincludes: Vec<Value> = caps
                        .types
                        .iter()
                        .flat_map(|(src, _)| {
                            reg.for_type(*src)
                                .filter(|p| {
                                    p.kind == registry::ParamKind::Reference
                                        && caps.supports_param(*src, &p.code)
                                        && (p.targets.is_empty() || p.targets.contains(ty))
                                })
                                .map(move |p| json!(format!("{src}:{}", p.code)))
                        })
                        .collect();
                    obj.insert("searchRevInclude".into(), Value::Array(revincludes));
                }
            }
            resource
        })
        .collect();
    let mut system_interactions = Vec::new();
    if transactions {
        system_interactions.push(json!({"code": "transaction"}));
        system_interactions.push(json!({"code": "batch"}));
    }
    if caps.system_history {
        system_interactions.push(json!({"code": "history-system"}));
    }
    let mut implementation = json!({"description": "fhirbridge FHIR R4 server"});
    if let (Some(base), Some(obj)) = (base_url, implementation.as_object_mut()) {
        obj.insert("url".into(), json!(base));
    }
    let mut rest = json!({
        "mode": "server",
        "documentation": format!("Storage backend: {}", caps.backend),
        "resource": resources,
    });
    if let (false, Some(obj)) = (system_interactions.is_empty(), rest.as_object_mut()) {
        obj.insert("interaction".into(), Value::Array(system_interactions));
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-21",
        "publisher": "fhirbridge",
        "kind": "instance",
        "software": {"name": SOFTWARE_NAME, "version": env!("CARGO_PKG_VERSION")},
        "implementation": implementation,
        "fhirVersion": "4.0.1",
        "format": FORMATS,
        "rest": [rest],
    })
}
