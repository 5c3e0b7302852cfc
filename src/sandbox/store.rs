//! The sandbox's in-memory state: resources, slots, counters and faults,
//! all behind one mutex (see [`super::Sandbox`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::time::uk;
use super::SandboxOptions;

pub const SD: &str = "https://fhir.nhs.uk/STU3/StructureDefinition/";
pub const DELIVERY_CHANNEL_URL: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-DeliveryChannel-2";
pub const PRACTITIONER_ROLE_URL: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-PractitionerRole-1";
pub const BOOKING_ORG_URL: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-BookingOrganisation-1";
pub const CANCELLATION_REASON_URL: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-AppointmentCancellationReason-1";
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const SDS_USER_SYSTEM: &str = "https://fhir.nhs.uk/Id/sds-user-id";

/// The profile URL for a GP Connect / CareConnect STU3 resource type.
pub fn profile_for(resource_type: &str) -> String {
    let name = match resource_type {
        "Appointment" => "GPConnect-Appointment-1",
        "Slot" => "GPConnect-Slot-1",
        "Schedule" => "GPConnect-Schedule-1",
        "Patient" => "CareConnect-GPC-Patient-1",
        "Practitioner" => "CareConnect-GPC-Practitioner-1",
        "PractitionerRole" => "CareConnect-GPC-PractitionerRole-1",
        "Organization" => "CareConnect-GPC-Organization-1",
        "Location" => "CareConnect-GPC-Location-1",
        "MedicationRequest" => "CareConnect-GPC-MedicationRequest-1",
        "MedicationStatement" => "CareConnect-GPC-MedicationStatement-1",
        "Medication" => "CareConnect-GPC-Medication-1",
        "AllergyIntolerance" => "CareConnect-GPC-AllergyIntolerance-1",
        "List" => "CareConnect-GPC-List-1",
        // Sandbox extension: there is no GP Connect Task profile.
        "Task" => return "http://hl7.org/fhir/StructureDefinition/Task".to_string(),
        other => return format!("http://hl7.org/fhir/StructureDefinition/{other}"),
    };
    format!("{SD}{name}")
}

/// `meta` for version `version` written at `at`.
pub fn meta(resource_type: &str, version: u64, at: DateTime<Utc>) -> Value {
    json!({
        "versionId": version.to_string(),
        "lastUpdated": uk(at),
        "profile": [profile_for(resource_type)],
    })
}

/// The integer `meta.versionId` of a stored resource (0 when absent).
pub fn version_of(resource: &Value) -> u64 {
    resource
        .pointer("/meta/versionId")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One practice's fixed ids.
#[derive(Debug, Clone)]
pub struct Practice {
    pub ods: String,
    pub organization: String,
    pub location: String,
    pub gp: String,
    pub nurse: String,
    pub gp_role: String,
    pub gp_schedule: String,
    pub nurse_schedule: String,
}

/// A bookable slot, kept typed (the searches compare instants).
#[derive(Debug, Clone)]
pub struct SlotRec {
    pub id: String,
    pub schedule: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub channel: &'static str,
    pub service_type: String,
    pub free: bool,
    pub version: u64,
    pub updated: DateTime<Utc>,
}

impl SlotRec {
    pub fn to_resource(&self) -> Value {
        json!({
            "resourceType": "Slot",
            "id": self.id,
            "meta": meta("Slot", self.version, self.updated),
            "extension": [{"url": DELIVERY_CHANNEL_URL, "valueCode": self.channel}],
            "serviceType": [{"text": self.service_type}],
            "schedule": {"reference": format!("Schedule/{}", self.schedule)},
            "status": if self.free { "free" } else { "busy" },
            "start": uk(self.start),
            "end": uk(self.end),
        })
    }

    pub fn set_free(&mut self, free: bool, at: DateTime<Utc>) {
        if self.free != free {
            self.free = free;
            self.version += 1;
            self.updated = at;
        }
    }
}

/// Fault injection (`/admin/faults`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub latency_ms: u64,
    pub error_rate: f64,
    pub down: bool,
    pub hostile: Option<Hostile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    InvalidJson,
    WrongType,
    Huge,
    Redirect,
    Drip,
}

impl Hostile {
    pub fn parse(s: &str) -> Option<Hostile> {
        Some(match s {
            "invalid-json" => Hostile::InvalidJson,
            "wrong-type" => Hostile::WrongType,
            "huge" => Hostile::Huge,
            "redirect" => Hostile::Redirect,
            "drip" => Hostile::Drip,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Hostile::InvalidJson => "invalid-json",
            Hostile::WrongType => "wrong-type",
            Hostile::Huge => "huge",
            Hostile::Redirect => "redirect",
            Hostile::Drip => "drip",
        }
    }
}

impl Faults {
    pub fn to_json(&self) -> Value {
        json!({
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "down": self.down,
            "hostile": self.hostile.map(Hostile::name),
        })
    }
}

/// Counters for test assertions (`/admin/stats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub requests: u64,
    pub by_interaction: BTreeMap<String, u64>,
    pub appointments_booked: u64,
    pub tasks_created: u64,
    pub task_posts: u64,
}

impl Stats {
    pub fn to_json(&self) -> Value {
        let by: Map<String, Value> = self
            .by_interaction
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "requests": self.requests,
            "by_interaction": by,
            "appointments_booked": self.appointments_booked,
            "tasks_created": self.tasks_created,
            "task_posts": self.task_posts,
        })
    }
}

/// Everything the sandbox holds.
#[derive(Debug)]
pub struct Store {
    pub opts: SandboxOptions,
    pub seeded_at: DateTime<Utc>,
    pub practices: Vec<Practice>,
    /// Every resource but slots, by (type, id).
    pub resources: BTreeMap<(String, String), Value>,
    pub slots: BTreeMap<String, SlotRec>,
    /// Task idempotency keys: (identifier system, value) → Task id.
    pub task_keys: HashMap<(String, String), String>,
    pub next_appointment: u64,
    pub next_task: u64,
    pub stats: Stats,
    pub faults: Faults,
    /// Requests seen by the `error_rate` fault.
    pub fault_seq: u64,
}

impl Store {
    /// The seeded state for `opts` as of `now`.
    pub fn new(opts: SandboxOptions, now: DateTime<Utc>) -> Store {
        let mut store = Store {
            opts,
            seeded_at: now,
            practices: Vec::new(),
            resources: BTreeMap::new(),
            slots: BTreeMap::new(),
            task_keys: HashMap::new(),
            next_appointment: 1,
            next_task: 1,
            stats: Stats::default(),
            faults: Faults::default(),
            fault_seq: 0,
        };
        super::seed::seed(&mut store, now);
        store
    }

    pub fn get(&self, resource_type: &str, id: &str) -> Option<&Value> {
        self.resources
            .get(&(resource_type.to_string(), id.to_string()))
    }

    pub fn put(&mut self, resource: Value) {
        let rt = resource["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = resource["id"].as_str().unwrap_or_default().to_string();
        self.resources.insert((rt, id), resource);
    }

    /// All stored resources of one type, in id order.
    pub fn all(&self, resource_type: &str) -> impl Iterator<Item = &Value> {
        let rt = resource_type.to_string();
        self.resources
            .range((rt.clone(), String::new())..)
            .take_while(move |((t, _), _)| *t == rt)
            .map(|(_, v)| v)
    }

    pub fn patient_by_nhs(&self, nhs: &str) -> Option<&Value> {
        self.all("Patient").find(|p| {
            p["identifier"].as_array().is_some_and(|ids| {
                ids.iter().any(|i| {
                    i["system"].as_str() == Some(NHS_NUMBER_SYSTEM)
                        && i["value"].as_str() == Some(nhs)
                })
            })
        })
    }

    /// Whether the `error_rate` fault answers the next request with a 500:
    /// exactly that fraction of requests, evenly spread (deterministic).
    pub fn next_request_fails(&mut self) -> bool {
        self.fault_seq += 1;
        let rate = self.faults.error_rate.clamp(0.0, 1.0);
        if rate <= 0.0 {
            return false;
        }
        let n = self.fault_seq as f64;
        (n * rate).floor() > ((n - 1.0) * rate).floor()
    }
}
