//! Consent writes: every Consent must be a rule the server can enforce (422
//! otherwise, before anything is stored); each patient has at most one
//! `active` Consent per kind (a new active one makes the previous one
//! `inactive` in the same storage transaction); and every committed change
//! reaches the Consent index before the response is sent.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::transaction::storage_err;
use super::{OoIssue, ServiceError, ServiceResult};
use crate::consent::{rule, ConsentIndex};
use crate::model::{ResourceType, StoredResource};
use crate::storage::{Precondition, StorageError, TxOps, UpdateRequest};

/// 422 unless `value` (a resource of `ty`) is a Consent the server can enforce.
pub(crate) fn check(ty: ResourceType, value: &Value) -> ServiceResult<()> {
    if ty != ResourceType::Consent {
        return Ok(());
    }
    rule::parse(value).map(|_| ()).map_err(|why| {
        ServiceError::Unprocessable(vec![OoIssue::error(
            "business-rule",
            format!("This Consent cannot be enforced: {why}"),
        )
        .at("Consent")])
    })
}

fn content_of(s: &StoredResource) -> Option<Value> {
    serde_json::from_str(s.content.as_deref()?).ok()
}

/// The Consent versions a transaction changed, applied to the index after
/// it commits.
#[derive(Default, Clone)]
pub(crate) struct Changes(Arc<Mutex<Vec<StoredResource>>>);

impl Changes {
    fn push(&self, s: StoredResource) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// Applies every change to `index` (after the commit).
    pub(crate) fn apply(&self, index: &ConsentIndex, written: &[StoredResource]) {
        let extra = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for s in written
            .iter()
            .filter(|s| s.resource_type == ResourceType::Consent)
            .chain(extra.iter())
        {
            index.apply_stored(s);
        }
    }
}

/// Inside the transaction, after its entries ran: for every active Consent
/// written, the patient's other active Consent of the same kind becomes
/// `inactive` (serialised per patient and kind, so concurrent writers leave
/// exactly one active).
pub(crate) fn supersede(
    tx: &mut dyn TxOps,
    written: &[StoredResource],
    base: &str,
    changes: &Changes,
) -> ServiceResult<()> {
    let mut keyed: Vec<(String, String, String)> = Vec::new();
    for s in written {
        if s.resource_type != ResourceType::Consent {
            continue;
        }
        let Some(v) = content_of(s) else {
            continue;
        };
        let Ok(r) = rule::parse(&v) else { continue };
        if !r.active {
            continue;
        }
        let key = r.kind.key();
        if keyed.iter().any(|(p, k, _)| *p == r.patient && *k == key) {
            return Err(ServiceError::Unprocessable(vec![OoIssue::error(
                "business-rule",
                format!(
                    "Two active Consents of one kind ({key}) for one patient in one request: a patient has at most one"
                ),
            )]));
        }
        keyed.push((r.patient, key, s.id.as_str().to_owned()));
    }
    keyed.sort();
    for (patient, key, _) in &keyed {
        tx.lock(&format!("consent|{patient}|{key}"))
            .map_err(storage_err)?;
    }
    for (patient, key, keep) in &keyed {
        let q = crate::search::parse::parse(
            ResourceType::Consent,
            &[
                ("patient".to_owned(), format!("Patient/{patient}")),
                ("status".to_owned(), "active".to_owned()),
            ],
            crate::search::parse::Options {
                lenient: false,
                paging: crate::search::parse::Paging {
                    default_count: 100,
                    max_count: 100,
                },
                base_url: base,
            },
        )
        .map_err(super::search::search_error)?
        .query;
        for old in tx.find(&q, 100).map_err(storage_err)? {
            if old.id.as_str() == keep {
                continue;
            }
            let Some(mut v) = content_of(&old) else {
                continue;
            };
            let same = rule::parse(&v).is_ok_and(|r| r.active && r.kind.key() == *key);
            if !same {
                continue;
            }
            v["status"] = json!("inactive");
            if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
                m.remove("versionId");
                m.remove("lastUpdated");
            }
            let indexes = super::write::extract(ResourceType::Consent, &v, base);
            let out = tx
                .update(UpdateRequest {
                    resource_type: ResourceType::Consent,
                    id: old.id.clone(),
                    content: crate::storage::NewContent {
                        resource: v,
                        indexes,
                    },
                    precondition: Precondition::VersionIs(old.version),
                })
                .map_err(|e| match e {
                    StorageError::VersionConflict { .. } => ServiceError::Conflict(
                        "A Consent of this patient is being changed concurrently; retry".into(),
                    ),
                    e => storage_err(e),
                })?;
            if let Some(s) = out.stored {
                changes.push(s);
            }
        }
    }
    Ok(())
}

/// Loads every active Consent into `index` (at start-up).
pub async fn load(service: &super::Service, index: &ConsentIndex) -> anyhow::Result<usize> {
    let ctx =
        crate::context::RequestContext::system("consent-index", Arc::new(crate::policy::AllowAll));
    let Some(searcher) = service.backend.search() else {
        return Ok(0);
    };
    let mut q = crate::search::types::SearchQuery::new(ResourceType::Consent);
    q.count = 500;
    let mut n = 0;
    loop {
        let page = searcher.search(&ctx, &q).await?;
        for s in &page.resources {
            index.apply_stored(s);
            n += 1;
        }
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    Ok(n)
}

/// Applies Consent versions written since `since` (by any instance) to
/// `index`; returns the newest `lastUpdated` seen.
pub async fn refresh(
    service: &super::Service,
    index: &ConsentIndex,
    since: crate::model::Instant,
) -> anyhow::Result<crate::model::Instant> {
    let ctx =
        crate::context::RequestContext::system("consent-index", Arc::new(crate::policy::AllowAll));
    let Some(history) = service.backend.history() else {
        return Ok(since);
    };
    let mut newest = since;
    let mut before = None;
    let mut latest: std::collections::HashMap<String, StoredResource> = Default::default();
    loop {
        let page = history
            .history(
                &ctx,
                crate::storage::HistoryQuery {
                    scope: crate::storage::HistoryScope::Type(ResourceType::Consent),
                    since: Some(since),
                    count: 500,
                    before_seq: before,
                },
            )
            .await?;
        for e in &page.entries {
            if e.resource.last_updated > newest {
                newest = e.resource.last_updated;
            }
            let id = e.resource.id.as_str().to_owned();
            let keep = latest
                .get(&id)
                .is_none_or(|s| s.version < e.resource.version);
            if keep {
                latest.insert(id, e.resource.clone());
            }
        }
        match page.next_before_seq {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    for s in latest.values() {
        index.apply_stored(s);
    }
    Ok(newest)
}
