//! `create` (with `If-None-Exist`), `update` (with `If-Match` /
//! `If-None-Match: *`) and `delete`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};

use super::super::error::{operation_outcome, ApiError, OoIssue};
use super::super::extract::{segment, Fhir, TypeParam};
use super::super::format::{self, ReturnPref};
use super::super::strict;
use super::{label, parse_id, resource_response, ApiResult};
use crate::policy::Action;
use crate::storage::{Interaction, Precondition, WriteKind};

pub async fn create(fhir: Fhir, body: web::Bytes, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "create", Some(ty));
    fhir.service.require(ty, Interaction::Create)?;
    strict::only(req, "create", &[], &["if-none-exist"])?;
    let out = fhir.out()?;
    let prefer = fhir.prefer()?;
    let base = fhir.base();
    let if_none_exist = match req.headers().get("if-none-exist") {
        None => None,
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::bad_request("invalid", "If-None-Exist is not valid ASCII")
            })?;
            Some(
                fhir.service
                    .parse_criteria(&base, ty, text, "If-None-Exist")?,
            )
        }
    };
    let value = format::decode_body(req, &body)?;
    let written = fhir
        .service
        .create(&fhir.ctx, ty, value, if_none_exist, &base)
        .await?;
    let stored = written
        .stored
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("create returned no resource")))?;
    let status = if written.kind == WriteKind::Existing {
        fhir.ctx.audit_touch(&stored, Action::Read);
        StatusCode::OK
    } else {
        fhir.ctx.audit_touch(&stored, Action::Create);
        StatusCode::CREATED
    };
    resource_response(status, &stored, out, prefer.return_pref, Some(&base))
}

pub async fn update(fhir: Fhir, body: web::Bytes, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "update", Some(ty));
    fhir.service.require(ty, Interaction::Update)?;
    strict::only(req, "update", &[], &["if-match", "if-none-match"])?;
    let id = parse_id(segment(req, "id"))?;
    let out = fhir.out()?;
    let prefer = fhir.prefer()?;
    let mut precondition = match format::if_match(req.headers())? {
        Some(v) => Precondition::VersionIs(v),
        None => Precondition::None,
    };
    if let Some(v) = req.headers().get(header::IF_NONE_MATCH) {
        if v.to_str().map(str::trim).ok() == Some("*") {
            if precondition != Precondition::None {
                return Err(ApiError::bad_request(
                    "invalid",
                    "If-Match and If-None-Match cannot be combined",
                ));
            }
            precondition = Precondition::MustNotExist;
        } else {
            return Err(ApiError::bad_request(
                "not-supported",
                "On update only 'If-None-Match: *' is supported",
            ));
        }
    }
    let value = format::decode_body(req, &body)?;
    let base = fhir.base();
    let written = fhir
        .service
        .update(&fhir.ctx, ty, id, value, precondition, &base)
        .await?;
    let stored = written
        .stored
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("update returned no resource")))?;
    if written.kind == WriteKind::Queued {
        // Accepted for later delivery: the body is the Task tracking it.
        fhir.ctx.audit_touch(&stored, Action::Create);
        let mut resp = resource_response(
            StatusCode::ACCEPTED,
            &stored,
            out,
            crate::service::ReturnPref::Representation,
            Some(&base),
        )?;
        if let Ok(v) =
            actix_web::http::header::HeaderValue::from_str(&format!("{base}/Task/{}", stored.id))
        {
            resp.headers_mut()
                .insert(actix_web::http::header::CONTENT_LOCATION, v);
        }
        return Ok(resp);
    }
    let status = if written.kind == WriteKind::Created {
        fhir.ctx.audit_touch(&stored, Action::Create);
        StatusCode::CREATED
    } else {
        fhir.ctx.audit_touch(&stored, Action::Update);
        StatusCode::OK
    };
    resource_response(status, &stored, out, prefer.return_pref, Some(&base))
}

pub async fn delete(fhir: Fhir, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "delete", Some(ty));
    fhir.service.require(ty, Interaction::Delete)?;
    strict::only(req, "delete", &[], &["if-match"])?;
    let id = parse_id(segment(req, "id"))?;
    let out = fhir.out()?;
    let prefer = fhir.prefer()?;
    let if_match = format::if_match(req.headers())?;
    let written = fhir
        .service
        .delete(&fhir.ctx, ty, id.clone(), if_match)
        .await?;
    let oo_wanted = prefer.return_pref == ReturnPref::OperationOutcome;
    let mut builder = HttpResponse::build(if oo_wanted {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    });
    if let Some(stored) = &written.stored {
        builder.insert_header((header::ETAG, format::etag(stored.version)));
        if written.kind == WriteKind::Deleted {
            fhir.ctx.audit_touch(stored, Action::Delete);
        }
    }
    if oo_wanted {
        let msg = match written.kind {
            WriteKind::Deleted => format!("{ty}/{id} deleted"),
            _ => format!("{ty}/{id} did not exist or was already deleted; nothing changed"),
        };
        let oo = operation_outcome(&[OoIssue {
            severity: "information",
            code: "informational",
            diagnostics: msg,
            expression: None,
            details: None,
        }]);
        let (body, ct) = format::encode(&oo, out)?;
        return Ok(builder.content_type(ct).body(body));
    }
    Ok(builder.finish())
}
