//! The patient journeys' domain rules that need no storage: FHIR readers,
//! a practice's booking rules, and QuestionnaireResponse validation. The
//! operations that apply them inside a transaction are in `service`
//! (`booking`, `repeats`, `triage`).

pub mod fhir;
pub mod practice;
pub mod questionnaire;
