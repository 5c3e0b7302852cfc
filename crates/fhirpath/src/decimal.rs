//! Fixed-point decimal arithmetic for FHIRPath `Decimal` values.
//!
//! A [`Decimal`] is an `i128` mantissa with a base-10 scale, so literal
//! precision is preserved (`1.0` and `1.00` print differently but compare
//! equal) and arithmetic is exact where FHIRPath requires it.

use std::cmp::Ordering;
use std::fmt;

/// Largest scale (digits after the decimal point) kept by arithmetic.
pub const MAX_SCALE: u32 = 28;
/// Scale used for the result of a division.
const DIV_SCALE: u32 = 8;

/// A decimal number: `mant / 10^scale`.
#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    mant: i128,
    scale: u32,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// Divides with rounding half away from zero.
fn div_round(num: i128, den: i128) -> Option<i128> {
    if den == 0 {
        return None;
    }
    let q = num.checked_div(den)?;
    let r = num.checked_rem(den)?;
    if r == 0 {
        return Some(q);
    }
    // compare 2|r| with |den|
    let twice = r.unsigned_abs().checked_mul(2)?;
    if twice >= den.unsigned_abs() {
        if (num < 0) != (den < 0) {
            q.checked_sub(1)
        } else {
            q.checked_add(1)
        }
    } else {
        Some(q)
    }
}

impl Decimal {
    /// Builds a decimal from mantissa and scale.
    pub fn new(mant: i128, scale: u32) -> Self {
        Decimal { mant, scale }
    }

    /// Exact conversion of an integer.
    pub fn from_i64(v: i64) -> Self {
        Decimal {
            mant: v as i128,
            scale: 0,
        }
    }

    /// The mantissa.
    pub fn mantissa(&self) -> i128 {
        self.mant
    }

    /// Number of digits after the decimal point.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// True when the value is zero.
    pub fn is_zero(&self) -> bool {
        self.mant == 0
    }

    /// True when the value is negative.
    pub fn is_negative(&self) -> bool {
        self.mant < 0
    }

    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (num, exp) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        let (int_part, frac_part) = match num.find('.') {
            Some(i) => (&num[..i], &num[i + 1..]),
            None => (num, ""),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if num.contains('.') && frac_part.is_empty() {
            return None;
        }
        if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut mant: i128 = 0;
        let mut scale: u32 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            let d = (b - b'0') as i128;
            match mant.checked_mul(10).and_then(|m| m.checked_add(d)) {
                Some(m) => mant = m,
                None => return None,
            }
        }
        scale += frac_part.len() as u32;
        let mut dec = Decimal { mant, scale };
        if let Some(e) = exp {
            let e: i32 = e.parse().ok()?;
            if e >= 0 {
                let e = e as u32;
                if e <= dec.scale {
                    dec.scale -= e;
                } else {
                    let f = pow10(e - dec.scale)?;
                    dec.mant = dec.mant.checked_mul(f)?;
                    dec.scale = 0;
                }
            } else {
                dec.scale = dec.scale.checked_add(e.unsigned_abs())?;
            }
        }
        if dec.scale > MAX_SCALE + 10 {
            dec = dec.round(MAX_SCALE);
        }
        if neg {
            dec.mant = dec.mant.saturating_neg();
        }
        Some(dec)
    }

    /// Conversion from a float (via its shortest round-trip representation).
    pub fn from_f64(f: f64) -> Option<Self> {
        if !f.is_finite() {
            return None;
        }
        let s = format!("{}", f);
        let d = Decimal::parse(&s)?;
        if d.scale > MAX_SCALE {
            Some(d.round(MAX_SCALE))
        } else {
            Some(d)
        }
    }

    /// Lossy conversion to a float.
    pub fn to_f64(&self) -> f64 {
        let s = self.to_string();
        s.parse().unwrap_or(f64::NAN)
    }

    /// The value as an integer when it has no fractional part.
    pub fn to_i64_exact(&self) -> Option<i64> {
        let f = pow10(self.scale)?;
        if self.mant % f != 0 {
            return None;
        }
        i64::try_from(self.mant / f).ok()
    }

    /// Increases the scale without changing the value.
    pub fn with_scale(&self, scale: u32) -> Option<Self> {
        if scale >= self.scale {
            let f = pow10(scale - self.scale)?;
            Some(Decimal {
                mant: self.mant.checked_mul(f)?,
                scale,
            })
        } else {
            Some(self.round(scale))
        }
    }

    fn align(a: &Decimal, b: &Decimal) -> Option<(i128, i128, u32)> {
        let s = a.scale.max(b.scale);
        let am = a.mant.checked_mul(pow10(s - a.scale)?)?;
        let bm = b.mant.checked_mul(pow10(s - b.scale)?)?;
        Some((am, bm, s))
    }

    /// Exact addition.
    pub fn checked_add(&self, o: &Decimal) -> Option<Decimal> {
        let (a, b, s) = Self::align(self, o)?;
        Some(Decimal {
            mant: a.checked_add(b)?,
            scale: s,
        })
    }

    /// Exact subtraction.
    pub fn checked_sub(&self, o: &Decimal) -> Option<Decimal> {
        let (a, b, s) = Self::align(self, o)?;
        Some(Decimal {
            mant: a.checked_sub(b)?,
            scale: s,
        })
    }

    /// Multiplication (exact unless the scale exceeds [`MAX_SCALE`]).
    pub fn checked_mul(&self, o: &Decimal) -> Option<Decimal> {
        match self.mant.checked_mul(o.mant) {
            Some(m) => {
                let d = Decimal {
                    mant: m,
                    scale: self.scale + o.scale,
                };
                if d.scale > MAX_SCALE {
                    Some(d.round(MAX_SCALE))
                } else {
                    Some(d)
                }
            }
            None => {
                // reduce precision and retry
                let a = self.normalized();
                let b = o.normalized();
                if a.mant == self.mant && b.mant == o.mant {
                    Decimal::from_f64(self.to_f64() * o.to_f64())
                } else {
                    a.checked_mul(&b)
                }
            }
        }
    }

    /// Division with at least 8 digits of precision; `None` on division by zero.
    pub fn checked_div(&self, o: &Decimal) -> Option<Decimal> {
        if o.mant == 0 {
            return None;
        }
        let target = DIV_SCALE.max(self.scale).max(o.scale).min(MAX_SCALE);
        // result = (a.m / 10^a.s) / (b.m / 10^b.s) = a.m * 10^(b.s - a.s) / b.m
        let e = target as i64 + o.scale as i64 - self.scale as i64;
        let r = if e >= 0 {
            pow10(e as u32)
                .and_then(|f| self.mant.checked_mul(f))
                .and_then(|n| div_round(n, o.mant))
        } else {
            pow10((-e) as u32)
                .and_then(|f| o.mant.checked_mul(f))
                .and_then(|d| div_round(self.mant, d))
        };
        match r {
            Some(m) => Some(
                Decimal {
                    mant: m,
                    scale: target,
                }
                .trim_to(self.scale.max(o.scale).max(1)),
            ),
            None => Decimal::from_f64(self.to_f64() / o.to_f64()),
        }
    }

    /// Truncated division (the integer part of the quotient).
    pub fn checked_div_trunc(&self, o: &Decimal) -> Option<Decimal> {
        if o.mant == 0 {
            return None;
        }
        let (a, b, _) = Self::align(self, o)?;
        Some(Decimal {
            mant: a.checked_div(b)?,
            scale: 0,
        })
    }

    /// Remainder of truncated division.
    pub fn checked_rem(&self, o: &Decimal) -> Option<Decimal> {
        if o.mant == 0 {
            return None;
        }
        let (a, b, s) = Self::align(self, o)?;
        Some(Decimal {
            mant: a.checked_rem(b)?,
            scale: s,
        })
    }

    /// Negation.
    pub fn neg(&self) -> Decimal {
        Decimal {
            mant: self.mant.saturating_neg(),
            scale: self.scale,
        }
    }

    /// Absolute value.
    pub fn abs(&self) -> Decimal {
        Decimal {
            mant: self.mant.saturating_abs(),
            scale: self.scale,
        }
    }

    /// Removes trailing zeros after the decimal point, keeping at least `min_scale` digits.
    pub fn trim_to(&self, min_scale: u32) -> Decimal {
        let mut d = *self;
        while d.scale > min_scale && d.mant % 10 == 0 {
            d.mant /= 10;
            d.scale -= 1;
        }
        d
    }

    /// Removes all trailing fractional zeros.
    pub fn normalized(&self) -> Decimal {
        self.trim_to(0)
    }

    /// Rounds half away from zero to `digits` decimal places.
    pub fn round(&self, digits: u32) -> Decimal {
        if digits >= self.scale {
            return *self;
        }
        let f = match pow10(self.scale - digits) {
            Some(f) => f,
            None => {
                return Decimal {
                    mant: 0,
                    scale: digits,
                }
            }
        };
        Decimal {
            mant: div_round(self.mant, f).unwrap_or(0),
            scale: digits,
        }
    }

    /// Truncates (towards zero) to `digits` decimal places.
    pub fn truncate(&self, digits: u32) -> Decimal {
        if digits >= self.scale {
            return *self;
        }
        let f = pow10(self.scale - digits).unwrap_or(i128::MAX);
        Decimal {
            mant: self.mant / f,
            scale: digits,
        }
    }

    /// Largest integer not greater than the value.
    pub fn floor(&self) -> Option<i128> {
        let f = pow10(self.scale)?;
        Some(self.mant.div_euclid(f))
    }

    /// Smallest integer not less than the value.
    pub fn ceil(&self) -> Option<i128> {
        let f = pow10(self.scale)?;
        let q = self.mant.div_euclid(f);
        if self.mant.rem_euclid(f) == 0 {
            Some(q)
        } else {
            q.checked_add(1)
        }
    }

    /// Numeric comparison.
    pub fn cmp_num(&self, o: &Decimal) -> Ordering {
        match Self::align(self, o) {
            Some((a, b, _)) => a.cmp(&b),
            None => self
                .to_f64()
                .partial_cmp(&o.to_f64())
                .unwrap_or(Ordering::Equal),
        }
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_num(other) == Ordering::Equal
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.mant < 0;
        let digits = self.mant.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let (int, frac) = if digits.len() > scale {
            let (a, b) = digits.split_at(digits.len() - scale);
            (a.to_string(), b.to_string())
        } else {
            (
                "0".to_string(),
                format!("{}{}", "0".repeat(scale - digits.len()), digits),
            )
        };
        if neg {
            f.write_str("-")?;
        }
        f.write_str(&int)?;
        if scale > 0 {
            f.write_str(".")?;
            f.write_str(&frac)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).expect("valid decimal")
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(d("1.0").to_string(), "1.0");
        assert_eq!(d("-0.0034").to_string(), "-0.0034");
        assert_eq!(
            d("1234567890987654321.0").to_string(),
            "1234567890987654321.0"
        );
        assert_eq!(d("1e3").to_string(), "1000");
        assert_eq!(d("1.5E-2").to_string(), "0.015");
        assert!(Decimal::parse("1.").is_none());
        assert!(Decimal::parse(".5").is_none());
        assert!(Decimal::parse("1.a").is_none());
    }

    #[test]
    fn arithmetic() {
        assert_eq!(d("1.2").checked_add(&d("1.8")).unwrap(), d("3.0"));
        assert_eq!(d("1.2").checked_mul(&d("1.8")).unwrap(), d("2.16"));
        assert_eq!(d("1").checked_div(&d("2")).unwrap(), d("0.5"));
        assert_eq!(
            d("1.2").checked_div(&d("1.8")).unwrap().to_string(),
            "0.66666667"
        );
        assert_eq!(d("2.2").checked_rem(&d("1.8")).unwrap(), d("0.4"));
        assert_eq!(d("2.2").checked_div_trunc(&d("1.8")).unwrap(), d("1"));
        assert!(d("1").checked_div(&d("0")).is_none());
        assert_eq!(d("3.14159").round(3).to_string(), "3.142");
        assert_eq!(d("-2.1").floor(), Some(-3));
        assert_eq!(d("-1.1").ceil(), Some(-1));
    }
}
