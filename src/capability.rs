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

/// How requests are authorised, for `CapabilityStatement.rest.security`.
#[derive(Debug, Clone, Copy)]
pub struct Security<'a> {
    /// Our token endpoint's URL when bearer tokens are required (SMART on
    /// FHIR); `None` when access control is off.
    pub token_endpoint: Option<&'a str>,
    /// Whether CORS headers are sent (`server.cors.allowed_origins`).
    pub cors: bool,
}

pub const OAUTH_URIS: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// `rest.security`. The SMART service coding and the oauth-uris extension
/// (only `token`: there is no authorize endpoint) when tokens are required;
/// when they are not, a plain statement that access control is off.
fn security(s: Security<'_>) -> Value {
    let mut out = match s.token_endpoint {
        None => json!({
            "description": "Access control is off (auth.mode = \"off\"): no token is read \
                and every caller can read and change every record. For local development only.",
        }),
        Some(token_endpoint) => json!({
            "extension": [{
                "url": OAUTH_URIS,
                "extension": [{"url": "token", "valueUri": token_endpoint}],
            }],
            "service": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }],
                "text": "SMART on FHIR",
            }],
            "description": "SMART on FHIR: every request needs a bearer token (a JWT from a \
                configured issuer, or from this server's token endpoint: SMART Backend \
                Services, client_credentials with a private_key_jwt client assertion). \
                SMART v1 and v2 scopes; patient/ tokens see only their patient's \
                compartment (and those an active proxy Consent lets them act for), never \
                resources labelled v3-Confidentiality R or V. Patients' data-sharing \
                Consents (scope patient-privacy) are enforced for every caller, by \
                client_id, ods_code and purpose_of_use. \
                Discovery: [base]/.well-known/smart-configuration.",
        }),
    };
    if let Some(o) = out.as_object_mut() {
        o.insert("cors".into(), Value::Bool(s.cors));
    }
    out
}

/// UK Core profiles are advertised as `supportedProfile` when they are loaded.
pub fn capability_statement(
    caps: &Capabilities,
    transactions: bool,
    base_url: Option<&str>,
    validation: &crate::validation::ValidationService,
    access: Security<'_>,
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
                if let Some(d) = crate::service::workflows::documentation(*ty) {
                    obj.insert("documentation".into(), json!(d));
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
            if *ty == crate::model::ResourceType::AuditEvent {
                return audit_event_resource(interactions);
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
        "security": security(access),
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

/// `AuditEvent`: served from the audit trail, read and search-type only,
/// with the search parameters `service::audit` takes.
fn audit_event_resource(interactions: &std::collections::BTreeSet<Interaction>) -> Value {
    let ty = crate::model::ResourceType::AuditEvent;
    let params: Vec<Value> = crate::audit::SEARCH_PARAMS
        .iter()
        .filter_map(|code| registry::lookup(ty, code))
        .map(|p| {
            json!({
                "name": p.code,
                "definition": p.url,
                "type": p.kind.code(),
                "documentation": p.description,
            })
        })
        .collect();
    let mut r = json!({
        "type": "AuditEvent",
        "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
        "documentation": "The audit trail: one event per access, append-only (no create, \
            update, patch or delete, for any caller). Readable with an explicit AuditEvent \
            grant (system/AuditEvent.rs, user/AuditEvent.rs); patient/AuditEvent.rs sees \
            the events about the patient's own record.",
        "interaction": interactions
            .iter()
            .map(|i| json!({"code": i.code()}))
            .collect::<Vec<_>>(),
        "versioning": "no-version",
        "readHistory": false,
        "updateCreate": false,
        "conditionalCreate": false,
        "conditionalRead": "not-supported",
        "conditionalUpdate": false,
        "conditionalDelete": "not-supported",
    });
    if let (false, Some(obj)) = (params.is_empty(), r.as_object_mut()) {
        obj.insert("searchParam".into(), Value::Array(params));
    }
    r
}
