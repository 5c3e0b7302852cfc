//! A simulated GP system speaking **GP Connect** (FHIR STU3 3.0.1): the
//! "sandbox supplier" the bridge talks to in tests and demos.
//!
//! It follows the GP Connect specification (`nhsconnect/gpconnect`: master =
//! Foundations and Appointment Management 1.2.7, `feature/1.6.2` = Access
//! Record Structured), not any consumer's assumptions. The FHIR base is
//! `http://{listen}/fhir`; everything is STU3 JSON
//! (`application/fhir+json;charset=utf-8`).
//!
//! # What every `/fhir` request must carry
//!
//! `Ssp-TraceID` (a UUID), `Ssp-From` (an ASID), `Ssp-To` (the sandbox's
//! ASID, [`SandboxOptions::asid`]), `Ssp-InteractionID` (the interaction of
//! the URL and verb) and `Authorization: Bearer <JWT>`, the unsigned
//! (`alg: none`) GP Connect audit token; see [`ssp`] for every claim check.
//! Failures are 400 `BAD_REQUEST`. Errors are always a
//! `GPConnect-OperationOutcome-1` with a Spine error code
//! ([`outcome::GpcError`]).
//!
//! # Interactions
//!
//! | request | `Ssp-InteractionID` |
//! | --- | --- |
//! | `GET /metadata` | `…:fhir:rest:read:metadata-1` (or `…:structured:fhir:rest:read:metadata-1`) |
//! | `GET /Patient?identifier=https://fhir.nhs.uk/Id/nhs-number\|{nhs}` | `…:rest:search:patient-1` |
//! | `GET /Patient/{id}` | `…:rest:read:patient-1` |
//! | `GET /Practitioner?identifier=https://fhir.nhs.uk/Id/sds-user-id\|{id}`, `GET /Practitioner/{id}` | `…:rest:search:practitioner-1`, `…:rest:read:practitioner-1` |
//! | `GET /Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code\|{ods}`, `GET /Organization/{id}` | `…:rest:search:organization-1`, `…:rest:read:organization-1` |
//! | `GET /Location/{id}` | `…:rest:read:location-1` |
//! | `GET /Slot?status=free&start=ge…&end=le…&_include=Slot:schedule[…]` | `…:rest:search:slot-1` |
//! | `POST /Appointment` | `…:rest:create:appointment-1` |
//! | `GET /Appointment/{id}` | `…:rest:read:appointment-1` |
//! | `PUT /Appointment/{id}` + `If-Match` | `…:rest:update:appointment-1` (amend) or `…:rest:cancel:appointment-1` (cancel) |
//! | `GET /Patient/{id}/Appointment?start=ge…&start=le…` | `…:rest:search:patient_appointments-1` |
//! | `POST /Patient/$gpc.getstructuredrecord` | `…:fhir:operation:gpc.getstructuredrecord-1` |
//! | `POST /Task`, `GET /Task?identifier=…`, `GET /Task/{id}` | `urn:fhirbridge:sandbox:rest:create:task-1`, `…:search:task-1`, `…:read:task-1` |
//!
//! (`…` = `urn:nhs:names:services:gpconnect`.)
//!
//! # Sandbox extension: repeat prescription requests (not GP Connect)
//!
//! GP Connect STU3 has **no prescription ordering**; real GP systems take
//! repeat requests through IM1 or the GP Connect Patient Facing APIs. So the
//! sandbox adds STU3 `Task`s (`tasks.rs`): `status=requested`,
//! `intent=order`, `code` SNOMED CT 103742009, `for` → the Patient, `focus`
//! → an active repeat authorisation (`MedicationRequest` `intent=plan`) of
//! that patient (else 422 `INVALID_RESOURCE`), and an `identifier` that is
//! the idempotency key: the same identifier again answers 200 with the
//! existing Task and creates nothing.
//!
//! # Admin (no SSP headers)
//!
//! `GET`/`PUT /admin/faults` (`latency_ms`, `error_rate`, `down`, `hostile`:
//! `invalid-json` | `wrong-type` | `huge` | `redirect` | `drip`),
//! `GET /admin/stats`, `POST /admin/reset` (the seeded state, no faults,
//! zeroed counters). Faults apply before any validation: `down` is an
//! immediate 503 without a body; otherwise `latency_ms` delays the answer,
//! `hostile` replaces it, and `error_rate` answers that fraction of
//! requests (every k-th, deterministically) with 500
//! `INTERNAL_SERVER_ERROR` before they are processed. Every `/fhir` request
//! counts in the stats, faulted or not (`task_posts` counts every
//! `POST /Task` received; `tasks_created` the Tasks made).
//!
//! # Seeded state (deterministic; dates relative to today, UTC)
//!
//! For each ODS code `{ods}` in [`SandboxOptions::ods_codes`]: Organization
//! `org-{ods}`, Location `loc-{ods}`, Practitioners `prac-{ods}-gp` and
//! `prac-{ods}-nurse` (SDS user ids `5550000000{n}1` and `5550000000{n}2`
//! for the n-th practice), PractitionerRole `role-{ods}-gp`, Schedules
//! `sched-{ods}-gp` ("General Practitioner Appointment", "Morning surgery")
//! and `sched-{ods}-nurse` ("Nurse clinic", "Practice nurse clinic"), and on
//! weekdays from today for [`SandboxOptions::days`] days 15-minute free
//! slots 09:00–12:00 UTC per schedule, `slot-{ods}-{gp|nurse}-{yyyymmdd}-{hhmm}`
//! (times rendered in UK local time). GP delivery channels: 09–10
//! In-person, 10–11 Telephone, 11–12 Video; nurse: 09–11 In-person, 11–12
//! Telephone. Patients `pat-{nhs}`: 9000000009 and 9000000017 at the first
//! practice, 9000000025 and 9000000033 at the second, each with
//! [`SandboxOptions::repeat_plans`] repeat authorisations
//! (`medreq-{nhs}-{n}-plan`), one issue each (`medreq-{nhs}-{n}-issue-1`),
//! a MedicationStatement (`medstmt-{nhs}-{n}`), Medications `med-{dm+d code}`
//! and one active AllergyIntolerance (`allergy-{nhs}-1`).
//!
//! # Deviations from the spec (deliberate)
//!
//! * One sandbox serves every practice: a slot search returns all
//!   practices' slots (tell them apart by the included Organization's ODS
//!   code); `searchFilter` is accepted and ignored (no slot is restricted).
//! * `aud` must be an absolute http(s) URL but is not compared with the
//!   sandbox's own address.
//! * A stale `If-Match` is 409 `FHIR_CONSTRAINT_VIOLATION` (the spec gives
//!   409 and no code; the provider test pack expects this one); a missing
//!   `If-Match` is 400 `BAD_REQUEST`.
//! * The contained booking Organization's `type` is not compared with the
//!   slot search's `searchFilter`.
//! * Structured record: only allergies and medication are modelled; see
//!   `structured.rs` for how other parameters are answered. As the
//!   structured-record pages require, its Lists have no `id` and its
//!   MedicationStatements, MedicationRequests, Medications,
//!   AllergyIntolerances and Lists carry no `meta.versionId` or
//!   `meta.lastUpdated` in the Bundle (they are versioned in the store),
//!   entries have no `fullUrl` and the Bundle id is the `Ssp-TraceID`.
//! * Reading an appointment that has started is 422 `INVALID_RESOURCE` (the
//!   spec asks for an error without naming the code).
//! * Times are UK local (`+00:00`/`+01:00`) as the spec asks; the slots are
//!   09:00–12:00 **UTC** (10:00–13:00 local in summer).
//! * The nurse's SDS job role is text only ("Practice Nurse").
//! * Only `application/fhir+json` bodies are read (no XML); the request body
//!   limit is 1 MiB.

mod admin;
mod appointments;
mod foundations;
pub mod outcome;
mod seed;
mod slots;
pub mod ssp;
mod store;
mod structured;
mod tasks;
mod time;

#[cfg(test)]
mod tests;

use std::net::TcpListener;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use outcome::GpcError;
use store::Store;

/// The Content-Type of every FHIR answer.
pub const FHIR_JSON: &str = "application/fhir+json;charset=utf-8";
/// The largest request body read (1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// How the sandbox is seeded and addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOptions {
    /// One practice per ODS code (patients are seeded at the first two).
    pub ods_codes: Vec<String>,
    /// The provider ASID requests must name in `Ssp-To`.
    pub asid: String,
    /// Repeat authorisations per seeded patient.
    pub repeat_plans: usize,
    /// Days of slots from today (weekdays only get slots).
    pub days: u32,
}

impl Default for SandboxOptions {
    fn default() -> SandboxOptions {
        SandboxOptions {
            ods_codes: vec!["A81002".to_string(), "A81003".to_string()],
            asid: "918999198993".to_string(),
            repeat_plans: 3,
            days: 21,
        }
    }
}

/// Serves the sandbox on `listener` until the process stops.
pub async fn serve(listener: TcpListener, opts: SandboxOptions) -> std::io::Result<()> {
    if opts.ods_codes.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the sandbox needs at least one ODS code",
        ));
    }
    let sandbox = web::Data::new(Sandbox::new(opts));
    HttpServer::new(move || {
        let sandbox = sandbox.clone();
        App::new().configure(move |cfg| configure(cfg, sandbox))
    })
    .listen(listener)?
    .run()
    .await
}

/// The shared state: the options and the store behind one mutex (bookings
/// and Task creation check and write under it, so they are atomic).
#[derive(Debug)]
pub struct Sandbox {
    opts: SandboxOptions,
    state: Mutex<Store>,
}

impl Sandbox {
    pub fn new(opts: SandboxOptions) -> Sandbox {
        Sandbox {
            state: Mutex::new(Store::new(opts.clone(), Utc::now())),
            opts,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Registers the sandbox's routes (`/fhir/…`, `/admin/…`) on an App.
pub fn configure(cfg: &mut web::ServiceConfig, sandbox: web::Data<Sandbox>) {
    cfg.app_data(sandbox)
        .route("/admin/faults", web::get().to(admin::get_faults))
        .route("/admin/faults", web::put().to(admin::put_faults))
        .route("/admin/stats", web::get().to(admin::stats))
        .route("/admin/reset", web::post().to(admin::reset))
        .route("/fhir", web::route().to(fhir_entry))
        .route("/fhir/{tail:.*}", web::route().to(fhir_entry));
}

/// A successful answer: a resource or Bundle, and `Location` for a create.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub location: Option<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            location: None,
        }
    }

    pub fn created(body: Value, location: String) -> Reply {
        Reply {
            status: StatusCode::CREATED,
            body,
            location: Some(location),
        }
    }

    fn into_response(self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.content_type(FHIR_JSON);
        if self.body["resourceType"].as_str() != Some("Bundle") {
            if let Some(v) = self.body.pointer("/meta/versionId").and_then(Value::as_str) {
                r.insert_header(("ETag", format!("W/\"{v}\"")));
            }
        }
        if let Some(l) = self.location {
            r.insert_header(("Location", l));
        }
        r.body(self.body.to_string())
    }
}

fn error_response(e: &GpcError) -> HttpResponse {
    HttpResponse::build(e.status)
        .content_type(FHIR_JSON)
        .body(e.to_resource().to_string())
}

/// A `searchset` Bundle of `matches` and `includes`.
pub fn searchset(base: &str, matches: Vec<Value>, includes: Vec<Value>) -> Value {
    let total = matches.len();
    let entry = |mode: &str| {
        let mode = mode.to_string();
        move |r: Value| {
            json!({
                "fullUrl": format!(
                    "{base}/{}/{}",
                    r["resourceType"].as_str().unwrap_or_default(),
                    r["id"].as_str().unwrap_or_default()
                ),
                "resource": r,
                "search": {"mode": mode},
            })
        }
    };
    let entries: Vec<Value> = matches
        .into_iter()
        .map(entry("match"))
        .chain(includes.into_iter().map(entry("include")))
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-Searchset-Bundle-1"]},
        "type": "searchset",
        "total": total,
    });
    // FHIR JSON has no empty arrays: an empty searchset has no `entry`.
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

/// The FHIR endpoints, by URL and verb.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Metadata,
    PatientSearch,
    PatientRead(String),
    PatientAppointments(String),
    StructuredRecord,
    PractitionerSearch,
    PractitionerRead(String),
    OrganizationSearch,
    OrganizationRead(String),
    LocationRead(String),
    SlotSearch,
    AppointmentCreate,
    AppointmentRead(String),
    AppointmentPut(String),
    TaskCreate,
    TaskSearch,
    TaskRead(String),
}

const KNOWN_PATHS: [&str; 8] = [
    "metadata",
    "Patient",
    "Practitioner",
    "Organization",
    "Location",
    "Slot",
    "Appointment",
    "Task",
];

impl Route {
    fn parse(method: &Method, path: &str) -> Result<Route, GpcError> {
        let rest = path.strip_prefix("/fhir").unwrap_or(path);
        let segs: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let (get, post, put) = (
            method == Method::GET,
            method == Method::POST,
            method == Method::PUT,
        );
        let id = |s: &str| s.to_string();
        Ok(match segs.as_slice() {
            ["metadata"] if get => Route::Metadata,
            ["Patient"] if get => Route::PatientSearch,
            ["Patient", "$gpc.getstructuredrecord"] if post => Route::StructuredRecord,
            ["Patient", p] if get && !p.starts_with('$') => Route::PatientRead(id(p)),
            ["Patient", p, "Appointment"] if get => Route::PatientAppointments(id(p)),
            ["Practitioner"] if get => Route::PractitionerSearch,
            ["Practitioner", p] if get => Route::PractitionerRead(id(p)),
            ["Organization"] if get => Route::OrganizationSearch,
            ["Organization", p] if get => Route::OrganizationRead(id(p)),
            ["Location", p] if get => Route::LocationRead(id(p)),
            ["Slot"] if get => Route::SlotSearch,
            ["Appointment"] if post => Route::AppointmentCreate,
            ["Appointment", p] if get => Route::AppointmentRead(id(p)),
            ["Appointment", p] if put => Route::AppointmentPut(id(p)),
            ["Task"] if post => Route::TaskCreate,
            ["Task"] if get => Route::TaskSearch,
            ["Task", p] if get => Route::TaskRead(id(p)),
            [first, ..] if KNOWN_PATHS.contains(first) => {
                return Err(GpcError::bad_request(format!(
                    "{method} {path} is not a GP Connect interaction"
                )))
            }
            _ => {
                return Err(GpcError::not_implemented(format!(
                    "{method} {path} is not implemented"
                )))
            }
        })
    }

    /// The interaction IDs this URL and verb can be.
    fn interactions(&self) -> &'static [&'static str] {
        use ssp::*;
        match self {
            Route::Metadata => &[METADATA, STRUCTURED_METADATA],
            Route::PatientSearch => &[SEARCH_PATIENT],
            Route::PatientRead(_) => &[READ_PATIENT],
            Route::PatientAppointments(_) => &[SEARCH_PATIENT_APPOINTMENTS],
            Route::StructuredRecord => &[GET_STRUCTURED_RECORD],
            Route::PractitionerSearch => &[SEARCH_PRACTITIONER],
            Route::PractitionerRead(_) => &[READ_PRACTITIONER],
            Route::OrganizationSearch => &[SEARCH_ORGANIZATION],
            Route::OrganizationRead(_) => &[READ_ORGANIZATION],
            Route::LocationRead(_) => &[READ_LOCATION],
            Route::SlotSearch => &[SEARCH_SLOT],
            Route::AppointmentCreate => &[CREATE_APPOINTMENT],
            Route::AppointmentRead(_) => &[READ_APPOINTMENT],
            Route::AppointmentPut(_) => &[UPDATE_APPOINTMENT, CANCEL_APPOINTMENT],
            Route::TaskCreate => &[CREATE_TASK],
            Route::TaskSearch => &[SEARCH_TASK],
            Route::TaskRead(_) => &[READ_TASK],
        }
    }

    /// The stats key: the interaction sent when it fits the URL, else the
    /// URL's (first) interaction.
    fn stats_key(&self, sent: &str) -> &'static str {
        let ids = self.interactions();
        ids.iter().find(|i| **i == sent).unwrap_or(&ids[0])
    }

    fn returns_bundle(&self) -> bool {
        matches!(
            self,
            Route::PatientSearch
                | Route::PatientAppointments(_)
                | Route::StructuredRecord
                | Route::PractitionerSearch
                | Route::OrganizationSearch
                | Route::SlotSearch
                | Route::TaskSearch
        )
    }
}

/// Every `/fhir` request: counters, faults, then [`handle`].
async fn fhir_entry(
    req: HttpRequest,
    mut payload: web::Payload,
    sb: web::Data<Sandbox>,
) -> HttpResponse {
    let route = Route::parse(req.method(), req.path());
    let sent = req
        .headers()
        .get("Ssp-InteractionID")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_string();
    let (faults, fail) = {
        let mut st = sb.lock();
        st.stats.requests += 1;
        let key = route.as_ref().map_or("unknown", |r| r.stats_key(&sent));
        *st.stats.by_interaction.entry(key.to_string()).or_default() += 1;
        if route == Ok(Route::TaskCreate) {
            st.stats.task_posts += 1;
        }
        if st.faults.down {
            return HttpResponse::ServiceUnavailable().finish();
        }
        let fail = st.next_request_fails();
        (st.faults.clone(), fail)
    };
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if let Some(kind) = faults.hostile {
        let bundle = route.as_ref().map_or(true, Route::returns_bundle);
        return admin::hostile(kind, bundle);
    }
    if fail {
        return error_response(&GpcError::internal(
            "injected fault (error_rate): the sandbox failed this request on purpose",
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(bytes) if body.len() + bytes.len() <= MAX_BODY => body.extend_from_slice(&bytes),
            Ok(_) => {
                return error_response(&GpcError::bad_request(format!(
                    "the request body is larger than {MAX_BODY} bytes"
                )))
            }
            Err(e) => {
                return error_response(&GpcError::bad_request(format!(
                    "the request body could not be read: {e}"
                )))
            }
        }
    }
    match handle(&req, route, &body, &sb) {
        Ok(reply) => reply.into_response(),
        Err(e) => error_response(&e),
    }
}

fn parse_query(q: &str) -> Result<Vec<(String, String)>, GpcError> {
    serde_urlencoded::from_str(q)
        .map_err(|e| GpcError::bad_request(format!("the query string is malformed: {e}")))
}

fn parse_json(body: &[u8]) -> Result<Value, GpcError> {
    serde_json::from_slice(body)
        .map_err(|e| GpcError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Validates the SSP headers and JWT, then answers the request.
fn handle(
    req: &HttpRequest,
    route: Result<Route, GpcError>,
    body: &[u8],
    sb: &Sandbox,
) -> Result<Reply, GpcError> {
    let route = route?;
    let interaction = ssp::check_headers(req, &sb.opts.asid, route.interactions())?;
    let authorization = req
        .headers()
        .get("Authorization")
        .map(|v| {
            v.to_str()
                .map_err(|_| GpcError::bad_request("the Authorization header is not text"))
        })
        .transpose()?;
    let now = Utc::now();
    ssp::check_jwt(authorization, ssp::scope_for(interaction), now.timestamp())?;
    let query = parse_query(req.query_string())?;
    let info = req.connection_info();
    let base = format!("{}://{}/fhir", info.scheme(), info.host());
    let json_body = match route {
        Route::AppointmentCreate | Route::AppointmentPut(_) | Route::TaskCreate => {
            Some(parse_json(body)?)
        }
        Route::StructuredRecord => Some(serde_json::from_slice::<Value>(body).map_err(|e| {
            GpcError::invalid_resource(format!("the Parameters resource could not be parsed: {e}"))
        })?),
        _ => None,
    };
    let body = json_body.unwrap_or(Value::Null);
    let mut st = sb.lock();
    match route {
        Route::Metadata => Ok(Reply::ok(foundations::capability_statement(&time::uk(
            st.seeded_at,
        )))),
        Route::PatientSearch => foundations::find_patient(&st, &query, &base),
        Route::PatientRead(id) => foundations::read(&st, "Patient", &id),
        Route::PatientAppointments(id) => appointments::for_patient(&st, &id, &query, now, &base),
        Route::StructuredRecord => {
            let q = structured::parse(&body, now)?;
            let trace = req
                .headers()
                .get("Ssp-TraceID")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim()
                .to_string();
            structured::build(&st, &q, &trace, now)
        }
        Route::PractitionerSearch => {
            foundations::find_by_identifier(&st, "Practitioner", &query, &base)
        }
        Route::PractitionerRead(id) => foundations::read(&st, "Practitioner", &id),
        Route::OrganizationSearch => {
            foundations::find_by_identifier(&st, "Organization", &query, &base)
        }
        Route::OrganizationRead(id) => foundations::read(&st, "Organization", &id),
        Route::LocationRead(id) => foundations::read(&st, "Location", &id),
        Route::SlotSearch => slots::search(&st, &query, &base),
        Route::AppointmentCreate => appointments::book(&mut st, &body, now, &base),
        Route::AppointmentRead(id) => appointments::read(&st, &id, now),
        Route::AppointmentPut(id) => {
            let if_match = req.headers().get("If-Match").and_then(|v| v.to_str().ok());
            appointments::update(&mut st, &id, &body, interaction, if_match, now)
        }
        Route::TaskCreate => tasks::create(&mut st, &body, now, &base),
        Route::TaskSearch => tasks::search(&st, &query, &base),
        Route::TaskRead(id) => tasks::read(&st, &id),
    }
}
