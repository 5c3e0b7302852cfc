//! The search parameters this server supports, per resource type, and how each
//! one's values are found in a resource. The CapabilityStatement, the query
//! parser and the write-time indexer all read this one table, so nothing is
//! advertised that is not parsed and indexed.

use crate::model::ResourceType;
use ResourceType::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Token,
    Reference,
    Date,
}

impl ParamKind {
    pub fn code(self) -> &'static str {
        match self {
            ParamKind::Token => "token",
            ParamKind::Reference => "reference",
            ParamKind::Date => "date",
        }
    }
}

/// One search parameter on one resource type.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    pub code: &'static str,
    pub kind: ParamKind,
    pub resource_type: ResourceType,
    /// Dotted element paths (arrays are flattened; `value[x]`-style choices are
    /// named by their concrete JSON key).
    pub paths: &'static [&'static str],
    /// For references: the target types that count (empty = any supported type).
    pub targets: &'static [ResourceType],
    /// The canonical URL of the R4 core SearchParameter this implements.
    pub definition: &'static str,
    pub documentation: &'static str,
}

const fn token(
    resource_type: ResourceType,
    code: &'static str,
    paths: &'static [&'static str],
    definition: &'static str,
    documentation: &'static str,
) -> ParamDef {
    ParamDef {
        code,
        kind: ParamKind::Token,
        resource_type,
        paths,
        targets: &[],
        definition,
        documentation,
    }
}

const fn date(
    resource_type: ResourceType,
    code: &'static str,
    paths: &'static [&'static str],
    definition: &'static str,
    documentation: &'static str,
) -> ParamDef {
    ParamDef {
        code,
        kind: ParamKind::Date,
        resource_type,
        paths,
        targets: &[],
        definition,
        documentation,
    }
}

const fn reference(
    resource_type: ResourceType,
    code: &'static str,
    paths: &'static [&'static str],
    targets: &'static [ResourceType],
    definition: &'static str,
    documentation: &'static str,
) -> ParamDef {
    ParamDef {
        code,
        kind: ParamKind::Reference,
        resource_type,
        paths,
        targets,
        definition,
        documentation,
    }
}

/// Every type-specific parameter. `_id` and `_lastUpdated` apply to all types
/// and are handled by the parser directly.
pub static PARAMS: &[ParamDef] = &[
    // identifier (token) on every type.
    token(
        Patient,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Patient-identifier",
        "A patient identifier, e.g. the NHS number (system|value)",
    ),
    token(
        Appointment,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Appointment-identifier",
        "An identifier of the appointment",
    ),
    token(
        MedicationRequest,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/clinical-identifier",
        "An identifier of the prescription",
    ),
    token(
        Consent,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/clinical-identifier",
        "An identifier of the consent",
    ),
    token(
        Slot,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Slot-identifier",
        "An identifier of the slot",
    ),
    token(
        Schedule,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Schedule-identifier",
        "An identifier of the schedule",
    ),
    token(
        Practitioner,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Practitioner-identifier",
        "A practitioner identifier",
    ),
    token(
        PractitionerRole,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/PractitionerRole-identifier",
        "A practitioner role identifier",
    ),
    token(
        Organization,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Organization-identifier",
        "An organization identifier, e.g. the ODS code",
    ),
    token(
        Location,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Location-identifier",
        "A location identifier",
    ),
    token(
        Medication,
        "identifier",
        &["identifier"],
        "http://hl7.org/fhir/SearchParameter/Medication-identifier",
        "A medication identifier",
    ),
    // status (token).
    token(
        Appointment,
        "status",
        &["status"],
        "http://hl7.org/fhir/SearchParameter/Appointment-status",
        "The overall status of the appointment",
    ),
    token(
        MedicationRequest,
        "status",
        &["status"],
        "http://hl7.org/fhir/SearchParameter/medications-status",
        "Status of the prescription",
    ),
    token(
        Consent,
        "status",
        &["status"],
        "http://hl7.org/fhir/SearchParameter/Consent-status",
        "draft | proposed | active | rejected | inactive | entered-in-error",
    ),
    token(
        Slot,
        "status",
        &["status"],
        "http://hl7.org/fhir/SearchParameter/Slot-status",
        "The free/busy status of the slot",
    ),
    token(
        Medication,
        "status",
        &["status"],
        "http://hl7.org/fhir/SearchParameter/Medication-status",
        "Returns medications for this status",
    ),
    // patient / subject (reference).
    reference(
        Appointment,
        "patient",
        &["participant.actor"],
        &[Patient],
        "http://hl7.org/fhir/SearchParameter/Appointment-patient",
        "One of the individuals of the appointment is this patient",
    ),
    reference(
        MedicationRequest,
        "patient",
        &["subject"],
        &[Patient],
        "http://hl7.org/fhir/SearchParameter/clinical-patient",
        "Returns prescriptions for a specific patient",
    ),
    reference(
        MedicationRequest,
        "subject",
        &["subject"],
        &[Patient],
        "http://hl7.org/fhir/SearchParameter/MedicationRequest-subject",
        "The identity of a patient to list orders for",
    ),
    reference(
        Consent,
        "patient",
        &["patient"],
        &[Patient],
        "http://hl7.org/fhir/SearchParameter/clinical-patient",
        "Who the consent applies to",
    ),
    // dates.
    date(
        Appointment,
        "date",
        &["start"],
        "http://hl7.org/fhir/SearchParameter/Appointment-date",
        "Appointment date/time",
    ),
    date(
        MedicationRequest,
        "authoredon",
        &["authoredOn"],
        "http://hl7.org/fhir/SearchParameter/MedicationRequest-authoredon",
        "Return prescriptions written on this date",
    ),
];

/// The parameter `code` on type `ty`, if supported.
pub fn lookup(ty: ResourceType, code: &str) -> Option<&'static ParamDef> {
    PARAMS
        .iter()
        .find(|p| p.resource_type == ty && p.code == code)
}

/// All parameters of one type, in table order.
pub fn for_type(ty: ResourceType) -> impl Iterator<Item = &'static ParamDef> {
    PARAMS.iter().filter(move |p| p.resource_type == ty)
}

/// Definitions of the parameters common to all resources.
pub const COMMON: [(&str, &str, &str, &str); 2] = [
    (
        "_id",
        "token",
        "http://hl7.org/fhir/SearchParameter/Resource-id",
        "Logical id of this artifact",
    ),
    (
        "_lastUpdated",
        "date",
        "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        "When the resource version last changed",
    ),
];
