//! `AuditEvent`, read and search only, from the audit trail
//! (`service::audit`). Every other method on these routes is a 405 (the
//! route table's default), and so is every other AuditEvent interaction
//! (the backend declares only read and search-type for it).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::extract::{segment, Fhir};
use super::super::format;
use super::{bundle, label, parse_id, ApiResult};
use crate::model::ResourceType;
use crate::service::audit::parse_search;
use crate::service::search::query_pairs;

const TY: ResourceType = ResourceType::AuditEvent;

/// `GET AuditEvent/{id}`.
pub async fn read(fhir: Fhir) -> ApiResult {
    let req = &fhir.req;
    label(req, "read", Some(TY));
    super::super::strict::only(req, "read", &[], &[])?;
    let id = parse_id(segment(req, "id"))?;
    let out = fhir.out()?;
    let found = fhir.service.audit_read(&fhir.ctx, id.as_str()).await?;
    let (body, ct) = format::encode_stored(&found.content, out)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format::etag(1)))
        .content_type(ct)
        .body(body))
}

/// `GET AuditEvent` and `GET AuditEvent/_search`.
pub async fn search(fhir: Fhir) -> ApiResult {
    let req = &fhir.req;
    label(req, "search-type", Some(TY));
    super::super::strict::preconditions(req, "search", &[])?;
    let pairs = query_pairs(req.query_string())?;
    if pairs.iter().any(|(k, _)| k == "_page") {
        let pairs = super::search::page_token_pairs(&fhir, TY, &pairs).await?;
        return run(&fhir, pairs, true).await;
    }
    run(&fhir, pairs, false).await
}

/// `POST AuditEvent/_search` (form body; page links are opaque tokens).
pub async fn search_post(fhir: Fhir, body: web::Bytes) -> ApiResult {
    let req = &fhir.req;
    label(req, "search-type", Some(TY));
    super::super::strict::preconditions(req, "search", &[])?;
    let pairs = super::search::form_pairs(req, &body)?;
    run(&fhir, pairs, true).await
}

async fn run(fhir: &Fhir, pairs: Vec<(String, String)>, opaque: bool) -> ApiResult {
    let out = fhir.out()?;
    let paging = fhir.settings().search.clone();
    let search = parse_search(&pairs, paging.default_count, paging.max_count)?;
    let base = fhir.base();
    let paged = super::search::paged_pairs(&search.applied, search.page.count);
    if let Some(t) = fhir.ctx.audit_trail() {
        t.set_query(serde_urlencoded::to_string(&search.applied).unwrap_or_default());
    }
    let page = fhir.service.audit_search(&fhir.ctx, search.clone()).await?;
    let mut relations = vec![("self", search.applied.clone())];
    if let Some(next) = page.next {
        let mut p = paged;
        p.push(("_cursor".into(), format!("{}.{}", next.recorded, next.seq)));
        relations.push(("next", p));
    }
    let links = super::search::page_links(fhir, TY, TY.as_str(), &relations, opaque).await?;
    let mut entries = Vec::with_capacity(page.events.len());
    for e in &page.events {
        let resource: Value =
            serde_json::from_str(&e.content).map_err(|e| ApiError::Internal(e.into()))?;
        entries.push(json!({
            "fullUrl": format!("{base}/{TY}/{}", e.id),
            "resource": resource,
            "search": {"mode": "match"},
        }));
    }
    let b = bundle("searchset", None, links, entries);
    let (body, ct) = format::encode(&b, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}
