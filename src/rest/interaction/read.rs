//! `read` and `vread`: conditional reads (`If-None-Match`, `If-Modified-Since`),
//! `_summary`/`_elements`, 410 with the deletion's version.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

use super::super::error::{operation_outcome, ApiError, OoIssue};
use super::super::extract::{segment, Fhir, TypeParam};
use super::super::format::{self, ReturnPref};
use super::super::shape::Shape;
use super::super::strict;
use super::{label, parse_id, resource_response, ApiResult};
use crate::model::{StoredResource, VersionId};
use crate::service::read::Found;
use crate::storage::Interaction;

pub async fn read(fhir: Fhir, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "read", Some(ty));
    fhir.service.require(ty, Interaction::Read)?;
    let pairs = strict::only(
        req,
        "read",
        &["_summary", "_elements"],
        &["if-none-match", "if-modified-since"],
    )?;
    let shape = Shape::from_params(ty, &pairs)?;
    let id = parse_id(segment(req, "id"))?;
    let out = fhir.out()?;
    let stored = match fhir.service.read(&fhir.ctx, ty, &id).await? {
        Found::Current(s) => s,
        Found::Deleted {
            version,
            last_updated,
        } => {
            let oo =
                operation_outcome(&[OoIssue::error("deleted", format!("{ty}/{id} was deleted"))]);
            return Ok(HttpResponse::Gone()
                .insert_header((header::ETAG, format::etag(version)))
                .insert_header((header::LAST_MODIFIED, last_updated.to_http_date()))
                .content_type(format::FHIR_JSON)
                .body(oo.to_string()));
        }
    };
    if format::if_none_match_hits(req.headers(), stored.version) {
        return Ok(not_modified(&stored));
    }
    if req.headers().get(header::IF_NONE_MATCH).is_none() {
        if let Some(since) = format::if_modified_since(req.headers()) {
            if stored.last_updated.seconds() <= since {
                return Ok(not_modified(&stored));
            }
        }
    }
    let stored = shaped(stored, &shape)?;
    resource_response(
        StatusCode::OK,
        &stored,
        out,
        ReturnPref::Representation,
        None,
    )
}

/// The stored resource with `_summary`/`_elements` applied to its content.
fn shaped(stored: StoredResource, shape: &Shape) -> Result<StoredResource, ApiError> {
    if shape.is_identity() {
        return Ok(stored);
    }
    let content = shape.apply(&stored)?.map(|v| v.to_string());
    Ok(StoredResource { content, ..stored })
}

fn not_modified(stored: &StoredResource) -> HttpResponse {
    HttpResponse::NotModified()
        .insert_header((header::ETAG, format::etag(stored.version)))
        .insert_header((header::LAST_MODIFIED, stored.last_updated.to_http_date()))
        .finish()
}

pub async fn vread(fhir: Fhir, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "vread", Some(ty));
    fhir.service.require(ty, Interaction::Vread)?;
    let pairs = strict::only(req, "vread", &["_summary", "_elements"], &[])?;
    let shape = Shape::from_params(ty, &pairs)?;
    let id = parse_id(segment(req, "id"))?;
    let version: VersionId = segment(req, "vid")
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            ApiError::bad_request("value", "The version id must be a positive integer")
        })?;
    let out = fhir.out()?;
    let stored = fhir.service.vread(&fhir.ctx, ty, &id, version).await?;
    let stored = shaped(stored, &shape)?;
    resource_response(
        StatusCode::OK,
        &stored,
        out,
        ReturnPref::Representation,
        None,
    )
}
