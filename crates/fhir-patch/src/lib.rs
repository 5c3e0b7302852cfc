//! Patching FHIR resources held as `serde_json::Value`:
//!
//! * [`apply_json_patch`]: RFC 6902 JSON Patch (`application/json-patch+json`);
//! * [`apply_fhirpath_patch`]: FHIRPath Patch, the FHIR R4 `Parameters`-based
//!   patch format (<https://hl7.org/fhir/R4/fhirpatch.html>).
//!
//! Both are atomic: the patch is applied to a copy of the target, which replaces
//! the target only when every operation succeeded. On error the target is left
//! untouched, and the [`PatchError`] says whether the patch document itself is
//! malformed ([`PatchError::Invalid`], HTTP 400) or well-formed but not
//! applicable to this resource ([`PatchError::CannotApply`], HTTP 422), with an
//! `expression` naming the offending operation (`/3` for the fourth JSON Patch
//! operation, `Parameters.parameter[2]` for the third FHIRPath Patch operation).
//!
//! ```
//! let mut patient = serde_json::json!({"resourceType": "Patient", "active": false});
//! let patch = serde_json::json!([{"op": "replace", "path": "/active", "value": true}]);
//! fhir_patch::apply_json_patch(&mut patient, &patch).unwrap();
//! assert_eq!(patient["active"], serde_json::json!(true));
//!
//! let params = serde_json::json!({"resourceType": "Parameters", "parameter": [{
//!     "name": "operation",
//!     "part": [
//!         {"name": "type", "valueCode": "add"},
//!         {"name": "path", "valueString": "Patient"},
//!         {"name": "name", "valueString": "birthDate"},
//!         {"name": "value", "valueDate": "1970-01-02"}
//!     ]
//! }]});
//! fhir_patch::apply_fhirpath_patch(&mut patient, &params).unwrap();
//! assert_eq!(patient["birthDate"], serde_json::json!("1970-01-02"));
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

mod fhirpath_patch;
mod json_eq;
mod json_patch;
mod size;

use std::fmt;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// The patch document itself is malformed → HTTP 400.
    Invalid {
        message: String,
        expression: Option<String>,
    },
    /// The patch is well-formed, but cannot be applied to this resource (path
    /// not found, test failed, bad index, multiple matches) → HTTP 422.
    CannotApply {
        message: String,
        expression: Option<String>,
    },
}

impl PatchError {
    pub(crate) fn invalid(message: impl Into<String>, expression: Option<String>) -> Self {
        PatchError::Invalid {
            message: message.into(),
            expression,
        }
    }

    pub(crate) fn cannot_apply(message: impl Into<String>, expression: Option<String>) -> Self {
        PatchError::CannotApply {
            message: message.into(),
            expression,
        }
    }

    /// The human-readable description.
    pub fn message(&self) -> &str {
        match self {
            PatchError::Invalid { message, .. } | PatchError::CannotApply { message, .. } => {
                message
            }
        }
    }

    /// Where in the patch document the problem is (`/3`, `Parameters.parameter[2]`).
    pub fn expression(&self) -> Option<&str> {
        match self {
            PatchError::Invalid { expression, .. } | PatchError::CannotApply { expression, .. } => {
                expression.as_deref()
            }
        }
    }

    /// Whether the patch document itself is malformed (HTTP 400) rather than
    /// inapplicable to the resource (HTTP 422).
    pub fn is_invalid(&self) -> bool {
        matches!(self, PatchError::Invalid { .. })
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            PatchError::Invalid { .. } => "invalid patch",
            PatchError::CannotApply { .. } => "patch cannot be applied",
        };
        write!(f, "{what}: {}", self.message())?;
        if let Some(e) = self.expression() {
            write!(f, " (at {e})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PatchError {}

/// Bounds on the result of a patch, like the bounds on a request body: a
/// patch whose result would exceed them fails with [`PatchError::CannotApply`]
/// and leaves the target untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest result, as compact JSON, in bytes (default 10 MiB). JSON Patch
    /// checks it before each operation (a `copy` cannot double the document
    /// past it, and all copies of one patch together copy at most four times
    /// this, so time is bounded too); FHIRPath Patch, which cannot duplicate
    /// content, at the end.
    pub max_bytes: usize,
    /// Arrays and objects nested in the result: it must be less than this
    /// (default `fhir_structure::check::MAX_JSON_DEPTH`, as for a body).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 10 * 1024 * 1024,
            max_depth: fhir_structure::check::MAX_JSON_DEPTH,
        }
    }
}

impl Limits {
    /// The default depth with a size limit of `max_bytes`.
    pub fn with_max_bytes(max_bytes: usize) -> Limits {
        Limits {
            max_bytes,
            ..Limits::default()
        }
    }
}

/// Applies an RFC 6902 JSON Patch (a JSON array of operations) to `target`,
/// within the default [`Limits`].
///
/// All operations are applied in order to a copy of `target`; `target` is
/// replaced only if all of them succeed.
pub fn apply_json_patch(
    target: &mut serde_json::Value,
    patch: &serde_json::Value,
) -> Result<(), PatchError> {
    json_patch::apply(target, patch, &Limits::default())
}

/// [`apply_json_patch`] within `limits`.
pub fn apply_json_patch_within(
    target: &mut serde_json::Value,
    patch: &serde_json::Value,
    limits: &Limits,
) -> Result<(), PatchError> {
    json_patch::apply(target, patch, limits)
}

/// Applies a FHIRPath Patch (a FHIR R4 `Parameters` resource in JSON form whose
/// parameters are all named `operation`) to the FHIR JSON resource `target`,
/// within the default [`Limits`].
///
/// All operations are applied in order to a copy of `target`; `target` is
/// replaced only if all of them succeed.
pub fn apply_fhirpath_patch(
    target: &mut serde_json::Value,
    parameters: &serde_json::Value,
) -> Result<(), PatchError> {
    fhirpath_patch::apply(target, parameters, &Limits::default())
}

/// [`apply_fhirpath_patch`] within `limits`.
pub fn apply_fhirpath_patch_within(
    target: &mut serde_json::Value,
    parameters: &serde_json::Value,
    limits: &Limits,
) -> Result<(), PatchError> {
    fhirpath_patch::apply(target, parameters, limits)
}

/// The error for a result over `limits`, if `m` is.
pub(crate) fn over_limits(m: size::Measure, limits: &Limits) -> Option<String> {
    if m.bytes > limits.max_bytes {
        Some(format!(
            "the patched resource would be larger than the limit of {} bytes",
            limits.max_bytes
        ))
    } else if m.depth >= limits.max_depth {
        Some(format!(
            "the patched resource would be nested too deeply (limit {} levels)",
            limits.max_depth
        ))
    } else {
        None
    }
}
