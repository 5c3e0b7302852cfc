//! Quantities with UCUM and calendar-duration units, including a small UCUM
//! unit parser (prefixes, exponents, `.`/`/` products, parentheses,
//! annotations) used for conversion between commensurable units.

use crate::decimal::Decimal;
use crate::temporal::CalUnit;
use std::cmp::Ordering;
use std::fmt;

/// A FHIRPath `Quantity`: a decimal value and a unit. Calendar-duration
/// keywords (`year`, `month`, ... `millisecond`) are stored in singular form;
/// all other units are UCUM codes.
#[derive(Clone, Debug)]
pub struct Quantity {
    /// Numeric value.
    pub value: Decimal,
    /// UCUM code or calendar keyword.
    pub unit: String,
}

const CALENDAR: &[(&str, &str, CalUnit)] = &[
    ("year", "years", CalUnit::Year),
    ("month", "months", CalUnit::Month),
    ("week", "weeks", CalUnit::Week),
    ("day", "days", CalUnit::Day),
    ("hour", "hours", CalUnit::Hour),
    ("minute", "minutes", CalUnit::Minute),
    ("second", "seconds", CalUnit::Second),
    ("millisecond", "milliseconds", CalUnit::Millisecond),
];

/// Singular calendar keyword for `word` (singular or plural), if it is one.
pub fn calendar_keyword(word: &str) -> Option<&'static str> {
    CALENDAR
        .iter()
        .find(|(s, p, _)| *s == word || *p == word)
        .map(|(s, _, _)| *s)
}

/// Dimension vector: m, g, s, A, K, mol, cd, calendar-month.
type Dims = [i8; 8];

struct Atom {
    code: &'static str,
    factor: &'static str,
    dims: Dims,
    metric: bool,
}

const fn atom(code: &'static str, factor: &'static str, dims: Dims, metric: bool) -> Atom {
    Atom {
        code,
        factor,
        dims,
        metric,
    }
}

const ATOMS: &[Atom] = &[
    atom("m", "1", [1, 0, 0, 0, 0, 0, 0, 0], true),
    atom("g", "1", [0, 1, 0, 0, 0, 0, 0, 0], true),
    atom("s", "1", [0, 0, 1, 0, 0, 0, 0, 0], true),
    atom("A", "1", [0, 0, 0, 1, 0, 0, 0, 0], true),
    atom("K", "1", [0, 0, 0, 0, 1, 0, 0, 0], true),
    atom("mol", "1", [0, 0, 0, 0, 0, 1, 0, 0], true),
    atom("cd", "1", [0, 0, 0, 0, 0, 0, 1, 0], true),
    atom("L", "0.001", [3, 0, 0, 0, 0, 0, 0, 0], true),
    atom("l", "0.001", [3, 0, 0, 0, 0, 0, 0, 0], true),
    atom("min", "60", [0, 0, 1, 0, 0, 0, 0, 0], false),
    atom("h", "3600", [0, 0, 1, 0, 0, 0, 0, 0], false),
    atom("d", "86400", [0, 0, 1, 0, 0, 0, 0, 0], false),
    atom("wk", "604800", [0, 0, 1, 0, 0, 0, 0, 0], false),
    atom("mo", "2629800", [0, 0, 1, 0, 0, 0, 0, 0], false),
    atom("a", "31557600", [0, 0, 1, 0, 0, 0, 0, 0], false),
    atom("Hz", "1", [0, 0, -1, 0, 0, 0, 0, 0], true),
    atom("Bq", "1", [0, 0, -1, 0, 0, 0, 0, 0], true),
    atom("N", "1000", [1, 1, -2, 0, 0, 0, 0, 0], true),
    atom("Pa", "1000", [-1, 1, -2, 0, 0, 0, 0, 0], true),
    atom("bar", "100000000", [-1, 1, -2, 0, 0, 0, 0, 0], true),
    atom("J", "1000", [2, 1, -2, 0, 0, 0, 0, 0], true),
    atom("cal", "4184", [2, 1, -2, 0, 0, 0, 0, 0], true),
    atom("W", "1000", [2, 1, -3, 0, 0, 0, 0, 0], true),
    atom("C", "1", [0, 0, 1, 1, 0, 0, 0, 0], true),
    atom("V", "1000", [2, 1, -3, -1, 0, 0, 0, 0], true),
    atom("Gy", "1", [2, 0, -2, 0, 0, 0, 0, 0], true),
    atom("Sv", "1", [2, 0, -2, 0, 0, 0, 0, 0], true),
    atom("kat", "1", [0, 0, -1, 0, 0, 1, 0, 0], true),
    atom(
        "U",
        "0.000000016666666666666667",
        [0, 0, -1, 0, 0, 1, 0, 0],
        true,
    ),
    atom("eq", "1", [0, 0, 0, 0, 0, 1, 0, 0], true),
    atom("osm", "1", [0, 0, 0, 0, 0, 1, 0, 0], true),
    atom("t", "1000000", [0, 1, 0, 0, 0, 0, 0, 0], true),
    atom("m[Hg]", "133322387.415", [-1, 1, -2, 0, 0, 0, 0, 0], true),
    atom("m[H2O]", "9806650", [-1, 1, -2, 0, 0, 0, 0, 0], true),
    atom("[in_i]", "0.0254", [1, 0, 0, 0, 0, 0, 0, 0], false),
    atom("[ft_i]", "0.3048", [1, 0, 0, 0, 0, 0, 0, 0], false),
    atom("[yd_i]", "0.9144", [1, 0, 0, 0, 0, 0, 0, 0], false),
    atom("[mi_i]", "1609.344", [1, 0, 0, 0, 0, 0, 0, 0], false),
    atom("[lb_av]", "453.59237", [0, 1, 0, 0, 0, 0, 0, 0], false),
    atom("[oz_av]", "28.349523125", [0, 1, 0, 0, 0, 0, 0, 0], false),
    atom("[gr]", "0.06479891", [0, 1, 0, 0, 0, 0, 0, 0], false),
    atom("[ppm]", "0.000001", [0; 8], false),
    atom("[ppb]", "0.000000001", [0; 8], false),
    atom("%", "0.01", [0; 8], false),
];

const PREFIXES: &[(&str, i32)] = &[
    ("Y", 24),
    ("Z", 21),
    ("E", 18),
    ("P", 15),
    ("T", 12),
    ("G", 9),
    ("M", 6),
    ("k", 3),
    ("h", 2),
    ("da", 1),
    ("d", -1),
    ("c", -2),
    ("m", -3),
    ("u", -6),
    ("n", -9),
    ("p", -12),
    ("f", -15),
    ("a", -18),
    ("z", -21),
    ("y", -24),
];

/// A unit reduced to base units: value_in_base = value * num / den.
#[derive(Clone, Debug)]
struct Canon {
    num: Decimal,
    den: Decimal,
    dims: Dims,
}

fn pow10_dec(e: i32) -> Decimal {
    if e >= 0 {
        Decimal::new(10i128.pow(e as u32), 0)
    } else {
        Decimal::new(1, (-e) as u32)
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::parse(s).unwrap_or(Decimal::from_i64(1))
}

impl Canon {
    fn one() -> Canon {
        Canon {
            num: Decimal::from_i64(1),
            den: Decimal::from_i64(1),
            dims: [0; 8],
        }
    }
    fn mul(&self, o: &Canon) -> Option<Canon> {
        let mut dims = self.dims;
        for (d, od) in dims.iter_mut().zip(o.dims.iter()) {
            *d = d.checked_add(*od)?;
        }
        Some(Canon {
            num: self.num.checked_mul(&o.num)?,
            den: self.den.checked_mul(&o.den)?,
            dims,
        })
    }
    fn inv(&self) -> Option<Canon> {
        let mut dims = self.dims;
        for d in dims.iter_mut() {
            *d = d.checked_neg()?;
        }
        Some(Canon {
            num: self.den,
            den: self.num,
            dims,
        })
    }

    fn pow(&self, e: i32) -> Option<Canon> {
        let mut r = Canon::one();
        let base = if e < 0 { self.inv()? } else { self.clone() };
        for _ in 0..e.unsigned_abs().min(16) {
            r = r.mul(&base)?;
        }
        Some(r)
    }
}

struct UnitParser<'s> {
    s: &'s [u8],
    i: usize,
    depth: u32,
}

impl<'s> UnitParser<'s> {
    fn term(&mut self) -> Option<Canon> {
        self.depth += 1;
        if self.depth > 16 {
            return None;
        }
        let mut acc = if self.s.get(self.i) == Some(&b'/') {
            Canon::one()
        } else {
            self.component()?
        };
        while let Some(&op) = self.s.get(self.i) {
            match op {
                b'.' => {
                    self.i += 1;
                    let c = self.component()?;
                    acc = acc.mul(&c)?;
                }
                b'/' => {
                    self.i += 1;
                    let c = self.component()?;
                    acc = acc.mul(&c.inv()?)?;
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Some(acc)
    }

    fn skip_annotation(&mut self) -> Option<bool> {
        if self.s.get(self.i) == Some(&b'{') {
            let close = self.s[self.i..].iter().position(|&b| b == b'}')?;
            self.i += close + 1;
            return Some(true);
        }
        Some(false)
    }

    fn component(&mut self) -> Option<Canon> {
        if self.s.get(self.i) == Some(&b'(') {
            self.i += 1;
            let t = self.term()?;
            if self.s.get(self.i) != Some(&b')') {
                return None;
            }
            self.i += 1;
            let e = self.exponent();
            return t.pow(e.unwrap_or(1));
        }
        if self.skip_annotation()? {
            return Some(Canon::one());
        }
        let start = self.i;
        let mut bracket = 0;
        while let Some(&b) = self.s.get(self.i) {
            match b {
                b'[' => bracket += 1,
                b']' => bracket -= 1,
                b'.' | b'/' | b'(' | b')' | b'{' if bracket == 0 => break,
                _ => {}
            }
            self.i += 1;
        }
        let run = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        self.skip_annotation()?;
        if run.is_empty() {
            return None;
        }
        // pure number: a numeric factor (e.g. "1", "10*3", "10^3")
        if let Some(rest) = run.strip_prefix("10*").or_else(|| run.strip_prefix("10^")) {
            let e: i32 = rest.parse().ok()?;
            if e.abs() > 30 {
                return None;
            }
            return Some(Canon {
                num: pow10_dec(e),
                den: Decimal::from_i64(1),
                dims: [0; 8],
            });
        }
        if run.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Canon {
                num: Decimal::parse(run)?,
                den: Decimal::from_i64(1),
                dims: [0; 8],
            });
        }
        // split a trailing exponent
        let bytes = run.as_bytes();
        let mut j = bytes.len();
        while j > 0 && bytes[j - 1].is_ascii_digit() {
            j -= 1;
        }
        if j > 0 && j < bytes.len() && (bytes[j - 1] == b'-' || bytes[j - 1] == b'+') {
            j -= 1;
        }
        let (sym, exp) = if j > 0 && j < bytes.len() {
            (&run[..j], run[j..].parse::<i32>().ok()?)
        } else {
            (run, 1)
        };
        let base = simple_unit(sym)?;
        base.pow(exp)
    }

    fn exponent(&mut self) -> Option<i32> {
        let start = self.i;
        if matches!(self.s.get(self.i), Some(b'-') | Some(b'+')) {
            self.i += 1;
        }
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }
}

fn simple_unit(sym: &str) -> Option<Canon> {
    if let Some(a) = ATOMS.iter().find(|a| a.code == sym) {
        return Some(Canon {
            num: dec(a.factor),
            den: Decimal::from_i64(1),
            dims: a.dims,
        });
    }
    for (p, e) in PREFIXES {
        if let Some(rest) = sym.strip_prefix(p) {
            if let Some(a) = ATOMS.iter().find(|a| a.code == rest && a.metric) {
                let f = dec(a.factor).checked_mul(&pow10_dec(*e))?;
                return Some(Canon {
                    num: f,
                    den: Decimal::from_i64(1),
                    dims: a.dims,
                });
            }
        }
    }
    None
}

fn parse_unit(unit: &str) -> Option<Canon> {
    match unit {
        "year" => {
            return Some(Canon {
                num: Decimal::from_i64(12),
                den: Decimal::from_i64(1),
                dims: [0, 0, 0, 0, 0, 0, 0, 1],
            })
        }
        "month" => {
            return Some(Canon {
                num: Decimal::from_i64(1),
                den: Decimal::from_i64(1),
                dims: [0, 0, 0, 0, 0, 0, 0, 1],
            })
        }
        _ => {}
    }
    let unit = calendar_ucum(unit).unwrap_or(unit);
    if unit.is_empty() {
        return Some(Canon::one());
    }
    let mut p = UnitParser {
        s: unit.as_bytes(),
        i: 0,
        depth: 0,
    };
    let c = p.term()?;
    if p.i != unit.len() {
        return None;
    }
    Some(c)
}

/// UCUM code equivalent to a calendar keyword below a month.
fn calendar_ucum(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "week" => "wk",
        "day" => "d",
        "hour" => "h",
        "minute" => "min",
        "second" => "s",
        "millisecond" => "ms",
        _ => return None,
    })
}

/// True when `unit` is a valid (supported) UCUM unit or calendar keyword.
pub fn is_valid_unit(unit: &str) -> bool {
    parse_unit(unit).is_some()
}

impl Quantity {
    /// Creates a quantity, normalising plural calendar keywords.
    pub fn new(value: Decimal, unit: &str) -> Quantity {
        let unit = calendar_keyword(unit).unwrap_or(unit);
        Quantity {
            value,
            unit: unit.to_string(),
        }
    }

    /// True when the unit is a calendar keyword.
    pub fn is_calendar(&self) -> bool {
        calendar_keyword(&self.unit).is_some()
    }

    /// The calendar unit for date arithmetic; `Err` for units that are not
    /// time-valued or are ambiguous (`'a'`, `'mo'`).
    pub fn cal_unit(&self) -> Result<CalUnit, String> {
        if let Some((_, _, u)) = CALENDAR.iter().find(|(s, _, _)| *s == self.unit) {
            return Ok(*u);
        }
        Ok(match self.unit.as_str() {
            "wk" => CalUnit::Week,
            "d" => CalUnit::Day,
            "h" => CalUnit::Hour,
            "min" => CalUnit::Minute,
            "s" => CalUnit::Second,
            "ms" => CalUnit::Millisecond,
            "a" | "mo" => {
                return Err(format!(
                    "UCUM unit '{}' is not a calendar duration; use a calendar keyword",
                    self.unit
                ))
            }
            u => return Err(format!("unit '{}' is not a time-valued unit", u)),
        })
    }

    fn canon_value(&self) -> Option<(Decimal, Dims)> {
        let c = parse_unit(&self.unit)?;
        let v = self.value.checked_mul(&c.num)?;
        let v = if c.den == Decimal::from_i64(1) {
            v
        } else {
            v.checked_div(&c.den)?
        };
        Some((v, c.dims))
    }

    /// Compares two quantities, converting units; `None` when incommensurable.
    pub fn compare(&self, o: &Quantity) -> Option<Ordering> {
        if self.unit == o.unit {
            return Some(self.value.cmp_num(&o.value));
        }
        let (a, da) = self.canon_value()?;
        let (b, db) = o.canon_value()?;
        if da != db {
            return None;
        }
        Some(a.cmp_num(&b))
    }

    /// Equivalence: commensurable and equal at the lesser precision.
    pub fn equivalent(&self, o: &Quantity) -> bool {
        let (a, b) = if self.unit == o.unit {
            (self.value, o.value)
        } else {
            match (self.canon_value(), o.canon_value()) {
                (Some((a, da)), Some((b, db))) if da == db => (a, b),
                _ => return false,
            }
        };
        let s = a.scale().min(b.scale());
        a.round(s) == b.round(s)
    }

    /// True when both units can be converted into each other.
    pub fn comparable(&self, o: &Quantity) -> bool {
        match (parse_unit(&self.unit), parse_unit(&o.unit)) {
            (Some(a), Some(b)) => a.dims == b.dims,
            _ => false,
        }
    }

    /// Converts to `unit` when commensurable.
    pub fn convert_to(&self, unit: &str) -> Option<Quantity> {
        if self.unit == unit {
            return Some(self.clone());
        }
        let (v, d) = self.canon_value()?;
        let c = parse_unit(unit)?;
        if c.dims != d {
            return None;
        }
        let nv = v.checked_mul(&c.den)?.checked_div(&c.num)?;
        Some(Quantity::new(nv, unit))
    }

    fn ucum_unit(&self) -> &str {
        calendar_ucum(&self.unit).unwrap_or(match self.unit.as_str() {
            "year" => "a",
            "month" => "mo",
            u => u,
        })
    }

    /// Product of two quantities.
    pub fn mul(&self, o: &Quantity) -> Option<Quantity> {
        let v = self.value.checked_mul(&o.value)?;
        let (a, b) = (self.ucum_unit(), o.ucum_unit());
        let unit = if b == "1" {
            a.to_string()
        } else if a == "1" {
            b.to_string()
        } else if b.contains('/') {
            format!("{}.({})", a, b)
        } else {
            format!("{}.{}", a, b)
        };
        Some(Quantity { value: v, unit })
    }

    /// Quotient of two quantities.
    pub fn div(&self, o: &Quantity) -> Option<Quantity> {
        let v = self.value.checked_div(&o.value)?;
        let (a, b) = (self.ucum_unit(), o.ucum_unit());
        let unit = if b == "1" {
            a.to_string()
        } else if a == b {
            "1".to_string()
        } else if b.contains('/') || b.contains('.') {
            format!("{}/({})", a, b)
        } else {
            format!("{}/{}", a, b)
        };
        Some(Quantity { value: v, unit })
    }

    /// Sum of two quantities (result in the unit of `self`).
    pub fn add(&self, o: &Quantity, negate: bool) -> Option<Quantity> {
        let other = o.convert_to(&self.unit)?;
        let ov = if negate {
            other.value.neg()
        } else {
            other.value
        };
        Some(Quantity {
            value: self.value.checked_add(&ov)?,
            unit: self.unit.clone(),
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_calendar() {
            write!(f, "{} {}", self.value, self.unit)
        } else {
            write!(f, "{} '{}'", self.value, self.unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &str, u: &str) -> Quantity {
        Quantity::new(Decimal::parse(v).unwrap(), u)
    }

    #[test]
    fn conversions() {
        assert_eq!(
            q("4.0000", "g").compare(&q("4000.0", "mg")),
            Some(Ordering::Equal)
        );
        assert!(q("4", "g").equivalent(&q("4040", "mg")));
        assert_eq!(
            q("7", "days").compare(&q("1", "week")),
            Some(Ordering::Equal)
        );
        assert_eq!(q("7", "days").compare(&q("1", "wk")), Some(Ordering::Equal));
        assert_eq!(q("1", "a").compare(&q("1", "year")), None);
        let p = q("2.0", "cm").mul(&q("2.0", "m")).unwrap();
        assert_eq!(p.compare(&q("0.040", "m2")), Some(Ordering::Equal));
        let r = q("4.0", "g").div(&q("2.0", "m")).unwrap();
        assert_eq!(r.compare(&q("2", "g/m")), Some(Ordering::Equal));
        assert!(q("1", "cm").comparable(&q("1", "[in_i]")));
        assert!(!q("1", "cm").comparable(&q("1", "[s]")));
        assert!(!q("1", "cm").comparable(&q("1", "s")));
        assert_eq!(
            q("1", "mm[Hg]").compare(&q("1", "mm[Hg]")),
            Some(Ordering::Equal)
        );
        assert!(is_valid_unit("mg/dL"));
        assert!(is_valid_unit("kg/m2"));
        assert!(is_valid_unit("/min"));
        assert!(is_valid_unit("{beats}/min"));
    }
}
