//! `POST [base]`: batch and transaction Bundles. The service runs them; this
//! module writes the response Bundle (entry responses, nested searchsets,
//! outcomes) as the `Prefer: return` preference asks.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::super::error::{operation_outcome, ApiError};
use super::super::extract::Fhir;
use super::super::format;
use super::super::strict;
use super::{bundle, label, ApiResult};
use crate::service::transaction::{BundleOutcome, EntryResult};

/// `POST [base]` with a batch or transaction Bundle.
pub async fn system_post(fhir: Fhir, body: web::Bytes) -> ApiResult {
    let req = &fhir.req;
    label(req, "transaction", None);
    strict::only(req, "batch/transaction", &[], &[])?;
    let out = fhir.out()?;
    let prefer = fhir.prefer()?;
    let base = fhir.base();
    let value = format::decode_body(req, &body)?;
    // For the audit: the bundle's kind and each entry's method.
    let methods: Vec<String> = value
        .get("entry")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    e.pointer("/request/method")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(trail) = fhir.ctx.audit_trail() {
        if value.get("type").and_then(Value::as_str) == Some("batch") {
            trail.set_subtype("batch");
        }
    }
    let outcome = fhir
        .service
        .bundle(&fhir.ctx, &base, value, prefer.return_pref)
        .await?;
    match &outcome {
        BundleOutcome::Transaction(rs) => {
            for (r, m) in rs.iter().zip(&methods) {
                touch_entry(&fhir, r, m);
            }
        }
        // Batch results keep their entry's position (errors included).
        BundleOutcome::Batch(rs) => {
            for (r, m) in rs.iter().zip(&methods) {
                if let Ok(r) = r {
                    touch_entry(&fhir, r, m);
                }
            }
        }
    }
    let response = response_bundle(&base, &outcome)?;
    let (body, ct) = format::encode(&response, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

/// The `transaction-response` or `batch-response` Bundle of an outcome.
pub fn response_bundle(base: &str, outcome: &BundleOutcome) -> Result<Value, ApiError> {
    Ok(match outcome {
        BundleOutcome::Transaction(results) => {
            let entries = results
                .iter()
                .map(|r| response_entry(base, r))
                .collect::<Result<_, _>>()?;
            bundle("transaction-response", None, vec![], entries)
        }
        BundleOutcome::Batch(results) => {
            let entries = results
                .iter()
                .map(|r| match r {
                    Ok(r) => response_entry(base, r),
                    Err(e) => Ok(error_entry(e)),
                })
                .collect::<Result<_, _>>()?;
            bundle("batch-response", None, vec![], entries)
        }
    })
}

/// A nested searchset of a GET entry.
pub(super) fn searchset(base: &str, page: &crate::storage::SearchPage) -> Result<Value, ApiError> {
    let mut entries = Vec::new();
    for (r, mode) in page
        .resources
        .iter()
        .map(|r| (r, "match"))
        .chain(page.included.iter().map(|r| (r, "include")))
    {
        let resource: Value = serde_json::from_str(r.content.as_deref().unwrap_or("null"))
            .map_err(|e| ApiError::Internal(e.into()))?;
        entries.push(json!({
            "fullUrl": format!("{base}/{}/{}", r.resource_type, r.id),
            "resource": resource,
            "search": {"mode": mode},
        }));
    }
    Ok(bundle("searchset", page.total, vec![], entries))
}

pub(super) fn status_text(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}").trim_end().to_owned()
}

pub(super) fn response_entry(base: &str, r: &EntryResult) -> Result<Value, ApiError> {
    let mut response = serde_json::Map::new();
    response.insert("status".into(), json!(status_text(r.status)));
    if let Some(l) = &r.location {
        response.insert("location".into(), json!(l));
    }
    if let Some(v) = r.etag {
        response.insert("etag".into(), json!(format::etag(v)));
    }
    if let Some(t) = r.last_modified {
        response.insert("lastModified".into(), json!(t.to_fhir()));
    }
    if let Some(o) = &r.outcome {
        response.insert("outcome".into(), operation_outcome(o));
    }
    let mut entry = serde_json::Map::new();
    if let Some(s) = &r.stored {
        entry.insert(
            "fullUrl".into(),
            json!(format!("{base}/{}/{}", s.resource_type, s.id)),
        );
    }
    if let Some(res) = &r.resource {
        entry.insert("resource".into(), res.clone());
    } else if let Some(page) = &r.page {
        entry.insert("resource".into(), searchset(base, page)?);
    }
    entry.insert("response".into(), Value::Object(response));
    Ok(Value::Object(entry))
}

fn error_entry(e: &ApiError) -> Value {
    use actix_web::ResponseError;
    json!({
        "response": {
            "status": status_text(e.status_code().as_u16()),
            "outcome": operation_outcome(&e.issues()),
        }
    })
}

/// Records a written entry's resource for the audit (read entries passed
/// the policy's admit, which recorded them).
fn touch_entry(fhir: &Fhir, r: &EntryResult, method: &str) {
    if r.page.is_some() || method == "GET" || method == "HEAD" {
        return;
    }
    if let Some(stored) = &r.stored {
        fhir.ctx.audit_touch(
            stored,
            super::conditional::written_action(method, r.status, stored),
        );
    }
}
