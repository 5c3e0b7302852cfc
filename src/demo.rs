//! `fhirbridge demo seed` and `fhirbridge demo token`: one demo practice, so
//! a new user can walk the booking, repeat-prescription and triage journeys
//! with curl in minutes.
//!
//! The seed writes through the service layer with the `System` context, as
//! one transaction Bundle of PUTs to fixed, readable ids (the same write path,
//! validation and rules as `POST /fhir` and `fhirbridge import`). Resources
//! already stored are left alone (a booked slot stays booked, an approved
//! repeat keeps its issue count), so re-running adds only what is missing:
//! on a later day, the new days' slots.
//!
//! What it holds: the practice (Organization `demo-practice`, ODS `A81001`,
//! with its booking rules), its Location, two GPs and a nurse with one
//! Schedule each, two weeks of 15-minute slots (weekdays 08:00–18:00 UTC,
//! from now on), two patients registered there, each with two repeat
//! authorisations (one with issues left, one with none) and one issued
//! prescription, and the practice's triage Questionnaire.
//!
//! Tokens: [`sign_token`] signs a demo access token with the server's own key
//! ([`crate::auth::keys`]) for the issuer and audience a server with the same
//! settings expects. They are demo credentials, printed on request only;
//! nothing here logs them.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use serde_json::{json, Value};

use crate::auth::keys::{KeyLocation, ServerKeys};
use crate::config::Settings;
use crate::context::RequestContext;
use crate::model::{LogicalId, ResourceType};
use crate::service::read::Found;
use crate::service::{ReturnPref, Service, ServiceError};

pub const PRACTICE_ID: &str = "demo-practice";
pub const LOCATION_ID: &str = "demo-location";
pub const ODS_CODE: &str = "A81001";
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const SDS_USER_ID_SYSTEM: &str = "https://fhir.nhs.uk/Id/sds-user-id";
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const SERVICE_TYPE_SYSTEM: &str = "https://fhirbridge.dev/fhir/CodeSystem/service-type";
pub const DELIVERY_CHANNEL_URL: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DeliveryChannel";
pub const DELIVERY_CHANNEL_SYSTEM: &str =
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-DeliveryChannel";
pub const BOOKING_RULES_URL: &str =
    "https://fhirbridge.dev/fhir/StructureDefinition/practice-booking-rules";
pub const REPEAT_INFORMATION_URL: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation";
pub const REVIEW_DATE_URL: &str =
    "https://fhirbridge.dev/fhir/StructureDefinition/medication-review-date";
pub const TRIAGE_QUESTIONNAIRE_URL: &str = "https://fhirbridge.dev/fhir/Questionnaire/gp-triage";
/// The id the triage Questionnaire is stored under.
pub const TRIAGE_QUESTIONNAIRE_ID: &str = "gp-triage";

/// Calendar days of slots from today (UTC), weekends skipped.
pub const SLOT_DAYS: i64 = 14;
/// Minutes per slot.
pub const SLOT_MINUTES: i64 = 15;
/// The working day, UTC: slots start at 08:00 and the last ends at 18:00.
pub const DAY_START_HOUR: u32 = 8;
pub const DAY_END_HOUR: u32 = 18;
/// Slots per clinician per weekday.
pub const SLOTS_PER_DAY: usize =
    ((DAY_END_HOUR - DAY_START_HOUR) as i64 * 60 / SLOT_MINUTES) as usize;
/// Demo tokens' default lifetime, and the most `--hours` may ask for.
pub const DEFAULT_TOKEN_HOURS: u32 = 12;
pub const MAX_TOKEN_HOURS: u32 = 24;

const TRIAGE_QUESTIONNAIRE: &str = include_str!("../fixtures/triage/questionnaire-triage.json");

/// A bookable service (`Slot.serviceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    GpConsultation,
    NurseClinic,
    BloodTest,
}

impl ServiceType {
    pub fn code(self) -> &'static str {
        match self {
            ServiceType::GpConsultation => "gp-consultation",
            ServiceType::NurseClinic => "nurse-clinic",
            ServiceType::BloodTest => "blood-test",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            ServiceType::GpConsultation => "GP consultation",
            ServiceType::NurseClinic => "Nurse clinic",
            ServiceType::BloodTest => "Blood test",
        }
    }

    fn coding(self) -> Value {
        json!({"system": SERVICE_TYPE_SYSTEM, "code": self.code(), "display": self.display()})
    }

    fn concept(self) -> Value {
        json!({"coding": [self.coding()], "text": self.display()})
    }
}

/// A clinician of the demo practice, with the Schedule of their slots.
#[derive(Debug, Clone, Copy)]
pub struct Clinician {
    pub id: &'static str,
    pub schedule: &'static str,
    pub sds_user_id: &'static str,
    pub prefix: &'static str,
    pub given: &'static str,
    pub family: &'static str,
    pub gender: &'static str,
    /// The service of their slots.
    pub service: ServiceType,
    /// Also offered, in the first two hours of each day (GP 2's blood tests).
    pub early_service: Option<ServiceType>,
}

pub const CLINICIANS: [Clinician; 3] = [
    Clinician {
        id: "demo-gp-1",
        schedule: "demo-schedule-gp-1",
        sds_user_id: "555000000101",
        prefix: "Dr",
        given: "Amira",
        family: "Khan",
        gender: "female",
        service: ServiceType::GpConsultation,
        early_service: None,
    },
    Clinician {
        id: "demo-gp-2",
        schedule: "demo-schedule-gp-2",
        sds_user_id: "555000000102",
        prefix: "Dr",
        given: "Tom",
        family: "Evans",
        gender: "male",
        service: ServiceType::GpConsultation,
        early_service: Some(ServiceType::BloodTest),
    },
    Clinician {
        id: "demo-nurse-1",
        schedule: "demo-schedule-nurse-1",
        sds_user_id: "555000000103",
        prefix: "Nurse",
        given: "Grace",
        family: "Adeyemi",
        gender: "female",
        service: ServiceType::NurseClinic,
        early_service: None,
    },
];

/// A repeat authorisation (`MedicationRequest` `intent=plan`).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub id: &'static str,
    /// dm+d VMP code and name.
    pub dmd_code: &'static str,
    pub medication: &'static str,
    pub dosage: &'static str,
    /// `dispenseRequest.numberOfRepeatsAllowed`: issues allowed.
    pub allowed: u32,
    /// `numberOfPrescriptionsIssued`.
    pub issued: u32,
    /// The issued prescription (`intent=order`) seeded for this plan, if any.
    pub order: Option<&'static str>,
}

/// A demo patient, registered at the demo practice.
#[derive(Debug, Clone, Copy)]
pub struct DemoPatient {
    pub id: &'static str,
    pub nhs_number: &'static str,
    pub given: &'static str,
    pub family: &'static str,
    pub gender: &'static str,
    pub birth_date: &'static str,
    /// Who authorised the repeats.
    pub requester: &'static str,
    /// The first has issues left, the second none.
    pub plans: [Plan; 2],
}

pub const PATIENTS: [DemoPatient; 2] = [
    DemoPatient {
        id: "demo-patient-1",
        nhs_number: "9990000018",
        given: "Olivia",
        family: "Bennett",
        gender: "female",
        birth_date: "1985-04-12",
        requester: "demo-gp-1",
        plans: [
            Plan {
                id: "demo-plan-1-simvastatin",
                dmd_code: "320000009",
                medication: "Simvastatin 40mg tablets",
                dosage: "One tablet at night",
                allowed: 6,
                issued: 1,
                order: Some("demo-order-1-simvastatin"),
            },
            Plan {
                id: "demo-plan-1-salbutamol",
                dmd_code: "39113611000001102",
                medication: "Salbutamol 100micrograms/dose inhaler CFC free",
                dosage: "Two puffs when required for breathlessness, up to four times a day",
                allowed: 3,
                issued: 3,
                order: None,
            },
        ],
    },
    DemoPatient {
        id: "demo-patient-2",
        nhs_number: "9990000026",
        given: "Samuel",
        family: "Okafor",
        gender: "male",
        birth_date: "1972-11-03",
        requester: "demo-gp-2",
        plans: [
            Plan {
                id: "demo-plan-2-salbutamol",
                dmd_code: "39113611000001102",
                medication: "Salbutamol 100micrograms/dose inhaler CFC free",
                dosage: "Two puffs when required for breathlessness, up to four times a day",
                allowed: 6,
                issued: 1,
                order: Some("demo-order-2-salbutamol"),
            },
            Plan {
                id: "demo-plan-2-paracetamol",
                dmd_code: "322236009",
                medication: "Paracetamol 500mg tablets",
                dosage: "One or two tablets up to four times a day when required for pain",
                allowed: 2,
                issued: 2,
                order: None,
            },
        ],
    },
];

/// NHS number Modulus 11 check (10 digits, the last the check digit).
pub fn nhs_number_valid(s: &str) -> bool {
    fhir_validation::nhs::nhs_number_valid(s)
}

/// The start of every demo slot from `now` on: weekdays of the
/// [`SLOT_DAYS`] calendar days from `now`'s date (UTC), 08:00 to 18:00 in
/// [`SLOT_MINUTES`] steps, only those starting after `now`. In order.
pub fn slot_starts(now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let today = now.date_naive();
    let mut out = Vec::new();
    for d in 0..SLOT_DAYS {
        let day = today + Duration::days(d);
        if matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            continue;
        }
        let Some(opening) = day.and_hms_opt(DAY_START_HOUR, 0, 0) else {
            continue;
        };
        let opening = Utc.from_utc_datetime(&opening);
        for i in 0..SLOTS_PER_DAY as i64 {
            let start = opening + Duration::minutes(i * SLOT_MINUTES);
            if start > now {
                out.push(start);
            }
        }
    }
    out
}

/// `slot-{schedule}-{yyyymmddHHMM}` (UTC): the same slot has the same id on
/// every run.
pub fn slot_id(schedule: &str, start: DateTime<Utc>) -> String {
    format!("slot-{schedule}-{}", start.format("%Y%m%d%H%M"))
}

/// How a slot at `start` is delivered: face to face in the morning,
/// telephone over lunch and early afternoon, video late afternoon (UTC):
/// `In-person` 08:00–12:00, `Telephone` 12:00–15:00, `Video` 15:00–18:00.
pub fn delivery_channel(start: DateTime<Utc>) -> &'static str {
    match chrono::Timelike::hour(&start) {
        h if h < 12 => "In-person",
        h if h < 15 => "Telephone",
        _ => "Video",
    }
}

/// The service of `clinician`'s slot at `start`.
pub fn service_at(clinician: &Clinician, start: DateTime<Utc>) -> ServiceType {
    match clinician.early_service {
        Some(s) if chrono::Timelike::hour(&start) < DAY_START_HOUR + 2 => s,
        _ => clinician.service,
    }
}

/// FHIR instant text, UTC, seconds precision.
fn instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// `text`: generated narrative (`dom-6` wants one on every resource).
fn narrative(text: &str) -> Value {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    json!({
        "status": "generated",
        "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{escaped}</div>"),
    })
}

fn channel_extension(code: &str) -> Value {
    json!({
        "url": DELIVERY_CHANNEL_URL,
        "valueCodeableConcept": {"coding": [{"system": DELIVERY_CHANNEL_SYSTEM, "code": code, "display": code}]},
    })
}

fn practice_address() -> Value {
    json!([{
        "use": "work",
        "line": ["1 Demo Street"],
        "city": "Leeds",
        "postalCode": "LS1 4AP",
        "country": "GB",
    }])
}

fn organization() -> Value {
    let st = |s: ServiceType| json!({"url": "onlineServiceType", "valueCoding": s.coding()});
    json!({
        "resourceType": "Organization",
        "id": PRACTICE_ID,
        "text": narrative("Demo Surgery (ODS A81001), a demo GP practice, with its online booking rules"),
        "extension": [{
            "url": BOOKING_RULES_URL,
            "extension": [
                {"url": "maxFutureAppointments", "valueUnsignedInt": 2},
                {"url": "bookingHorizonDays", "valueUnsignedInt": 28},
                {"url": "minimumLeadMinutes", "valueUnsignedInt": 0},
                st(ServiceType::GpConsultation),
                st(ServiceType::NurseClinic),
                {"url": "triage", "extension": [
                    {"url": "serviceType", "valueCoding": ServiceType::GpConsultation.coding()},
                    {"url": "questionnaire", "valueCanonical": TRIAGE_QUESTIONNAIRE_URL},
                    {"url": "validDays", "valueUnsignedInt": 7},
                ]},
            ],
        }],
        "identifier": [{"system": ODS_SYSTEM, "value": ODS_CODE}],
        "active": true,
        "type": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/organization-type",
            "code": "prov",
            "display": "Healthcare Provider",
        }]}],
        "name": "Demo Surgery",
        "telecom": [{"system": "phone", "value": "0113 496 0000", "use": "work"}],
        "address": practice_address(),
    })
}

fn location() -> Value {
    json!({
        "resourceType": "Location",
        "id": LOCATION_ID,
        "text": narrative("Demo Surgery, Main Site"),
        "status": "active",
        "name": "Demo Surgery, Main Site",
        "mode": "instance",
        "telecom": [{"system": "phone", "value": "0113 496 0000", "use": "work"}],
        "address": practice_address()[0].clone(),
        "managingOrganization": {"reference": format!("Organization/{PRACTICE_ID}"), "display": "Demo Surgery"},
    })
}

fn practitioner(c: &Clinician) -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": c.id,
        "text": narrative(&format!("{} {} {}", c.prefix, c.given, c.family)),
        "identifier": [{"system": SDS_USER_ID_SYSTEM, "value": c.sds_user_id}],
        "active": true,
        "name": [{"use": "official", "family": c.family, "given": [c.given], "prefix": [c.prefix]}],
        "gender": c.gender,
    })
}

fn schedule(c: &Clinician) -> Value {
    let mut services = vec![c.service.concept()];
    if let Some(s) = c.early_service {
        services.push(s.concept());
    }
    json!({
        "resourceType": "Schedule",
        "id": c.schedule,
        "text": narrative(&format!("Appointments with {} {} {} at Demo Surgery", c.prefix, c.given, c.family)),
        "active": true,
        "serviceType": services,
        "actor": [
            {"reference": format!("Practitioner/{}", c.id), "display": format!("{} {} {}", c.prefix, c.given, c.family)},
            {"reference": format!("Location/{LOCATION_ID}"), "display": "Demo Surgery, Main Site"},
        ],
        "comment": format!("{} {} {}: weekdays 08:00-18:00 UTC, 15-minute slots", c.prefix, c.given, c.family),
    })
}

fn slot(c: &Clinician, start: DateTime<Utc>) -> Value {
    json!({
        "resourceType": "Slot",
        "id": slot_id(c.schedule, start),
        "text": narrative(&format!("{}, {} {}, {} {}", service_at(c, start).display(), c.prefix, c.family, start.format("%Y-%m-%d %H:%M UTC"), delivery_channel(start))),
        "extension": [channel_extension(delivery_channel(start))],
        "serviceType": [service_at(c, start).concept()],
        "schedule": {"reference": format!("Schedule/{}", c.schedule)},
        "status": "free",
        "start": instant(start),
        "end": instant(start + Duration::minutes(SLOT_MINUTES)),
    })
}

fn patient(p: &DemoPatient) -> Value {
    json!({
        "resourceType": "Patient",
        "id": p.id,
        "text": narrative(&format!("{} {}, {}, born {}, NHS number {} (demo patient)", p.given, p.family, p.gender, p.birth_date, p.nhs_number)),
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": p.nhs_number}],
        "name": [{"use": "official", "family": p.family, "given": [p.given]}],
        "gender": p.gender,
        "birthDate": p.birth_date,
        "address": [{"use": "home", "line": ["2 Example Road"], "city": "Leeds", "postalCode": "LS2 7AA", "country": "GB"}],
        "generalPractitioner": [{"reference": format!("Organization/{PRACTICE_ID}"), "display": "Demo Surgery"}],
    })
}

fn medication(plan: &Plan) -> Value {
    json!({"coding": [{"system": "https://dmd.nhs.uk", "code": plan.dmd_code, "display": plan.medication}]})
}

fn category() -> Value {
    json!([{"coding": [{
        "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-MedicationRequestCategory",
        "code": "primarycare",
        "display": "Primary Care",
    }]}])
}

fn course() -> Value {
    json!({"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
        "code": "continuous",
        "display": "Continuous long term therapy",
    }]})
}

fn plan(p: &DemoPatient, plan: &Plan, now: DateTime<Utc>) -> Value {
    let today = now.date_naive();
    json!({
        "resourceType": "MedicationRequest",
        "id": plan.id,
        "text": narrative(&format!("Repeat authorisation: {}. {}. {} of {} issues used", plan.medication, plan.dosage, plan.issued, plan.allowed)),
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest"]},
        "extension": [
            {"url": REPEAT_INFORMATION_URL, "extension": [
                {"url": "numberOfPrescriptionsIssued", "valueUnsignedInt": plan.issued},
                {"url": "authorisationExpiryDate", "valueDateTime": instant(now + Duration::days(365))},
            ]},
            {"url": REVIEW_DATE_URL, "valueDate": date(today + Duration::days(180))},
        ],
        "status": "active",
        "intent": "plan",
        "category": category(),
        "medicationCodeableConcept": medication(plan),
        "subject": {"reference": format!("Patient/{}", p.id)},
        "authoredOn": instant(now - Duration::days(60)),
        "requester": {"reference": format!("Practitioner/{}", p.requester)},
        "courseOfTherapyType": course(),
        "dosageInstruction": [{"text": plan.dosage}],
        "dispenseRequest": {"numberOfRepeatsAllowed": plan.allowed},
        "substitution": {"allowedBoolean": true},
    })
}

fn order(p: &DemoPatient, plan: &Plan, id: &str, now: DateTime<Utc>) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": id,
        "text": narrative(&format!("Issued prescription: {}. {}", plan.medication, plan.dosage)),
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest"]},
        "status": "completed",
        "intent": "order",
        "category": category(),
        "medicationCodeableConcept": medication(plan),
        "subject": {"reference": format!("Patient/{}", p.id)},
        "authoredOn": instant(now - Duration::days(30)),
        "requester": {"reference": format!("Practitioner/{}", p.requester)},
        "basedOn": [{"reference": format!("MedicationRequest/{}", plan.id)}],
        "courseOfTherapyType": course(),
        "dosageInstruction": [{"text": plan.dosage}],
        "substitution": {"allowedBoolean": true},
    })
}

fn questionnaire() -> anyhow::Result<Value> {
    let mut q: Value = serde_json::from_str(TRIAGE_QUESTIONNAIRE)
        .context("fixtures/triage/questionnaire-triage.json is not JSON")?;
    q["id"] = json!(TRIAGE_QUESTIONNAIRE_ID);
    if q.get("text").is_none() {
        let title = q["title"].as_str().unwrap_or("GP triage").to_owned();
        q["text"] = narrative(&format!("Triage questionnaire: {title}"));
    }
    Ok(q)
}

/// Every resource of the demo practice as of `now` (slots from `now` on).
pub fn resources(now: DateTime<Utc>) -> anyhow::Result<Vec<Value>> {
    let mut out = vec![organization(), location()];
    out.extend(CLINICIANS.iter().map(practitioner));
    out.extend(CLINICIANS.iter().map(schedule));
    out.push(questionnaire()?);
    for p in &PATIENTS {
        out.push(patient(p));
        for pl in &p.plans {
            out.push(plan(p, pl, now));
            if let Some(id) = pl.order {
                out.push(order(p, pl, id, now));
            }
        }
    }
    let starts = slot_starts(now);
    for c in &CLINICIANS {
        out.extend(starts.iter().map(|s| slot(c, *s)));
    }
    Ok(out)
}

/// What one seed run did, per resource type: (written now, already there).
#[derive(Debug, Default)]
pub struct SeedSummary {
    pub per_type: BTreeMap<String, (usize, usize)>,
}

impl SeedSummary {
    pub fn created(&self) -> usize {
        self.per_type.values().map(|(c, _)| c).sum()
    }

    pub fn present(&self) -> usize {
        self.per_type.values().map(|(_, p)| p).sum()
    }
}

fn type_and_id(r: &Value) -> anyhow::Result<(ResourceType, LogicalId)> {
    let ty = r["resourceType"].as_str().unwrap_or_default();
    let id = r["id"].as_str().unwrap_or_default();
    Ok((
        ty.parse::<ResourceType>()
            .map_err(|_| anyhow::anyhow!("unknown resource type {ty}"))?,
        LogicalId::parse(id).ok_or_else(|| anyhow::anyhow!("bad id {id}"))?,
    ))
}

fn describe(e: &ServiceError) -> String {
    if let ServiceError::Internal(cause) = e {
        tracing::error!(error = format!("{cause:#}"), "demo seed: internal error");
    }
    let issues: Vec<String> = e
        .issues()
        .iter()
        .filter(|i| i.severity == "error" || i.severity == "fatal")
        .take(10)
        .map(|i| match &i.expression {
            Some(x) => format!("{} ({x})", i.diagnostics),
            None => i.diagnostics.clone(),
        })
        .collect();
    format!("HTTP {}: {}", e.http_status(), issues.join("; "))
}

/// Seeds the demo practice into the store `settings` configure, as of `now`:
/// one transaction of PUTs of whatever is not stored yet.
pub async fn seed(settings: &Settings, now: DateTime<Utc>) -> anyhow::Result<SeedSummary> {
    let backend = crate::open_backend(settings)?;
    let validation = Arc::new(crate::validation::ValidationService::from_settings(
        &settings.validation,
    )?);
    let base = settings.server.offline_base();
    let service = Arc::new(Service::new(
        backend,
        validation,
        Arc::new(settings.clone()),
    ));
    let ctx = RequestContext::system("demo-seed", Arc::new(crate::policy::AllowAll));
    let mut summary = SeedSummary::default();
    let mut entries = Vec::new();
    for r in resources(now)? {
        let (ty, id) = type_and_id(&r)?;
        let stored = match service.read(&ctx, ty, &id).await {
            Ok(Found::Current(_)) => true,
            Ok(Found::Deleted { .. }) | Err(ServiceError::NotFound(_)) => false,
            Err(e) => anyhow::bail!("reading {ty}/{id}: {}", describe(&e)),
        };
        let counts = summary.per_type.entry(ty.to_string()).or_default();
        if stored {
            counts.1 += 1;
            continue;
        }
        counts.0 += 1;
        let url = format!("{ty}/{id}");
        entries.push(json!({"fullUrl": format!("{base}/{url}"), "resource": r, "request": {"method": "PUT", "url": url}}));
    }
    if !entries.is_empty() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        service
            .bundle(&ctx, &base, bundle, ReturnPref::Minimal)
            .await
            .map_err(|e| anyhow::anyhow!("the demo practice was not written: {}", describe(&e)))?;
    }
    Ok(summary)
}

/// Who a demo token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `patient/*.*` with this patient in context (and their NHS number).
    Patient {
        id: String,
        nhs_number: Option<String>,
    },
    /// `user/*.*`, `fhirUser` `Practitioner/{id}`.
    Clinician(String),
    /// `system/*.*`.
    System,
}

/// The client id demo tokens name.
pub const DEMO_CLIENT_ID: &str = "fhirbridge-demo";

/// The FHIR base URL, our tokens' issuer and the audience a server started
/// with `settings` has (as [`crate::Application`] computes them: the port is
/// the one in `server.listen`).
pub fn issuer_and_audience(settings: &Settings) -> (String, String, String) {
    let port = settings
        .server
        .listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(0);
    let base = crate::startup::base_url(&settings.server, port);
    let issuer = crate::auth::auth_base(&base);
    let audience = settings
        .auth
        .audience
        .clone()
        .unwrap_or_else(|| base.trim_end_matches('/').to_owned());
    (base, issuer, audience)
}

/// The claims of a demo token for `who`, issued at `now` (seconds).
pub fn claims(settings: &Settings, who: &Subject, now: i64, hours: u32) -> Value {
    let (_, issuer, audience) = issuer_and_audience(settings);
    let mut c = json!({
        "iss": issuer,
        "aud": audience,
        "client_id": DEMO_CLIENT_ID,
        "iat": now,
        "exp": now + i64::from(hours) * 3600,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    match who {
        Subject::Patient { id, nhs_number } => {
            c["sub"] = json!(format!("Patient/{id}"));
            c["scope"] = json!("patient/*.*");
            c["patient"] = json!(id);
            c["fhirUser"] = json!(format!("Patient/{id}"));
            if let Some(n) = nhs_number {
                c["nhs_number"] = json!(n);
            }
        }
        Subject::Clinician(id) => {
            c["sub"] = json!(format!("Practitioner/{id}"));
            c["scope"] = json!("user/*.*");
            c["fhirUser"] = json!(format!("Practitioner/{id}"));
        }
        Subject::System => {
            c["sub"] = json!(DEMO_CLIENT_ID);
            c["scope"] = json!("system/*.*");
        }
    }
    c
}

/// The server's own signing keys for `settings` (created when missing, as
/// the server does). An in-memory database has an ephemeral key no other
/// process shares: refused.
pub fn server_keys(settings: &Settings) -> anyhow::Result<ServerKeys> {
    let location = crate::auth::keys::location(&settings.auth, &settings.storage.database_url);
    if location == KeyLocation::Ephemeral {
        anyhow::bail!(
            "the database is in memory, so the server's signing key is ephemeral (new on \
             every start) and no token signed here would verify; set auth.signing_key_file"
        );
    }
    ServerKeys::open(location)
}

/// A demo access token for `who`, valid `hours`, signed with `keys`.
pub fn sign_token(
    settings: &Settings,
    keys: &ServerKeys,
    who: &Subject,
    hours: u32,
) -> anyhow::Result<String> {
    let now = crate::auth::claims::now_secs();
    keys.signing_key()
        .sign(&claims(settings, who, now, hours), "at+jwt")
        .map_err(|_| anyhow::anyhow!("signing the demo token failed"))
}

/// The NHS number of stored `Patient/{id}` (`Ok(None)` if it has none);
/// an error if there is no such patient.
pub async fn patient_nhs_number(settings: &Settings, id: &str) -> anyhow::Result<Option<String>> {
    let backend = crate::open_backend(settings)?;
    let lid = LogicalId::parse(id).ok_or_else(|| anyhow::anyhow!("'{id}' is not a FHIR id"))?;
    let ctx = RequestContext::system("demo-token", Arc::new(crate::policy::AllowAll));
    let reader = backend
        .reader()
        .ok_or_else(|| anyhow::anyhow!("this backend cannot read"))?;
    let stored = reader
        .read(&ctx, ResourceType::Patient, &lid)
        .await
        .map_err(|_| {
            anyhow::anyhow!("there is no Patient/{id} here (run `fhirbridge demo seed`?)")
        })?;
    let content: Value = serde_json::from_str(stored.content.as_deref().unwrap_or("{}"))?;
    Ok(content["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["system"] == NHS_NUMBER_SYSTEM)
        .and_then(|i| i["value"].as_str())
        .map(str::to_owned))
}

/// Whether `Practitioner/{id}` is stored.
pub async fn practitioner_exists(settings: &Settings, id: &str) -> anyhow::Result<bool> {
    let backend = crate::open_backend(settings)?;
    let lid = LogicalId::parse(id).ok_or_else(|| anyhow::anyhow!("'{id}' is not a FHIR id"))?;
    let ctx = RequestContext::system("demo-token", Arc::new(crate::policy::AllowAll));
    let reader = backend
        .reader()
        .ok_or_else(|| anyhow::anyhow!("this backend cannot read"))?;
    Ok(reader
        .read(&ctx, ResourceType::Practitioner, &lid)
        .await
        .is_ok())
}

/// The lines `demo seed` prints.
pub fn render_summary(settings: &Settings, summary: &SeedSummary) -> String {
    let url = &settings.storage.database_url;
    let database = if url.starts_with("postgres") {
        format!("PostgreSQL {}", crate::startup::postgres_location(url))
    } else {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        format!("SQLite {}", path.split('?').next().unwrap_or(path))
    };
    let mut out = format!(
        "Demo practice \"Demo Surgery\" (Organization/{PRACTICE_ID}, ODS {ODS_CODE}) in {database}: \
         {} resources written, {} already there\n",
        summary.created(),
        summary.present()
    );
    for (ty, (created, present)) in &summary.per_type {
        out.push_str(&format!(
            "  {ty:<18} {:>5}  ({created} new)\n",
            created + present
        ));
    }
    out.push_str(&format!(
        "Clinicians: {}; patients: {}\n",
        CLINICIANS.map(|c| c.id).join(", "),
        PATIENTS
            .map(|p| format!("{} (NHS number {})", p.id, p.nhs_number))
            .join(", ")
    ));
    out
}

/// The token lines `demo seed` prints when access control is on: shell
/// `export`s, so `eval "$(fhirbridge demo seed | grep ^export)"` sets them.
pub fn render_tokens(settings: &Settings, keys: &ServerKeys) -> anyhow::Result<String> {
    let (base, issuer, audience) = issuer_and_audience(settings);
    let mut out = format!(
        "Demo bearer tokens: DEMO CREDENTIALS for this demo server only, valid \
         {DEFAULT_TOKEN_HOURS} h, signed with the server's key (iss {issuer}, aud {audience}; \
         FHIR base {base}). `fhirbridge demo token` makes more.\n"
    );
    let mut line = |name: &str, who: Subject| -> anyhow::Result<()> {
        let t = sign_token(settings, keys, &who, DEFAULT_TOKEN_HOURS)?;
        out.push_str(&format!("export {name}={t}\n"));
        Ok(())
    };
    for (n, p) in PATIENTS.iter().enumerate() {
        line(
            &format!("PATIENT{}_TOKEN", n + 1),
            Subject::Patient {
                id: p.id.into(),
                nhs_number: Some(p.nhs_number.into()),
            },
        )?;
    }
    line(
        "CLINICIAN_TOKEN",
        Subject::Clinician(CLINICIANS[0].id.into()),
    )?;
    line("SYSTEM_TOKEN", Subject::System)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn demo_slots_are_weekdays_in_quarter_hours_from_now() {
        // Monday 2026-03-02 before opening: 10 weekdays in 14 days.
        let now = at("2026-03-02T07:00:00Z");
        let starts = slot_starts(now);
        assert_eq!(SLOTS_PER_DAY, 40);
        assert_eq!(starts.len(), 10 * 40);
        for s in &starts {
            assert!(*s > now);
            assert!(!matches!(s.weekday(), Weekday::Sat | Weekday::Sun), "{s}");
            let (h, m) = (chrono::Timelike::hour(s), chrono::Timelike::minute(s));
            assert!((8..18).contains(&h) && m % 15 == 0, "{s}");
        }
        for w in starts.windows(2) {
            assert!(w[0] < w[1]);
        }
        assert_eq!(starts[0], at("2026-03-02T08:00:00Z"));
        assert_eq!(starts[39], at("2026-03-02T17:45:00Z"));
        assert_eq!(*starts.last().unwrap(), at("2026-03-13T17:45:00Z"));
        // Mid-morning: today's past slots are skipped (10:00 itself too).
        let later = slot_starts(at("2026-03-02T10:00:00Z"));
        assert_eq!(later.len(), 10 * 40 - 9);
        assert_eq!(later[0], at("2026-03-02T10:15:00Z"));
        // Saturday: the next two weeks' weekdays, none today.
        let sat = slot_starts(at("2026-03-07T12:00:00Z"));
        assert_eq!(sat.len(), 10 * 40);
        assert_eq!(sat[0], at("2026-03-09T08:00:00Z"));
        // The day after, the same slots keep their ids, and a new day comes.
        let next = slot_starts(at("2026-03-03T07:00:00Z"));
        let ids = |v: &[DateTime<Utc>]| -> Vec<String> {
            v.iter()
                .map(|s| slot_id("demo-schedule-gp-1", *s))
                .collect()
        };
        let (a, b) = (ids(&starts), ids(&next));
        assert!(b.iter().all(|id| a.contains(id) || id.contains("20260316")));
        assert_eq!(b.iter().filter(|id| !a.contains(id)).count(), 40);
        assert_eq!(a[0], "slot-demo-schedule-gp-1-202603020800");
    }

    #[test]
    fn each_slot_lasts_15_minutes_with_its_channel_and_service() {
        let now = at("2026-03-02T07:00:00Z");
        let all = resources(now).unwrap();
        let slots: Vec<&Value> = all.iter().filter(|r| r["resourceType"] == "Slot").collect();
        assert_eq!(slots.len(), 3 * 10 * 40);
        let mut ids = std::collections::HashSet::new();
        for s in &slots {
            assert!(ids.insert(s["id"].as_str().unwrap()), "unique ids");
            let (start, end) = (
                at(s["start"].as_str().unwrap()),
                at(s["end"].as_str().unwrap()),
            );
            assert_eq!(end - start, Duration::minutes(15));
            assert_eq!(s["status"], "free");
            assert_eq!(
                s["extension"][0]["valueCodeableConcept"]["coding"][0]["code"],
                delivery_channel(start)
            );
        }
        let slot = |id: &str| *slots.iter().find(|s| s["id"] == id).unwrap();
        let code = |s: &Value| s["serviceType"][0]["coding"][0]["code"].clone();
        assert_eq!(
            code(slot("slot-demo-schedule-gp-2-202603020800")),
            "blood-test"
        );
        assert_eq!(
            code(slot("slot-demo-schedule-gp-2-202603021000")),
            "gp-consultation"
        );
        assert_eq!(
            code(slot("slot-demo-schedule-nurse-1-202603021000")),
            "nurse-clinic"
        );
        assert_eq!(delivery_channel(at("2026-03-02T11:45:00Z")), "In-person");
        assert_eq!(delivery_channel(at("2026-03-02T12:00:00Z")), "Telephone");
        assert_eq!(delivery_channel(at("2026-03-02T15:00:00Z")), "Video");
        // The same instant gives the same resources (ids and content).
        assert_eq!(resources(now).unwrap(), all);
    }

    #[test]
    fn demo_nhs_numbers_pass_modulus_11() {
        for p in &PATIENTS {
            assert!(nhs_number_valid(p.nhs_number), "{}", p.nhs_number);
        }
        assert!(!nhs_number_valid("9990000019"));
        assert_ne!(PATIENTS[0].nhs_number, PATIENTS[1].nhs_number);
    }

    #[test]
    fn the_practice_carries_the_contract_booking_rules() {
        let org = organization();
        let rules = &org["extension"][0];
        assert_eq!(rules["url"], BOOKING_RULES_URL);
        let subs = rules["extension"].as_array().unwrap();
        let online: Vec<&str> = subs
            .iter()
            .filter(|e| e["url"] == "onlineServiceType")
            .map(|e| e["valueCoding"]["code"].as_str().unwrap())
            .collect();
        assert_eq!(online, ["gp-consultation", "nurse-clinic"]);
        assert_eq!(org["identifier"][0]["value"], ODS_CODE);
        let q = questionnaire().unwrap();
        assert_eq!(q["url"], TRIAGE_QUESTIONNAIRE_URL);
        assert_eq!(q["id"], TRIAGE_QUESTIONNAIRE_ID);
    }

    #[test]
    fn demo_token_claims_name_our_issuer_and_audience() {
        let mut s = Settings::default();
        s.server.listen = "127.0.0.1:8080".into();
        let c = claims(
            &s,
            &Subject::Patient {
                id: "demo-patient-1".into(),
                nhs_number: Some("9990000018".into()),
            },
            1_000,
            12,
        );
        assert_eq!(c["iss"], "http://127.0.0.1:8080/auth");
        assert_eq!(c["aud"], "http://127.0.0.1:8080/fhir");
        assert_eq!(c["exp"], 1_000 + 12 * 3600);
        assert_eq!(c["patient"], "demo-patient-1");
        assert_eq!(c["scope"], "patient/*.*");
        s.server.base_url = Some("https://fhir.example.org/fhir".into());
        s.auth.audience = Some("https://aud.example.org".into());
        let c = claims(&s, &Subject::System, 0, 1);
        assert_eq!(c["iss"], "https://fhir.example.org/auth");
        assert_eq!(c["aud"], "https://aud.example.org");
        assert_eq!(c["scope"], "system/*.*");
    }
}
