//! The patient journeys' rules on the one write path: every write of an
//! Appointment, Slot, Task or QuestionnaireResponse — POST, PUT, PATCH,
//! batch and transaction entries, import — passes [`before_write`] inside
//! its storage transaction, before it is stored. Each workflow module
//! (`booking`, `repeats`, `triage`) classifies the change into its domain
//! operation (book, cancel, amend, request a repeat, approve, …), checks
//! the rules and writes what follows (slots busy or free, the issued
//! prescription) in the same transaction. The GP-supplier bridge replaces
//! these local operations per practice.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::transaction::storage_err;
use super::{OoIssue, ServiceError, ServiceResult};
use crate::context::{Principal, RequestContext};
use crate::model::{LogicalId, ResourceType};
use crate::search::types::SearchQuery;
use crate::storage::{
    NewContent, Precondition, StorageError, StoredResource, TxOps, UpdateRequest,
};

/// The types whose writes run the workflow rules (single writes of these run
/// as one-entry transactions, so the rules share the write's transaction).
pub(crate) fn in_tx(ty: ResourceType) -> bool {
    matches!(
        ty,
        ResourceType::Consent
            | ResourceType::Appointment
            | ResourceType::Slot
            | ResourceType::Task
            | ResourceType::QuestionnaireResponse
    )
}

/// Whether `before_write` has rules for `ty`.
pub(crate) fn has_rules(ty: ResourceType) -> bool {
    in_tx(ty) && ty != ResourceType::Consent
}

/// Who is acting, as the journeys see it: a patient (their own record or one
/// they are a proxy for) or the practice (clinicians, GP systems, the server
/// itself, and every caller when access control is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actor {
    Patient,
    Staff,
}

impl Actor {
    pub(crate) fn of(ctx: &RequestContext) -> Actor {
        match &ctx.principal {
            Principal::Caller(c) if c.kind() == crate::auth::claims::CallerKind::Patient => {
                Actor::Patient
            }
            _ => Actor::Staff,
        }
    }
}

/// One write as the rules see it: `old` is the current version (read after
/// the resource's lock), `new` the content about to be stored (`None`: a
/// delete). Rules may change `new` (the stored Task names the prescription
/// it issued).
pub(crate) struct Change<'a> {
    /// The GP-supplier bridge (which ids and practices are remote).
    pub bridge: &'a crate::bridge::Bridge,
    pub ty: ResourceType,
    pub id: &'a LogicalId,
    pub old: Option<Value>,
    pub new: Option<&'a mut Value>,
}

/// Runs the rules of `change` inside the transaction.
pub(crate) fn before_write(
    tx: &mut dyn TxOps,
    base: &str,
    change: Change<'_>,
) -> ServiceResult<()> {
    if change.bridge.remote_id(change.id.as_str()).is_some() {
        return Err(ServiceError::NotImplemented(format!(
            "{}/{} is held by a practice's GP system: it is changed by a single PUT, not in a Bundle or by PATCH",
            change.ty, change.id
        )));
    }
    match change.ty {
        ResourceType::Appointment => super::booking::appointment(tx, base, change),
        ResourceType::Slot => super::booking::slot(tx, change),
        ResourceType::Task if crate::bridge::outbox::is_cancellation(change.new.as_deref()) => {
            super::bridged::queue_cancellation(tx, change)
        }
        ResourceType::Task => super::repeats::task(tx, base, change),
        ResourceType::QuestionnaireResponse => super::triage::response(tx, change),
        _ => Ok(()),
    }
}

/// Locks `ty/id` for the rest of the transaction and reads its current
/// content (`None`: absent or deleted).
pub(crate) fn lock_and_read(
    tx: &mut dyn TxOps,
    ty: ResourceType,
    id: &LogicalId,
) -> ServiceResult<Option<StoredResource>> {
    tx.lock(&format!("workflow|{ty}|{id}"))
        .map_err(storage_err)?;
    read(tx, ty, id)
}

/// The current version of `ty/id` (`None`: absent or deleted).
pub(crate) fn read(
    tx: &mut dyn TxOps,
    ty: ResourceType,
    id: &LogicalId,
) -> ServiceResult<Option<StoredResource>> {
    match tx.read(ty, id) {
        Ok(s) => Ok(Some(s)),
        Err(StorageError::NotFound | StorageError::Gone { .. }) => Ok(None),
        Err(e) => Err(storage_err(e)),
    }
}

pub(crate) fn content(s: &StoredResource) -> ServiceResult<Value> {
    serde_json::from_str(s.content.as_deref().unwrap_or("null"))
        .map_err(|e| ServiceError::Internal(e.into()))
}

/// Reads `ty/{id}` given as text (an id from a reference): `None` when it is
/// not a valid id or there is no such resource.
pub(crate) fn read_ref(
    tx: &mut dyn TxOps,
    ty: ResourceType,
    id: &str,
) -> ServiceResult<Option<(StoredResource, Value)>> {
    let Some(id) = LogicalId::parse(id) else {
        return Ok(None);
    };
    match read(tx, ty, &id)? {
        Some(s) => {
            let v = content(&s)?;
            Ok(Some((s, v)))
        }
        None => Ok(None),
    }
}

/// A search the rules run inside the transaction (not restricted: the rules
/// see everything; nothing of it is returned to the caller).
pub(crate) fn query(
    ty: ResourceType,
    pairs: &[(&str, String)],
    base: &str,
) -> ServiceResult<SearchQuery> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    crate::search::parse::parse(
        ty,
        &pairs,
        crate::search::parse::Options {
            lenient: false,
            paging: crate::search::parse::Paging {
                default_count: 100,
                max_count: 1000,
            },
            base_url: base,
        },
    )
    .map(|p| p.query)
    .map_err(super::search::search_error)
}

/// Stores `v` as the next version of `s` (exactly on top of it).
pub(crate) fn rewrite(
    tx: &mut dyn TxOps,
    base: &str,
    s: &StoredResource,
    mut v: Value,
) -> ServiceResult<()> {
    if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
        m.remove("versionId");
        m.remove("lastUpdated");
    }
    let indexes = super::write::extract(s.resource_type, &v, base);
    tx.update(UpdateRequest {
        resource_type: s.resource_type,
        id: s.id.clone(),
        content: NewContent {
            resource: v,
            indexes,
        },
        precondition: Precondition::VersionIs(s.version),
    })
    .map_err(|e| match e {
        StorageError::VersionConflict { .. } => ServiceError::Conflict(format!(
            "{}/{} is being changed concurrently; retry",
            s.resource_type, s.id
        )),
        e => storage_err(e),
    })?;
    Ok(())
}

/// A 422 naming the rule that refused the write.
pub(crate) fn refuse(rule: &str, why: impl Into<String>) -> ServiceError {
    ServiceError::Unprocessable(vec![OoIssue::error(
        "business-rule",
        format!("{rule}: {}", why.into()),
    )])
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// `value.status` as text ("" when absent).
pub(crate) fn status(v: &Value) -> &str {
    v.get("status").and_then(Value::as_str).unwrap_or("")
}

/// A FHIR instant for `t`.
pub(crate) fn fhir_instant(t: DateTime<Utc>) -> Value {
    json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Checks of a write's content alone (before any transaction): a practice's
/// booking rules must be readable.
pub(crate) fn check_content(ty: ResourceType, value: &Value) -> ServiceResult<()> {
    if ty == ResourceType::Organization {
        crate::workflow::practice::parse(value)
            .map_err(|why| refuse("practice-booking-rules", why))?;
    }
    Ok(())
}

/// What the CapabilityStatement says of a type's workflow rules.
pub fn documentation(ty: ResourceType) -> Option<&'static str> {
    Some(match ty {
        ResourceType::Appointment => {
            "Booking from free slots: every referenced Slot must exist and be free (409 \
             DUPLICATE_REJECTED otherwise), several slots adjacent on one Schedule with one \
             service type and delivery channel, start/end equal to the slots'; the slots turn \
             busy (and free again on cancellation) in the same transaction. Patients book \
             status=booked with the booking-organisation extension, inside the practice's window \
             and rules (practice-booking-rules extension on the practice Organization), may cancel \
             (with cancelationReason) or amend comment/description of their future appointments \
             only, never delete."
        }
        ResourceType::Slot => {
            "A slot held by an appointment stays busy (409 on setting it free or deleting it). \
             Patients read slots, never write them; their free-slot searches need start=ge and \
             start=le at most 14 days apart and never return past slots."
        }
        ResourceType::Task => {
            "Repeat prescription requests: a Task with code SNOMED 103742009, focus the repeat \
             authorisation (MedicationRequest intent=plan) and for the patient. Accepted only for \
             an active, unexpired repeat of that patient with issues left and no other open \
             request (409). Completing it issues one MedicationRequest intent=order basedOn the \
             plan and increments the plan's issued count in one transaction; rejecting needs a \
             statusReason; an actioned request cannot change (409)."
        }
        ResourceType::QuestionnaireResponse => {
            "Validated against its Questionnaire when the server holds it (required items, answer \
             types and options, enableWhen, repeats); triaged services need a completed, recent \
             response of the patient referenced from the Appointment."
        }
        _ => return None,
    })
}
