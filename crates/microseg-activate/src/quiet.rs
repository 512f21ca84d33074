//! Quiet hours: a window of the day, in the person's own time zone (their `timezone`
//! trait, an IANA name such as `Europe/Budapest`; UTC without one or for a name the
//! system's time zone database does not know), when no message goes out. A message due
//! inside it is held until it ends, not dropped.

use microseg_core::Timestamp;

/// `HH:MM-HH:MM`; the window may run over midnight (`21:00-08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Start, in minutes after midnight.
    start: u16,
    /// End, in minutes after midnight.
    end: u16,
}

impl QuietHours {
    /// Reads `HH:MM-HH:MM`; `None` for an empty text (no quiet hours).
    ///
    /// # Errors
    ///
    /// What is wrong with the text.
    pub fn parse(text: &str) -> Result<Option<QuietHours>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || format!("'{text}': write HH:MM-HH:MM, e.g. 21:00-08:00");
        let minutes = |hm: &str| -> Result<u16, String> {
            let (h, m) = hm.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a)?, minutes(b)?);
        if start == end {
            return Err(format!("'{text}': the window is empty"));
        }
        Ok(Some(QuietHours { start, end }))
    }

    /// When a message due at `at` may go to a person in time zone `tz`: `at` itself, or
    /// the end of the quiet hours it falls in.
    pub fn release(&self, at: Timestamp, tz: Option<&str>) -> Timestamp {
        let zone = tz
            .and_then(|name| jiff::tz::TimeZone::get(name).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC);
        let Ok(instant) = jiff::Timestamp::from_millisecond(at.0) else {
            return at;
        };
        let local = instant.to_zoned_datetime(zone.clone());
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let inside = if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        };
        if !inside {
            return at;
        }
        // The end is today, or tomorrow when we are in the evening part of a window that
        // runs over midnight.
        let mut day = local.date();
        if self.start > self.end && minute >= self.start {
            day = day.tomorrow().unwrap_or(day);
        }
        let end = day.at((self.end / 60) as i8, (self.end % 60) as i8, 0, 0);
        match end.to_zoned_datetime(zone) {
            Ok(z) => Timestamp(z.timestamp().as_millisecond()),
            Err(_) => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microseg_core::time::parse_timestamp;

    fn t(s: &str) -> Timestamp {
        parse_timestamp(s).unwrap()
    }

    /// Hand-computed: Budapest is UTC+1 in December and UTC+2 in July; Los Angeles UTC-8
    /// in December.
    #[test]
    fn a_message_inside_the_window_waits_for_its_end_in_local_time() {
        let q = QuietHours::parse("21:00-08:00").unwrap().unwrap();
        let bp = Some("Europe/Budapest");
        // 22:30 local on Dec 2 -> 08:00 local on Dec 3 = 07:00 UTC.
        assert_eq!(
            q.release(t("2026-12-02T21:30:00Z"), bp),
            t("2026-12-03T07:00:00Z")
        );
        // 07:00 local in July -> 08:00 local the same day = 06:00 UTC.
        assert_eq!(
            q.release(t("2026-07-01T05:00:00Z"), bp),
            t("2026-07-01T06:00:00Z")
        );
        // Midday: no wait.
        assert_eq!(
            q.release(t("2026-12-02T12:00:00Z"), bp),
            t("2026-12-02T12:00:00Z")
        );
        // 21:00 local is inside, 08:00 local is not.
        assert_eq!(
            q.release(t("2026-12-02T20:00:00Z"), bp),
            t("2026-12-03T07:00:00Z")
        );
        assert_eq!(
            q.release(t("2026-12-03T07:00:00Z"), bp),
            t("2026-12-03T07:00:00Z")
        );
        // The same instant in Los Angeles is 13:30: no wait; without a zone, UTC 21:30 waits.
        assert_eq!(
            q.release(t("2026-12-02T21:30:00Z"), Some("America/Los_Angeles")),
            t("2026-12-02T21:30:00Z")
        );
        assert_eq!(
            q.release(t("2026-12-02T21:30:00Z"), None),
            t("2026-12-03T08:00:00Z")
        );
        assert_eq!(
            q.release(t("2026-12-02T21:30:00Z"), Some("Mars/Olympus")),
            t("2026-12-03T08:00:00Z")
        );
        // A window inside one day.
        let lunch = QuietHours::parse("12:00-13:30").unwrap().unwrap();
        assert_eq!(
            lunch.release(t("2026-12-02T12:10:00Z"), None),
            t("2026-12-02T13:30:00Z")
        );
        assert_eq!(QuietHours::parse("").unwrap(), None);
        for bad in ["21-08", "25:00-08:00", "08:00-08:00", "x"] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
    }
}
