//! JSON equality as RFC 6902 `test` defines it: numbers compare by numeric
//! value (`1`, `1.0` and `10e-1` are equal), objects regardless of member order.

use serde_json::Value;

/// Whether two JSON values are equal in the sense of RFC 6902 section 4.6.
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => numbers_equal(&x.to_string(), &y.to_string()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => false,
    }
}

/// A decimal number in a canonical form: sign, significant digits without
/// leading or trailing zeros, and the decimal exponent of the last digit.
#[derive(Debug, PartialEq, Eq)]
struct Canonical {
    negative: bool,
    digits: String,
    exponent: i64,
}

fn canonical(s: &str) -> Option<Canonical> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (
            rest.get(..i)?,
            rest.get(i + 1..)?
                .trim_start_matches('+')
                .parse::<i64>()
                .ok()?,
        ),
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (mantissa.get(..i)?, mantissa.get(i + 1..)?),
        None => (mantissa, ""),
    };
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let frac_len = i64::try_from(frac.len()).ok()?;
    let trimmed_end = all.trim_end_matches('0');
    let trailing = i64::try_from(all.len() - trimmed_end.len()).ok()?;
    let digits = trimmed_end.trim_start_matches('0').to_string();
    if digits.is_empty() {
        return Some(Canonical {
            negative: false,
            digits,
            exponent: 0,
        });
    }
    Some(Canonical {
        negative,
        digits,
        exponent: exp.checked_sub(frac_len)?.checked_add(trailing)?,
    })
}

fn numbers_equal(a: &str, b: &str) -> bool {
    match (canonical(a), canonical(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        for (a, b) in [
            ("1", "1.0"),
            ("10", "1e1"),
            ("0.5", "5e-1"),
            ("-0", "0"),
            ("0.0", "0"),
            ("100", "100.000"),
            ("1E+2", "100"),
        ] {
            assert!(numbers_equal(a, b), "{a} vs {b}");
        }
        for (a, b) in [("1", "2"), ("1", "-1"), ("10", "1"), ("0.1", "0.01")] {
            assert!(!numbers_equal(a, b), "{a} vs {b}");
        }
    }

    #[test]
    fn structures_compare_deeply_and_orderlessly() {
        let a: Value = serde_json::from_str(r#"{"a":[1,{"b":2.0}],"c":"x"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"c":"x","a":[1.0,{"b":2}]}"#).unwrap();
        assert!(json_equal(&a, &b));
        assert!(!json_equal(&json!([1, 2]), &json!([2, 1])));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": null})));
        assert!(!json_equal(&json!("10"), &json!(10)));
    }
}
