//! The HTTP edge of `service::ServiceError` (named `ApiError` here): its
//! status table and its `OperationOutcome`. Every failure leaves the
//! server as an `OperationOutcome` with the matching status. Internal detail
//! (sources, SQL, stack) never reaches the client; it is logged once by the
//! request middleware.
//!
//! | status | when | issue.code |
//! |---|---|---|
//! | 400 | malformed body, parameter, header or id | `structure`, `value`, `invalid`, `required`, `not-supported` |
//! | 403 | the token's scopes, patient context or proofing do not allow it (with `WWW-Authenticate: Bearer …, error="insufficient_scope"`) | `forbidden` |
//! | 404 | unknown resource type, id, version or route | `not-found` |
//! | 405 | interaction not allowed on this endpoint | `not-supported` |
//! | 406 | no acceptable response format | `not-supported` |
//! | 409 | version conflict without `If-Match` | `conflict` |
//! | 410 | resource deleted | `deleted` |
//! | 412 | `If-Match` / `If-None-Exist` / `If-None-Match` precondition failed | `conflict` / `duplicate` |
//! | 408 | request body not received within `server.body_timeout_secs` | `timeout` |
//! | 413 | body over the configured limit | `too-costly` |
//! | 415 | unsupported request media type | `not-supported` |
//! | 501 | interaction not implemented | `not-supported` |
//! | 502 | a GP supplier's answer was malformed or hostile | `exception` |
//! | 503 | database busy or unreachable, or a practice's GP system down (with `Retry-After`) | `transient` |
//! | 4xx | a GP supplier refused: its status and Spine code (`details`) | as the status |
//! | 500 | anything else | `exception` |

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

pub use crate::service::error::{OoIssue, ServiceError as ApiError};

/// `OperationOutcome.issue` JSON of one issue.
pub fn issue_json(i: &OoIssue) -> Value {
    let mut issue = json!({
        "severity": i.severity,
        "code": i.code,
        "diagnostics": i.diagnostics,
    });
    if let (Some(expr), Some(obj)) = (&i.expression, issue.as_object_mut()) {
        obj.insert("expression".into(), json!([expr]));
    }
    if let (Some(code), Some(obj)) = (i.details, issue.as_object_mut()) {
        obj.insert(
            "details".into(),
            json!({"coding": [{
                "system": "https://fhir.nhs.uk/CodeSystem/Spine-ErrorOrWarningCode",
                "code": code,
            }]}),
        );
    }
    issue
}

/// An `OperationOutcome` resource with these issues.
/// `OperationOutcome.issue` is 1..*: with nothing to report it says so.
pub fn operation_outcome(issues: &[OoIssue]) -> Value {
    if issues.is_empty() {
        return json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": "No issues found"}],
        });
    }
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(issue_json).collect::<Vec<_>>(),
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        builder.content_type(super::format::FHIR_JSON);
        if let ApiError::Unavailable(_) = self {
            builder.insert_header(("Retry-After", "1"));
        }
        if let ApiError::SupplierUnavailable { retry_after, .. } = self {
            builder.insert_header(("Retry-After", retry_after.to_string()));
        }
        if let ApiError::Forbidden(_) = self {
            // RFC 6750 §3.1: the token is valid but does not allow this.
            builder.insert_header((
                "WWW-Authenticate",
                format!(
                    "Bearer realm=\"{}\", error=\"insufficient_scope\"",
                    super::auth::REALM
                ),
            ));
        }
        if let ApiError::MethodNotAllowedOnly(allow, _) = self {
            builder.insert_header(("Allow", *allow));
        }
        builder.body(operation_outcome(&self.issues()).to_string())
    }
}
