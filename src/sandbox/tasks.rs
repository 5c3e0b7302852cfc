//! Sandbox extension, not GP Connect: repeat prescription requests as STU3
//! `Task`s. GP Connect (STU3) has no prescription ordering; real GP systems
//! take repeat requests through IM1 or the GP Connect Patient Facing APIs.
//! The `identifier` is the idempotency key: a second `POST` with the same
//! system and value answers 200 with the Task already made.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::outcome::GpcError;
use super::store::{meta, Store};
use super::time::uk;
use super::{searchset, Reply};

/// SNOMED CT: the code a repeat prescription request Task carries.
pub const REPEAT_REQUEST_CODE: &str = "103742009";

fn reference_id<'a>(v: &'a Value, prefix: &str) -> Option<&'a str> {
    v["reference"].as_str()?.strip_prefix(prefix)
}

/// `POST /Task`.
pub fn create(
    store: &mut Store,
    body: &Value,
    now: DateTime<Utc>,
    base: &str,
) -> Result<Reply, GpcError> {
    if body["resourceType"].as_str() != Some("Task") {
        return Err(GpcError::invalid_resource("the request body is not a Task"));
    }
    let key = body["identifier"]
        .as_array()
        .and_then(|ids| {
            ids.iter().find_map(|i| {
                let system = i["system"].as_str().filter(|s| !s.is_empty())?;
                let value = i["value"].as_str().filter(|v| !v.is_empty())?;
                Some((system.to_string(), value.to_string()))
            })
        })
        .ok_or_else(|| {
            GpcError::invalid_resource("Task.identifier (system and value) is required")
        })?;
    if let Some(existing) = store
        .task_keys
        .get(&key)
        .and_then(|id| store.get("Task", id))
    {
        return Ok(Reply::ok(existing.clone()));
    }
    if body["status"].as_str() != Some("requested") {
        return Err(GpcError::invalid_resource("Task.status must be requested"));
    }
    if body["intent"].as_str() != Some("order") {
        return Err(GpcError::invalid_resource("Task.intent must be order"));
    }
    let coded = body["code"]["coding"].as_array().is_some_and(|c| {
        c.iter().any(|c| {
            c["system"].as_str() == Some(super::seed::SNOMED)
                && c["code"].as_str() == Some(REPEAT_REQUEST_CODE)
        })
    });
    if !coded {
        return Err(GpcError::invalid_resource(format!(
            "Task.code must be SNOMED CT {REPEAT_REQUEST_CODE}"
        )));
    }
    let patient = reference_id(&body["for"], "Patient/")
        .ok_or_else(|| GpcError::invalid_resource("Task.for must reference Patient/[id]"))?;
    if store.get("Patient", patient).is_none() {
        return Err(GpcError::invalid_resource(format!(
            "Task.for: Patient/{patient} does not exist"
        )));
    }
    let plan = reference_id(&body["focus"], "MedicationRequest/").ok_or_else(|| {
        GpcError::invalid_resource("Task.focus must reference MedicationRequest/[id]")
    })?;
    let patient_ref = format!("Patient/{patient}");
    let active_plan = store.get("MedicationRequest", plan).is_some_and(|m| {
        m["intent"].as_str() == Some("plan")
            && m["status"].as_str() == Some("active")
            && m["subject"]["reference"].as_str() == Some(patient_ref.as_str())
    });
    if !active_plan {
        return Err(GpcError::invalid_resource(format!(
            "Task.focus: MedicationRequest/{plan} is not an active repeat authorisation of Patient/{patient}"
        )));
    }
    let id = format!("task-{}", store.next_task);
    store.next_task += 1;
    let mut task = body.clone();
    task["id"] = json!(id);
    task["meta"] = meta("Task", 1, now);
    if task.get("authoredOn").is_none() {
        task["authoredOn"] = json!(uk(now));
    }
    store.put(task.clone());
    store.task_keys.insert(key, id.clone());
    store.stats.tasks_created += 1;
    Ok(Reply::created(task, format!("{base}/Task/{id}/_history/1")))
}

/// `GET /Task?identifier=system|value`.
pub fn search(store: &Store, query: &[(String, String)], base: &str) -> Result<Reply, GpcError> {
    let raw: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "identifier")
        .map(|(_, v)| v.as_str())
        .collect();
    let [one] = raw.as_slice() else {
        return Err(GpcError::bad_request(
            "exactly one identifier=system|value parameter is required",
        ));
    };
    let found: Vec<Value> = match one.split_once('|') {
        Some((system, value)) if !system.is_empty() => store
            .task_keys
            .get(&(system.to_string(), value.to_string()))
            .and_then(|id| store.get("Task", id))
            .cloned()
            .into_iter()
            .collect(),
        _ => {
            return Err(GpcError::invalid_identifier_system(format!(
                "identifier {one} has no system (expected system|value)"
            )))
        }
    };
    Ok(Reply::ok(searchset(base, found, Vec::new())))
}

pub fn read(store: &Store, id: &str) -> Result<Reply, GpcError> {
    store
        .get("Task", id)
        .cloned()
        .map(Reply::ok)
        .ok_or_else(|| GpcError::no_record_found(format!("Task/{id} does not exist")))
}
