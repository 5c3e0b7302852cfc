//! Spine errors as `GPConnect-OperationOutcome-1` resources
//! (`pages/development/development_fhir_error_handling_guidance.md`).

use actix_web::http::StatusCode;
use serde_json::{json, Value};

/// The coding system of every Spine error code.
pub const SPINE_ERROR_SYSTEM: &str = "https://fhir.nhs.uk/STU3/ValueSet/Spine-ErrorOrWarningCode-1";
/// The OperationOutcome profile.
pub const OUTCOME_PROFILE: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-OperationOutcome-1";

/// One error answer: HTTP status, FHIR issue type, Spine code and display,
/// and the diagnostics the spec asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct GpcError {
    pub status: StatusCode,
    pub issue: &'static str,
    pub code: &'static str,
    pub display: &'static str,
    pub diagnostics: String,
}

impl GpcError {
    fn new(
        status: StatusCode,
        issue: &'static str,
        code: &'static str,
        display: &'static str,
        diagnostics: impl Into<String>,
    ) -> GpcError {
        GpcError {
            status,
            issue,
            code,
            display,
            diagnostics: diagnostics.into(),
        }
    }

    pub fn bad_request(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "BAD_REQUEST",
            "Bad request",
            d,
        )
    }

    pub fn invalid_identifier_system(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::BAD_REQUEST,
            "value",
            "INVALID_IDENTIFIER_SYSTEM",
            "Invalid identifier system",
            d,
        )
    }

    pub fn invalid_identifier_value(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::BAD_REQUEST,
            "value",
            "INVALID_IDENTIFIER_VALUE",
            "Invalid identifier value",
            d,
        )
    }

    pub fn invalid_nhs_number(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::BAD_REQUEST,
            "value",
            "INVALID_NHS_NUMBER",
            "Invalid NHS number",
            d,
        )
    }

    pub fn patient_not_found(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "PATIENT_NOT_FOUND",
            "Patient not found",
            d,
        )
    }

    pub fn practitioner_not_found(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "PRACTITIONER_NOT_FOUND",
            "Practitioner record not found",
            d,
        )
    }

    pub fn organisation_not_found(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "ORGANISATION_NOT_FOUND",
            "Organisation record not found",
            d,
        )
    }

    pub fn no_record_found(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "NO_RECORD_FOUND",
            "No record found",
            d,
        )
    }

    pub fn duplicate_rejected(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::CONFLICT,
            "duplicate",
            "DUPLICATE_REJECTED",
            "Create would lead to creation of duplicate resource",
            d,
        )
    }

    /// `If-Match` names a version that is no longer current. The spec's
    /// error table has no 409 code for this; the GP Connect provider test
    /// pack expects `FHIR_CONSTRAINT_VIOLATION`.
    pub fn version_conflict(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::CONFLICT,
            "conflict",
            "FHIR_CONSTRAINT_VIOLATION",
            "FHIR constraint violated",
            d,
        )
    }

    pub fn invalid_resource(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "INVALID_RESOURCE",
            "Submitted resource is not valid.",
            d,
        )
    }

    pub fn invalid_parameter(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "INVALID_PARAMETER",
            "Submitted parameter is not valid.",
            d,
        )
    }

    pub fn reference_not_found(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "REFERENCE_NOT_FOUND",
            "FHIR reference not found",
            d,
        )
    }

    pub fn not_implemented(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
            "NOT_IMPLEMENTED",
            "FHIR resource or operation not implemented at server",
            d,
        )
    }

    pub fn internal(d: impl Into<String>) -> GpcError {
        GpcError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "INTERNAL_SERVER_ERROR",
            "Internal server error",
            d,
        )
    }

    /// The `GPConnect-OperationOutcome-1` body.
    pub fn to_resource(&self) -> Value {
        let mut issue = json!({
            "severity": "error",
            "code": self.issue,
            "details": {
                "coding": [{
                    "system": SPINE_ERROR_SYSTEM,
                    "code": self.code,
                    "display": self.display,
                }]
            }
        });
        if !self.diagnostics.is_empty() {
            issue["diagnostics"] = json!(self.diagnostics);
        }
        json!({
            "resourceType": "OperationOutcome",
            "id": uuid::Uuid::new_v4().to_string(),
            "meta": { "profile": [OUTCOME_PROFILE] },
            "issue": [issue],
        })
    }
}

impl std::fmt::Display for GpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.diagnostics
        )
    }
}

/// A forwards-compatibility warning for a structured-record parameter the
/// sandbox does not support
/// (`accessrecord_structured_development_version_compatibility.md`): the
/// spec writes this one with the `CodeSystem` (not `ValueSet`) system URL.
pub fn unsupported_parameter_issue(name: &str) -> Value {
    json!({
        "severity": "warning",
        "code": "not-supported",
        "details": {
            "coding": [{
                "system": "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1",
                "code": "NOT_IMPLEMENTED",
                "display": "Not implemented",
            }],
            "text": format!("{name} is an unrecognised parameter"),
        },
        "diagnostics": name,
    })
}
