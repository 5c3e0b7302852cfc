//! Query string → typed [`SearchQuery`], against the parameter registry.
//!
//! Repeated parameters are AND, commas inside one value are OR; `\,`, `\|`, `\$`
//! and `\\` escape. Prefixes are recognised only on date, number and quantity
//! parameters, so a token value like `ne123` is never misread. Anything unknown
//! (parameter, modifier, prefix on the wrong type, a chain through a
//! non-reference) is an error in strict mode; in lenient mode it is dropped,
//! reported as a warning and left out of the `self` link.
//!
//! Cost bounds: at most [`MAX_PARAMS`] parameters, [`MAX_VALUES`] OR-ed values
//! each, chains and `_has` nested at most [`MAX_DEPTH`] levels, at most
//! [`MAX_INCLUDES`] include specifications.
//!
//! Values are bounded by what the index stores: a string (or `:text`) value
//! longer than the indexed [`MAX_STRING`] bytes, or a `:below`/`:above` URI
//! longer than the verbatim [`INDEX_PREFIX`], could not be matched exactly and
//! is an error; equality tests take values of any length (see
//! `rows::index_key`). A value with a control character (other than tab,
//! CR and LF, which FHIR strings may hold) is an error too.

use super::index::MAX_STRING;
use super::registry::{self, ParamDef, ParamKind};
use super::rows::INDEX_PREFIX;
use super::types::*;
use crate::model::{LogicalId, ResourceType};

pub const MAX_VALUES: usize = 100;
pub const MAX_PARAMS: usize = 30;
pub const MAX_DEPTH: usize = 3;
pub const MAX_INCLUDES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchError {
    /// The parameter at fault, as the client wrote it (name only, never the value).
    pub param: String,
    pub message: String,
}

/// Options that shape the result rather than select resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub default_count: usize,
    pub max_count: usize,
}

/// `_summary` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

impl Summary {
    /// The value of a `_summary` parameter.
    pub fn parse(value: &str) -> Option<Summary> {
        match value {
            "true" => Some(Summary::True),
            "text" => Some(Summary::Text),
            "data" => Some(Summary::Data),
            "count" => Some(Summary::Count),
            "false" => Some(Summary::False),
            _ => None,
        }
    }
}

/// The outcome of parsing: the query, the parameters that were applied (for the
/// `self` link, in canonical form), and warnings for ignored parameters.
#[derive(Debug, Clone)]
pub struct ParsedSearch {
    pub query: SearchQuery,
    pub applied: Vec<(String, String)>,
    pub warnings: Vec<SearchError>,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
}

/// Parameters handled by the REST layer, never by search.
const FORMAT_PARAMS: [&str; 2] = ["_format", "_pretty"];

/// Splits on an unescaped separator; escapes are kept (see [`unescape`]).
pub fn split_escaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// Removes the remaining escapes once all splitting is done.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn err(param: &str, message: impl Into<String>) -> SearchError {
    SearchError {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// Lower-case, accents removed: the form string search compares.
pub fn normalize(s: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    s.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A string-search value (normalised) no longer than the indexed prefix.
fn indexable(raw_name: &str, v: String) -> Result<String, SearchError> {
    if v.len() > MAX_STRING {
        return Err(err(
            raw_name,
            format!(
                "A value of '{raw_name}' is longer than the {MAX_STRING} bytes that string \
                 search indexes (use :exact for a whole long value)"
            ),
        ));
    }
    Ok(v)
}

/// Rejects a name or value holding a control character other than tab, CR
/// and LF (PostgreSQL cannot even store NUL in text).
fn no_controls(raw_name: &str, value: &str) -> Result<(), SearchError> {
    let bad = |s: &str| {
        s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    if bad(raw_name) {
        return Err(err(
            "",
            "A search parameter name contains a control character",
        ));
    }
    if bad(value) {
        return Err(err(
            raw_name,
            format!("The value of '{raw_name}' contains a control character"),
        ));
    }
    Ok(())
}

fn split_prefix(raw: &str) -> (Prefix, &str) {
    match raw.get(..2).and_then(|p| {
        Prefix::ALL
            .iter()
            .find(|(code, _)| *code == p)
            .map(|(_, pr)| *pr)
    }) {
        Some(p) => (p, raw.get(2..).unwrap_or("")),
        None => (Prefix::Eq, raw),
    }
}

pub fn parse_date_value(param: &str, raw: &str) -> Result<DateValue, SearchError> {
    let (prefix, rest) = split_prefix(raw);
    let (lo, hi) = fhir_structure::primitive::parse_date_range(rest).ok_or_else(|| {
        err(
            param,
            format!("Parameter '{param}': '{rest}' is not a valid date, dateTime or instant"),
        )
    })?;
    Ok(DateValue {
        prefix,
        range: DateRange { lo, hi },
    })
}

/// A decimal with its implicit precision range (`1.0` → [0.95, 1.05)).
pub fn parse_number_value(param: &str, raw: &str) -> Result<NumberValue, SearchError> {
    let (prefix, rest) = split_prefix(raw);
    let bad = || {
        err(
            param,
            format!("Parameter '{param}': '{rest}' is not a valid number"),
        )
    };
    let ok_chars = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if !ok_chars {
        return Err(bad());
    }
    let value: f64 = rest.parse().map_err(|_| bad())?;
    if !value.is_finite() {
        return Err(bad());
    }
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let decimals = mantissa
        .split_once('.')
        .map(|(_, f)| f.len() as i32)
        .unwrap_or(0);
    let half = 0.5 * 10f64.powi(exp - decimals);
    Ok(NumberValue {
        prefix,
        value,
        lo: value - half,
        hi: value + half,
    })
}

pub fn parse_token(value: &str) -> TokenValue {
    let parts = split_escaped(value, '|');
    match parts.as_slice() {
        [code] => TokenValue {
            system: None,
            code: Some(unescape(code)),
        },
        [system, code] => TokenValue {
            system: Some(unescape(system)),
            code: (!code.is_empty()).then(|| unescape(code)),
        },
        _ => TokenValue {
            system: Some(unescape(&parts[..parts.len() - 1].join("|"))),
            code: parts.last().map(|c| unescape(c)),
        },
    }
}

fn is_absolute(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("urn:")
}

fn parse_reference(
    param: &str,
    value: &str,
    targets: &[ResourceType],
    base_url: &str,
) -> Result<ReferenceValue, SearchError> {
    let mut value = unescape(value);
    if let Some(i) = value.find("/_history/") {
        value.truncate(i);
    }
    let base = base_url.trim_end_matches('/');
    let local = if is_absolute(&value) {
        match value.strip_prefix(base).and_then(|r| r.strip_prefix('/')) {
            Some(rest) if !base.is_empty() => rest.to_owned(),
            _ => {
                return Ok(ReferenceValue {
                    target_type: None,
                    id: value,
                    url: true,
                })
            }
        }
    } else {
        value
    };
    let segments: Vec<&str> = local.split('/').collect();
    let (ty, id) = match segments.as_slice() {
        [id] => (None, *id),
        [ty, id] => {
            let ty: ResourceType = ty.parse().map_err(|_| {
                err(
                    param,
                    format!("Parameter '{param}': unknown resource type '{ty}'"),
                )
            })?;
            (Some(ty), *id)
        }
        _ => {
            return Err(err(
                param,
                format!("Parameter '{param}': '{local}' is not a reference (id, Type/id or URL)"),
            ))
        }
    };
    if LogicalId::parse(id).is_none() {
        return Err(err(
            param,
            format!("Parameter '{param}': '{id}' is not a valid resource id"),
        ));
    }
    if let Some(t) = ty {
        if !targets.is_empty() && !targets.contains(&t) {
            return Err(err(
                param,
                format!("Parameter '{param}' cannot refer to {t} resources"),
            ));
        }
    }
    Ok(ReferenceValue {
        target_type: ty,
        id: id.to_owned(),
        url: false,
    })
}

fn parse_quantity(param: &str, value: &str) -> Result<QuantityValue, SearchError> {
    let parts = split_escaped(value, '|');
    let number = parse_number_value(param, &unescape(&parts[0]))?;
    let (system, code) = match parts.as_slice() {
        [_] => (None, None),
        [_, s, c] => (
            (!s.is_empty()).then(|| unescape(s)),
            (!c.is_empty()).then(|| unescape(c)),
        ),
        _ => {
            return Err(err(
                param,
                format!("Parameter '{param}': a quantity is number, or number|system|code"),
            ))
        }
    };
    Ok(QuantityValue {
        number,
        system,
        code,
    })
}

/// The parser's settings.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub lenient: bool,
    pub paging: Paging,
    /// This server's base URL: absolute references under it are local.
    pub base_url: &'a str,
}

fn values_of(name: &str, value: &str) -> Result<Vec<String>, SearchError> {
    let values = split_escaped(value, ',');
    if values.len() > MAX_VALUES {
        return Err(err(
            name,
            format!("Parameter '{name}' has more than {MAX_VALUES} values"),
        ));
    }
    if values.iter().any(|v| v.is_empty()) {
        return Err(err(name, format!("Parameter '{name}' has an empty value")));
    }
    Ok(values)
}

/// Parses one selection parameter `raw_name=value` on `ty`, following chains.
fn parse_param(
    ty: ResourceType,
    raw_name: &str,
    value: &str,
    depth: usize,
    opts: &Options<'_>,
) -> Result<Predicate, SearchError> {
    if depth > MAX_DEPTH {
        return Err(err(
            raw_name,
            format!("Chains and _has may be nested at most {MAX_DEPTH} levels deep"),
        ));
    }
    if let Some(rest) = raw_name.strip_prefix("_has:") {
        return parse_has(ty, raw_name, rest, value, depth, opts);
    }
    if let Some((head, chained)) = raw_name.split_once('.') {
        return parse_chain(ty, raw_name, head, chained, value, depth, opts);
    }
    let (name, modifier) = match raw_name.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (raw_name, None),
    };
    let def = registry::lookup(ty, name).ok_or_else(|| {
        err(
            name,
            format!("Unknown search parameter '{name}' for resource type {ty}"),
        )
    })?;
    let unsupported = |m: &str| unsupported_modifier(raw_name, name, def, m);
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(err(raw_name, format!("'{raw_name}' must be true or false"))),
        };
        if def.is_resource_column() {
            return Err(unsupported("missing"));
        }
        return Ok(if def.kind == ParamKind::Composite {
            composite_missing(ty, def, missing)
        } else {
            Predicate::Missing {
                param: def,
                missing,
            }
        });
    }
    let values = values_of(raw_name, value)?;
    if def.code == "_id" {
        let not = match modifier {
            None => false,
            Some("not") => true,
            Some(m) => return Err(unsupported(m)),
        };
        let ids: Vec<String> = values.iter().map(|v| unescape(v)).collect();
        if let Some(bad) = ids.iter().find(|i| LogicalId::parse(i).is_none()) {
            return Err(err(
                name,
                format!("Parameter '_id': '{bad}' is not a valid resource id"),
            ));
        }
        return Ok(Predicate::Id { ids, not });
    }
    if def.code == "_lastUpdated" {
        if let Some(m) = modifier {
            return Err(unsupported(m));
        }
        let v = values
            .iter()
            .map(|v| parse_date_value(name, &unescape(v)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Predicate::LastUpdated(v));
    }
    if def.kind == ParamKind::Composite {
        return parse_composite(ty, def, raw_name, modifier, &values, opts);
    }
    let (test, not) = kind_test(def, name, raw_name, modifier, &values, opts)?;
    Ok(Predicate::Index {
        param: def,
        test,
        not,
    })
}

fn unsupported_modifier(raw_name: &str, name: &str, def: &ParamDef, m: &str) -> SearchError {
    err(
        raw_name,
        format!(
            "Modifier ':{m}' is not supported on {} parameter '{name}'",
            def.kind.code()
        ),
    )
}

/// The test of a non-composite parameter `def` for `values`; `true` with it
/// for `:not`.
fn kind_test(
    def: &'static ParamDef,
    name: &str,
    raw_name: &str,
    modifier: Option<&str>,
    values: &[String],
    opts: &Options<'_>,
) -> Result<(Test, bool), SearchError> {
    let unsupported = |m: &str| unsupported_modifier(raw_name, name, def, m);
    let mut not = false;
    let test = match def.kind {
        ParamKind::Token => match modifier {
            None | Some("not") => {
                not = modifier.is_some();
                Test::Token(values.iter().map(|v| parse_token(v)).collect())
            }
            Some("text") => Test::TokenText(
                values
                    .iter()
                    .map(|v| indexable(raw_name, normalize(&unescape(v))))
                    .collect::<Result<_, _>>()?,
            ),
            Some("of-type") if def.code == "identifier" => {
                let mut out = Vec::new();
                for v in values {
                    let parts = split_escaped(v, '|');
                    match parts.as_slice() {
                        [s, c, val] if !c.is_empty() && !val.is_empty() => {
                            out.push((unescape(s), unescape(c), unescape(val)))
                        }
                        _ => {
                            return Err(err(
                                raw_name,
                                "':of-type' takes type-system|type-code|value",
                            ))
                        }
                    }
                }
                Test::OfType(out)
            }
            Some(m) => return Err(unsupported(m)),
        },
        ParamKind::String => {
            let mode = match modifier {
                None => StringMode::StartsWith,
                Some("exact") => StringMode::Exact,
                Some("contains") => StringMode::Contains,
                Some(m) => return Err(unsupported(m)),
            };
            let vals = values
                .iter()
                .map(|v| {
                    let v = unescape(v);
                    if mode == StringMode::Exact {
                        Ok(v)
                    } else {
                        indexable(raw_name, normalize(&v))
                    }
                })
                .collect::<Result<_, _>>()?;
            Test::String(mode, vals)
        }
        ParamKind::Date => {
            if let Some(m) = modifier {
                return Err(unsupported(m));
            }
            Test::Date(
                values
                    .iter()
                    .map(|v| parse_date_value(name, &unescape(v)))
                    .collect::<Result<_, _>>()?,
            )
        }
        ParamKind::Number => {
            if let Some(m) = modifier {
                return Err(unsupported(m));
            }
            Test::Number(
                values
                    .iter()
                    .map(|v| parse_number_value(name, &unescape(v)))
                    .collect::<Result<_, _>>()?,
            )
        }
        ParamKind::Quantity => {
            if let Some(m) = modifier {
                return Err(unsupported(m));
            }
            Test::Quantity(
                values
                    .iter()
                    .map(|v| parse_quantity(name, v))
                    .collect::<Result<_, _>>()?,
            )
        }
        ParamKind::Uri => {
            let mode = match modifier {
                None => UriMode::Equals,
                Some("below") => UriMode::Below,
                Some("above") => UriMode::Above,
                Some(m) => return Err(unsupported(m)),
            };
            let values: Vec<String> = values.iter().map(|v| unescape(v)).collect();
            if mode != UriMode::Equals && values.iter().any(|v| v.len() > INDEX_PREFIX) {
                return Err(err(
                    raw_name,
                    format!(
                        "A value of '{raw_name}' is longer than the {INDEX_PREFIX} bytes \
                         that :below and :above can match"
                    ),
                ));
            }
            Test::Uri(mode, values)
        }
        ParamKind::Reference => match modifier {
            Some("identifier") => {
                Test::ReferenceIdentifier(values.iter().map(|v| parse_token(v)).collect())
            }
            None => Test::Reference(
                values
                    .iter()
                    .map(|v| parse_reference(name, v, &def.targets, opts.base_url))
                    .collect::<Result<_, _>>()?,
            ),
            Some(m) => {
                let Ok(t) = m.parse::<ResourceType>() else {
                    return Err(unsupported(m));
                };
                if !def.targets.is_empty() && !def.targets.contains(&t) {
                    return Err(err(
                        raw_name,
                        format!("Parameter '{name}' cannot refer to {t} resources"),
                    ));
                }
                let mut refs = Vec::new();
                for v in values {
                    let mut r = parse_reference(name, v, &[t], opts.base_url)?;
                    if r.url {
                        return Err(err(
                            raw_name,
                            format!("'{raw_name}' takes an id, not a URL"),
                        ));
                    }
                    r.target_type = Some(t);
                    refs.push(r);
                }
                Test::Reference(refs)
            }
        },
        ParamKind::Composite => {
            return Err(err(
                raw_name,
                format!("'{name}' is a composite parameter; its components cannot nest one"),
            ))
        }
    };
    Ok((test, not))
}

/// `:missing` on a composite: present when some element has every component.
fn composite_missing(ty: ResourceType, def: &'static ParamDef, missing: bool) -> Predicate {
    let combine = |each: Vec<Predicate>, any_present: bool| {
        // Present = any/all present; missing is the complement.
        if any_present != missing {
            Predicate::AnyOf(each)
        } else {
            Predicate::AllOf(each)
        }
    };
    if !def.union_of.is_empty() {
        let each = def
            .union_of
            .iter()
            .filter_map(|code| registry::lookup(ty, code))
            .map(|part| composite_missing(ty, part, missing))
            .collect();
        return combine(each, true);
    }
    if def.resource_level {
        // Present when every component parameter is.
        let each = def
            .components
            .iter()
            .map(|c| Predicate::Missing { param: c, missing })
            .collect();
        return combine(each, false);
    }
    // Rows exist only for elements that have every component.
    match def.components.first() {
        Some(first) => Predicate::Missing {
            param: first,
            missing,
        },
        None => Predicate::Missing {
            param: def,
            missing,
        },
    }
}

/// `code-value-quantity=http://loinc.org|8480-6$gt100,…`: each value is one
/// tuple, its components separated by an unescaped `$` and parsed as their
/// own parameter types; a resource matches when one element of the
/// composite's expression matches every component. Values are OR-ed.
fn parse_composite(
    ty: ResourceType,
    def: &'static ParamDef,
    raw_name: &str,
    modifier: Option<&str>,
    values: &[String],
    opts: &Options<'_>,
) -> Result<Predicate, SearchError> {
    let name = def.code.as_str();
    if let Some(m) = modifier {
        return Err(unsupported_modifier(raw_name, name, def, m));
    }
    if !def.union_of.is_empty() {
        // `combo-…`: the resource's own tuple or one of its components'.
        let mut parts = Vec::with_capacity(def.union_of.len());
        for code in &def.union_of {
            let part = registry::lookup(ty, code)
                .ok_or_else(|| err(raw_name, format!("'{name}' is not available")))?;
            parts.push(parse_composite(ty, part, raw_name, None, values, opts)?);
        }
        return Ok(Predicate::AnyOf(parts));
    }
    let mut alternatives = Vec::with_capacity(values.len());
    for v in values {
        let parts = split_escaped(v, '$');
        if parts.len() != def.components.len() || parts.iter().any(|p| p.is_empty()) {
            return Err(err(
                raw_name,
                format!(
                    "'{name}' takes {} values separated by '$', e.g. {}",
                    def.components.len(),
                    def.components
                        .iter()
                        .map(|c| c.kind.code())
                        .collect::<Vec<_>>()
                        .join("$")
                ),
            ));
        }
        let mut tests = Vec::with_capacity(parts.len());
        for (comp, part) in def.components.iter().zip(parts) {
            let (test, _) = kind_test(comp, name, raw_name, None, &[part], opts)?;
            tests.push((comp, test));
        }
        alternatives.push(if def.resource_level {
            Predicate::AllOf(
                tests
                    .into_iter()
                    .map(|(comp, test)| Predicate::Index {
                        param: comp,
                        test,
                        not: false,
                    })
                    .collect(),
            )
        } else {
            Predicate::Composite {
                param: def,
                parts: tests,
            }
        });
    }
    Ok(if alternatives.len() == 1 {
        alternatives.remove(0)
    } else {
        Predicate::AnyOf(alternatives)
    })
}

fn reference_param(
    ty: ResourceType,
    raw_name: &str,
    code: &str,
) -> Result<&'static ParamDef, SearchError> {
    let def = registry::lookup(ty, code).ok_or_else(|| {
        err(
            raw_name,
            format!("Unknown search parameter '{code}' for resource type {ty}"),
        )
    })?;
    if def.kind != ParamKind::Reference {
        return Err(err(
            raw_name,
            format!("'{code}' is not a reference parameter of {ty}; it cannot be chained"),
        ));
    }
    Ok(def)
}

fn parse_chain(
    ty: ResourceType,
    raw_name: &str,
    head: &str,
    chained: &str,
    value: &str,
    depth: usize,
    opts: &Options<'_>,
) -> Result<Predicate, SearchError> {
    let (code, target) = match head.split_once(':') {
        Some((c, t)) => (
            c,
            Some(
                t.parse::<ResourceType>()
                    .map_err(|_| err(raw_name, format!("'{t}' is not a resource type")))?,
            ),
        ),
        None => (head, None),
    };
    let def = reference_param(ty, raw_name, code)?;
    let candidates: Vec<ResourceType> = match target {
        Some(t) => {
            if !def.targets.is_empty() && !def.targets.contains(&t) {
                return Err(err(
                    raw_name,
                    format!("Parameter '{code}' cannot refer to {t} resources"),
                ));
            }
            vec![t]
        }
        None if def.targets.is_empty() => ResourceType::ALL.to_vec(),
        None => def.targets.clone(),
    };
    let chained_code = chained
        .split(['.', ':'])
        .next()
        .unwrap_or(chained)
        .to_owned();
    let mut targets = Vec::new();
    let mut last_err = None;
    for t in candidates {
        if registry::lookup(t, &chained_code).is_none() && !chained.starts_with("_has:") {
            continue;
        }
        match parse_param(t, chained, value, depth + 1, opts) {
            Ok(p) => targets.push((t, Box::new(p))),
            Err(e) => last_err = Some(e),
        }
    }
    if targets.is_empty() {
        return Err(last_err.unwrap_or_else(|| {
            err(
                raw_name,
                format!("No target of '{code}' has a search parameter '{chained_code}'"),
            )
        }));
    }
    Ok(Predicate::Chain {
        param: def,
        targets,
    })
}

/// `_has:Source:ref:rest` (rest may itself be `_has:…`).
fn parse_has(
    ty: ResourceType,
    raw_name: &str,
    rest: &str,
    value: &str,
    depth: usize,
    opts: &Options<'_>,
) -> Result<Predicate, SearchError> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(code), Some(inner)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err(
            raw_name,
            "'_has' takes the form _has:Type:reference-parameter:parameter",
        ));
    };
    let source: ResourceType = source
        .parse()
        .map_err(|_| err(raw_name, format!("'{source}' is not a resource type")))?;
    let def = reference_param(source, raw_name, code)?;
    if !def.targets.is_empty() && !def.targets.contains(&ty) {
        return Err(err(
            raw_name,
            format!("{source}.{code} cannot refer to {ty} resources"),
        ));
    }
    let inner = parse_param(source, inner, value, depth + 1, opts)?;
    Ok(Predicate::Has {
        source,
        param: def,
        inner: Box::new(inner),
    })
}

fn parse_sort(ty: ResourceType, value: &str) -> Result<Vec<SortSpec>, SearchError> {
    let mut out = Vec::new();
    for key in value.split(',') {
        let (descending, code) = match key.strip_prefix('-') {
            Some(c) => (true, c),
            None => (false, key),
        };
        let key = match code {
            "_id" => SortKey::Id,
            "_lastUpdated" => SortKey::LastUpdated,
            _ => match registry::lookup(ty, code) {
                Some(def) if def.kind == ParamKind::Composite => {
                    return Err(err(
                        "_sort",
                        format!("Cannot sort {ty} by composite parameter '{code}'"),
                    ))
                }
                Some(def) if def.compiled.is_some() => SortKey::Param(def),
                _ => {
                    return Err(err(
                        "_sort",
                        format!("Cannot sort {ty} by '{code}': not a search parameter of {ty}"),
                    ))
                }
            },
        };
        out.push(SortSpec { key, descending });
    }
    if out.is_empty() || out.len() > 5 {
        return Err(err("_sort", "'_sort' takes one to five keys"));
    }
    Ok(out)
}

fn parse_include(
    ty: ResourceType,
    name: &str,
    value: &str,
    reverse: bool,
) -> Result<IncludeSpec, SearchError> {
    let iterate = match name.split_once(':') {
        None => false,
        Some((_, "iterate")) | Some((_, "recurse")) => true,
        Some((_, m)) => {
            return Err(err(
                name,
                format!("Modifier ':{m}' is not supported on '{name}'"),
            ))
        }
    };
    if value == "*" {
        return Ok(IncludeSpec {
            source: ty,
            param: None,
            target: None,
            iterate,
        });
    }
    let parts: Vec<&str> = value.split(':').collect();
    let (source, code, target) = match parts.as_slice() {
        [s, c] => (*s, *c, None),
        [s, c, t] => (*s, *c, Some(*t)),
        _ => {
            return Err(err(
                name,
                format!("'{name}' takes SourceType:parameter[:TargetType]"),
            ))
        }
    };
    let source: ResourceType = source
        .parse()
        .map_err(|_| err(name, format!("'{source}' is not a resource type")))?;
    if !reverse && !iterate && source != ty {
        return Err(err(
            name,
            format!("'{name}' must start with the searched type {ty} (or use :iterate)"),
        ));
    }
    let def = reference_param(source, name, code)?;
    let target = match target {
        None => None,
        Some(t) => {
            let t: ResourceType = t
                .parse()
                .map_err(|_| err(name, format!("'{t}' is not a resource type")))?;
            if !def.targets.is_empty() && !def.targets.contains(&t) {
                return Err(err(
                    name,
                    format!("{source}.{code} cannot refer to {t} resources"),
                ));
            }
            Some(t)
        }
    };
    if reverse && !iterate {
        let reaches = target.map(|t| t == ty).unwrap_or(true)
            && (def.targets.is_empty() || def.targets.contains(&ty));
        if !reaches {
            return Err(err(
                name,
                format!("{source}.{code} cannot refer to {ty} resources"),
            ));
        }
    }
    Ok(IncludeSpec {
        source,
        param: Some(def),
        target,
        iterate,
    })
}

/// `_elements`: element names of `ty` (optionally `Type.`-prefixed), comma-separated.
pub fn parse_elements(ty: ResourceType, value: &str) -> Result<Vec<String>, SearchError> {
    let model = fhir_structure::model::Model::r4();
    let elements = model.all_elements(ty.as_str());
    let mut out = Vec::new();
    for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let e = e.strip_prefix(&format!("{ty}.")).unwrap_or(e);
        let known = elements
            .iter()
            .any(|d| d.name == e || d.name.strip_suffix("[x]") == Some(e));
        if !known {
            return Err(err("_elements", format!("'{e}' is not an element of {ty}")));
        }
        out.push(e.to_owned());
    }
    Ok(out)
}

/// Parses `pairs` (decoded name/value pairs in request order) for `ty`.
pub fn parse(
    ty: ResourceType,
    pairs: &[(String, String)],
    opts: Options<'_>,
) -> Result<ParsedSearch, SearchError> {
    let mut out = ParsedSearch {
        query: SearchQuery::new(ty),
        applied: Vec::new(),
        warnings: Vec::new(),
        summary: None,
        elements: None,
    };
    out.query.count = opts.paging.default_count;
    let lenient = opts.lenient;
    if pairs.len() > MAX_PARAMS * 2 {
        return Err(err(
            "",
            format!("Too many search parameters (at most {MAX_PARAMS})"),
        ));
    }
    for (raw_name, value) in pairs {
        let name = raw_name.split(':').next().unwrap_or(raw_name);
        if FORMAT_PARAMS.contains(&name) {
            continue;
        }
        let result: Result<bool, SearchError> = (|| {
            no_controls(raw_name, value)?;
            let q = &mut out.query;
            match name {
                "_count" => {
                    let n = value.parse::<usize>().map_err(|_| {
                        err(name, "Parameter '_count' must be a non-negative integer")
                    })?;
                    q.count = n.min(opts.paging.max_count);
                }
                "_total" => {
                    q.total = match value.as_str() {
                        "none" => TotalMode::None,
                        "estimate" => TotalMode::Estimate,
                        "accurate" => TotalMode::Accurate,
                        _ => {
                            return Err(err(
                                name,
                                "Parameter '_total' must be none, estimate or accurate",
                            ))
                        }
                    }
                }
                "_summary" => {
                    let Some(s) = Summary::parse(value) else {
                        return Err(err(
                            name,
                            "Parameter '_summary' must be true, text, data, count or false",
                        ));
                    };
                    if s == Summary::Count {
                        q.count = 0;
                        q.total = TotalMode::Accurate;
                    }
                    out.summary = Some(s);
                }
                "_elements" => out.elements = Some(parse_elements(ty, value)?),
                "_sort" => q.sort = parse_sort(ty, value)?,
                "_include" | "_revinclude" => {
                    let spec = parse_include(ty, raw_name, value, name == "_revinclude")?;
                    if q.include.len() + q.revinclude.len() >= MAX_INCLUDES {
                        return Err(err(
                            name,
                            format!("At most {MAX_INCLUDES} _include/_revinclude parameters"),
                        ));
                    }
                    if name == "_include" {
                        q.include.push(spec);
                    } else {
                        q.revinclude.push(spec);
                    }
                }
                "_cursor" => {
                    q.cursor = Some(
                        decode_cursor(value).ok_or_else(|| err(name, "Invalid paging cursor"))?,
                    );
                    return Ok(false);
                }
                "_contained" | "_containedType" | "_text" | "_content" | "_list" | "_query"
                | "_filter" | "_type" => {
                    return Err(err(name, format!("Parameter '{name}' is not supported")))
                }
                _ => {
                    // Errors name the parameter as the client wrote it, not the
                    // part of a chain or `_has` where parsing failed.
                    let pred = parse_param(ty, raw_name, value, 0, &opts).map_err(|mut e| {
                        e.param.clone_from(raw_name);
                        e
                    })?;
                    q.predicates.push(pred);
                }
            }
            Ok(true)
        })();
        match result {
            Ok(true) => out.applied.push((raw_name.clone(), value.clone())),
            Ok(false) => {}
            Err(e) if lenient => out.warnings.push(e),
            Err(e) => return Err(e),
        }
    }
    if out.query.predicates.len() > MAX_PARAMS {
        return Err(err(
            "",
            format!("Too many search parameters (at most {MAX_PARAMS})"),
        ));
    }
    if let Some(c) = &out.query.cursor {
        if !cursor_fits(c, &out.query.sort) {
            let e = err(
                "_cursor",
                "The paging cursor does not belong to this search's _sort",
            );
            if !lenient {
                return Err(e);
            }
            out.warnings.push(e);
            out.query.cursor = None;
        }
    }
    Ok(out)
}

/// Whether a cursor's keys match `sort` in number and type (a cursor made for
/// another `_sort` would compare text with numbers, or the wrong columns).
fn cursor_fits(c: &Cursor, sort: &[SortSpec]) -> bool {
    #[derive(PartialEq)]
    enum Kind {
        Int,
        Real,
        Text,
    }
    let kind = |key: SortKey| match key {
        SortKey::Id => Kind::Text,
        SortKey::LastUpdated => Kind::Int,
        SortKey::Param(p) => match p.kind {
            ParamKind::Date => Kind::Int,
            ParamKind::Number | ParamKind::Quantity => Kind::Real,
            _ => Kind::Text,
        },
    };
    c.keys.len() == sort.len()
        && c.keys.iter().zip(sort).all(|(k, s)| match k {
            KeyValue::Null => true,
            KeyValue::Int(_) => kind(s.key) == Kind::Int,
            KeyValue::Real(_) => kind(s.key) == Kind::Real,
            KeyValue::Text(_) => kind(s.key) == Kind::Text,
        })
}

// --- paging cursors: base64url(JSON) of the last row's sort keys -------------

pub fn encode_cursor(c: &Cursor) -> String {
    let keys: Vec<serde_json::Value> = c
        .keys
        .iter()
        .map(|k| match k {
            KeyValue::Null => serde_json::Value::Null,
            KeyValue::Int(i) => serde_json::json!({ "i": i }),
            KeyValue::Real(r) => serde_json::json!({ "r": r }),
            KeyValue::Text(t) => serde_json::json!(t),
        })
        .collect();
    let v = serde_json::json!([if c.backwards { "b" } else { "a" }, keys, c.id]);
    crate::base64::encode(v.to_string().as_bytes(), crate::base64::Alphabet::UrlSafe)
}

pub fn decode_cursor(s: &str) -> Option<Cursor> {
    if s.len() > 4096 {
        return None;
    }
    let bytes = crate::base64::decode(s, crate::base64::Alphabet::UrlSafe)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let arr = v.as_array()?;
    let [dir, keys, id] = arr.as_slice() else {
        return None;
    };
    let backwards = match dir.as_str()? {
        "a" => false,
        "b" => true,
        _ => return None,
    };
    let keys = keys
        .as_array()?
        .iter()
        .map(|k| match k {
            serde_json::Value::Null => Some(KeyValue::Null),
            serde_json::Value::String(s) => Some(KeyValue::Text(s.clone())),
            serde_json::Value::Object(o) => {
                if let Some(i) = o.get("i") {
                    i.as_i64().map(KeyValue::Int)
                } else {
                    o.get("r")?.as_f64().map(KeyValue::Real)
                }
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let id = id.as_str()?;
    LogicalId::parse(id)?;
    Some(Cursor {
        backwards,
        keys,
        id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests;
