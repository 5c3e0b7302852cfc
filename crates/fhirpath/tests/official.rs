//! Runs the official FHIRPath R4 conformance suite (`tests-fhir-r4.xml`)
//! found in `$FHIRPATH_SUITE_DIR`, using the JSON inputs in `input-json/`.
//!
//! Prints a per-group table, every failure with its reason, and the total;
//! fails if the pass rate drops below the recorded threshold.

use fhirpath::{evaluate_values, literal_repr, parse, EvalContext, NodeRef, Value};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

/// Minimum pass rate (fraction) required: achieved 931/935 (99.6%) with the
/// R4 model and 917/935 (98.1%) untyped (`--no-default-features`); the
/// thresholds leave a small margin so regressions fail.
const THRESHOLD: f64 = if cfg!(feature = "r4-model") {
    0.99
} else {
    0.975
};

// ------------------------------------------------------------------ tiny XML reader

#[derive(Debug)]
enum Ev {
    Open(String, Vec<(String, String)>, bool),
    Close(String),
    Text(String),
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn parse_attrs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let q = match after.chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => break,
        };
        let body = &after[1..];
        let end = match body.find(q) {
            Some(e) => e,
            None => break,
        };
        out.push((name, unescape(&body[..end])));
        rest = body[end + 1..].trim_start();
    }
    out
}

fn xml_events(src: &str) -> Vec<Ev> {
    let mut evs = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let rest = &src[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map(|p| p + 3).unwrap_or(rest.len());
        } else if rest.starts_with("<?") {
            i += rest.find("?>").map(|p| p + 2).unwrap_or(rest.len());
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').unwrap_or(r.len());
            evs.push(Ev::Close(r[..end].trim().to_string()));
            i += 2 + end + 1;
        } else if let Some(r) = rest.strip_prefix('<') {
            let end = r.find('>').unwrap_or(r.len());
            let mut inner = &r[..end];
            let selfclose = inner.ends_with('/');
            if selfclose {
                inner = &inner[..inner.len() - 1];
            }
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            evs.push(Ev::Open(
                inner[..name_end].to_string(),
                parse_attrs(&inner[name_end..]),
                selfclose,
            ));
            i += 1 + end + 1;
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            evs.push(Ev::Text(unescape(&rest[..end])));
            i += end;
        }
    }
    evs
}

// ------------------------------------------------------------------ test model

#[derive(Debug, Default, Clone)]
struct Case {
    group: String,
    name: String,
    input: Option<String>,
    expr: String,
    invalid: Option<String>,
    predicate: bool,
    strict: bool,
    ordered: bool,
    outputs: Vec<(Option<String>, String)>,
}

fn attr<'x>(a: &'x [(String, String)], n: &str) -> Option<&'x str> {
    a.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
}

fn load_cases(xml: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut group = String::new();
    let mut cur: Option<Case> = None;
    let mut text = String::new();
    let mut out_type: Option<String> = None;
    for ev in xml_events(xml) {
        match ev {
            Ev::Open(n, a, sc) => {
                text.clear();
                match n.as_str() {
                    "group" => group = attr(&a, "name").unwrap_or("").to_string(),
                    "test" => {
                        cur = Some(Case {
                            group: group.clone(),
                            name: attr(&a, "name").unwrap_or("").to_string(),
                            input: attr(&a, "inputfile").map(|s| s.to_string()),
                            predicate: attr(&a, "predicate") == Some("true"),
                            strict: attr(&a, "mode") == Some("strict"),
                            ordered: attr(&a, "ordered") != Some("false"),
                            ..Default::default()
                        })
                    }
                    "expression" => {
                        if let Some(c) = cur.as_mut() {
                            c.invalid = attr(&a, "invalid").map(|s| s.to_string());
                            if attr(&a, "mode") == Some("strict") {
                                c.strict = true;
                            }
                        }
                    }
                    "output" => {
                        out_type = attr(&a, "type").map(|s| s.to_string());
                        if sc {
                            if let Some(c) = cur.as_mut() {
                                c.outputs.push((out_type.take(), String::new()));
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ev::Text(t) => text.push_str(&t),
            Ev::Close(n) => match n.as_str() {
                "expression" => {
                    if let Some(c) = cur.as_mut() {
                        c.expr = text.clone();
                    }
                }
                "output" => {
                    if let Some(c) = cur.as_mut() {
                        c.outputs.push((out_type.take(), text.clone()));
                    }
                }
                "test" => {
                    if let Some(c) = cur.take() {
                        cases.push(c);
                    }
                }
                _ => {}
            },
        }
    }
    cases
}

// ------------------------------------------------------------------ comparison

fn type_name(v: &Value<'_>) -> String {
    let (ns, n) = v.type_info();
    if ns == "System" && n != "Quantity" {
        let mut c = n.chars();
        match c.next() {
            Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
            None => String::new(),
        }
    } else {
        n.into_owned()
    }
}

fn expected_value(ty: &str, text: &str) -> Result<Value<'static>, String> {
    Ok(match ty {
        "boolean" => Value::Boolean(text == "true"),
        "integer" => Value::Integer(text.parse().map_err(|_| format!("bad integer {}", text))?),
        "date" | "dateTime" | "time" | "Quantity" | "decimal" => {
            let e = parse(text).map_err(|e| format!("bad expected literal {}: {}", text, e))?;
            let ctx = EvalContext::new();
            let mut r = evaluate_values(&e, &[], &ctx).map_err(|e| e.to_string())?;
            r.pop().ok_or("empty expected literal")?
        }
        _ => Value::String(text.to_string()),
    })
}

fn values_equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    let e = match parse("%a = %b") {
        Ok(e) => e,
        Err(_) => return false,
    };
    let ctx = EvalContext::new()
        .variable("a", vec![a.clone()])
        .variable("b", vec![b.clone()]);
    matches!(
        evaluate_values(&e, &[], &ctx).as_deref(),
        Ok([Value::Boolean(true)])
    )
}

fn matches_output(v: &Value<'_>, ty: &Option<String>, text: &str) -> Result<(), String> {
    match ty {
        None => {
            let got = literal_repr(v);
            if got == text {
                Ok(())
            } else {
                Err(format!("expected {} got {}", text, got))
            }
        }
        Some(t) => {
            let got_t = type_name(v);
            if &got_t != t {
                return Err(format!(
                    "expected type {} got {} ({})",
                    t,
                    got_t,
                    literal_repr(v)
                ));
            }
            let exp = expected_value(t, text)?;
            let ok = match (&exp, v.to_fhirpath_string()) {
                (Value::String(s), Some(g)) => *s == g,
                _ => values_equal(v, &exp),
            };
            if ok {
                Ok(())
            } else {
                Err(format!("expected {} {} got {}", t, text, literal_repr(v)))
            }
        }
    }
}

fn run_case(c: &Case, inputs: &BTreeMap<String, Json>) -> Result<(), String> {
    let expr = parse(&c.expr);
    let input_json = match &c.input {
        Some(f) => Some(
            inputs
                .get(f)
                .ok_or_else(|| format!("missing input {}", f))?,
        ),
        None => None,
    };
    let ctx = EvalContext::new().strict(c.strict);
    let result = match expr {
        Ok(e) => {
            let input: Vec<Value<'_>> = input_json
                .map(|j| {
                    let t = j.get("resourceType").and_then(|t| t.as_str()).unwrap_or("");
                    vec![Value::Node(NodeRef::new(j, t))]
                })
                .unwrap_or_default();
            evaluate_values(&e, &input, &ctx).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("parse: {}", e)),
    };
    if let Some(kind) = &c.invalid {
        return match result {
            Err(_) => Ok(()),
            Ok(r) => Err(format!(
                "expected {} error, got [{}]",
                kind,
                r.iter().map(literal_repr).collect::<Vec<_>>().join(", ")
            )),
        };
    }
    let mut r = result?;
    if c.predicate {
        r = match fhirpath::collection_to_bool(&r).map_err(|e| e.to_string())? {
            Some(b) => vec![Value::Boolean(b)],
            None => vec![],
        };
    }
    let show = || r.iter().map(literal_repr).collect::<Vec<_>>().join(", ");
    if r.len() != c.outputs.len() {
        return Err(format!(
            "expected {} results, got {}: [{}]",
            c.outputs.len(),
            r.len(),
            show()
        ));
    }
    if c.ordered {
        for (v, (t, text)) in r.iter().zip(c.outputs.iter()) {
            matches_output(v, t, text).map_err(|e| format!("{} in [{}]", e, show()))?;
        }
    } else {
        let mut used = vec![false; r.len()];
        for (t, text) in &c.outputs {
            let pos = r
                .iter()
                .enumerate()
                .position(|(i, v)| !used[i] && matches_output(v, t, text).is_ok());
            match pos {
                Some(p) => used[p] = true,
                None => return Err(format!("missing expected {} in [{}]", text, show())),
            }
        }
    }
    Ok(())
}

#[test]
fn official_suite() {
    let dir = match std::env::var("FHIRPATH_SUITE_DIR") {
        Ok(d) => d,
        Err(_) => {
            println!("skipping: FHIRPATH_SUITE_DIR not set");
            return;
        }
    };
    let dir = Path::new(&dir);
    let xml =
        std::fs::read_to_string(dir.join("tests-fhir-r4.xml")).expect("read tests-fhir-r4.xml");
    let cases = load_cases(&xml);
    let mut inputs = BTreeMap::new();
    for c in &cases {
        if let Some(f) = &c.input {
            if !inputs.contains_key(f) {
                let json_name = f
                    .trim_end_matches(".xml")
                    .trim_end_matches(".json")
                    .to_string()
                    + ".json";
                let text = std::fs::read_to_string(dir.join("input-json").join(&json_name))
                    .unwrap_or_else(|e| panic!("read {}: {}", json_name, e));
                let j: Json = serde_json::from_str(&text).expect("valid input JSON");
                inputs.insert(f.clone(), j);
            }
        }
    }
    let mut groups: Vec<(String, usize, usize)> = Vec::new();
    let mut failures = Vec::new();
    let mut passed = 0;
    for c in &cases {
        if groups.last().map(|g| &g.0) != Some(&c.group) {
            groups.push((c.group.clone(), 0, 0));
        }
        let ok = match std::panic::catch_unwind(|| run_case(c, &inputs)) {
            Ok(r) => r,
            Err(_) => Err("PANIC".to_string()),
        };
        if let Some(g) = groups.last_mut() {
            g.2 += 1;
            if ok.is_ok() {
                g.1 += 1;
            }
        }
        match ok {
            Ok(()) => passed += 1,
            Err(e) => failures.push(format!(
                "{} / {}: `{}` -> {}",
                c.group,
                c.name,
                c.expr.replace('\n', " "),
                e
            )),
        }
    }
    println!("{:<40} {:>6} {:>6}", "group", "pass", "total");
    for (g, p, t) in &groups {
        println!(
            "{:<40} {:>6} {:>6}{}",
            g,
            p,
            t,
            if p < t { "  *" } else { "" }
        );
    }
    println!("\nFAILURES ({}):", failures.len());
    for f in &failures {
        println!("  {}", f);
    }
    let total = cases.len();
    let rate = passed as f64 / total as f64;
    println!(
        "\nTOTAL: {}/{} passed ({:.1}%)",
        passed,
        total,
        rate * 100.0
    );
    assert!(
        failures.iter().all(|f| !f.ends_with("PANIC")),
        "a test panicked"
    );
    assert!(
        rate >= THRESHOLD,
        "pass rate {:.3} below threshold {}",
        rate,
        THRESHOLD
    );
}
