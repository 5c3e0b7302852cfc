//! UK local time: GP Connect renders `Slot.start`, `Appointment.start` and
//! friends as `yyyy-mm-ddThh:mm:ss+hh:mm` in UK local time (`+00:00` GMT,
//! `+01:00` BST), and reads search dates in the same form.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Offset, TimeDelta, TimeZone, Utc};

fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let first_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .unwrap_or(NaiveDate::MIN);
    let last = first_next - TimeDelta::days(1);
    last - TimeDelta::days(i64::from(last.weekday().num_days_from_sunday()))
}

/// The UK offset from UTC (seconds) at `at`: BST from 01:00 UTC on the last
/// Sunday of March to 01:00 UTC on the last Sunday of October.
pub fn uk_offset_secs(at: DateTime<Utc>) -> i32 {
    let year = at.year();
    let switch = |month| {
        last_sunday(year, month)
            .and_hms_opt(1, 0, 0)
            .map(|n| Utc.from_utc_datetime(&n))
    };
    match (switch(3), switch(10)) {
        (Some(start), Some(end)) if at >= start && at < end => 3600,
        _ => 0,
    }
}

fn uk_zone(at: DateTime<Utc>) -> FixedOffset {
    FixedOffset::east_opt(uk_offset_secs(at)).unwrap_or_else(|| Utc.fix())
}

/// `at` as GP Connect writes it: UK local time with its offset.
pub fn uk(at: DateTime<Utc>) -> String {
    at.with_timezone(&uk_zone(at))
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// The UK calendar date of `at`.
pub fn uk_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&uk_zone(at)).date_naive()
}

/// The instant UK local midnight starts `day`.
pub fn uk_midnight(day: NaiveDate) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    let utc = Utc.from_utc_datetime(&naive);
    let bst_guess = utc - TimeDelta::hours(1);
    if uk_offset_secs(bst_guess) == 3600 {
        bst_guess
    } else {
        utc
    }
}

/// A whole date, exactly `yyyy-mm-dd`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A dateTime exactly `yyyy-mm-ddThh:mm:ss±hh:mm` (no `Z`, no fractions).
/// A space where the `+` was is read as `+` (an unencoded `+` in a query).
pub fn parse_offset_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.replace(' ', "+");
    let b = s.as_bytes();
    let shape = b.len() == 25
        && b[10] == b'T'
        && (b[19] == b'+' || b[19] == b'-')
        && b[22] == b':'
        && parse_date(&s[..10]).is_some();
    if !shape {
        return None;
    }
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Any FHIR `dateTime` with a time and zone (RFC 3339), for comparing what a
/// consumer sent with what is stored.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bst_and_gmt() {
        let winter = Utc.with_ymd_and_hms(2025, 1, 15, 9, 0, 0).unwrap();
        assert_eq!(uk(winter), "2025-01-15T09:00:00+00:00");
        let summer = Utc.with_ymd_and_hms(2025, 7, 15, 9, 0, 0).unwrap();
        assert_eq!(uk(summer), "2025-07-15T10:00:00+01:00");
        // 2025: BST from 30 March 01:00 UTC to 26 October 01:00 UTC.
        let before = Utc.with_ymd_and_hms(2025, 3, 30, 0, 59, 59).unwrap();
        assert_eq!(uk_offset_secs(before), 0);
        assert_eq!(uk_offset_secs(before + TimeDelta::seconds(1)), 3600);
        let d = NaiveDate::from_ymd_opt(2025, 7, 15).unwrap();
        assert_eq!(
            uk_midnight(d),
            Utc.with_ymd_and_hms(2025, 7, 14, 23, 0, 0).unwrap()
        );
        let d = NaiveDate::from_ymd_opt(2025, 1, 15).unwrap();
        assert_eq!(
            uk_midnight(d),
            Utc.with_ymd_and_hms(2025, 1, 15, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn strict_formats() {
        assert!(parse_date("2017-10-20").is_some());
        for bad in [
            "2017-10",
            "2017",
            "2017-10-20T10:00:00+00:00",
            "X2017-10-2",
            "",
        ] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
        assert!(parse_offset_datetime("2019-03-29T12:00:00+00:00").is_some());
        assert!(parse_offset_datetime("2019-03-29T12:00:00 01:00").is_some());
        for bad in [
            "2019-03-29T12:00:00Z",
            "2019-03-29T12:00:00",
            "2019-03-29T12:00:00.000+00:00",
            "2019-03-29",
        ] {
            assert!(parse_offset_datetime(bad).is_none(), "{bad}");
        }
    }
}
