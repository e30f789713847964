//! The `Date` header value (RFC 9110 §5.6.7 IMF-fixdate), formatted once a
//! second per worker rather than once per response.
//!
//! [`HttpDate`] holds the 29 bytes of `Sun, 06 Nov 1994 08:49:37 GMT`.
//! A worker keeps one in a `Cell` and a timer task refreshes it every second
//! ([`HttpDate::from_unix`] takes the time as an argument so tests need no
//! clock). Formatting costs a few dozen integer operations; reading it on the
//! hot path is a 29-byte copy.

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
