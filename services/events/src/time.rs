//! Timestamps as clients write them: RFC 3339 with any offset, or a naive date-time (`T` or a
//! space between date and time, optional fraction) taken as UTC, or a bare date (midnight
//! UTC). Stored and compared as milliseconds since the epoch.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};

const NAIVE_FORMATS: [&str; 4] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
const ZONED_FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"];

/// Milliseconds since the epoch of `text`, or why it is not a timestamp.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("timestamp is empty".to_owned());
    }
    if let Some(millis) = parse_common(text.as_bytes()) {
        return Ok(millis);
    }
    if let Ok(zoned) = DateTime::parse_from_rfc3339(text) {
        return Ok(zoned.timestamp_millis());
    }
    for format in ZONED_FORMATS {
        if let Ok(zoned) = DateTime::parse_from_str(text, format) {
            return Ok(zoned.timestamp_millis());
        }
    }
    let naive = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    for format in NAIVE_FORMATS {
        if let Ok(naive) = NaiveDateTime::parse_from_str(naive, format) {
            return Ok(naive.and_utc().timestamp_millis());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc().timestamp_millis());
    }
    Err(format!("{text:?} is not a timestamp (expected e.g. 2021-06-15T10:00:00Z or 2021-06-15 10:00:00)"))
}

/// The common shape, `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`, parsed by hand: it is
/// on the ingest path of every event, and chrono's format-driven parsers are several times
/// slower. Anything else (or anything odd, such as a leap second) falls through to them.
fn parse_common(b: &[u8]) -> Option<i64> {
    fn number(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(number(&b[0..4])? as i32, number(&b[5..7])?, number(&b[8..10])?)?;
    let (hour, minute, second) = (number(&b[11..13])?, number(&b[14..16])?, number(&b[17..19])?);
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return None;
        }
        nanos *= 10u32.pow(9u32.saturating_sub(digits as u32));
    }
    let offset_seconds = match &b[at..] {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let (hours, minutes) = (number(&[*h1, *h2])?, number(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(NaiveDateTime::new(date, time).and_utc().timestamp_millis() - offset_seconds * 1000)
}

/// RFC 3339 in UTC with milliseconds, the form every response uses.
pub fn format_timestamp(millis: i64) -> String {
    shared::rfc3339_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seeds_forms_with_and_without_zone() {
        let utc = parse_timestamp("2021-06-15T00:00:00Z").unwrap();
        assert_eq!(parse_timestamp("2021-06-15 00:00:00").unwrap(), utc);
        assert_eq!(parse_timestamp("2021-06-15T00:00:00").unwrap(), utc);
        assert_eq!(parse_timestamp("2021-06-15").unwrap(), utc);
        assert_eq!(parse_timestamp("2021-06-15T02:00:00+02:00").unwrap(), utc);
        assert_eq!(parse_timestamp("2021-06-15 02:00:00+0200").unwrap(), utc);
        assert_eq!(parse_timestamp("2021-06-15 00:00:00Z").unwrap(), utc);
        assert_eq!(parse_timestamp(" 2021-06-15T00:00 ").unwrap(), utc);
        assert_eq!(parse_timestamp("2021-07-01T03:31:27.425713Z").unwrap(), utc + 16 * 86_400_000 + 12_687_425);
        assert_eq!(parse_timestamp("2019-04-16T20:40:50").unwrap(), 1_555_447_250_000);
    }

    #[test]
    fn the_fast_path_agrees_with_chrono() {
        for text in [
            "2021-06-15T00:00:00Z",
            "2021-06-15 00:00:00",
            "2021-06-15t23:59:59.999999999-03:30",
            "2021-07-01T03:31:27.425713Z",
            "1969-12-31T23:59:59.5+0100",
            "2020-02-29 12:00:00.1",
        ] {
            let fast = parse_common(text.as_bytes()).unwrap_or_else(|| panic!("{text} takes the fast path"));
            let normalized = text.replacen(' ', "T", 1);
            let slow = DateTime::parse_from_rfc3339(&normalized)
                .map(|d| d.timestamp_millis())
                .or_else(|_| {
                    DateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M:%S%.f%z").map(|d| d.timestamp_millis())
                })
                .or_else(|_| {
                    NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|d| d.and_utc().timestamp_millis())
                })
                .unwrap();
            assert_eq!(fast, slow, "{text}");
        }
        for odd in [
            "2021-02-30T00:00:00",
            "2021-06-15T24:00:00",
            "2021-06-15T10:00:00.",
            "2021-06-15T10:00:00+2",
            "2021-06-15T10:00:60Z",
        ] {
            assert_eq!(parse_common(odd.as_bytes()), None, "{odd}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for text in ["", "yesterday", "2021-13-01T00:00:00", "2021-06-15T25:00:00", "1623715200", "2021/06/15"] {
            assert!(parse_timestamp(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formats_in_utc_with_milliseconds() {
        assert_eq!(format_timestamp(parse_timestamp("2021-06-15 02:00:00+0200").unwrap()), "2021-06-15T00:00:00.000Z");
    }
}
