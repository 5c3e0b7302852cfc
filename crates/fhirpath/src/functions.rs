//! Implementations of the FHIRPath function library (N1 plus the FHIR R4
//! additions: `extension`, `resolve`, `memberOf`, `conformsTo`, ...).

use crate::decimal::Decimal;
use crate::eval::{as_dec, as_int, err, push_distinct, Coll, Evaluator, Frame};
use crate::ops::{self, prim_to_value};
use crate::parser::{Ast, Call, Func};
use crate::quantity::{self, Quantity};
use crate::temporal::{DateTime, Precision, Time};
use crate::types;
use crate::value::{quantity_from_json, NodeRef, Prim, Value};
use crate::EvalError;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cmp::Ordering;

fn one<'a>(v: Value<'a>) -> Result<Coll<'a>, EvalError> {
    Ok(vec![v])
}

fn boolean<'a>(b: bool) -> Result<Coll<'a>, EvalError> {
    Ok(vec![Value::Boolean(b)])
}

fn opt<'a>(v: Option<Value<'a>>) -> Result<Coll<'a>, EvalError> {
    Ok(v.into_iter().collect())
}

fn take_arg<'a>(args: &mut [Coll<'a>], k: usize) -> Coll<'a> {
    args.get_mut(k).map(std::mem::take).unwrap_or_default()
}

fn single_arg<'a>(args: &mut [Coll<'a>], k: usize) -> Result<Option<Value<'a>>, EvalError> {
    let mut v = take_arg(args, k);
    match v.len() {
        0 => Ok(None),
        1 => Ok(v.pop()),
        n => err(format!(
            "argument {} must be a single value, got {}",
            k + 1,
            n
        )),
    }
}

fn string_arg(args: &[Coll<'_>], k: usize) -> Result<Option<String>, EvalError> {
    match args.get(k).map(|v| v.as_slice()) {
        None | Some([]) => Ok(None),
        Some([v]) => Ok(Some(ops::as_str(v, "argument")?.into_owned())),
        Some(v) => err(format!(
            "argument {} must be a single value, got {}",
            k + 1,
            v.len()
        )),
    }
}

fn int_arg(args: &[Coll<'_>], k: usize) -> Result<Option<i64>, EvalError> {
    match args.get(k).map(|v| v.as_slice()) {
        None | Some([]) => Ok(None),
        Some([v]) => match as_int(v) {
            Some(i) => Ok(Some(i)),
            None => err("argument must be an integer"),
        },
        Some(v) => err(format!(
            "argument {} must be a single value, got {}",
            k + 1,
            v.len()
        )),
    }
}

const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile_regex(pat: &str, full: bool) -> Result<regex::Regex, EvalError> {
    let p = if full {
        format!("(?s)^(?:{})$", pat)
    } else {
        format!("(?s){}", pat)
    };
    regex::RegexBuilder::new(&p)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| EvalError::new(format!("invalid regular expression '{}': {}", pat, e)))
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

fn char_slice(s: &str, start: usize, len: Option<usize>) -> String {
    let it = s.chars().skip(start);
    match len {
        Some(l) => it.take(l).collect(),
        None => it.collect(),
    }
}

/// Converts a value to a Quantity following `toQuantity()` rules.
fn to_quantity(v: &Value<'_>) -> Option<Quantity> {
    match v.prim() {
        Prim::Quantity(q) => Some(q.into_owned()),
        Prim::Int(i) => Some(Quantity::new(Decimal::from_i64(i), "1")),
        Prim::Dec(d) => Some(Quantity::new(d, "1")),
        Prim::Bool(b) => Some(Quantity::new(Decimal::new(if b { 10 } else { 0 }, 1), "1")),
        Prim::Str(s, _) => parse_quantity_string(s),
        _ => None,
    }
}

fn parse_quantity_string(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let num_end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '-' || *c == '+') && *i == 0)))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let num = &s[..num_end];
    if num.ends_with('.') {
        return None;
    }
    let value = Decimal::parse(num)?;
    let rest = s[num_end..].trim();
    if rest.is_empty() {
        return Some(Quantity::new(value, "1"));
    }
    if let Some(q) = rest.strip_prefix('\'') {
        let unit = q.strip_suffix('\'')?;
        if unit.contains('\'') || !quantity::is_valid_unit(unit) && unit.is_empty() {
            return None;
        }
        return Some(Quantity::new(value, unit));
    }
    quantity::calendar_keyword(rest).map(|k| Quantity::new(value, k))
}

fn to_boolean(v: &Value<'_>) -> Option<bool> {
    match v.prim() {
        Prim::Bool(b) => Some(b),
        Prim::Int(1) => Some(true),
        Prim::Int(0) => Some(false),
        Prim::Dec(d) => {
            if d == Decimal::from_i64(1) {
                Some(true)
            } else if d.is_zero() {
                Some(false)
            } else {
                None
            }
        }
        Prim::Str(s, _) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
            "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn to_integer(v: &Value<'_>) -> Option<i64> {
    match v.prim() {
        Prim::Int(i) => Some(i),
        Prim::Bool(b) => Some(b as i64),
        Prim::Str(s, _) => {
            let t = s.strip_prefix(['+', '-']).unwrap_or(s);
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

fn to_decimal(v: &Value<'_>) -> Option<Decimal> {
    match v.prim() {
        Prim::Int(i) => Some(Decimal::from_i64(i)),
        Prim::Dec(d) => Some(d),
        Prim::Bool(b) => Some(Decimal::new(if b { 10 } else { 0 }, 1)),
        Prim::Str(s, _) => {
            if s.contains(['e', 'E']) {
                None
            } else {
                Decimal::parse(s)
            }
        }
        _ => None,
    }
}

fn to_date(v: &Value<'_>) -> Option<DateTime> {
    match v.prim() {
        Prim::Date(d) => Some(d),
        Prim::DateTime(d) => Some(d.to_date()),
        Prim::Str(s, _) => DateTime::parse_date(s)
            .or_else(|| DateTime::parse_datetime(s, false).map(|d| d.to_date())),
        _ => None,
    }
}

fn to_datetime(v: &Value<'_>) -> Option<DateTime> {
    match v.prim() {
        Prim::Date(d) | Prim::DateTime(d) => Some(d),
        Prim::Str(s, _) => DateTime::parse_datetime(s, false),
        _ => None,
    }
}

fn to_time(v: &Value<'_>) -> Option<Time> {
    match v.prim() {
        Prim::Time(t) => Some(t),
        Prim::Str(s, _) => Time::parse(s.strip_prefix('T').unwrap_or(s), false),
        _ => None,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8], alpha: &[u8; 64]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(alpha[(n >> 18) as usize & 63] as char);
        out.push(alpha[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            alpha[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            alpha[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn b64_decode(s: &str, alpha: &[u8; 64]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = alpha.iter().position(|&a| a == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn json_escape(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap_or_default();
    q.get(1..q.len().saturating_sub(1))
        .unwrap_or("")
        .to_string()
}

fn json_unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = it.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?).unwrap_or('\u{fffd}'));
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Decimal boundary per the FHIRPath `lowBoundary`/`highBoundary` rules.
fn decimal_boundary(d: Decimal, digits: Option<i64>, high: bool) -> Option<Decimal> {
    let p = digits.unwrap_or(8);
    if !(0..=28).contains(&p) {
        return None;
    }
    let p = p as u32;
    if d.is_negative() {
        return decimal_boundary(d.neg(), Some(p as i64), !high).map(|x| x.neg());
    }
    // half a unit in the last place
    let half = Decimal::new(5, d.scale() + 1);
    let v = if high {
        d.checked_add(&half)?
    } else {
        d.checked_sub(&half)?
    };
    let r = if high { v.round(p) } else { v.truncate(p) };
    r.with_scale(p)
}

impl<'a, 'c> Evaluator<'a, 'c> {
    fn arg(&self, c: &Call, k: usize, f: Frame<'_, 'a>) -> Result<Coll<'a>, EvalError> {
        match c.args.get(k) {
            Some(a) => self.eval(a, f),
            None => Ok(Vec::new()),
        }
    }

    fn arg_single(
        &self,
        c: &Call,
        k: usize,
        f: Frame<'_, 'a>,
    ) -> Result<Option<Value<'a>>, EvalError> {
        let mut v = self.arg(c, k, f)?;
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            n => err(format!(
                "argument {} must be a single value, got {}",
                k + 1,
                n
            )),
        }
    }

    fn arg_string(
        &self,
        c: &Call,
        k: usize,
        f: Frame<'_, 'a>,
    ) -> Result<Option<String>, EvalError> {
        match self.arg_single(c, k, f)? {
            None => Ok(None),
            Some(v) => Ok(Some(ops::as_str(&v, "argument")?.into_owned())),
        }
    }

    fn regex_for(
        &self,
        c: &Call,
        args: &[Coll<'a>],
        k: usize,
        full: bool,
    ) -> Result<Option<regex::Regex>, EvalError> {
        if let Some(Ast::Lit(Value::String(p))) = c.args.get(k) {
            let cached = c.regex.get_or_init(|| compile_regex(p, full).ok());
            return match cached {
                Some(r) => Ok(Some(r.clone())),
                None => compile_regex(p, full).map(Some),
            };
        }
        match string_arg(args, k)? {
            None => Ok(None),
            Some(p) => compile_regex(&p, full).map(Some),
        }
    }

    fn single<'v>(
        &self,
        input: &'v [Value<'a>],
        name: &str,
    ) -> Result<Option<&'v Value<'a>>, EvalError> {
        match input.len() {
            0 => Ok(None),
            1 => Ok(input.first()),
            n => err(format!(
                "{}() requires a single input item, got {}",
                name, n
            )),
        }
    }

    fn single_str<'v>(
        &self,
        input: &'v [Value<'a>],
        name: &str,
    ) -> Result<Option<Cow<'v, str>>, EvalError> {
        match self.single(input, name)? {
            None => Ok(None),
            Some(v) => Ok(Some(ops::as_str(v, name)?)),
        }
    }

    fn iter_frame<'f>(this: &'f [Value<'a>], i: usize, f: Frame<'f, 'a>) -> Frame<'f, 'a> {
        Frame {
            this,
            index: Some(i),
            total: f.total,
        }
    }

    fn filter_where(
        &self,
        input: Coll<'a>,
        crit: &Ast,
        f: Frame<'_, 'a>,
    ) -> Result<Coll<'a>, EvalError> {
        let mut out = Vec::new();
        for (i, item) in input.into_iter().enumerate() {
            let one = std::slice::from_ref(&item);
            let r = self.eval(crit, Self::iter_frame(one, i, f))?;
            if self.to_bool(&r, "where")? == Some(true) {
                out.push(item);
            }
        }
        Ok(out)
    }

    fn contains_item(coll: &[Value<'a>], v: &Value<'a>) -> bool {
        coll.iter().any(|c| ops::eq_values(c, v) == Some(true))
    }

    pub(crate) fn call(&self, c: &Call, f: Frame<'_, 'a>) -> Result<Coll<'a>, EvalError> {
        let input: Coll<'a> = match &c.base {
            Some(b) => self.eval(b, f)?,
            None => f.this.to_vec(),
        };
        if self.ctx.strict
            && matches!(
                c.func,
                Func::First | Func::Last | Func::Tail | Func::Skip | Func::Take
            )
        {
            if let Some(Ast::Call(b)) = &c.base {
                if matches!(b.func, Func::Children | Func::Descendants) {
                    return err(
                        "ordered function applied to an unordered collection (strict mode)",
                    );
                }
            }
        }
        match c.func {
            Func::Exists
            | Func::All
            | Func::Where
            | Func::Select
            | Func::Repeat
            | Func::Iif
            | Func::Trace
            | Func::Aggregate
            | Func::Sort => self.call_iter(c, input, f),
            Func::Is | Func::As | Func::OfType => self.call_simple(c, input, Vec::new()),
            _ => {
                let mut args = Vec::with_capacity(c.args.len());
                for a in &c.args {
                    args.push(self.eval(a, f)?);
                }
                self.call_simple(c, input, args)
            }
        }
    }

    /// Functions whose arguments are evaluated per item (or lazily). Kept
    /// separate so the recursive evaluation path has small stack frames.
    #[inline(never)]
    fn call_iter(
        &self,
        c: &Call,
        input: Coll<'a>,
        f: Frame<'_, 'a>,
    ) -> Result<Coll<'a>, EvalError> {
        match c.func {
            Func::Exists => {
                if c.args.is_empty() {
                    boolean(!input.is_empty())
                } else {
                    for (i, item) in input.iter().enumerate() {
                        let r = self.eval(
                            &c.args[0],
                            Self::iter_frame(std::slice::from_ref(item), i, f),
                        )?;
                        if self.to_bool(&r, "exists")? == Some(true) {
                            return boolean(true);
                        }
                    }
                    boolean(false)
                }
            }
            Func::All => {
                for (i, item) in input.iter().enumerate() {
                    let r = self.eval(
                        &c.args[0],
                        Self::iter_frame(std::slice::from_ref(item), i, f),
                    )?;
                    if self.to_bool(&r, "all")? != Some(true) {
                        return boolean(false);
                    }
                }
                boolean(true)
            }
            Func::Where => self.filter_where(input, &c.args[0], f),
            Func::Select => {
                let mut out = Vec::new();
                for (i, item) in input.iter().enumerate() {
                    let r = self.eval(
                        &c.args[0],
                        Self::iter_frame(std::slice::from_ref(item), i, f),
                    )?;
                    out.extend(r);
                    self.check_size(out.len())?;
                }
                Ok(out)
            }
            Func::Repeat => {
                let mut out: Coll<'a> = Vec::new();
                let mut frontier = input;
                while !frontier.is_empty() {
                    let mut next = Vec::new();
                    for (i, item) in frontier.iter().enumerate() {
                        let r = self.eval(
                            &c.args[0],
                            Self::iter_frame(std::slice::from_ref(item), i, f),
                        )?;
                        for v in r {
                            let seen = out.iter().any(|o| match (o, &v) {
                                (Value::Node(a), Value::Node(b)) => a.same(b),
                                (Value::Node(_), _) | (_, Value::Node(_)) => false,
                                (a, b) => ops::eq_values(a, b) == Some(true),
                            });
                            if !seen {
                                out.push(v.clone());
                                next.push(v);
                            }
                        }
                        self.check_size(out.len())?;
                    }
                    frontier = next;
                }
                Ok(out)
            }
            Func::Iif => {
                if input.len() > 1 {
                    return err("iif() requires an input of at most one item");
                }
                let inner = Frame {
                    this: &input,
                    index: f.index,
                    total: f.total,
                };
                let crit = self.eval(&c.args[0], inner)?;
                if self.ctx.strict && crit.len() == 1 && !matches!(crit[0].prim(), Prim::Bool(_)) {
                    return err("iif() criterion must be a Boolean (strict mode)");
                }
                if crit.len() > 1 {
                    return err("iif() criterion must be a single Boolean");
                }
                if self.to_bool(&crit, "iif")? == Some(true) {
                    self.eval(&c.args[1], inner)
                } else if let Some(e) = c.args.get(2) {
                    self.eval(e, inner)
                } else {
                    Ok(Vec::new())
                }
            }
            Func::Trace => {
                let name = self.arg_string(c, 0, f)?.unwrap_or_default();
                if let Some(t) = self.ctx.tracer {
                    if c.args.len() > 1 {
                        let mut proj = Vec::new();
                        for (i, item) in input.iter().enumerate() {
                            proj.extend(self.eval(
                                &c.args[1],
                                Self::iter_frame(std::slice::from_ref(item), i, f),
                            )?);
                        }
                        t.trace(&name, &proj);
                    } else {
                        t.trace(&name, &input);
                    }
                }
                Ok(input)
            }
            Func::Aggregate => {
                let mut total = match c.args.get(1) {
                    Some(init) => self.eval(init, f)?,
                    None => Vec::new(),
                };
                for (i, item) in input.iter().enumerate() {
                    let fr = Frame {
                        this: std::slice::from_ref(item),
                        index: Some(i),
                        total: Some(&total),
                    };
                    total = self.eval(&c.args[0], fr)?;
                }
                Ok(total)
            }
            Func::Sort => self.sort(input, c, f),
            _ => err("internal error: not an iterating function"),
        }
    }

    /// Functions whose arguments are evaluated up front (in the caller's frame).
    #[inline(never)]
    fn call_simple(
        &self,
        c: &Call,
        input: Coll<'a>,
        mut args: Vec<Coll<'a>>,
    ) -> Result<Coll<'a>, EvalError> {
        match c.func {
            // ------------------------------------------------ existence
            Func::Empty => boolean(input.is_empty()),
            Func::AllTrue | Func::AnyTrue | Func::AllFalse | Func::AnyFalse => {
                let mut bools = Vec::with_capacity(input.len());
                for v in &input {
                    match v.prim() {
                        Prim::Bool(b) => bools.push(b),
                        _ => {
                            return err(format!(
                                "{:?} requires Boolean items, got {}",
                                c.func,
                                ops::label(v)
                            ))
                        }
                    }
                }
                boolean(match c.func {
                    Func::AllTrue => bools.iter().all(|b| *b),
                    Func::AnyTrue => bools.iter().any(|b| *b),
                    Func::AllFalse => bools.iter().all(|b| !*b),
                    _ => bools.iter().any(|b| !*b),
                })
            }
            Func::SubsetOf | Func::SupersetOf => {
                let other = take_arg(&mut args, 0);
                let (small, big) = if c.func == Func::SubsetOf {
                    (&input, &other)
                } else {
                    (&other, &input)
                };
                boolean(small.iter().all(|v| Self::contains_item(big, v)))
            }
            Func::Count => one(Value::Integer(input.len() as i64)),
            Func::Distinct => {
                let mut out = Vec::with_capacity(input.len());
                for v in input {
                    push_distinct(&mut out, v);
                }
                Ok(out)
            }
            Func::IsDistinct => {
                let n = input.len();
                let mut out = Vec::with_capacity(n);
                for v in input {
                    push_distinct(&mut out, v);
                }
                boolean(out.len() == n)
            }
            // ------------------------------------------------ filtering & projection
            Func::OfType => {
                let ty =
                    c.ty.as_ref()
                        .ok_or_else(|| EvalError::new("ofType requires a type"))?;
                self.check_type_known(ty)?;
                Ok(input
                    .into_iter()
                    .filter(|v| self.is_type(v, ty, true))
                    .collect())
            }
            Func::As => {
                let ty =
                    c.ty.as_ref()
                        .ok_or_else(|| EvalError::new("as requires a type"))?;
                self.check_type_known(ty)?;
                // R4 core invariants (dom-3) apply as() to collections, so it
                // filters like ofType() unless strict mode is on.
                if input.len() > 1 && self.ctx.strict {
                    return err(format!("as() requires a single item, got {}", input.len()));
                }
                Ok(input
                    .into_iter()
                    .filter(|v| self.is_type(v, ty, true))
                    .collect())
            }
            Func::Is => {
                let ty =
                    c.ty.as_ref()
                        .ok_or_else(|| EvalError::new("is requires a type"))?;
                self.check_type_known(ty)?;
                match self.single(&input, "is")? {
                    None => Ok(Vec::new()),
                    Some(v) => boolean(self.is_type(v, ty, false)),
                }
            }
            // ------------------------------------------------ subsetting
            Func::Single => match input.len() {
                0 | 1 => Ok(input),
                n => err(format!("single() on a collection of {} items", n)),
            },
            Func::First => Ok(input.into_iter().take(1).collect()),
            Func::Last => opt(input.into_iter().last()),
            Func::Tail => Ok(input.into_iter().skip(1).collect()),
            Func::Skip => {
                let n = int_arg(&args, 0)?.unwrap_or(0);
                Ok(input.into_iter().skip(n.max(0) as usize).collect())
            }
            Func::Take => {
                let n = int_arg(&args, 0)?.unwrap_or(0);
                Ok(input.into_iter().take(n.max(0) as usize).collect())
            }
            Func::Intersect => {
                let other = take_arg(&mut args, 0);
                let mut out = Vec::new();
                for v in input {
                    if Self::contains_item(&other, &v) {
                        push_distinct(&mut out, v);
                    }
                }
                Ok(out)
            }
            Func::Exclude => {
                let other = take_arg(&mut args, 0);
                Ok(input
                    .into_iter()
                    .filter(|v| !Self::contains_item(&other, v))
                    .collect())
            }
            Func::Union => {
                let other = take_arg(&mut args, 0);
                self.binary_values(crate::parser::BinOp::Union, input, other)
            }
            Func::Combine => {
                let other = take_arg(&mut args, 0);
                let mut out = input;
                out.extend(other);
                self.check_size(out.len())?;
                Ok(out)
            }
            // ------------------------------------------------ conversion
            Func::ToBoolean => Ok(self
                .single(&input, "toBoolean")?
                .and_then(to_boolean)
                .map(Value::Boolean)
                .into_iter()
                .collect()),
            Func::ConvertsToBoolean => {
                self.converts(&input, "convertsToBoolean", |v| to_boolean(v).is_some())
            }
            Func::ToInteger => Ok(self
                .single(&input, "toInteger")?
                .and_then(to_integer)
                .map(Value::Integer)
                .into_iter()
                .collect()),
            Func::ConvertsToInteger => {
                self.converts(&input, "convertsToInteger", |v| to_integer(v).is_some())
            }
            Func::ToDecimal => Ok(self
                .single(&input, "toDecimal")?
                .and_then(to_decimal)
                .map(Value::Decimal)
                .into_iter()
                .collect()),
            Func::ConvertsToDecimal => {
                self.converts(&input, "convertsToDecimal", |v| to_decimal(v).is_some())
            }
            Func::ToStringF => Ok(self
                .single(&input, "toString")?
                .and_then(|v| v.to_fhirpath_string())
                .map(Value::String)
                .into_iter()
                .collect()),
            Func::ConvertsToString => self.converts(&input, "convertsToString", |v| {
                v.to_fhirpath_string().is_some()
            }),
            Func::ToDate => Ok(self
                .single(&input, "toDate")?
                .and_then(to_date)
                .map(Value::Date)
                .into_iter()
                .collect()),
            Func::ConvertsToDate => {
                self.converts(&input, "convertsToDate", |v| to_date(v).is_some())
            }
            Func::ToDateTime => Ok(self
                .single(&input, "toDateTime")?
                .and_then(to_datetime)
                .map(Value::DateTime)
                .into_iter()
                .collect()),
            Func::ConvertsToDateTime => {
                self.converts(&input, "convertsToDateTime", |v| to_datetime(v).is_some())
            }
            Func::ToTime => Ok(self
                .single(&input, "toTime")?
                .and_then(to_time)
                .map(Value::Time)
                .into_iter()
                .collect()),
            Func::ConvertsToTime => {
                self.converts(&input, "convertsToTime", |v| to_time(v).is_some())
            }
            Func::ToQuantity | Func::ConvertsToQuantity => {
                let unit = string_arg(&args, 0)?;
                let q = match self.single(&input, "toQuantity")? {
                    None => return Ok(Vec::new()),
                    Some(v) => to_quantity(v),
                };
                let q = match (q, unit) {
                    (Some(q), Some(u)) => q.convert_to(&u),
                    (q, None) => q,
                    (None, _) => None,
                };
                if c.func == Func::ToQuantity {
                    opt(q.map(|q| Value::Quantity(Box::new(q))))
                } else {
                    boolean(q.is_some())
                }
            }
            // ------------------------------------------------ strings
            Func::IndexOf | Func::LastIndexOf => {
                let s = match self.single_str(&input, "indexOf")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                let sub = match string_arg(&args, 0)? {
                    Some(x) => x,
                    None => return Ok(Vec::new()),
                };
                let pos = if c.func == Func::IndexOf {
                    s.find(&sub)
                } else {
                    s.rfind(&sub)
                };
                one(Value::Integer(match pos {
                    Some(b) => s[..b].chars().count() as i64,
                    None => -1,
                }))
            }
            Func::Substring => {
                let s = match self.single_str(&input, "substring")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                let start = match int_arg(&args, 0)? {
                    Some(x) => x,
                    None => return Ok(Vec::new()),
                };
                let len = int_arg(&args, 1)?;
                let n = char_len(&s) as i64;
                if start < 0 || start >= n {
                    return Ok(Vec::new());
                }
                let len = len.map(|l| l.max(0) as usize);
                one(Value::String(char_slice(&s, start as usize, len)))
            }
            Func::StartsWith | Func::EndsWith | Func::ContainsStr => {
                let s = match self.single_str(&input, "startsWith")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                let p = match string_arg(&args, 0)? {
                    Some(x) => x,
                    None => return Ok(Vec::new()),
                };
                boolean(match c.func {
                    Func::StartsWith => s.starts_with(p.as_str()),
                    Func::EndsWith => s.ends_with(p.as_str()),
                    _ => s.contains(p.as_str()),
                })
            }
            Func::Upper | Func::Lower | Func::Trim | Func::Length | Func::ToChars => {
                let s = match self.single_str(&input, "string function")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                match c.func {
                    Func::Upper => one(Value::String(s.to_uppercase())),
                    Func::Lower => one(Value::String(s.to_lowercase())),
                    Func::Trim => one(Value::String(s.trim().to_string())),
                    Func::Length => one(Value::Integer(char_len(&s) as i64)),
                    _ => Ok(s.chars().map(|ch| Value::String(ch.to_string())).collect()),
                }
            }
            Func::Replace => {
                let s = match self.single_str(&input, "replace")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                let (p, r) = match (string_arg(&args, 0)?, string_arg(&args, 1)?) {
                    (Some(p), Some(r)) => (p, r),
                    _ => return Ok(Vec::new()),
                };
                one(Value::String(s.replace(p.as_str(), &r)))
            }
            Func::Matches | Func::MatchesFull => {
                let s = match self.single_str(&input, "matches")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                match self.regex_for(c, &args, 0, c.func == Func::MatchesFull)? {
                    Some(re) => boolean(re.is_match(&s)),
                    None => Ok(Vec::new()),
                }
            }
            Func::ReplaceMatches => {
                let s = match self.single_str(&input, "replaceMatches")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                let re = match self.regex_for(c, &args, 0, false)? {
                    Some(r) => r,
                    None => return Ok(Vec::new()),
                };
                let sub = match string_arg(&args, 1)? {
                    Some(x) => x,
                    None => return Ok(Vec::new()),
                };
                if re.as_str() == "(?s)" {
                    return one(Value::String(s.into_owned()));
                }
                one(Value::String(re.replace_all(&s, sub.as_str()).into_owned()))
            }
            Func::Split => {
                let s = match self.single_str(&input, "split")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                let sep = match string_arg(&args, 0)? {
                    Some(x) => x,
                    None => return Ok(Vec::new()),
                };
                if sep.is_empty() {
                    return Ok(s.chars().map(|ch| Value::String(ch.to_string())).collect());
                }
                Ok(s.split(sep.as_str())
                    .map(|p| Value::String(p.to_string()))
                    .collect())
            }
            Func::Join => {
                let sep = string_arg(&args, 0)?.unwrap_or_default();
                let mut parts = Vec::with_capacity(input.len());
                for v in &input {
                    parts.push(ops::as_str(v, "join")?.into_owned());
                }
                one(Value::String(parts.join(&sep)))
            }
            Func::Encode | Func::Decode | Func::Escape | Func::Unescape => {
                let s = match self.single_str(&input, "encode")? {
                    Some(s) => s,
                    None => return Ok(Vec::new()),
                };
                let fmt = match string_arg(&args, 0)? {
                    Some(x) => x,
                    None => return Ok(Vec::new()),
                };
                let r = match (c.func, fmt.as_str()) {
                    (Func::Encode, "base64") => Some(b64_encode(s.as_bytes(), B64)),
                    (Func::Encode, "urlbase64") => Some(b64_encode(s.as_bytes(), B64URL)),
                    (Func::Encode, "hex") => {
                        Some(s.bytes().map(|b| format!("{:02x}", b)).collect())
                    }
                    (Func::Decode, "base64") => {
                        b64_decode(&s, B64).and_then(|b| String::from_utf8(b).ok())
                    }
                    (Func::Decode, "urlbase64") => {
                        b64_decode(&s, B64URL).and_then(|b| String::from_utf8(b).ok())
                    }
                    (Func::Decode, "hex") => hex_decode(&s).and_then(|b| String::from_utf8(b).ok()),
                    (Func::Escape, "html") => Some(html_escape(&s)),
                    (Func::Escape, "json") => Some(json_escape(&s)),
                    (Func::Unescape, "html") => Some(html_unescape(&s)),
                    (Func::Unescape, "json") => json_unescape(&s),
                    _ => None,
                };
                opt(r.map(Value::String))
            }
            // ------------------------------------------------ math
            Func::Abs
            | Func::Ceiling
            | Func::Floor
            | Func::Truncate
            | Func::Exp
            | Func::Ln
            | Func::Sqrt => {
                let v = match self.single(&input, "math function")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                self.math1(c.func, v)
            }
            Func::Round => {
                let v = match self.single(&input, "round")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                let p = int_arg(&args, 0)?.unwrap_or(0);
                if p < 0 {
                    return err("round() precision must be >= 0");
                }
                match as_dec(v) {
                    Some(d) => one(Value::Decimal(d.round(p as u32))),
                    None => err("round() requires a number"),
                }
            }
            Func::Log | Func::Power => {
                let v = match self.single(&input, "math function")? {
                    Some(v) => v.clone(),
                    None => return Ok(Vec::new()),
                };
                let a = match single_arg(&mut args, 0)? {
                    Some(a) => a,
                    None => return Ok(Vec::new()),
                };
                let (x, y) = match (as_dec(&v), as_dec(&a)) {
                    (Some(x), Some(y)) => (x, y),
                    _ => return err("math function requires numbers"),
                };
                if c.func == Func::Power {
                    if let (Prim::Int(b), Prim::Int(e)) = (v.prim(), a.prim()) {
                        if e >= 0 {
                            return opt(u32::try_from(e)
                                .ok()
                                .and_then(|e| b.checked_pow(e))
                                .map(Value::Integer));
                        }
                    }
                    if let Some(e) = y.to_i64_exact().filter(|e| (0..=64).contains(e)) {
                        let mut r = Decimal::from_i64(1);
                        for _ in 0..e {
                            r = match r.checked_mul(&x) {
                                Some(r) => r,
                                None => return Ok(Vec::new()),
                            };
                        }
                        return one(Value::Decimal(r));
                    }
                    let r = x.to_f64().powf(y.to_f64());
                    opt(Decimal::from_f64(r).map(Value::Decimal))
                } else {
                    let r = x.to_f64().ln() / y.to_f64().ln();
                    opt(Decimal::from_f64(r).map(Value::Decimal))
                }
            }
            // ------------------------------------------------ tree navigation
            Func::Children => {
                let mut out = Vec::new();
                for v in &input {
                    self.all_children(v, &mut out);
                }
                Ok(out)
            }
            Func::Descendants => {
                let mut out = Vec::new();
                let mut level = input;
                let mut depth = 0;
                while !level.is_empty() {
                    depth += 1;
                    if depth > 200 {
                        return err("descendants(): nesting too deep");
                    }
                    let mut next = Vec::new();
                    for v in &level {
                        self.all_children(v, &mut next);
                    }
                    out.extend(next.iter().cloned());
                    self.check_size(out.len())?;
                    level = next;
                }
                Ok(out)
            }
            // ------------------------------------------------ utility
            Func::Now => one(Value::DateTime(self.now())),
            Func::Today => one(Value::Date(self.now().to_date())),
            Func::TimeOfDay => {
                let n = self.now();
                one(Value::Time(Time {
                    hour: n.hour,
                    minute: n.minute,
                    second: n.second,
                    millis: n.millis,
                    precision: Precision::Millisecond,
                }))
            }
            Func::Type => Ok(input.iter().map(|v| self.type_of(v)).collect()),
            Func::Not => match self.to_bool(&input, "not")? {
                Some(b) => boolean(!b),
                None => Ok(Vec::new()),
            },
            // ------------------------------------------------ FHIR additions
            Func::Extension => {
                let url = match string_arg(&args, 0)? {
                    Some(u) => u,
                    None => return Ok(Vec::new()),
                };
                let exts = self.members(&input, "extension")?;
                Ok(exts
                    .into_iter()
                    .filter(|e| match e {
                        Value::Node(n) => {
                            n.value.and_then(|v| v.get("url")).and_then(|u| u.as_str())
                                == Some(url.as_str())
                        }
                        _ => false,
                    })
                    .collect())
            }
            Func::HasValue => boolean(
                input.len() == 1
                    && match &input[0] {
                        Value::Node(n) => n.has_primitive_value(),
                        Value::TypeInfo(_) => false,
                        _ => true,
                    },
            ),
            Func::GetValue => {
                if input.len() != 1 {
                    return Ok(Vec::new());
                }
                match &input[0] {
                    Value::Node(n) if n.has_primitive_value() => {
                        opt(prim_to_value(input[0].prim()))
                    }
                    Value::Node(_) => Ok(Vec::new()),
                    v => Ok(vec![v.clone()]),
                }
            }
            Func::Resolve => {
                let mut out = Vec::new();
                for v in &input {
                    if let Some(r) = self.resolve_one(v) {
                        out.push(r);
                    }
                }
                Ok(out)
            }
            Func::MemberOf => {
                let vs = match string_arg(&args, 0)? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                let v = match self.single(&input, "memberOf")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                let term = match self.ctx.terminology {
                    Some(t) => t,
                    None => return err("memberOf() requires a terminology provider"),
                };
                let (json, ty): (Cow<'_, Json>, &str) = match v {
                    Value::Node(n) => match n.value {
                        Some(j) => (Cow::Borrowed(j), n.type_name),
                        None => return Ok(Vec::new()),
                    },
                    other => (Cow::Owned(other.to_json()), "code"),
                };
                match term.member_of(&json, ty, &vs) {
                    Ok(r) => opt(r.map(Value::Boolean)),
                    Err(e) => err(format!("memberOf(): {}", e)),
                }
            }
            Func::Subsumes | Func::SubsumedBy => {
                let other = match single_arg(&mut args, 0)? {
                    Some(o) => o,
                    None => return Ok(Vec::new()),
                };
                let v = match self.single(&input, "subsumes")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                let term = match self.ctx.terminology {
                    Some(t) => t,
                    None => return err("subsumes() requires a terminology provider"),
                };
                match term.subsumes(&v.to_json(), &other.to_json(), c.func == Func::SubsumedBy) {
                    Ok(r) => opt(r.map(Value::Boolean)),
                    Err(e) => err(e),
                }
            }
            Func::ConformsTo => {
                let url = match string_arg(&args, 0)? {
                    Some(u) => u,
                    None => return Ok(Vec::new()),
                };
                let v = match self.single(&input, "conformsTo")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                let n = match v {
                    Value::Node(n) => *n,
                    _ => return boolean(false),
                };
                if let (Some(val), Some(j)) = (self.ctx.validator, n.value) {
                    match val.conforms_to(j, n.type_name, &url) {
                        Ok(Some(b)) => return boolean(b),
                        Ok(None) => {}
                        Err(e) => return err(e),
                    }
                }
                match url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") {
                    Some(t) if self.types.is_known_type(t) || types::builtin_base(t).is_some() => {
                        boolean(
                            !n.type_name.is_empty()
                                && types::is_subtype(self.types, n.type_name, t),
                        )
                    }
                    _ => err(format!("conformsTo(): unknown profile '{}'", url)),
                }
            }
            Func::HtmlChecks => boolean(true),
            Func::ElementDefinition | Func::Slice => Ok(Vec::new()),
            Func::CheckModifiers => Ok(input),
            Func::LowBoundary | Func::HighBoundary => {
                let high = c.func == Func::HighBoundary;
                let p = int_arg(&args, 0)?;
                let v = match self.single(&input, "boundary")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                match v.prim() {
                    Prim::Int(i) => {
                        opt(decimal_boundary(Decimal::from_i64(i), p, high).map(Value::Decimal))
                    }
                    Prim::Dec(d) => opt(decimal_boundary(d, p, high).map(Value::Decimal)),
                    Prim::Quantity(q) => opt(decimal_boundary(q.value, p, high).map(|d| {
                        Value::Quantity(Box::new(Quantity {
                            value: d,
                            unit: q.unit.clone(),
                        }))
                    })),
                    Prim::Date(d) => opt(d.boundary(p.unwrap_or(8), high, true).map(Value::Date)),
                    Prim::DateTime(d) => {
                        let r = d.boundary(p.unwrap_or(17), high, false);
                        opt(r.map(|r| {
                            if r.is_date_only() {
                                Value::Date(r)
                            } else {
                                Value::DateTime(r)
                            }
                        }))
                    }
                    Prim::Time(t) => opt(t.boundary(p.unwrap_or(9), high).map(Value::Time)),
                    _ => Ok(Vec::new()),
                }
            }
            Func::Precision => {
                let v = match self.single(&input, "precision")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                match v.prim() {
                    Prim::Dec(d) => one(Value::Integer(d.scale() as i64)),
                    Prim::Int(_) => one(Value::Integer(0)),
                    Prim::Date(d) | Prim::DateTime(d) => one(Value::Integer(d.precision_digits())),
                    Prim::Time(t) => one(Value::Integer(t.precision_digits())),
                    _ => Ok(Vec::new()),
                }
            }
            Func::Comparable => {
                let o = match single_arg(&mut args, 0)? {
                    Some(o) => o,
                    None => return Ok(Vec::new()),
                };
                let v = match self.single(&input, "comparable")? {
                    Some(v) => v,
                    None => return Ok(Vec::new()),
                };
                match (v.prim(), o.prim()) {
                    (Prim::Quantity(a), Prim::Quantity(b)) => boolean(a.comparable(&b)),
                    _ => err("comparable() requires quantities"),
                }
            }
            Func::DefineVariable => err("defineVariable() is not supported"),

            _ => err("internal error: unexpected function"),
        }
    }

    fn converts(
        &self,
        input: &[Value<'a>],
        name: &str,
        pred: impl Fn(&Value<'a>) -> bool,
    ) -> Result<Coll<'a>, EvalError> {
        match self.single(input, name)? {
            None => Ok(Vec::new()),
            Some(v) => boolean(pred(v)),
        }
    }

    fn math1(&self, func: Func, v: &Value<'a>) -> Result<Coll<'a>, EvalError> {
        let p = v.prim();
        match (func, &p) {
            (Func::Abs, Prim::Int(i)) => return opt(i.checked_abs().map(Value::Integer)),
            (Func::Abs, Prim::Dec(d)) => return one(Value::Decimal(d.abs())),
            (Func::Abs, Prim::Quantity(q)) => {
                let mut q = q.clone().into_owned();
                q.value = q.value.abs();
                return one(Value::Quantity(Box::new(q)));
            }
            (Func::Ceiling | Func::Floor | Func::Truncate, Prim::Int(i)) => {
                return one(Value::Integer(*i))
            }
            _ => {}
        }
        let d = match as_dec(v) {
            Some(d) => d,
            None => {
                return err(format!(
                    "{:?}() requires a number, got {}",
                    func,
                    ops::label(v)
                ))
            }
        };
        let int = |x: Option<i128>| opt(x.and_then(|x| i64::try_from(x).ok()).map(Value::Integer));
        match func {
            Func::Ceiling => int(d.ceil()),
            Func::Floor => int(d.floor()),
            Func::Truncate => int(d.truncate(0).to_i64_exact().map(|x| x as i128)),
            Func::Exp => opt(Decimal::from_f64(d.to_f64().exp()).map(Value::Decimal)),
            Func::Ln => {
                if d.is_negative() || d.is_zero() {
                    return Ok(Vec::new());
                }
                opt(Decimal::from_f64(d.to_f64().ln()).map(Value::Decimal))
            }
            Func::Sqrt => {
                if d.is_negative() {
                    return Ok(Vec::new());
                }
                opt(Decimal::from_f64(d.to_f64().sqrt()).map(Value::Decimal))
            }
            _ => err("unsupported math function"),
        }
    }

    fn sort(&self, input: Coll<'a>, c: &Call, f: Frame<'_, 'a>) -> Result<Coll<'a>, EvalError> {
        if c.args.is_empty() {
            let mut v = input;
            let mut error = None;
            merge_sort(&mut v, |a, b| match ops::compare_values(a, b) {
                Ok(Some(o)) => o,
                Ok(None) => Ordering::Equal,
                Err(e) => {
                    error.get_or_insert(e);
                    Ordering::Equal
                }
            });
            return match error {
                Some(e) => Err(e),
                None => Ok(v),
            };
        }
        let mut keyed = Vec::with_capacity(input.len());
        for (i, item) in input.into_iter().enumerate() {
            let mut keys = Vec::with_capacity(c.args.len());
            for a in &c.args {
                let (expr, desc) = match a {
                    Ast::Neg(inner) => (inner.as_ref(), true),
                    other => (other, false),
                };
                let k = self.eval(expr, Self::iter_frame(std::slice::from_ref(&item), i, f))?;
                keys.push((k.into_iter().next(), desc));
            }
            keyed.push((keys, item));
        }
        let mut error = None;
        merge_sort(&mut keyed, |(ka, _), (kb, _)| {
            for ((a, desc), (b, _)) in ka.iter().zip(kb.iter()) {
                let o = match (a, b) {
                    (None, None) => Ordering::Equal,
                    // empty keys sort first in either direction
                    (None, Some(_)) => return Ordering::Less,
                    (Some(_), None) => return Ordering::Greater,
                    (Some(x), Some(y)) => match ops::compare_values(x, y) {
                        Ok(Some(o)) => o,
                        Ok(None) => Ordering::Equal,
                        Err(e) => {
                            error.get_or_insert(e);
                            Ordering::Equal
                        }
                    },
                };
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        match error {
            Some(e) => Err(e),
            None => Ok(keyed.into_iter().map(|(_, v)| v).collect()),
        }
    }

    // ---------------------------------------------------------------- resolve()

    fn resolve_one(&self, v: &Value<'a>) -> Option<Value<'a>> {
        let reference: Cow<'a, str> = match v {
            Value::Node(n) => match n.value? {
                Json::String(s) => Cow::Borrowed(s.as_str()),
                Json::Object(m) => Cow::Borrowed(m.get("reference")?.as_str()?),
                _ => return None,
            },
            Value::String(s) => Cow::Owned(s.clone()),
            _ => return None,
        };
        let r: &str = &reference;
        if let Some(id) = r.strip_prefix('#') {
            let candidates = [self.resource.as_ref(), self.root_resource.as_ref()];
            for res in candidates.into_iter().flatten() {
                if let Value::Node(n) = res {
                    let j = n.value?;
                    if id.is_empty() {
                        return Some(res.clone());
                    }
                    if let Some(Json::Array(cs)) = j.get("contained") {
                        for c in cs {
                            if c.get("id").and_then(|x| x.as_str()) == Some(id) {
                                return Some(crate::eval::resource_node(c));
                            }
                        }
                    }
                }
            }
            return None;
        }
        // enclosing bundles
        let mut bundles: Vec<&'a Json> = Vec::new();
        if let Some(b) = self.ctx.bundle {
            bundles.push(b);
        }
        for cand in [self.root_resource.as_ref(), self.resource.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Value::Node(n) = cand {
                if let Some(j) = n.value {
                    if j.get("resourceType").and_then(|t| t.as_str()) == Some("Bundle") {
                        bundles.push(j);
                    }
                }
            }
        }
        let path = r.split("/_history/").next().unwrap_or(r);
        let segs: Vec<&str> = path.rsplitn(3, '/').collect();
        let type_id = if segs.len() >= 2 {
            Some((segs[1], segs[0]))
        } else {
            None
        };
        for b in bundles {
            if let Some(Json::Array(entries)) = b.get("entry") {
                for e in entries {
                    let res = match e.get("resource") {
                        Some(r) => r,
                        None => continue,
                    };
                    if e.get("fullUrl").and_then(|u| u.as_str()) == Some(r) {
                        return Some(crate::eval::resource_node(res));
                    }
                    if let Some((t, id)) = type_id {
                        if res.get("resourceType").and_then(|x| x.as_str()) == Some(t)
                            && res.get("id").and_then(|x| x.as_str()) == Some(id)
                        {
                            return Some(crate::eval::resource_node(res));
                        }
                    }
                }
            }
        }
        if let Some(res) = self.ctx.resolver {
            if let Some(j) = res.resolve(r) {
                return Some(crate::eval::resource_node(j));
            }
        }
        if self.ctx.reference_stubs {
            if let Cow::Borrowed(rb) = reference {
                let path = rb.split("/_history/").next().unwrap_or(rb);
                let mut it = path.rsplitn(3, '/');
                let _id = it.next()?;
                let t = it.next()?;
                if t.starts_with(|c: char| c.is_ascii_uppercase()) && self.types.is_resource_type(t)
                {
                    return Some(Value::Node(NodeRef {
                        value: None,
                        ext: None,
                        type_name: t,
                    }));
                }
            }
        }
        None
    }
}

/// Stable merge sort that tolerates comparators which are not total orders
/// (std's sort may panic on those).
fn merge_sort<T: Clone>(v: &mut Vec<T>, mut cmp: impl FnMut(&T, &T) -> Ordering) {
    let n = v.len();
    if n < 2 {
        return;
    }
    let mut src: Vec<T> = std::mem::take(v);
    let mut width = 1;
    while width < n {
        let mut dst: Vec<T> = Vec::with_capacity(n);
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j) = (lo, mid);
            while i < mid && j < hi {
                if cmp(&src[j], &src[i]) == Ordering::Less {
                    dst.push(src[j].clone());
                    j += 1;
                } else {
                    dst.push(src[i].clone());
                    i += 1;
                }
            }
            dst.extend_from_slice(&src[i..mid]);
            dst.extend_from_slice(&src[j..hi]);
            lo = hi;
        }
        src = dst;
        width *= 2;
    }
    *v = src;
}

/// Parses a FHIR Quantity JSON into a System quantity (used by callers).
pub fn quantity_of(v: &Json) -> Option<Quantity> {
    quantity_from_json(v)
}
