//! Query string → typed [`SearchQuery`], against the parameter registry.
//!
//! Repeated parameters are AND, commas inside one value are OR; `\,`, `\|`, `\$`
//! and `\\` escape. Prefixes are recognised only on date parameters, so a token
//! value like `ne123` is never misread. Anything unknown (parameter, modifier,
//! prefix on the wrong type) is an error in strict mode; in lenient mode it is
//! dropped, reported as a warning and left out of the `self` link.

use super::registry::{self, ParamKind};
use super::types::*;
use crate::model::{LogicalId, ResourceType};

/// The most OR-ed values one parameter may carry, and the most AND-ed parameters:
/// bounds on the cost of one query.
pub const MAX_VALUES: usize = 100;
pub const MAX_PARAMS: usize = 30;

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

/// The outcome of parsing: the query, the parameters that were applied (for the
/// `self` link, in canonical form), and warnings for ignored parameters.
#[derive(Debug, Clone)]
pub struct ParsedSearch {
    pub query: SearchQuery,
    pub applied: Vec<(String, String)>,
    pub warnings: Vec<SearchError>,
}

/// Parameters handled by the REST layer, never by search.
const FORMAT_PARAMS: [&str; 2] = ["_format", "_pretty"];

/// Splits on an unescaped separator and unescapes each part.
pub fn split_escaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | '|' | '$' | '\\')) if n != sep => {
                    cur.push('\\');
                    cur.push(n);
                }
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
fn unescape(s: &str) -> String {
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

pub fn parse_date_value(param: &str, raw: &str) -> Result<DateValue, SearchError> {
    let (prefix, rest) = match raw.get(..2).and_then(|p| {
        Prefix::ALL
            .iter()
            .find(|(code, _)| *code == p)
            .map(|(_, pr)| *pr)
    }) {
        Some(p) => (p, raw.get(2..).unwrap_or("")),
        None => (Prefix::Eq, raw),
    };
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

fn parse_token(value: &str) -> TokenValue {
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

fn parse_reference(
    param: &str,
    value: &str,
    targets: &[ResourceType],
) -> Result<ReferenceValue, SearchError> {
    let value = unescape(value);
    let segments: Vec<&str> = value.trim_end_matches('/').rsplit('/').take(2).collect();
    let (ty, id) = match segments.as_slice() {
        [id] => (None, *id),
        [id, ty] => {
            let ty: ResourceType = ty.parse().map_err(|_| {
                err(
                    param,
                    format!("Parameter '{param}': unsupported reference type '{ty}'"),
                )
            })?;
            (Some(ty), *id)
        }
        _ => return Err(err(param, format!("Parameter '{param}': empty reference"))),
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
    })
}

/// Parses `pairs` (decoded name/value pairs in request order) for `ty`.
pub fn parse(
    ty: ResourceType,
    pairs: &[(String, String)],
    lenient: bool,
    paging: Paging,
) -> Result<ParsedSearch, SearchError> {
    let mut query = SearchQuery::new(ty);
    query.count = paging.default_count;
    let mut applied = Vec::new();
    let mut warnings = Vec::new();
    let fail = |e: SearchError, warnings: &mut Vec<SearchError>| -> Result<(), SearchError> {
        if lenient {
            warnings.push(e);
            Ok(())
        } else {
            Err(e)
        }
    };
    if pairs.len() > MAX_PARAMS * 2 {
        return Err(err(
            "",
            format!("Too many search parameters (at most {MAX_PARAMS})"),
        ));
    }
    for (raw_name, value) in pairs {
        let (name, modifier) = match raw_name.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (raw_name.as_str(), None),
        };
        if FORMAT_PARAMS.contains(&name) {
            continue;
        }
        if let Some(m) = modifier {
            fail(
                err(
                    raw_name,
                    format!("Modifier ':{m}' is not supported on parameter '{name}'"),
                ),
                &mut warnings,
            )?;
            continue;
        }
        let values = split_escaped(value, ',');
        if values.len() > MAX_VALUES {
            return Err(err(
                name,
                format!("Parameter '{name}' has more than {MAX_VALUES} values"),
            ));
        }
        if values.iter().any(|v| v.is_empty()) && !matches!(name, "_count" | "_total" | "_summary")
        {
            fail(
                err(name, format!("Parameter '{name}' has an empty value")),
                &mut warnings,
            )?;
            continue;
        }
        match name {
            "_count" => match value.parse::<usize>() {
                Ok(n) => {
                    query.count = n.min(paging.max_count);
                    applied.push((name.to_owned(), query.count.to_string()));
                }
                Err(_) => fail(
                    err(name, "Parameter '_count' must be a non-negative integer"),
                    &mut warnings,
                )?,
            },
            "_total" => match value.as_str() {
                "none" => {
                    query.total = TotalMode::None;
                    applied.push((name.to_owned(), value.clone()));
                }
                "accurate" | "estimate" => {
                    query.total = TotalMode::Accurate;
                    applied.push((name.to_owned(), value.clone()));
                }
                _ => fail(
                    err(
                        name,
                        "Parameter '_total' must be none, estimate or accurate",
                    ),
                    &mut warnings,
                )?,
            },
            "_summary" => match value.as_str() {
                "count" => {
                    query.count = 0;
                    query.total = TotalMode::Accurate;
                    applied.push((name.to_owned(), value.clone()));
                }
                "false" => applied.push((name.to_owned(), value.clone())),
                _ => fail(
                    err(name, "Only _summary=count and _summary=false are supported"),
                    &mut warnings,
                )?,
            },
            "_cursor" => {
                if LogicalId::parse(value).is_none() {
                    fail(err(name, "Invalid paging cursor"), &mut warnings)?;
                } else {
                    query.after_id = Some(value.clone());
                }
            }
            "_id" => {
                let ids: Vec<String> = values.iter().map(|v| unescape(v)).collect();
                if let Some(bad) = ids.iter().find(|i| LogicalId::parse(i).is_none()) {
                    let msg = format!("Parameter '_id': '{bad}' is not a valid resource id");
                    fail(err(name, msg), &mut warnings)?;
                    continue;
                }
                query.predicates.push(Predicate::Id(ids));
                applied.push((name.to_owned(), value.clone()));
            }
            "_lastUpdated" => {
                match values
                    .iter()
                    .map(|v| parse_date_value(name, &unescape(v)))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(v) => {
                        query.predicates.push(Predicate::LastUpdated(v));
                        applied.push((name.to_owned(), value.clone()));
                    }
                    Err(e) => fail(e, &mut warnings)?,
                }
            }
            _ => {
                let Some(def) = registry::lookup(ty, name) else {
                    fail(
                        err(
                            name,
                            format!("Unknown search parameter '{name}' for resource type {ty}"),
                        ),
                        &mut warnings,
                    )?;
                    continue;
                };
                let pred = match def.kind {
                    ParamKind::Token => Ok(Predicate::Token {
                        param: def.code,
                        any_of: values.iter().map(|v| parse_token(v)).collect(),
                    }),
                    ParamKind::Date => values
                        .iter()
                        .map(|v| parse_date_value(name, &unescape(v)))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|any_of| Predicate::Date {
                            param: def.code,
                            any_of,
                        }),
                    ParamKind::Reference => values
                        .iter()
                        .map(|v| parse_reference(name, v, def.targets))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|any_of| Predicate::Reference {
                            param: def.code,
                            any_of,
                        }),
                };
                match pred {
                    Ok(p) => {
                        query.predicates.push(p);
                        applied.push((name.to_owned(), value.clone()));
                    }
                    Err(e) => fail(e, &mut warnings)?,
                }
            }
        }
    }
    if query.predicates.len() > MAX_PARAMS {
        return Err(err(
            "",
            format!("Too many search parameters (at most {MAX_PARAMS})"),
        ));
    }
    Ok(ParsedSearch {
        query,
        applied,
        warnings,
    })
}

#[cfg(test)]
mod tests;
