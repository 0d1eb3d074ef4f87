//! Time comes from the platform (JavaScript's clock in the worker) and is passed in as
//! milliseconds since the epoch; this module only formats and parses RFC 3339, by hand:
//! a date library cost the worker more wasm than these few functions (see BENCHMARKS.md).
//! The parser accepts exactly what chrono's `DateTime::parse_from_rfc3339` accepts; the
//! tests compare the two.

const MS_PER_DAY: i64 = 86_400_000;
/// The last year a timestamp may fall in (chrono's limit, kept for identical output).
const MAX_YEAR: i64 = 262_142;

/// `2023-11-14T22:13:20.123Z`; a time past the year 262,142 formats as the epoch.
pub fn rfc3339(now_ms: u64) -> String {
    let ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let (days, in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    let (year, month, day, in_day) = if year > MAX_YEAR {
        (1970, 1, 1, 0)
    } else {
        (year, month, day, in_day)
    };
    let year = if year <= 9999 {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Milliseconds since the epoch of an RFC 3339 timestamp, if it is one (and not before
/// the epoch).
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    u64::try_from(parse_rfc3339_signed_ms(text)?).ok()
}

/// Whether `text` is an RFC 3339 timestamp (any year from 0000 to 9999, any offset).
pub fn is_rfc3339(text: &str) -> bool {
    parse_rfc3339_signed_ms(text).is_some()
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|±HH:MM)`, seconds up to 60 (a leap second
/// counts as the 59th plus one), offsets up to 23:59.
fn parse_rfc3339_signed_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let year = digits(0..4)?;
    (b[4] == b'-').then_some(())?;
    let month = digits(5..7)?;
    (b[7] == b'-').then_some(())?;
    let day = digits(8..10)?;
    matches!(b[10], b'T' | b't' | b' ').then_some(())?;
    let hour = digits(11..13)?;
    (b[13] == b':').then_some(())?;
    let minute = digits(14..16)?;
    (b[16] == b':').then_some(())?;
    let second = digits(17..19)?;

    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = if second == 60 { 1000 } else { 0 };
    let second = second.min(59);
    if let Some((b'.', fraction)) = rest.split_first() {
        let count = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        // Milliseconds from the first three digits; the rest only has to be digits.
        let mut ms = 0;
        for i in 0..3 {
            ms = ms * 10
                + fraction
                    .get(i)
                    .filter(|_| i < count)
                    .map_or(0, |c| i64::from(c - b'0'));
        }
        millis += ms;
        rest = &fraction[count..];
    }

    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        _ => {
            let (negative, rest) = match rest {
                [b'+', rest @ ..] => (false, rest),
                [b'-', rest @ ..] => (true, rest),
                // U+2212 MINUS SIGN, which chrono accepts too.
                [0xE2, 0x88, 0x92, rest @ ..] => (true, rest),
                _ => return None,
            };
            let [h1, h2, b':', m1, m2] = *rest else {
                return None;
            };
            let (h1, h2, m1, m2) = (h1, h2, m1, m2);
            if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit) || m1 > b'5' {
                return None;
            }
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            if hours > 23 {
                return None;
            }
            let minutes = hours * 60 + i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if negative {
                -minutes
            } else {
                minutes
            }
        }
    };

    let local_seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((local_seconds - offset_minutes * 60) * 1000 + millis)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, SecondsFormat, Utc};

    #[test]
    fn formats_and_parses_millisecond_timestamps() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    fn chrono_format(now_ms: u64) -> String {
        let ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn chrono_parse(text: &str) -> Option<i64> {
        Some(DateTime::parse_from_rfc3339(text).ok()?.timestamp_millis())
    }

    /// A small deterministic generator, so the comparison needs no extra dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn formats_as_chrono_did() {
        let mut rng = Lcg(7);
        let mut samples = vec![
            0,
            1,
            999,
            86_399_999,
            951_782_400_000,       // 2000-02-29
            253_402_300_799_999,   // 9999-12-31T23:59:59.999
            253_402_300_800_000,   // 10000-01-01
            8_210_266_876_799_999, // the last millisecond chrono formats
            8_210_266_876_800_000, // past it
            u64::MAX,
            i64::MAX as u64,
        ];
        for _ in 0..100_000 {
            samples.push(rng.next() * rng.below(1 << 20) % 300_000_000_000_000);
        }
        for ms in samples {
            assert_eq!(rfc3339(ms), chrono_format(ms), "{ms}");
        }
    }

    #[test]
    fn parses_what_chrono_parses() {
        let fixed = [
            "2024-01-01T00:00:00Z",
            "2024-01-01t00:00:00z",
            "2024-01-01 00:00:00+00:00",
            "2024-02-29T12:00:00.5+01:30",
            "2023-02-29T12:00:00Z",
            "2024-04-31T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:60.999999999999-23:59",
            "2024-01-01T23:59:60Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:61Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.123456789123Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+01:60",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+01",
            "2024-01-01T00:00:00\u{2212}05:00",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00Zz",
            "2024-01-01T00:00:00 Z",
            "2024-1-01T00:00:00Z",
            "+2024-01-01T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-13-10T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-01T00:00:00.1é",
            "",
        ];
        for text in fixed {
            assert_eq!(
                parse_rfc3339_signed_ms(text),
                chrono_parse(text),
                "{text:?}"
            );
        }
        let mut rng = Lcg(11);
        let alphabet = b"0123456789-:T .Z+z";
        for _ in 0..200_000 {
            // A valid timestamp, then a few random edits.
            let ms = rng.below(400_000_000_000_000) as i64 - 62_000_000_000_000;
            let mut text = DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::AutoSi, rng.below(2) == 0)
                .into_bytes();
            for _ in 0..rng.below(3) {
                let at = rng.below(text.len() as u64) as usize;
                match rng.below(3) {
                    0 => text[at] = alphabet[rng.below(alphabet.len() as u64) as usize],
                    1 => {
                        text.remove(at);
                    }
                    _ => text.insert(at, alphabet[rng.below(alphabet.len() as u64) as usize]),
                }
            }
            let text = String::from_utf8(text).unwrap();
            assert_eq!(
                parse_rfc3339_signed_ms(&text),
                chrono_parse(&text),
                "{text:?}"
            );
            assert_eq!(
                parse_rfc3339_ms(&text),
                chrono_parse(&text).and_then(|ms| u64::try_from(ms).ok())
            );
        }
    }
}
