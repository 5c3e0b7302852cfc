//! Search over HTTP: type search (GET and `POST _search`), compartment
//! search, and the searchset Bundle (links, page tokens, includes,
//! `_summary`, `_elements`).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::super::error::{operation_outcome, ApiError, OoIssue};
use super::super::extract::{segment, segment_type, Fhir, TypeParam};
use super::super::format::{self, Prefer};
use super::super::shape::Shape;
use super::super::strict;
use super::{bundle, label, ApiResult};
use crate::model::{LogicalId, ResourceType};
use crate::search::parse::{self as search_parse, ParsedSearch};
use crate::search::types::Predicate;
use crate::service::search::{query_pairs, SearchInput, SearchOutput};
use crate::storage::Interaction;

/// The query parameter of an opaque page link.
const PAGE_PARAM: &str = "_page";

pub async fn search(fhir: Fhir, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "search-type", Some(ty));
    strict::preconditions(req, "search", &[])?;
    let pairs = query_pairs(req.query_string())?;
    if pairs.iter().any(|(k, _)| k == PAGE_PARAM) {
        let pairs = page_token_pairs(&fhir, ty, &pairs).await?;
        return run_search(&fhir, ty, pairs, None, true).await;
    }
    run_search(&fhir, ty, pairs, None, false).await
}

/// The stored parameters behind `?_page=TOKEN` (only `_format`/`_pretty` may go with it).
pub(super) async fn page_token_pairs(
    fhir: &Fhir,
    ty: ResourceType,
    pairs: &[(String, String)],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut token = None;
    for (k, v) in pairs {
        match k.as_str() {
            PAGE_PARAM if token.is_none() => token = Some(v.as_str()),
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::BadRequest(vec![OoIssue::error(
                    "invalid",
                    format!(
                        "A page link (_page) takes no other search parameters ('{other}' given)"
                    ),
                )
                .at(other.to_owned())]))
            }
        }
    }
    let token = token.unwrap_or_default();
    match fhir.service.get_page(&fhir.ctx, token).await? {
        Some((t, params)) if t == ty => {
            let mut stored = query_pairs(&params)?;
            stored.extend(
                pairs
                    .iter()
                    .filter(|(k, _)| k == "_format" || k == "_pretty")
                    .cloned(),
            );
            Ok(stored)
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid",
            "This page link belongs to a search of another resource type",
        )),
        None => Err(ApiError::Gone(
            "This page link is unknown or has expired; repeat the search".into(),
        )),
    }
}

/// `POST [type]/_search` with an `application/x-www-form-urlencoded` body; the
/// URL's own parameters are combined with the body's.
pub async fn search_post(fhir: Fhir, body: web::Bytes, ty: TypeParam) -> ApiResult {
    let ty = ty.0?;
    let req = &fhir.req;
    label(req, "search-type", Some(ty));
    strict::preconditions(req, "search", &[])?;
    let pairs = form_pairs(req, &body)?;
    // The body's parameters stay out of URLs: page links are opaque tokens.
    run_search(&fhir, ty, pairs, None, true).await
}

/// The parameters of a `POST …/_search`: the URL's, then the
/// `application/x-www-form-urlencoded` body's.
pub(super) fn form_pairs(
    req: &actix_web::HttpRequest,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType(
            "POST _search takes an application/x-www-form-urlencoded body".into(),
        ));
    }
    let mut pairs = query_pairs(req.query_string())?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid", "The form body is not UTF-8"))?;
    pairs.extend(query_pairs(text)?);
    Ok(pairs)
}

/// `applied` with `_count` set to `count`: the parameters of paging links.
pub(super) fn paged_pairs(applied: &[(String, String)], count: usize) -> Vec<(String, String)> {
    let mut paged: Vec<(String, String)> = applied
        .iter()
        .filter(|(k, _)| k != "_count")
        .cloned()
        .collect();
    paged.push(("_count".into(), count.to_string()));
    paged
}

/// `Bundle.link` for `relations`: URLs under `path` with their parameters,
/// or (`opaque`) `[type]?_page=TOKEN` with the parameters kept server-side.
pub(super) async fn page_links(
    fhir: &Fhir,
    ty: ResourceType,
    path: &str,
    relations: &[(&str, Vec<(String, String)>)],
    opaque: bool,
) -> Result<Vec<Value>, ApiError> {
    let base = fhir.base();
    if !opaque {
        return Ok(relations
            .iter()
            .map(|(rel, p)| json!({"relation": rel, "url": link(&base, path, p)}))
            .collect());
    }
    let params = relations
        .iter()
        .map(|(_, p)| serde_urlencoded::to_string(p).unwrap_or_default())
        .collect();
    let tokens = fhir.service.put_pages(&fhir.ctx, ty, params).await?;
    Ok(relations
        .iter()
        .zip(tokens)
        .map(|((rel, _), token)| {
            json!({"relation": rel, "url": format!("{base}/{ty}?{PAGE_PARAM}={token}")})
        })
        .collect())
}

/// `GET [base]/Patient/[id]/[type]`: a search of `type` restricted to the
/// patient's compartment (the R4 CompartmentDefinition's parameters, OR-ed).
pub async fn compartment_search(fhir: Fhir) -> ApiResult {
    let req = &fhir.req;
    let comp_ty = segment_type(req, "type")?;
    let ty = segment_type(req, "target")?;
    label(req, "search-compartment", Some(ty));
    strict::preconditions(req, "search", &[])?;
    if comp_ty != ResourceType::Patient {
        return Err(ApiError::bad_request(
            "not-supported",
            format!("Only the Patient compartment is supported, not {comp_ty}"),
        ));
    }
    let id = LogicalId::parse(segment(req, "id"))
        .ok_or_else(|| ApiError::bad_request("invalid", "Invalid resource id"))?;
    let within = fhir.service.patient_compartment(comp_ty, &id, ty)?;
    let pairs = query_pairs(req.query_string())?;
    let prefix = format!("Patient/{id}/{ty}");
    run_search(&fhir, ty, pairs, Some((within, prefix)), false).await
}

fn link(base: &str, path: &str, pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        format!("{base}/{path}")
    } else {
        format!(
            "{base}/{path}?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    }
}

async fn run_search(
    fhir: &Fhir,
    ty: ResourceType,
    pairs: Vec<(String, String)>,
    compartment: Option<(Predicate, String)>,
    opaque_links: bool,
) -> ApiResult {
    fhir.service.require(ty, Interaction::SearchType)?;
    let out = fhir.out()?;
    let Prefer { lenient, .. } = fhir.prefer()?;
    let base = fhir.base();
    let (within, path) = match compartment {
        Some((pred, path)) => (Some(pred), path),
        None => (None, ty.to_string()),
    };
    let SearchOutput {
        parsed:
            ParsedSearch {
                query,
                applied,
                warnings,
                summary,
                elements,
            },
        page,
    } = fhir
        .service
        .search(
            &fhir.ctx,
            SearchInput {
                ty,
                pairs: &pairs,
                within,
                lenient,
                base_url: &base,
            },
        )
        .await?;

    if let Some(trail) = fhir.ctx.audit_trail() {
        trail.set_query(serde_urlencoded::to_string(&applied).unwrap_or_default());
    }
    let paged = paged_pairs(&applied, query.count);
    let with_cursor = |c: &crate::search::types::Cursor| {
        let mut p = paged.clone();
        p.push(("_cursor".into(), search_parse::encode_cursor(c)));
        p
    };
    let self_pairs = match &query.cursor {
        Some(c) => with_cursor(c),
        None => applied.clone(),
    };
    let mut relations = vec![("self", self_pairs)];
    if query.count > 0 {
        relations.push(("first", paged.clone()));
    }
    if let Some(prev) = &page.previous {
        relations.push(("previous", with_cursor(prev)));
    }
    if let Some(next) = &page.next {
        relations.push(("next", with_cursor(next)));
    }
    let links = page_links(fhir, ty, &path, &relations, opaque_links).await?;

    let shape = Shape { summary, elements };
    // Plain JSON with every element: the stored text of each resource goes
    // into the Bundle as it is, never parsed and serialised again.
    let verbatim = out.format == format::Format::Json && !out.pretty && shape.is_identity();
    let mut entries = Vec::with_capacity(page.resources.len() + page.included.len() + 1);
    let mut raw_entries: Vec<String> = Vec::new();
    for (r, mode) in page
        .resources
        .iter()
        .map(|r| (r, "match"))
        .chain(page.included.iter().map(|r| (r, "include")))
    {
        let full_url = format!("{base}/{}/{}", r.resource_type, r.id);
        if verbatim {
            if let Some(content) = &r.content {
                raw_entries.push(raw_entry(&full_url, content, mode)?);
            }
        } else if let Some(resource) = shape.apply(r)? {
            entries.push(json!({
                "fullUrl": full_url,
                "resource": resource,
                "search": {"mode": mode},
            }));
        }
    }
    let mut notes: Vec<OoIssue> = warnings
        .into_iter()
        .map(|w| OoIssue {
            severity: "warning",
            code: "not-supported",
            diagnostics: format!("Ignored: {}", w.message),
            expression: (!w.param.is_empty()).then_some(w.param),
            details: None,
        })
        .collect();
    if page.include_truncated {
        notes.push(OoIssue {
            severity: "warning",
            code: "too-costly",
            diagnostics: format!(
                "_include/_revinclude stopped after {} resources",
                page.included.len()
            ),
            expression: None,
            details: None,
        });
    }
    if !notes.is_empty() {
        let outcome = json!({
            "resource": operation_outcome(&notes),
            "search": {"mode": "outcome"},
        });
        if verbatim {
            raw_entries
                .push(serde_json::to_string(&outcome).map_err(|e| ApiError::Internal(e.into()))?);
        } else {
            entries.push(outcome);
        }
    }
    let bundle = bundle("searchset", page.total, links, entries);
    let (body, ct) = if verbatim {
        (with_raw_entries(&bundle, &raw_entries)?, format::FHIR_JSON)
    } else {
        format::encode(&bundle, out)?
    };
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

/// `{"fullUrl":…,"resource":<stored JSON>,"search":{"mode":…}}`.
fn raw_entry(full_url: &str, content: &str, mode: &str) -> Result<String, ApiError> {
    let url = serde_json::to_string(full_url).map_err(|e| ApiError::Internal(e.into()))?;
    let mut e = String::with_capacity(content.len() + url.len() + 64);
    e.push_str("{\"fullUrl\":");
    e.push_str(&url);
    e.push_str(",\"resource\":");
    e.push_str(content);
    e.push_str(",\"search\":{\"mode\":\"");
    e.push_str(mode);
    e.push_str("\"}}");
    Ok(e)
}

/// The Bundle (which has no `entry` yet) as JSON text with `entry` appended,
/// made of already serialised entries.
fn with_raw_entries(bundle: &Value, entries: &[String]) -> Result<String, ApiError> {
    let mut text = serde_json::to_string(bundle).map_err(|e| ApiError::Internal(e.into()))?;
    if entries.is_empty() {
        return Ok(text);
    }
    if text.pop() != Some('}') {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a Bundle did not serialise to a JSON object"
        )));
    }
    let len: usize = entries.iter().map(|e| e.len() + 1).sum();
    text.reserve(len + 12);
    text.push_str(",\"entry\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(e);
    }
    text.push_str("]}");
    Ok(text)
}
