//! Non-generic wrappers around fhirbolt's XML support.
//!
//! fhirbolt's generic (de)serialisers are expensive to monomorphise, so every
//! instantiation lives here, in one small crate that is compiled once and cached.
//! The server keeps resources as JSON (`serde_json::Value`); this crate only
//! converts between FHIR XML and FHIR JSON using fhirbolt's generic R4 element
//! model, which knows element order, repetition and primitive types.
//!
//! fhirbolt trims whitespace inside XHTML narrative in both directions, which
//! changes the text (`E-mail: <a>` becomes `E-mail:<a>`). So narrative `div`s
//! are carried across verbatim: each is swapped for a placeholder before fhirbolt
//! runs and put back afterwards.
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

const XHTML_NS: &[u8] = b"http://www.w3.org/1999/xhtml";
const MARK: &str = "FHIRBRIDGE-NARRATIVE-";

fn placeholder(n: usize) -> String {
    format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{MARK}{n}.</div>")
}

fn is_xhtml_div(e: &quick_xml::events::BytesStart<'_>) -> bool {
    e.local_name().as_ref() == b"div"
        && e.attributes()
            .flatten()
            .any(|a| a.key.as_ref() == b"xmlns" && a.value.as_ref() == XHTML_NS)
}

/// Byte ranges of the top-level XHTML `div` elements in an XML document, or None
/// if the document is not well-formed (fhirbolt then reports the error).
fn xhtml_div_ranges(xml: &str) -> Option<Vec<(usize, usize)>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut ranges = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    loop {
        let before = reader.buffer_position();
        match reader.read_event().ok()? {
            Event::Start(e) => {
                if depth > 0 {
                    depth += 1;
                } else if is_xhtml_div(&e) {
                    depth = 1;
                    start = before;
                }
            }
            Event::End(_) if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    ranges.push((start, reader.buffer_position()));
                }
            }
            Event::Empty(e) if depth == 0 && is_xhtml_div(&e) => {
                ranges.push((before, reader.buffer_position()));
            }
            Event::Eof => return Some(ranges),
            _ => {}
        }
    }
}

/// Is `div` one well-formed XHTML `div` element?
fn well_formed_div(div: &str) -> bool {
    matches!(xhtml_div_ranges(div).as_deref(), Some([(0, end)]) if *end == div.len())
}

/// Visits every narrative `div` string in a JSON resource.
fn for_each_div(v: &mut serde_json::Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(s) if k == "div" => f(s),
                    _ => for_each_div(child, f),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| for_each_div(i, f)),
        _ => {}
    }
}

/// Drops a leading XML declaration. The text is already a Rust `str`, so its
/// encoding is UTF-8 whatever the declaration says, and fhirbolt rejects
/// spellings such as `encoding="utf-8"` that XML allows.
fn strip_declaration(xml: &str) -> &str {
    let trimmed = xml.trim_start_matches('\u{feff}').trim_start();
    match trimmed.strip_prefix("<?xml") {
        Some(rest) if rest.starts_with(|c: char| c.is_whitespace()) => match rest.find("?>") {
            Some(end) => rest.get(end + 2..).unwrap_or(""),
            None => xml,
        },
        _ => xml,
    }
}

/// Most nested XML elements accepted by [`xml_to_json`] (outside narrative
/// `div`s, which are carried verbatim). fhirbolt's conversion recurses once
/// per level, so deeper documents are rejected before it runs; 128 element
/// levels are more than the JSON limit (`fhir_structure::check::MAX_JSON_DEPTH`,
/// 128 arrays and objects) allows a resource in JSON.
pub const MAX_XML_DEPTH: usize = 128;

/// Rejects documents nested [`MAX_XML_DEPTH`] elements deep or more, without
/// recursion. Malformed documents pass (fhirbolt reports them).
fn check_depth(xml: &str) -> Result<(), ConvertError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                depth += 1;
                if depth >= MAX_XML_DEPTH {
                    return Err(ConvertError(format!(
                        "invalid FHIR XML: elements nested too deeply (limit {MAX_XML_DEPTH} levels)"
                    )));
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// Convert a FHIR XML resource into FHIR JSON (as a `serde_json::Value`).
/// Documents nested [`MAX_XML_DEPTH`] levels or more are rejected.
pub fn xml_to_json(xml: &str) -> Result<serde_json::Value, ConvertError> {
    let xml = strip_declaration(xml);
    let ranges = xhtml_div_ranges(xml).unwrap_or_default();
    let mut originals = Vec::with_capacity(ranges.len());
    let mut rewritten = String::with_capacity(xml.len());
    let mut last = 0;
    for (n, (start, end)) in ranges.iter().enumerate() {
        rewritten.push_str(xml.get(last..*start).unwrap_or(""));
        rewritten.push_str(&placeholder(n));
        originals.push(xml.get(*start..*end).unwrap_or("").to_owned());
        last = *end;
    }
    rewritten.push_str(xml.get(last..).unwrap_or(""));
    check_depth(&rewritten)?;
    let mut json = guarded("XML", || {
        let element: R4Element = fhirbolt::xml::from_str(&rewritten, strict())
            .map_err(|e| format!("invalid FHIR XML: {e}"))?;
        fhirbolt::json::to_json_value(element, None).map_err(|e| format!("invalid FHIR XML: {e}"))
    })?;
    for_each_div(&mut json, &mut |s| {
        for (n, original) in originals.iter().enumerate() {
            if s.contains(&format!("{MARK}{n}.")) {
                *s = original.clone();
                break;
            }
        }
    });
    Ok(json)
}

/// Convert a FHIR JSON resource into FHIR XML.
pub fn json_to_xml(json: &serde_json::Value) -> Result<String, ConvertError> {
    let mut json = json.clone();
    let mut originals = Vec::new();
    for_each_div(&mut json, &mut |s| {
        if well_formed_div(s) {
            let n = originals.len();
            originals.push(std::mem::replace(s, placeholder(n)));
        }
    });
    let mut xml = guarded("JSON", || {
        let element: R4Element = fhirbolt::json::from_json_value(json, strict())
            .map_err(|e| format!("resource cannot be expressed as FHIR XML: {e}"))?;
        fhirbolt::xml::to_string(&element, None)
            .map_err(|e| format!("resource cannot be expressed as FHIR XML: {e}"))
    })?;
    for (n, original) in originals.iter().enumerate() {
        let mark = format!("{MARK}{n}.");
        let Some(at) = xml.find(&mark) else { continue };
        let (Some(start), Some(end)) = (
            xml.get(..at).and_then(|h| h.rfind("<div")),
            xml.get(at..)
                .and_then(|t| t.find("</div>"))
                .map(|e| at + e + "</div>".len()),
        ) else {
            continue;
        };
        xml.replace_range(start..end, original);
    }
    Ok(xml)
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
    fn any_utf8_declaration_spelling_is_accepted() {
        for decl in [
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>",
            "<?xml version='1.0'?>",
            "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n",
            "",
        ] {
            let xml = format!(
                "{decl}<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"/></Patient>"
            );
            let v = xml_to_json(&xml).unwrap_or_else(|e| panic!("{decl}: {e}"));
            assert_eq!(v["active"], serde_json::json!(true));
        }
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        assert!(xml_to_json("<Patient xmlns=\"http://hl7.org/fhir\"><foo/></Patient>").is_err());
        assert!(xml_to_json("not xml").is_err());
        assert!(xml_to_json("").is_err());
    }

    #[test]
    fn narrative_whitespace_survives_both_directions() {
        let div = "<div xmlns=\"http://www.w3.org/1999/xhtml\">\n  <p>E-mail: <a href=\"mailto:x@y\">x@y</a> </p>\n</div>";
        let json = serde_json::json!({
            "resourceType": "Patient",
            "text": {"status": "generated", "div": div},
            "contained": [{"resourceType": "Patient", "text": {"status": "generated", "div": div}}],
            "active": true
        });
        let xml = json_to_xml(&json).expect("to xml");
        assert!(xml.contains("E-mail: <a"), "{xml}");
        assert!(!xml.contains(MARK), "{xml}");
        let back = xml_to_json(&xml).expect("from xml");
        assert_eq!(back, json);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let n = 10_000;
        for (open, close) in [
            ("<extension url=\"http://x\">", "</extension>"),
            ("<a>", "</a>"),
        ] {
            let xml = format!(
                "<Patient xmlns=\"http://hl7.org/fhir\">{}{}</Patient>",
                open.repeat(n),
                close.repeat(n)
            );
            let e = xml_to_json(&xml).unwrap_err();
            assert!(e.0.contains("nested too deeply"), "{e}");
        }
        // just under the limit is converted (and then judged on its content)
        let ok = format!(
            "<Patient xmlns=\"http://hl7.org/fhir\">{}<valueString value=\"v\"/>{}</Patient>",
            "<extension url=\"http://x\">".repeat(MAX_XML_DEPTH - 3),
            "</extension>".repeat(MAX_XML_DEPTH - 3)
        );
        assert!(xml_to_json(&ok).is_ok());
        // a deep narrative is carried verbatim, not converted, so it does not count
        let div = format!(
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">{}x{}</div>",
            "<span>".repeat(500),
            "</span>".repeat(500)
        );
        let xml = format!(
            "<Patient xmlns=\"http://hl7.org/fhir\"><text><status value=\"generated\"/>{div}</text></Patient>"
        );
        assert_eq!(
            xml_to_json(&xml).unwrap()["text"]["div"],
            serde_json::json!(div)
        );
    }

    #[test]
    fn empty_arrays_do_not_panic() {
        let json = serde_json::json!({"resourceType": "Patient", "name": []});
        let _ = json_to_xml(&json);
    }
}

#[cfg(test)]
mod primitive_extension_tests {
    use super::*;

    #[test]
    fn primitives_with_only_an_extension_round_trip() {
        let ext = serde_json::json!([{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]);
        let json = serde_json::json!({
            "resourceType": "Patient",
            "name": [{"family": "Cox", "given": ["Richard", null], "_given": [null, {"extension": ext}]}],
            "_birthDate": {"id": "b1", "extension": ext}
        });
        let xml = json_to_xml(&json).expect("to xml");
        let back = xml_to_json(&xml).expect("from xml");
        assert_eq!(back, json, "{xml}");
    }
}
