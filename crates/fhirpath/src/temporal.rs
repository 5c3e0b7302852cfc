//! Partial-precision dates, date-times and times with FHIRPath comparison
//! and calendar arithmetic semantics.

use std::cmp::Ordering;
use std::fmt::Write as _;

/// How much of a date/time value is specified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYY-MM`
    Month,
    /// `YYYY-MM-DD`
    Day,
    /// `...Thh`
    Hour,
    /// `...Thh:mm`
    Minute,
    /// `...Thh:mm:ss`
    Second,
    /// `...Thh:mm:ss.fff`
    Millisecond,
}

impl Precision {
    fn level(self) -> usize {
        match self {
            Precision::Year => 0,
            Precision::Month => 1,
            Precision::Day => 2,
            Precision::Hour => 3,
            Precision::Minute => 4,
            Precision::Second | Precision::Millisecond => 5,
        }
    }
}

/// A (possibly partial) date or date-time. Used for both `Date` (precision at
/// most [`Precision::Day`], no timezone) and `DateTime` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// Year (0001-9999 for valid values).
    pub year: i32,
    /// Month 1-12 (1 when not specified).
    pub month: u8,
    /// Day 1-31 (1 when not specified).
    pub day: u8,
    /// Hour 0-23.
    pub hour: u8,
    /// Minute 0-59.
    pub minute: u8,
    /// Second 0-59.
    pub second: u8,
    /// Milliseconds 0-999.
    pub millis: u16,
    /// Specified precision.
    pub precision: Precision,
    /// Timezone offset in minutes east of UTC.
    pub tz: Option<i16>,
}

/// A (possibly partial) time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Time {
    /// Hour 0-23.
    pub hour: u8,
    /// Minute 0-59.
    pub minute: u8,
    /// Second 0-59.
    pub second: u8,
    /// Milliseconds.
    pub millis: u16,
    /// Specified precision (Hour..Millisecond).
    pub precision: Precision,
}

/// Calendar units usable in date arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalUnit {
    /// year
    Year,
    /// month
    Month,
    /// week
    Week,
    /// day
    Day,
    /// hour
    Hour,
    /// minute
    Minute,
    /// second
    Second,
    /// millisecond
    Millisecond,
}

pub(crate) fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
        _ => 30,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = y as i64 - if m <= 2 { 1 } else { 0 };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((y + if m <= 2 { 1 } else { 0 }) as i32, m, d)
}

struct Cursor<'s> {
    s: &'s [u8],
    i: usize,
}

impl<'s> Cursor<'s> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        if self.i + n > self.s.len() {
            return None;
        }
        let mut v = 0u32;
        for k in 0..n {
            let b = self.s[self.i + k];
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (b - b'0') as u32;
        }
        self.i += n;
        Some(v)
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
}

/// Parses `hh(:mm(:ss(.fff+)?)?)?` into the given fields; returns precision.
fn parse_time_part(
    c: &mut Cursor<'_>,
    require_minutes: bool,
) -> Option<(u8, u8, u8, u16, Precision)> {
    let h = c.digits(2)?;
    if h > 23 {
        return None;
    }
    if !c.eat(b':') {
        if require_minutes {
            return None;
        }
        return Some((h as u8, 0, 0, 0, Precision::Hour));
    }
    let mi = c.digits(2)?;
    if mi > 59 {
        return None;
    }
    if !c.eat(b':') {
        return Some((h as u8, mi as u8, 0, 0, Precision::Minute));
    }
    let s = c.digits(2)?;
    if s > 59 {
        return None;
    }
    if c.peek() == Some(b'.') && c.s.get(c.i + 1).is_some_and(|b| b.is_ascii_digit()) {
        c.i += 1;
        let start = c.i;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
        }
        let frac = &c.s[start..c.i];
        let mut ms = 0u32;
        for k in 0..3 {
            ms = ms * 10 + frac.get(k).map(|b| (b - b'0') as u32).unwrap_or(0);
        }
        return Some((
            h as u8,
            mi as u8,
            s as u8,
            ms as u16,
            Precision::Millisecond,
        ));
    }
    Some((h as u8, mi as u8, s as u8, 0, Precision::Second))
}

fn parse_tz(c: &mut Cursor<'_>) -> Option<Option<i16>> {
    match c.peek() {
        Some(b'Z') => {
            c.i += 1;
            Some(Some(0))
        }
        Some(sign @ (b'+' | b'-')) => {
            c.i += 1;
            let h = c.digits(2)?;
            if !c.eat(b':') {
                return None;
            }
            let m = c.digits(2)?;
            if h > 14 || m > 59 {
                return None;
            }
            let off = (h * 60 + m) as i16;
            Some(Some(if sign == b'-' { -off } else { off }))
        }
        _ => Some(None),
    }
}

fn parse_date_fields(c: &mut Cursor<'_>) -> Option<DateTime> {
    let y = c.digits(4)?;
    let mut dt = DateTime {
        year: y as i32,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        millis: 0,
        precision: Precision::Year,
        tz: None,
    };
    if c.peek() == Some(b'-') && c.s.get(c.i + 1).is_some_and(|b| b.is_ascii_digit()) {
        c.i += 1;
        let m = c.digits(2)?;
        if !(1..=12).contains(&m) {
            return None;
        }
        dt.month = m as u8;
        dt.precision = Precision::Month;
        if c.peek() == Some(b'-') && c.s.get(c.i + 1).is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
            let d = c.digits(2)?;
            if d < 1 || d > days_in_month(dt.year, dt.month) as u32 {
                return None;
            }
            dt.day = d as u8;
            dt.precision = Precision::Day;
        }
    }
    Some(dt)
}

impl DateTime {
    /// Parses a date `YYYY(-MM(-DD)?)?` (whole string).
    pub fn parse_date(s: &str) -> Option<DateTime> {
        let mut c = Cursor {
            s: s.as_bytes(),
            i: 0,
        };
        let dt = parse_date_fields(&mut c)?;
        if c.done() {
            Some(dt)
        } else {
            None
        }
    }

    /// Parses a date-time. `literal` selects FHIRPath literal syntax, which
    /// permits a trailing `T` (`@2015T`) and hour-only times.
    pub fn parse_datetime(s: &str, literal: bool) -> Option<DateTime> {
        let mut c = Cursor {
            s: s.as_bytes(),
            i: 0,
        };
        let mut dt = parse_date_fields(&mut c)?;
        if c.eat(b'T') {
            if c.done() {
                return if literal { Some(dt) } else { None };
            }
            if dt.precision != Precision::Day {
                return None;
            }
            let (h, mi, se, ms, p) = parse_time_part(&mut c, false)?;
            dt.hour = h;
            dt.minute = mi;
            dt.second = se;
            dt.millis = ms;
            dt.precision = p;
            dt.tz = parse_tz(&mut c)?;
        }
        if c.done() {
            Some(dt)
        } else {
            None
        }
    }

    /// Parses a FHIR `dateTime`/`instant`/`date` string as a DateTime.
    pub fn parse_fhir(s: &str) -> Option<DateTime> {
        Self::parse_datetime(s, true)
    }

    /// True when the precision is a date-only precision.
    pub fn is_date_only(&self) -> bool {
        self.precision <= Precision::Day
    }

    /// Drops everything past day precision.
    pub fn to_date(&self) -> DateTime {
        let mut d = *self;
        if d.precision > Precision::Day {
            d.precision = Precision::Day;
        }
        d.hour = 0;
        d.minute = 0;
        d.second = 0;
        d.millis = 0;
        d.tz = None;
        d
    }

    fn epoch_ms_local(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        ((days * 24 + self.hour as i64) * 60 + self.minute as i64) * 60_000
            + self.second as i64 * 1000
            + self.millis as i64
    }

    fn set_from_epoch_ms_local(&mut self, ms: i64) {
        let days = ms.div_euclid(86_400_000);
        let rem = ms.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        self.year = y;
        self.month = m;
        self.day = d;
        self.hour = (rem / 3_600_000) as u8;
        self.minute = ((rem / 60_000) % 60) as u8;
        self.second = ((rem / 1000) % 60) as u8;
        self.millis = (rem % 1000) as u16;
    }

    /// The same instant expressed in UTC (no-op without timezone).
    pub fn to_utc(&self) -> DateTime {
        match self.tz {
            Some(off) if off != 0 => {
                let mut d = *self;
                let ms = self.epoch_ms_local() - off as i64 * 60_000;
                d.set_from_epoch_ms_local(ms);
                d.tz = Some(0);
                d
            }
            _ => *self,
        }
    }

    fn fields(&self) -> [i64; 6] {
        [
            self.year as i64,
            self.month as i64,
            self.day as i64,
            self.hour as i64,
            self.minute as i64,
            self.second as i64 * 1000 + self.millis as i64,
        ]
    }

    /// FHIRPath comparison: `None` when the answer depends on unknown precision.
    pub fn compare(&self, other: &DateTime) -> Option<Ordering> {
        let both_time = self.precision >= Precision::Hour && other.precision >= Precision::Hour;
        let (a, b) = match (self.tz, other.tz) {
            (Some(_), Some(_)) if both_time => (self.to_utc(), other.to_utc()),
            (Some(_), None) | (None, Some(_)) if both_time => return None,
            _ => (*self, *other),
        };
        let la = a.precision.level();
        let lb = b.precision.level();
        let fa = a.fields();
        let fb = b.fields();
        for i in 0..=la.min(lb) {
            match fa[i].cmp(&fb[i]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        if la == lb {
            Some(Ordering::Equal)
        } else {
            None
        }
    }

    /// Adds `n` calendar units. `None` when out of range.
    pub fn add(&self, n: i64, unit: CalUnit) -> Option<DateTime> {
        let mut d = *self;
        // convert sub-precision units to the value's precision
        let (n, unit) = match (unit, d.precision) {
            (CalUnit::Week, _) => (n.checked_mul(7)?, CalUnit::Day),
            (u, _) => (n, u),
        };
        let unit_ms: Option<i64> = match unit {
            CalUnit::Day => Some(86_400_000),
            CalUnit::Hour => Some(3_600_000),
            CalUnit::Minute => Some(60_000),
            CalUnit::Second => Some(1000),
            CalUnit::Millisecond => Some(1),
            _ => None,
        };
        match unit_ms {
            None => {
                let months = if unit == CalUnit::Year {
                    n.checked_mul(12)?
                } else {
                    n
                };
                let total = (d.year as i64) * 12 + (d.month as i64 - 1) + months;
                let y = total.div_euclid(12);
                if !(1..=9999).contains(&y) {
                    return None;
                }
                d.year = y as i32;
                d.month = (total.rem_euclid(12) + 1) as u8;
                let dim = days_in_month(d.year, d.month);
                if d.day > dim {
                    d.day = dim;
                }
            }
            Some(ums) => {
                let total_ms = n.checked_mul(ums)?;
                match d.precision {
                    Precision::Year => {
                        let years = total_ms / (365 * 86_400_000);
                        return d.add(years, CalUnit::Year);
                    }
                    Precision::Month => {
                        let months = total_ms / (30 * 86_400_000);
                        return d.add(months, CalUnit::Month);
                    }
                    Precision::Day => {
                        let days = total_ms / 86_400_000;
                        let ms = d
                            .epoch_ms_local()
                            .checked_add(days.checked_mul(86_400_000)?)?;
                        d.set_from_epoch_ms_local(ms);
                    }
                    _ => {
                        let ms = d.epoch_ms_local().checked_add(total_ms)?;
                        d.set_from_epoch_ms_local(ms);
                    }
                }
                if !(1..=9999).contains(&d.year) {
                    return None;
                }
            }
        }
        Some(d)
    }

    /// Truncates to a lower precision.
    pub fn with_precision(&self, p: Precision) -> DateTime {
        let mut d = *self;
        if p < d.precision {
            d.precision = p;
            if p < Precision::Millisecond {
                d.millis = 0;
            }
            if p < Precision::Second {
                d.second = 0;
            }
            if p < Precision::Minute {
                d.minute = 0;
            }
            if p < Precision::Hour {
                d.hour = 0;
                d.tz = None;
            }
            if p < Precision::Day {
                d.day = 1;
            }
            if p < Precision::Month {
                d.month = 1;
            }
        }
        d
    }

    /// Formats the date part only (`YYYY-MM-DD` as far as specified).
    pub fn format_date(&self) -> String {
        let mut s = String::with_capacity(10);
        let _ = write!(s, "{:04}", self.year);
        if self.precision >= Precision::Month {
            let _ = write!(s, "-{:02}", self.month);
        }
        if self.precision >= Precision::Day {
            let _ = write!(s, "-{:02}", self.day);
        }
        s
    }

    /// Formats as a FHIR dateTime string (no `@`, no trailing `T`).
    pub fn format_datetime(&self) -> String {
        let mut s = self.format_date();
        if self.precision >= Precision::Hour {
            let _ = write!(s, "T{:02}", self.hour);
            if self.precision >= Precision::Minute {
                let _ = write!(s, ":{:02}", self.minute);
            }
            if self.precision >= Precision::Second {
                let _ = write!(s, ":{:02}", self.second);
            }
            if self.precision >= Precision::Millisecond {
                let _ = write!(s, ".{:03}", self.millis);
            }
            if let Some(tz) = self.tz {
                s.push_str(&format_tz(tz));
            }
        }
        s
    }

    /// Precision in digits as reported by `precision()`.
    pub fn precision_digits(&self) -> i64 {
        match self.precision {
            Precision::Year => 4,
            Precision::Month => 6,
            Precision::Day => 8,
            Precision::Hour => 10,
            Precision::Minute => 12,
            Precision::Second => 14,
            Precision::Millisecond => 17,
        }
    }

    /// `lowBoundary`/`highBoundary` for a date or date-time.
    pub fn boundary(&self, digits: i64, high: bool, is_date: bool) -> Option<DateTime> {
        let p = match digits {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 if !is_date => Precision::Hour,
            12 if !is_date => Precision::Minute,
            14 if !is_date => Precision::Second,
            17 if !is_date => Precision::Millisecond,
            _ => return None,
        };
        let mut d = *self;
        let mut have = d.precision;
        if have == Precision::Hour {
            // hh alone is not a legal FHIR time: treat as hh:00
            have = Precision::Minute;
        }
        if p <= have {
            let mut r = d.with_precision(p);
            if p < Precision::Hour {
                r.tz = None;
            }
            return Some(r);
        }
        if have < Precision::Month {
            d.month = if high { 12 } else { 1 };
        }
        if have < Precision::Day {
            d.day = if high {
                days_in_month(d.year, d.month)
            } else {
                1
            };
        }
        if have < Precision::Hour {
            d.hour = if high { 23 } else { 0 };
        }
        if have < Precision::Minute {
            d.minute = if high { 59 } else { 0 };
        }
        if have < Precision::Second {
            d.second = if high { 59 } else { 0 };
        }
        if have < Precision::Millisecond {
            d.millis = if high { 999 } else { 0 };
        }
        if p >= Precision::Hour && d.tz.is_none() {
            d.tz = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        d.precision = p;
        Some(d)
    }

    /// The current instant (UTC, millisecond precision).
    pub fn now() -> DateTime {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut d = DateTime {
            year: 1970,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            precision: Precision::Millisecond,
            tz: Some(0),
        };
        d.set_from_epoch_ms_local(ms);
        d
    }
}

fn format_tz(tz: i16) -> String {
    if tz == 0 {
        "Z".to_string()
    } else {
        let sign = if tz < 0 { '-' } else { '+' };
        let a = tz.unsigned_abs();
        format!("{}{:02}:{:02}", sign, a / 60, a % 60)
    }
}

impl Time {
    /// Parses `hh(:mm(:ss(.fff)?)?)?`. `strict` requires at least minutes (FHIR `time`).
    pub fn parse(s: &str, strict: bool) -> Option<Time> {
        let mut c = Cursor {
            s: s.as_bytes(),
            i: 0,
        };
        let (h, m, se, ms, p) = parse_time_part(&mut c, strict)?;
        if !c.done() {
            return None;
        }
        Some(Time {
            hour: h,
            minute: m,
            second: se,
            millis: ms,
            precision: p,
        })
    }

    fn fields(&self) -> [i64; 3] {
        [
            self.hour as i64,
            self.minute as i64,
            self.second as i64 * 1000 + self.millis as i64,
        ]
    }

    fn level(&self) -> usize {
        self.precision.level() - 3
    }

    /// FHIRPath comparison with precision semantics.
    pub fn compare(&self, o: &Time) -> Option<Ordering> {
        let la = self.level();
        let lb = o.level();
        let fa = self.fields();
        let fb = o.fields();
        for i in 0..=la.min(lb) {
            match fa[i].cmp(&fb[i]) {
                Ordering::Equal => {}
                x => return Some(x),
            }
        }
        if la == lb {
            Some(Ordering::Equal)
        } else {
            None
        }
    }

    /// Adds a time-valued quantity (wraps around midnight).
    pub fn add(&self, n: i64, unit: CalUnit) -> Option<Time> {
        let ums: i64 = match unit {
            CalUnit::Hour => 3_600_000,
            CalUnit::Minute => 60_000,
            CalUnit::Second => 1000,
            CalUnit::Millisecond => 1,
            _ => return None,
        };
        let cur = ((self.hour as i64 * 60 + self.minute as i64) * 60 + self.second as i64) * 1000
            + self.millis as i64;
        let ms = cur.checked_add(n.checked_mul(ums)?)?.rem_euclid(86_400_000);
        Some(Time {
            hour: (ms / 3_600_000) as u8,
            minute: ((ms / 60_000) % 60) as u8,
            second: ((ms / 1000) % 60) as u8,
            millis: (ms % 1000) as u16,
            precision: self.precision,
        })
    }

    /// Formats as `hh:mm:ss.fff` as far as specified.
    pub fn format(&self) -> String {
        let mut s = format!("{:02}", self.hour);
        if self.precision >= Precision::Minute {
            let _ = write!(s, ":{:02}", self.minute);
        }
        if self.precision >= Precision::Second {
            let _ = write!(s, ":{:02}", self.second);
        }
        if self.precision >= Precision::Millisecond {
            let _ = write!(s, ".{:03}", self.millis);
        }
        s
    }

    /// Precision in digits as reported by `precision()`.
    pub fn precision_digits(&self) -> i64 {
        match self.precision {
            Precision::Hour => 2,
            Precision::Minute => 4,
            Precision::Second => 6,
            _ => 9,
        }
    }

    /// `lowBoundary`/`highBoundary` for a time.
    pub fn boundary(&self, digits: i64, high: bool) -> Option<Time> {
        let p = match digits {
            2 => Precision::Hour,
            4 => Precision::Minute,
            6 => Precision::Second,
            9 => Precision::Millisecond,
            _ => return None,
        };
        let mut t = *self;
        let have = t.precision;
        if p <= have {
            t.precision = p;
            return Some(t);
        }
        if have < Precision::Minute {
            t.minute = if high { 59 } else { 0 };
        }
        if have < Precision::Second {
            t.second = if high { 59 } else { 0 };
        }
        if have < Precision::Millisecond {
            t.millis = if high { 999 } else { 0 };
        }
        t.precision = p;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_roundtrip() {
        for days in [-1000i64, 0, 1, 59, 365, 10_000, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn parse_and_format() {
        let d = DateTime::parse_datetime("2015-02-04T14:34:28.123+10:00", true).unwrap();
        assert_eq!(d.format_datetime(), "2015-02-04T14:34:28.123+10:00");
        assert!(DateTime::parse_datetime("2015T", true).is_some());
        assert!(DateTime::parse_datetime("2015-13", true).is_none());
        assert!(DateTime::parse_date("2015-02-30").is_none());
        assert_eq!(Time::parse("14:34", true).unwrap().format(), "14:34");
        assert!(Time::parse("14", true).is_none());
    }

    #[test]
    fn compare_precision() {
        let a = DateTime::parse_datetime("2012-04-15", true).unwrap();
        let b = DateTime::parse_datetime("2012-04-15T10:00:00", true).unwrap();
        assert_eq!(a.compare(&b), None);
        let c = DateTime::parse_datetime("2017-11-05T01:30:00.0-04:00", true).unwrap();
        let e = DateTime::parse_datetime("2017-11-05T00:30:00.0-05:00", true).unwrap();
        assert_eq!(c.compare(&e), Some(Ordering::Equal));
    }

    #[test]
    fn arithmetic() {
        let d = DateTime::parse_date("1973-12-25").unwrap();
        assert_eq!(d.add(7, CalUnit::Day).unwrap().format_date(), "1974-01-01");
        assert_eq!(
            d.add(1, CalUnit::Month).unwrap().format_date(),
            "1974-01-25"
        );
        let e = DateTime::parse_date("2020-01-31").unwrap();
        assert_eq!(
            e.add(1, CalUnit::Month).unwrap().format_date(),
            "2020-02-29"
        );
    }
}
