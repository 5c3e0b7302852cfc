//! Booking GP appointments from free slots, on the local store.
//!
//! Operations (classified from the change): **book** (a new appointment
//! holding slots), **cancel** (to `cancelled`/`entered-in-error`: its slots
//! are free again), **amend** (comment/description), and the practice's
//! other changes (moving slots, arrived, fulfilled …). For every caller the
//! slots an appointment holds must exist, be free when claimed, lie on one
//! Schedule back to back with one service type and delivery channel, and
//! span exactly the appointment's `start`–`end`; claimed slots become
//! `busy` and released ones `free` in the same transaction, under a lock per
//! slot, so two bookings of one slot cannot both commit. Patients (and
//! proxies) also meet GP Connect's consumer rules and their practice's
//! booking rules (`workflow::practice`).

use std::collections::BTreeSet;

use chrono::Duration;
use serde_json::Value;

use super::workflows::{
    fhir_instant, now, query, read_ref, refuse, rewrite, status, Actor, Change,
};
use super::{ServiceError, ServiceResult};
use crate::model::ResourceType;
use crate::search::types::SearchQuery;
use crate::storage::{StoredResource, TxOps};
use crate::workflow::fhir::{self, extensions, instant_at, ref_id, ref_ids};
use crate::workflow::practice::{self, Rules};

pub const BOOKING_ORGANIZATION: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-BookingOrganization";
pub const DELIVERY_CHANNEL: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DeliveryChannel";
/// The longest free-slot search a patient may run (GP Connect's rule).
pub const MAX_SEARCH_DAYS: i64 = 14;

/// Statuses in which an appointment holds its slots.
pub fn holds_slots(status: &str) -> bool {
    matches!(
        status,
        "booked" | "arrived" | "checked-in" | "fulfilled" | "noshow"
    )
}

fn held(v: Option<&Value>) -> BTreeSet<String> {
    match v {
        Some(v) if holds_slots(status(v)) => ref_ids(v, "slot", "Slot").into_iter().collect(),
        _ => BTreeSet::new(),
    }
}

fn channel(v: &Value) -> Option<Value> {
    extensions(v, DELIVERY_CHANNEL)
        .next()
        .and_then(|e| e.get("valueCodeableConcept"))
        .map(|cc| {
            Value::Array(
                fhir::codings(cc)
                    .into_iter()
                    .map(|(s, c)| Value::String(format!("{s}|{c}")))
                    .collect(),
            )
        })
}

fn service_types(slot: &Value) -> Vec<Value> {
    slot.get("serviceType")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The practice rules of the Schedule `schedule` (through its Location
/// actor's managing Organization); defaults when it names no practice.
fn rules_of(tx: &mut dyn TxOps, schedule: &str) -> ServiceResult<Rules> {
    let Some((_, sched)) = read_ref(tx, ResourceType::Schedule, schedule)? else {
        return Ok(Rules::default());
    };
    for loc in ref_ids(&sched, "actor", "Location") {
        let Some((_, location)) = read_ref(tx, ResourceType::Location, &loc)? else {
            continue;
        };
        let Some(org) = location
            .get("managingOrganization")
            .and_then(|r| ref_id(r, "Organization"))
        else {
            continue;
        };
        if let Some((_, org)) = read_ref(tx, ResourceType::Organization, &org)? {
            return practice::parse(&org).map_err(|why| refuse("practice-booking-rules", why));
        }
    }
    Ok(Rules::default())
}

/// The rules of every write of an Appointment.
pub(crate) fn appointment(tx: &mut dyn TxOps, base: &str, change: Change<'_>) -> ServiceResult<()> {
    let actor = Actor::of(tx.ctx());
    let Change { old, new, .. } = change;
    let new: Option<&Value> = new.map(|v| &*v);
    match (actor, old.as_ref(), new) {
        (Actor::Patient, None, Some(n)) => patient_books(n)?,
        (Actor::Patient, Some(o), Some(n)) => patient_changes(o, n)?,
        (Actor::Patient, Some(_), None) => {
            return Err(refuse(
                "cancel",
                "a patient cancels an appointment (status cancelled with a cancelationReason) instead of deleting it",
            ))
        }
        _ => {}
    }
    if let (Some(o), Some(n)) = (old.as_ref(), new) {
        let cancelling = matches!(status(n), "cancelled") && status(o) != "cancelled";
        if cancelling && n.get("cancelationReason").is_none() {
            return Err(refuse(
                "cancel",
                "a cancelled appointment needs a cancelationReason",
            ));
        }
    }
    let before = held(old.as_ref());
    let after = held(new);
    let claimed: BTreeSet<&String> = after.difference(&before).collect();
    let released: BTreeSet<&String> = before.difference(&after).collect();
    let mut touched: Vec<&String> = claimed.iter().chain(released.iter()).copied().collect();
    touched.sort();
    for id in &touched {
        tx.lock(&format!("slot|{id}"))
            .map_err(super::transaction::storage_err)?;
    }
    // The slots the new content holds, as they are now.
    let mut slots: Vec<(String, StoredResource, Value)> = Vec::new();
    if let Some(n) = new.filter(|n| holds_slots(status(n))) {
        for id in ref_ids(n, "slot", "Slot") {
            let Some((s, v)) = read_ref(tx, ResourceType::Slot, &id)? else {
                return Err(refuse("slot", format!("Slot/{id} does not exist")));
            };
            if claimed.contains(&id) && status(&v) != "free" {
                return Err(ServiceError::Duplicate(format!(
                    "Slot/{id} is no longer free; choose another slot"
                )));
            }
            slots.push((id, s, v));
        }
        if !slots.is_empty()
            && (old.is_none() || !claimed.is_empty() || starts_moved(old.as_ref(), n))
        {
            check_slot_set(n, &slots)?;
        }
        if actor == Actor::Patient && old.is_none() {
            patient_slot_rules(tx, base, n, &slots)?;
        }
    }
    for (_, s, v) in slots.iter().filter(|(id, ..)| claimed.contains(id)) {
        let mut v = v.clone();
        v["status"] = Value::String("busy".into());
        rewrite(tx, base, s, v)?;
    }
    for id in released {
        if let Some((s, mut v)) = read_ref(tx, ResourceType::Slot, id)? {
            if status(&v) == "busy" {
                v["status"] = Value::String("free".into());
                rewrite(tx, base, &s, v)?;
            }
        }
    }
    Ok(())
}

fn starts_moved(old: Option<&Value>, new: &Value) -> bool {
    old.is_none_or(|o| o.get("start") != new.get("start") || o.get("end") != new.get("end"))
}

/// One Schedule, back to back, one service type and channel, and the
/// appointment spans them exactly.
fn check_slot_set(appt: &Value, slots: &[(String, StoredResource, Value)]) -> ServiceResult<()> {
    let mut spans = Vec::with_capacity(slots.len());
    for (id, _, v) in slots {
        let (Some(s), Some(e)) = (instant_at(v, "start"), instant_at(v, "end")) else {
            return Err(refuse("slot", format!("Slot/{id} has no start or end")));
        };
        spans.push((s, e, v));
    }
    spans.sort_by_key(|(s, ..)| *s);
    let first = spans[0].2;
    let schedule = first.get("schedule").and_then(|r| ref_id(r, "Schedule"));
    for w in spans.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.2.get("schedule").and_then(|r| ref_id(r, "Schedule")) != schedule {
            return Err(refuse(
                "slot",
                "the slots of one appointment must be on the same Schedule",
            ));
        }
        if a.1 != b.0 {
            return Err(refuse(
                "slot",
                "the slots of one appointment must be adjacent (each ends when the next starts)",
            ));
        }
        if service_types(b.2) != service_types(a.2) || channel(b.2) != channel(a.2) {
            return Err(refuse(
                "slot",
                "the slots of one appointment must have the same service type and delivery channel",
            ));
        }
    }
    let (start, end) = (spans[0].0, spans[spans.len() - 1].1);
    if instant_at(appt, "start") != Some(start) || instant_at(appt, "end") != Some(end) {
        return Err(refuse(
            "slot",
            format!(
                "Appointment.start and end must be the slots' start and end ({} to {})",
                fhir_instant(start).as_str().unwrap_or(""),
                fhir_instant(end).as_str().unwrap_or("")
            ),
        ));
    }
    Ok(())
}

/// GP Connect's consumer rules for a new booking.
fn patient_books(n: &Value) -> ServiceResult<()> {
    if status(n) != "booked" {
        return Err(refuse(
            "book",
            "a patient books an appointment with status booked",
        ));
    }
    if ref_ids(n, "slot", "Slot").is_empty() {
        return Err(refuse(
            "book",
            "a booking names the free slot(s) it takes (Appointment.slot)",
        ));
    }
    if crate::workflow::fhir::participant_patients(n).len() != 1 {
        return Err(refuse(
            "book",
            "a booking names exactly one Patient participant",
        ));
    }
    if extensions(n, BOOKING_ORGANIZATION).next().is_none() {
        return Err(refuse(
            "bookingOrganization",
            "a booking carries the booking organisation (Extension-UKCore-BookingOrganization)",
        ));
    }
    lengths(n)
}

fn lengths(n: &Value) -> ServiceResult<()> {
    for (field, max) in [("description", 100), ("comment", 500)] {
        if let Some(t) = n.get(field).and_then(Value::as_str) {
            if t.chars().count() > max {
                return Err(refuse(
                    field,
                    format!("{field} is at most {max} characters"),
                ));
            }
        }
    }
    Ok(())
}

/// What a patient may change: cancel (status and reason only) or amend
/// (comment and description only), of their own future booked appointment.
fn patient_changes(o: &Value, n: &Value) -> ServiceResult<()> {
    if status(o) != "booked" {
        return Err(refuse(
            "amend",
            format!(
                "an appointment with status {} cannot be changed by the patient",
                status(o)
            ),
        ));
    }
    if instant_at(o, "start").is_none_or(|s| s <= now()) {
        return Err(refuse(
            "amend",
            "only future appointments can be cancelled or amended",
        ));
    }
    let changed = fhir::changed(o, n);
    let allowed: &[&str] = match status(n) {
        "cancelled" => &["status", "cancelationReason"],
        "booked" => &["comment", "description"],
        other => {
            return Err(refuse(
                "amend",
                format!("a patient may cancel an appointment, not set it to {other}"),
            ))
        }
    };
    if let Some(bad) = changed.iter().find(|k| !allowed.contains(&k.as_str())) {
        return Err(refuse(
            if status(n) == "cancelled" { "cancel" } else { "amend" },
            format!(
                "{bad} cannot be changed here: a cancellation changes only status and cancelationReason, an amendment only comment and description"
            ),
        ));
    }
    lengths(n)
}

/// The booking window and the practice's rules for a patient's booking.
fn patient_slot_rules(
    tx: &mut dyn TxOps,
    base: &str,
    n: &Value,
    slots: &[(String, StoredResource, Value)],
) -> ServiceResult<()> {
    let Some((_, _, first)) = slots.iter().min_by_key(|(_, _, v)| instant_at(v, "start")) else {
        return Ok(());
    };
    let schedule = first
        .get("schedule")
        .and_then(|r| ref_id(r, "Schedule"))
        .unwrap_or_default();
    let rules = rules_of(tx, &schedule)?;
    let t = now();
    let start = instant_at(first, "start").unwrap_or(t);
    if start <= t {
        return Err(refuse("bookingWindow", "the slot is in the past"));
    }
    if start < t + Duration::minutes(i64::from(rules.lead_minutes)) {
        return Err(refuse(
            "minimumLeadMinutes",
            format!(
                "this practice books at least {} minutes ahead",
                rules.lead_minutes
            ),
        ));
    }
    if start > t + Duration::days(i64::from(rules.horizon_days)) {
        return Err(refuse(
            "bookingHorizonDays",
            format!(
                "this practice books at most {} days ahead",
                rules.horizon_days
            ),
        ));
    }
    let types = service_types(first);
    if !rules.online.is_empty() && !rules.online.iter().any(|m| m.matches(&types)) {
        return Err(refuse(
            "onlineServiceType",
            "this service type cannot be booked online at this practice",
        ));
    }
    let patient = crate::workflow::fhir::participant_patients(n)
        .pop()
        .unwrap_or_default();
    if let Some(max) = rules.max_future {
        tx.lock(&format!("booking|patient|{patient}"))
            .map_err(super::transaction::storage_err)?;
        let q = query(
            ResourceType::Appointment,
            &[
                ("patient", format!("Patient/{patient}")),
                ("status", "booked".into()),
                (
                    "date",
                    format!("ge{}", fhir_instant(t).as_str().unwrap_or("")),
                ),
            ],
            base,
        )?;
        let found = tx
            .find(&q, max as usize + 1)
            .map_err(super::transaction::storage_err)?;
        if found.len() >= max as usize {
            return Err(refuse(
                "maxFutureAppointments",
                format!(
                    "this practice lets a patient hold at most {max} future booked appointments"
                ),
            ));
        }
    }
    if let Some(rule) = rules.triage.iter().find(|r| r.service.matches(&types)) {
        super::triage::require_completed(tx, n, &patient, rule)?;
    }
    Ok(())
}

/// The rules of every write of a Slot: a slot an appointment holds stays
/// busy (set free or deleted only by cancelling the appointment).
pub(crate) fn slot(tx: &mut dyn TxOps, change: Change<'_>) -> ServiceResult<()> {
    let Some(old) = change.old.as_ref() else {
        return Ok(());
    };
    if status(old) != "busy" || change.new.as_deref().is_some_and(|n| status(n) == "busy") {
        return Ok(());
    }
    tx.lock(&format!("slot|{}", change.id))
        .map_err(super::transaction::storage_err)?;
    let q = query(
        ResourceType::Appointment,
        &[
            ("slot", format!("Slot/{}", change.id)),
            (
                "status",
                "booked,arrived,checked-in,fulfilled,noshow".into(),
            ),
        ],
        "",
    )?;
    let holders = tx.find(&q, 1).map_err(super::transaction::storage_err)?;
    if let Some(a) = holders.first() {
        return Err(ServiceError::Conflict(format!(
            "Slot/{} is held by Appointment/{}; cancel the appointment to free it",
            change.id, a.id
        )));
    }
    Ok(())
}

/// A patient's free-slot search (`status=free`): `start` bounded on both
/// sides at most [`MAX_SEARCH_DAYS`] apart (422 otherwise), and never a slot
/// in the past (the query gains `start ≥ now`). Applies to the parsed
/// query, so a search, a `_search` form and a bundle's GET entry alike.
/// With the practice's `rules` (a search naming one practice), the results
/// are also its bookable window.
pub(crate) fn free_slot_query(q: &mut SearchQuery, rules: Option<&Rules>) -> ServiceResult<()> {
    use crate::search::types::{DateRange, DateValue, Predicate, Prefix, Test};
    if q.resource_type != ResourceType::Slot {
        return Ok(());
    }
    let free = q.predicates.iter().any(|p| match p {
        Predicate::Index {
            param,
            test: Test::Token(vs),
            not: false,
        } if param.code == "status" => vs.iter().any(|v| v.code.as_deref() == Some("free")),
        _ => false,
    });
    if !free {
        return Ok(());
    }
    let start_param = crate::search::registry::lookup(ResourceType::Slot, "start")
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("Slot.start is not registered")))?;
    let (mut lo, mut hi) = (None::<i64>, None::<i64>);
    for p in &q.predicates {
        if let Predicate::Index {
            param,
            test: Test::Date(vs),
            not: false,
        } = p
        {
            if param.code != "start" {
                continue;
            }
            for v in vs {
                match v.prefix {
                    Prefix::Ge | Prefix::Gt | Prefix::Sa => {
                        lo = Some(lo.map_or(v.range.lo, |x| x.max(v.range.lo)))
                    }
                    // GP Connect counts from the first date to the last.
                    Prefix::Le | Prefix::Lt | Prefix::Eb => {
                        hi = Some(hi.map_or(v.range.lo, |x| x.min(v.range.lo)))
                    }
                    Prefix::Eq => {
                        lo = Some(lo.map_or(v.range.lo, |x| x.max(v.range.lo)));
                        hi = Some(hi.map_or(v.range.hi, |x| x.min(v.range.hi)));
                    }
                    _ => {}
                }
            }
        }
    }
    let window = |msg: String| {
        ServiceError::Unprocessable(vec![super::OoIssue::error("invalid", msg).at("start")])
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Err(window(format!(
            "A free-slot search needs start=ge… and start=le…, at most {MAX_SEARCH_DAYS} days apart"
        )));
    };
    if hi - lo > Duration::days(MAX_SEARCH_DAYS).num_milliseconds() {
        return Err(window(format!(
            "A free-slot search covers at most {MAX_SEARCH_DAYS} days (start=ge… to start=le…)"
        )));
    }
    let t = now();
    let (from, until) = match rules {
        Some(r) => (
            t + Duration::minutes(i64::from(r.lead_minutes)),
            Some(t + Duration::days(i64::from(r.horizon_days))),
        ),
        None => (t, None),
    };
    let bound = |prefix, at: chrono::DateTime<chrono::Utc>| {
        let ms = at.timestamp_millis();
        Predicate::Index {
            param: start_param,
            test: Test::Date(vec![DateValue {
                prefix,
                range: DateRange { lo: ms, hi: ms + 1 },
            }]),
            not: false,
        }
    };
    q.predicates.push(bound(Prefix::Ge, from));
    if let Some(u) = until {
        q.predicates.push(bound(Prefix::Le, u));
    }
    Ok(())
}

/// The parameter naming a practice in a free-slot search.
pub const PRACTICE_PARAM: &str = "schedule.actor:Location.organization.identifier";

/// The value of the one practice a free-slot search names (`system|code`
/// or a bare code; `None`: none, several, or an OR list).
pub(crate) fn practice_param(pairs: &[(String, String)]) -> Option<&String> {
    let mut named = pairs
        .iter()
        .filter(|(k, _)| k == PRACTICE_PARAM)
        .map(|(_, v)| v);
    match (named.next(), named.next()) {
        (Some(v), None) if !v.contains(',') => Some(v),
        _ => None,
    }
}

impl super::Service {
    /// The booking rules of the one practice a free-slot search names by ODS
    /// code (`None`: it names none, several, or an unknown one).
    pub(crate) async fn practice_rules(
        &self,
        pairs: &[(String, String)],
    ) -> ServiceResult<Option<Rules>> {
        let Some(ods) = practice_param(pairs) else {
            return Ok(None);
        };
        let Some(searcher) = self.backend.search() else {
            return Ok(None);
        };
        let q = super::workflows::query(
            ResourceType::Organization,
            &[("identifier", ods.clone())],
            "",
        )?;
        let ctx = crate::context::RequestContext::system(
            "booking-window",
            std::sync::Arc::new(crate::policy::AllowAll),
        );
        let page = searcher.search(&ctx, &q).await?;
        match page.resources.as_slice() {
            [org] => {
                let v = super::workflows::content(org)?;
                Ok(practice::parse(&v).ok())
            }
            _ => Ok(None),
        }
    }
}
