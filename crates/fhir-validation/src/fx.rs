//! The FxHash maps shared with fhir-structure.

pub(crate) use fhir_structure::fx::{FxMap, FxSet};
