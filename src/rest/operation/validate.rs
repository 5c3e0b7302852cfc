//! `$validate` (type and instance level): the profile engine's report as an
//! OperationOutcome. The instance form reads the stored resource through the
//! service (and so through the policy).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::super::error::{operation_outcome, ApiError, OoIssue};
use super::super::extract::{segment, Fhir, TypeParam};
use super::super::format;
use super::super::interaction::{label, parse_id, ApiResult};
use super::super::strict;
use crate::model::ResourceType;
use crate::service::search::query_pairs;

/// Converts engine issues to OperationOutcome issues.
pub fn to_oo(issues: &[fhir_validation::Issue]) -> Vec<OoIssue> {
    issues.iter().map(OoIssue::from_issue).collect()
}

/// `$validate` parameters: from the query string and, for a Parameters body, from it.
struct Request {
    resource: Option<Value>,
    profile: Option<String>,
    mode: Option<String>,
}

fn read_parameters(req: &HttpRequest, body: &[u8]) -> Result<Request, ApiError> {
    let mut r = Request {
        resource: None,
        profile: None,
        mode: None,
    };
    for (k, v) in query_pairs(req.query_string())? {
        match k.as_str() {
            "profile" => r.profile = Some(v),
            "mode" => r.mode = Some(v),
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::BadRequest(vec![OoIssue::error(
                    "not-supported",
                    format!("Unknown $validate parameter '{other}'"),
                )
                .at(other.to_owned())]))
            }
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(r);
    }
    let value = format::decode_body(req, body)?;
    if value.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        for p in value
            .get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match p.get("name").and_then(Value::as_str) {
                Some("resource") => r.resource = p.get("resource").cloned(),
                Some("profile") => {
                    r.profile = ["valueUri", "valueCanonical", "valueString"]
                        .iter()
                        .find_map(|k| p.get(*k).and_then(Value::as_str))
                        .map(str::to_owned)
                }
                Some("mode") => {
                    r.mode = p
                        .get("valueCode")
                        .or_else(|| p.get("valueString"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }
                _ => {}
            }
        }
    } else {
        r.resource = Some(value);
    }
    if let Some(m) = &r.mode {
        if !matches!(m.as_str(), "create" | "update" | "delete") {
            return Err(ApiError::bad_request(
                "value",
                "mode must be create, update or delete",
            ));
        }
    }
    Ok(r)
}

fn outcome(req: &HttpRequest, issues: Vec<OoIssue>) -> ApiResult {
    let out = format::negotiate(req)?;
    let issues = if issues.is_empty() {
        vec![OoIssue {
            severity: "information",
            code: "informational",
            diagnostics: "Validation successful: no issues detected".into(),
            expression: None,
            details: None,
        }]
    } else {
        issues
    };
    let (body, ct) = format::encode(&operation_outcome(&issues), out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

fn validate_value(
    service: &crate::service::Service,
    ty: ResourceType,
    resource: &Value,
    profile: Option<&str>,
) -> ApiResult2 {
    if resource.get("resourceType").and_then(Value::as_str) != Some(ty.as_str()) {
        return Ok(vec![OoIssue::error(
            "invalid",
            format!("The resource is not a {ty}"),
        )
        .at("resourceType")]);
    }
    let extra: Vec<&str> = profile.into_iter().collect();
    // What a write would also refuse: a Consent the server cannot enforce.
    let enforceable = crate::service::consent::check(ty, resource)
        .err()
        .map(|e| e.issues())
        .unwrap_or_default();
    match service.validation().validate(ty, resource, &extra) {
        Some(report) => {
            let mut issues = to_oo(&report.issues);
            issues.extend(enforceable);
            Ok(issues)
        }
        None => {
            let mut issues = to_oo(&fhir_structure::check::check_resource(resource));
            issues.push(OoIssue {
                severity: "warning",
                code: "not-supported",
                diagnostics: format!(
                    "Profile validation is unavailable ({}); only structural checks were run",
                    service
                        .validation()
                        .unavailable_reason
                        .as_deref()
                        .unwrap_or("not configured")
                ),
                expression: None,
                details: None,
            });
            Ok(issues)
        }
    }
}

type ApiResult2 = Result<Vec<OoIssue>, ApiError>;

/// `POST [type]/$validate`.
pub async fn validate_type(fhir: Fhir, body: web::Bytes, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "operation-validate", Some(ty));
    strict::preconditions(req, "$validate", &[])?;
    fhir.service.authorize_validate(&fhir.ctx, ty, None).await?;
    let params = read_parameters(req, &body)?;
    if params.mode.as_deref() == Some("delete") {
        return outcome(req, Vec::new());
    }
    let resource = params.resource.ok_or_else(|| {
        ApiError::bad_request("required", "$validate needs a resource in the body")
    })?;
    let issues = validate_value(&fhir.service, ty, &resource, params.profile.as_deref())?;
    outcome(req, issues)
}

/// `GET|POST [type]/[id]/$validate`: the body if given, else the stored resource.
pub async fn validate_instance(fhir: Fhir, body: web::Bytes, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "operation-validate", Some(ty));
    strict::preconditions(req, "$validate", &[])?;
    let id = parse_id(segment(req, "id"))?;
    fhir.service
        .authorize_validate(&fhir.ctx, ty, Some(&id))
        .await?;
    let params = read_parameters(req, &body)?;
    if params.mode.as_deref() == Some("delete") {
        return outcome(req, Vec::new());
    }
    let resource = match params.resource {
        Some(r) => r,
        None => {
            // Through the service: the policy decides whether the caller may see it.
            let stored = fhir.service.read_current(&fhir.ctx, ty, &id).await?;
            let content = stored.content.unwrap_or_default();
            serde_json::from_str(&content).map_err(|e| ApiError::Internal(e.into()))?
        }
    };
    let issues = validate_value(&fhir.service, ty, &resource, params.profile.as_deref())?;
    outcome(req, issues)
}
