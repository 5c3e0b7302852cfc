//! History at the three levels: the history Bundle with `self`/`next` links
//! (keyset cursors), entries with their request and response.

use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::super::error::{operation_outcome, OoIssue};
use super::super::extract::{segment, Fhir, TypeParam};
use super::super::format::{self, Prefer};
use super::super::strict;
use super::{bundle, label, parse_id, ApiResult};
use crate::service::history::HistoryRequest;
use crate::service::search::query_pairs;
use crate::storage::{HistoryScope, Interaction};

pub async fn history_system(fhir: Fhir) -> ApiResult {
    label(&fhir.req, "history-system", None);
    if !fhir.service.capabilities().system_history {
        return Err(super::super::error::ApiError::MethodNotAllowed(
            "System history is not supported".into(),
        ));
    }
    history(&fhir, HistoryScope::System).await
}

pub async fn history_type(fhir: Fhir, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    label(&fhir.req, "history-type", Some(ty));
    fhir.service.require(ty, Interaction::HistoryType)?;
    history(&fhir, HistoryScope::Type(ty)).await
}

pub async fn history_instance(fhir: Fhir, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    label(&fhir.req, "history-instance", Some(ty));
    fhir.service.require(ty, Interaction::HistoryInstance)?;
    let id = parse_id(segment(&fhir.req, "id"))?;
    history(&fhir, HistoryScope::Instance(ty, id)).await
}

async fn history(fhir: &Fhir, scope: HistoryScope) -> ApiResult {
    let req = &fhir.req;
    let out = fhir.out()?;
    let Prefer { lenient, .. } = fhir.prefer()?;
    strict::preconditions(req, "history", &[])?;
    let pairs = query_pairs(req.query_string())?;
    let HistoryRequest {
        query: q,
        applied,
        warnings,
    } = fhir
        .service
        .history_request(scope.clone(), &pairs, lenient)?;
    let page = fhir.service.history(&fhir.ctx, q.clone()).await?;
    let base = fhir.base();
    let path = match &scope {
        HistoryScope::System => "_history".to_owned(),
        HistoryScope::Type(t) => format!("{t}/_history"),
        HistoryScope::Instance(t, id) => format!("{t}/{id}/_history"),
    };
    let with_query = |pairs: &[(String, String)]| {
        if pairs.is_empty() {
            format!("{base}/{path}")
        } else {
            format!(
                "{base}/{path}?{}",
                serde_urlencoded::to_string(pairs).unwrap_or_default()
            )
        }
    };
    let mut self_pairs = applied.clone();
    if let Some(seq) = q.before_seq {
        self_pairs.push(("_cursor".into(), seq.to_string()));
    }
    let mut links = vec![json!({"relation": "self", "url": with_query(&self_pairs)})];
    if let Some(next) = page.next_before_seq {
        let mut next_pairs: Vec<(String, String)> = applied
            .iter()
            .filter(|(k, _)| k != "_count")
            .cloned()
            .collect();
        next_pairs.push(("_count".into(), q.count.to_string()));
        next_pairs.push(("_cursor".into(), next.to_string()));
        links.push(json!({"relation": "next", "url": with_query(&next_pairs)}));
    }
    let mut entries = Vec::with_capacity(page.entries.len());
    for e in &page.entries {
        let r = &e.resource;
        let mut entry = serde_json::Map::new();
        entry.insert(
            "fullUrl".into(),
            json!(format!("{base}/{}/{}", r.resource_type, r.id)),
        );
        if let Some(content) = &r.content {
            let resource: Value = serde_json::from_str(content)
                .map_err(|e| super::super::error::ApiError::Internal(e.into()))?;
            entry.insert("resource".into(), resource);
        }
        let (url, status) = match e.method.as_str() {
            "POST" => (r.resource_type.to_string(), "201 Created"),
            "DELETE" => (format!("{}/{}", r.resource_type, r.id), "204 No Content"),
            _ if r.version == 1 => (format!("{}/{}", r.resource_type, r.id), "201 Created"),
            _ => (format!("{}/{}", r.resource_type, r.id), "200 OK"),
        };
        entry.insert("request".into(), json!({"method": e.method, "url": url}));
        entry.insert(
            "response".into(),
            json!({
                "status": status,
                "etag": format::etag(r.version),
                "lastModified": r.last_updated.to_fhir(),
            }),
        );
        entries.push(Value::Object(entry));
    }
    if !warnings.is_empty() {
        let issues: Vec<OoIssue> = warnings
            .into_iter()
            .map(|w| OoIssue {
                severity: "warning",
                code: "not-supported",
                diagnostics: format!("Ignored: {w}"),
                expression: None,
                details: None,
            })
            .collect();
        entries.push(json!({"resource": operation_outcome(&issues)}));
    }
    let bundle = bundle("history", Some(page.total), links, entries);
    let (body, ct) = format::encode(&bundle, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}
