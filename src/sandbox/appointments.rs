//! Appointment Management: book, read, amend, cancel and retrieve a
//! patient's appointments (`pages/appointments/appointments_use_case_*.md`).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::outcome::GpcError;
use super::ssp::CANCEL_APPOINTMENT;
use super::store::{
    meta, profile_for, version_of, SlotRec, Store, BOOKING_ORG_URL, CANCELLATION_REASON_URL,
    DELIVERY_CHANNEL_URL, ODS_SYSTEM, PRACTITIONER_ROLE_URL,
};
use super::time::{parse_date, parse_instant, uk, uk_date};
use super::{searchset, Reply};

pub const MAX_DESCRIPTION: usize = 100;
pub const MAX_COMMENT: usize = 500;

fn check_type_and_profile(body: &Value) -> Result<(), GpcError> {
    if body["resourceType"].as_str() != Some("Appointment") {
        return Err(GpcError::invalid_resource(
            "the request body is not an Appointment",
        ));
    }
    let profile = profile_for("Appointment");
    let has_profile = body["meta"]["profile"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p.as_str() == Some(profile.as_str())));
    if !has_profile {
        return Err(GpcError::invalid_resource(format!(
            "Appointment.meta.profile must include {profile}"
        )));
    }
    if body.get("reason").is_some() || body.get("specialty").is_some() {
        return Err(GpcError::invalid_resource(
            "Appointment.reason and Appointment.specialty must not be sent",
        ));
    }
    Ok(())
}

/// `description` (mandatory, at most 100 characters) and `comment` (at
/// most 500): never truncated, refused when longer.
fn check_texts(body: &Value) -> Result<(), GpcError> {
    match body.get("description") {
        Some(Value::String(d)) if !d.trim().is_empty() => {
            let n = d.chars().count();
            if n > MAX_DESCRIPTION {
                return Err(GpcError::invalid_resource(format!(
                    "Appointment.description has {n} characters; at most {MAX_DESCRIPTION} can be stored"
                )));
            }
        }
        _ => {
            return Err(GpcError::invalid_resource(
                "Appointment.description is required",
            ))
        }
    }
    match body.get("comment") {
        None => {}
        Some(Value::String(c)) => {
            let n = c.chars().count();
            if n > MAX_COMMENT {
                return Err(GpcError::invalid_resource(format!(
                    "Appointment.comment has {n} characters; at most {MAX_COMMENT} can be stored"
                )));
            }
        }
        Some(_) => {
            return Err(GpcError::invalid_resource(
                "Appointment.comment is not a string",
            ))
        }
    }
    Ok(())
}

fn instant(body: &Value, field: &str) -> Result<DateTime<Utc>, GpcError> {
    body[field].as_str().and_then(parse_instant).ok_or_else(|| {
        GpcError::invalid_resource(format!(
            "Appointment.{field} is required as a dateTime with a time zone"
        ))
    })
}

/// The bookingOrganisation extension and its contained Organization: ODS
/// identifier, name and telecom.
fn check_booking_organisation(body: &Value) -> Result<(), GpcError> {
    let ext = body["extension"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["url"].as_str() == Some(BOOKING_ORG_URL))
        })
        .ok_or_else(|| {
            GpcError::invalid_resource("the bookingOrganisation extension is required")
        })?;
    let reference = ext["valueReference"]["reference"]
        .as_str()
        .unwrap_or_default();
    let Some(local) = reference.strip_prefix('#') else {
        return Err(GpcError::invalid_resource(
            "the bookingOrganisation extension must reference a contained Organization (#id)",
        ));
    };
    let org = body["contained"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|r| {
                r["resourceType"].as_str() == Some("Organization")
                    && r["id"].as_str() == Some(local)
            })
        })
        .ok_or_else(|| {
            GpcError::invalid_resource(format!(
                "no contained Organization with id {local} for the bookingOrganisation extension"
            ))
        })?;
    let has_ods = org["identifier"].as_array().is_some_and(|ids| {
        ids.iter().any(|i| {
            i["system"].as_str() == Some(ODS_SYSTEM)
                && i["value"].as_str().is_some_and(|v| !v.is_empty())
        })
    });
    let named = org["name"].as_str().is_some_and(|n| !n.trim().is_empty());
    let telecom = org["telecom"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["value"].as_str().is_some_and(|v| !v.is_empty()))
    });
    if !(has_ods && named && telecom) {
        return Err(GpcError::invalid_resource(
            "the booking Organization needs an ODS code identifier, a name and telecom",
        ));
    }
    Ok(())
}

/// The participants by kind: exactly one Patient, one Location, at most one
/// Practitioner; every participant has an actor reference and a status.
struct Participants {
    patient: String,
    location: String,
    practitioner: Option<String>,
}

fn participants(body: &Value) -> Result<Participants, GpcError> {
    let list = body["participant"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| GpcError::invalid_resource("Appointment.participant is required"))?;
    let (mut patients, mut locations, mut practitioners) = (Vec::new(), Vec::new(), Vec::new());
    for p in list {
        let reference = p["actor"]["reference"].as_str().ok_or_else(|| {
            GpcError::invalid_resource("every Appointment.participant needs an actor reference")
        })?;
        if p["status"].as_str().is_none() {
            return Err(GpcError::invalid_resource(
                "every Appointment.participant needs a status",
            ));
        }
        match reference.split_once('/') {
            Some(("Patient", id)) => patients.push(id.to_string()),
            Some(("Location", id)) => locations.push(id.to_string()),
            Some(("Practitioner", id)) => practitioners.push(id.to_string()),
            _ => {
                return Err(GpcError::invalid_resource(format!(
                    "participant actor {reference} is not a Patient, Location or Practitioner"
                )))
            }
        }
    }
    let one = |v: Vec<String>, what: &str| -> Result<String, GpcError> {
        match <[String; 1]>::try_from(v) {
            Ok([id]) => Ok(id),
            Err(_) => Err(GpcError::invalid_resource(format!(
                "the Appointment needs exactly one {what} participant"
            ))),
        }
    };
    let patient = one(patients, "Patient")?;
    let location = one(locations, "Location")?;
    if practitioners.len() > 1 {
        return Err(GpcError::invalid_resource(
            "the Appointment may have at most one Practitioner participant",
        ));
    }
    Ok(Participants {
        patient,
        location,
        practitioner: practitioners.pop(),
    })
}

/// The slots an Appointment names, checked as one booking: they exist, are
/// distinct, adjacent (each starts when the previous ends), of one Schedule,
/// delivery channel and service type. Ordered by start.
fn booking_slots<'a>(store: &'a Store, body: &Value) -> Result<Vec<&'a SlotRec>, GpcError> {
    let refs = body["slot"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GpcError::invalid_resource("Appointment.slot is required"))?;
    let mut slots: Vec<&SlotRec> = Vec::new();
    for r in refs {
        let reference = r["reference"].as_str().unwrap_or_default();
        let id = reference.strip_prefix("Slot/").ok_or_else(|| {
            GpcError::invalid_resource(format!("slot reference {reference} is not Slot/[id]"))
        })?;
        let slot = store.slots.get(id).ok_or_else(|| {
            GpcError::reference_not_found(format!(
                "Reference to Slot/{id} - no such slot exists at the server"
            ))
        })?;
        if slots.iter().any(|s| s.id == slot.id) {
            return Err(GpcError::invalid_resource(format!(
                "Slot/{id} is referenced twice"
            )));
        }
        slots.push(slot);
    }
    slots.sort_by_key(|s| s.start);
    for pair in slots.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.start != a.end {
            return Err(GpcError::invalid_resource(format!(
                "Slot/{} and Slot/{} are not adjacent",
                a.id, b.id
            )));
        }
        if a.schedule != b.schedule || a.channel != b.channel || a.service_type != b.service_type {
            return Err(GpcError::invalid_resource(format!(
                "Slot/{} and Slot/{} differ in schedule, delivery channel or service type",
                a.id, b.id
            )));
        }
    }
    Ok(slots)
}

/// Book an appointment (`POST /Appointment`). Atomic: the caller holds the
/// store's lock from the first check to the last write.
pub fn book(
    store: &mut Store,
    body: &Value,
    now: DateTime<Utc>,
    base: &str,
) -> Result<Reply, GpcError> {
    check_type_and_profile(body)?;
    if body["status"].as_str() != Some("booked") {
        return Err(GpcError::invalid_resource(
            "Appointment.status must be booked",
        ));
    }
    let start = instant(body, "start")?;
    let end = instant(body, "end")?;
    instant(body, "created")?;
    check_texts(body)?;
    check_booking_organisation(body)?;
    let who = participants(body)?;
    let patient_ok = store
        .get("Patient", &who.patient)
        .is_some_and(|p| p["active"] == json!(true));
    if !patient_ok {
        return Err(GpcError::reference_not_found(format!(
            "Reference to Patient/{} - no such patient exists at the server",
            who.patient
        )));
    }
    let slots = booking_slots(store, body)?;
    let (first, last) = (slots[0], slots[slots.len() - 1]);
    if start != first.start || end != last.end {
        return Err(GpcError::invalid_resource(format!(
            "Appointment start/end ({}, {}) do not match the slots ({}, {})",
            uk(start),
            uk(end),
            uk(first.start),
            uk(last.end)
        )));
    }
    if first.start <= now {
        return Err(GpcError::invalid_resource(
            "the appointment starts in the past; only future appointments can be booked",
        ));
    }
    let schedule = store
        .get("Schedule", &first.schedule)
        .cloned()
        .ok_or_else(|| GpcError::internal(format!("Schedule/{} is missing", first.schedule)))?;
    let actor = |prefix: &str| -> Option<String> {
        schedule["actor"].as_array()?.iter().find_map(|a| {
            a["reference"]
                .as_str()?
                .strip_prefix(prefix)
                .map(str::to_string)
        })
    };
    let (location, practitioner) = (actor("Location/"), actor("Practitioner/"));
    if location.as_deref() != Some(who.location.as_str()) {
        return Err(GpcError::invalid_resource(format!(
            "Location/{} is not where the slots' schedule takes place",
            who.location
        )));
    }
    if let Some(p) = &who.practitioner {
        if practitioner.as_deref() != Some(p.as_str()) {
            return Err(GpcError::invalid_resource(format!(
                "Practitioner/{p} is not the practitioner of the slots' schedule"
            )));
        }
    }
    if let Some(busy) = slots.iter().find(|s| !s.free) {
        return Err(GpcError::duplicate_rejected(format!(
            "Slot/{} is no longer free",
            busy.id
        )));
    }
    let channel = first.channel;
    let service_type = first.service_type.clone();
    let slot_ids: Vec<String> = slots.iter().map(|s| s.id.clone()).collect();

    let id = format!("appt-{}", store.next_appointment);
    store.next_appointment += 1;
    let mut appt = body.clone();
    let obj = appt
        .as_object_mut()
        .ok_or_else(|| GpcError::internal("not an object"))?;
    obj.remove("meta");
    obj.insert("id".into(), json!(id));
    obj.insert("meta".into(), meta("Appointment", 1, now));
    let mut extensions: Vec<Value> = obj
        .get("extension")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let url = e["url"].as_str();
            url != Some(DELIVERY_CHANNEL_URL) && url != Some(PRACTITIONER_ROLE_URL)
        })
        .collect();
    if let Some(role) = schedule["extension"].as_array().and_then(|e| {
        e.iter()
            .find(|e| e["url"].as_str() == Some(PRACTITIONER_ROLE_URL))
    }) {
        extensions.push(role.clone());
    }
    extensions.push(json!({"url": DELIVERY_CHANNEL_URL, "valueCode": channel}));
    obj.insert("extension".into(), Value::Array(extensions));
    obj.insert("serviceType".into(), json!([{"text": service_type}]));
    if let Some(category) = schedule.get("serviceCategory") {
        obj.insert("serviceCategory".into(), category.clone());
    }
    obj.insert("start".into(), json!(uk(start)));
    obj.insert("end".into(), json!(uk(end)));
    if who.practitioner.is_none() {
        if let (Some(p), Some(list)) = (
            practitioner,
            obj.get_mut("participant").and_then(Value::as_array_mut),
        ) {
            list.push(
                json!({"actor": {"reference": format!("Practitioner/{p}")}, "status": "accepted"}),
            );
        }
    }
    for sid in &slot_ids {
        if let Some(s) = store.slots.get_mut(sid) {
            s.set_free(false, now);
        }
    }
    store.put(appt.clone());
    store.stats.appointments_booked += 1;
    Ok(Reply::created(
        appt,
        format!("{base}/Appointment/{id}/_history/1"),
    ))
}

/// Read an appointment: future appointments only (422 `INVALID_RESOURCE`
/// for one that has started; the spec asks for an error and names none).
pub fn read(store: &Store, id: &str, now: DateTime<Utc>) -> Result<Reply, GpcError> {
    let appt = store
        .get("Appointment", id)
        .ok_or_else(|| GpcError::no_record_found(format!("Appointment/{id} does not exist")))?;
    let starts = appt["start"].as_str().and_then(parse_instant);
    if starts.is_none_or(|s| s <= now) {
        return Err(GpcError::invalid_resource(format!(
            "Appointment/{id} is in the past; only future appointments can be read"
        )));
    }
    Ok(Reply::ok(appt.clone()))
}

/// `If-Match: W/"n"` (a strong `"n"` is read the same).
fn if_match_version(if_match: Option<&str>) -> Result<u64, GpcError> {
    let raw = if_match
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| GpcError::bad_request("the If-Match header is required"))?;
    let tag = raw.strip_prefix("W/").unwrap_or(raw);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| GpcError::bad_request(format!("If-Match {raw} is not W/\"[version]\"")))
}

/// The parts of an Appointment an amendment or cancellation must leave
/// alone: everything but `meta`, `text` and `drop`, with dateTimes compared
/// as instants and the extension `drop_ext` left out.
fn comparable(v: &Value, drop: &[&str], drop_ext: Option<&str>) -> Map<String, Value> {
    let mut out = v.as_object().cloned().unwrap_or_default();
    for k in ["meta", "text"].iter().chain(drop) {
        out.remove(*k);
    }
    for k in ["start", "end", "created"] {
        if let Some(t) = out.get(k).and_then(Value::as_str).and_then(parse_instant) {
            out.insert(k.to_string(), json!(t.to_rfc3339()));
        }
    }
    if let Some(url) = drop_ext {
        if let Some(Value::Array(exts)) = out.get("extension") {
            let kept: Vec<Value> = exts
                .iter()
                .filter(|e| e["url"].as_str() != Some(url))
                .cloned()
                .collect();
            if kept.is_empty() {
                out.remove("extension");
            } else {
                out.insert("extension".into(), Value::Array(kept));
            }
        }
    }
    out
}

fn changed_fields(sent: &Map<String, Value>, stored: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<&String> = sent.keys().chain(stored.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| sent.get(*k) != stored.get(*k))
        .cloned()
        .collect()
}

/// Amend (`…:rest:update:appointment-1`: only `description` and `comment`
/// change) or cancel (`…:rest:cancel:appointment-1`: `status` becomes
/// `cancelled` with the cancellation reason extension, nothing else changes,
/// the slots are free again) a future, uncancelled appointment, at the
/// version `If-Match` names.
pub fn update(
    store: &mut Store,
    id: &str,
    body: &Value,
    interaction: &str,
    if_match: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Reply, GpcError> {
    let stored = store
        .get("Appointment", id)
        .cloned()
        .ok_or_else(|| GpcError::no_record_found(format!("Appointment/{id} does not exist")))?;
    if body["resourceType"].as_str() == Some("Appointment") && body["id"].as_str() != Some(id) {
        return Err(GpcError::bad_request(format!(
            "the Appointment's id does not match the URL (Appointment/{id})"
        )));
    }
    check_type_and_profile(body)?;
    let wanted = if_match_version(if_match)?;
    let current = version_of(&stored);
    if wanted != current {
        return Err(GpcError::version_conflict(format!(
            "If-Match W/\"{wanted}\" is not the current version W/\"{current}\""
        )));
    }
    if stored["status"].as_str() == Some("cancelled") {
        return Err(GpcError::invalid_resource(
            "the appointment has been cancelled",
        ));
    }
    let starts = stored["start"].as_str().and_then(parse_instant);
    if starts.is_none_or(|s| s <= now) {
        return Err(GpcError::invalid_resource(
            "the appointment is in the past; only future appointments can be changed",
        ));
    }
    let mut next = stored.clone();
    if interaction == CANCEL_APPOINTMENT {
        if body["status"].as_str() != Some("cancelled") {
            return Err(GpcError::invalid_resource(
                "a cancellation sets Appointment.status to cancelled",
            ));
        }
        let reason = body["extension"]
            .as_array()
            .and_then(|e| {
                e.iter()
                    .find(|e| e["url"].as_str() == Some(CANCELLATION_REASON_URL))
            })
            .filter(|e| {
                e["valueString"]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty())
            })
            .cloned()
            .ok_or_else(|| {
                GpcError::invalid_resource(
                    "a cancellation needs the cancellation reason extension (valueString)",
                )
            })?;
        let sent = comparable(body, &["status"], Some(CANCELLATION_REASON_URL));
        let kept = comparable(&stored, &["status"], Some(CANCELLATION_REASON_URL));
        let changed = changed_fields(&sent, &kept);
        if !changed.is_empty() {
            return Err(GpcError::invalid_resource(format!(
                "a cancellation may only change status and the cancellation reason; changed: {}",
                changed.join(", ")
            )));
        }
        next["status"] = json!("cancelled");
        match next.get_mut("extension").and_then(Value::as_array_mut) {
            Some(exts) => exts.push(reason),
            None => next["extension"] = json!([reason]),
        }
        let slots: Vec<String> = stored["slot"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                s["reference"]
                    .as_str()?
                    .strip_prefix("Slot/")
                    .map(str::to_string)
            })
            .collect();
        for sid in slots {
            if let Some(s) = store.slots.get_mut(&sid) {
                s.set_free(true, now);
            }
        }
    } else {
        check_texts(body)?;
        let sent = comparable(body, &["description", "comment"], None);
        let kept = comparable(&stored, &["description", "comment"], None);
        let changed = changed_fields(&sent, &kept);
        if !changed.is_empty() {
            return Err(GpcError::invalid_resource(format!(
                "an amendment may only change description and comment; changed: {}",
                changed.join(", ")
            )));
        }
        next["description"] = body["description"].clone();
        match body.get("comment") {
            Some(c) => next["comment"] = c.clone(),
            None => {
                if let Some(o) = next.as_object_mut() {
                    o.remove("comment");
                }
            }
        }
    }
    next["meta"] = meta("Appointment", current + 1, now);
    store.put(next.clone());
    Ok(Reply::ok(next))
}

/// Retrieve a patient's appointments: exactly two `start` parameters, one
/// `ge` and one `le`, whole dates, none before today; every appointment
/// (cancelled included) starting on those days.
pub fn for_patient(
    store: &Store,
    patient: &str,
    query: &[(String, String)],
    now: DateTime<Utc>,
    base: &str,
) -> Result<Reply, GpcError> {
    if store.get("Patient", patient).is_none() {
        return Err(GpcError::patient_not_found(format!(
            "Patient/{patient} does not exist"
        )));
    }
    let starts: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "start")
        .map(|(_, v)| v.as_str())
        .collect();
    let (mut ge, mut le) = (None, None);
    for raw in &starts {
        let (slot, value) = if let Some(v) = raw.strip_prefix("ge") {
            (&mut ge, v)
        } else if let Some(v) = raw.strip_prefix("le") {
            (&mut le, v)
        } else {
            return Err(GpcError::invalid_parameter(format!(
                "start={raw}: the start parameters need the ge and le prefixes"
            )));
        };
        let date = parse_date(value).ok_or_else(|| {
            GpcError::invalid_parameter(format!(
                "start={raw}: a whole date (yyyy-mm-dd) without a time is required"
            ))
        })?;
        if slot.replace(date).is_some() {
            return Err(GpcError::invalid_parameter(
                "each of start=ge and start=le may be given once",
            ));
        }
    }
    let (Some(ge), Some(le)) = (ge, le) else {
        return Err(GpcError::invalid_parameter(
            "two start parameters are required: start=ge[date]&start=le[date]",
        ));
    };
    let today = uk_date(now);
    if ge < today || le < today {
        return Err(GpcError::invalid_parameter(
            "the search period is in the past: appointments can only be retrieved from today on",
        ));
    }
    if le < ge {
        return Err(GpcError::invalid_parameter("start=le is before start=ge"));
    }
    let patient_ref = format!("Patient/{patient}");
    let mut found: Vec<(DateTime<Utc>, Value)> = store
        .all("Appointment")
        .filter(|a| {
            a["participant"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["actor"]["reference"].as_str() == Some(patient_ref.as_str()))
            })
        })
        .filter_map(|a| {
            let start = a["start"].as_str().and_then(parse_instant)?;
            let day = uk_date(start);
            (day >= ge && day <= le).then(|| (start, a.clone()))
        })
        .collect();
    found.sort_by_key(|(s, _)| *s);
    Ok(Reply::ok(searchset(
        base,
        found.into_iter().map(|(_, a)| a).collect(),
        Vec::new(),
    )))
}
