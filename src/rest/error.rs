//! `ApiError`: the one error type at the HTTP edge. Every failure leaves the
//! server as an `OperationOutcome` with the matching status. Internal detail
//! (sources, SQL, stack) never reaches the client; it is logged once by the
//! request middleware.
//!
//! | status | when | issue.code |
//! |---|---|---|
//! | 400 | malformed body, parameter, header or id | `structure`, `value`, `invalid`, `required`, `not-supported` |
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
//! | 503 | database busy or unreachable (with `Retry-After`) | `transient` |
//! | 500 | anything else | `exception` |

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::storage::StorageError;

/// One `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OoIssue {
    pub severity: &'static str,
    pub code: &'static str,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl OoIssue {
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> OoIssue {
        OoIssue {
            severity: "error",
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// From a checker or validator issue (empty expression → none).
    pub fn from_issue(i: &fhir_structure::check::Issue) -> OoIssue {
        OoIssue {
            severity: i.severity.as_str(),
            code: i.code,
            diagnostics: i.message.clone(),
            expression: (!i.expression.is_empty()).then(|| i.expression.clone()),
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> OoIssue {
        self.expression = Some(expression.into());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        });
        if let (Some(expr), Some(obj)) = (&self.expression, issue.as_object_mut()) {
            obj.insert("expression".into(), json!([expr]));
        }
        issue
    }
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
        "issue": issues.iter().map(OoIssue::to_json).collect::<Vec<_>>(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request")]
    BadRequest(Vec<OoIssue>),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("gone")]
    Gone(String),
    #[error("method not allowed")]
    MethodNotAllowed(String),
    /// 405 with an `Allow` header naming the one method the endpoint takes.
    #[error("method not allowed")]
    MethodNotAllowedOnly(&'static str, String),
    #[error("not acceptable")]
    NotAcceptable(String),
    #[error("conflict")]
    Conflict(String),
    #[error("precondition failed")]
    PreconditionFailed(String),
    #[error("request timeout")]
    RequestTimeout(String),
    #[error("payload too large")]
    PayloadTooLarge(String),
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    #[error("unprocessable")]
    Unprocessable(Vec<OoIssue>),
    #[error("not implemented")]
    NotImplemented(String),
    #[error("service unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, msg: impl Into<String>) -> ApiError {
        ApiError::BadRequest(vec![OoIssue::error(code, msg)])
    }

    pub fn issues(&self) -> Vec<OoIssue> {
        match self {
            ApiError::BadRequest(issues) | ApiError::Unprocessable(issues) => issues.clone(),
            ApiError::NotFound(m) => vec![OoIssue::error("not-found", m.clone())],
            ApiError::Gone(m) => vec![OoIssue::error("deleted", m.clone())],
            ApiError::MethodNotAllowed(m)
            | ApiError::MethodNotAllowedOnly(_, m)
            | ApiError::NotAcceptable(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::NotImplemented(m) => vec![OoIssue::error("not-supported", m.clone())],
            ApiError::Conflict(m) | ApiError::PreconditionFailed(m) => {
                vec![OoIssue::error("conflict", m.clone())]
            }
            ApiError::PayloadTooLarge(m) => vec![OoIssue::error("too-costly", m.clone())],
            ApiError::RequestTimeout(m) => vec![OoIssue::error("timeout", m.clone())],
            ApiError::Unavailable(m) => vec![OoIssue::error("transient", m.clone())],
            ApiError::Internal(_) => vec![OoIssue::error(
                "exception",
                "An internal error occurred; it has been logged with the request id",
            )],
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) | ApiError::MethodNotAllowedOnly(..) => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        builder.content_type(super::format::FHIR_JSON);
        if let ApiError::Unavailable(_) = self {
            builder.insert_header(("Retry-After", "1"));
        }
        if let ApiError::MethodNotAllowedOnly(allow, _) = self {
            builder.insert_header(("Allow", *allow));
        }
        builder.body(operation_outcome(&self.issues()).to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::NotFound => ApiError::NotFound("Resource not found".into()),
            StorageError::Gone { .. } => ApiError::Gone("Resource has been deleted".into()),
            StorageError::VersionConflict { current } => {
                ApiError::PreconditionFailed(match current {
                    Some(v) => format!("Version mismatch: the current version is {v}"),
                    None => "Version mismatch: the resource does not currently exist".into(),
                })
            }
            StorageError::PreconditionFailed(m) => ApiError::PreconditionFailed(m),
            StorageError::Busy => {
                ApiError::Unavailable("The database is busy; retry the request".into())
            }
            StorageError::Unavailable(_) => {
                ApiError::Unavailable("The database is unavailable; retry later".into())
            }
            StorageError::Unsupported(m) => ApiError::NotImplemented(m),
            StorageError::Aborted => {
                ApiError::Internal(anyhow::anyhow!("transaction aborted without a reason"))
            }
            StorageError::LeaseLost => {
                ApiError::Internal(anyhow::anyhow!("a background job lost its lease"))
            }
            StorageError::Internal(e) => ApiError::Internal(e),
        }
    }
}
