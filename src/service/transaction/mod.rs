//! Batch and transaction Bundles, and the multi-step writes built on the
//! same machinery: conditional update and delete, and PATCH.
//!
//! A transaction is prepared outside the database ([`entry`]: parse,
//! structural checks, profile validation, id assignment; [`refs`]: reference
//! rewriting and index extraction), then run inside one storage transaction
//! ([`run`]). Any failure rolls everything back and answers with the failing
//! entry's error, whose expressions point into the request Bundle. A batch
//! runs every entry as its own one-entry transaction and reports each outcome
//! in place. Results are typed ([`EntryResult`], [`BundleOutcome`]); the
//! REST edge writes the response Bundle.

mod entry;
mod refs;
mod run;

use std::sync::Arc;

use serde_json::{json, Value};

use super::write::structure_error;
use super::{OoIssue, ReturnPref, Service, ServiceError, ServiceResult};
use crate::context::RequestContext;
use crate::model::{Instant, ResourceType, StoredResource, VersionId};
use entry::{bad, prepare_entry, Entry};
use refs::pre_extract;
pub(crate) use run::storage_err;
use run::{run_entries, TxInput, TxState};

/// The outcome of one entry, for `Bundle.entry.response`.
#[derive(Debug, Clone, Default)]
pub struct EntryResult {
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<VersionId>,
    pub last_modified: Option<Instant>,
    pub resource: Option<Value>,
    /// `Prefer: return=OperationOutcome`, or a nested outcome.
    pub outcome: Option<Vec<OoIssue>>,
    /// A GET search entry's page (the REST edge writes it as a searchset).
    pub page: Option<crate::storage::SearchPage>,
    /// The stored version written or found (for the single-request wrappers).
    pub stored: Option<StoredResource>,
}

/// An error attributed to one entry.
pub(super) fn at_entry(index: usize, e: ServiceError) -> ServiceError {
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
        ServiceError::BadRequest(i) => ServiceError::BadRequest(fix(i)),
        ServiceError::Unprocessable(i) => ServiceError::Unprocessable(fix(i)),
        ServiceError::NotFound(m) => ServiceError::NotFound(format!("{prefix}: {m}")),
        ServiceError::Gone(m) => ServiceError::Gone(format!("{prefix}: {m}")),
        ServiceError::Forbidden(m) => ServiceError::Forbidden(format!("{prefix}: {m}")),
        ServiceError::Conflict(m) => ServiceError::Conflict(format!("{prefix}: {m}")),
        ServiceError::Duplicate(m) => ServiceError::Duplicate(format!("{prefix}: {m}")),
        ServiceError::PreconditionFailed(m) => {
            ServiceError::PreconditionFailed(format!("{prefix}: {m}"))
        }
        ServiceError::MethodNotAllowed(m) => {
            ServiceError::MethodNotAllowed(format!("{prefix}: {m}"))
        }
        ServiceError::NotImplemented(m) => ServiceError::NotImplemented(format!("{prefix}: {m}")),
        other => other,
    }
}

/// Most issues one transaction answer lists; the rest are counted.
const MAX_REPORTED_ISSUES: usize = 1000;

/// The errors of several failing transaction entries as one answer: the first
/// failing entry decides the status; when it is a 400 or 422, the issues of every
/// failing entry are listed (at most [`MAX_REPORTED_ISSUES`], then a count).
fn combine_entry_errors(mut errors: Vec<ServiceError>) -> ServiceError {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let first = errors.remove(0);
    let mut issues = match &first {
        ServiceError::BadRequest(i) | ServiceError::Unprocessable(i) => i.clone(),
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
            details: None,
        });
    }
    let failing = errors.len() + 1;
    issues.push(OoIssue {
        severity: "information",
        code: "informational",
        diagnostics: format!("{failing} entries of the transaction failed; nothing was written"),
        expression: None,
        details: None,
    });
    match first {
        ServiceError::Unprocessable(_) => ServiceError::Unprocessable(issues),
        _ => ServiceError::BadRequest(issues),
    }
}

impl Service {
    fn tx_state(&self) -> Arc<TxState> {
        Arc::new(TxState {
            validation: self.validation.clone(),
            max_conditional_delete: self.settings.server.max_conditional_delete,
            paging: self.paging(),
            max_patch_result_bytes: self.settings.server.body_limit_bytes,
            bridge: self.bridge.clone(),
        })
    }

    /// Runs `entries` as one transaction. Errors are the failing entry's.
    async fn transact(
        &self,
        ctx: &RequestContext,
        base: &str,
        entries: Vec<Entry>,
        ret: ReturnPref,
    ) -> ServiceResult<Vec<(usize, EntryResult)>> {
        // Each entry is authorised as if it were sent alone; in a
        // transaction one refusal refuses the whole Bundle (403).
        let mut entries = entries;
        for e in entries.iter_mut() {
            entry::authorize(ctx, e).map_err(|x| at_entry(e.index, x))?;
            if let entry::Op::Search { query } = &mut e.op {
                if super::workflows::Actor::of(ctx) == super::workflows::Actor::Patient {
                    super::booking::free_slot_query(query, None)
                        .map_err(|x| at_entry(e.index, x))?;
                }
            }
        }
        let changes = super::consent::Changes::default();
        let consents = entries.iter().any(|e| e.op.writes(ResourceType::Consent));
        let input = TxInput {
            ctx: ctx.clone(),
            state: self.tx_state(),
            base: base.to_owned(),
            entries,
            ret,
            changes: changes.clone(),
        };
        let results = crate::storage::transact(self.backend.clone(), ctx.clone(), move |tx| {
            run_entries(tx, input)
        })
        .await?;
        if consents {
            // Committed: the index follows before the response is sent.
            let written: Vec<StoredResource> = results
                .iter()
                .filter_map(|(_, r)| r.stored.clone())
                .collect();
            changes.apply(&self.consents, &written);
        }
        Ok(results)
    }

    /// A single create, update or delete run as a one-entry transaction, so
    /// the workflow rules that write in the same transaction apply (Consent
    /// supersession).
    pub(crate) async fn write_in_tx(
        &self,
        ctx: &RequestContext,
        base: &str,
        single: SingleWrite,
    ) -> ServiceResult<super::write::Written> {
        use crate::storage::WriteKind;
        let (op, kind_of): (entry::Op, fn(u16, bool) -> WriteKind) = match single {
            SingleWrite::Create {
                ty,
                body,
                if_none_exist,
            } => (
                entry::Op::Create {
                    ty,
                    resource: self.checked(ty, body, super::write::WriteTarget::Create)?,
                    if_none_exist,
                    id: crate::model::LogicalId::generate(),
                },
                |s, _| {
                    if s == 201 {
                        WriteKind::Created
                    } else {
                        WriteKind::Existing
                    }
                },
            ),
            SingleWrite::Update {
                ty,
                id,
                body,
                precondition,
            } => {
                let resource = self.checked(ty, body, super::write::WriteTarget::Update(&id))?;
                (
                    entry::Op::Update {
                        ty,
                        target: entry::Target::Id(id),
                        resource,
                        precondition,
                    },
                    |s, _| {
                        if s == 201 {
                            WriteKind::Created
                        } else {
                            WriteKind::Updated
                        }
                    },
                )
            }
            SingleWrite::Delete { ty, id, if_match } => (
                entry::Op::Delete {
                    ty,
                    target: entry::Target::Id(id),
                    if_match,
                },
                |_, marker| {
                    if marker {
                        WriteKind::Deleted
                    } else {
                        WriteKind::NothingToDelete
                    }
                },
            ),
        };
        let mut entries = vec![Entry {
            index: 0,
            full_url: None,
            op,
            indexes: None,
            cond_refs: Vec::new(),
        }];
        pre_extract(&mut entries, base);
        let mut results = self
            .transact(ctx, base, entries, ReturnPref::Minimal)
            .await
            .map_err(strip_entry_prefix)?;
        let r = results.remove(0).1;
        Ok(super::write::Written {
            kind: kind_of(r.status, r.stored.is_some()),
            stored: r.stored,
        })
    }

    /// `POST [base]` with a batch or transaction Bundle (also `fhirbridge import`).
    pub async fn bundle(
        self: &Arc<Self>,
        ctx: &RequestContext,
        base: &str,
        value: Value,
        ret: ReturnPref,
    ) -> ServiceResult<BundleOutcome> {
        // Access is decided entry by entry (an empty Bundle reveals nothing).
        ctx.mark_decided();
        if !self.has_transactions() {
            // Every entry runs as a transaction (a batch entry as its own):
            // a backend without them answers neither, and says so.
            return Err(ServiceError::NotImplemented(
                "This backend does not support batch or transaction Bundles".into(),
            ));
        }
        if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(bad("POST to the base takes a batch or transaction Bundle"));
        }
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if kind != "batch" && kind != "transaction" {
            return Err(ServiceError::BadRequest(vec![OoIssue::error(
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
        let max = self.settings.server.max_bundle_entries;
        if raw_entries.len() > max {
            return Err(ServiceError::PayloadTooLarge(format!(
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
            return Err(structure_error(issues));
        }
        if kind == "transaction" {
            let svc = self.clone();
            let b = base.to_owned();
            let span = tracing::Span::current();
            let prepared = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                // Every entry is checked, so one answer names every failing entry.
                let mut entries = Vec::with_capacity(raw_entries.len());
                let mut errors = Vec::new();
                for (i, e) in raw_entries.into_iter().enumerate() {
                    match prepare_entry(&svc, &b, i, e) {
                        Ok(entry) => entries.push(entry),
                        Err(x) => errors.push(at_entry(i, x)),
                    }
                }
                if !errors.is_empty() {
                    return Err(combine_entry_errors(errors));
                }
                pre_extract(&mut entries, &b);
                Ok::<_, ServiceError>(entries)
            })
            .await
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("{e}")))??;
            let results = self.transact(ctx, base, prepared, ret).await?;
            Ok(BundleOutcome::Transaction(
                results.into_iter().map(|(_, r)| r).collect(),
            ))
        } else {
            let mut out = Vec::with_capacity(raw_entries.len());
            for (i, e) in raw_entries.into_iter().enumerate() {
                let prepared = prepare_entry(self, base, i, e).map_err(|x| at_entry(i, x));
                out.push(match prepared {
                    Ok(entry) => self
                        .transact(ctx, base, vec![entry], ret)
                        .await
                        .map(|mut r| r.remove(0).1),
                    Err(e) => Err(e),
                });
            }
            Ok(BundleOutcome::Batch(out))
        }
    }

    /// `PUT [type]?criteria`: conditional update.
    pub async fn conditional_update(
        &self,
        ctx: &RequestContext,
        input: ConditionalInput<'_>,
        body: Value,
    ) -> ServiceResult<EntryResult> {
        self.one_entry(ctx, input, "PUT", Some(body)).await
    }

    /// `DELETE [type]?criteria`: conditional delete (one or several, up to the cap).
    pub async fn conditional_delete(
        &self,
        ctx: &RequestContext,
        input: ConditionalInput<'_>,
    ) -> ServiceResult<EntryResult> {
        self.one_entry(ctx, input, "DELETE", None).await
    }

    /// `PATCH [type]/[id]`: `doc` is a FHIRPath Patch Parameters resource or a
    /// JSON Patch Binary (as in a bundle entry).
    pub async fn patch(
        &self,
        ctx: &RequestContext,
        input: ConditionalInput<'_>,
        doc: Value,
    ) -> ServiceResult<EntryResult> {
        if let Some((s, _)) = self.bridge.remote_id(input.criteria) {
            ctx.authorize(input.ty, crate::policy::Action::Update)?;
            return Err(ServiceError::NotImplemented(format!(
                "{}/{} is held by a practice's GP system ({}): change it with PUT, not PATCH",
                input.ty,
                input.criteria,
                s.name()
            )));
        }
        self.one_entry(ctx, input, "PATCH", Some(doc)).await
    }

    /// `method` on `[type]?criteria` (or `[type]/[id]` for PATCH), given as a
    /// bundle entry, run as its own transaction; errors name the resource, not
    /// `Bundle.entry[0]`.
    async fn one_entry(
        &self,
        ctx: &RequestContext,
        input: ConditionalInput<'_>,
        method: &str,
        resource: Option<Value>,
    ) -> ServiceResult<EntryResult> {
        let interaction = match method {
            "DELETE" => crate::storage::Interaction::Delete,
            _ => crate::storage::Interaction::Update,
        };
        self.require(input.ty, interaction)?;
        let sep = if method == "PATCH" { '/' } else { '?' };
        let url = format!("{}{sep}{}", input.ty, input.criteria);
        let entry = request_entry(method, url, resource, input.if_match);
        let prepared = prepare_entry(self, input.base, 0, entry)?;
        let mut results = self
            .transact(ctx, input.base, vec![prepared], input.ret)
            .await
            .map_err(strip_entry_prefix)?;
        Ok(results.remove(0).1)
    }
}

/// A single write routed through [`Service::write_in_tx`].
pub(crate) enum SingleWrite {
    Create {
        ty: ResourceType,
        body: Value,
        if_none_exist: Option<crate::search::types::SearchQuery>,
    },
    Update {
        ty: ResourceType,
        id: crate::model::LogicalId,
        body: Value,
        precondition: crate::storage::Precondition,
    },
    Delete {
        ty: ResourceType,
        id: crate::model::LogicalId,
        if_match: Option<VersionId>,
    },
}

/// A single conditional or patch request.
#[derive(Debug, Clone, Copy)]
pub struct ConditionalInput<'a> {
    pub ty: ResourceType,
    /// The criteria (conditional update/delete) or the id (PATCH).
    pub criteria: &'a str,
    /// `If-Match` as sent.
    pub if_match: Option<&'a str>,
    pub ret: ReturnPref,
    pub base: &'a str,
}

/// The result of a batch or transaction Bundle, entry by entry, in order.
#[derive(Debug)]
pub enum BundleOutcome {
    Transaction(Vec<EntryResult>),
    Batch(Vec<ServiceResult<EntryResult>>),
}

fn request_entry(
    method: &str,
    url: String,
    resource: Option<Value>,
    if_match: Option<&str>,
) -> Value {
    let mut request = json!({"method": method, "url": url});
    if let Some(v) = if_match {
        request["ifMatch"] = json!(v);
    }
    let mut e = json!({ "request": request });
    if let Some(r) = resource {
        e["resource"] = r;
    }
    e
}

/// Single requests report errors about the resource, not about `Bundle.entry[0]`.
fn strip_entry_prefix(e: ServiceError) -> ServiceError {
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
        ServiceError::BadRequest(i) => ServiceError::BadRequest(fix(i)),
        ServiceError::Unprocessable(i) => ServiceError::Unprocessable(fix(i)),
        ServiceError::NotFound(m) => ServiceError::NotFound(strip(m)),
        ServiceError::PreconditionFailed(m) => ServiceError::PreconditionFailed(strip(m)),
        ServiceError::Conflict(m) => ServiceError::Conflict(strip(m)),
        ServiceError::Duplicate(m) => ServiceError::Duplicate(strip(m)),
        ServiceError::Gone(m) => ServiceError::Gone(strip(m)),
        other => other,
    }
}
