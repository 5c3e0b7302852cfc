//! The transaction engine: runs prepared entries inside one open storage
//! transaction. Conditional writes lock their criteria, identities and
//! conditional references are resolved (matches pass the policy), references
//! are rewritten, and entries run in the spec's order (DELETE, POST, PUT/PATCH,
//! GET), plain creates and creating PUTs as one multi-row write each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};

use super::super::search::criteria;
use super::super::write::{
    check_body, forbidden_update, gate, outside, structure_error, WriteTarget,
};
use super::super::{admit_all, admitted, restricted, OoIssue, ReturnPref, ServiceError};
use super::entry::{bad, Entry, Op, PatchDoc, Target};
use super::refs::{premap, rewrite};
use super::{at_entry, EntryResult};
use crate::context::RequestContext;
use crate::model::{LogicalId, ResourceType};
use crate::policy::Action;
use crate::search::parse as search_parse;
use crate::search::types::SearchQuery;
use crate::storage::{
    CreateMethod, CreateRequest, DeleteRequest, NewContent, Precondition, StorageError,
    StoredResource, TxOps, UpdateRequest, WriteKind,
};

/// Up to `limit` current matches of conditional criteria that the caller may
/// see (the restriction applies in storage; each match is admitted here).
fn find(
    tx: &mut dyn TxOps,
    ctx: &RequestContext,
    q: &SearchQuery,
    limit: usize,
) -> Result<Vec<StoredResource>, ServiceError> {
    let found = tx.find(&restricted(ctx, q), limit).map_err(storage_err)?;
    Ok(admit_all(ctx, found))
}

/// Maps a storage failure inside the transaction to the entry's HTTP error.
pub(crate) fn storage_err(e: StorageError) -> ServiceError {
    ServiceError::from(e)
}

/// Everything the transaction closure needs (owned: it runs on a blocking thread).
pub(super) struct TxInput {
    pub(super) ctx: RequestContext,
    pub(super) state: Arc<TxState>,
    pub(super) base: String,
    pub(super) entries: Vec<Entry>,
    pub(super) ret: ReturnPref,
    /// Consent versions written besides the entries (supersession).
    pub(super) changes: crate::service::consent::Changes,
}

/// The parts of the application state used inside transactions.
pub struct TxState {
    pub validation: Arc<crate::validation::ValidationService>,
    pub max_conditional_delete: usize,
    pub paging: search_parse::Paging,
    /// Largest patch result (`server.body_limit_bytes`).
    pub max_patch_result_bytes: usize,
    pub bridge: Arc<crate::bridge::Bridge>,
}

pub(super) fn stored_json(s: &StoredResource) -> Result<Value, ServiceError> {
    serde_json::from_str(s.content.as_deref().unwrap_or("null"))
        .map_err(|e| ServiceError::Internal(e.into()))
}

pub(super) fn write_result(
    status: u16,
    s: StoredResource,
    ret: ReturnPref,
) -> Result<EntryResult, ServiceError> {
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
            r.outcome = Some(vec![OoIssue {
                severity: "information",
                code: "informational",
                diagnostics: format!("{}/{} version {}", s.resource_type, s.id, s.version),
                expression: None,
                details: None,
            }])
        }
        _ => {}
    }
    r.stored = Some(s);
    Ok(r)
}

pub(super) fn content(
    ty: ResourceType,
    resource: Value,
    base: &str,
    pre: Option<Vec<crate::search::rows::IndexRow>>,
) -> NewContent {
    let indexes = match pre {
        Some(rows) => rows,
        None => crate::service::write::extract(ty, &resource, base),
    };
    NewContent { resource, indexes }
}

/// Applies a patch; its result is bounded like a request body (`max_bytes`).
pub(super) fn apply_patch(
    current: &mut Value,
    patch: &PatchDoc,
    max_bytes: usize,
) -> Result<(), ServiceError> {
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
            ServiceError::BadRequest(vec![issue])
        } else {
            ServiceError::Unprocessable(vec![issue])
        }
    })
}

/// Runs the prepared entries inside one open transaction.
pub(super) fn run_entries(
    tx: &mut dyn TxOps,
    input: TxInput,
) -> Result<Vec<(usize, EntryResult)>, ServiceError> {
    let TxInput {
        ctx,
        state,
        base,
        mut entries,
        ret,
        changes,
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
                    let found = find(tx, &ctx, q, 2).map_err(|x| at_entry(idx, x))?;
                    match found.len() {
                        0 => {}
                        1 => {
                            *id = found[0].id.clone();
                            existing.insert(idx, found[0].clone());
                        }
                        _ => {
                            return Err(at_entry(
                                idx,
                                ServiceError::PreconditionFailed(
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
                    let found = find(tx, &ctx, q, 2).map_err(|x| at_entry(idx, x))?;
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
                                ServiceError::PreconditionFailed(
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
                    let found = find(tx, &ctx, q, 2).map_err(|x| at_entry(idx, x))?;
                    match found.len() {
                        1 => *target = Target::Id(found[0].id.clone()),
                        0 => {
                            return Err(at_entry(
                                idx,
                                ServiceError::NotFound(
                                    "No resource matches the patch criteria".into(),
                                ),
                            ))
                        }
                        _ => {
                            return Err(at_entry(
                                idx,
                                ServiceError::PreconditionFailed(
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
                    let found = find(tx, &ctx, q, cap + 1).map_err(|x| at_entry(idx, x))?;
                    if found.len() > cap {
                        return Err(at_entry(
                            idx,
                            ServiceError::PreconditionFailed(format!(
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
        let found = find(tx, &ctx, &query, 2)?;
        match found.len() {
            1 => {
                map.insert(r.clone(), format!("{ty}/{}", found[0].id));
            }
            n => {
                return Err(at_entry(
                    idx,
                    ServiceError::PreconditionFailed(format!(
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

    // 5. Content the caller may not write is refused before anything is
    // written (references are final here, and this runs inside the
    // transaction, so what is checked is what is written).
    check_contents(tx, &ctx, &entries, &mut deletes)?;

    // 5b. Patches become the updates of their results (read, checked and
    // pinned to the version patched), so every later step, and the
    // workflow rules, see the content about to be stored.
    for e in entries.iter_mut() {
        if let Op::Patch {
            ty,
            target: Target::Id(id),
            patch,
            if_match,
        } = &e.op
        {
            let (value, version) = patched(tx, &ctx, &state, *ty, id, patch, *if_match)
                .map_err(|x| at_entry(e.index, x))?;
            e.op = Op::Update {
                ty: *ty,
                target: Target::Id(id.clone()),
                resource: value,
                precondition: Precondition::VersionIs(version),
            };
            e.indexes = None;
        }
    }

    // 5a'. Resources held by a practice's GP system are never written here
    // (a single PUT routes them; in a bundle they are refused).
    for e in entries.iter() {
        let target = match &e.op {
            Op::Create { id, .. } => Some(id),
            Op::Update {
                target: Target::Id(id),
                ..
            }
            | Op::Patch {
                target: Target::Id(id),
                ..
            }
            | Op::Delete {
                target: Target::Id(id),
                ..
            } => Some(id),
            _ => None,
        };
        if let Some((s, _)) = target.and_then(|id| state.bridge.remote_id(id.as_str())) {
            return Err(at_entry(
                e.index,
                ServiceError::NotImplemented(format!(
                    "{} is held by a practice's GP system ({}): it is changed by a single PUT, not in a Bundle",
                    target.map(|i| i.as_str()).unwrap_or(""),
                    s.name()
                )),
            ));
        }
    }

    // 5c. The journeys' rules (booking, repeats, triage), in this
    // transaction, before anything is stored.
    workflow_rules(tx, &base, &state.bridge, &mut entries, &existing, &deletes)?;

    // 6. Execute in the spec's order.
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
        let r =
            run_one(tx, &ctx, &base, e, ret, &existing, &deletes).map_err(|x| at_entry(idx, x))?;
        results.push((idx, r));
    }
    results.sort_by_key(|(i, _)| *i);
    // Workflow rules that write in the same transaction.
    if entries.iter().any(|e| e.op.writes(ResourceType::Consent)) {
        let written: Vec<_> = results
            .iter()
            .filter_map(|(_, r)| r.stored.clone())
            .collect();
        crate::service::consent::supersede(tx, &written, &base, &changes)?;
    }
    let large = entries.len() > 64;
    crate::storage::drop_off_thread(entries, large);
    Ok(results)
}

/// Runs `service::workflows::before_write` for every entry writing a type
/// with rules (each target locked, then its current version read).
fn workflow_rules(
    tx: &mut dyn TxOps,
    base: &str,
    bridge: &crate::bridge::Bridge,
    entries: &mut [Entry],
    existing: &HashMap<usize, StoredResource>,
    deletes: &HashMap<usize, Vec<LogicalId>>,
) -> Result<(), ServiceError> {
    use crate::service::workflows::{before_write, content, has_rules, lock_and_read, Change};
    for e in entries.iter_mut() {
        let idx = e.index;
        let (ty, id, resource) = match &mut e.op {
            Op::Create {
                ty, id, resource, ..
            } if has_rules(*ty) => {
                if existing.contains_key(&idx) {
                    continue;
                }
                (*ty, id.clone(), Some(resource))
            }
            Op::Update {
                ty,
                target: Target::Id(id),
                resource,
                ..
            } if has_rules(*ty) => (*ty, id.clone(), Some(resource)),
            Op::Delete { ty, .. } if has_rules(*ty) => {
                let ty = *ty;
                for id in deletes.get(&idx).into_iter().flatten() {
                    let Some(old) = lock_and_read(tx, ty, id).map_err(|x| at_entry(idx, x))? else {
                        continue;
                    };
                    let old = content(&old).map_err(|x| at_entry(idx, x))?;
                    before_write(
                        tx,
                        base,
                        Change {
                            bridge,
                            ty,
                            id,
                            old: Some(old),
                            new: None,
                        },
                    )
                    .map_err(|x| at_entry(idx, x))?;
                }
                continue;
            }
            _ => continue,
        };
        let old = match lock_and_read(tx, ty, &id).map_err(|x| at_entry(idx, x))? {
            Some(s) => Some(content(&s).map_err(|x| at_entry(idx, x))?),
            None => None,
        };
        let Some(resource) = resource else { continue };
        let sent = resource.clone();
        before_write(
            tx,
            base,
            Change {
                bridge,
                ty,
                id: &id,
                old,
                new: Some(resource),
            },
        )
        .map_err(|x| at_entry(idx, x))?;
        if *resource != sent {
            e.indexes = None;
        }
    }
    Ok(())
}

/// The result of a PATCH of `ty/id`, read and checked inside the
/// transaction, with the version it applies to.
fn patched(
    tx: &mut dyn TxOps,
    ctx: &RequestContext,
    state: &TxState,
    ty: ResourceType,
    id: &LogicalId,
    patch: &PatchDoc,
    if_match: Option<crate::model::VersionId>,
) -> Result<(Value, crate::model::VersionId), ServiceError> {
    let current = tx.read(ty, id).map_err(storage_err)?;
    if let Some(v) = if_match {
        if v != current.version {
            return Err(ServiceError::PreconditionFailed(format!(
                "If-Match W/\"{v}\" but the current version is {}",
                current.version
            )));
        }
    }
    let mut value = stored_json(&current)?;
    if ctx.confined(ty, Action::Update) && !ctx.permits(ty, Action::Update, id.as_str(), &value) {
        // A resource the caller cannot see answers as absent.
        return Err(match admitted(ctx, current) {
            Some(_) => forbidden_update(ty, id),
            None => ServiceError::NotFound("Resource not found".into()),
        });
    }
    apply_patch(&mut value, patch, state.max_patch_result_bytes)?;
    let value =
        check_body(ty, value, WriteTarget::Update(id)).map_err(|i| match structure_error(i) {
            ServiceError::BadRequest(issues) => ServiceError::Unprocessable(issues),
            other => other,
        })?;
    gate(&state.validation, ty, &value)?;
    crate::service::consent::check(ty, &value)?;
    crate::service::workflows::check_content(ty, &value)?;
    if !ctx.permits(ty, Action::Update, id.as_str(), &value) {
        return Err(outside(ty, "update"));
    }
    Ok((value, current.version))
}

/// Whether the current version of `ty/id` lies inside what the caller may
/// `action` (`None`: absent or deleted), read inside the transaction.
fn current_permits(
    tx: &mut dyn TxOps,
    ctx: &RequestContext,
    ty: ResourceType,
    id: &LogicalId,
    action: Action,
) -> Result<Option<bool>, ServiceError> {
    match tx.read(ty, id) {
        Ok(cur) => Ok(Some(
            cur.content
                .as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .is_some_and(|v| ctx.permits(ty, action, id.as_str(), &v)),
        )),
        Err(StorageError::NotFound | StorageError::Gone { .. }) => Ok(None),
        Err(other) => Err(storage_err(other)),
    }
}

/// Checks every write's content against what the caller may write: new
/// content of creates and updates, and for confined callers the current
/// content of updates (absent, deleted or hidden alike → 403) and deletes
/// (hidden → treated as absent: dropped from `deletes`).
fn check_contents(
    tx: &mut dyn TxOps,
    ctx: &RequestContext,
    entries: &[Entry],
    deletes: &mut HashMap<usize, Vec<LogicalId>>,
) -> Result<(), ServiceError> {
    if ctx.unrestricted() {
        return Ok(());
    }
    for e in entries {
        let idx = e.index;
        match &e.op {
            Op::Create {
                ty, resource, id, ..
            } if !ctx.permits(*ty, Action::Create, id.as_str(), resource) => {
                return Err(at_entry(idx, outside(*ty, "create")));
            }
            Op::Update {
                ty,
                target: Target::Id(id),
                resource,
                ..
            } => {
                if ctx.confined(*ty, Action::Update) {
                    // Absent, deleted or hidden alike: a confined PUT never
                    // creates, unless only Consents confine the caller.
                    let ok = match current_permits(tx, ctx, *ty, id, Action::Update)? {
                        Some(ok) => ok,
                        None => ctx.may_create_by_id(*ty),
                    };
                    if !ok {
                        return Err(at_entry(idx, forbidden_update(*ty, id)));
                    }
                }
                if !ctx.permits(*ty, Action::Update, id.as_str(), resource) {
                    return Err(at_entry(idx, outside(*ty, "update")));
                }
            }
            Op::Delete { ty, .. } if ctx.confined(*ty, Action::Delete) => {
                let Some(ids) = deletes.get_mut(&idx) else {
                    continue;
                };
                let mut keep = Vec::with_capacity(ids.len());
                for id in ids.drain(..) {
                    let visible =
                        current_permits(tx, ctx, *ty, &id, Action::Delete)? != Some(false);
                    if visible {
                        keep.push(id);
                    } else if let Op::Delete {
                        if_match: Some(_), ..
                    } = &e.op
                    {
                        // As for an absent resource with If-Match.
                        return Err(at_entry(
                            idx,
                            storage_err(StorageError::VersionConflict { current: None }),
                        ));
                    }
                }
                *ids = keep;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The unconditional PUTs (no `If-Match`) of `entries` whose ids have no head
/// row yet, created in one multi-row write per type; (entry index, result).
fn put_creates(
    tx: &mut dyn TxOps,
    entries: &mut [Entry],
    base: &str,
    ret: ReturnPref,
) -> Result<Vec<(usize, EntryResult)>, ServiceError> {
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
) -> Result<Vec<(usize, EntryResult)>, ServiceError> {
    let outs = tx.create_many(reqs, method).map_err(storage_err)?;
    idxs.into_iter()
        .zip(outs)
        .map(|(idx, o)| {
            let s = o
                .stored
                .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("no stored resource")))?;
            Ok((idx, write_result(201, s, ret)?))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    tx: &mut dyn TxOps,
    ctx: &RequestContext,
    base: &str,
    e: &Entry,
    ret: ReturnPref,
    existing: &HashMap<usize, StoredResource>,
    deletes: &HashMap<usize, Vec<LogicalId>>,
) -> Result<EntryResult, ServiceError> {
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
                .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("no stored resource")))?;
            write_result(201, s, ret)
        }
        Op::Update {
            ty,
            target,
            resource,
            precondition,
        } => {
            let Target::Id(id) = target else {
                return Err(ServiceError::Internal(anyhow::anyhow!(
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
                .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("no stored resource")))?;
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
        Op::Patch { .. } => Err(ServiceError::Internal(anyhow::anyhow!(
            "a patch runs as the update of its result"
        ))),
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
                    vec![OoIssue {
                        severity: "information",
                        code: "informational",
                        diagnostics: format!("{} {ty} resource(s) deleted", ids.len()),
                        expression: None,
                        details: None,
                    }]
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
            let s = admitted(ctx, s)
                .ok_or_else(|| ServiceError::NotFound("Resource not found".into()))?;
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
            let mut page = tx.search(&restricted(ctx, query)).map_err(storage_err)?;
            page.resources = admit_all(ctx, std::mem::take(&mut page.resources));
            page.included = admit_all(ctx, std::mem::take(&mut page.included));
            Ok(EntryResult {
                status: 200,
                page: Some(page),
                ..Default::default()
            })
        }
    }
}
