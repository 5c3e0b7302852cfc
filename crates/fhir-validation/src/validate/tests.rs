use super::extensions::{id_path_eq, type_ancestor};
use super::slicing::{navigate, split_disc_path};
use super::values::{compare_to_limit, json_equal, pattern_match};
use super::*;
use serde_json::json;

#[test]
fn patterns() {
    let p = json!({"coding": [{"system": "http://loinc.org", "code": "1-8"}]});
    let v = json!({"coding": [{"system": "x", "code": "y"}, {"system": "http://loinc.org", "code": "1-8", "display": "d"}], "text": "t"});
    assert!(pattern_match(&p, &v));
    let v2 = json!({"coding": [{"system": "http://loinc.org", "code": "2"}]});
    assert!(!pattern_match(&p, &v2));
    assert!(json_equal(&json!(1.0), &json!(1)));
    assert!(!json_equal(&json!({"a": 1, "b": 2}), &json!({"a": 1})));
}

#[test]
fn ranges() {
    use std::cmp::Ordering;
    let q = |v: &str, u: &str| json!({"value": serde_json::Number::from_string_unchecked(v.into()), "system": "http://unitsofmeasure.org", "code": u});
    assert_eq!(
        compare_to_limit(&q("-1", "g"), "Quantity", &q("0", "kg"), true),
        Some(Ordering::Less)
    );
    assert_eq!(
        compare_to_limit(&q("11000", "g"), "Quantity", &q("10", "kg"), false),
        Some(Ordering::Greater)
    );
    assert_eq!(
        compare_to_limit(&json!(1000), "Decimal", &json!(999), false),
        Some(Ordering::Greater)
    );
    assert_eq!(
        compare_to_limit(&json!("2020-01-02"), "Date", &json!("2020-01-01"), true),
        Some(Ordering::Greater)
    );
    let years = |n: &str| json!({"value": serde_json::Number::from_string_unchecked(n.into()), "system": "http://unitsofmeasure.org", "code": "a"});
    assert_eq!(
        compare_to_limit(&json!("1850-01-01"), "Duration", &years("100"), true),
        Some(Ordering::Less)
    );
    assert_eq!(
        compare_to_limit(&json!("2100-01-01"), "Duration", &years("10"), false),
        Some(Ordering::Greater)
    );
    // absurd limits never panic
    for n in [
        "-9223372036854775808",
        "9223372036854775807",
        "1e400",
        "-0.5",
    ] {
        let _ = compare_to_limit(&json!("2000-01-01"), "Duration", &years(n), true);
        let _ = compare_to_limit(&json!("2000-01-01"), "Duration", &years(n), false);
    }
    assert_eq!(
        compare_to_limit(&json!("x"), "Date", &json!("2020"), true),
        None
    );
}

#[test]
fn locations() {
    let root = P::root("Patient");
    let a = P::child(&root, "identifier", Some(12));
    let b = P::child(&a, "system", None);
    let empty = P::root("");
    let c = P::child(&empty, "x", None);
    for (p, s) in [
        (&b, "Patient.identifier[12].system"),
        (&a, "Patient.identifier[12]"),
        (&c, "x"),
    ] {
        assert_eq!(p.render(), s);
        assert!(p.eq_str(s));
    }
    assert!(!b.eq_str("Patient.identifier[1].system"));
    assert!(!b.eq_str("Patient.identifier.system"));
    assert!(!b.eq_str("XPatient.identifier[12].system"));
    assert!(id_path_eq(
        "Patient.identifier:nhs.system",
        "Patient.identifier.system"
    ));
    assert!(!id_path_eq(
        "Patient.identifier:nhs",
        "Patient.identifier.system"
    ));
    assert!(type_ancestor("Age", "Quantity"));
}

#[test]
fn navigation() {
    let v = json!({"coding": [{"system": "a", "code": "1"}, {"system": "b"}], "valueString": "x",
                   "extension": [{"url": "u", "valueCode": "c"}]});
    assert_eq!(navigate(&v, "coding.system").len(), 2);
    assert_eq!(navigate(&v, "value"), vec![&json!("x")]);
    assert_eq!(navigate(&v, "extension('u').value"), vec![&json!("c")]);
    assert_eq!(
        split_disc_path("extension('a.b').value"),
        vec!["extension('a.b')", "value"]
    );
}
