//! Time in microseg: UTC instants in milliseconds since the Unix epoch.
//!
//! Every evaluation takes an explicit `as_of` [`Timestamp`]; nothing in the core reads the
//! clock. Civil dates convert with the proleptic Gregorian calendar (no leap seconds), so
//! `1998-07-01` is exactly `899_251_200_000` ms and whole days are 86,400,000 ms:
//!
//! ```
//! use microseg_core::time::{parse_timestamp, Timestamp};
//! let t = parse_timestamp("1998-07-01").unwrap();
//! assert_eq!(t, Timestamp(899_251_200_000));
//! assert_eq!(t.to_string(), "1998-07-01T00:00:00Z");
//! assert_eq!(parse_timestamp("1998-07-01T02:00:00+02:00").unwrap(), t);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// A UTC instant in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The instant as milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Midnight UTC of a civil date; `None` if the date does not exist.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Timestamp> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Timestamp(days_from_civil(year, month, day) * DAY_MS))
    }

    /// Whole days from `self` to `later`, rounded down (negative if `later` is earlier).
    pub fn whole_days_until(self, later: Timestamp) -> i64 {
        (later.0 - self.0).div_euclid(DAY_MS)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC; milliseconds only when they are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(DAY_MS);
        let ms_of_day = self.0.rem_euclid(DAY_MS);
        let (y, m, d) = civil_from_days(days);
        let secs = ms_of_day / 1000;
        let ms = ms_of_day % 1000;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )?;
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

/// Why a text could not be read as a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is not a time in the expected form.
    #[error("'{text}' is not a time ({expected})")]
    Invalid {
        /// The offending text.
        text: String,
        /// What form was expected.
        expected: String,
    },
    /// A `--time-format` pattern jiff could not use.
    #[error("bad time format '{0}'")]
    BadFormat(String),
}

/// Milliseconds in one duration unit: `s`, `m`, `h`, `d`, `w`.
pub fn unit_ms(unit: u8) -> Option<i64> {
    Some(match unit {
        b's' => 1_000,
        b'm' => 60_000,
        b'h' => 3_600_000,
        b'd' => 86_400_000,
        b'w' => 604_800_000,
        _ => return None,
    })
}

/// Parses a duration as the condition language writes it (`90d`, `52w`, `12h`) into
/// milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, TimeError> {
    let expected = "a duration: digits and a unit s, m, h, d or w, e.g. 90d or 52w";
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = digits.parse().map_err(|_| invalid(text, expected))?;
    let unit = unit_ms(unit.as_bytes().first().copied().unwrap_or(0));
    match unit.and_then(|u| n.checked_mul(u)) {
        Some(ms) if n >= 0 => Ok(ms),
        _ => Err(invalid(text, expected)),
    }
}

fn invalid(text: &str, expected: &str) -> TimeError {
    TimeError::Invalid {
        text: text.chars().take(80).collect(),
        expected: expected.to_string(),
    }
}

/// How the time column of an import is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]` (UTC unless an offset is given).
    Auto,
    /// `YYYYMMDD`, midnight UTC (the CDNOW files).
    CompactDate,
    /// Seconds since the epoch (integer or decimal).
    UnixSeconds,
    /// Milliseconds since the epoch.
    UnixMillis,
    /// A strftime pattern, parsed by jiff; without an offset the time is UTC.
    Pattern(String),
}

impl TimeFormat {
    /// Reads a `--time-format` value: `auto`, `unix`, `unix_ms`, or a strftime pattern
    /// (`%Y%m%d` is recognised and parsed by a fast path).
    pub fn from_spec(spec: &str) -> TimeFormat {
        match spec {
            "" | "auto" | "rfc3339" => TimeFormat::Auto,
            "%Y%m%d" | "yyyymmdd" | "YYYYMMDD" => TimeFormat::CompactDate,
            "unix" | "unix_s" | "%s" => TimeFormat::UnixSeconds,
            "unix_ms" => TimeFormat::UnixMillis,
            other => TimeFormat::Pattern(other.to_string()),
        }
    }

    /// Parses one value in this format.
    pub fn parse(&self, text: &str) -> Result<Timestamp, TimeError> {
        let text = text.trim();
        match self {
            TimeFormat::Auto => parse_timestamp(text),
            TimeFormat::CompactDate => parse_compact_date(text),
            TimeFormat::UnixSeconds => {
                let secs: f64 = text
                    .parse()
                    .map_err(|_| invalid(text, "seconds since 1970"))?;
                if !secs.is_finite() {
                    return Err(invalid(text, "seconds since 1970"));
                }
                Ok(Timestamp((secs * 1000.0).round() as i64))
            }
            TimeFormat::UnixMillis => text
                .parse::<i64>()
                .map(Timestamp)
                .map_err(|_| invalid(text, "milliseconds since 1970")),
            TimeFormat::Pattern(pattern) => parse_with_pattern(pattern, text),
        }
    }
}

fn parse_with_pattern(pattern: &str, text: &str) -> Result<Timestamp, TimeError> {
    use jiff::fmt::strtime;
    let parsed = strtime::parse(pattern, text).map_err(|_| invalid(text, pattern))?;
    if let Ok(ts) = parsed.to_timestamp() {
        return Ok(Timestamp(ts.as_millisecond()));
    }
    let dt = match parsed.to_datetime() {
        Ok(dt) => dt,
        Err(_) => parsed
            .to_date()
            .map_err(|_| invalid(text, pattern))?
            .to_datetime(jiff::civil::Time::midnight()),
    };
    let ts = jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|_| invalid(text, pattern))?;
    Ok(Timestamp(ts.as_millisecond()))
}

/// `YYYYMMDD` as midnight UTC.
pub fn parse_compact_date(text: &str) -> Result<Timestamp, TimeError> {
    let b = text.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return Err(invalid(text, "YYYYMMDD"));
    }
    let year = digits(&b[0..4]) as i64;
    let month = digits(&b[4..6]);
    let day = digits(&b[6..8]);
    Timestamp::from_ymd(year, month, day).ok_or_else(|| invalid(text, "YYYYMMDD"))
}

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 / ISO 8601 date-time
/// (`T` or a space between date and time; seconds and fractions optional; `Z`, `±HH:MM`,
/// `±HHMM` or no offset, which means UTC).
pub fn parse_timestamp(text: &str) -> Result<Timestamp, TimeError> {
    const EXPECTED: &str = "YYYY-MM-DD or RFC 3339";
    let err = || invalid(text, EXPECTED);
    let b = text.trim().as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, TimeError> {
        let s = b.get(r).ok_or_else(err)?;
        if s.iter().all(u8::is_ascii_digit) {
            Ok(digits(s))
        } else {
            Err(err())
        }
    };
    let date = Timestamp::from_ymd(num(0..4)? as i64, num(5..7)?, num(8..10)?).ok_or_else(err)?;
    if b.len() == 10 {
        return Ok(date);
    }
    if b[10] != b'T' && b[10] != b't' && b[10] != b' ' {
        return Err(err());
    }
    let hour = num(11..13)?;
    if b.get(13) != Some(&b':') {
        return Err(err());
    }
    let minute = num(14..16)?;
    let mut i = 16;
    let mut second = 0;
    let mut millis = 0;
    if b.get(i) == Some(&b':') {
        second = num(17..19)?;
        i = 19;
        if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
            i += 1;
            let start = i;
            let mut scale = 100;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                millis += (c - b'0') as u32 * scale;
                scale /= 10;
                i += 1;
            }
            if i == start {
                return Err(err());
            }
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(err());
    }
    let offset_minutes: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => ([*h1, *h2], [*m1, *m2]),
                [h1, h2] => ([*h1, *h2], [b'0', b'0']),
                _ => return Err(err()),
            };
            // RFC 3339: hours 00-23, minutes 00-59 (`+25:00` is no offset).
            if !h.iter().chain(m.iter()).all(u8::is_ascii_digit)
                || digits(&h) > 23
                || digits(&m) > 59
            {
                return Err(err());
            }
            let total = (digits(&h) * 60 + digits(&m)) as i64;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return Err(err()),
    };
    let ms =
        date.0 + (hour as i64 * 3600 + minute as i64 * 60 + second as i64) * 1000 + millis as i64
            - offset_minutes * 60_000;
    Ok(Timestamp(ms))
}

fn digits(b: &[u8]) -> u32 {
    b.iter().fold(0, |acc, c| acc * 10 + (c - b'0') as u32)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        // Reference values from `date -u -d 1998-07-01 +%s` (899251200) and 2000-02-29.
        assert_eq!(parse_timestamp("1970-01-01").unwrap(), Timestamp(0));
        assert_eq!(parse_timestamp("1998-07-01").unwrap().0, 899_251_200_000);
        assert_eq!(parse_timestamp("2000-02-29").unwrap().0, 951_782_400_000);
        assert_eq!(parse_compact_date("19970101").unwrap().0, 852_076_800_000);
    }

    #[test]
    fn round_trips_through_display() {
        for ms in [
            0,
            1,
            999,
            86_399_999,
            -1,
            951_782_400_123,
            4_102_444_800_000,
        ] {
            let t = Timestamp(ms);
            assert_eq!(parse_timestamp(&t.to_string()).unwrap(), t, "{t}");
        }
    }

    #[test]
    fn offsets_fractions_and_spaces() {
        let utc = parse_timestamp("2024-01-31T10:00:00Z").unwrap();
        assert_eq!(parse_timestamp("2024-01-31T12:00:00+02:00").unwrap(), utc);
        assert_eq!(parse_timestamp("2024-01-31T05:30:00-0430").unwrap(), utc);
        assert_eq!(parse_timestamp("2024-01-31 10:00").unwrap(), utc);
        assert_eq!(
            parse_timestamp("2026-11-24T00:39:46.108+00:00").unwrap().0 % 1000,
            108
        );
        assert_eq!(
            parse_timestamp("2026-11-24T00:39:46.612288+00:00")
                .unwrap()
                .0
                % 1000,
            612
        );
    }

    #[test]
    fn rejects_impossible_and_malformed() {
        for bad in [
            "",
            "1998-02-30",
            "1997-13-01",
            "1998-07-01T25:00:00Z",
            "2024-01-31T10:00:00+25:00",
            "2024-01-31T10:00:00-24:00",
            "2024-01-31T10:00:00+02:60",
            "2024-01-31T10:00:00+9930",
            "1998/07/01",
            "yesterday",
            "1998-07-01T10:00:00+2",
            "1998-07-01T10:00:00.Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_compact_date("19970229").is_err());
        assert!(parse_compact_date("1997011").is_err());
    }

    #[test]
    fn formats_from_spec() {
        assert_eq!(TimeFormat::from_spec("%Y%m%d"), TimeFormat::CompactDate);
        let f = TimeFormat::from_spec("%d/%m/%Y %H:%M");
        assert_eq!(
            f.parse("31/01/2024 10:00").unwrap(),
            parse_timestamp("2024-01-31T10:00:00Z").unwrap()
        );
        assert_eq!(
            TimeFormat::from_spec("%d/%m/%Y")
                .parse("31/01/2024")
                .unwrap(),
            parse_timestamp("2024-01-31").unwrap()
        );
        assert_eq!(
            TimeFormat::UnixSeconds.parse("899251200").unwrap().0,
            899_251_200_000
        );
        assert!(f.parse("2024-01-31").is_err());
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-200_000..200_000).step_by(17) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn whole_days_round_down() {
        let a = parse_timestamp("1998-06-30T23:00:00Z").unwrap();
        let b = parse_timestamp("1998-07-01").unwrap();
        assert_eq!(a.whole_days_until(b), 0);
        assert_eq!(Timestamp(0).whole_days_until(b), 10_408);
    }

    #[test]
    fn durations_parse_like_the_condition_language() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400_000);
        assert_eq!(parse_duration("52w").unwrap(), 52 * 604_800_000);
        assert_eq!(parse_duration("30s").unwrap(), 30_000);
        for bad in ["", "d", "90", "90x", "-3d", "1.5d", "99999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
