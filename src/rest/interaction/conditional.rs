//! Conditional update and delete (`PUT|DELETE [type]?criteria`) and PATCH
//! (JSON Patch or FHIRPath Patch): decoded here, run by the service as
//! one-entry transactions.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::super::error::{operation_outcome, ApiError};
use super::super::extract::{segment, Fhir, TypeParam};
use super::super::format;
use super::super::strict;
use super::{label, ApiResult};
use crate::base64;
use crate::model::ResourceType;
use crate::service::transaction::{ConditionalInput, EntryResult};
use crate::storage::Interaction;

/// The service input of a conditional update/delete (`criteria`) or a PATCH
/// (`criteria` is the id): `If-Match` as sent and `Prefer: return`.
fn input<'a>(
    fhir: &'a Fhir,
    ty: ResourceType,
    criteria: &'a str,
    base: &'a str,
) -> Result<ConditionalInput<'a>, ApiError> {
    Ok(ConditionalInput {
        ty,
        criteria,
        if_match: fhir
            .req
            .headers()
            .get("if-match")
            .and_then(|v| v.to_str().ok()),
        ret: fhir.prefer()?.return_pref,
        base,
    })
}

/// What a conditional update or delete checks first: the interaction, the
/// precondition headers, and that there are criteria.
fn conditional_checks(
    fhir: &Fhir,
    ty: ResourceType,
    interaction: Interaction,
    (label_name, what, method): (&'static str, &str, &str),
) -> Result<(), ApiError> {
    let req = &fhir.req;
    label(req, label_name, Some(ty));
    fhir.service.require(ty, interaction)?;
    strict::preconditions(req, what, &["if-match"])?;
    if req.query_string().is_empty() {
        return Err(ApiError::MethodNotAllowed(format!(
            "{method} on a type needs search criteria ({what})"
        )));
    }
    Ok(())
}

fn respond(fhir: &Fhir, r: EntryResult, base: &str) -> ApiResult {
    let out = fhir.out()?;
    if let Some(stored) = &r.stored {
        fhir.ctx.audit_touch(
            stored,
            written_action(fhir.req.method().as_str(), r.status, stored),
        );
    }
    let mut b = HttpResponse::build(StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK));
    if let Some(v) = r.etag {
        b.insert_header((actix_web::http::header::ETAG, format::etag(v)));
    }
    if let Some(t) = r.last_modified {
        b.insert_header((actix_web::http::header::LAST_MODIFIED, t.to_http_date()));
    }
    if let Some(l) = &r.location {
        b.insert_header((actix_web::http::header::LOCATION, format!("{base}/{l}")));
    }
    let outcome = r.outcome.as_deref().map(operation_outcome);
    if let Some(res) = r.resource.as_ref().or(outcome.as_ref()) {
        let (body, ct) = format::encode(res, out)?;
        return Ok(b.content_type(ct).body(body));
    }
    Ok(b.finish())
}

/// `PUT [type]?criteria`: conditional update.
pub async fn conditional_update(fhir: Fhir, body: web::Bytes, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    conditional_checks(
        &fhir,
        ty,
        Interaction::Update,
        ("update-conditional", "conditional update", "PUT"),
    )?;
    let base = fhir.base();
    let input = input(&fhir, ty, fhir.req.query_string(), &base)?;
    let value = format::decode_body(&fhir.req, &body)?;
    let r = fhir
        .service
        .conditional_update(&fhir.ctx, input, value)
        .await?;
    respond(&fhir, r, &base)
}

/// `DELETE [type]?criteria`: conditional delete (one or several, up to the cap).
pub async fn conditional_delete(fhir: Fhir, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    conditional_checks(
        &fhir,
        ty,
        Interaction::Delete,
        ("delete-conditional", "conditional delete", "DELETE"),
    )?;
    let base = fhir.base();
    let input = input(&fhir, ty, fhir.req.query_string(), &base)?;
    let r = fhir.service.conditional_delete(&fhir.ctx, input).await?;
    respond(&fhir, r, &base)
}

/// `PATCH [type]/[id]` (JSON Patch or FHIRPath Patch) and `PATCH [type]?criteria`.
pub async fn patch(fhir: Fhir, body: web::Bytes, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "patch", Some(ty));
    fhir.service.require(ty, Interaction::Update)?;
    strict::only(req, "patch", &[], &["if-match"])?;
    let id = segment(req, "id").to_owned();
    let ct = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let doc = if ct.starts_with("application/json-patch+json") {
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "structure",
                format!("The JSON Patch is not valid JSON: {e}"),
            )
        })?;
        json!({
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64::encode(&serde_json::to_vec(&v).unwrap_or_default(), base64::Alphabet::Standard),
        })
    } else if ct.starts_with("application/fhir+json")
        || ct.starts_with("application/json")
        || ct.starts_with("application/fhir+xml")
        || ct.starts_with("application/xml")
    {
        format::decode_body(req, &body)?
    } else {
        return Err(ApiError::UnsupportedMediaType(
            "PATCH takes application/json-patch+json or a FHIRPath Patch Parameters resource (application/fhir+json or +xml)".into(),
        ));
    };
    let base = fhir.base();
    let input = input(&fhir, ty, &id, &base)?;
    let r = fhir.service.patch(&fhir.ctx, input, doc).await?;
    respond(&fhir, r, &base)
}

/// What a conditional write or PATCH did to `stored`, for the audit.
pub(super) fn written_action(
    method: &str,
    status: u16,
    stored: &crate::model::StoredResource,
) -> crate::policy::Action {
    use crate::policy::Action;
    match (method, status) {
        ("GET", _) => Action::Read,
        ("POST", 200) => Action::Read,
        ("DELETE", _) => Action::Delete,
        _ if stored.is_deleted() => Action::Delete,
        (_, 201) => Action::Create,
        _ => Action::Update,
    }
}
