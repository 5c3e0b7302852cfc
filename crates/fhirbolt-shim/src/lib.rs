//! Non-generic wrappers around fhirbolt's XML support.
//!
//! fhirbolt's generic (de)serialisers are expensive to monomorphise, so every
//! instantiation lives here, in one small crate that is compiled once and cached.
//! The server keeps resources as JSON (`serde_json::Value`); this crate only
//! converts between FHIR XML and FHIR JSON using fhirbolt's generic R4 element
//! model, which knows element order, repetition and primitive types.
//!
//! fhirbolt panics on some malformed inputs (for example empty arrays), so every
//! call is wrapped in `catch_unwind` and a panic becomes an ordinary error.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fhirbolt::element::Element;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};
use fhirbolt::FhirReleases;

type R4Element = Element<{ FhirReleases::R4 }>;

/// Why a conversion failed. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError(pub String);

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, ConvertError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ConvertError(e)),
        Err(_) => Err(ConvertError(format!(
            "{what}: the document could not be converted (malformed structure)"
        ))),
    }
}

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// Convert a FHIR XML resource into FHIR JSON (as a `serde_json::Value`).
pub fn xml_to_json(xml: &str) -> Result<serde_json::Value, ConvertError> {
    guarded("XML", || {
        let element: R4Element =
            fhirbolt::xml::from_str(xml, strict()).map_err(|e| format!("invalid FHIR XML: {e}"))?;
        fhirbolt::json::to_json_value(element, None).map_err(|e| format!("invalid FHIR XML: {e}"))
    })
}

/// Convert a FHIR JSON resource into FHIR XML.
pub fn json_to_xml(json: &serde_json::Value) -> Result<String, ConvertError> {
    guarded("JSON", || {
        let element: R4Element = fhirbolt::json::from_json_value(json.clone(), strict())
            .map_err(|e| format!("resource cannot be expressed as FHIR XML: {e}"))?;
        fhirbolt::xml::to_string(&element, None)
            .map_err(|e| format!("resource cannot be expressed as FHIR XML: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_patient_through_xml() {
        let json = serde_json::json!({
            "resourceType": "Patient",
            "id": "p1",
            "active": true,
            "name": [{"family": "Smith", "given": ["Jo", "Ann"]}],
            "birthDate": "1970-01-02",
            "multipleBirthInteger": 2
        });
        let xml = json_to_xml(&json).expect("to xml");
        assert!(
            xml.contains("<Patient xmlns=\"http://hl7.org/fhir\">"),
            "{xml}"
        );
        assert!(xml.contains("<given value=\"Ann\"/>"), "{xml}");
        let back = xml_to_json(&xml).expect("from xml");
        assert_eq!(back, json);
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        assert!(xml_to_json("<Patient xmlns=\"http://hl7.org/fhir\"><foo/></Patient>").is_err());
        assert!(xml_to_json("not xml").is_err());
        assert!(xml_to_json("").is_err());
    }

    #[test]
    fn empty_arrays_do_not_panic() {
        let json = serde_json::json!({"resourceType": "Patient", "name": []});
        let _ = json_to_xml(&json);
    }
}
