//! The `Date` header value (RFC 9110 §5.6.7 IMF-fixdate), formatted once a
//! second per worker rather than once per response.
//!
//! [`HttpDate`] holds the 29 bytes of `Sun, 06 Nov 1994 08:49:37 GMT`.
//! A worker keeps one in a `Cell` and a timer task refreshes it every second
//! ([`HttpDate::from_unix`] takes the time as an argument so tests need no
//! clock). Formatting costs a few dozen integer operations; reading it on the
//! hot path is a 29-byte copy.
//!
//! [`parse_http_date`] reads the three formats a recipient must accept
//! (IMF-fixdate, the obsolete RFC 850 and asctime forms) back into seconds
//! since the epoch, from untrusted bytes, without allocating: `Expires`,
//! `Date`, `Last-Modified` from origins and `If-Modified-Since` from clients.

#![forbid(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate string.
pub const DATE_LEN: usize = 29;

/// A formatted IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HttpDate([u8; DATE_LEN]);

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

impl HttpDate {
    /// The date for `secs` seconds since the Unix epoch (UTC).
    pub fn from_unix(secs: u64) -> HttpDate {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        let weekday = DAYS[(days % 7) as usize];
        let (year, month, day) = civil_from_days(days as i64);

        let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        out[0..3].copy_from_slice(weekday);
        two_digits(&mut out[5..7], day as u64);
        out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
        let y = year as u64;
        out[12] = b'0' + ((y / 1000) % 10) as u8;
        out[13] = b'0' + ((y / 100) % 10) as u8;
        out[14] = b'0' + ((y / 10) % 10) as u8;
        out[15] = b'0' + (y % 10) as u8;
        two_digits(&mut out[17..19], hh);
        two_digits(&mut out[20..22], mm);
        two_digits(&mut out[23..25], ss);
        HttpDate(out)
    }

    /// The date now, by the system clock.
    pub fn now() -> HttpDate {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        HttpDate::from_unix(secs)
    }

    /// The formatted bytes.
    pub fn as_bytes(&self) -> &[u8; DATE_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for HttpDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("?"))
    }
}

/// Seconds since the Unix epoch of an HTTP-date (RFC 9110 §5.6.7):
/// `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT` (a
/// two-digit year more than 50 years ahead is taken in the past century)
/// or `Sun Nov  6 08:49:37 1994`. Surrounding spaces are ignored; anything
/// else malformed, a date before 1970, or a day the month does not have is
/// `None`. The weekday name is checked for form, not against the date.
pub fn parse_http_date(v: &[u8]) -> Option<u64> {
    let v = crate::http::parse::trim(v);
    if let Some(comma) = v.iter().position(|&b| b == b',') {
        let (day_name, rest) = (&v[..comma], v.get(comma + 1..)?);
        if !day_name.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let rest = rest.strip_prefix(b" ")?;
        if day_name.len() == 3 {
            // IMF-fixdate: "06 Nov 1994 08:49:37 GMT"
            if rest.len() != 24 || rest[2] != b' ' || rest[6] != b' ' || rest[11] != b' ' {
                return None;
            }
            let day = digits(&rest[0..2])?;
            let month = month(&rest[3..6])?;
            let year = digits(&rest[7..11])?;
            let secs = clock(&rest[12..20])?;
            (&rest[20..] == b" GMT").then_some(())?;
            to_unix(year, month, day, secs)
        } else {
            // RFC 850: "06-Nov-94 08:49:37 GMT"
            if rest.len() != 22 || rest[2] != b'-' || rest[6] != b'-' || rest[9] != b' ' {
                return None;
            }
            let day = digits(&rest[0..2])?;
            let month = month(&rest[3..6])?;
            let yy = digits(&rest[7..9])?;
            let secs = clock(&rest[10..18])?;
            (&rest[18..] == b" GMT").then_some(())?;
            // RFC 9110: a year more than 50 years in the future is in the
            // past century; with no clock here, 70-99 are 19xx.
            let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
            to_unix(year, month, day, secs)
        }
    } else {
        // asctime: "Sun Nov  6 08:49:37 1994"
        if v.len() != 24 || v[3] != b' ' || v[7] != b' ' || v[10] != b' ' || v[19] != b' ' {
            return None;
        }
        if !v[0..3].iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let month = month(&v[4..7])?;
        let day = match v[8] {
            b' ' => digits(&v[9..10])?,
            _ => digits(&v[8..10])?,
        };
        let secs = clock(&v[11..19])?;
        let year = digits(&v[20..24])?;
        to_unix(year, month, day, secs)
    }
}

/// A run of ASCII digits as a number (at most 4 digits here).
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &b| n * 10 + u64::from(b - b'0')))
}

/// A three-letter month name (case-sensitive, as the grammar says) as 1-12.
fn month(v: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| &m[..] == v)
        .map(|i| i as u32 + 1)
}

/// `hh:mm:ss` as seconds into the day (a leap second 60 is accepted).
fn clock(v: &[u8]) -> Option<u64> {
    if v.len() != 8 || v[2] != b':' || v[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&v[0..2])?, digits(&v[3..5])?, digits(&v[6..8])?);
    (h < 24 && m < 60 && s <= 60).then_some(h * 3600 + m * 60 + s)
}

fn to_unix(year: u64, month: u32, day: u64, secs: u64) -> Option<u64> {
    if !(1970..=9999).contains(&year) || day == 0 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > month_days {
        return None;
    }
    let days = days_from_civil(year as i64, month, day as u32);
    u64::try_from(days).ok().map(|d| d * 86_400 + secs)
}

/// Howard Hinnant's civil-to-days algorithm, the inverse of
/// [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn two_digits(out: &mut [u8], v: u64) {
    out[0] = b'0' + ((v / 10) % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// Howard Hinnant's days-to-civil algorithm: (year, month 1-12, day 1-31).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_formats() {
        assert_eq!(
            parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"  Thu, 01 Jan 1970 00:00:00 GMT "),
            Some(0)
        );
        assert_eq!(
            parse_http_date(b"Tue, 29 Feb 2000 23:59:59 GMT"),
            Some(951_868_799)
        );
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 nov 1994 08:49:37 GMT",
            b"Sun, 29 Feb 1900 08:49:37 GMT",
            b"Sun, 31 Apr 2020 08:49:37 GMT",
            b"Sun, 06 Nov 1969 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMTX",
            b"Sun Nov  6 08:49:37 94",
            b"\xff\xfe, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(
                parse_http_date(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(2000))]

        /// Every date this module formats parses back to itself.
        #[test]
        fn formatted_dates_round_trip(secs in 0u64..253_402_300_799) {
            let d = HttpDate::from_unix(secs);
            prop_assert_eq!(parse_http_date(d.as_bytes()), Some(secs));
        }

        /// Arbitrary and mutated bytes never panic; what parses formats
        /// back to a date that parses to the same second.
        #[test]
        fn hostile_dates_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            secs in 0u64..4_000_000_000,
            flip in 0usize..29,
            with in any::<u8>(),
        ) {
            if let Some(s) = parse_http_date(&bytes) {
                prop_assert_eq!(parse_http_date(HttpDate::from_unix(s).as_bytes()), Some(s));
            }
            let mut d = *HttpDate::from_unix(secs).as_bytes();
            d[flip] = with;
            if let Some(s) = parse_http_date(&d) {
                prop_assert_eq!(parse_http_date(HttpDate::from_unix(s).as_bytes()), Some(s));
            }
            let _ = parse_http_date(&d[..flip]);
        }
    }

    #[test]
    fn formats_known_dates() {
        assert_eq!(
            HttpDate::from_unix(784_111_777).as_bytes(),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            HttpDate::from_unix(0).as_bytes(),
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
        // 2000-02-29 (leap day) 23:59:59
        assert_eq!(
            HttpDate::from_unix(951_868_799).as_bytes(),
            b"Tue, 29 Feb 2000 23:59:59 GMT"
        );
        // 2026-11-22 12:00:00
        assert_eq!(
            HttpDate::from_unix(1_795_348_800).as_bytes(),
            b"Sun, 22 Nov 2026 12:00:00 GMT"
        );
    }
}
