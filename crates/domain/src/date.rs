//! Calendar dates and local date-times as the domain uses them: proleptic Gregorian, no time
//! zone arithmetic beyond a fixed offset (China keeps UTC+8 all year).

use std::fmt;

/// Minutes east of UTC of China Standard Time, used to tell "today" from a Unix time.
pub const CHINA_OFFSET_MINUTES: i32 = 8 * 60;

/// A calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

impl Date {
    /// The date, if it exists in the calendar.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date {
            year,
            month: month as u8,
            day: day as u8,
        })
    }

    /// Parses `YYYY-MM-DD`, also accepting `/` or `.` as separators and the compact `YYYYMMDD`.
    pub fn parse(text: &str) -> Option<Date> {
        let text = text.trim();
        let parts: Vec<&str> = if text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) {
            vec![&text[0..4], &text[4..6], &text[6..8]]
        } else {
            text.split(['-', '/', '.']).collect()
        };
        let [y, m, d] = parts.as_slice() else {
            return None;
        };
        if y.len() != 4 || m.is_empty() || m.len() > 2 || d.is_empty() || d.len() > 2 {
            return None;
        }
        Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    }

    /// The local date at a Unix time in milliseconds, at a fixed offset from UTC.
    pub fn from_unix_ms(ms: i64, offset_minutes: i32) -> Date {
        let local_ms = ms + i64::from(offset_minutes) * 60_000;
        Date::from_days(local_ms.div_euclid(86_400_000))
    }

    /// The date that is `days` days after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Days since 1970-01-01 (negative before).
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The local date-time `YYYY-MM-DD HH:MM:SS` at a Unix time in milliseconds, at a fixed offset.
pub fn datetime_from_unix_ms(ms: i64, offset_minutes: i32) -> String {
    let local_ms = ms + i64::from(offset_minutes) * 60_000;
    let date = Date::from_days(local_ms.div_euclid(86_400_000));
    let secs = local_ms.rem_euclid(86_400_000) / 1000;
    format!(
        "{date} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The Unix time in milliseconds of a local date-time `YYYY-MM-DD HH:MM[:SS]` at a fixed offset.
pub fn unix_ms_from_datetime(text: &str, offset_minutes: i32) -> Option<i64> {
    let at = normalize_datetime(text)?;
    let date = Date::parse(&at[..10])?;
    let [h, m, s] = [11, 14, 17].map(|i| at[i..i + 2].parse::<i64>().unwrap_or(0));
    let local_ms = date.to_days() * 86_400_000 + (h * 3600 + m * 60 + s) * 1000;
    Some(local_ms - i64::from(offset_minutes) * 60_000)
}

/// Parses a local date-time `YYYY-MM-DD HH:MM[:SS]` (or with `T`) into `YYYY-MM-DD HH:MM:SS`.
pub fn normalize_datetime(text: &str) -> Option<String> {
    let text = text.trim();
    let (date, time) = text.split_once([' ', 'T'])?;
    let date = Date::parse(date)?;
    let mut parts = time.trim().split(':');
    let hour: u32 = parts.next()?.parse().ok()?;
    let minute: u32 = parts.next()?.parse().ok()?;
    let second: u32 = match parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(format!("{date} {hour:02}:{minute:02}:{second:02}"))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_usual_spellings_and_rejects_impossible_dates() {
        let d = Date::new(1949, 12, 31).unwrap();
        for s in [
            "1949-12-31",
            "1949/12/31",
            "1949.12.31",
            "19491231",
            " 1949-12-31 ",
        ] {
            assert_eq!(Date::parse(s), Some(d), "{s}");
        }
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(
            Date::parse("2024-02-29").map(|d| d.to_string()),
            Some("2024-02-29".into())
        );
        assert_eq!(Date::parse("1900-02-29"), None);
        assert_eq!(Date::parse("2000-02-29").map(|d| d.year()), Some(2000));
        assert_eq!(Date::parse("2024-13-01"), None);
        assert_eq!(Date::parse("24-1-1"), None);
    }

    #[test]
    fn the_local_date_follows_the_offset() {
        // 2024-01-01T16:30Z is already 2024-01-02 in Huizhou.
        let ms = Date::new(2024, 1, 1).unwrap().to_days() * 86_400_000 + 16 * 3_600_000 + 1_800_000;
        assert_eq!(Date::from_unix_ms(ms, 0).to_string(), "2024-01-01");
        assert_eq!(
            Date::from_unix_ms(ms, CHINA_OFFSET_MINUTES).to_string(),
            "2024-01-02"
        );
    }

    #[test]
    fn datetimes_normalise() {
        assert_eq!(
            normalize_datetime("2024-05-01 9:05").as_deref(),
            Some("2024-05-01 09:05:00")
        );
        assert_eq!(
            normalize_datetime("2024-05-01T23:59:59").as_deref(),
            Some("2024-05-01 23:59:59")
        );
        assert_eq!(normalize_datetime("2024-05-01 24:00"), None);
        assert_eq!(normalize_datetime("2024-05-01"), None);
    }

    proptest! {
        #[test]
        fn local_datetimes_round_trip(secs in 0i64..5_000_000_000, offset in -720i32..840) {
            let ms = secs * 1000;
            let text = datetime_from_unix_ms(ms, offset);
            prop_assert_eq!(unix_ms_from_datetime(&text, offset), Some(ms));
        }

        #[test]
        fn days_round_trip(days in -700_000i64..2_900_000) {
            let d = Date::from_days(days);
            prop_assert_eq!(d.to_days(), days);
            prop_assert_eq!(Date::parse(&d.to_string()), Some(d));
        }
    }
}
