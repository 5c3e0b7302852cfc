//! Value checks of one item against its element: fixed and pattern values,
//! `minLength`/`maxLength`, `minValue[x]`/`maxValue[x]`, `mustHaveValue` /
//! `valueAlternatives`, and `narrative-language-control`; also the JSON
//! equality and pattern matching that fixed values, patterns and
//! discriminators use.

use serde_json::Value;

use super::location::P;
use super::{Item, Res, Run};
use crate::registry::Profile;
use crate::snapshot::Elem;
use crate::Severity;

impl<'r> Run<'r> {
    /// Fixed and pattern values, lengths, ranges, presence, bindings.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn value_checks(
        &mut self,
        prof: &Profile,
        ei: usize,
        elem: &Elem,
        item: Item<'_>,
        ty: &str,
        primitive: bool,
        path: &P<'_>,
        ctx: Res<'_>,
    ) {
        let elem_name = elem.id.as_str();
        // fixed / pattern
        if let Some(fixed) = &elem.fixed {
            match item.value {
                Some(v) if json_equal(v, fixed) => {}
                _ => self.push_at(Severity::Error, "value", path, || {
                    format!(
                        "{}: value must be exactly {} (fixed value of {elem_name})",
                        slice_prefix(elem),
                        compact(fixed)
                    )
                }),
            }
        }
        if let Some(pattern) = &elem.pattern {
            match item.value {
                Some(v) if pattern_match(pattern, v) => {}
                _ => self.push_at(Severity::Error, "value", path, || {
                    format!(
                        "{}: value must match the pattern {} ({elem_name})",
                        slice_prefix(elem),
                        compact(pattern)
                    )
                }),
            }
        }
        if let Some(Value::String(s)) = item.value {
            if elem.max_length.is_some() || elem.min_length.is_some() {
                let n = s.chars().count();
                if let Some(max) = elem.max_length.filter(|m| n > *m) {
                    self.push_at(Severity::Error, "value", path, || {
                        format!("{elem_name}: value is longer than the maxLength {max}")
                    });
                }
                if let Some(min) = elem.min_length.filter(|m| n < *m) {
                    self.push_at(Severity::Error, "value", path, || {
                        format!("{elem_name}: value is shorter than the minLength {min}")
                    });
                }
            }
        }
        if elem.min_value.is_some() || elem.max_value.is_some() {
            if let Some(v) = item.value {
                self.value_range(elem, v, path);
            }
        }
        if !elem.narrative_language.is_empty() {
            if let Some(div) = item
                .value
                .and_then(|v| v.get("div"))
                .and_then(Value::as_str)
            {
                self.narrative_language(elem, div, path, ctx);
            }
        }
        if primitive
            && item.value.is_none()
            && (elem.must_have_value || !elem.value_alternatives.is_empty())
        {
            self.value_presence(elem, item, path);
        }
        if let (Some(b), Some(v)) = (&elem.binding, item.value) {
            self.binding(prof, ei, b, v, ty, path, elem_name);
        }
    }

    /// `minValue[x]` / `maxValue[x]`.
    fn value_range(&mut self, elem: &Elem, v: &Value, path: &P<'_>) {
        for (bound, is_min) in [(&elem.min_value, true), (&elem.max_value, false)] {
            let Some((suffix, limit)) = bound else {
                continue;
            };
            let Some(ord) = compare_to_limit(v, suffix, limit, is_min) else {
                continue;
            };
            let bad = if is_min {
                ord == std::cmp::Ordering::Less
            } else {
                ord == std::cmp::Ordering::Greater
            };
            if bad {
                self.push_at(Severity::Error, "value", path, || {
                    format!(
                        "{}: the value {} is {} the {} {}{}",
                        elem.id,
                        compact(v),
                        if is_min { "less than" } else { "greater than" },
                        if is_min { "minValue" } else { "maxValue" },
                        compact(limit),
                        if suffix == "Duration" {
                            " (relative to now)"
                        } else {
                            ""
                        }
                    )
                });
            }
        }
    }

    /// `narrative-language-control`: language sections of the narrative.
    fn narrative_language(&mut self, elem: &Elem, div: &str, path: &P<'_>, ctx: Res<'_>) {
        let sections = crate::narrative::language_sections(div);
        for control in &elem.narrative_language {
            let problem = match control.as_str() {
                "_no" => (!sections.is_empty()).then(|| {
                    format!(
                        "the narrative has language sections ({}), but they are prohibited here",
                        sections.join(", ")
                    )
                }),
                "_yes" => sections.is_empty().then(|| {
                    "the narrative has no language sections, but they are required here".to_string()
                }),
                "_resource" => ctx
                    .resource
                    .get("language")
                    .and_then(Value::as_str)
                    .filter(|l| !sections.contains(l))
                    .map(|l| {
                        format!("the narrative has no section for the resource's language '{l}'")
                    }),
                lang => (!sections.contains(&lang))
                    .then(|| format!("the narrative has no section for the language '{lang}'")),
            };
            if let Some(m) = problem {
                self.push_at(Severity::Error, "business-rule", path, || {
                    format!("{} ({}): {m}", elem.id, "narrative-language-control")
                });
            }
        }
    }

    /// `mustHaveValue` / `valueAlternatives` on a primitive without a value.
    fn value_presence(&mut self, elem: &Elem, item: Item<'_>, path: &P<'_>) {
        if elem.must_have_value {
            self.push_at(Severity::Error, "required", path, || {
                format!("{}: a value is required (mustHaveValue)", elem.id)
            });
            return;
        }
        let urls: Vec<&str> = item
            .ext
            .and_then(|e| e.get("extension"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("url").and_then(Value::as_str))
            .collect();
        if !urls
            .iter()
            .any(|u| elem.value_alternatives.iter().any(|a| a == u))
        {
            self.push_at(Severity::Error, "required", path, || {
                format!(
                    "{}: without a value, one of the extensions {} must be present",
                    elem.id,
                    elem.value_alternatives.join(", ")
                )
            });
        }
    }
}

fn slice_prefix(e: &Elem) -> String {
    match &e.slice_name {
        Some(s) => format!("Slice '{s}'"),
        None => e.path.clone(),
    }
}

/// Compares an instance value with a `minValue[x]`/`maxValue[x]` limit
/// (`Duration` limits are relative to now: minus for minValue, plus for maxValue).
pub(super) fn compare_to_limit(
    v: &Value,
    suffix: &str,
    limit: &Value,
    is_min: bool,
) -> Option<std::cmp::Ordering> {
    use fhirpath::{DateTime, Decimal, Quantity, Time};
    let dec = |x: &Value| -> Option<Decimal> {
        match x {
            Value::Number(n) => Decimal::parse(&n.to_string()),
            Value::String(s) => Decimal::parse(s),
            _ => None,
        }
    };
    match suffix {
        "Integer" | "Decimal" | "PositiveInt" | "UnsignedInt" | "Integer64" => {
            Some(dec(v)?.cmp_num(&dec(limit)?))
        }
        "Date" | "DateTime" | "Instant" => {
            let a = DateTime::parse_fhir(v.as_str()?)?;
            let b = DateTime::parse_fhir(limit.as_str()?)?;
            a.compare(&b)
        }
        "Time" => {
            let a = Time::parse(v.as_str()?, false)?;
            let b = Time::parse(limit.as_str()?, false)?;
            a.compare(&b)
        }
        "Quantity" | "Age" | "Count" | "Distance" | "SimpleQuantity" | "MoneyQuantity" => {
            let a = fhirpath::quantity_of(v)?;
            let b = fhirpath::quantity_of(limit)?;
            a.compare(&b)
        }
        "Duration" => {
            let q = fhirpath::quantity_of(limit)?;
            let unit = match q.unit.as_str() {
                "a" => "year",
                "mo" => "month",
                u => u,
            };
            let n = q.value.to_i64_exact()?;
            let cal = Quantity::new(Decimal::from_i64(1), unit).cal_unit().ok()?;
            let a = match v {
                Value::String(s) => DateTime::parse_fhir(s)?,
                _ => {
                    let a = fhirpath::quantity_of(v)?;
                    return a.compare(&q);
                }
            };
            let bound = DateTime::now().add(if is_min { n.checked_neg()? } else { n }, cal)?;
            a.compare(&bound.with_precision(a.precision))
        }
        _ => None,
    }
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        let t: String = s.chars().take(200).collect();
        format!("{t}…")
    } else {
        s
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    a.as_str() == b.as_str()
        || match (a.as_str().parse::<f64>(), b.as_str().parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

/// Fixed-value equality (objects: same keys and values).
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equal(v, w))
        }
        _ => a == b,
    }
}

/// Pattern matching: every property of the pattern is present in the value
/// (recursively); arrays: each pattern item matches some value item.
pub(crate) fn pattern_match(pattern: &Value, v: &Value) -> bool {
    match (pattern, v) {
        (Value::Object(p), Value::Object(o)) => p
            .iter()
            .all(|(k, pv)| o.get(k).is_some_and(|ov| pattern_match(pv, ov))),
        (Value::Array(p), Value::Array(a)) => {
            p.iter().all(|pi| a.iter().any(|ai| pattern_match(pi, ai)))
        }
        (Value::Array(p), single) => p.iter().all(|pi| pattern_match(pi, single)),
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        _ => pattern == v,
    }
}
