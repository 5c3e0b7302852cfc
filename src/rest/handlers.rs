//! One handler per FHIR interaction, parameterised by resource type.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::error::{operation_outcome, ApiError, OoIssue};
use super::format::{self, Output, Prefer, ReturnPref};
use super::shape::Shape;
use super::strict;
use super::{AppState, InteractionLabel, RequestId};
use crate::model::{Instant, LogicalId, ResourceType, VersionId};
use crate::service::{self, WriteTarget};
use crate::storage::{
    CreateRequest, DeleteRequest, HistoryQuery, HistoryScope, Interaction, Precondition,
    RequestContext, StoredResource, UpdateRequest, WriteKind,
};

type ApiResult = Result<HttpResponse, ApiError>;

pub(crate) fn label(req: &HttpRequest, interaction: &'static str, ty: Option<ResourceType>) {
    req.extensions_mut().insert(InteractionLabel {
        interaction,
        resource_type: ty.map(|t| t.as_str()).unwrap_or("system"),
    });
}

pub(crate) fn ctx(req: &HttpRequest) -> RequestContext {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let policy: std::sync::Arc<dyn crate::policy::Policy> = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.policy.clone())
        .unwrap_or_else(|| std::sync::Arc::new(crate::policy::DenyAll));
    RequestContext::new(request_id, crate::context::Principal::Anonymous, policy)
}

/// The FHIR base URL (`…/fhir`) as clients see it.
pub fn base_url(req: &HttpRequest, state: &AppState) -> String {
    match state.settings.server.configured_base() {
        Some(b) => b,
        None => {
            let info = req.connection_info();
            format!("{}://{}/fhir", info.scheme(), info.host())
        }
    }
}

pub(crate) fn parse_type(name: &str, state: &AppState) -> Result<ResourceType, ApiError> {
    let ty: ResourceType = name.parse().map_err(|_| {
        if fhir_structure::model::Model::r4().is_resource_type(name) {
            ApiError::NotFound(format!(
                "Resource type '{name}' is not supported by this server"
            ))
        } else {
            ApiError::NotFound(format!("Unknown resource type '{name}'"))
        }
    })?;
    if !state.backend.capabilities().supports_type(ty) {
        return Err(ApiError::NotFound(format!(
            "Resource type '{name}' is not supported by this server"
        )));
    }
    Ok(ty)
}

pub(crate) fn parse_id(id: &str) -> Result<LogicalId, ApiError> {
    LogicalId::parse(id).ok_or_else(|| {
        ApiError::bad_request(
            "value",
            "Invalid resource id: ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
        )
    })
}

pub(crate) fn require(
    state: &AppState,
    ty: ResourceType,
    interaction: Interaction,
) -> Result<(), ApiError> {
    if state.backend.capabilities().supports(ty, interaction) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(format!(
            "The {} interaction is not supported for {ty}",
            interaction.code()
        )))
    }
}

pub(crate) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|_| ApiError::bad_request("invalid", "The query string is not valid URL encoding"))
}

pub(crate) fn structure_issues(issues: Vec<fhir_structure::check::Issue>) -> ApiError {
    ApiError::BadRequest(issues.iter().map(OoIssue::from_issue).collect())
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
            }]);
            let (body, ct) = format::encode(&oo, out)?;
            Ok(builder.content_type(ct).body(body))
        }
    }
}

pub async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    label(&req, "capabilities", None);
    let pairs = strict::only(
        &req,
        "capabilities",
        &["_summary", "_elements", "mode"],
        &[],
    )?;
    if let Some((_, mode)) = pairs.iter().find(|(k, _)| k == "mode") {
        if mode != "full" {
            return Err(ApiError::BadRequest(vec![OoIssue::error(
                "not-supported",
                "Only mode=full is supported on metadata (no TerminologyCapabilities or normative subset)",
            )
            .at("mode")]));
        }
    }
    let shape = Shape::from_params(ResourceType::CapabilityStatement, &pairs)?;
    let out = format::negotiate(&req)?;
    let cs = crate::capability::capability_statement(
        state.backend.capabilities(),
        state.backend.transactions().is_some(),
        Some(&base_url(&req, &state)),
        &state.validation,
    );
    let cs = if shape.is_identity() {
        cs
    } else {
        shape.apply_value("CapabilityStatement", cs)
    };
    let (body, ct) = format::encode(&cs, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

pub async fn read(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (type_name, id) = path.into_inner();
    let ty = parse_type(&type_name, &state)?;
    label(&req, "read", Some(ty));
    require(&state, ty, Interaction::Read)?;
    let pairs = strict::only(
        &req,
        "read",
        &["_summary", "_elements"],
        &["if-none-match", "if-modified-since"],
    )?;
    let shape = Shape::from_params(ty, &pairs)?;
    let id = parse_id(&id)?;
    let out = format::negotiate(&req)?;
    let reader = state
        .backend
        .reader()
        .ok_or_else(|| ApiError::MethodNotAllowed("read is not supported".into()))?;
    let stored = match reader.read(&ctx(&req), ty, &id).await {
        Ok(s) => s,
        Err(crate::storage::StorageError::Gone {
            version,
            last_updated,
        }) => {
            let oo =
                operation_outcome(&[OoIssue::error("deleted", format!("{ty}/{id} was deleted"))]);
            return Ok(HttpResponse::Gone()
                .insert_header((header::ETAG, format::etag(version)))
                .insert_header((header::LAST_MODIFIED, last_updated.to_http_date()))
                .content_type(format::FHIR_JSON)
                .body(oo.to_string()));
        }
        Err(e) => return Err(e.into()),
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

pub async fn vread(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    let (type_name, id, vid) = path.into_inner();
    let ty = parse_type(&type_name, &state)?;
    label(&req, "vread", Some(ty));
    require(&state, ty, Interaction::Vread)?;
    let pairs = strict::only(&req, "vread", &["_summary", "_elements"], &[])?;
    let shape = Shape::from_params(ty, &pairs)?;
    let id = parse_id(&id)?;
    let version: VersionId = vid.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request("value", "The version id must be a positive integer")
    })?;
    let out = format::negotiate(&req)?;
    let reader = state
        .backend
        .reader()
        .ok_or_else(|| ApiError::MethodNotAllowed("vread is not supported".into()))?;
    let stored = reader
        .vread(&ctx(&req), ty, &id, version)
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::NotFound => {
                ApiError::NotFound(format!("{ty}/{id} has no version {version}"))
            }
            crate::storage::StorageError::Gone { .. } => {
                ApiError::Gone(format!("Version {version} of {ty}/{id} is a deletion"))
            }
            other => other.into(),
        })?;
    let stored = shaped(stored, &shape)?;
    resource_response(
        StatusCode::OK,
        &stored,
        out,
        ReturnPref::Representation,
        None,
    )
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let ty = parse_type(&path.into_inner(), &state)?;
    label(&req, "create", Some(ty));
    require(&state, ty, Interaction::Create)?;
    strict::only(&req, "create", &[], &["if-none-exist"])?;
    let out = format::negotiate(&req)?;
    let prefer = format::prefer(req.headers())?;
    let base = base_url(&req, &state);
    let if_none_exist = match req.headers().get("if-none-exist") {
        None => None,
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::bad_request("invalid", "If-None-Exist is not valid ASCII")
            })?;
            Some(super::search::parse_criteria(
                &state,
                &base,
                ty,
                text,
                "If-None-Exist",
            )?)
        }
    };
    let value = format::decode_body(&req, &body)?;
    let content =
        service::prepare_write(ty, value, WriteTarget::Create, &base).map_err(structure_issues)?;
    super::validate::gate_write(&state, ty, &content.resource)?;
    let writer = state
        .backend
        .writer()
        .ok_or_else(|| ApiError::MethodNotAllowed("create is not supported".into()))?;
    let outcome = writer
        .create(
            &ctx(&req),
            CreateRequest {
                resource_type: ty,
                content,
                if_none_exist,
            },
        )
        .await?;
    let stored = outcome
        .stored
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("create returned no resource")))?;
    let status = if outcome.kind == WriteKind::Existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let base = base_url(&req, &state);
    resource_response(status, &stored, out, prefer.return_pref, Some(&base))
}

pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let (type_name, id) = path.into_inner();
    let ty = parse_type(&type_name, &state)?;
    label(&req, "update", Some(ty));
    require(&state, ty, Interaction::Update)?;
    strict::only(&req, "update", &[], &["if-match", "if-none-match"])?;
    let id = parse_id(&id)?;
    let out = format::negotiate(&req)?;
    let prefer = format::prefer(req.headers())?;
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
    let value = format::decode_body(&req, &body)?;
    let content =
        service::prepare_write(ty, value, WriteTarget::Update(&id), &base_url(&req, &state))
            .map_err(structure_issues)?;
    super::validate::gate_write(&state, ty, &content.resource)?;
    let writer = state
        .backend
        .writer()
        .ok_or_else(|| ApiError::MethodNotAllowed("update is not supported".into()))?;
    let outcome = writer
        .update(
            &ctx(&req),
            UpdateRequest {
                resource_type: ty,
                id,
                content,
                precondition,
            },
        )
        .await?;
    let stored = outcome
        .stored
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("update returned no resource")))?;
    let status = if outcome.kind == WriteKind::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let base = base_url(&req, &state);
    resource_response(status, &stored, out, prefer.return_pref, Some(&base))
}

pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (type_name, id) = path.into_inner();
    let ty = parse_type(&type_name, &state)?;
    label(&req, "delete", Some(ty));
    require(&state, ty, Interaction::Delete)?;
    strict::only(&req, "delete", &[], &["if-match"])?;
    let id = parse_id(&id)?;
    let out = format::negotiate(&req)?;
    let prefer = format::prefer(req.headers())?;
    let precondition = match format::if_match(req.headers())? {
        Some(v) => Precondition::VersionIs(v),
        None => Precondition::None,
    };
    let writer = state
        .backend
        .writer()
        .ok_or_else(|| ApiError::MethodNotAllowed("delete is not supported".into()))?;
    let outcome = writer
        .delete(
            &ctx(&req),
            DeleteRequest {
                resource_type: ty,
                id: id.clone(),
                precondition,
            },
        )
        .await?;
    let mut builder = HttpResponse::build(if prefer.return_pref == ReturnPref::OperationOutcome {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    });
    if let Some(stored) = &outcome.stored {
        builder.insert_header((header::ETAG, format::etag(stored.version)));
    }
    if prefer.return_pref == ReturnPref::OperationOutcome {
        let msg = match outcome.kind {
            WriteKind::Deleted => format!("{ty}/{id} deleted"),
            _ => format!("{ty}/{id} did not exist or was already deleted; nothing changed"),
        };
        let oo = operation_outcome(&[OoIssue {
            severity: "information",
            code: "informational",
            diagnostics: msg,
            expression: None,
        }]);
        let (body, ct) = format::encode(&oo, out)?;
        return Ok(builder.content_type(ct).body(body));
    }
    Ok(builder.finish())
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

pub async fn history_system(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    label(&req, "history-system", None);
    if !state.backend.capabilities().system_history {
        return Err(ApiError::MethodNotAllowed(
            "System history is not supported".into(),
        ));
    }
    history(&req, &state, HistoryScope::System).await
}

pub async fn history_type(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult {
    let ty = parse_type(&path.into_inner(), &state)?;
    label(&req, "history-type", Some(ty));
    require(&state, ty, Interaction::HistoryType)?;
    history(&req, &state, HistoryScope::Type(ty)).await
}

pub async fn history_instance(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (type_name, id) = path.into_inner();
    let ty = parse_type(&type_name, &state)?;
    label(&req, "history-instance", Some(ty));
    require(&state, ty, Interaction::HistoryInstance)?;
    let id = parse_id(&id)?;
    history(&req, &state, HistoryScope::Instance(ty, id)).await
}

async fn history(req: &HttpRequest, state: &AppState, scope: HistoryScope) -> ApiResult {
    let out = format::negotiate(req)?;
    let Prefer { lenient, .. } = format::prefer(req.headers())?;
    strict::preconditions(req, "history", &[])?;
    let pairs = query_pairs(req.query_string())?;
    let mut q = HistoryQuery {
        scope: scope.clone(),
        since: None,
        count: state.settings.search.default_count,
        before_seq: None,
    };
    let mut applied = Vec::new();
    let mut warnings = Vec::new();
    for (name, value) in &pairs {
        let problem = match name.as_str() {
            "_format" | "_pretty" => None,
            "_count" => match value.parse::<usize>() {
                Ok(n) => {
                    q.count = n.min(state.settings.search.max_count);
                    applied.push((name.clone(), q.count.to_string()));
                    None
                }
                Err(_) => Some("_count must be a non-negative integer".to_owned()),
            },
            "_since" => match fhir_structure::primitive::parse_date_range(value) {
                Some((lo, _)) if value.len() > 10 => {
                    q.since = Some(Instant(lo));
                    applied.push((name.clone(), value.clone()));
                    None
                }
                _ => Some("_since must be an instant, e.g. 2024-01-01T00:00:00Z".to_owned()),
            },
            "_cursor" => match value.parse::<i64>() {
                Ok(seq) => {
                    q.before_seq = Some(seq);
                    None
                }
                Err(_) => Some("Invalid paging cursor".to_owned()),
            },
            other => Some(format!("Parameter '{other}' is not supported on history")),
        };
        if let Some(msg) = problem {
            if lenient {
                warnings.push(msg);
            } else {
                return Err(ApiError::BadRequest(vec![OoIssue::error(
                    "not-supported",
                    msg,
                )
                .at(name.clone())]));
            }
        }
    }
    let history = state
        .backend
        .history()
        .ok_or_else(|| ApiError::MethodNotAllowed("history is not supported".into()))?;
    let page = history.history(&ctx(req), q.clone()).await?;
    if let HistoryScope::Instance(ty, id) = &scope {
        if page.total == 0 {
            return Err(ApiError::NotFound(format!("{ty}/{id} has no history")));
        }
    }
    let base = base_url(req, state);
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
            let resource: Value =
                serde_json::from_str(content).map_err(|e| ApiError::Internal(e.into()))?;
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
            })
            .collect();
        entries.push(json!({"resource": operation_outcome(&issues)}));
    }
    let bundle = bundle("history", Some(page.total), links, entries);
    let (body, ct) = format::encode(&bundle, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

/// `GET [base]`: system-level search is not supported; say what is.
pub async fn base_get(req: HttpRequest) -> ApiResult {
    label(&req, "search-system", None);
    Err(ApiError::MethodNotAllowedOnly(
        "POST",
        "GET [base] is system-level search, which this server does not support. Search one \
         type with GET [base]/[type]?..., read the CapabilityStatement at [base]/metadata, and \
         POST batch or transaction Bundles to [base]"
            .into(),
    ))
}

/// `GET /`: a small page that points at the FHIR base and the operational endpoints.
pub async fn landing(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    label(&req, "landing", None);
    let base = base_url(&req, &state);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let base = esc(&base);
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>fhirbridge</title></head>\n\
         <body><h1>fhirbridge</h1>\n<p>A FHIR R4 server. The FHIR base URL is <code>{base}</code>.</p>\n<ul>\n\
         <li><a href=\"{base}/metadata\">CapabilityStatement</a> (<code>{base}/metadata</code>; \
         <a href=\"{base}/metadata?_summary=true\">summary</a>)</li>\n\
         <li><a href=\"/health/live\">/health/live</a> and <a href=\"/health/ready\">/health/ready</a></li>\n\
         <li><a href=\"/metrics\">/metrics</a> (Prometheus)</li>\n</ul></body></html>\n"
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// The body (if any) is read first so that the connection stays usable after the 405.
pub async fn method_not_allowed(req: HttpRequest, _body: web::Bytes) -> ApiResult {
    label(&req, "unsupported", None);
    Err(ApiError::MethodNotAllowed(format!(
        "Method {} is not allowed on this endpoint",
        req.method()
    )))
}

/// The body (if any) is read first so that the connection stays usable after the 404.
pub async fn not_found(req: HttpRequest, _body: web::Bytes) -> ApiResult {
    label(&req, "unknown", None);
    Err(ApiError::NotFound("No such endpoint".into()))
}

pub async fn health_live() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"pass"}"#)
}

pub async fn health_ready(state: web::Data<AppState>) -> HttpResponse {
    match state.backend.ping().await {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"status":"pass","checks":{"database":"pass"}}"#),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .content_type("application/json")
                .body(r#"{"status":"fail","checks":{"database":"fail"}}"#)
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (in_use, idle) = state.backend.pool_state();
    state
        .metrics
        .set_pool(state.backend.capabilities().backend, in_use, idle);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
