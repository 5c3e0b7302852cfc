//! One module per FHIR interaction family. Each handler decodes its HTTP
//! request (the [`Fhir`](super::extract::Fhir) extractor has built the
//! context), calls one service operation, and encodes the result.

pub mod audit;
pub mod batch;
pub mod capabilities;
pub mod conditional;
pub mod history;
pub mod read;
pub mod search;
pub mod smart;
pub mod system;
pub mod write;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::error::{operation_outcome, ApiError, OoIssue};
use super::format::{self, Output, ReturnPref};
use super::InteractionLabel;
use crate::model::{Instant, LogicalId, ResourceType, StoredResource};

pub(crate) type ApiResult = Result<HttpResponse, ApiError>;

pub(crate) fn label(req: &HttpRequest, interaction: &'static str, ty: Option<ResourceType>) {
    req.extensions_mut().insert(InteractionLabel {
        interaction,
        resource_type: ty.map(|t| t.as_str()).unwrap_or("system"),
    });
}

pub(crate) fn parse_id(id: &str) -> Result<LogicalId, ApiError> {
    LogicalId::parse(id).ok_or_else(|| {
        ApiError::bad_request(
            "value",
            "Invalid resource id: ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
        )
    })
}

/// Writes a resource response with `ETag`, `Last-Modified` and, for writes,
/// `Location`; the body follows `Prefer: return=`.
fn resource_response(
    status: StatusCode,
    stored: &StoredResource,
    out: Output,
    return_pref: ReturnPref,
    location: Option<&str>,
) -> ApiResult {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::ETAG, format::etag(stored.version)))
        .insert_header((header::LAST_MODIFIED, stored.last_updated.to_http_date()));
    if let Some(base) = location {
        builder.insert_header((
            header::LOCATION,
            format!(
                "{base}/{}/{}/_history/{}",
                stored.resource_type, stored.id, stored.version
            ),
        ));
    }
    match return_pref {
        ReturnPref::Minimal => Ok(builder.finish()),
        ReturnPref::Representation => {
            let content = stored.content.as_deref().unwrap_or("{}");
            let (body, ct) = format::encode_stored(content, out)?;
            Ok(builder.content_type(ct).body(body))
        }
        ReturnPref::OperationOutcome => {
            let oo = operation_outcome(&[OoIssue {
                severity: "information",
                code: "informational",
                diagnostics: format!(
                    "{}/{} version {} stored",
                    stored.resource_type, stored.id, stored.version
                ),
                expression: None,
                details: None,
            }]);
            let (body, ct) = format::encode(&oo, out)?;
            Ok(builder.content_type(ct).body(body))
        }
    }
}

pub(crate) fn bundle(
    kind: &str,
    total: Option<i64>,
    links: Vec<Value>,
    entries: Vec<Value>,
) -> Value {
    let mut b = serde_json::Map::new();
    b.insert("resourceType".into(), json!("Bundle"));
    b.insert("id".into(), json!(LogicalId::generate().as_str()));
    b.insert(
        "meta".into(),
        json!({"lastUpdated": Instant::now().to_fhir()}),
    );
    b.insert("type".into(), json!(kind));
    if let Some(t) = total {
        b.insert("total".into(), json!(t));
    }
    // FHIR JSON has no empty arrays: no links, no `link`; no entries, no `entry`.
    if !links.is_empty() {
        b.insert("link".into(), Value::Array(links));
    }
    if !entries.is_empty() {
        b.insert("entry".into(), Value::Array(entries));
    }
    Value::Object(b)
}
