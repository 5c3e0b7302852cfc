//! RFC 6902 JSON Patch with RFC 6901 JSON Pointers.

use serde_json::Value;

use crate::json_eq::json_equal;
use crate::PatchError;

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

pub(crate) fn apply(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
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
    let mut work = target.clone();
    for (i, op) in parsed.into_iter().enumerate() {
        apply_op(&mut work, op).map_err(|m| PatchError::cannot_apply(m, Some(format!("/{i}"))))?;
    }
    *target = work;
    Ok(())
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

    #[test]
    fn move_into_own_child_is_invalid() {
        let err = parse_op(&json!({"op": "move", "from": "/a", "path": "/a/b"}));
        assert!(err.is_err());
        assert!(parse_op(&json!({"op": "move", "from": "/a", "path": "/ab"})).is_ok());
    }
}
