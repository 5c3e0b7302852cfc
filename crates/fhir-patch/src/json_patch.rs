//! RFC 6902 JSON Patch with RFC 6901 JSON Pointers.

use serde_json::Value;

use crate::json_eq::json_equal;
use crate::size::measure;
use crate::{over_limits, Limits, PatchError};

/// A parsed operation.
enum Op {
    Add(Vec<String>, Value),
    Remove(Vec<String>),
    Replace(Vec<String>, Value),
    Move {
        from: Vec<String>,
        path: Vec<String>,
    },
    Copy {
        from: Vec<String>,
        path: Vec<String>,
    },
    Test(Vec<String>, Value),
}

pub(crate) fn apply(target: &mut Value, patch: &Value, limits: &Limits) -> Result<(), PatchError> {
    let Some(ops) = patch.as_array() else {
        return Err(PatchError::invalid(
            "a JSON Patch document must be a JSON array of operations",
            None,
        ));
    };
    // Parse everything first: a malformed operation anywhere makes the whole
    // document invalid, whatever the earlier operations would have done.
    let parsed = ops
        .iter()
        .enumerate()
        .map(|(i, op)| parse_op(op).map_err(|m| PatchError::invalid(m, Some(format!("/{i}")))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut budget = Budget::new(target, limits).map_err(|m| PatchError::cannot_apply(m, None))?;
    let mut work = target.clone();
    for (i, op) in parsed.into_iter().enumerate() {
        let at = || Some(format!("/{i}"));
        budget
            .admit(&work, &op)
            .map_err(|m| PatchError::cannot_apply(m, at()))?;
        apply_op(&mut work, op).map_err(|m| PatchError::cannot_apply(m, at()))?;
    }
    *target = work;
    Ok(())
}

/// The result's size and depth, kept up to date operation by operation, so
/// that no operation is applied whose result would exceed the [`Limits`]
/// (a `copy` of the document into itself doubles it: without this, a few
/// dozen operations exhaust memory). Each check costs time proportional to the
/// values the operation adds or removes, not to the document.
struct Budget<'l> {
    limits: &'l Limits,
    /// Compact JSON size of the document.
    bytes: usize,
    /// An upper bound of the document's nesting depth.
    depth: usize,
    /// Bytes copied so far (`copy` into the same place over and over keeps
    /// the size but not the time bounded).
    copied: usize,
}

/// Most bytes all `copy` operations of one patch may copy, in multiples of
/// the size limit.
const COPY_FACTOR: usize = 4;

impl<'l> Budget<'l> {
    fn new(doc: &Value, limits: &'l Limits) -> Result<Budget<'l>, String> {
        let m = measure(doc, limits.max_bytes, limits.max_depth);
        if let Some(message) = over_limits(m, limits) {
            return Err(message);
        }
        Ok(Budget {
            limits,
            bytes: m.bytes,
            depth: m.depth,
            copied: 0,
        })
    }

    /// Checks `op` against the limits and, when it fits, records its effect.
    /// An operation that will fail anyway (missing path) is let through to
    /// report its own error.
    fn admit(&mut self, doc: &Value, op: &Op) -> Result<(), String> {
        let limits = self.limits;
        let (path, added) = match op {
            Op::Add(path, v) | Op::Replace(path, v) => (path, v),
            Op::Copy { from, path } => match get(doc, from) {
                Ok(v) => (path, v),
                Err(_) => return Ok(()),
            },
            Op::Remove(path) => {
                if let Ok(old) = get(doc, path) {
                    let m = measure(old, usize::MAX, usize::MAX);
                    let slot = slot_overhead(doc, path);
                    self.bytes = self.bytes.saturating_sub(m.bytes + slot);
                }
                return Ok(());
            }
            Op::Move { from, path } => {
                // same size; the moved value is at most `depth - from.len()` deep
                let bound = (path.len() + self.depth).saturating_sub(from.len());
                if bound >= limits.max_depth {
                    if let Ok(v) = get(doc, from) {
                        let m = measure(v, usize::MAX, limits.max_depth);
                        let depth = path.len() + m.depth;
                        if depth >= limits.max_depth {
                            return Err(too_deep(limits));
                        }
                        self.depth = self.depth.max(depth);
                    }
                }
                return Ok(());
            }
            Op::Test(..) => return Ok(()),
        };
        let room = limits.max_bytes.saturating_sub(self.bytes);
        let m = measure(added, room, limits.max_depth);
        if let Op::Copy { .. } = op {
            self.copied = self.copied.saturating_add(m.bytes);
            if self.copied > limits.max_bytes.saturating_mul(COPY_FACTOR) {
                return Err(format!(
                    "the patch copies more than {} bytes in all (the limit for one patch)",
                    limits.max_bytes.saturating_mul(COPY_FACTOR)
                ));
            }
        }
        // what the operation replaces: an existing member, or the whole document
        let replaced = match (op, split_last(path)) {
            (_, None) => Some(self.bytes),
            (Op::Replace(..), _) => get(doc, path)
                .ok()
                .map(|old| measure(old, usize::MAX, usize::MAX).bytes),
            (_, Some((parent, last))) => match get(doc, parent) {
                Ok(Value::Object(o)) => o
                    .get(last.as_str())
                    .map(|old| measure(old, usize::MAX, usize::MAX).bytes),
                _ => None,
            },
        };
        let after = match replaced {
            Some(old) => (self.bytes + m.bytes).saturating_sub(old),
            None => self.bytes + m.bytes + slot_overhead(doc, path),
        };
        if after > limits.max_bytes {
            return Err(format!(
                "the patched resource would be larger than the limit of {} bytes",
                limits.max_bytes
            ));
        }
        let depth = path.len() + m.depth;
        if depth >= limits.max_depth {
            return Err(too_deep(limits));
        }
        self.bytes = after;
        self.depth = if path.is_empty() {
            depth
        } else {
            self.depth.max(depth)
        };
        Ok(())
    }
}

/// The bytes a member or item at `path` takes besides its value: key, quotes,
/// colon and comma in an object; the comma in an array.
fn slot_overhead(doc: &Value, path: &[String]) -> usize {
    match split_last(path).map(|(parent, last)| (get(doc, parent), last)) {
        Some((Ok(Value::Object(_)), last)) => last.len() + 4,
        Some((Ok(Value::Array(_)), _)) => 1,
        _ => 0,
    }
}

fn too_deep(limits: &Limits) -> String {
    format!(
        "the patched resource would be nested too deeply (limit {} levels)",
        limits.max_depth
    )
}

fn parse_op(op: &Value) -> Result<Op, String> {
    let Some(obj) = op.as_object() else {
        return Err("each JSON Patch operation must be a JSON object".into());
    };
    let name = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("member \"op\" must be a string".into()),
        None => return Err("operation has no \"op\" member".into()),
    };
    let pointer = |member: &str| -> Result<Vec<String>, String> {
        match obj.get(member) {
            Some(Value::String(s)) => parse_pointer(s),
            Some(_) => Err(format!("member \"{member}\" must be a string")),
            None => Err(format!("\"{name}\" operation has no \"{member}\" member")),
        }
    };
    let value = || -> Result<Value, String> {
        obj.get("value")
            .cloned()
            .ok_or_else(|| format!("\"{name}\" operation has no \"value\" member"))
    };
    Ok(match name {
        "add" => Op::Add(pointer("path")?, value()?),
        "remove" => Op::Remove(pointer("path")?),
        "replace" => Op::Replace(pointer("path")?, value()?),
        "test" => Op::Test(pointer("path")?, value()?),
        "move" => {
            let from = pointer("from")?;
            let path = pointer("path")?;
            if from.len() < path.len() && path.starts_with(&from) {
                return Err(format!(
                    "cannot move {} into one of its own children ({})",
                    format_pointer(&from),
                    format_pointer(&path)
                ));
            }
            Op::Move { from, path }
        }
        "copy" => Op::Copy {
            from: pointer("from")?,
            path: pointer("path")?,
        },
        other => return Err(format!("unknown JSON Patch operation \"{other}\"")),
    })
}

/// Parses an RFC 6901 JSON Pointer into its unescaped reference tokens.
pub(crate) fn parse_pointer(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(format!(
            "JSON Pointer \"{s}\" must be empty or start with '/'"
        ));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "JSON Pointer \"{s}\" has an invalid escape ('~' must be followed by 0 or 1)"
                            ))
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

fn format_pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// An array index token: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let ok = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if ok {
        token.parse().ok()
    } else {
        None
    }
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Result<&'a Value, String> {
    let mut cur = doc;
    for (depth, token) in tokens.iter().enumerate() {
        let next = match cur {
            Value::Object(m) => m.get(token),
            Value::Array(a) => array_index(token).and_then(|i| a.get(i)),
            _ => None,
        };
        cur = next.ok_or_else(|| {
            format!(
                "path {} does not exist",
                format_pointer(tokens.get(..=depth).unwrap_or(tokens))
            )
        })?;
    }
    Ok(cur)
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for (depth, token) in tokens.iter().enumerate() {
        let next = match cur {
            Value::Object(m) => m.get_mut(token),
            Value::Array(a) => array_index(token).and_then(|i| a.get_mut(i)),
            _ => None,
        };
        cur = next.ok_or_else(|| {
            format!(
                "path {} does not exist",
                format_pointer(tokens.get(..=depth).unwrap_or(tokens))
            )
        })?;
    }
    Ok(cur)
}

/// Splits a non-empty pointer into its parent and last token.
fn split_last(tokens: &[String]) -> Option<(&[String], &String)> {
    let (last, parent) = tokens.split_last()?;
    Some((parent, last))
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((parent, last)) = split_last(tokens) else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            match array_index(last) {
                Some(i) if i <= a.len() => {
                    a.insert(i, value);
                    Ok(())
                }
                Some(i) => Err(format!(
                    "index {i} is out of bounds at {} (array length {})",
                    format_pointer(tokens),
                    a.len()
                )),
                None => Err(format!(
                    "\"{last}\" is not a valid array index at {}",
                    format_pointer(tokens)
                )),
            }
        }
        _ => Err(format!(
            "cannot add {}: the parent is neither an object nor an array",
            format_pointer(tokens)
        )),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some((parent, last)) = split_last(tokens) else {
        return Err("cannot remove the whole document".into());
    };
    let missing = || format!("path {} does not exist", format_pointer(tokens));
    match get_mut(doc, parent)? {
        Value::Object(m) => m.shift_remove(last.as_str()).ok_or_else(missing),
        Value::Array(a) => match array_index(last) {
            Some(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

fn replace(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let slot = get_mut(doc, tokens)?;
    *slot = value;
    Ok(())
}

fn apply_op(doc: &mut Value, op: Op) -> Result<(), String> {
    match op {
        Op::Add(path, value) => add(doc, &path, value),
        Op::Remove(path) => remove(doc, &path).map(|_| ()),
        Op::Replace(path, value) => replace(doc, &path, value),
        Op::Move { from, path } => {
            if from == path {
                return get(doc, &from).map(|_| ());
            }
            let value = remove(doc, &from)?;
            add(doc, &path, value)
        }
        Op::Copy { from, path } => {
            let value = get(doc, &from)?.clone();
            add(doc, &path, value)
        }
        Op::Test(path, value) => {
            let actual = get(doc, &path)?;
            if json_equal(actual, &value) {
                Ok(())
            } else {
                Err(format!(
                    "test failed: the value at {} is {}, not {}",
                    format_pointer(&path),
                    abbreviate(actual),
                    abbreviate(&value)
                ))
            }
        }
    }
}

/// A short rendering of a value for error messages.
fn abbreviate(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let head: String = s.chars().take(77).collect();
        format!("{head}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_unescape_in_the_right_order() {
        assert_eq!(parse_pointer("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_pointer("/").unwrap(), vec![String::new()]);
        assert_eq!(parse_pointer("/~01").unwrap(), vec!["~1".to_string()]);
        assert_eq!(parse_pointer("/a~1b/c").unwrap(), vec!["a/b", "c"]);
        assert!(parse_pointer("a").is_err());
        assert!(parse_pointer("/~2").is_err());
        assert!(parse_pointer("/~").is_err());
        assert_eq!(format_pointer(&["a/b".into(), "~".into()]), "/a~1b/~0");
    }

    #[test]
    fn array_indices_are_strict() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("99999999999999999999999"), None);
    }

    fn limits(max_bytes: usize) -> Limits {
        Limits::with_max_bytes(max_bytes)
    }

    #[test]
    fn doubling_copies_stop_at_the_size_limit() {
        let mut doc = json!({"resourceType": "Basic", "a": ["x".repeat(1000)]});
        let ops: Vec<Value> = (0..64)
            .flat_map(|_| {
                [
                    json!({"op": "copy", "from": "/a", "path": "/a/-"}),
                    json!({"op": "copy", "from": "", "path": "/c"}),
                ]
            })
            .collect();
        let before = doc.clone();
        let e = apply(&mut doc, &Value::Array(ops), &limits(1 << 20)).unwrap_err();
        assert!(!e.is_invalid());
        assert!(e.message().contains("limit of 1048576 bytes"), "{e}");
        assert_eq!(doc, before);
        // the accounting is exact for these operations
        let mut doc = before.clone();
        let ops: Vec<Value> = (0..6)
            .map(|_| json!({"op": "copy", "from": "/a", "path": "/a/-"}))
            .collect();
        apply(&mut doc, &Value::Array(ops.clone()), &limits(1 << 20)).unwrap();
        let exact = doc.to_string().len();
        let mut again = before.clone();
        apply(&mut again, &Value::Array(ops.clone()), &limits(exact)).unwrap();
        let mut over = before;
        assert!(apply(&mut over, &Value::Array(ops), &limits(exact - 1)).is_err());
    }

    #[test]
    fn copying_over_and_over_is_bounded_in_time() {
        // the size stays the same, but each copy costs the whole subtree
        let mut doc = json!({"a": "x".repeat(1000), "b": 1});
        let ops: Vec<Value> = (0..100)
            .map(|_| json!({"op": "copy", "from": "/a", "path": "/b"}))
            .collect();
        let e = apply(&mut doc, &Value::Array(ops), &limits(10_000)).unwrap_err();
        assert!(e.message().contains("copies more than 40000 bytes"), "{e}");
        assert_eq!(e.expression(), Some("/39"));
    }

    #[test]
    fn the_size_follows_removals_and_replacements() {
        // growing and shrinking again stays within a limit the net result fits
        let mut doc = json!({"a": "x".repeat(600)});
        let mut ops = Vec::new();
        for i in 0..100 {
            if i < 5 {
                ops.push(json!({"op": "copy", "from": "/a", "path": "/b"}));
            } else {
                ops.push(json!({"op": "add", "path": "/b", "value": "b".repeat(600)}));
            }
            ops.push(json!({"op": "remove", "path": "/b"}));
            ops.push(json!({"op": "replace", "path": "/a", "value": "y".repeat(600)}));
            ops.push(json!({"op": "add", "path": "/a", "value": "z".repeat(600)}));
            ops.push(json!({"op": "move", "from": "/a", "path": "/m"}));
            ops.push(json!({"op": "move", "from": "/m", "path": "/a"}));
        }
        apply(&mut doc, &Value::Array(ops), &limits(1500)).unwrap();
        assert_eq!(doc, json!({"a": "z".repeat(600)}));
        // a replaced root counts only the new document
        let mut doc = json!({"a": "x".repeat(1000)});
        let ops = json!([{"op": "add", "path": "", "value": {"b": "y".repeat(1000)}}]);
        apply(&mut doc, &ops, &limits(1100)).unwrap();
    }

    #[test]
    fn results_nested_past_the_depth_limit_are_refused() {
        let mut value = json!("x");
        for _ in 0..124 {
            value = json!({ "a": value });
        }
        let mut doc = json!({"p": {"q": {"r": {}}}});
        let before = doc.clone();
        let ops = json!([{"op": "add", "path": "/p/q/r/s", "value": value}]);
        let e = apply(&mut doc, &ops, &Limits::default()).unwrap_err();
        assert!(e.message().contains("nested too deeply"), "{e}");
        assert_eq!(doc, before);
        // copying the document into itself deepens it one level per operation
        let ops: Vec<Value> = (0..10_000)
            .map(|_| json!({"op": "copy", "from": "", "path": "/p"}))
            .collect();
        let e = apply(&mut doc, &Value::Array(ops), &limits(usize::MAX)).unwrap_err();
        assert!(e.message().contains("nested too deeply"), "{e}");
        // and so can moves
        let mut doc = json!({"a": value, "b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {}}}}}}}}});
        let ops = json!([{"op": "move", "from": "/a", "path": "/b/c/d/e/f/g/h/i/j"}]);
        let e = apply(&mut doc, &ops, &Limits::default()).unwrap_err();
        assert!(e.message().contains("nested too deeply"), "{e}");
    }

    #[test]
    fn move_into_own_child_is_invalid() {
        let err = parse_op(&json!({"op": "move", "from": "/a", "path": "/a/b"}));
        assert!(err.is_err());
        assert!(parse_op(&json!({"op": "move", "from": "/a", "path": "/ab"})).is_ok());
    }
}
