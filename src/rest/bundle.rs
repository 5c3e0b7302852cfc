//! Batch and transaction Bundles (`POST /fhir`), and the multi-step writes
//! built on the same machinery: conditional update and delete, and PATCH.
//!
//! A transaction is prepared outside the database (parse, structural checks,
//! profile validation, id assignment), then run inside one storage
//! transaction: conditional creates, updates, deletes and references are
//! resolved, `urn:uuid` and conditional references are rewritten everywhere
//! they occur, index rows are extracted, and the entries are written in the
//! spec's order (DELETE, POST, PUT/PATCH, GET). Any failure rolls everything
//! back and answers with the failing entry's status and an OperationOutcome
//! whose expressions point into the request Bundle. A batch runs every entry as
//! its own one-entry transaction and reports each outcome in place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::error::{operation_outcome, ApiError, OoIssue};
use super::format::{self, ReturnPref};
use super::handlers::structure_issues;
use super::handlers::{base_url, bundle, ctx, label, parse_type, query_pairs};
use super::search::{criteria, paging, parse_criteria};
use super::validate::gate;
use super::AppState;
use crate::base64;
use crate::model::{Instant, LogicalId, ResourceType, VersionId};
use crate::search::index;
use crate::search::parse::{self as search_parse, Options};
use crate::search::types::SearchQuery;
use crate::service::{self, WriteTarget};
use crate::storage::{
    CreateMethod, CreateRequest, DeleteRequest, NewContent, Precondition, StorageError,
    StoredResource, TxOps, UpdateRequest, WriteKind,
};

type ApiResult = Result<HttpResponse, ApiError>;

/// Where a write lands: a known id, or the resource matching criteria.
#[derive(Debug, Clone)]
enum Target {
    Id(LogicalId),
    Criteria(SearchQuery),
}

#[derive(Debug, Clone)]
enum PatchDoc {
    Json(Value),
    FhirPath(Value),
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        ty: ResourceType,
        resource: Value,
        if_none_exist: Option<SearchQuery>,
        id: LogicalId,
    },
    Update {
        ty: ResourceType,
        target: Target,
        resource: Value,
        precondition: Precondition,
    },
    Patch {
        ty: ResourceType,
        target: Target,
        patch: PatchDoc,
        if_match: Option<VersionId>,
    },
    Delete {
        ty: ResourceType,
        target: Target,
        if_match: Option<VersionId>,
    },
    Read {
        ty: ResourceType,
        id: LogicalId,
        version: Option<VersionId>,
    },
    Search {
        query: SearchQuery,
    },
}

impl Op {
    /// Processing order within a transaction.
    fn rank(&self) -> u8 {
        match self {
            Op::Delete { .. } => 0,
            Op::Create { .. } => 1,
            Op::Update { .. } | Op::Patch { .. } => 2,
            Op::Read { .. } | Op::Search { .. } => 3,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    full_url: Option<String>,
    op: Op,
    /// Index rows extracted before the transaction (valid while no reference
    /// resolution inside the transaction changes the resource).
    indexes: Option<Vec<crate::storage::IndexRow>>,
    /// Conditional references (`Type?criteria`) in the resource.
    cond_refs: Vec<String>,
}

/// `fullUrl` → `Type/id` for everything whose id is known before the
/// transaction (pre-assigned create ids, PUT by id).
fn premap(entries: &[Entry]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for e in entries {
        let Some(fu) = &e.full_url else { continue };
        match &e.op {
            Op::Create { ty, id, .. }
            | Op::Update {
                ty,
                target: Target::Id(id),
                ..
            } => {
                map.insert(fu.clone(), format!("{ty}/{id}"));
            }
            _ => {}
        }
    }
    map
}

/// Rewrites with the pre-transaction map and extracts index rows, on two
/// threads (this is the CPU-heavy part of a large transaction).
fn pre_extract(entries: &mut [Entry], base: &str) {
    let map = premap(entries);
    let work = |chunk: &mut [Entry]| {
        for e in chunk {
            if let Op::Create { ty, resource, .. } | Op::Update { ty, resource, .. } = &mut e.op {
                if !map.is_empty() {
                    rewrite(resource, &map, false);
                }
                e.indexes = Some(index::extract(*ty, resource, base));
            }
        }
    };
    if entries.len() < 64 {
        work(entries);
        return;
    }
    let mid = entries.len() / 2;
    let (a, b) = entries.split_at_mut(mid);
    std::thread::scope(|s| {
        s.spawn(|| work(a));
        work(b);
    });
}

/// The outcome of one entry, for `Bundle.entry.response`.
#[derive(Debug, Clone, Default)]
pub struct EntryResult {
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<VersionId>,
    pub last_modified: Option<Instant>,
    pub resource: Option<Value>,
    pub outcome: Option<Value>,
    /// The stored version written or found (for the single-request wrappers).
    pub stored: Option<StoredResource>,
}

/// An error attributed to one entry.
fn at_entry(index: usize, e: ApiError) -> ApiError {
    let prefix = format!("Bundle.entry[{index}]");
    let fix = |issues: Vec<OoIssue>| -> Vec<OoIssue> {
        issues
            .into_iter()
            .map(|mut i| {
                i.expression = Some(match i.expression.take() {
                    Some(e) => match e.split_once('.') {
                        Some((head, rest))
                            if head.chars().next().is_some_and(char::is_uppercase) =>
                        {
                            format!("{prefix}.resource.{rest}")
                        }
                        _ if e.chars().next().is_some_and(char::is_uppercase) => {
                            format!("{prefix}.resource")
                        }
                        _ => format!("{prefix}.{e}"),
                    },
                    None => prefix.clone(),
                });
                i
            })
            .collect()
    };
    match e {
        ApiError::BadRequest(i) => ApiError::BadRequest(fix(i)),
        ApiError::Unprocessable(i) => ApiError::Unprocessable(fix(i)),
        ApiError::NotFound(m) => ApiError::NotFound(format!("{prefix}: {m}")),
        ApiError::Gone(m) => ApiError::Gone(format!("{prefix}: {m}")),
        ApiError::Conflict(m) => ApiError::Conflict(format!("{prefix}: {m}")),
        ApiError::PreconditionFailed(m) => ApiError::PreconditionFailed(format!("{prefix}: {m}")),
        ApiError::MethodNotAllowed(m) => ApiError::MethodNotAllowed(format!("{prefix}: {m}")),
        ApiError::NotImplemented(m) => ApiError::NotImplemented(format!("{prefix}: {m}")),
        other => other,
    }
}

/// Most issues one transaction answer lists; the rest are counted.
const MAX_REPORTED_ISSUES: usize = 1000;

/// The errors of several failing transaction entries as one answer: the first
/// failing entry decides the status; when it is a 400 or 422, the issues of every
/// failing entry are listed (at most [`MAX_REPORTED_ISSUES`], then a count).
fn combine_entry_errors(mut errors: Vec<ApiError>) -> ApiError {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let first = errors.remove(0);
    let mut issues = match &first {
        ApiError::BadRequest(i) | ApiError::Unprocessable(i) => i.clone(),
        _ => return first,
    };
    for e in &errors {
        issues.extend(e.issues());
    }
    if issues.len() > MAX_REPORTED_ISSUES {
        let rest = issues.len() - MAX_REPORTED_ISSUES;
        issues.truncate(MAX_REPORTED_ISSUES);
        issues.push(OoIssue {
            severity: "information",
            code: "too-costly",
            diagnostics: format!("{rest} further issues are not listed"),
            expression: None,
        });
    }
    let failing = errors.len() + 1;
    issues.push(OoIssue {
        severity: "information",
        code: "informational",
        diagnostics: format!("{failing} entries of the transaction failed; nothing was written"),
        expression: None,
    });
    match first {
        ApiError::Unprocessable(_) => ApiError::Unprocessable(issues),
        _ => ApiError::BadRequest(issues),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid", msg)
}

/// `[base/]Type[/id[/_history/vid]][?query]` relative to this server.
fn split_url<'a>(url: &'a str, base: &str) -> (&'a str, Option<&'a str>) {
    let url = url
        .strip_prefix(base)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(url)
        .trim_start_matches('/');
    match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    }
}

fn patch_doc(resource: &Value) -> Result<PatchDoc, ApiError> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => Ok(PatchDoc::FhirPath(resource.clone())),
        Some("Binary") => {
            let ct = resource.get("contentType").and_then(Value::as_str).unwrap_or("");
            if !ct.starts_with("application/json-patch+json") {
                return Err(bad("A PATCH Binary must have contentType application/json-patch+json"));
            }
            let data = resource
                .get("data")
                .and_then(Value::as_str)
                .and_then(|d| base64::decode(d, base64::Alphabet::Standard))
                .ok_or_else(|| bad("The PATCH Binary has no valid base64 data"))?;
            let doc: Value = serde_json::from_slice(&data)
                .map_err(|_| bad("The PATCH Binary data is not JSON"))?;
            Ok(PatchDoc::Json(doc))
        }
        _ => Err(bad(
            "A PATCH entry's resource must be a Parameters (FHIRPath Patch) or a Binary (JSON Patch)",
        )),
    }
}

fn version_header(v: Option<&Value>) -> Result<Option<VersionId>, ApiError> {
    match v.and_then(Value::as_str) {
        None => Ok(None),
        Some(s) => format::parse_etag(s)
            .map(Some)
            .ok_or_else(|| bad(format!("'{s}' is not a valid ETag"))),
    }
}

/// Parses and checks one entry (everything that needs no database).
fn prepare_entry(
    state: &AppState,
    base: &str,
    index: usize,
    mut e: Value,
) -> Result<Entry, ApiError> {
    let resource = e.as_object_mut().and_then(|o| o.shift_remove("resource"));
    let request = e.get("request").ok_or_else(|| {
        ApiError::BadRequest(vec![
            OoIssue::error("required", "Entry has no request").at("request")
        ])
    })?;
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let url = request.get("url").and_then(Value::as_str).ok_or_else(|| {
        ApiError::BadRequest(vec![
            OoIssue::error("required", "Entry request has no url").at("request.url")
        ])
    })?;
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
    let (path, query) = split_url(url, base);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ty = match segs.first() {
        Some(t) => parse_type(t, state)?,
        None => {
            return Err(bad(format!(
                "Entry request url '{url}' names no resource type"
            )))
        }
    };
    let criteria = |what: &str| -> Result<Option<Target>, ApiError> {
        match query {
            Some(q) if segs.len() == 1 => Ok(Some(Target::Criteria(parse_criteria(
                state, base, ty, q, what,
            )?))),
            _ => Ok(None),
        }
    };
    let id_target = || -> Result<Target, ApiError> {
        match segs.as_slice() {
            [_, id] => LogicalId::parse(id)
                .map(Target::Id)
                .ok_or_else(|| bad(format!("Invalid resource id '{id}'"))),
            _ => Err(bad(format!(
                "Entry request url '{url}' must be Type/id or Type?criteria"
            ))),
        }
    };
    let body = |resource: Option<Value>| -> Result<Value, ApiError> {
        resource.ok_or_else(|| {
            ApiError::BadRequest(vec![OoIssue::error(
                "required",
                format!("A {method} entry needs a resource"),
            )
            .at("resource")])
        })
    };
    let op = match method {
        "POST" => {
            if segs.len() != 1 || query.is_some() {
                return Err(bad(format!(
                    "POST entry url must be a resource type, not '{url}'"
                )));
            }
            let resource = body(resource)?;
            let resource =
                service::check_body(ty, resource, WriteTarget::Create).map_err(structure_issues)?;
            gate(&state.validation, ty, &resource)?;
            let if_none_exist = match request.get("ifNoneExist").and_then(Value::as_str) {
                Some(q) => Some(parse_criteria(state, base, ty, q, "ifNoneExist")?),
                None => None,
            };
            Op::Create {
                ty,
                resource,
                if_none_exist,
                id: LogicalId::generate(),
            }
        }
        "PUT" => {
            let resource = body(resource)?;
            let target = match criteria("Conditional update")? {
                Some(t) => t,
                None => id_target()?,
            };
            let resource = match &target {
                Target::Id(id) => service::check_body(ty, resource, WriteTarget::Update(id)),
                Target::Criteria(..) => {
                    // The id (if any) is checked against the match inside the transaction.
                    let id = resource
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(LogicalId::parse);
                    match id {
                        Some(id) => service::check_body(ty, resource, WriteTarget::Update(&id)),
                        None => service::check_body(ty, resource, WriteTarget::Create),
                    }
                }
            }
            .map_err(structure_issues)?;
            gate(&state.validation, ty, &resource)?;
            let mut precondition = match version_header(request.get("ifMatch"))? {
                Some(v) => Precondition::VersionIs(v),
                None => Precondition::None,
            };
            if request.get("ifNoneMatch").and_then(Value::as_str) == Some("*") {
                precondition = Precondition::MustNotExist;
            }
            Op::Update {
                ty,
                target,
                resource,
                precondition,
            }
        }
        "PATCH" => {
            let target = match criteria("Conditional patch")? {
                Some(t) => t,
                None => id_target()?,
            };
            Op::Patch {
                ty,
                target,
                patch: patch_doc(&body(resource)?)?,
                if_match: version_header(request.get("ifMatch"))?,
            }
        }
        "DELETE" => {
            let target = match criteria("Conditional delete")? {
                Some(t) => t,
                None => id_target()?,
            };
            Op::Delete {
                ty,
                target,
                if_match: version_header(request.get("ifMatch"))?,
            }
        }
        "GET" | "HEAD" => match segs.as_slice() {
            [_] => {
                let pairs = query_pairs(query.unwrap_or(""))?;
                let parsed = search_parse::parse(
                    ty,
                    &pairs,
                    Options {
                        lenient: false,
                        paging: paging(state),
                        base_url: base,
                    },
                )
                .map_err(|e| bad(e.message))?;
                Op::Search {
                    query: parsed.query,
                }
            }
            [_, id] => Op::Read {
                ty,
                id: LogicalId::parse(id).ok_or_else(|| bad("Invalid resource id"))?,
                version: None,
            },
            [_, id, "_history", v] => Op::Read {
                ty,
                id: LogicalId::parse(id).ok_or_else(|| bad("Invalid resource id"))?,
                version: Some(v.parse().map_err(|_| bad("Invalid version id"))?),
            },
            _ => {
                return Err(ApiError::NotImplemented(format!(
                    "GET '{url}' is not supported inside a Bundle"
                )))
            }
        },
        "" => {
            return Err(ApiError::BadRequest(vec![OoIssue::error(
                "required",
                "Entry request has no method",
            )
            .at("request.method")]))
        }
        m => {
            return Err(ApiError::BadRequest(vec![OoIssue::error(
                "value",
                format!(
                    "Entry request method '{m}' is not an HTTP verb of FHIR R4 (GET, HEAD, POST, PUT, DELETE, PATCH; upper case)"
                ),
            )
            .at("request.method")]))
        }
    };
    let mut cond_refs = Vec::new();
    if let Op::Create { resource, .. } | Op::Update { resource, .. } = &op {
        conditional_refs(resource, &mut cond_refs);
    }
    Ok(Entry {
        index,
        full_url,
        op,
        indexes: None,
        cond_refs,
    })
}

/// Rewrites every string in `v` equal to a key of `map` (and occurrences inside
/// narrative XHTML). Returns how many were rewritten.
fn rewrite(v: &mut Value, map: &HashMap<String, String>, in_div: bool) {
    match v {
        Value::String(s) => {
            if let Some(to) = map.get(s.as_str()) {
                *s = to.clone();
            } else if in_div {
                for (from, to) in map {
                    if s.contains(from.as_str()) {
                        *s = s.replace(from.as_str(), to);
                    }
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                rewrite(i, map, false);
            }
        }
        Value::Object(obj) => {
            for (k, child) in obj.iter_mut() {
                rewrite(child, map, k == "div");
            }
        }
        _ => {}
    }
}

/// Conditional references (`Type?criteria`) in `v`, collected once.
fn conditional_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(obj) => {
            for (k, child) in obj {
                if k == "reference" {
                    if let Some(s) = child.as_str() {
                        if s.contains('?') && !s.starts_with("urn:") {
                            out.push(s.to_owned());
                        }
                    }
                } else {
                    conditional_refs(child, out);
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                conditional_refs(i, out);
            }
        }
        _ => {}
    }
}

/// Maps a storage failure inside the transaction to the entry's HTTP error.
fn storage_err(e: StorageError) -> ApiError {
    ApiError::from(e)
}

/// Everything the transaction closure needs (owned: it runs on a blocking thread).
struct TxInput {
    state: Arc<TxState>,
    base: String,
    entries: Vec<Entry>,
    ret: ReturnPref,
}

/// The parts of the application state used inside transactions.
pub struct TxState {
    pub validation: Arc<crate::validation::ValidationService>,
    pub max_conditional_delete: usize,
    pub paging: search_parse::Paging,
    /// Largest patch result (`server.body_limit_bytes`).
    pub max_patch_result_bytes: usize,
}

fn stored_json(s: &StoredResource) -> Result<Value, ApiError> {
    serde_json::from_str(s.content.as_deref().unwrap_or("null"))
        .map_err(|e| ApiError::Internal(e.into()))
}

fn write_result(status: u16, s: StoredResource, ret: ReturnPref) -> Result<EntryResult, ApiError> {
    let mut r = EntryResult {
        status,
        location: Some(format!(
            "{}/{}/_history/{}",
            s.resource_type, s.id, s.version
        )),
        etag: Some(s.version),
        last_modified: Some(s.last_updated),
        ..Default::default()
    };
    match ret {
        ReturnPref::Representation if s.content.is_some() => r.resource = Some(stored_json(&s)?),
        ReturnPref::OperationOutcome => {
            r.outcome = Some(operation_outcome(&[OoIssue {
                severity: "information",
                code: "informational",
                diagnostics: format!("{}/{} version {}", s.resource_type, s.id, s.version),
                expression: None,
            }]))
        }
        _ => {}
    }
    r.stored = Some(s);
    Ok(r)
}

fn content(
    ty: ResourceType,
    resource: Value,
    base: &str,
    pre: Option<Vec<crate::storage::IndexRow>>,
) -> NewContent {
    let indexes = match pre {
        Some(rows) => rows,
        None => index::extract(ty, &resource, base),
    };
    NewContent { resource, indexes }
}

/// Applies a patch; its result is bounded like a request body (`max_bytes`).
fn apply_patch(current: &mut Value, patch: &PatchDoc, max_bytes: usize) -> Result<(), ApiError> {
    let limits = fhir_patch::Limits::with_max_bytes(max_bytes);
    let r = match patch {
        PatchDoc::Json(doc) => fhir_patch::apply_json_patch_within(current, doc, &limits),
        PatchDoc::FhirPath(params) => {
            fhir_patch::apply_fhirpath_patch_within(current, params, &limits)
        }
    };
    r.map_err(|e| {
        let invalid = matches!(e, fhir_patch::PatchError::Invalid { .. });
        let (message, expression) = match &e {
            fhir_patch::PatchError::Invalid {
                message,
                expression,
            }
            | fhir_patch::PatchError::CannotApply {
                message,
                expression,
            } => (message.clone(), expression.clone()),
        };
        let mut issue = OoIssue::error(if invalid { "invalid" } else { "processing" }, message);
        issue.expression = expression;
        if invalid {
            ApiError::BadRequest(vec![issue])
        } else {
            ApiError::Unprocessable(vec![issue])
        }
    })
}

/// Runs the prepared entries inside one open transaction.
fn run_entries(tx: &mut dyn TxOps, input: TxInput) -> Result<Vec<(usize, EntryResult)>, ApiError> {
    let TxInput {
        state,
        base,
        mut entries,
        ret,
    } = input;
    // Serialise concurrent conditional writes on the same criteria.
    let mut keys: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.op {
            Op::Create {
                if_none_exist: Some(q),
                ..
            }
            | Op::Update {
                target: Target::Criteria(q),
                ..
            }
            | Op::Delete {
                target: Target::Criteria(q),
                ..
            }
            | Op::Patch {
                target: Target::Criteria(q),
                ..
            } => Some(crate::storage::conditional_lock_key(q)),
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    for k in &keys {
        tx.lock(k).map_err(storage_err)?;
    }

    let before = premap(&entries);
    // 1. Resolve identities: fullUrl → Type/id.
    let mut map: HashMap<String, String> = HashMap::new();
    let mut existing: HashMap<usize, StoredResource> = HashMap::new();
    let mut deletes: HashMap<usize, Vec<LogicalId>> = HashMap::new();
    for e in entries.iter_mut() {
        let idx = e.index;
        match &mut e.op {
            Op::Create {
                ty,
                if_none_exist,
                id,
                ..
            } => {
                if let Some(q) = if_none_exist {
                    let found = tx
                        .find(q, 2)
                        .map_err(storage_err)
                        .map_err(|x| at_entry(idx, x))?;
                    match found.len() {
                        0 => {}
                        1 => {
                            *id = found[0].id.clone();
                            existing.insert(idx, found[0].clone());
                        }
                        _ => {
                            return Err(at_entry(
                                idx,
                                ApiError::PreconditionFailed(
                                    "ifNoneExist matches more than one resource".into(),
                                ),
                            ))
                        }
                    }
                }
                if let Some(fu) = &e.full_url {
                    map.insert(fu.clone(), format!("{ty}/{id}"));
                }
            }
            Op::Update {
                ty,
                target,
                resource,
                ..
            } => {
                if let Target::Criteria(q) = target {
                    let found = tx
                        .find(q, 2)
                        .map_err(storage_err)
                        .map_err(|x| at_entry(idx, x))?;
                    let body_id = resource
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(LogicalId::parse);
                    let id = match (found.len(), body_id) {
                        (0, Some(b)) => b,
                        (0, None) => LogicalId::generate(),
                        (1, Some(b)) if b != found[0].id => {
                            return Err(at_entry(
                                idx,
                                bad(format!(
                                "The body id '{b}' differs from the matching resource's id '{}'",
                                found[0].id
                            )),
                            ))
                        }
                        (1, _) => found[0].id.clone(),
                        _ => {
                            return Err(at_entry(
                                idx,
                                ApiError::PreconditionFailed(
                                    "Conditional update criteria match more than one resource"
                                        .into(),
                                ),
                            ))
                        }
                    };
                    if let Some(obj) = resource.as_object_mut() {
                        obj.insert("id".into(), json!(id.as_str()));
                    }
                    *target = Target::Id(id);
                }
                if let (Some(fu), Target::Id(id)) = (&e.full_url, &*target) {
                    map.insert(fu.clone(), format!("{ty}/{id}"));
                }
            }
            Op::Patch { target, .. } => {
                if let Target::Criteria(q) = target {
                    let found = tx
                        .find(q, 2)
                        .map_err(storage_err)
                        .map_err(|x| at_entry(idx, x))?;
                    match found.len() {
                        1 => *target = Target::Id(found[0].id.clone()),
                        0 => {
                            return Err(at_entry(
                                idx,
                                ApiError::NotFound("No resource matches the patch criteria".into()),
                            ))
                        }
                        _ => {
                            return Err(at_entry(
                                idx,
                                ApiError::PreconditionFailed(
                                    "Conditional patch criteria match more than one resource"
                                        .into(),
                                ),
                            ))
                        }
                    }
                }
            }
            Op::Delete { target, .. } => match target {
                Target::Criteria(q) => {
                    let cap = state.max_conditional_delete;
                    let found = tx
                        .find(q, cap + 1)
                        .map_err(storage_err)
                        .map_err(|x| at_entry(idx, x))?;
                    if found.len() > cap {
                        return Err(at_entry(
                            idx,
                            ApiError::PreconditionFailed(format!(
                                "Conditional delete criteria match more than {cap} resources"
                            )),
                        ));
                    }
                    deletes.insert(idx, found.into_iter().map(|f| f.id).collect());
                }
                Target::Id(id) => {
                    deletes.insert(idx, vec![id.clone()]);
                }
            },
            Op::Read { .. } | Op::Search { .. } => {}
        }
    }

    // 2. Duplicate identities.
    let mut seen: BTreeMap<(ResourceType, String), usize> = BTreeMap::new();
    for e in &entries {
        let ids: Vec<(ResourceType, LogicalId)> = match &e.op {
            Op::Create { ty, id, .. } => vec![(*ty, id.clone())],
            Op::Update {
                ty,
                target: Target::Id(id),
                ..
            }
            | Op::Patch {
                ty,
                target: Target::Id(id),
                ..
            } => vec![(*ty, id.clone())],
            Op::Delete { ty, .. } => deletes
                .get(&e.index)
                .map(|v| v.iter().map(|i| (*ty, i.clone())).collect())
                .unwrap_or_default(),
            _ => vec![],
        };
        for (ty, id) in ids {
            if existing.contains_key(&e.index) {
                continue;
            }
            if let Some(first) = seen.insert((ty, id.to_string()), e.index) {
                return Err(at_entry(
                    e.index,
                    bad(format!(
                        "{ty}/{id} is the target of entries {first} and {}; a transaction may touch each resource once",
                        e.index
                    )),
                ));
            }
        }
    }

    // 3. Conditional references, resolved once each.
    let mut conditional: Vec<String> = entries
        .iter()
        .flat_map(|e| e.cond_refs.iter().cloned())
        .collect();
    conditional.sort();
    conditional.dedup();
    for r in conditional {
        let (ty_name, q) = r.split_once('?').unwrap_or((&r, ""));
        let idx = entries
            .iter()
            .find(|e| e.cond_refs.contains(&r))
            .map(|e| e.index)
            .unwrap_or(0);
        let ty: ResourceType = ty_name.parse().map_err(|_| {
            at_entry(
                idx,
                bad(format!(
                    "Conditional reference '{r}' names no resource type"
                )),
            )
        })?;
        let query = criteria(state.paging, &base, ty, q, "Conditional reference")
            .map_err(|x| at_entry(idx, x))?;
        let found = tx.find(&query, 2).map_err(storage_err)?;
        match found.len() {
            1 => {
                map.insert(r.clone(), format!("{ty}/{}", found[0].id));
            }
            n => {
                return Err(at_entry(
                    idx,
                    ApiError::PreconditionFailed(format!(
                    "Conditional reference '{r}' matches {n} resources (exactly one is required)"
                )),
                ))
            }
        }
    }

    // 4. Rewrite references everywhere. When resolution inside the
    // transaction found nothing new, the pre-extracted rows stand.
    let unchanged = map == before
        && entries
            .iter()
            .all(|e| e.indexes.is_some() || !matches!(e.op, Op::Create { .. } | Op::Update { .. }));
    if !unchanged {
        // Resources were already rewritten with the pre-transaction ids: move
        // those to the ids resolved here too.
        let mut full = map.clone();
        for (k, old) in &before {
            if let Some(new) = map.get(k).filter(|n| *n != old) {
                full.insert(old.clone(), new.clone());
            }
        }
        for e in entries.iter_mut() {
            e.indexes = None;
            if let Op::Create { resource, .. } | Op::Update { resource, .. } = &mut e.op {
                if !full.is_empty() {
                    rewrite(resource, &full, false);
                }
            }
        }
    }

    // 5. Execute in the spec's order.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].op.rank(), entries[i].index));
    let mut results = Vec::with_capacity(entries.len());
    let mut bulk_done = false;
    let mut put_bulk_done = false;
    let mut put_created: HashSet<usize> = HashSet::new();
    for i in order {
        let e = &entries[i];
        let idx = e.index;
        if let Op::Create { .. } = e.op {
            if existing.contains_key(&idx) {
                // Conditional create that matched: handled one by one below.
            } else if !bulk_done {
                // All plain creates go in one multi-row write (they rank together).
                bulk_done = true;
                let mut reqs = Vec::new();
                let mut idxs = Vec::new();
                for c in entries.iter_mut() {
                    if let Op::Create {
                        ty, resource, id, ..
                    } = &mut c.op
                    {
                        if existing.contains_key(&c.index) {
                            continue;
                        }
                        reqs.push((
                            CreateRequest {
                                resource_type: *ty,
                                content: content(
                                    *ty,
                                    std::mem::take(resource),
                                    &base,
                                    c.indexes.take(),
                                ),
                                if_none_exist: None,
                            },
                            id.clone(),
                        ));
                        idxs.push(c.index);
                    }
                }
                results.extend(bulk_create(tx, reqs, idxs, CreateMethod::Post, ret)?);
                continue;
            } else {
                continue;
            }
        }
        if let Op::Update { .. } = e.op {
            if !put_bulk_done {
                // PUTs to ids that do not exist yet (a GP system or an import
                // pushing records under its own ids) are creates: one
                // multi-row write for all of them (they rank together).
                put_bulk_done = true;
                for (cidx, r) in put_creates(tx, &mut entries, &base, ret)? {
                    put_created.insert(cidx);
                    results.push((cidx, r));
                }
            }
            if put_created.contains(&idx) {
                continue;
            }
        }
        let e = &entries[i];
        let r = run_one(tx, &state, &base, e, ret, &existing, &deletes)
            .map_err(|x| at_entry(idx, x))?;
        results.push((idx, r));
    }
    results.sort_by_key(|(i, _)| *i);
    let large = entries.len() > 64;
    crate::storage::drop_off_thread(entries, large);
    Ok(results)
}

/// The unconditional PUTs (no `If-Match`) of `entries` whose ids have no head
/// row yet, created in one multi-row write per type; (entry index, result).
fn put_creates(
    tx: &mut dyn TxOps,
    entries: &mut [Entry],
    base: &str,
    ret: ReturnPref,
) -> Result<Vec<(usize, EntryResult)>, ApiError> {
    let mut by_type: BTreeMap<ResourceType, Vec<usize>> = BTreeMap::new();
    for (pos, e) in entries.iter().enumerate() {
        if let Op::Update {
            ty,
            target: Target::Id(_),
            precondition: Precondition::None | Precondition::MustNotExist,
            ..
        } = &e.op
        {
            by_type.entry(*ty).or_default().push(pos);
        }
    }
    let mut out = Vec::new();
    for (ty, positions) in by_type {
        let ids: Vec<&LogicalId> = positions
            .iter()
            .filter_map(|&p| match &entries[p].op {
                Op::Update {
                    target: Target::Id(id),
                    ..
                } => Some(id),
                _ => None,
            })
            .collect();
        let existing = tx.existing_ids(ty, &ids).map_err(storage_err)?;
        let mut reqs = Vec::new();
        let mut idxs = Vec::new();
        for &p in &positions {
            let e = &mut entries[p];
            if let Op::Update {
                target: Target::Id(id),
                resource,
                ..
            } = &mut e.op
            {
                if existing.contains(id.as_str()) {
                    continue;
                }
                let resource = std::mem::take(resource);
                reqs.push((
                    CreateRequest {
                        resource_type: ty,
                        content: content(ty, resource, base, e.indexes.take()),
                        if_none_exist: None,
                    },
                    id.clone(),
                ));
                idxs.push(e.index);
            }
        }
        if reqs.is_empty() {
            continue;
        }
        out.extend(bulk_create(tx, reqs, idxs, CreateMethod::Put, ret)?);
    }
    Ok(out)
}

/// Runs [`TxOps::create_many`] and pairs each entry index in `idxs` with its
/// `201 Created` result.
fn bulk_create(
    tx: &mut dyn TxOps,
    reqs: Vec<(CreateRequest, LogicalId)>,
    idxs: Vec<usize>,
    method: CreateMethod,
    ret: ReturnPref,
) -> Result<Vec<(usize, EntryResult)>, ApiError> {
    let outs = tx.create_many(reqs, method).map_err(storage_err)?;
    idxs.into_iter()
        .zip(outs)
        .map(|(idx, o)| {
            let s = o
                .stored
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no stored resource")))?;
            Ok((idx, write_result(201, s, ret)?))
        })
        .collect()
}

fn run_one(
    tx: &mut dyn TxOps,
    state: &TxState,
    base: &str,
    e: &Entry,
    ret: ReturnPref,
    existing: &HashMap<usize, StoredResource>,
    deletes: &HashMap<usize, Vec<LogicalId>>,
) -> Result<EntryResult, ApiError> {
    match &e.op {
        Op::Create {
            ty, resource, id, ..
        } => {
            if let Some(found) = existing.get(&e.index) {
                return write_result(200, found.clone(), ret);
            }
            let out = tx
                .create(
                    CreateRequest {
                        resource_type: *ty,
                        content: content(*ty, resource.clone(), base, e.indexes.clone()),
                        if_none_exist: None,
                    },
                    Some(id.clone()),
                )
                .map_err(storage_err)?;
            let s = out
                .stored
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no stored resource")))?;
            write_result(201, s, ret)
        }
        Op::Update {
            ty,
            target,
            resource,
            precondition,
        } => {
            let Target::Id(id) = target else {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "unresolved update target"
                )));
            };
            let out = tx
                .update(UpdateRequest {
                    resource_type: *ty,
                    id: id.clone(),
                    content: content(*ty, resource.clone(), base, e.indexes.clone()),
                    precondition: *precondition,
                })
                .map_err(storage_err)?;
            let s = out
                .stored
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no stored resource")))?;
            write_result(
                if out.kind == WriteKind::Created {
                    201
                } else {
                    200
                },
                s,
                ret,
            )
        }
        Op::Patch {
            ty,
            target,
            patch,
            if_match,
        } => {
            let Target::Id(id) = target else {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "unresolved patch target"
                )));
            };
            let current = tx.read(*ty, id).map_err(storage_err)?;
            if let Some(v) = if_match {
                if *v != current.version {
                    return Err(ApiError::PreconditionFailed(format!(
                        "If-Match W/\"{v}\" but the current version is {}",
                        current.version
                    )));
                }
            }
            let mut value = stored_json(&current)?;
            apply_patch(&mut value, patch, state.max_patch_result_bytes)?;
            let value = service::check_body(*ty, value, WriteTarget::Update(id)).map_err(|i| {
                match structure_issues(i) {
                    ApiError::BadRequest(issues) => ApiError::Unprocessable(issues),
                    other => other,
                }
            })?;
            gate(&state.validation, *ty, &value)?;
            let out = tx
                .update(UpdateRequest {
                    resource_type: *ty,
                    id: id.clone(),
                    content: content(*ty, value, base, None),
                    precondition: Precondition::VersionIs(current.version),
                })
                .map_err(storage_err)?;
            let s = out
                .stored
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no stored resource")))?;
            write_result(200, s, ret)
        }
        Op::Delete { ty, if_match, .. } => {
            let ids = deletes.get(&e.index).cloned().unwrap_or_default();
            let mut last = None;
            for id in &ids {
                let out = tx
                    .delete(DeleteRequest {
                        resource_type: *ty,
                        id: id.clone(),
                        precondition: match if_match {
                            Some(v) => Precondition::VersionIs(*v),
                            None => Precondition::None,
                        },
                    })
                    .map_err(storage_err)?;
                if out.kind == WriteKind::Deleted {
                    last = out.stored;
                }
            }
            Ok(EntryResult {
                status: 204,
                etag: last.as_ref().map(|s| s.version),
                stored: last,
                outcome: (ret == ReturnPref::OperationOutcome).then(|| {
                    operation_outcome(&[OoIssue {
                        severity: "information",
                        code: "informational",
                        diagnostics: format!("{} {ty} resource(s) deleted", ids.len()),
                        expression: None,
                    }])
                }),
                ..Default::default()
            })
        }
        Op::Read { ty, id, version } => {
            let s = match version {
                Some(v) => tx.vread(*ty, id, *v),
                None => tx.read(*ty, id),
            }
            .map_err(storage_err)?;
            Ok(EntryResult {
                status: 200,
                etag: Some(s.version),
                last_modified: Some(s.last_updated),
                resource: Some(stored_json(&s)?),
                stored: Some(s),
                ..Default::default()
            })
        }
        Op::Search { query } => {
            let page = tx.search(query).map_err(storage_err)?;
            let mut entries = Vec::new();
            for r in &page.resources {
                entries.push(json!({
                    "fullUrl": format!("{base}/{}/{}", r.resource_type, r.id),
                    "resource": stored_json(r)?,
                    "search": {"mode": "match"},
                }));
            }
            for r in &page.included {
                entries.push(json!({
                    "fullUrl": format!("{base}/{}/{}", r.resource_type, r.id),
                    "resource": stored_json(r)?,
                    "search": {"mode": "include"},
                }));
            }
            Ok(EntryResult {
                status: 200,
                resource: Some(bundle("searchset", page.total, vec![], entries)),
                ..Default::default()
            })
        }
    }
}

fn tx_state(state: &AppState) -> Arc<TxState> {
    Arc::new(TxState {
        validation: state.validation.clone(),
        max_conditional_delete: state.settings.server.max_conditional_delete,
        paging: paging(state),
        max_patch_result_bytes: state.settings.server.body_limit_bytes,
    })
}

/// Runs `entries` as one transaction. Errors are the failing entry's.
async fn transact(
    state: &AppState,
    req_ctx: &crate::storage::RequestContext,
    base: &str,
    entries: Vec<Entry>,
    ret: ReturnPref,
) -> Result<Vec<(usize, EntryResult)>, ApiError> {
    let txs = state.backend.transactions().ok_or_else(|| {
        ApiError::NotImplemented("This backend does not support transactions".into())
    })?;
    let failure: Arc<Mutex<Option<ApiError>>> = Arc::new(Mutex::new(None));
    let slot = failure.clone();
    let input = TxInput {
        state: tx_state(state),
        base: base.to_owned(),
        entries,
        ret,
    };
    let work: crate::storage::TxWork = Box::new(move |tx| match run_entries(tx, input) {
        Ok(results) => Ok(Box::new(results)),
        Err(e) => {
            if let Ok(mut s) = slot.lock() {
                *s = Some(e);
            }
            Err(StorageError::Aborted)
        }
    });
    match txs.transaction(req_ctx, work).await {
        Ok(any) => any
            .downcast::<Vec<(usize, EntryResult)>>()
            .map(|b| *b)
            .map_err(|_| {
                ApiError::Internal(anyhow::anyhow!("transaction returned an unexpected type"))
            }),
        Err(StorageError::Aborted) => Err(failure
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_else(|| ApiError::Internal(anyhow::anyhow!("transaction aborted")))),
        Err(e) => Err(e.into()),
    }
}

fn status_text(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}").trim_end().to_owned()
}

fn response_entry(base: &str, r: &EntryResult) -> Value {
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
        response.insert("outcome".into(), o.clone());
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
    }
    entry.insert("response".into(), Value::Object(response));
    Value::Object(entry)
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

/// `POST [base]` with a batch or transaction Bundle.
pub async fn system_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> ApiResult {
    label(&req, "transaction", None);
    super::strict::only(&req, "batch/transaction", &[], &[])?;
    let out = format::negotiate(&req)?;
    let prefer = format::prefer(req.headers())?;
    let base = base_url(&req, &state);
    let value = format::decode_body(&req, &body)?;
    let response = process_bundle(&state, &ctx(&req), &base, value, prefer.return_pref).await?;
    let (body, ct) = format::encode(&response, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

/// Processes a batch or transaction Bundle and returns the response Bundle.
/// Used by `POST [base]` and by `fhirbridge import`.
pub async fn process_bundle(
    state: &web::Data<AppState>,
    req_ctx: &crate::storage::RequestContext,
    base: &str,
    value: Value,
    ret: ReturnPref,
) -> Result<Value, ApiError> {
    if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(bad("POST to the base takes a batch or transaction Bundle"));
    }
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if kind != "batch" && kind != "transaction" {
        return Err(ApiError::BadRequest(vec![OoIssue::error(
            "invalid",
            format!("Bundle.type must be batch or transaction, not '{kind}'"),
        )
        .at("Bundle.type")]));
    }
    let mut value = value;
    let raw_entries = match value.as_object_mut().and_then(|o| o.shift_remove("entry")) {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("Bundle.entry must be an array")),
    };
    let max = state.settings.server.max_bundle_entries;
    if raw_entries.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "The Bundle has {} entries; at most {max} are accepted",
            raw_entries.len()
        )));
    }
    // Bundle-level structure (entries are checked one by one below).
    let issues: Vec<_> = fhir_structure::check::check_resource(&value)
        .into_iter()
        .filter(|i| i.severity.is_error())
        .collect();
    if !issues.is_empty() {
        return Err(structure_issues(issues));
    }
    Ok(if kind == "transaction" {
        let st = state.clone();
        let b = base.to_owned();
        let prepared = web::block(move || {
            // Every entry is checked, so one answer names every failing entry.
            let mut entries = Vec::with_capacity(raw_entries.len());
            let mut errors = Vec::new();
            for (i, e) in raw_entries.into_iter().enumerate() {
                match prepare_entry(&st, &b, i, e) {
                    Ok(entry) => entries.push(entry),
                    Err(x) => errors.push(at_entry(i, x)),
                }
            }
            if !errors.is_empty() {
                return Err(combine_entry_errors(errors));
            }
            pre_extract(&mut entries, &b);
            Ok::<_, ApiError>(entries)
        })
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))??;
        let results = transact(state, req_ctx, base, prepared, ret).await?;
        let entries = results
            .iter()
            .map(|(_, r)| response_entry(base, r))
            .collect();
        bundle("transaction-response", None, vec![], entries)
    } else {
        let mut entries = Vec::with_capacity(raw_entries.len());
        for (i, e) in raw_entries.into_iter().enumerate() {
            let prepared = prepare_entry(state, base, i, e).map_err(|x| at_entry(i, x));
            let result = match prepared {
                Ok(entry) => transact(state, req_ctx, base, vec![entry], ret)
                    .await
                    .map(|mut r| r.remove(0).1),
                Err(e) => Err(e),
            };
            entries.push(match result {
                Ok(r) => response_entry(base, &r),
                Err(e) => error_entry(&e),
            });
        }
        bundle("batch-response", None, vec![], entries)
    })
}

/// Runs one prepared operation as its own transaction (conditional update and
/// delete, PATCH) and returns its result.
async fn single(
    req: &HttpRequest,
    state: &AppState,
    entry: Value,
) -> Result<EntryResult, ApiError> {
    let base = base_url(req, state);
    let prefer = format::prefer(req.headers())?;
    let prepared = prepare_entry(state, &base, 0, entry)?;
    let mut results = transact(state, &ctx(req), &base, vec![prepared], prefer.return_pref)
        .await
        .map_err(strip_entry_prefix)?;
    Ok(results.remove(0).1)
}

/// Single requests report errors about the resource, not about `Bundle.entry[0]`.
fn strip_entry_prefix(e: ApiError) -> ApiError {
    let fix = |issues: Vec<OoIssue>| {
        issues
            .into_iter()
            .map(|mut i| {
                i.expression = i.expression.and_then(|x| {
                    let rest = x.strip_prefix("Bundle.entry[0]")?.trim_start_matches('.');
                    let rest = rest
                        .strip_prefix("resource")
                        .unwrap_or(rest)
                        .trim_start_matches('.');
                    (!rest.is_empty()).then(|| rest.to_owned())
                });
                i
            })
            .collect()
    };
    let strip = |m: String| {
        m.strip_prefix("Bundle.entry[0]: ")
            .map(str::to_owned)
            .unwrap_or(m)
    };
    match e {
        ApiError::BadRequest(i) => ApiError::BadRequest(fix(i)),
        ApiError::Unprocessable(i) => ApiError::Unprocessable(fix(i)),
        ApiError::NotFound(m) => ApiError::NotFound(strip(m)),
        ApiError::PreconditionFailed(m) => ApiError::PreconditionFailed(strip(m)),
        ApiError::Conflict(m) => ApiError::Conflict(strip(m)),
        ApiError::Gone(m) => ApiError::Gone(strip(m)),
        other => other,
    }
}

fn respond(req: &HttpRequest, r: EntryResult, base: &str) -> ApiResult {
    let out = format::negotiate(req)?;
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
    if let Some(res) = r.resource.as_ref().or(r.outcome.as_ref()) {
        let (body, ct) = format::encode(res, out)?;
        return Ok(b.content_type(ct).body(body));
    }
    Ok(b.finish())
}

fn request_entry(method: &str, url: String, resource: Option<Value>, req: &HttpRequest) -> Value {
    let mut request = json!({"method": method, "url": url});
    if let Some(v) = req.headers().get("if-match").and_then(|v| v.to_str().ok()) {
        request["ifMatch"] = json!(v);
    }
    let mut e = json!({ "request": request });
    if let Some(r) = resource {
        e["resource"] = r;
    }
    e
}

/// `PUT [type]?criteria`: conditional update.
pub async fn conditional_update(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let ty = parse_type(&path.into_inner(), &state)?;
    label(&req, "update-conditional", Some(ty));
    super::handlers::require(&state, ty, crate::storage::Interaction::Update)?;
    super::strict::preconditions(&req, "conditional update", &["if-match"])?;
    if req.query_string().is_empty() {
        return Err(ApiError::MethodNotAllowed(
            "PUT on a type needs search criteria (conditional update)".into(),
        ));
    }
    let value = format::decode_body(&req, &body)?;
    let url = format!("{ty}?{}", req.query_string());
    let r = single(&req, &state, request_entry("PUT", url, Some(value), &req)).await?;
    respond(&req, r, &base_url(&req, &state))
}

/// `DELETE [type]?criteria`: conditional delete (one or several, up to the cap).
pub async fn conditional_delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult {
    let ty = parse_type(&path.into_inner(), &state)?;
    label(&req, "delete-conditional", Some(ty));
    super::handlers::require(&state, ty, crate::storage::Interaction::Delete)?;
    super::strict::preconditions(&req, "conditional delete", &["if-match"])?;
    if req.query_string().is_empty() {
        return Err(ApiError::MethodNotAllowed(
            "DELETE on a type needs search criteria (conditional delete)".into(),
        ));
    }
    let url = format!("{ty}?{}", req.query_string());
    let r = single(&req, &state, request_entry("DELETE", url, None, &req)).await?;
    respond(&req, r, &base_url(&req, &state))
}

/// `PATCH [type]/[id]` (JSON Patch or FHIRPath Patch) and `PATCH [type]?criteria`.
pub async fn patch(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let (type_name, id) = path.into_inner();
    let ty = parse_type(&type_name, &state)?;
    label(&req, "patch", Some(ty));
    super::handlers::require(&state, ty, crate::storage::Interaction::Update)?;
    super::strict::only(&req, "patch", &[], &["if-match"])?;
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
        format::decode_body(&req, &body)?
    } else {
        return Err(ApiError::UnsupportedMediaType(
            "PATCH takes application/json-patch+json or a FHIRPath Patch Parameters resource (application/fhir+json or +xml)".into(),
        ));
    };
    let url = format!("{ty}/{id}");
    let r = single(&req, &state, request_entry("PATCH", url, Some(doc), &req)).await?;
    respond(&req, r, &base_url(&req, &state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_references_everywhere() {
        let mut map = HashMap::new();
        map.insert("urn:uuid:1".to_owned(), "Patient/abc".to_owned());
        let mut v = json!({
            "subject": {"reference": "urn:uuid:1"},
            "extension": [{"url": "x", "valueReference": {"reference": "urn:uuid:1"}}],
            "text": {"div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:1\">p</a></div>"},
            "note": [{"text": "urn:uuid:1 is not rewritten inside free text"}]
        });
        rewrite(&mut v, &map, false);
        assert_eq!(v["subject"]["reference"], "Patient/abc");
        assert_eq!(
            v["extension"][0]["valueReference"]["reference"],
            "Patient/abc"
        );
        assert!(v["text"]["div"].as_str().unwrap().contains("Patient/abc"));
        assert!(v["note"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:1"));
    }
}
