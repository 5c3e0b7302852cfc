//! Conformance against the FHIR test cases for JSON Patch and FHIRPath Patch
//! (`FHIR/fhir-test-cases` `r4/patch/`), read from the directory named by the
//! environment variable `FHIRBRIDGE_PATCH_CASES_DIR` (in this project:
//! `shared/conformance/patch`). Without it the tests say so and pass.

use std::path::PathBuf;

use fhir_patch::{apply_fhirpath_patch, apply_json_patch, PatchError};
use serde_json::Value;

const ENV: &str = "FHIRBRIDGE_PATCH_CASES_DIR";

/// Cases expected to fail, with the reason. Keep this empty unless a case is
/// genuinely impossible.
const KNOWN_FHIRPATH_FAILURES: &[&str] = &[];

fn cases_dir() -> Option<PathBuf> {
    match std::env::var_os(ENV) {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            println!("skipping: {ENV} not set");
            None
        }
    }
}

#[test]
fn json_patch_conformance() {
    let Some(dir) = cases_dir() else { return };
    let path = dir.join("json-patch-tests.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases: Vec<Value> = serde_json::from_str(&text).expect("json-patch-tests.json");
    assert_eq!(cases.len(), 16, "expected the 16 RFC 6902 cases");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["comment"].as_str().unwrap_or("?");
        let mut doc = case["doc"].clone();
        let result = apply_json_patch(&mut doc, &case["patch"]);
        let outcome = match (case.get("expected"), &result) {
            (Some(expected), Ok(())) if &doc == expected => Ok(()),
            (Some(expected), Ok(())) => Err(format!("got {doc}, expected {expected}")),
            (Some(_), Err(e)) => Err(format!("unexpected error: {e}")),
            (None, Err(e)) if doc == case["doc"] => {
                println!("    ({name}: {e}; expected: {})", case["error"]);
                Ok(())
            }
            (None, Err(_)) => Err("error reported, but the document was changed".into()),
            (None, Ok(())) => Err(format!("expected an error ({})", case["error"])),
        };
        match outcome {
            Ok(()) => println!("PASS {name}"),
            Err(why) => {
                println!("FAIL {name}: {why}");
                failures.push(name.to_string());
            }
        }
    }
    println!(
        "JSON Patch conformance: {}/{} cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "failing JSON Patch cases: {failures:?}"
    );
}

/// One `<case>` of fhir-patch-tests.xml.
struct XmlCase {
    name: String,
    input: String,
    diff: String,
    /// The expected resource, or the expected error message.
    expect: Result<String, String>,
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

fn unescape_attr(s: &str) -> String {
    s.replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Splits the test file into cases by plain string scanning (the structure
/// is fixed: `<case name=".." mode=".."><input/><diff/><output/> or <error msg/>`).
fn xml_cases(text: &str) -> Vec<XmlCase> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<case ") {
        let after = &rest[start..];
        let end = after.find("</case>").expect("unterminated <case>");
        let block = &after[..end];
        let head = &block[..block.find('>').expect("case tag")];
        let name = between(head, "name=\"", "\"")
            .expect("case name")
            .to_string();
        let input = between(block, "<input>", "</input>")
            .expect("input")
            .to_string();
        let diff = between(block, "<diff>", "</diff>")
            .expect("diff")
            .to_string();
        let expect = match between(block, "<output>", "</output>") {
            Some(o) => Ok(o.to_string()),
            None => Err(unescape_attr(
                between(block, "<error msg=\"", "\"").expect("output or error"),
            )),
        };
        out.push(XmlCase {
            name,
            input,
            diff,
            expect,
        });
        rest = &after[end..];
    }
    out
}

fn to_json(xml: &str, what: &str) -> Result<Value, String> {
    fhirbolt_shim::xml_to_json(xml.trim()).map_err(|e| format!("{what}: {e}"))
}

/// Narrative `div`s are carried through `fhirbolt_shim` verbatim, so the XML
/// test file's CRLF line ends and character references in text (`&quot;`)
/// survive into the expected JSON, while the patch value (an XML attribute,
/// parsed properly) has LF and `"`. Both are the same XHTML: compare
/// narratives after XML end-of-line normalisation and with `&quot;`/`&apos;`
/// in text content decoded.
fn normalise_narrative(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                match child {
                    Value::String(s) if k == "div" => *s = normalise_xhtml(s),
                    other => normalise_narrative(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_narrative),
        _ => {}
    }
}

fn normalise_xhtml(s: &str) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    let mut rest = s.as_str();
    while let Some(c) = rest.chars().next() {
        if !in_tag {
            if let Some(r) = rest.strip_prefix("&quot;") {
                out.push('"');
                rest = r;
                continue;
            }
            if let Some(r) = rest.strip_prefix("&apos;") {
                out.push('\'');
                rest = r;
                continue;
            }
        }
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn run_xml_case(case: &XmlCase) -> Result<(), String> {
    let input = to_json(&case.input, "input")?;
    let diff = to_json(&case.diff, "diff")?;
    let mut doc = input.clone();
    let result = apply_fhirpath_patch(&mut doc, &diff);
    match (&case.expect, result) {
        (Ok(output), Ok(())) => {
            let mut expected = to_json(output, "output")?;
            normalise_narrative(&mut expected);
            normalise_narrative(&mut doc);
            if doc == expected {
                Ok(())
            } else {
                Err(format!(
                    "got\n{}\nexpected\n{}",
                    serde_json::to_string_pretty(&doc).unwrap_or_default(),
                    serde_json::to_string_pretty(&expected).unwrap_or_default()
                ))
            }
        }
        (Ok(_), Err(e)) => Err(format!("unexpected error: {e}")),
        (Err(msg), Ok(())) => Err(format!("expected the error \"{msg}\"")),
        (Err(msg), Err(e)) => {
            if doc != input {
                return Err("error reported, but the resource was changed".into());
            }
            if !matches!(e, PatchError::CannotApply { .. }) {
                return Err(format!("expected a CannotApply error, got {e:?}"));
            }
            if e.message() != msg {
                return Err(format!(
                    "error message \"{}\", expected \"{msg}\"",
                    e.message()
                ));
            }
            Ok(())
        }
    }
}

#[test]
fn fhirpath_patch_conformance() {
    let Some(dir) = cases_dir() else { return };
    let path = dir.join("fhir-patch-tests.xml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases = xml_cases(&text);
    assert_eq!(cases.len(), 33, "expected the 33 FHIRPath Patch cases");
    let mut failures = Vec::new();
    for case in &cases {
        match run_xml_case(case) {
            Ok(()) => println!("PASS {}", case.name),
            Err(why) => {
                println!("FAIL {}: {why}", case.name);
                failures.push(case.name.as_str());
            }
        }
    }
    println!(
        "FHIRPath Patch conformance: {}/{} cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert_eq!(
        failures, KNOWN_FHIRPATH_FAILURES,
        "FHIRPath Patch cases failing (left) differ from the known failures (right)"
    );
}
