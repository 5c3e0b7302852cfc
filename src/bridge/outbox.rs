//! The durable outbox: writes a practice's GP system can take later (a
//! repeat prescription request) are recorded in the local database in the
//! same transaction as the local record the client sees — a `Task` whose
//! `businessStatus` says where its delivery is — as a job of kind
//! [`KIND`]. The job runner delivers it: retries with exponential backoff
//! and jitter, an idempotency key (the Task's `identifier` in
//! [`IDEMPOTENCY_SYSTEM`]) so a retry never makes a second record at the
//! supplier, and a dead-letter state (`failed` jobs, the Task marked
//! `undeliverable`) that `fhirbridge outbox list|retry|drop` shows and acts
//! on. Jobs are claimed under a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), so with several instances each item is delivered by one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ids;
use super::UpstreamError;
use crate::jobs::{JobContext, JobError, JobKind};
use crate::model::{LogicalId, ResourceType};
use crate::service::Service;
use crate::storage::{NewJob, Precondition};

pub const KIND: &str = "supplier-delivery";
pub const IDEMPOTENCY_SYSTEM: &str = "https://fhirbridge.dev/Id/outbox";
pub const DELIVERY_SYSTEM: &str = "https://fhirbridge.dev/CodeSystem/outbox-delivery";
/// Attempts before an item is dead-lettered (with the retry cap, about
/// 15 minutes of a supplier being down).
pub const MAX_ATTEMPTS: u32 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub supplier: String,
    /// The local Task.
    pub task: String,
}

/// The outbox item of local Task `task` for `supplier`.
pub fn new_job(supplier: &str, task: &str, max_attempts: u32) -> NewJob {
    NewJob {
        kind: KIND.into(),
        dedupe_key: Some(format!("outbox|Task|{task}")),
        params: serde_json::to_string(&Params {
            supplier: supplier.into(),
            task: task.into(),
        })
        .unwrap_or_default(),
        max_attempts,
        run_after: None,
    }
}

/// A delivery status as `Task.businessStatus`.
pub fn business_status(code: &str) -> Value {
    let text = match code {
        "queued" => "Waiting to be sent to the practice's GP system",
        "delivered" => "Received by the practice's GP system",
        "refused" => "Refused by the practice's GP system",
        "undeliverable" => {
            "Could not be sent to the practice's GP system; the practice has been told"
        }
        _ => "Unknown delivery state",
    };
    json!({"coding": [{"system": DELIVERY_SYSTEM, "code": code, "display": text}], "text": text})
}

fn delivery(task: &Value) -> Option<&str> {
    task.pointer("/businessStatus/coding/0/code")
        .and_then(Value::as_str)
}

/// The code of a Task that carries a cancellation to a GP system.
pub const OPERATION_SYSTEM: &str = "https://fhirbridge.dev/CodeSystem/bridge-operation";
pub const CANCEL_APPOINTMENT: &str = "cancel-appointment";

/// Whether `task` is a queued appointment cancellation.
pub fn is_cancellation(task: Option<&Value>) -> bool {
    task.and_then(|t| t.pointer("/code/coding"))
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("system").and_then(Value::as_str) == Some(OPERATION_SYSTEM)
                    && c.get("code").and_then(Value::as_str) == Some(CANCEL_APPOINTMENT)
            })
        })
}

/// The idempotency key a Task carries.
pub fn key_of(task: &Value) -> Option<String> {
    task.get("identifier")?
        .as_array()?
        .iter()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(IDEMPOTENCY_SYSTEM))?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}

pub struct OutboxKind {
    service: Arc<Service>,
}

impl OutboxKind {
    pub fn new(service: Arc<Service>) -> OutboxKind {
        OutboxKind { service }
    }

    async fn set(
        &self,
        job: &JobContext,
        id: &LogicalId,
        version: i64,
        mut task: Value,
        f: impl FnOnce(&mut Value),
    ) -> Result<(), JobError> {
        f(&mut task);
        let base = self.service.settings().server.offline_base();
        match self
            .service
            .update(
                &job.ctx,
                ResourceType::Task,
                id.clone(),
                task,
                Precondition::VersionIs(version),
                &base,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(JobError::Failed {
                message: format!("the local Task could not be updated ({})", e.http_status()),
                retry: true,
            }),
        }
    }
}

/// The Task the supplier gets: the request itself, with its idempotency key
/// and the supplier's ids; nothing that points at local-only records.
fn remote_task(
    task: &Value,
    supplier: &str,
    link: &ids::PatientLink,
    key: &str,
) -> Result<Value, String> {
    let mut out = json!({
        "resourceType": "Task",
        "identifier": [{"system": IDEMPOTENCY_SYSTEM, "value": key}],
        "status": "requested",
        "intent": "order",
        "code": task.get("code").cloned().unwrap_or(Value::Null),
        "for": task.get("for").cloned().unwrap_or(Value::Null),
        "focus": task.get("focus").cloned().unwrap_or(Value::Null),
    });
    for k in ["authoredOn", "note", "description"] {
        if let Some(v) = task.get(k) {
            out[k] = v.clone();
        }
    }
    ids::to_remote(&mut out, supplier, Some(link))?;
    Ok(out)
}

#[async_trait]
impl JobKind for OutboxKind {
    fn name(&self) -> &'static str {
        KIND
    }

    fn max_attempts(&self) -> u32 {
        MAX_ATTEMPTS
    }

    /// 1 s doubling, at most 15 s, ±25 % jitter (so instances and items
    /// retrying after an outage do not arrive at once).
    fn retry_delay(&self, attempts: u32) -> Duration {
        let base = (1000u64 << attempts.saturating_sub(1).min(4)).min(15_000);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 500) as u64;
        Duration::from_millis(base * 3 / 4 + base * jitter / 1000)
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let p: Params = job.params()?;
        let svc = &self.service;
        let Some(s) = svc.bridge().named(&p.supplier).cloned() else {
            return Err(JobError::permanent("the supplier is no longer configured"));
        };
        let id = LogicalId::parse(&p.task).ok_or_else(|| JobError::permanent("bad Task id"))?;
        let stored = match svc.read_current(&job.ctx, ResourceType::Task, &id).await {
            Ok(s) => s,
            // Deleted locally before delivery: nothing to send.
            Err(crate::service::ServiceError::NotFound(_)) => return Ok(()),
            Err(e) => {
                return Err(JobError::Failed {
                    message: format!("the local Task could not be read ({})", e.http_status()),
                    retry: true,
                })
            }
        };
        let task: Value = serde_json::from_str(stored.content.as_deref().unwrap_or("null"))
            .map_err(|_| JobError::permanent("the local Task is not readable"))?;
        // Queued, or dead-lettered and queued again by an operator.
        if task.get("status").and_then(Value::as_str) != Some("requested")
            || !matches!(delivery(&task), Some("queued" | "undeliverable"))
        {
            // Delivered already, or withdrawn by the patient before delivery.
            return Ok(());
        }
        let key =
            key_of(&task).ok_or_else(|| JobError::permanent("the Task has no idempotency key"))?;
        let patient = task
            .get("for")
            .and_then(|f| crate::workflow::fhir::ref_id(f, "Patient"))
            .ok_or_else(|| JobError::permanent("the Task names no patient"))?;
        let last = job.job.attempts >= job.job.max_attempts;
        let retry = |what: String| JobError::Failed {
            message: what,
            retry: true,
        };
        if is_cancellation(Some(&task)) {
            // The patient as the GP system knows them, to confirm the
            // appointment is theirs before cancelling it.
            let remote_patient = match svc.practice_of(&patient).await {
                Ok(Some((_, nhs))) => s.remote_patient(&nhs).await,
                Ok(None) => Ok(None),
                Err(e) => return Err(retry(format!("routing failed ({})", e.http_status()))),
            };
            let outcome = match remote_patient {
                Ok(p) => cancel_at(&s, &task, p.as_deref()).await,
                Err(e) => Err(e),
            };
            return self
                .finish(job, &id, stored.version, task, &s, outcome, last)
                .await;
        }
        let route = svc
            .patient_route(&patient, ResourceType::Task)
            .await
            .map_err(|e| retry(format!("routing failed ({})", e.http_status())))?;
        let outcome = match route {
            None => Err(UpstreamError::NotSupported(
                "the patient's practice is no longer served by this supplier".into(),
            )),
            Some(route) => match svc.link(&route).await {
                Ok(Some(link)) => match remote_task(&task, s.name(), &link, &key) {
                    Ok(body) => {
                        s.guarded("request_repeat", s.adapter().request_repeat(body))
                            .await
                    }
                    Err(e) => Err(UpstreamError::NotSupported(e)),
                },
                Ok(None) => Err(UpstreamError::Refused {
                    status: 404,
                    code: Some("PATIENT_NOT_FOUND".into()),
                    message: "the patient is not registered at the practice's GP system".into(),
                }),
                Err(e) => Err(UpstreamError::Unavailable(format!(
                    "patient lookup: {}",
                    e.http_status()
                ))),
            },
        };
        self.finish(job, &id, stored.version, task, &s, outcome, last)
            .await
    }
}

impl OutboxKind {
    /// Records a delivery's outcome on the local Task.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        job: &JobContext,
        id: &LogicalId,
        version: i64,
        task: Value,
        s: &super::Supplier,
        outcome: super::Upstream<Value>,
        last: bool,
    ) -> Result<(), JobError> {
        let retry = |what: String| JobError::Failed {
            message: what,
            retry: true,
        };
        match outcome {
            Ok(remote) => {
                let rid = remote
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let name = s.name().to_owned();
                let ty = remote
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("Task")
                    .to_owned();
                self.set(job, id, version, task, |t| {
                    t["businessStatus"] = business_status("delivered");
                    if !rid.is_empty() {
                        let out = json!({"type": {"text": "The record at the practice's GP system"},
                            "valueReference": {"reference": format!("{ty}/{name}.{rid}")}});
                        match t.get_mut("output").and_then(Value::as_array_mut) {
                            Some(list) => list.push(out),
                            None => t["output"] = json!([out]),
                        }
                    }
                })
                .await
            }
            Err(UpstreamError::Refused { message, .. }) => {
                self.set(job, id, version, task, |t| {
                    t["status"] = json!("rejected");
                    t["businessStatus"] = business_status("refused");
                    t["statusReason"] = json!({"text": message});
                })
                .await
            }
            Err(UpstreamError::NotSupported(why)) => {
                self.set(job, id, version, task, |t| {
                    t["businessStatus"] = business_status("undeliverable");
                })
                .await?;
                Err(JobError::permanent(&format!("undeliverable: {why}")))
            }
            Err(e) => {
                let why = match &e {
                    UpstreamError::Unavailable(w) | UpstreamError::Bad(w) => w.clone(),
                    _ => String::new(),
                };
                if last {
                    self.set(job, id, version, task, |t| {
                        t["businessStatus"] = business_status("undeliverable");
                    })
                    .await?;
                }
                Err(retry(format!("delivery to {} failed: {why}", s.name())))
            }
        }
    }
}

/// Delivers a queued cancellation: the appointment at the GP system is
/// cancelled at its current version (already cancelled: nothing to do, so
/// a repeated delivery changes nothing).
async fn cancel_at(
    s: &super::Supplier,
    task: &Value,
    remote_patient: Option<&str>,
) -> super::Upstream<Value> {
    let focus = task
        .get("focus")
        .and_then(|f| crate::workflow::fhir::ref_id(f, "Appointment"))
        .unwrap_or_default();
    let prefix = format!("{}.", s.name());
    let Some(rid) = focus.strip_prefix(&prefix) else {
        return Err(UpstreamError::NotSupported(
            "the Task's focus is not this supplier's appointment".into(),
        ));
    };
    let current = s
        .guarded("read", s.adapter().read("Appointment", rid))
        .await?;
    // Absent and another patient's alike: refused with one message.
    let theirs = current.as_ref().is_some_and(|c| {
        crate::workflow::fhir::participant_patients(c)
            .iter()
            .any(|p| Some(p.as_str()) == remote_patient)
    });
    let Some(current) = current.filter(|_| theirs) else {
        return Err(UpstreamError::Refused {
            status: 404,
            code: Some("NO_RECORD_FOUND".into()),
            message: "no such appointment of this patient at the practice's GP system".into(),
        });
    };
    if current.get("status").and_then(Value::as_str) == Some("cancelled") {
        return Ok(current);
    }
    let reason = task
        .get("input")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|i| i.get("valueString").and_then(Value::as_str))
        .unwrap_or("Cancelled by the patient");
    let version = ids::remote_version(&current).unwrap_or_else(|| "1".into());
    let out = s
        .guarded(
            "cancel",
            s.adapter().update_appointment(
                rid,
                &version,
                json!({"resourceType": "Appointment", "status": "cancelled", "cancelationReason": {"text": reason}}),
                true,
            ),
        )
        .await;
    s.cache.invalidate("slots|");
    s.cache.invalidate("appts|");
    out
}

/// `fhirbridge outbox list`: the items not yet delivered (queued, running,
/// dead-lettered), oldest first, one line each: id, state, supplier, Task,
/// attempts, age, last error (no patient data: ids and reasons only).
pub async fn list(settings: &crate::config::Settings) -> anyhow::Result<String> {
    let backend = crate::open_backend(settings)?;
    let jobs = backend
        .jobs()
        .ok_or_else(|| anyhow::anyhow!("this storage backend has no job queue"))?;
    let ctx = crate::context::RequestContext::system("outbox", Arc::new(crate::policy::AllowAll));
    let mut items = jobs.list(&ctx, Some(KIND), 10_000).await?;
    items.retain(|j| j.state != crate::storage::JobState::Done);
    items.sort_by_key(|j| j.created_at);
    let now = crate::model::Instant::now().0;
    let mut out = String::new();
    if items.is_empty() {
        out.push_str("the outbox is empty: every deferred write has been delivered\n");
        return Ok(out);
    }
    out.push_str("ID                                    STATE    SUPPLIER         TASK                                  ATTEMPTS  AGE     ERROR\n");
    for j in &items {
        let p: Option<Params> = serde_json::from_str(&j.params).ok();
        let state = match j.state {
            crate::storage::JobState::Failed => "dead",
            s => s.as_str(),
        };
        out.push_str(&format!(
            "{:<37} {:<8} {:<16} {:<37} {:>3}/{:<4}  {:<7} {}\n",
            j.id,
            state,
            p.as_ref().map(|p| p.supplier.as_str()).unwrap_or("?"),
            p.as_ref().map(|p| p.task.as_str()).unwrap_or("?"),
            j.attempts,
            j.max_attempts,
            format!("{}s", (now - j.created_at).max(0) / 1000),
            j.error.as_deref().unwrap_or("")
        ));
    }
    Ok(out)
}

/// `fhirbridge outbox retry ID`: a dead-lettered item goes back to the queue
/// (attempts from 0); `drop ID`: removes an item that is not being delivered.
pub async fn act(
    settings: &crate::config::Settings,
    id: &str,
    retry: bool,
) -> anyhow::Result<bool> {
    let backend = crate::open_backend(settings)?;
    let jobs = backend
        .jobs()
        .ok_or_else(|| anyhow::anyhow!("this storage backend has no job queue"))?;
    let ctx = crate::context::RequestContext::system("outbox", Arc::new(crate::policy::AllowAll));
    match jobs.get(&ctx, id).await? {
        Some(j) if j.kind == KIND => {}
        _ => return Ok(false),
    }
    Ok(if retry {
        jobs.requeue(&ctx, id).await?
    } else {
        jobs.discard(&ctx, id).await?
    })
}
