//! Default type provider selection: the R4 model from `fhir-structure`
//! when it is linked in, otherwise the untyped fallback.

use crate::types::{TypeProvider, UNTYPED};

/// The provider used by `EvalContext::new()`.
pub(crate) fn default_provider() -> &'static dyn TypeProvider {
    &UNTYPED
}
