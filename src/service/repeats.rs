//! Repeat prescriptions, on the local store. A repeat authorisation is a
//! `MedicationRequest` `intent=plan` (course continuous or
//! continuous-repeating-dispensing) with UK Core's repeat information; each
//! issue is an `intent=order` `basedOn` the plan. Operations on a renewal
//! `Task` (SNOMED 103742009): **request** (the patient, or a proxy, asks for
//! the next issue), **cancel** (the patient withdraws an unactioned
//! request), **approve** (the practice completes it: the issue is created
//! and the plan's issued count increments, in one transaction) and
//! **reject** (with a `statusReason`). One open request per plan, one issue
//! per approval, serialised per plan and per Task.

use serde_json::{json, Value};

use super::workflows::{
    fhir_instant, now, query, read_ref, refuse, rewrite, status, Actor, Change,
};
use super::{ServiceError, ServiceResult};
use crate::model::{LogicalId, ResourceType};
use crate::storage::{CreateRequest, NewContent, TxOps};
use crate::workflow::fhir::{extensions, has_code, ref_id, until};

pub const RENEWAL_CODE: &str = "103742009";
pub const SNOMED: &str = "http://snomed.info/sct";
pub const REPEAT_INFORMATION: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation";
pub const REVIEW_DATE: &str =
    "https://fhirbridge.dev/fhir/StructureDefinition/medication-review-date";

/// Task statuses of a request still waiting for the practice.
const OPEN: [&str; 6] = [
    "requested",
    "received",
    "accepted",
    "in-progress",
    "ready",
    "on-hold",
];
const OPEN_LIST: &str = "requested,received,accepted,in-progress,ready,on-hold";

fn is_renewal(v: &Value) -> bool {
    v.get("code")
        .is_some_and(|c| has_code(c, Some(SNOMED), RENEWAL_CODE))
}

fn repeat_info<'a>(plan: &'a Value, part: &str) -> Option<&'a Value> {
    extensions(plan, REPEAT_INFORMATION)
        .next()?
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(part))
}

fn issued(plan: &Value) -> u64 {
    repeat_info(plan, "numberOfPrescriptionsIssued")
        .and_then(|e| e.get("valueUnsignedInt"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn allowed(plan: &Value) -> Option<u64> {
    plan.pointer("/dispenseRequest/numberOfRepeatsAllowed")
        .and_then(Value::as_u64)
}

/// Why `plan` cannot be issued again now (`None`: it can).
fn not_issuable(plan: &Value) -> Option<(&'static str, String)> {
    if plan.get("intent").and_then(Value::as_str) != Some("plan") {
        return Some((
            "plan",
            "the focus is not a repeat authorisation (MedicationRequest intent=plan)".into(),
        ));
    }
    let repeat = plan.get("courseOfTherapyType").is_some_and(|c| {
        has_code(c, None, "continuous") || has_code(c, None, "continuous-repeating-dispensing")
    });
    if !repeat {
        return Some((
            "courseOfTherapyType",
            "the authorisation is not a repeat (continuous or continuous-repeating-dispensing)"
                .into(),
        ));
    }
    if status(plan) != "active" {
        return Some((
            "status",
            format!("the authorisation is {}, not active", status(plan)),
        ));
    }
    let t = now();
    let expiry = repeat_info(plan, "authorisationExpiryDate")
        .and_then(|e| e.get("valueDateTime"))
        .and_then(Value::as_str);
    if expiry.and_then(until).is_some_and(|e| e <= t) {
        return Some((
            "authorisationExpiryDate",
            "the authorisation has expired".into(),
        ));
    }
    let review = extensions(plan, REVIEW_DATE)
        .next()
        .and_then(|e| e.get("valueDate").or_else(|| e.get("valueDateTime")))
        .and_then(Value::as_str);
    if review.and_then(until).is_some_and(|e| e <= t) {
        return Some((
            "reviewDate",
            "the medication is due a review before it can be issued again".into(),
        ));
    }
    if let Some(max) = allowed(plan) {
        if issued(plan) >= max {
            return Some((
                "numberOfRepeatsAllowed",
                format!("all {max} issues of this authorisation have been used"),
            ));
        }
    }
    None
}

/// The plan a renewal Task names, locked, with its content.
fn plan_of(
    tx: &mut dyn TxOps,
    task: &Value,
) -> ServiceResult<(crate::storage::StoredResource, Value, String)> {
    let Some(id) = task
        .get("focus")
        .and_then(|f| ref_id(f, "MedicationRequest"))
    else {
        return Err(refuse(
            "focus",
            "a repeat request's focus is the MedicationRequest authorising the repeat",
        ));
    };
    tx.lock(&format!("repeat|plan|{id}"))
        .map_err(super::transaction::storage_err)?;
    match read_ref(tx, ResourceType::MedicationRequest, &id)? {
        Some((s, v)) => Ok((s, v, id)),
        None => Err(refuse(
            "focus",
            format!("MedicationRequest/{id} does not exist"),
        )),
    }
}

/// The rules of every write of a Task (renewal Tasks only).
pub(crate) fn task(tx: &mut dyn TxOps, base: &str, change: Change<'_>) -> ServiceResult<()> {
    let Change {
        id,
        old,
        new,
        bridge,
        ..
    } = change;
    let renewal = old.as_ref().is_some_and(is_renewal) || new.as_deref().is_some_and(is_renewal);
    if !renewal {
        return Ok(());
    }
    let actor = Actor::of(tx.ctx());
    let Some(new) = new else {
        if actor == Actor::Patient {
            return Err(refuse(
                "cancel",
                "a patient cancels a repeat request (status cancelled) instead of deleting it",
            ));
        }
        return Ok(());
    };
    match old {
        None => {
            let remote = new
                .get("focus")
                .and_then(|f| ref_id(f, "MedicationRequest"))
                .and_then(|p| bridge.remote_id(&p).map(|(s, _)| s.clone()));
            match remote {
                Some(s) => request_bridged(tx, base, actor, &s, id, new),
                None => request(tx, base, actor, new),
            }
        }
        Some(old) => {
            let (from, to) = (status(&old).to_owned(), status(new).to_owned());
            if !OPEN.contains(&from.as_str()) {
                return Err(ServiceError::Conflict(format!(
                    "Task/{id} has already been actioned ({from}) and cannot change"
                )));
            }
            if actor == Actor::Patient {
                let changed = crate::workflow::fhir::changed(&old, new);
                if from != "requested" || to != "cancelled" {
                    return Err(refuse(
                        "cancel",
                        "a patient may only cancel a request the practice has not started on",
                    ));
                }
                if let Some(bad) = changed.iter().find(|k| {
                    !matches!(
                        k.as_str(),
                        "status" | "statusReason" | "note" | "lastModified"
                    )
                }) {
                    return Err(refuse(
                        "cancel",
                        format!("{bad} cannot be changed when cancelling"),
                    ));
                }
                return Ok(());
            }
            match to.as_str() {
                "completed" => approve(tx, base, id, new),
                "rejected" if new.get("statusReason").is_none() => {
                    Err(refuse("reject", "a rejected request needs a statusReason"))
                }
                _ => Ok(()),
            }
        }
    }
}

/// A new request: the plan is the patient's, issuable, and has no other
/// open request.
fn request(tx: &mut dyn TxOps, base: &str, actor: Actor, task: &Value) -> ServiceResult<()> {
    let st = status(task);
    if actor == Actor::Patient && st != "requested" {
        return Err(refuse(
            "request",
            "a patient's repeat request starts as status requested",
        ));
    }
    if !OPEN.contains(&st) {
        // A record of a past request (a GP system's push, an import).
        return Ok(());
    }
    // Absent and another patient's answer alike (no oracle over ids).
    let not_theirs = || {
        refuse(
            "focus",
            "the focus is not a repeat authorisation of this patient",
        )
    };
    let (_, plan, plan_id) = plan_of(tx, task).map_err(|e| match e {
        ServiceError::Unprocessable(_) => not_theirs(),
        other => other,
    })?;
    let patient = task.get("for").and_then(|f| ref_id(f, "Patient"));
    if patient.is_none() || plan.get("subject").and_then(|s| ref_id(s, "Patient")) != patient {
        return Err(not_theirs());
    }
    if let Some((rule, why)) = not_issuable(&plan) {
        return Err(refuse(rule, why));
    }
    no_open_request(tx, base, &plan_id)
}

/// 409 when plan `plan_id` already has an open renewal Task (the caller
/// holds the plan's lock).
fn no_open_request(tx: &mut dyn TxOps, base: &str, plan_id: &str) -> ServiceResult<()> {
    let q = query(
        ResourceType::Task,
        &[
            ("focus", format!("MedicationRequest/{plan_id}")),
            ("status", OPEN_LIST.into()),
            ("code", format!("{SNOMED}|{RENEWAL_CODE}")),
        ],
        base,
    )?;
    if let Some(open) = tx
        .find(&q, 1)
        .map_err(super::transaction::storage_err)?
        .first()
    {
        return Err(ServiceError::Duplicate(format!(
            "this medication already has an open repeat request (Task/{}); wait for the practice or cancel it",
            open.id
        )));
    }
    Ok(())
}

/// The practice (ODS code) of local Patient `id`, read inside the transaction.
fn practice_in_tx(tx: &mut dyn TxOps, id: &str) -> ServiceResult<Option<String>> {
    use crate::workflow::fhir::{identifier, registered, Registered, ODS_CODE};
    let Some((_, p)) = read_ref(tx, ResourceType::Patient, id)? else {
        return Ok(None);
    };
    for gp in registered(&p) {
        match gp {
            Registered::Ods(ods) => return Ok(Some(ods)),
            Registered::Organization(org) => {
                if let Some((_, o)) = read_ref(tx, ResourceType::Organization, &org)? {
                    if let Some(ods) = identifier(&o, ODS_CODE) {
                        return Ok(Some(ods.to_owned()));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// A request for a plan held by a practice's GP system: checked as far as
/// the local record allows (the patient's practice is that supplier's, no
/// other open request for the plan), queued in the outbox in this
/// transaction, and delivered by the job runner; the GP system checks the
/// plan itself, and a refusal comes back as the Task's `rejected` status.
fn request_bridged(
    tx: &mut dyn TxOps,
    base: &str,
    actor: Actor,
    supplier: &crate::bridge::Supplier,
    id: &LogicalId,
    task: &mut Value,
) -> ServiceResult<()> {
    use crate::bridge::outbox;
    if status(task) != "requested" {
        return Err(refuse(
            "request",
            "a repeat request for a plan held by the practice's GP system starts as status requested",
        ));
    }
    let _ = actor;
    let plan = task
        .get("focus")
        .and_then(|f| ref_id(f, "MedicationRequest"))
        .unwrap_or_default();
    tx.lock(&format!("repeat|plan|{plan}"))
        .map_err(super::transaction::storage_err)?;
    let not_theirs = || {
        refuse(
            "focus",
            "the focus is not a repeat authorisation of this patient",
        )
    };
    let patient = task
        .get("for")
        .and_then(|f| ref_id(f, "Patient"))
        .ok_or_else(not_theirs)?;
    let served =
        practice_in_tx(tx, &patient)?.is_some_and(|ods| supplier.cfg.ods_codes.contains(&ods));
    if !served || !supplier.holds(ResourceType::Task) {
        return Err(not_theirs());
    }
    no_open_request(tx, base, &plan)?;
    let key = uuid::Uuid::new_v4().to_string();
    let ident = json!({"system": outbox::IDEMPOTENCY_SYSTEM, "value": key});
    match task.get_mut("identifier").and_then(Value::as_array_mut) {
        Some(list) => {
            list.retain(|i| {
                i.get("system").and_then(Value::as_str) != Some(outbox::IDEMPOTENCY_SYSTEM)
            });
            list.push(ident);
        }
        None => task["identifier"] = json!([ident]),
    }
    task["businessStatus"] = outbox::business_status("queued");
    tx.enqueue(outbox::new_job(
        supplier.name(),
        id.as_str(),
        supplier.cfg.outbox_max_attempts,
    ))
    .map_err(super::transaction::storage_err)?;
    Ok(())
}

/// Approval: the issue, the plan's count and the Task's output, together.
fn approve(
    tx: &mut dyn TxOps,
    base: &str,
    task_id: &LogicalId,
    task: &mut Value,
) -> ServiceResult<()> {
    let (plan_s, mut plan, plan_id) = plan_of(tx, task)?;
    if let Some((rule, why)) = not_issuable(&plan) {
        return Err(refuse(rule, why));
    }
    let order_id = LogicalId::generate();
    let mut order = json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "basedOn": [{"reference": format!("MedicationRequest/{plan_id}")}],
        "authoredOn": fhir_instant(now()),
    });
    for k in [
        "meta",
        "category",
        "medicationCodeableConcept",
        "medicationReference",
        "subject",
        "requester",
        "dosageInstruction",
        "substitution",
        "courseOfTherapyType",
        "note",
    ] {
        if let Some(v) = plan.get(k) {
            order[k] = v.clone();
        }
    }
    if let Some(m) = order.get_mut("meta").and_then(Value::as_object_mut) {
        m.retain(|k, _| k == "profile");
    }
    if let Some(d) = plan.get("dispenseRequest").and_then(Value::as_object) {
        let mut d = d.clone();
        d.remove("numberOfRepeatsAllowed");
        order["dispenseRequest"] = Value::Object(d);
    }
    // The pharmacy the patient nominated on the request dispenses this issue.
    let pharmacy = task
        .get("input")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| i.pointer("/type/text").and_then(Value::as_str) == Some("pharmacy"))
        .and_then(|i| i.get("valueReference"))
        .cloned();
    if let Some(p) = pharmacy {
        order["dispenseRequest"]["performer"] = p;
    }
    // The approving clinician signs the issue when the token names one.
    if let crate::context::Principal::Caller(c) = &tx.ctx().principal {
        if let Some((ty @ (ResourceType::Practitioner | ResourceType::PractitionerRole), id)) =
            &c.fhir_user
        {
            order["requester"] = json!({"reference": format!("{ty}/{id}")});
        }
    }
    let indexes = super::write::extract(ResourceType::MedicationRequest, &order, base);
    tx.create(
        CreateRequest {
            resource_type: ResourceType::MedicationRequest,
            content: NewContent {
                resource: order,
                indexes,
            },
            if_none_exist: None,
        },
        Some(order_id.clone()),
    )
    .map_err(super::transaction::storage_err)?;
    // The plan's issued count.
    let count = issued(&plan) + 1;
    set_issued(&mut plan, count);
    rewrite(tx, base, &plan_s, plan)?;
    // The Task names what it issued.
    let out = json!({
        "type": {"text": "issued prescription"},
        "valueReference": {"reference": format!("MedicationRequest/{order_id}")},
    });
    match task.get_mut("output").and_then(Value::as_array_mut) {
        Some(a) => a.push(out),
        None => task["output"] = json!([out]),
    }
    tracing::debug!(task = %task_id, "repeat request approved: one issue created");
    Ok(())
}

fn set_issued(plan: &mut Value, n: u64) {
    let part = json!({"url": "numberOfPrescriptionsIssued", "valueUnsignedInt": n});
    let exts = plan
        .as_object_mut()
        .map(|o| o.entry("extension").or_insert_with(|| json!([])));
    let Some(Value::Array(exts)) = exts else {
        return;
    };
    let info = match exts
        .iter()
        .position(|e| e.get("url").and_then(Value::as_str) == Some(REPEAT_INFORMATION))
    {
        Some(i) => &mut exts[i],
        None => {
            exts.push(json!({"url": REPEAT_INFORMATION, "extension": []}));
            let last = exts.len() - 1;
            &mut exts[last]
        }
    };
    let parts = info
        .as_object_mut()
        .map(|o| o.entry("extension").or_insert_with(|| json!([])));
    let Some(Value::Array(parts)) = parts else {
        return;
    };
    match parts
        .iter()
        .position(|p| p.get("url").and_then(Value::as_str) == Some("numberOfPrescriptionsIssued"))
    {
        Some(i) => parts[i] = part,
        None => parts.insert(0, part),
    }
}
