//! Operator semantics: equality (`=`), equivalence (`~`), ordering,
//! arithmetic and date/time arithmetic over FHIRPath values.

use crate::decimal::Decimal;
use crate::parser::BinOp;
use crate::quantity::Quantity;
use crate::temporal::{DateTime, Time};
use crate::value::{Prim, Value};
use crate::EvalError;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cmp::Ordering;

fn err<T>(m: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError::new(m))
}

/// Converts a primitive view into an owned System value.
pub(crate) fn prim_to_value(p: Prim<'_>) -> Option<Value<'static>> {
    Some(match p {
        Prim::Bool(b) => Value::Boolean(b),
        Prim::Int(i) => Value::Integer(i),
        Prim::Dec(d) => Value::Decimal(d),
        Prim::Str(s, _) => Value::String(s.to_string()),
        Prim::Date(d) => Value::Date(d),
        Prim::DateTime(d) => Value::DateTime(d),
        Prim::Time(t) => Value::Time(t),
        Prim::Quantity(q) => Value::Quantity(Box::new(q.into_owned())),
        Prim::Type(t) => Value::TypeInfo(Box::new(t.clone())),
        Prim::Complex(_) => return None,
    })
}

/// Implicit conversion of an untyped string when compared with a temporal value.
fn coerce_untyped<'v>(p: Prim<'v>, other: &Prim<'_>) -> Prim<'v> {
    if let Prim::Str(s, true) = p {
        match other {
            Prim::Date(_) | Prim::DateTime(_) => {
                if let Some(d) = DateTime::parse_fhir(s) {
                    return if d.is_date_only() {
                        Prim::Date(d)
                    } else {
                        Prim::DateTime(d)
                    };
                }
            }
            Prim::Time(_) => {
                if let Some(t) = Time::parse(s, false) {
                    return Prim::Time(t);
                }
            }
            Prim::Dec(_) | Prim::Int(_) => {
                if let Some(d) = Decimal::parse(s) {
                    return Prim::Dec(d);
                }
            }
            _ => {}
        }
    }
    p
}

fn coerce_pair<'x, 'y>(a: Prim<'x>, b: Prim<'y>) -> (Prim<'x>, Prim<'y>) {
    let a = coerce_untyped(a, &b);
    let b = coerce_untyped(b, &a);
    (a, b)
}

fn num_pair(a: &Prim<'_>, b: &Prim<'_>) -> Option<(Decimal, Decimal)> {
    let x = match a {
        Prim::Int(i) => Decimal::from_i64(*i),
        Prim::Dec(d) => *d,
        _ => return None,
    };
    let y = match b {
        Prim::Int(i) => Decimal::from_i64(*i),
        Prim::Dec(d) => *d,
        _ => return None,
    };
    Some((x, y))
}

/// JSON equality with numbers compared numerically and bounded depth.
pub(crate) fn json_eq(a: &Json, b: &Json, depth: u32) -> bool {
    if depth > 256 {
        return false;
    }
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            let xs = x.to_string();
            let ys = y.to_string();
            xs == ys
                || match (Decimal::parse(&xs), Decimal::parse(&ys)) {
                    (Some(p), Some(q)) => p == q,
                    _ => false,
                }
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| json_eq(p, q, depth + 1))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w, depth + 1)))
        }
        _ => a == b,
    }
}

fn normalize_ws_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            pending_space = true;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            for l in c.to_lowercase() {
                out.push(l);
            }
        }
    }
    out
}

fn json_equiv(a: &Json, b: &Json, depth: u32) -> bool {
    if depth > 256 {
        return false;
    }
    match (a, b) {
        (Json::String(x), Json::String(y)) => normalize_ws_lower(x) == normalize_ws_lower(y),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| json_equiv(p, q, depth + 1))
        }
        (Json::Object(x), Json::Object(y)) => {
            let skip = |k: &String| k == "id" || k == "extension";
            let xk: Vec<_> = x.iter().filter(|(k, _)| !skip(k)).collect();
            let yn = y.iter().filter(|(k, _)| !skip(k)).count();
            xk.len() == yn
                && xk
                    .iter()
                    .all(|(k, v)| y.get(*k).is_some_and(|w| json_equiv(v, w, depth + 1)))
        }
        _ => json_eq(a, b, depth),
    }
}

/// Item equality: `Some(true/false)`, or `None` when undecidable (precision).
pub(crate) fn eq_values(a: &Value<'_>, b: &Value<'_>) -> Option<bool> {
    if let (Value::Node(x), Value::Node(y)) = (a, b) {
        if x.same(y) {
            return Some(true);
        }
    }
    let (pa, pb) = coerce_pair(a.prim(), b.prim());
    prim_eq(&pa, &pb)
}

pub(crate) fn prim_eq(a: &Prim<'_>, b: &Prim<'_>) -> Option<bool> {
    use Prim::*;
    if let Some((x, y)) = num_pair(a, b) {
        return Some(x == y);
    }
    match (a, b) {
        (Bool(x), Bool(y)) => Some(x == y),
        (Str(x, _), Str(y, _)) => Some(x == y),
        (Date(x) | DateTime(x), Date(y) | DateTime(y)) => {
            x.compare(y).map(|o| o == Ordering::Equal)
        }
        (Time(x), Time(y)) => x.compare(y).map(|o| o == Ordering::Equal),
        (Quantity(x), Quantity(y)) => x.compare(y).map(|o| o == Ordering::Equal),
        (Complex(Some(x)), Complex(Some(y))) => Some(json_eq(x, y, 0)),
        (Type(x), Type(y)) => Some(x == y),
        _ => Some(false),
    }
}

/// Item equivalence (`~`).
pub(crate) fn equiv_values(a: &Value<'_>, b: &Value<'_>) -> bool {
    use Prim::*;
    let (pa, pb) = coerce_pair(a.prim(), b.prim());
    if let Some((x, y)) = num_pair(&pa, &pb) {
        let s = x.scale().min(y.scale());
        return x.round(s) == y.round(s);
    }
    match (&pa, &pb) {
        (Str(x, _), Str(y, _)) => normalize_ws_lower(x) == normalize_ws_lower(y),
        (Bool(x), Bool(y)) => x == y,
        (Date(x) | DateTime(x), Date(y) | DateTime(y)) => x.compare(y) == Some(Ordering::Equal),
        (Time(x), Time(y)) => x.compare(y) == Some(Ordering::Equal),
        (Quantity(x), Quantity(y)) => x.equivalent(y),
        (Complex(Some(x)), Complex(Some(y))) => json_equiv(x, y, 0),
        (Type(x), Type(y)) => x == y,
        _ => false,
    }
}

/// Collection equality (`=`).
pub(crate) fn collection_eq(l: &[Value<'_>], r: &[Value<'_>]) -> Option<bool> {
    if l.is_empty() || r.is_empty() {
        return None;
    }
    if l.len() != r.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (a, b) in l.iter().zip(r.iter()) {
        match eq_values(a, b) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown {
        None
    } else {
        Some(true)
    }
}

/// Collection equivalence (`~`), order-independent.
pub(crate) fn collection_equiv(l: &[Value<'_>], r: &[Value<'_>]) -> bool {
    if l.len() != r.len() {
        return false;
    }
    let mut used = vec![false; r.len()];
    'outer: for a in l {
        for (j, b) in r.iter().enumerate() {
            if !used[j] && equiv_values(a, b) {
                used[j] = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

fn type_label(p: &Prim<'_>) -> &'static str {
    match p {
        Prim::Bool(_) => "Boolean",
        Prim::Int(_) => "Integer",
        Prim::Dec(_) => "Decimal",
        Prim::Str(..) => "String",
        Prim::Date(_) => "Date",
        Prim::DateTime(_) => "DateTime",
        Prim::Time(_) => "Time",
        Prim::Quantity(_) => "Quantity",
        Prim::Complex(_) => "complex element",
        Prim::Type(_) => "TypeInfo",
    }
}

/// Ordering comparison; `Ok(None)` when undecidable, `Err` for incomparable types.
pub(crate) fn compare_values(a: &Value<'_>, b: &Value<'_>) -> Result<Option<Ordering>, EvalError> {
    use Prim::*;
    let (pa, pb) = coerce_pair(a.prim(), b.prim());
    if let Some((x, y)) = num_pair(&pa, &pb) {
        return Ok(Some(x.cmp_num(&y)));
    }
    match (&pa, &pb) {
        (Str(x, _), Str(y, _)) => Ok(Some(x.cmp(y))),
        (Date(x) | DateTime(x), Date(y) | DateTime(y)) => Ok(x.compare(y)),
        (Time(x), Time(y)) => Ok(x.compare(y)),
        (Quantity(x), Quantity(y)) => Ok(x.compare(y)),
        _ => err(format!(
            "cannot compare {} with {}",
            type_label(&pa),
            type_label(&pb)
        )),
    }
}

fn to_quantity(p: &Prim<'_>) -> Option<Quantity> {
    match p {
        Prim::Quantity(q) => Some(q.clone().into_owned()),
        Prim::Int(i) => Some(Quantity::new(Decimal::from_i64(*i), "1")),
        Prim::Dec(d) => Some(Quantity::new(*d, "1")),
        _ => None,
    }
}

fn date_add(d: &DateTime, q: &Quantity, negate: bool) -> Result<Option<DateTime>, EvalError> {
    let unit = q.cal_unit().map_err(EvalError::new)?;
    let n = match q.value.truncate(0).to_i64_exact() {
        Some(n) => n,
        None => return Ok(None),
    };
    Ok(d.add(if negate { -n } else { n }, unit))
}

/// Binary arithmetic on two single values. `Ok(None)` = empty result.
pub(crate) fn arith(
    op: BinOp,
    a: &Value<'_>,
    b: &Value<'_>,
) -> Result<Option<Value<'static>>, EvalError> {
    use Prim::*;
    let pa = a.prim();
    let pb = b.prim();
    let (pa, pb) = match (&pa, &pb) {
        (Str(_, true), Date(_) | DateTime(_) | Time(_) | Quantity(_)) => coerce_pair(pa, pb),
        _ => (pa, pb),
    };
    let mismatch = || {
        err(format!(
            "operator {:?} cannot be applied to {} and {}",
            op,
            type_label(&pa),
            type_label(&pb)
        ))
    };
    match op {
        BinOp::Add | BinOp::Sub => {
            let neg = op == BinOp::Sub;
            match (&pa, &pb) {
                (Int(x), Int(y)) => Ok(if neg {
                    x.checked_sub(*y)
                } else {
                    x.checked_add(*y)
                }
                .map(Value::Integer)),
                (Str(x, _), Str(y, _)) if !neg => Ok(Some(Value::String(format!("{}{}", x, y)))),
                (Date(d), Quantity(q)) => Ok(date_add(d, q, neg)?.map(Value::Date)),
                (DateTime(d), Quantity(q)) => Ok(date_add(d, q, neg)?.map(Value::DateTime)),
                (Time(t), Quantity(q)) => {
                    let unit = q.cal_unit().map_err(EvalError::new)?;
                    let n = q.value.truncate(0).to_i64_exact().unwrap_or(0);
                    match t.add(if neg { -n } else { n }, unit) {
                        Some(t) => Ok(Some(Value::Time(t))),
                        None => err("invalid time arithmetic"),
                    }
                }
                (Quantity(x), Quantity(y)) => {
                    Ok(x.add(y, neg).map(|q| Value::Quantity(Box::new(q))))
                }
                _ => match num_pair(&pa, &pb) {
                    Some((x, y)) => Ok(if neg {
                        x.checked_sub(&y)
                    } else {
                        x.checked_add(&y)
                    }
                    .map(Value::Decimal)),
                    None => mismatch(),
                },
            }
        }
        BinOp::Mul => match (&pa, &pb) {
            (Int(x), Int(y)) => Ok(x.checked_mul(*y).map(Value::Integer)),
            (Quantity(_), _) | (_, Quantity(_)) => match (to_quantity(&pa), to_quantity(&pb)) {
                (Some(x), Some(y)) => Ok(x.mul(&y).map(|q| Value::Quantity(Box::new(q)))),
                _ => mismatch(),
            },
            _ => match num_pair(&pa, &pb) {
                Some((x, y)) => Ok(x.checked_mul(&y).map(Value::Decimal)),
                None => mismatch(),
            },
        },
        BinOp::Div => match (&pa, &pb) {
            (Quantity(_), _) | (_, Quantity(_)) => match (to_quantity(&pa), to_quantity(&pb)) {
                (Some(x), Some(y)) => Ok(x.div(&y).map(|q| Value::Quantity(Box::new(q)))),
                _ => mismatch(),
            },
            _ => match num_pair(&pa, &pb) {
                Some((x, y)) => Ok(x.checked_div(&y).map(Value::Decimal)),
                None => mismatch(),
            },
        },
        BinOp::IntDiv => match (&pa, &pb) {
            (Int(x), Int(y)) => Ok(if *y == 0 {
                None
            } else {
                x.checked_div(*y).map(Value::Integer)
            }),
            _ => match num_pair(&pa, &pb) {
                Some((x, y)) => Ok(x.checked_div_trunc(&y).map(|d| match d.to_i64_exact() {
                    Some(i) => Value::Integer(i),
                    None => Value::Decimal(d),
                })),
                None => mismatch(),
            },
        },
        BinOp::Mod => match (&pa, &pb) {
            (Int(x), Int(y)) => Ok(if *y == 0 {
                None
            } else {
                x.checked_rem(*y).map(Value::Integer)
            }),
            _ => match num_pair(&pa, &pb) {
                Some((x, y)) => Ok(x.checked_rem(&y).map(Value::Decimal)),
                None => mismatch(),
            },
        },
        _ => err(format!("{:?} is not an arithmetic operator", op)),
    }
}

/// Unary minus.
pub(crate) fn negate(v: &Value<'_>) -> Result<Value<'static>, EvalError> {
    match v.prim() {
        Prim::Int(i) => Ok(Value::Integer(
            i.checked_neg()
                .ok_or_else(|| EvalError::new("integer overflow"))?,
        )),
        Prim::Dec(d) => Ok(Value::Decimal(d.neg())),
        Prim::Quantity(q) => {
            let mut q = q.into_owned();
            q.value = q.value.neg();
            Ok(Value::Quantity(Box::new(q)))
        }
        p => err(format!(
            "unary minus cannot be applied to {}",
            type_label(&p)
        )),
    }
}

/// Human-readable type label of a value for error messages.
pub(crate) fn label(v: &Value<'_>) -> &'static str {
    type_label(&v.prim())
}

/// String view of a value for string functions (`Err` if not a string).
pub(crate) fn as_str<'v>(v: &'v Value<'_>, what: &str) -> Result<Cow<'v, str>, EvalError> {
    match v.prim() {
        Prim::Str(s, _) => Ok(Cow::Borrowed(s)),
        p => err(format!("{} expects a String, got {}", what, type_label(&p))),
    }
}
