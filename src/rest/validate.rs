//! `$validate` (type and instance level) and the write-time validation gate.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::error::{operation_outcome, ApiError, OoIssue};
use super::format;
use super::handlers::{ctx, label, parse_id, parse_type, query_pairs, require};
use super::AppState;
use crate::model::ResourceType;
use crate::storage::Interaction;
use crate::validation::Policy;

type ApiResult = Result<HttpResponse, ApiError>;

/// Converts engine issues to OperationOutcome issues.
pub fn to_oo(issues: &[fhir_validation::Issue]) -> Vec<OoIssue> {
    issues.iter().map(OoIssue::from_issue).collect()
}

/// Runs the per-type validation policy on a resource about to be written:
/// 422 listing every issue when the policy is `enforce` and there is an error.
pub fn gate_write(state: &AppState, ty: ResourceType, resource: &Value) -> Result<(), ApiError> {
    gate(&state.validation, ty, resource)
}

/// Profile validation as configured for `ty`: 422 with every issue under
/// `enforce`, nothing otherwise.
pub fn gate(
    validation: &crate::validation::ValidationService,
    ty: ResourceType,
    resource: &Value,
) -> Result<(), ApiError> {
    if let Some((Policy::Enforce, report)) = validation.check_write(ty, resource) {
        if !report.is_valid() {
            return Err(ApiError::Unprocessable(to_oo(&report.issues)));
        }
    }
    Ok(())
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
        }]
    } else {
        issues
    };
    let (body, ct) = format::encode(&operation_outcome(&issues), out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

fn validate_value(
    state: &AppState,
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
    match state.validation.validate(ty, resource, &extra) {
        Some(report) => Ok(to_oo(&report.issues)),
        None => {
            let mut issues = to_oo(&fhir_structure::check::check_resource(resource));
            issues.push(OoIssue {
                severity: "warning",
                code: "not-supported",
                diagnostics: format!(
                    "Profile validation is unavailable ({}); only structural checks were run",
                    state
                        .validation
                        .unavailable_reason
                        .as_deref()
                        .unwrap_or("not configured")
                ),
                expression: None,
            });
            Ok(issues)
        }
    }
}

type ApiResult2 = Result<Vec<OoIssue>, ApiError>;

/// `POST [type]/$validate`.
pub async fn validate_type(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let ty = parse_type(&path.into_inner(), &state)?;
    label(&req, "operation-validate", Some(ty));
    super::strict::preconditions(&req, "$validate", &[])?;
    let params = read_parameters(&req, &body)?;
    if params.mode.as_deref() == Some("delete") {
        return outcome(&req, Vec::new());
    }
    let resource = params.resource.ok_or_else(|| {
        ApiError::bad_request("required", "$validate needs a resource in the body")
    })?;
    let issues = validate_value(&state, ty, &resource, params.profile.as_deref())?;
    outcome(&req, issues)
}

/// `GET|POST [type]/[id]/$validate`: the body if given, else the stored resource.
pub async fn validate_instance(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let (type_name, id) = path.into_inner();
    let ty = parse_type(&type_name, &state)?;
    label(&req, "operation-validate", Some(ty));
    super::strict::preconditions(&req, "$validate", &[])?;
    let id = parse_id(&id)?;
    let params = read_parameters(&req, &body)?;
    if params.mode.as_deref() == Some("delete") {
        return outcome(&req, Vec::new());
    }
    let resource = match params.resource {
        Some(r) => r,
        None => {
            require(&state, ty, Interaction::Read)?;
            let reader = state
                .backend
                .reader()
                .ok_or_else(|| ApiError::MethodNotAllowed("read is not supported".into()))?;
            let stored = reader.read(&ctx(&req), ty, &id).await?;
            let content = stored.content.unwrap_or_default();
            serde_json::from_str(&content).map_err(|e| ApiError::Internal(e.into()))?
        }
    };
    let issues = validate_value(&state, ty, &resource, params.profile.as_deref())?;
    outcome(&req, issues)
}
