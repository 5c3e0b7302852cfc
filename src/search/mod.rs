//! FHIR search: the parameter registry, typed queries, the query-string parser and
//! write-time index extraction. No HTTP and no SQL here.

pub mod compartment;
pub mod index;
pub mod matcher;
pub mod parse;
pub mod registry;
pub mod rows;
pub mod types;
