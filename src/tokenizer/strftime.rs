//! `strftime_now(format)` for chat templates: `transformers` exposes it so templates can print
//! today's date (LLaMA 3.x: `strftime_now("%d %b %Y")`). Here the clock is UTC and the common
//! directives are supported (`%Y %y %m %d %e %H %I %M %S %p %b %B %a %A %j %%`); any other
//! directive is written out unchanged, as glibc does.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The template function.
pub(crate) fn strftime_now(format: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(i64::try_from(secs).unwrap_or(0), format)
}

/// Proleptic Gregorian (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Formats the UTC time `secs` (since the Unix epoch) with strftime directives.
pub(crate) fn format_utc(secs: i64, format: &str) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (sod / 3600, sod / 60 % 60, sod % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let month_name = MONTHS[(month as usize).saturating_sub(1) % 12];
    let day_name = DAYS[weekday];
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(month as usize - 1) % 12] + day + u32::from(month > 2 && is_leap(year));

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let piece = match d {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year.rem_euclid(100)),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:>2}"),
            'H' => format!("{hour:02}"),
            'I' => format!("{:02}", if hour % 12 == 0 { 12 } else { hour % 12 }),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'b' => month_name[..3].to_string(),
            'B' => month_name.to_string(),
            'a' => day_name[..3].to_string(),
            'A' => day_name.to_string(),
            'j' => format!("{yday:03}"),
            '%' => "%".to_string(),
            other => format!("%{other}"),
        };
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_utc(0, "%d %b %Y %a"), "01 Jan 1970 Thu");
        // 2024-07-26 13:05:09 UTC (a Friday), day 208 of a leap year
        let t = 1_721_999_109;
        assert_eq!(format_utc(t, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            format_utc(t, "%A %B %e %H:%M:%S %I%p %j %y %m %%"),
            "Friday July 26 13:05:09 01PM 208 24 07 %"
        );
        // 2000-02-29 (leap day of a century leap year)
        assert_eq!(format_utc(951_782_400, "%Y-%m-%d %j"), "2000-02-29 060");
        assert_eq!(format_utc(0, "%Q %"), "%Q %");
    }

    #[test]
    fn now_is_plausible() {
        let y: i64 = strftime_now("%Y").parse().unwrap();
        assert!(y >= 2024);
    }
}
