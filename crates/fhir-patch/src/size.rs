//! Bounds on a patch's result, as the body limit bounds a request body: its
//! compact JSON size and its nesting depth. Measured without recursion, and
//! stopping as soon as a budget is exceeded, so measuring is bounded too.

use serde_json::Value;

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Measure {
    /// Compact serialised size in bytes (strings counted unescaped); once over
    /// the budget, some value over it.
    pub bytes: usize,
    /// Arrays and objects nested (a scalar is 0, `{}` is 1).
    pub depth: usize,
}

/// Size and depth of `v`, stopping (with a result over the bounds) once the
/// size exceeds `max_bytes` or the depth reaches `max_depth`.
pub(crate) fn measure(v: &Value, max_bytes: usize, max_depth: usize) -> Measure {
    let mut bytes = 0usize;
    let mut deepest = 0usize;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Null | Value::Bool(true) => bytes += 4,
            Value::Bool(false) => bytes += 5,
            Value::Number(n) => bytes += n.as_str().len(),
            Value::String(s) => bytes += s.len() + 2,
            Value::Array(a) => {
                bytes += 2 + a.len().saturating_sub(1);
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(m) => {
                bytes += 2 + m.len().saturating_sub(1);
                deepest = deepest.max(d + 1);
                for (k, x) in m {
                    bytes += k.len() + 3;
                    stack.push((x, d + 1));
                }
            }
        }
        if bytes > max_bytes || deepest >= max_depth {
            break;
        }
    }
    Measure {
        bytes,
        depth: deepest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn measures_the_compact_serialisation() {
        for v in [
            json!(null),
            json!({"a": [1, "x", true, false, null], "bb": {"c": 1.50}}),
            json!([]),
            json!({}),
        ] {
            let m = measure(&v, usize::MAX, usize::MAX);
            assert_eq!(m.bytes, v.to_string().len(), "{v}");
        }
        assert_eq!(measure(&json!({"a": [{}]}), 100, 100).depth, 3);
        assert_eq!(measure(&json!("x"), 100, 100).depth, 0);
    }

    #[test]
    fn stops_early() {
        let big = Value::Array(vec![Value::Array(vec![json!("xxxxxxxxxx"); 1000]); 100]);
        let m = measure(&big, 1000, 128);
        assert!(m.bytes > 1000 && m.bytes < 20_000, "{m:?}");
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        assert_eq!(measure(&deep, usize::MAX, 128).depth, 128);
        // dropping `deep` is fine at this depth
    }
}
