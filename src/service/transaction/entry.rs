//! One Bundle entry, parsed and checked before any storage is touched: its
//! operation ([`Op`]), target (id or criteria), and body after the write
//! pipeline's structure check and profile gate.

use serde_json::Value;

use super::super::search::query_pairs;
use super::super::write::WriteTarget;
use super::super::{OoIssue, Service, ServiceError};
use crate::base64;
use crate::model::{LogicalId, ResourceType, VersionId};
use crate::search::parse::{self as search_parse, Options};
use crate::search::types::SearchQuery;
use crate::storage::Precondition;

/// Where a write lands: a known id, or the resource matching criteria.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Id(LogicalId),
    Criteria(SearchQuery),
}

#[derive(Debug, Clone)]
pub(super) enum PatchDoc {
    Json(Value),
    FhirPath(Value),
}

#[derive(Debug, Clone)]
pub(super) enum Op {
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
    /// Whether this entry writes a resource of `ty`.
    pub(super) fn writes(&self, t: ResourceType) -> bool {
        match self {
            Op::Create { ty, .. }
            | Op::Update { ty, .. }
            | Op::Patch { ty, .. }
            | Op::Delete { ty, .. } => *ty == t,
            Op::Read { .. } | Op::Search { .. } => false,
        }
    }

    /// Processing order within a transaction.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Op::Delete { .. } => 0,
            Op::Create { .. } => 1,
            Op::Update { .. } | Op::Patch { .. } => 2,
            Op::Read { .. } | Op::Search { .. } => 3,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) index: usize,
    pub(super) full_url: Option<String>,
    pub(super) op: Op,
    /// Index rows extracted before the transaction (valid while no reference
    /// resolution inside the transaction changes the resource).
    pub(super) indexes: Option<Vec<crate::search::rows::IndexRow>>,
    /// Conditional references (`Type?criteria`) in the resource.
    pub(super) cond_refs: Vec<String>,
}

/// The scopes an entry needs, as if it were sent alone: read `r`, search
/// `s`, create `c`, update and patch `u`, delete `d`, and `s` as well for
/// every conditional form (its criteria are a search).
pub(super) fn authorize(
    ctx: &crate::context::RequestContext,
    e: &Entry,
) -> Result<(), ServiceError> {
    use crate::policy::Action;
    let (ty, action, conditional) = match &e.op {
        Op::Create {
            ty, if_none_exist, ..
        } => (*ty, Action::Create, if_none_exist.is_some()),
        Op::Update { ty, target, .. } => {
            (*ty, Action::Update, matches!(target, Target::Criteria(_)))
        }
        Op::Patch { ty, target, .. } => {
            (*ty, Action::Update, matches!(target, Target::Criteria(_)))
        }
        Op::Delete { ty, target, .. } => {
            (*ty, Action::Delete, matches!(target, Target::Criteria(_)))
        }
        Op::Read { ty, .. } => (*ty, Action::Read, false),
        Op::Search { query } => (query.resource_type, Action::Search, false),
    };
    ctx.authorize(ty, action)?;
    if conditional {
        ctx.authorize(ty, Action::Search)?;
    }
    Ok(())
}

pub(super) fn bad(msg: impl Into<String>) -> ServiceError {
    ServiceError::bad_request("invalid", msg)
}

/// `[base/]Type[/id[/_history/vid]][?query]` relative to this server.
pub(super) fn split_url<'a>(url: &'a str, base: &str) -> (&'a str, Option<&'a str>) {
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

pub(super) fn patch_doc(resource: &Value) -> Result<PatchDoc, ServiceError> {
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

pub(super) fn version_header(v: Option<&Value>) -> Result<Option<VersionId>, ServiceError> {
    match v.and_then(Value::as_str) {
        None => Ok(None),
        Some(s) => crate::model::parse_etag(s)
            .map(Some)
            .ok_or_else(|| bad(format!("'{s}' is not a valid ETag"))),
    }
}

/// Parses and checks one entry (everything that needs no database).
pub(super) fn prepare_entry(
    svc: &Service,
    base: &str,
    index: usize,
    mut e: Value,
) -> Result<Entry, ServiceError> {
    let resource = e.as_object_mut().and_then(|o| o.shift_remove("resource"));
    let request = e.get("request").ok_or_else(|| {
        ServiceError::BadRequest(vec![
            OoIssue::error("required", "Entry has no request").at("request")
        ])
    })?;
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let url = request.get("url").and_then(Value::as_str).ok_or_else(|| {
        ServiceError::BadRequest(vec![
            OoIssue::error("required", "Entry request has no url").at("request.url")
        ])
    })?;
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
    let (path, query) = split_url(url, base);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ty = match segs.first() {
        Some(t) => svc.resource_type(t)?,
        None => {
            return Err(bad(format!(
                "Entry request url '{url}' names no resource type"
            )))
        }
    };
    let criteria = |what: &str| -> Result<Option<Target>, ServiceError> {
        match query {
            Some(q) if segs.len() == 1 => Ok(Some(Target::Criteria(
                svc.parse_criteria(base, ty, q, what)?,
            ))),
            _ => Ok(None),
        }
    };
    let id_target = || -> Result<Target, ServiceError> {
        match segs.as_slice() {
            [_, id] => LogicalId::parse(id)
                .map(Target::Id)
                .ok_or_else(|| bad(format!("Invalid resource id '{id}'"))),
            _ => Err(bad(format!(
                "Entry request url '{url}' must be Type/id or Type?criteria"
            ))),
        }
    };
    let body = |resource: Option<Value>| -> Result<Value, ServiceError> {
        resource.ok_or_else(|| {
            ServiceError::BadRequest(vec![OoIssue::error(
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
            let resource = svc.checked(ty, resource, WriteTarget::Create)?;
            let if_none_exist = match request.get("ifNoneExist").and_then(Value::as_str) {
                Some(q) => Some(svc.parse_criteria(base, ty, q, "ifNoneExist")?),
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
                Target::Id(id) => svc.checked(ty, resource, WriteTarget::Update(id))?,
                Target::Criteria(..) => {
                    // The id (if any) is checked against the match inside the transaction.
                    let id = resource
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(LogicalId::parse);
                    match id {
                        Some(id) => svc.checked(ty, resource, WriteTarget::Update(&id))?,
                        None => svc.checked(ty, resource, WriteTarget::Create)?,
                    }
                }
            };
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
                        paging: svc.paging(),
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
                return Err(ServiceError::NotImplemented(format!(
                    "GET '{url}' is not supported inside a Bundle"
                )))
            }
        },
        "" => {
            return Err(ServiceError::BadRequest(vec![OoIssue::error(
                "required",
                "Entry request has no method",
            )
            .at("request.method")]))
        }
        m => {
            return Err(ServiceError::BadRequest(vec![OoIssue::error(
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
        super::refs::conditional_refs(resource, &mut cond_refs);
    }
    Ok(Entry {
        index,
        full_url,
        op,
        indexes: None,
        cond_refs,
    })
}
