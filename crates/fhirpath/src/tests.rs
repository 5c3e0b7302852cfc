//! Unit tests of the public API.

use super::*;
use serde_json::json;

fn eval_str(expr: &str, res: &Json) -> Vec<String> {
    let e = parse(expr).unwrap_or_else(|e| panic!("{}: {}", expr, e));
    let ctx = EvalContext::new();
    evaluate(&e, res, &ctx)
        .unwrap_or_else(|e| panic!("{}: {}", expr, e))
        .iter()
        .map(literal_repr)
        .collect()
}

#[test]
fn basic_navigation() {
    let p = json!({"resourceType": "Patient", "name": [{"given": ["A", "B"]}, {"given": ["C"]}]});
    assert_eq!(eval_str("name.given", &p), vec!["A", "B", "C"]);
    assert_eq!(eval_str("Patient.name.given.count()", &p), vec!["3"]);
    assert_eq!(
        eval_str("name.exists() or identifier.exists()", &p),
        vec!["true"]
    );
}
