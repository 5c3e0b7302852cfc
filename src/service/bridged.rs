//! Requests routed to a practice's GP system (`crate::bridge`). The service
//! decides the route; every routed request takes the same authorisation
//! decision as a local one, and every resource a supplier returns passes
//! the same admit guard (compartment, Consents, withheld labels) before it
//! reaches the caller.
//!
//! Routing: a patient's practice is the ODS code of `Patient.generalPractitioner`
//! (an identifier-only reference, or a local Organization carrying it). A
//! request about that patient for a type the practice's supplier holds —
//! read, search, `Patient/{id}/{type}`, booking — goes to that supplier; a
//! free-slot search goes to the supplier of the practice it names
//! (`schedule.actor:Location.organization.identifier`). A resource id
//! `{supplier}.{id}` is the supplier's. Everything else is local.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::read::Found;
use super::search::SearchInput;
use super::write::Written;
use super::{admit_all, admitted, Service, ServiceError, ServiceResult};
use crate::bridge::cache::Lookup;
use crate::bridge::ids::{self, PatientLink};
use crate::bridge::{Supplier, UpstreamError, Window};
use crate::context::RequestContext;
use crate::model::{LogicalId, ResourceType, StoredResource};
use crate::policy::Action;
use crate::search::types::{DateValue, Predicate, Prefix, SearchQuery, Test};
use crate::storage::{SearchPage, WriteKind};

use crate::workflow::fhir::{
    identifier, identifiers, participant_patients, registered, Registered,
};
pub use crate::workflow::fhir::{NHS_NUMBER as NHS_SYSTEM, ODS_CODE as ODS_SYSTEM};
/// `meta.tag` of a copy served from the bridge's cache while the supplier
/// could not answer.
pub const STALE_TAG_SYSTEM: &str = "https://fhirbridge.dev/CodeSystem/bridge";
/// Most days a bridged free-slot search may span (GP Connect's rule).
const SLOT_WINDOW_DAYS: i64 = 14;

/// Where a patient's records of one type are held.
#[derive(Clone)]
pub struct Route {
    pub supplier: Arc<Supplier>,
    pub nhs: String,
    pub local: String,
}

/// A supplier failure as the caller sees it, naming the practice's GP system
/// (never its credentials, nor anything of its answer).
pub fn upstream_error(s: &Supplier, e: UpstreamError) -> ServiceError {
    match e {
        UpstreamError::Unavailable(why) => ServiceError::SupplierUnavailable {
            message: format!(
                "The GP system of this practice ({}) is unavailable: {why}. Retry later.",
                s.name()
            ),
            retry_after: s.retry_after(),
        },
        UpstreamError::Bad(why) => ServiceError::BadGateway(format!(
            "The GP system of this practice ({}) gave an unusable answer: {why}",
            s.name()
        )),
        UpstreamError::NotSupported(why) => {
            ServiceError::NotImplemented(format!("Not available through {}: {why}", s.name()))
        }
        UpstreamError::Refused {
            status,
            code,
            message,
        } => {
            let code = code.as_deref().and_then(spine_code);
            let status = match status {
                400 | 403 | 404 | 409 | 412 | 422 => status,
                _ => 400,
            };
            ServiceError::SupplierRefused {
                status,
                code,
                message: format!("The practice's GP system refused the request: {message}"),
            }
        }
    }
}

/// GP Connect's Spine error codes, kept on the R4 outcome.
fn spine_code(c: &str) -> Option<&'static str> {
    const CODES: [&str; 19] = [
        "INVALID_IDENTIFIER_SYSTEM",
        "INVALID_IDENTIFIER_VALUE",
        "INVALID_NHS_NUMBER",
        "INVALID_PATIENT_DEMOGRAPHICS",
        "BAD_REQUEST",
        "NO_PATIENT_CONSENT",
        "NO_ORGANISATION_CONSENT",
        "ACCESS_DENIED",
        "PATIENT_NOT_FOUND",
        "ORGANISATION_NOT_FOUND",
        "PRACTITIONER_NOT_FOUND",
        "NO_RECORD_FOUND",
        "DUPLICATE_REJECTED",
        "INVALID_RESOURCE",
        "INVALID_PARAMETER",
        "REFERENCE_NOT_FOUND",
        "NOT_IMPLEMENTED",
        "INTERNAL_SERVER_ERROR",
        "FHIR_CONSTRAINT_VIOLATION",
    ];
    CODES.iter().find(|k| **k == c).copied()
}

fn system_ctx() -> RequestContext {
    RequestContext::system("bridge", Arc::new(crate::policy::AllowAll))
}

fn ms_to_fhir(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        // GP Connect takes an explicit offset, not `Z`.
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        .unwrap_or_default()
}

fn tag_stale(v: &mut Value) {
    let tag = json!({"system": STALE_TAG_SYSTEM, "code": "stale",
        "display": "Served from the bridge's cache: the practice's GP system is unavailable"});
    if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
        match m.get_mut("tag") {
            Some(Value::Array(t)) => t.push(tag),
            _ => {
                m.insert("tag".into(), json!([tag]));
            }
        }
    }
}

impl Service {
    pub fn bridge(&self) -> &Arc<crate::bridge::Bridge> {
        &self.bridge
    }

    /// The practice (ODS code) and NHS number of local Patient `id`.
    pub(crate) async fn practice_of(&self, id: &str) -> ServiceResult<Option<(String, String)>> {
        let Some(pid) = LogicalId::parse(id) else {
            return Ok(None);
        };
        let Some(reader) = self.backend.reader() else {
            return Ok(None);
        };
        let ctx = system_ctx();
        let Ok(p) = reader.read(&ctx, ResourceType::Patient, &pid).await else {
            return Ok(None);
        };
        let p = super::workflows::content(&p)?;
        let Some(nhs) = identifier(&p, NHS_SYSTEM).map(str::to_owned) else {
            return Ok(None);
        };
        for gp in registered(&p) {
            let org = match gp {
                Registered::Ods(ods) => return Ok(Some((ods, nhs))),
                Registered::Organization(org) => org,
            };
            let Some(org) = LogicalId::parse(&org) else {
                continue;
            };
            if let Ok(o) = reader.read(&ctx, ResourceType::Organization, &org).await {
                if let Some(ods) = identifier(&super::workflows::content(&o)?, ODS_SYSTEM) {
                    return Ok(Some((ods.to_owned(), nhs)));
                }
            }
        }
        Ok(None)
    }

    /// The supplier holding local patient `id`'s records of `ty`.
    pub(crate) async fn patient_route(
        &self,
        id: &str,
        ty: ResourceType,
    ) -> ServiceResult<Option<Route>> {
        if !self.bridge.any_holds(ty) {
            return Ok(None);
        }
        let Some((ods, nhs)) = self.practice_of(id).await? else {
            return Ok(None);
        };
        Ok(self
            .bridge
            .for_practice(&ods)
            .filter(|s| s.holds(ty))
            .map(|s| Route {
                supplier: s.clone(),
                nhs,
                local: id.to_owned(),
            }))
    }

    /// The supplier's patient for a route (`None`: the GP system does not
    /// know the patient).
    pub(crate) async fn link(&self, r: &Route) -> ServiceResult<Option<PatientLink>> {
        let s = &r.supplier;
        let remote = s
            .remote_patient(&r.nhs)
            .await
            .map_err(|e| upstream_error(s, e))?;
        Ok(remote.map(|remote| PatientLink {
            remote,
            local: r.local.clone(),
        }))
    }

    /// A cached supplier read: fresh within the type's TTL; on a supplier
    /// failure a stale copy (tagged) when one is held.
    async fn cached<F>(
        &self,
        s: &Supplier,
        ty: ResourceType,
        key: String,
        op: &'static str,
        fetch: F,
    ) -> ServiceResult<(Arc<Vec<Value>>, bool)>
    where
        F: std::future::Future<Output = crate::bridge::Upstream<Vec<Value>>>,
    {
        let ttl = Duration::from_secs(s.cfg.ttl(ty));
        let stale = match s.cache.get(&key, ttl) {
            Lookup::Fresh(v) => return Ok((v, false)),
            Lookup::Stale(v) => Some(v),
            Lookup::Miss => None,
        };
        match s.guarded(op, fetch).await {
            Ok(list) => {
                let list = Arc::new(list);
                s.cache.put(key, list.clone());
                Ok((list, false))
            }
            Err(UpstreamError::Unavailable(why)) => match stale {
                Some(v) => {
                    s_stale(s);
                    Ok((v, true))
                }
                None => Err(upstream_error(s, UpstreamError::Unavailable(why))),
            },
            Err(e) => Err(upstream_error(s, e)),
        }
    }

    /// The patient's record (medication, allergies) from the GP system,
    /// mapped onto our ids.
    async fn record(&self, r: &Route, link: &PatientLink) -> ServiceResult<Arc<Vec<Value>>> {
        let s = &r.supplier;
        let list = self
            .cached_mapped(
                s,
                ResourceType::MedicationRequest,
                format!("record|{}", r.nhs),
                "record",
                Some(link),
                s.adapter().record(&r.nhs, &link.remote),
            )
            .await?;
        let prefix = format!("{}.", s.name());
        for v in list.iter() {
            let rid = v
                .get("id")
                .and_then(Value::as_str)
                .and_then(|i| i.strip_prefix(&prefix));
            if let (Some(ty), Some(rid)) = (crate::bridge::type_of(v), rid) {
                s.remember_owner(ty, rid, &r.nhs, &r.local);
            }
        }
        Ok(list)
    }

    /// A cached supplier read mapped onto our ids ([`ids::to_local`], with
    /// the patient link when the answer is about one patient): mapped once
    /// when fetched, not on every request; a stale copy comes tagged.
    async fn cached_mapped<F>(
        &self,
        s: &Supplier,
        ty: ResourceType,
        key: String,
        op: &'static str,
        link: Option<&PatientLink>,
        fetch: F,
    ) -> ServiceResult<Arc<Vec<Value>>>
    where
        F: std::future::Future<Output = crate::bridge::Upstream<Vec<Value>>>,
    {
        let mapped = async {
            let mut list = fetch.await?;
            for v in list.iter_mut() {
                ids::to_local(v, s.name(), &s.cfg.base_url, link).map_err(UpstreamError::Bad)?;
            }
            Ok(list)
        };
        let (list, stale) = self.cached(s, ty, key, op, mapped).await?;
        if !stale {
            return Ok(list);
        }
        let mut tagged = list.as_ref().clone();
        tagged.iter_mut().for_each(tag_stale);
        Ok(Arc::new(tagged))
    }

    /// `GET [type]/{supplier}.{id}`.
    pub(crate) async fn bridged_read(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        s: &Arc<Supplier>,
        rid: &str,
    ) -> ServiceResult<Found> {
        let not_found = || ServiceError::NotFound("Resource not found".into());
        let v = match ty {
            ResourceType::Appointment
            | ResourceType::Practitioner
            | ResourceType::Location
            | ResourceType::Organization => {
                let got = s
                    .guarded("read", s.adapter().read(ty.as_str(), rid))
                    .await
                    .map_err(|e| upstream_error(s, e))?;
                let Some(v) = got else {
                    return Err(not_found());
                };
                let link = self.link_for(s, &v).await?;
                let mut v = v;
                ids::to_local(&mut v, s.name(), &s.cfg.base_url, link.as_ref())
                    .map_err(|e| upstream_error(s, UpstreamError::Bad(e)))?;
                v
            }
            // GP Connect has no read of slots and schedules: the copies its
            // free-slot searches brought (tagged stale past the TTL).
            ResourceType::Slot | ResourceType::Schedule => {
                let want = format!("{}.{rid}", s.name());
                let ttl = Duration::from_secs(s.cfg.ttl(ResourceType::Slot));
                let (mut v, fresh) = s
                    .cache
                    .find("slots|", ttl, |v| {
                        crate::bridge::type_of(v) == Some(ty)
                            && v.get("id").and_then(Value::as_str) == Some(want.as_str())
                    })
                    .ok_or_else(not_found)?;
                if !fresh {
                    tag_stale(&mut v);
                }
                v
            }
            _ => {
                let Some((nhs, local)) = s.owner(ty, rid) else {
                    return Err(not_found());
                };
                let route = Route {
                    supplier: s.clone(),
                    nhs,
                    local,
                };
                let Some(link) = self.link(&route).await? else {
                    return Err(not_found());
                };
                let list = self.record(&route, &link).await?;
                let want = format!("{}.{rid}", s.name());
                list.iter()
                    .find(|v| {
                        crate::bridge::type_of(v) == Some(ty)
                            && v.get("id").and_then(Value::as_str) == Some(want.as_str())
                    })
                    .cloned()
                    .ok_or_else(not_found)?
            }
        };
        let stored = ids::stored(&v).ok_or_else(|| {
            upstream_error(s, UpstreamError::Bad("an unmappable resource".into()))
        })?;
        admitted(ctx, stored)
            .map(Found::Current)
            .ok_or_else(not_found)
    }

    /// The patient link of a supplier resource that names a patient (an
    /// Appointment's participant): found through the supplier's Patient and
    /// its NHS number. `None`: the patient is not one of ours, and the
    /// reference stays the supplier's (which no patient token reaches).
    async fn link_for(&self, s: &Arc<Supplier>, v: &Value) -> ServiceResult<Option<PatientLink>> {
        let remote = participant_patients(v).into_iter().next();
        let Some(remote) = remote else {
            return Ok(None);
        };
        let p = s
            .guarded("read", s.adapter().read("Patient", &remote))
            .await
            .map_err(|e| upstream_error(s, e))?;
        let nhs = p
            .as_ref()
            .and_then(|p| identifier(p, NHS_SYSTEM))
            .map(str::to_owned);
        let Some(nhs) = nhs else { return Ok(None) };
        let q = super::workflows::query(
            ResourceType::Patient,
            &[("identifier", format!("{NHS_SYSTEM}|{nhs}"))],
            "",
        )?;
        let Some(searcher) = self.backend.search() else {
            return Ok(None);
        };
        let page = searcher.search(&system_ctx(), &q).await?;
        Ok(match page.resources.as_slice() {
            [one] => Some(PatientLink {
                remote,
                local: one.id.to_string(),
            }),
            _ => None,
        })
    }

    /// A search routed to a supplier, or `None` when it stays local.
    pub(crate) async fn bridged_search(
        &self,
        ctx: &RequestContext,
        input: &SearchInput<'_>,
        parsed: &mut crate::search::parse::ParsedSearch,
        patients: &[String],
    ) -> ServiceResult<Option<SearchPage>> {
        let ty = input.ty;
        if !self.bridge.any_holds(ty) {
            return Ok(None);
        }
        if ty == ResourceType::Slot {
            let Some(ods) = practice_named(input.pairs) else {
                return Ok(None);
            };
            let Some(s) = self
                .bridge
                .for_practice(&ods)
                .filter(|s| s.holds(ty))
                .cloned()
            else {
                return Ok(None);
            };
            return self
                .bridged_slots(ctx, &s, &ods, &mut parsed.query)
                .await
                .map(Some);
        }
        let [patient] = patients else { return Ok(None) };
        let Some(route) = self.patient_route(patient, ty).await? else {
            return Ok(None);
        };
        let s = route.supplier.clone();
        let Some(link) = self.link(&route).await? else {
            return Ok(Some(empty_page()));
        };
        let pool = match ty {
            ResourceType::Appointment => {
                // GP Connect retrieves appointments by whole dates.
                let mut w = window_of(&parsed.query, "date").unwrap_or_else(|| {
                    let now = chrono::Utc::now().timestamp_millis();
                    Window {
                        from: ms_to_fhir(now),
                        to: ms_to_fhir(now + 180 * 86_400_000),
                    }
                });
                w.from.truncate(10);
                w.to.truncate(10);
                self.cached_mapped(
                    &s,
                    ty,
                    format!("appts|{}|{}|{}", route.nhs, w.from, w.to),
                    "appointments",
                    Some(&link),
                    s.adapter().appointments(&link.remote, &w),
                )
                .await?
            }
            ResourceType::Task => return Ok(None),
            _ => self.record(&route, &link).await?,
        };
        in_memory(ctx, &s, ty, &parsed.query, &pool, input.base_url).map(Some)
    }

    async fn bridged_slots(
        &self,
        ctx: &RequestContext,
        s: &Arc<Supplier>,
        ods: &str,
        query: &mut SearchQuery,
    ) -> ServiceResult<SearchPage> {
        let has_free = query.predicates.iter().any(|p| {
            matches!(p,
            Predicate::Index { param, test: Test::Token(vs), not: false }
                if param.code == "status" && vs.len() == 1 && vs[0].code.as_deref() == Some("free"))
        });
        if !has_free {
            return Err(ServiceError::BadRequest(vec![super::OoIssue::error(
                "not-supported",
                format!(
                    "Slots of a practice on a GP system ({}) are searched with status=free",
                    s.name()
                ),
            )
            .at("status")]));
        }
        let Some(w) = window_of(query, "start") else {
            return Err(ServiceError::Unprocessable(vec![super::OoIssue::error(
                "invalid",
                format!(
                    "A free-slot search of a practice on a GP system needs start=ge… and start=le… at most {SLOT_WINDOW_DAYS} days apart"
                ),
            )
            .at("start")]));
        };
        // The practice parameter is answered by the routing itself.
        query
            .predicates
            .retain(|p| !matches!(p, Predicate::Chain { param, .. } if param.code == "schedule"));
        // The cache holds the practice's slots (and what they include).
        let sole = s.cfg.ods_codes.len() == 1;
        let fetch = async { Ok(only_practice(s.adapter().free_slots(&w).await?, ods, sole)) };
        let pool = self
            .cached_mapped(
                s,
                ResourceType::Slot,
                format!("slots|{ods}|{}|{}", w.from, w.to),
                "free_slots",
                None,
                fetch,
            )
            .await?;
        in_memory(ctx, s, ResourceType::Slot, query, &pool, "")
    }

    /// `POST Appointment` for a patient of a bridged practice: booked at the
    /// GP system at once (the patient needs to know); `None` when local.
    pub(crate) async fn bridged_create(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        body: &Value,
        base_url: &str,
    ) -> ServiceResult<Option<Written>> {
        if ty != ResourceType::Appointment || !self.bridge.any_holds(ty) {
            return Ok(None);
        }
        let patient = participant_patients(body).into_iter().next();
        let remote_slot = crate::workflow::fhir::ref_ids(body, "slot", "Slot")
            .iter()
            .find_map(|id| self.bridge.remote_id(id).map(|(s, _)| s.clone()));
        let route = match &patient {
            Some(p) => self.patient_route(p, ty).await?,
            None => None,
        };
        let Some(route) = route else {
            if let Some(s) = remote_slot {
                ctx.authorize(ty, Action::Create)?;
                return Err(super::workflows::refuse(
                    "slot",
                    format!("the slot is held by {}, but the patient is not registered at a practice it serves", s.name()),
                ));
            }
            return Ok(None);
        };
        ctx.authorize(ty, Action::Create)?;
        let value = self.checked(ty, body.clone(), super::write::WriteTarget::Create)?;
        if !ctx.permits(ty, Action::Create, "", &value) {
            return Err(ServiceError::Forbidden(
                "The Appointment is outside what this token may create".into(),
            ));
        }
        let _ = base_url;
        let s = route.supplier.clone();
        let Some(link) = self.link(&route).await? else {
            return Err(super::workflows::refuse(
                "participant",
                "the patient is not registered at the practice's GP system",
            ));
        };
        let mut remote = value;
        ids::to_remote(&mut remote, s.name(), Some(&link))
            .map_err(|e| super::workflows::refuse("slot", e))?;
        let booked = s
            .guarded("book", s.adapter().book(remote))
            .await
            .map_err(|e| upstream_error(&s, e))?;
        s.cache.invalidate("slots|");
        s.cache.invalidate(&format!("appts|{}|", route.nhs));
        self.written(&s, booked, Some(&link), WriteKind::Created)
    }

    fn written(
        &self,
        s: &Supplier,
        mut v: Value,
        link: Option<&PatientLink>,
        kind: WriteKind,
    ) -> ServiceResult<Option<Written>> {
        ids::to_local(&mut v, s.name(), &s.cfg.base_url, link)
            .map_err(|e| upstream_error(s, UpstreamError::Bad(e)))?;
        let stored = ids::stored(&v).ok_or_else(|| {
            upstream_error(s, UpstreamError::Bad("an unmappable resource".into()))
        })?;
        Ok(Some(Written {
            kind,
            stored: Some(stored),
        }))
    }

    /// `PUT Appointment/{supplier}.{id}`: an amendment or a cancellation at
    /// the GP system, at the version the caller saw (`If-Match`) or the
    /// current one.
    pub(crate) async fn bridged_update(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        s: &Arc<Supplier>,
        rid: &str,
        body: Value,
        if_match: Option<crate::model::VersionId>,
    ) -> ServiceResult<Written> {
        ctx.authorize(ty, Action::Update)?;
        if ty != ResourceType::Appointment {
            return Err(ServiceError::MethodNotAllowed(format!(
                "{ty} resources held by {} are not changed through this server",
                s.name()
            )));
        }
        let value = self.checked(
            ty,
            body,
            super::write::WriteTarget::Update(
                &LogicalId::parse(&format!("{}.{rid}", s.name()))
                    .ok_or_else(|| ServiceError::NotFound("Resource not found".into()))?,
            ),
        )?;
        let wants_cancel = value.get("status").and_then(Value::as_str) == Some("cancelled");
        let current = match s
            .guarded("read", s.adapter().read("Appointment", rid))
            .await
        {
            Err(UpstreamError::Unavailable(why)) if wants_cancel => {
                return self.queue_cancel(ctx, s, rid, &value, why).await;
            }
            other => other
                .map_err(|e| upstream_error(s, e))?
                .ok_or_else(|| ServiceError::NotFound("Resource not found".into()))?,
        };
        let remote_version = ids::remote_version(&current).unwrap_or_else(|| "1".into());
        let link = self.link_for(s, &current).await?;
        let mut old = current.clone();
        ids::to_local(&mut old, s.name(), &s.cfg.base_url, link.as_ref())
            .map_err(|e| upstream_error(s, UpstreamError::Bad(e)))?;
        let old_stored =
            ids::stored(&old).ok_or_else(|| ServiceError::NotFound("Resource not found".into()))?;
        if admitted(ctx, old_stored.clone()).is_none() {
            return Err(ServiceError::NotFound("Resource not found".into()));
        }
        if !ctx.permits(ty, Action::Update, old_stored.id.as_str(), &value) {
            return Err(ServiceError::Forbidden(
                "The Appointment is outside what this token may update".into(),
            ));
        }
        if let Some(v) = if_match {
            if v != old_stored.version {
                return Err(ServiceError::PreconditionFailed(format!(
                    "Version mismatch: the current version is {}",
                    old_stored.version
                )));
            }
        }
        let cancel = value.get("status").and_then(Value::as_str) == Some("cancelled")
            && old.get("status").and_then(Value::as_str) != Some("cancelled");
        // GP Connect: a cancellation changes the status and its reason, an
        // amendment the description and comment; nothing else.
        let allowed: &[&str] = if cancel {
            &["status", "cancelationReason"]
        } else {
            &["description", "comment"]
        };
        if let Some(bad) = crate::workflow::fhir::changed(&old, &value)
            .into_iter()
            .find(|k| !allowed.contains(&k.as_str()))
        {
            return Err(super::workflows::refuse(
                if cancel { "cancel" } else { "amend" },
                format!(
                    "{bad} cannot be changed on an appointment at the practice's GP system (a cancellation changes status and cancelationReason, an amendment description and comment)"
                ),
            ));
        }
        let sent = value.clone();
        let mut remote = value;
        ids::to_remote(&mut remote, s.name(), link.as_ref())
            .map_err(|e| super::workflows::refuse("Appointment", e))?;
        let out = match s
            .guarded(
                if cancel { "cancel" } else { "amend" },
                s.adapter()
                    .update_appointment(rid, &remote_version, remote, cancel),
            )
            .await
        {
            Err(UpstreamError::Unavailable(why)) if cancel => {
                return self.queue_cancel(ctx, s, rid, &sent, why).await;
            }
            other => other.map_err(|e| upstream_error(s, e))?,
        };
        s.cache.invalidate("slots|");
        s.cache.invalidate("appts|");
        Ok(self
            .written(s, out, link.as_ref(), WriteKind::Updated)?
            .expect("written is Some"))
    }
}

fn s_stale(s: &Supplier) {
    s.stale_answer();
}

fn empty_page() -> SearchPage {
    SearchPage {
        resources: Vec::new(),
        included: Vec::new(),
        include_truncated: false,
        total: Some(0),
        next: None,
        previous: None,
    }
}

/// The one practice (ODS code) a free-slot search names.
fn practice_named(pairs: &[(String, String)]) -> Option<String> {
    let v = super::booking::practice_param(pairs)?;
    let code = match v.split_once('|') {
        Some((sys, code)) if sys == ODS_SYSTEM || sys.is_empty() => code,
        Some(_) => return None,
        None => v.as_str(),
    };
    (!code.is_empty()).then(|| code.to_owned())
}

/// The window of `param`'s `ge`/`gt` and `le`/`lt` bounds (≤ 14 days for
/// slots; `None` when either is missing).
fn window_of(q: &SearchQuery, param: &str) -> Option<Window> {
    let (mut from, mut to) = (None::<i64>, None::<i64>);
    for p in &q.predicates {
        if let Predicate::Index {
            param: d,
            test: Test::Date(vals),
            not: false,
        } = p
        {
            if d.code != param {
                continue;
            }
            for DateValue { prefix, range } in vals {
                match prefix {
                    Prefix::Ge | Prefix::Gt | Prefix::Sa => {
                        from = Some(from.map_or(range.lo, |f| f.max(range.lo)))
                    }
                    Prefix::Le | Prefix::Lt | Prefix::Eb => {
                        to = Some(to.map_or(range.hi, |t| t.min(range.hi)))
                    }
                    _ => {}
                }
            }
        }
    }
    let (from, to) = (from?, to?);
    if param == "start" && (to - from > SLOT_WINDOW_DAYS * 86_400_000 + 86_400_000 || to < from) {
        return None;
    }
    Some(Window {
        from: ms_to_fhir(from),
        to: ms_to_fhir(to),
    })
}

/// The slots (and their schedules, actors, …) of one practice: a slot's
/// schedule's Location is managed by the Organization with the ODS code.
/// With `sole` (the supplier holds only this practice) undecidable slots stay.
fn only_practice(pool: Vec<Value>, ods: &str, sole: bool) -> Vec<Value> {
    use std::collections::HashMap;
    let key = |v: &Value| {
        format!(
            "{}/{}",
            v.get("resourceType").and_then(Value::as_str).unwrap_or(""),
            v.get("id").and_then(Value::as_str).unwrap_or("")
        )
    };
    let by: HashMap<String, &Value> = pool.iter().map(|v| (key(v), v)).collect();
    let get = |r: Option<&Value>| {
        r.and_then(|r| r.get("reference"))
            .and_then(Value::as_str)
            .and_then(|k| by.get(k).copied())
    };
    let org_ods = |o: &Value| identifiers(o, ODS_SYSTEM).any(|v| v == ods);
    let schedule_ok = |sch: &Value| -> Option<bool> {
        let mut decided = None;
        for a in sch
            .get("actor")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(loc) = get(Some(a))
                .filter(|l| l.get("resourceType").and_then(Value::as_str) == Some("Location"))
            else {
                continue;
            };
            if let Some(org) = get(loc.get("managingOrganization")) {
                if org_ods(org) {
                    return Some(true);
                }
                decided = Some(false);
            }
        }
        decided
    };
    let keep: Vec<bool> = pool
        .iter()
        .map(|v| {
            if v.get("resourceType").and_then(Value::as_str) != Some("Slot") {
                return true;
            }
            match get(v.get("schedule")).map(schedule_ok) {
                Some(Some(ok)) => ok,
                _ => sole,
            }
        })
        .collect();
    drop(by);
    pool.into_iter()
        .zip(keep)
        .filter_map(|(v, k)| k.then_some(v))
        .collect()
}

/// The matches of `query` in `pool` (mapped supplier resources), its
/// includes from the pool, under the caller's admit guard. Every predicate
/// is evaluated in memory with storage's meaning; one this evaluator cannot
/// decide (a chain, `_has`, a number) is a 400 rather than a silent miss.
fn in_memory(
    ctx: &RequestContext,
    s: &Supplier,
    ty: ResourceType,
    query: &SearchQuery,
    pool: &[Value],
    base: &str,
) -> ServiceResult<SearchPage> {
    let all = Predicate::AllOf(query.predicates.clone());
    let mut matched = Vec::new();
    let mut rest = Vec::new();
    for v in pool {
        if crate::bridge::type_of(v) != Some(ty) {
            rest.push(v);
            continue;
        }
        let id = v.get("id").and_then(Value::as_str).unwrap_or("");
        match crate::search::matcher::matches_ref(ty, id, v, base, &all) {
            Some(true) => matched.push(v.clone()),
            Some(false) => {}
            None => {
                return Err(ServiceError::BadRequest(vec![super::OoIssue::error(
                    "not-supported",
                    format!(
                        "This search cannot be answered for a practice on a GP system ({}): it uses a parameter or modifier the bridge does not evaluate",
                        s.name()
                    ),
                )]))
            }
        }
    }
    // Slots (and appointments) in time order, then by id: a stable order to page through.
    let id_of = |v: &Value| v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    matched.sort_by(|a, b| {
        (a.get("start").and_then(Value::as_str), id_of(a))
            .cmp(&(b.get("start").and_then(Value::as_str), id_of(b)))
    });
    // Admitted before counting, so the total holds only what the caller
    // may see; each match becomes a stored resource once.
    let mut matched: Vec<(Value, StoredResource)> = matched
        .into_iter()
        .filter_map(|v| {
            let r = ids::stored(&v)?;
            let admitted =
                ctx.unrestricted() || ctx.admit_listed(&r) == crate::policy::Decision::Permit;
            admitted.then_some((v, r))
        })
        .collect();
    let total = matched.len() as i64;
    // Pages over the ordered matches: a cursor names the id a page ends
    // (or, backwards, starts) at.
    let at = |id: &str| matched.iter().position(|(v, _)| id_of(v) == id);
    let (from, to) = match &query.cursor {
        Some(c) if !c.backwards => {
            let from = at(&c.id).map_or(matched.len(), |i| i + 1);
            (from, (from + query.count).min(matched.len()))
        }
        Some(c) => {
            let to = at(&c.id).unwrap_or(0);
            (to.saturating_sub(query.count), to)
        }
        None => (0, query.count.min(matched.len())),
    };
    let cursor = |backwards: bool, v: &Value| crate::search::types::Cursor {
        backwards,
        keys: Vec::new(),
        id: id_of(v),
    };
    let next = (to < matched.len() && to > from).then(|| cursor(false, &matched[to - 1].0));
    let previous = (from > 0 && from < matched.len()).then(|| cursor(true, &matched[from].0));
    let (matched, resources): (Vec<Value>, Vec<StoredResource>) = matched.drain(from..to).unzip();
    // Only what is returned is audited as read.
    for r in &resources {
        ctx.audit_touch(r, crate::policy::Action::Read);
    }
    let mut included = Vec::new();
    if !query.include.is_empty() {
        let mut wanted: Vec<String> = Vec::new();
        let mut frontier: Vec<&Value> = matched.iter().collect();
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            let mut next = Vec::new();
            for spec in &query.include {
                if round > 0 && !spec.iterate {
                    continue;
                }
                for src in &frontier {
                    if crate::bridge::type_of(src) != Some(spec.source) {
                        continue;
                    }
                    let Some(param) = spec.param else { continue };
                    for r in crate::search::index::extract_params(
                        spec.source,
                        src,
                        base,
                        &[param.code.as_str()],
                    ) {
                        if let crate::search::rows::IndexValue::Reference {
                            target_type,
                            target_id,
                            ..
                        } = &r.value
                        {
                            if spec.target.is_some_and(|t| t.as_str() != target_type) {
                                continue;
                            }
                            wanted.push(format!("{target_type}/{target_id}"));
                        }
                    }
                }
            }
            for v in rest.iter().copied() {
                let k = format!(
                    "{}/{}",
                    v.get("resourceType").and_then(Value::as_str).unwrap_or(""),
                    v.get("id").and_then(Value::as_str).unwrap_or("")
                );
                if wanted.contains(&k) && seen.insert(k) {
                    next.push(v);
                }
            }
            if next.is_empty() {
                break;
            }
            included.extend(next.iter().map(|v| (*v).clone()));
            frontier = next;
            wanted.clear();
        }
    }
    let included = admit_all(ctx, included.iter().filter_map(ids::stored).collect());
    Ok(SearchPage {
        resources,
        included,
        include_truncated: false,
        total: Some(total),
        next,
        previous,
    })
}

impl Service {
    /// Each supplier's health for `/health/ready`: `up`, `degraded` or
    /// `down` (probed at once, each within a second; never fails readiness).
    pub async fn supplier_health(&self) -> Vec<(String, &'static str)> {
        let probes = self.bridge.suppliers().iter().map(|s| async move {
            let state = if s.breaker.state() == crate::bridge::breaker::State::Open {
                "down"
            } else {
                match tokio::time::timeout(
                    Duration::from_secs(1),
                    s.guarded("ping", s.adapter().ping()),
                )
                .await
                {
                    Ok(Ok(())) => s.health(),
                    Ok(Err(e)) if !e.is_fault() => "degraded",
                    _ => "down",
                }
            };
            (s.name().to_owned(), state)
        });
        futures_util::future::join_all(probes).await
    }

    /// Refreshes the outbox gauges (depth by supplier and state, age of the
    /// oldest undelivered item) from the job queue.
    pub async fn refresh_outbox_metrics(&self) {
        if self.bridge.is_empty() {
            return;
        }
        let Some(jobs) = self.backend.jobs() else {
            return;
        };
        let Ok(items) = jobs
            .list(&system_ctx(), Some(crate::bridge::outbox::KIND), 10_000)
            .await
        else {
            return;
        };
        let m = &self.bridge.metrics;
        let now = crate::model::Instant::now().0;
        for s in self.bridge.suppliers() {
            let mine: Vec<_> = items
                .iter()
                .filter(|j| {
                    serde_json::from_str::<crate::bridge::outbox::Params>(&j.params)
                        .is_ok_and(|p| p.supplier == s.name())
                })
                .collect();
            for (state, label) in [
                (crate::storage::JobState::Queued, "queued"),
                (crate::storage::JobState::Running, "running"),
                (crate::storage::JobState::Failed, "dead"),
            ] {
                m.outbox_depth
                    .with_label_values(&[s.name(), label])
                    .set(mine.iter().filter(|j| j.state == state).count() as i64);
            }
            let oldest = mine
                .iter()
                .filter(|j| j.state != crate::storage::JobState::Done)
                .map(|j| j.created_at)
                .min()
                .map(|t| (now - t).max(0) / 1000)
                .unwrap_or(0);
            m.outbox_oldest.with_label_values(&[s.name()]).set(oldest);
        }
    }
}

impl Service {
    /// A cancellation the GP system cannot take now: recorded as a local
    /// Task (queued, with its outbox item in the same transaction) and
    /// answered 202 with that Task. Only the caller's own content is
    /// checked here (the patient named must be one it may act for, at a
    /// practice of this supplier); the delivery cancels only if the GP
    /// system confirms the appointment is that patient's.
    async fn queue_cancel(
        &self,
        ctx: &RequestContext,
        s: &Arc<Supplier>,
        rid: &str,
        value: &Value,
        why: String,
    ) -> ServiceResult<Written> {
        use crate::bridge::outbox;
        let unavailable = || upstream_error(s, UpstreamError::Unavailable(why.clone()));
        let patient = participant_patients(value).into_iter().next();
        let Some(patient) = patient else {
            return Err(unavailable());
        };
        ctx.may_act_for(&patient)?;
        let id = format!("{}.{rid}", s.name());
        if !ctx.permits(ResourceType::Appointment, Action::Update, &id, value) {
            return Err(ServiceError::Forbidden(
                "The Appointment is outside what this token may update".into(),
            ));
        }
        match self.practice_of(&patient).await? {
            Some((ods, _)) if s.cfg.ods_codes.contains(&ods) => {}
            _ => return Err(unavailable()),
        }
        let reason = value
            .pointer("/cancelationReason/text")
            .and_then(Value::as_str)
            .unwrap_or("Cancelled by the patient");
        let task = json!({
            "resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": outbox::OPERATION_SYSTEM, "code": outbox::CANCEL_APPOINTMENT,
                                 "display": "Cancel the appointment at the practice's GP system"}]},
            "for": {"reference": format!("Patient/{patient}")},
            "focus": {"reference": format!("Appointment/{id}")},
            "authoredOn": crate::model::Instant::now().to_fhir(),
            "input": [{"type": {"text": "cancelationReason"}, "valueString": reason}]
        });
        let base = self.settings.server.offline_base();
        let written = self
            .create(&system_ctx(), ResourceType::Task, task, None, &base)
            .await?;
        Ok(Written {
            kind: WriteKind::Queued,
            stored: written.stored,
        })
    }
}

/// Inside the transaction of a queued cancellation's Task: only the server
/// creates one (after the caller's checks, `Service::queue_cancel`); it gets
/// its idempotency key, its delivery status and its outbox item here.
pub(crate) fn queue_cancellation(
    tx: &mut dyn crate::storage::TxOps,
    change: super::workflows::Change<'_>,
) -> ServiceResult<()> {
    use crate::bridge::outbox;
    let super::workflows::Change {
        bridge,
        id,
        old,
        new,
        ..
    } = change;
    let Some(task) = new else { return Ok(()) };
    if old.is_some() {
        return Ok(());
    }
    if !matches!(tx.ctx().principal, crate::context::Principal::System { .. }) {
        return Err(super::workflows::refuse(
            "code",
            "queued cancellations are created by the server when a practice's GP system is unavailable",
        ));
    }
    let focus = task
        .get("focus")
        .and_then(|f| crate::workflow::fhir::ref_id(f, "Appointment"))
        .unwrap_or_default();
    let Some((s, _)) = bridge.remote_id(&focus) else {
        return Err(super::workflows::refuse(
            "focus",
            "the focus is not an appointment at a GP system",
        ));
    };
    tx.lock(&format!("bridge|cancel|{focus}"))
        .map_err(super::transaction::storage_err)?;
    let ident =
        json!({"system": outbox::IDEMPOTENCY_SYSTEM, "value": uuid::Uuid::new_v4().to_string()});
    task["identifier"] = json!([ident]);
    task["businessStatus"] = outbox::business_status("queued");
    tx.enqueue(outbox::new_job(
        s.name(),
        id.as_str(),
        s.cfg.outbox_max_attempts,
    ))
    .map_err(super::transaction::storage_err)?;
    Ok(())
}
