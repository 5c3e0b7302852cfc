//! Lexical checks for FHIR R4 primitive types, and date/time range parsing.
//!
//! Owns: the JSON representation rule for primitives (booleans are JSON
//! `true`/`false`; `integer`, `positiveInt`, `unsignedInt` and `decimal` are
//! JSON numbers; everything else is a JSON string), the lexical regexes taken
//! from the specification (read from the generated model, anchored, and
//! compiled once), and the extra rules regexes cannot express: calendar
//! validity of dates (month lengths, leap years), the 32-bit range of
//! integers, the 1 MB limit on strings and the lightweight `xhtml` check.
//!
//! The specification's regexes use XML Schema semantics, where `\s` is only
//! space, tab, CR and LF; they are translated accordingly (so a string
//! containing a non-breaking space is still a valid `string`).
//!
//! `xhtml` (narrative `div`) is not parsed as XHTML: it must be a string that
//! starts with `<div` (after optional leading whitespace) and contains the
//! XHTML namespace `http://www.w3.org/1999/xhtml`.

use once_cell::sync::Lazy;
use regex::Regex;
use serde_json::Value;

use crate::model::Model;

/// Maximum length of a `string` (and `markdown`, `code`, `id`) value: 1 MB.
pub const MAX_STRING_CHARS: usize = 1024 * 1024;

/// The XHTML namespace a narrative `div` must declare.
pub const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// The FHIR R4 primitive types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prim {
    Base64Binary,
    Boolean,
    Canonical,
    Code,
    Date,
    DateTime,
    Decimal,
    Id,
    Instant,
    Integer,
    Markdown,
    Oid,
    PositiveInt,
    String,
    Time,
    UnsignedInt,
    Uri,
    Url,
    Uuid,
    Xhtml,
}

impl Prim {
    /// All primitive types, in declaration order.
    pub const ALL: [Prim; 20] = [
        Prim::Base64Binary,
        Prim::Boolean,
        Prim::Canonical,
        Prim::Code,
        Prim::Date,
        Prim::DateTime,
        Prim::Decimal,
        Prim::Id,
        Prim::Instant,
        Prim::Integer,
        Prim::Markdown,
        Prim::Oid,
        Prim::PositiveInt,
        Prim::String,
        Prim::Time,
        Prim::UnsignedInt,
        Prim::Uri,
        Prim::Url,
        Prim::Uuid,
        Prim::Xhtml,
    ];

    /// The FHIR type name (`dateTime`).
    pub fn name(self) -> &'static str {
        match self {
            Prim::Base64Binary => "base64Binary",
            Prim::Boolean => "boolean",
            Prim::Canonical => "canonical",
            Prim::Code => "code",
            Prim::Date => "date",
            Prim::DateTime => "dateTime",
            Prim::Decimal => "decimal",
            Prim::Id => "id",
            Prim::Instant => "instant",
            Prim::Integer => "integer",
            Prim::Markdown => "markdown",
            Prim::Oid => "oid",
            Prim::PositiveInt => "positiveInt",
            Prim::String => "string",
            Prim::Time => "time",
            Prim::UnsignedInt => "unsignedInt",
            Prim::Uri => "uri",
            Prim::Url => "url",
            Prim::Uuid => "uuid",
            Prim::Xhtml => "xhtml",
        }
    }

    /// Parse a FHIR primitive type name, or a FHIRPath system type URL
    /// (`http://hl7.org/fhirpath/System.String` → `string`).
    pub fn from_name(name: &str) -> Option<Prim> {
        let name = match name.strip_prefix(crate::model::SYSTEM_TYPE_PREFIX) {
            Some("String") => "string",
            Some("Boolean") => "boolean",
            Some("Integer") => "integer",
            Some("Decimal") => "decimal",
            Some("Date") => "date",
            Some("DateTime") => "dateTime",
            Some("Time") => "time",
            Some(_) => return None,
            None => name,
        };
        Prim::ALL.iter().copied().find(|p| p.name() == name)
    }

    fn json_kind(self) -> JsonKind {
        match self {
            Prim::Boolean => JsonKind::Bool,
            Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt | Prim::Decimal => {
                JsonKind::Number
            }
            _ => JsonKind::String,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Bool,
    Number,
    String,
}

impl JsonKind {
    fn describe(self) -> &'static str {
        match self {
            JsonKind::Bool => "a JSON boolean",
            JsonKind::Number => "a JSON number",
            JsonKind::String => "a JSON string",
        }
    }
}

/// Human description of a JSON value's kind, for messages.
pub(crate) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A failed primitive check: the FHIR issue-type code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrimError {
    pub code: &'static str,
    pub message: String,
}

fn structure(message: String) -> PrimError {
    PrimError {
        code: "structure",
        message,
    }
}

fn value_err(message: String) -> PrimError {
    PrimError {
        code: "value",
        message,
    }
}

/// Translate an XML-Schema-flavoured regex (as used in the FHIR spec) to the
/// `regex` crate's syntax: `\s`/`\S` mean only space, tab, CR and LF.
pub(crate) fn translate_xml_regex(re: &str) -> String {
    const WS: &str = r"\x20\t\n\r";
    let mut out = String::with_capacity(re.len() + 16);
    let mut in_class = false;
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('s') if in_class => out.push_str(WS),
                Some('s') => {
                    out.push('[');
                    out.push_str(WS);
                    out.push(']');
                }
                Some('S') => {
                    // nested class (a union member when inside a class)
                    out.push_str("[^");
                    out.push_str(WS);
                    out.push(']');
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push_str(r"\\"),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The compiled, anchored regex of each primitive (index = `Prim as usize`).
static REGEXES: Lazy<Vec<Option<Regex>>> = Lazy::new(|| {
    let model = Model::r4();
    Prim::ALL
        .iter()
        .map(|p| {
            let src = model.type_def(p.name())?.regex.as_deref()?;
            Regex::new(&format!("^(?:{})$", translate_xml_regex(src))).ok()
        })
        .collect()
});

fn regex_for(p: Prim) -> Option<&'static Regex> {
    REGEXES.get(p as usize).and_then(Option::as_ref)
}

fn check_regex(p: Prim, s: &str) -> Result<(), PrimError> {
    match regex_for(p) {
        Some(re) if !re.is_match(s) => Err(value_err(format!(
            "{} is not a valid {}",
            quote(s),
            p.name()
        ))),
        _ => Ok(()),
    }
}

/// Quote a value for a message, truncated to keep messages short.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().any(char::is_control) {
        let escaped: String = s.chars().flat_map(char::escape_debug).collect();
        return quote(&escaped);
    }
    if s.len() <= MAX {
        return format!("\"{s}\"");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("\"{}...\"", s.get(..end).unwrap_or(""))
}

/// Check a JSON value against a FHIR primitive type.
///
/// `type_name` is a FHIR primitive type name (`date`, `positiveInt`, ...) or a
/// FHIRPath system type URL. Checks the JSON representation, the lexical form
/// (spec regex) and the extra rules described in the module docs. An unknown
/// type name is an error.
pub fn check_primitive(type_name: &str, value: &Value) -> Result<(), String> {
    let p = Prim::from_name(type_name)
        .ok_or_else(|| format!("{type_name} is not a FHIR primitive type"))?;
    check(p, value).map_err(|e| e.message)
}

/// Check a JSON value against a primitive type (crate-internal, with issue code).
pub(crate) fn check(p: Prim, v: &Value) -> Result<(), PrimError> {
    let want = p.json_kind();
    match (want, v) {
        (JsonKind::Bool, Value::Bool(_)) => Ok(()),
        (JsonKind::Number, Value::Number(n)) => check_number(p, n.as_str()),
        (JsonKind::String, Value::String(s)) => check_string(p, s),
        _ => Err(structure(format!(
            "{} must be {}, found {}",
            p.name(),
            want.describe(),
            json_type_name(v)
        ))),
    }
}

fn check_number(p: Prim, text: &str) -> Result<(), PrimError> {
    if p == Prim::Decimal {
        return check_regex(p, text);
    }
    // integer types: no fraction or exponent, 32-bit signed range
    let int_ok = regex_for(Prim::Integer).is_none_or(|re| re.is_match(text));
    if !int_ok {
        return Err(value_err(format!("{text} is not a valid {}", p.name())));
    }
    // positiveInt ([1-9][0-9]*) and unsignedInt ([0]|([1-9][0-9]*)) exclude
    // zero/negatives lexically
    if p != Prim::Integer {
        check_regex(p, text)?;
    }
    match text.parse::<i64>() {
        Ok(n) if i32::try_from(n).is_ok() => Ok(()),
        _ => Err(value_err(format!(
            "{text} is out of range for {} (32-bit)",
            p.name()
        ))),
    }
}

fn check_string(p: Prim, s: &str) -> Result<(), PrimError> {
    if s.is_empty() {
        return Err(value_err(format!(
            "{} must not be an empty string",
            p.name()
        )));
    }
    // R4 string: `[ \r\n\t\S]+`, and XML 1.0 allows no other C0 control
    // characters (PostgreSQL's jsonb cannot even hold U+0000)
    if let Some(b) = s
        .bytes()
        .find(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err(value_err(format!(
            "{} must not contain the control character U+{b:04X} (only tab, CR and LF are allowed)",
            p.name()
        )));
    }
    let limited = matches!(p, Prim::String | Prim::Markdown | Prim::Code | Prim::Id);
    if limited && s.len() > MAX_STRING_CHARS && s.chars().count() > MAX_STRING_CHARS {
        return Err(PrimError {
            code: "too-long",
            message: format!("{} is longer than {MAX_STRING_CHARS} characters", p.name()),
        });
    }
    match p {
        // The spec regex for string/markdown ([ \r\n\t\S]+ with XML Schema
        // semantics) accepts every non-empty string: skip the regex engine.
        Prim::String | Prim::Markdown => Ok(()),
        Prim::Xhtml => check_xhtml(s),
        Prim::Date | Prim::DateTime | Prim::Instant => {
            check_regex(p, s)?;
            check_calendar(s)
                .ok_or_else(|| value_err(format!("{} is not a valid calendar date", quote(s))))
        }
        _ => check_regex(p, s),
    }
}

fn check_xhtml(s: &str) -> Result<(), PrimError> {
    if !s.trim_start().starts_with("<div") {
        return Err(value_err(
            "narrative div must be XHTML starting with <div".to_string(),
        ));
    }
    if !s.contains(XHTML_NS) {
        return Err(value_err(format!(
            "narrative div must declare the XHTML namespace {XHTML_NS}"
        )));
    }
    Ok(())
}

/// Day-of-month validity for a value already matching the date regex.
fn check_calendar(s: &str) -> Option<()> {
    let b = s.as_bytes();
    if b.len() < 10 {
        return Some(()); // year or year-month precision: regex is enough
    }
    let y = digits(b, 0, 4)?;
    let m = digits(b, 5, 2)?;
    let d = digits(b, 8, 2)?;
    (d >= 1 && d <= days_in_month(y, m)?).then_some(())
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> Option<i64> {
    Some(match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => return None,
    })
}

/// Parse `len` ASCII digits at `start`.
fn digits(b: &[u8], start: usize, len: usize) -> Option<i64> {
    let slice = b.get(start..start.checked_add(len)?)?;
    let mut n: i64 = 0;
    for &c in slice {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    Some(n)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const MS_PER_DAY: i64 = 86_400_000;

/// The range of instants covered by a `date`, `dateTime` or `instant` value at
/// its precision, as `(lower, upper)` epoch milliseconds, lower inclusive and
/// upper exclusive: `2020` covers the whole year, `2020-02` the month,
/// `2020-02-29` the day, `2020-02-29T10:00:00Z` one second, `...T10:00:00.5Z`
/// 100 ms (precision finer than a millisecond is truncated to 1 ms).
///
/// Accepted forms: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DDThh:mm`,
/// `YYYY-MM-DDThh:mm:ss[.f+]`, each time form optionally followed by `Z` or
/// `+hh:mm`/`-hh:mm`. **Values without a timezone (all dates, and dateTimes
/// without an offset) are treated as UTC.** Returns `None` for anything else,
/// including calendar-invalid dates such as `2021-02-29`.
pub fn parse_date_range(s: &str) -> Option<(i64, i64)> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    match b.len() {
        4 => {
            let lo = days_from_civil(year, 1, 1) * MS_PER_DAY;
            let hi = days_from_civil(year + 1, 1, 1) * MS_PER_DAY;
            return Some((lo, hi));
        }
        7 => {
            if b.get(4) != Some(&b'-') {
                return None;
            }
            let month = digits(b, 5, 2)?;
            if !(1..=12).contains(&month) {
                return None;
            }
            let lo = days_from_civil(year, month, 1) * MS_PER_DAY;
            let hi = lo + days_in_month(year, month)? * MS_PER_DAY;
            return Some((lo, hi));
        }
        _ => {}
    }
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month)? {
        return None;
    }
    let day_ms = days_from_civil(year, month, day) * MS_PER_DAY;
    if b.len() == 10 {
        return Some((day_ms, day_ms + MS_PER_DAY));
    }
    if b.get(10) != Some(&b'T') {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = digits(b, 14, 2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut pos = 16;
    let mut ms = (hour * 60 + minute) * 60_000;
    let mut width = 60_000; // precision of the value in ms
    if b.get(pos) == Some(&b':') {
        let sec = digits(b, pos + 1, 2)?;
        if sec > 60 {
            return None;
        }
        ms += sec * 1000;
        width = 1000;
        pos += 3;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            let mut frac_ms = 0;
            let mut scale = 100;
            while let Some(c) = b.get(pos).filter(|c| c.is_ascii_digit()) {
                frac_ms += i64::from(c - b'0') * scale;
                scale /= 10;
                pos += 1;
            }
            let n = pos - start;
            if n == 0 {
                return None;
            }
            ms += frac_ms;
            width = match n {
                1 => 100,
                2 => 10,
                _ => 1,
            };
        }
    }
    let offset_ms = match b.get(pos) {
        None => 0,
        Some(b'Z') => {
            pos += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, pos + 1, 2)?;
            if b.get(pos + 3) != Some(&b':') {
                return None;
            }
            let om = digits(b, pos + 4, 2)?;
            if oh > 14 || om > 59 {
                return None;
            }
            pos += 6;
            let off = (oh * 60 + om) * 60_000;
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
        Some(_) => return None,
    };
    if pos != b.len() {
        return None;
    }
    let lo = day_ms + ms - offset_ms;
    Some((lo, lo + width))
}
