//! `ServiceError`: what a service operation can fail with, in FHIR's
//! categories (the REST edge maps each to its status and an
//! `OperationOutcome`, `rest::error`). Messages are safe to show to callers;
//! internal detail stays in `Internal`'s source chain, which only logs see.
//! A resource the policy hides fails exactly as an absent one does.

use crate::storage::StorageError;

/// One `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OoIssue {
    pub severity: &'static str,
    pub code: &'static str,
    pub diagnostics: String,
    pub expression: Option<String>,
    /// `issue.details.coding`: an NHS Spine error code
    /// (`https://fhir.nhs.uk/CodeSystem/Spine-ErrorOrWarningCode`), for
    /// outcomes GP Connect clients match on (`DUPLICATE_REJECTED`).
    pub details: Option<&'static str>,
}

impl OoIssue {
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> OoIssue {
        OoIssue {
            severity: "error",
            code,
            diagnostics: diagnostics.into(),
            expression: None,
            details: None,
        }
    }

    /// From a checker or validator issue (empty expression → none).
    pub fn from_issue(i: &fhir_structure::check::Issue) -> OoIssue {
        OoIssue {
            severity: i.severity.as_str(),
            code: i.code,
            diagnostics: i.message.clone(),
            expression: (!i.expression.is_empty()).then(|| i.expression.clone()),
            details: None,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> OoIssue {
        self.expression = Some(expression.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
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
    /// 403: the caller's scopes (or identity proofing) do not allow this.
    #[error("forbidden")]
    Forbidden(String),
    #[error("not acceptable")]
    NotAcceptable(String),
    #[error("conflict")]
    Conflict(String),
    /// 409 `DUPLICATE_REJECTED`: the request would double-book (a slot no
    /// longer free) or duplicate an open request.
    #[error("duplicate rejected")]
    Duplicate(String),
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
    /// 503 with `Retry-After: retry_after`: a practice's GP system is down,
    /// timed out or behind an open circuit breaker.
    #[error("supplier unavailable")]
    SupplierUnavailable { message: String, retry_after: u64 },
    /// 502: a GP system's answer was malformed or hostile (nothing of it used).
    #[error("bad gateway")]
    BadGateway(String),
    /// A GP system refused the request: its status and Spine error code,
    /// as an R4 OperationOutcome with the same meaning.
    #[error("refused by the supplier")]
    SupplierRefused {
        status: u16,
        code: Option<&'static str>,
        message: String,
    },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ServiceError {
    pub fn bad_request(code: &'static str, msg: impl Into<String>) -> ServiceError {
        ServiceError::BadRequest(vec![OoIssue::error(code, msg)])
    }

    /// The HTTP status FHIR gives this outcome (also a batch entry's
    /// `response.status`); the table is in `rest::error`'s docs.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::BadRequest(_) => 400,
            ServiceError::NotFound(_) => 404,
            ServiceError::Gone(_) => 410,
            ServiceError::MethodNotAllowed(_) | ServiceError::MethodNotAllowedOnly(..) => 405,
            ServiceError::Forbidden(_) => 403,
            ServiceError::NotAcceptable(_) => 406,
            ServiceError::Conflict(_) | ServiceError::Duplicate(_) => 409,
            ServiceError::PreconditionFailed(_) => 412,
            ServiceError::PayloadTooLarge(_) => 413,
            ServiceError::RequestTimeout(_) => 408,
            ServiceError::UnsupportedMediaType(_) => 415,
            ServiceError::Unprocessable(_) => 422,
            ServiceError::NotImplemented(_) => 501,
            ServiceError::Unavailable(_) | ServiceError::SupplierUnavailable { .. } => 503,
            ServiceError::BadGateway(_) => 502,
            ServiceError::SupplierRefused { status, .. } => *status,
            ServiceError::Internal(_) => 500,
        }
    }

    pub fn issues(&self) -> Vec<OoIssue> {
        match self {
            ServiceError::BadRequest(issues) | ServiceError::Unprocessable(issues) => {
                issues.clone()
            }
            ServiceError::NotFound(m) => vec![OoIssue::error("not-found", m.clone())],
            ServiceError::Gone(m) => vec![OoIssue::error("deleted", m.clone())],
            ServiceError::Forbidden(m) => vec![OoIssue::error("forbidden", m.clone())],
            ServiceError::MethodNotAllowed(m)
            | ServiceError::MethodNotAllowedOnly(_, m)
            | ServiceError::NotAcceptable(m)
            | ServiceError::UnsupportedMediaType(m)
            | ServiceError::NotImplemented(m) => vec![OoIssue::error("not-supported", m.clone())],
            ServiceError::Conflict(m) | ServiceError::PreconditionFailed(m) => {
                vec![OoIssue::error("conflict", m.clone())]
            }
            ServiceError::Duplicate(m) => vec![OoIssue {
                details: Some("DUPLICATE_REJECTED"),
                ..OoIssue::error("duplicate", m.clone())
            }],
            ServiceError::PayloadTooLarge(m) => vec![OoIssue::error("too-costly", m.clone())],
            ServiceError::RequestTimeout(m) => vec![OoIssue::error("timeout", m.clone())],
            ServiceError::Unavailable(m) => vec![OoIssue::error("transient", m.clone())],
            ServiceError::SupplierUnavailable { message, .. } => {
                vec![OoIssue::error("transient", message.clone())]
            }
            ServiceError::BadGateway(m) => vec![OoIssue::error("exception", m.clone())],
            ServiceError::SupplierRefused {
                status,
                code,
                message,
            } => vec![OoIssue {
                details: *code,
                ..OoIssue::error(
                    match status {
                        403 => "forbidden",
                        404 => "not-found",
                        409 => "conflict",
                        412 => "conflict",
                        422 => "processing",
                        _ => "invalid",
                    },
                    message.clone(),
                )
            }],
            ServiceError::Internal(_) => vec![OoIssue::error(
                "exception",
                "An internal error occurred; it has been logged with the request id",
            )],
        }
    }
}

impl From<StorageError> for ServiceError {
    fn from(e: StorageError) -> ServiceError {
        match e {
            StorageError::NotFound => ServiceError::NotFound("Resource not found".into()),
            StorageError::Gone { .. } => ServiceError::Gone("Resource has been deleted".into()),
            StorageError::VersionConflict { current } => {
                ServiceError::PreconditionFailed(match current {
                    Some(v) => format!("Version mismatch: the current version is {v}"),
                    None => "Version mismatch: the resource does not currently exist".into(),
                })
            }
            StorageError::PreconditionFailed(m) => ServiceError::PreconditionFailed(m),
            StorageError::Busy => {
                ServiceError::Unavailable("The database is busy; retry the request".into())
            }
            StorageError::Unavailable(_) => {
                ServiceError::Unavailable("The database is unavailable; retry later".into())
            }
            StorageError::Unsupported(m) => ServiceError::NotImplemented(m),
            StorageError::Aborted => {
                ServiceError::Internal(anyhow::anyhow!("transaction aborted without a reason"))
            }
            StorageError::LeaseLost => {
                ServiceError::Internal(anyhow::anyhow!("a background job lost its lease"))
            }
            StorageError::Internal(e) => ServiceError::Internal(e),
        }
    }
}
