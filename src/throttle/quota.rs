//! Usage-plan quotas and usage counting: how many requests each API key
//! made under each plan, per UTC day, and whether its quota for the
//! current period (a calendar DAY, WEEK or MONTH in UTC) has room for one
//! more.
//!
//! # On the request path
//! A request admitted past throttling on a route that requires a key calls
//! [`UsageCell::admit`] on its (plan, key) cell: with a quota, one
//! `fetch_add` on the period's count (refused, and undone, when the count
//! has reached the period's allowance); then one `fetch_add` on the
//! unflushed count of the current UTC day. No lock, no allocation. The
//! period rolls over on the first request after its end (one
//! compare-and-swap decides which thread resets the count).
//!
//! # Off the request path
//! [`Usage`] holds every cell, by (plan id, key id), across snapshots: a
//! reload or a deployment never resets a count. The control side drains
//! the unflushed counts ([`Usage::drain`]) into the state store at least
//! once a second and on shutdown; after a `kill -9`, at most the counts
//! since the last flush are lost. Each cell keeps its unflushed counts in
//! four slots by UTC day (`day mod 4`), so a flush that runs just after
//! midnight still files each request under the day it was made.
//!
//! # Time
//! Quotas run on wall-clock time (UTC calendar periods), read as the
//! throttle's monotonic nanoseconds plus an offset ([`UsageClock`]),
//! refreshed from the system clock at every flush. Tests shift that offset
//! to cross a period boundary without waiting for midnight.
//!
//! # Periods (SPEC: API Gateway's `QuotaSettings`)
//! DAY runs 00:00–24:00 UTC; WEEK starts Monday 00:00 UTC; MONTH starts on
//! day 1, 00:00 UTC. `offset` requests are taken off the limit in the plan's
//! first period only (the one containing the time the plan was created, or
//! first seen in the configuration file).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crossbeam::utils::CachePadded;
use serde::{Deserialize, Serialize};

/// Seconds in a day.
pub const DAY_SECS: u64 = 86_400;
const NS_PER_SEC: u64 = 1_000_000_000;

/// A quota's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Period {
    /// 00:00 to 24:00 UTC.
    Day,
    /// Monday 00:00 UTC to the next Monday.
    Week,
    /// Day 1 00:00 UTC to day 1 of the next month.
    Month,
}

impl Period {
    /// `DAY`, `WEEK` or `MONTH` (API Gateway's spelling; any case).
    pub fn parse(s: &str) -> Option<Period> {
        match s.to_ascii_uppercase().as_str() {
            "DAY" => Some(Period::Day),
            "WEEK" => Some(Period::Week),
            "MONTH" => Some(Period::Month),
            _ => None,
        }
    }

    /// As API Gateway writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "DAY",
            Period::Week => "WEEK",
            Period::Month => "MONTH",
        }
    }

    fn code(self) -> u64 {
        match self {
            Period::Day => 0,
            Period::Week => 1,
            Period::Month => 2,
        }
    }

    fn from_code(c: u64) -> Period {
        match c {
            1 => Period::Week,
            2 => Period::Month,
            _ => Period::Day,
        }
    }

    /// The period containing `t` (seconds since the Unix epoch), as
    /// `[start, end)` in seconds.
    pub fn bounds(self, t: u64) -> (u64, u64) {
        let day = t / DAY_SECS;
        match self {
            Period::Day => (day * DAY_SECS, (day + 1) * DAY_SECS),
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday-based weekday = (day + 3) % 7.
                let monday = day - (day + 3) % 7;
                (monday * DAY_SECS, (monday + 7) * DAY_SECS)
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1);
                (start * DAY_SECS, end * DAY_SECS)
            }
        }
    }
}

/// A usage plan's quota (API Gateway's `QuotaSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuotaSettings {
    /// Requests per period.
    pub limit: u64,
    /// The period.
    pub period: Period,
    /// Requests taken off `limit` in the plan's first period only.
    #[serde(default)]
    pub offset: u64,
}

impl QuotaSettings {
    /// The allowance of the period starting at `start`, for a plan created
    /// (or first seen) at `created` (seconds).
    pub fn allowance(&self, start: u64, created: u64) -> u64 {
        if self.period.bounds(created).0 == start {
            self.limit.saturating_sub(self.offset)
        } else {
            self.limit
        }
    }
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days ≥ 0).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date (year ≥ 1970).
pub fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// `YYYY-MM-DD` of a day count.
pub fn format_day(day: u64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day count of `YYYY-MM-DD` (1970 or later), if it is a real date.
pub fn parse_day(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if y < 1970 || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let day = days_from_civil(y, m, d);
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// Wall-clock time for quotas: the throttle's monotonic clock plus an
/// offset, so the request path reads one clock for both.
#[derive(Debug)]
pub struct UsageClock {
    /// Unix time minus monotonic time, in ns (plus a test's shift).
    offset: AtomicI64,
    /// What a test added ([`UsageClock::shift`]), kept across refreshes.
    shift: AtomicI64,
}

impl Default for UsageClock {
    fn default() -> Self {
        let c = UsageClock {
            offset: AtomicI64::new(0),
            shift: AtomicI64::new(0),
        };
        c.refresh();
        c
    }
}

impl UsageClock {
    /// Re-reads the system clock (so a stepped clock is followed within a
    /// flush interval).
    pub fn refresh(&self) {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mono = super::now_ns() as i64;
        self.offset
            .store(unix - mono + self.shift.load(Relaxed), Relaxed);
    }

    /// Moves this clock by `secs` (for tests of period boundaries: the
    /// gateway then behaves as if that much time had passed).
    pub fn shift(&self, secs: i64) {
        self.shift
            .fetch_add(secs.saturating_mul(NS_PER_SEC as i64), Relaxed);
        self.refresh();
    }

    /// Unix nanoseconds at monotonic `mono_ns`.
    #[inline]
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i64)
            .saturating_add(self.offset.load(Relaxed))
            .max(0) as u64
    }

    /// Unix seconds now.
    pub fn unix_secs(&self) -> u64 {
        self.unix_ns(super::now_ns()) / NS_PER_SEC
    }
}

/// No quota: the allowance and period end that never bind.
const UNLIMITED: u64 = u64::MAX;

/// One (plan, key) pair's counters. The request path touches only atomics.
#[derive(Debug)]
pub struct UsageCell {
    clock: Arc<UsageClock>,
    /// `UNLIMITED` without a quota, else the quota's limit.
    limit: AtomicU64,
    /// `Period` code.
    period: AtomicU64,
    offset: AtomicU64,
    /// The plan's creation (or first-seen) time, seconds.
    created: AtomicU64,
    /// The current period `[start, end)`, seconds.
    start: AtomicU64,
    end: AtomicU64,
    /// What the current period allows (the limit, less the offset in the
    /// first period, or what an operator set).
    allowance: AtomicU64,
    /// Requests counted against the current period.
    used: CachePadded<AtomicU64>,
    /// Admitted requests not yet flushed, by UTC day mod 4.
    pending: CachePadded<[AtomicU64; 4]>,
}

/// A request refused by its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// Seconds until the period ends (for `Retry-After`).
    pub retry_after_secs: u64,
}

impl UsageCell {
    fn new(clock: Arc<UsageClock>) -> UsageCell {
        UsageCell {
            clock,
            limit: AtomicU64::new(UNLIMITED),
            period: AtomicU64::new(0),
            offset: AtomicU64::new(0),
            created: AtomicU64::new(0),
            start: AtomicU64::new(0),
            end: AtomicU64::new(UNLIMITED),
            allowance: AtomicU64::new(UNLIMITED),
            used: CachePadded::new(AtomicU64::new(0)),
            pending: CachePadded::new(Default::default()),
        }
    }

    /// Counts one admitted request at monotonic time `mono_ns`, or refuses
    /// it when the quota for the current period is used up (then nothing
    /// is counted). Lock-free, allocation-free.
    #[inline]
    pub fn admit(&self, mono_ns: u64) -> Result<(), QuotaExceeded> {
        let now = self.clock.unix_ns(mono_ns) / NS_PER_SEC;
        if self.limit.load(Relaxed) != UNLIMITED {
            if now >= self.end.load(Relaxed) || now < self.start.load(Relaxed) {
                self.roll(now);
            }
            let used = self.used.fetch_add(1, Relaxed);
            if used >= self.allowance.load(Relaxed) {
                self.used.fetch_sub(1, Relaxed);
                return Err(QuotaExceeded {
                    retry_after_secs: self.end.load(Relaxed).saturating_sub(now).max(1),
                });
            }
        }
        self.pending[(now / DAY_SECS) as usize & 3].fetch_add(1, Relaxed);
        Ok(())
    }

    /// Starts the period containing `now` (one thread wins; the others see
    /// its result).
    #[cold]
    fn roll(&self, now: u64) {
        let old_end = self.end.load(Relaxed);
        let period = Period::from_code(self.period.load(Relaxed));
        let (start, end) = period.bounds(now);
        if self
            .end
            .compare_exchange(old_end, end, Relaxed, Relaxed)
            .is_ok()
        {
            let q = QuotaSettings {
                limit: self.limit.load(Relaxed),
                period,
                offset: self.offset.load(Relaxed),
            };
            self.start.store(start, Relaxed);
            self.used.store(0, Relaxed);
            self.allowance
                .store(q.allowance(start, self.created.load(Relaxed)), Relaxed);
        }
    }

    /// The quota settings, if any.
    pub fn quota(&self) -> Option<QuotaSettings> {
        let limit = self.limit.load(Relaxed);
        (limit != UNLIMITED).then(|| QuotaSettings {
            limit,
            period: Period::from_code(self.period.load(Relaxed)),
            offset: self.offset.load(Relaxed),
        })
    }

    /// The current period `[start, end)` in seconds, its allowance and what
    /// was used of it (`None` without a quota), after rolling over to the
    /// period containing the clock's now.
    pub fn period_state(&self) -> Option<PeriodState> {
        self.quota()?;
        let now = self.clock.unix_secs();
        if now >= self.end.load(Relaxed) || now < self.start.load(Relaxed) {
            self.roll(now);
        }
        Some(PeriodState {
            start: self.start.load(Relaxed),
            end: self.end.load(Relaxed),
            allowance: self.allowance.load(Relaxed),
            used: self.used.load(Relaxed),
        })
    }

    /// Sets what remains of the current period's quota (API Gateway's
    /// UpdateUsage `/remaining`); returns the new period state.
    pub fn set_remaining(&self, remaining: u64) -> Option<PeriodState> {
        let s = self.period_state()?;
        self.allowance
            .store(s.used.saturating_add(remaining), Relaxed);
        self.period_state()
    }

    /// Sets the allowance of the period starting at `start` (ignored if
    /// another period is current by now).
    pub fn set_allowance(&self, start: u64, allowance: u64) {
        if self.start.load(Relaxed) == start {
            self.allowance.store(allowance, Relaxed);
        }
    }

    /// Configures the quota (`None`: none) for a plan created at `created`
    /// (seconds), starting the current period with `used` requests already
    /// counted and, when an operator set one for this period, `allowance`.
    /// A cell whose settings are unchanged keeps its counts.
    fn configure(&self, quota: Option<QuotaSettings>, created: u64, restored: Restored) {
        if self.quota() == quota && self.created.load(Relaxed) == created && !restored.force {
            return;
        }
        let Some(q) = quota else {
            self.limit.store(UNLIMITED, Relaxed);
            self.end.store(UNLIMITED, Relaxed);
            self.allowance.store(UNLIMITED, Relaxed);
            return;
        };
        let now = self.clock.unix_secs();
        let (start, end) = q.period.bounds(now);
        self.period.store(q.period.code(), Relaxed);
        self.offset.store(q.offset, Relaxed);
        self.created.store(created, Relaxed);
        self.start.store(start, Relaxed);
        let allowance = match restored.allowance {
            Some((s, a)) if s == start => a,
            _ => q.allowance(start, created),
        };
        // A quota that changes mid-period keeps what was used of it.
        let used = if restored.force {
            restored.used
        } else {
            self.used.load(Relaxed)
        };
        self.used.store(used, Relaxed);
        self.allowance.store(allowance, Relaxed);
        self.end.store(end, Relaxed);
        self.limit.store(q.limit, Relaxed);
    }

    /// The unflushed counts, `(day, count)` for each non-empty slot, taken
    /// (`take`) or only read; `today` is the reader's UTC day (slots are
    /// `day mod 4`: yesterday, today, tomorrow and the day before
    /// yesterday).
    fn pending_days(&self, today: u64, take: bool) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..4u64).filter_map(move |i| {
            let day = (today + i).wrapping_sub(1);
            let slot = &self.pending[(day & 3) as usize];
            let n = if take {
                slot.swap(0, Relaxed)
            } else {
                slot.load(Relaxed)
            };
            (n > 0).then_some((day, n))
        })
    }
}

/// A quota's current period ([`UsageCell::period_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodState {
    /// Start, seconds since the epoch.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// Requests the period allows.
    pub allowance: u64,
    /// Requests counted in it.
    pub used: u64,
}

impl PeriodState {
    /// What is left.
    pub fn remaining(&self) -> u64 {
        self.allowance.saturating_sub(self.used)
    }
}

/// What the store had for a cell at start (`UsageCell::configure`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Restored {
    /// Requests already counted in the current period.
    pub used: u64,
    /// An operator's allowance: (period start, allowance).
    pub allowance: Option<(u64, u64)>,
    /// Apply `used` and `allowance` even to a configured cell.
    pub force: bool,
}

/// One unflushed count ([`Usage::drain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The plan's id.
    pub plan: String,
    /// The key's id.
    pub key: String,
    /// UTC day (days since 1970-01-01).
    pub day: u64,
    /// Requests.
    pub count: u64,
}

/// Every (plan, key) cell of a gateway, across snapshots.
#[derive(Debug, Default)]
pub struct Usage {
    clock: Arc<UsageClock>,
    cells: Mutex<HashMap<(String, String), Arc<UsageCell>>>,
}

impl Usage {
    /// An empty registry on the system clock.
    pub fn new() -> Usage {
        Usage::default()
    }

    /// The clock quotas run on.
    pub fn clock(&self) -> &Arc<UsageClock> {
        &self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<UsageCell>>> {
        self.cells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cell of (plan, key), created if new, configured with the plan's
    /// quota (see `UsageCell::configure`).
    pub fn cell(
        &self,
        plan: &str,
        key: &str,
        quota: Option<QuotaSettings>,
        created: u64,
        restored: impl FnOnce() -> Restored,
    ) -> Arc<UsageCell> {
        let mut cells = self.lock();
        let k = (plan.to_string(), key.to_string());
        if let Some(c) = cells.get(&k) {
            if quota.is_some() && (c.quota() != quota || c.created.load(Relaxed) != created) {
                // A new or changed quota (another period, say) counts what
                // the key used in its current period: what the store has,
                // plus what is not flushed yet.
                let r = restored();
                let today = self.clock.unix_secs() / DAY_SECS;
                let start_day =
                    quota.map_or(today, |q| q.period.bounds(today * DAY_SECS).0 / DAY_SECS);
                let pending: u64 = c
                    .pending_days(today, false)
                    .filter(|&(day, _)| day >= start_day)
                    .map(|(_, n)| n)
                    .sum();
                c.configure(
                    quota,
                    created,
                    Restored {
                        used: r.used + pending,
                        force: true,
                        ..r
                    },
                );
            } else {
                c.configure(quota, created, Restored::default());
            }
            return c.clone();
        }
        let c = Arc::new(UsageCell::new(self.clock.clone()));
        c.configure(
            quota,
            created,
            Restored {
                force: true,
                ..restored()
            },
        );
        cells.insert(k, c.clone());
        c
    }

    /// The cell of (plan, key), if one exists.
    pub fn get(&self, plan: &str, key: &str) -> Option<Arc<UsageCell>> {
        self.lock()
            .get(&(plan.to_string(), key.to_string()))
            .cloned()
    }

    /// Forgets cells for which `keep` is false (deleted plans or keys),
    /// with their unflushed counts.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.lock().retain(|(p, k), _| keep(p, k));
    }

    /// Takes every unflushed count (refreshing the clock first).
    pub fn drain(&self) -> Vec<UsageRow> {
        self.clock.refresh();
        let today = self.clock.unix_secs() / DAY_SECS;
        let cells = self.lock();
        let mut rows = Vec::new();
        for ((p, k), c) in cells.iter() {
            for (day, count) in c.pending_days(today, true) {
                rows.push(UsageRow {
                    plan: p.clone(),
                    key: k.clone(),
                    day,
                    count,
                });
            }
        }
        rows
    }

    /// Puts counts back that could not be stored (the next flush retries).
    pub fn restore(&self, rows: &[UsageRow]) {
        let cells = self.lock();
        for r in rows {
            if let Some(c) = cells.get(&(r.plan.clone(), r.key.clone())) {
                c.pending[(r.day & 3) as usize].fetch_add(r.count, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T2026_12_01: u64 = 1_796_083_200; // Tuesday 2026-12-01 00:00 UTC

    #[test]
    fn calendar() {
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(parse_day("2026-12-01"), Some(T2026_12_01 / DAY_SECS));
        assert_eq!(format_day(T2026_12_01 / DAY_SECS), "2026-12-01");
        assert_eq!(parse_day("2026-02-29"), None);
        assert_eq!(
            parse_day("2024-02-29").map(format_day).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("1969-12-31"), None);
        assert_eq!(parse_day("2026-1-01"), None);
        for day in 0..100_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn periods() {
        let t = T2026_12_01 + 3_600 * 13;
        assert_eq!(Period::Day.bounds(t), (T2026_12_01, T2026_12_01 + DAY_SECS));
        // 2026-12-01 is a Tuesday: the week started Monday 2026-11-30.
        assert_eq!(
            Period::Week.bounds(t),
            (T2026_12_01 - DAY_SECS, T2026_12_01 + 6 * DAY_SECS)
        );
        assert_eq!(
            Period::Month.bounds(t),
            (T2026_12_01, parse_day("2027-01-01").unwrap() * DAY_SECS)
        );
        let feb = parse_day("2028-02-10").unwrap() * DAY_SECS;
        assert_eq!(
            Period::Month.bounds(feb),
            (
                parse_day("2028-02-01").unwrap() * DAY_SECS,
                parse_day("2028-03-01").unwrap() * DAY_SECS
            )
        );
        // A period's end is the next one's start.
        for p in [Period::Day, Period::Week, Period::Month] {
            let (s, e) = p.bounds(t);
            assert!(s <= t && t < e);
            assert_eq!(p.bounds(e).0, e);
            assert_eq!(p.bounds(e - 1), (s, e));
        }
    }

    #[test]
    fn offset_only_in_the_first_period() {
        let q = QuotaSettings {
            limit: 100,
            period: Period::Day,
            offset: 30,
        };
        assert_eq!(q.allowance(T2026_12_01, T2026_12_01 + 5), 70);
        assert_eq!(q.allowance(T2026_12_01 + DAY_SECS, T2026_12_01 + 5), 100);
    }

    #[test]
    fn quota_refuses_then_resets_at_the_boundary() {
        let usage = Usage::new();
        let clock = usage.clock().clone();
        let now = clock.unix_secs();
        let q = QuotaSettings {
            limit: 3,
            period: Period::Day,
            offset: 0,
        };
        let cell = usage.cell("p", "k", Some(q), now - 10 * DAY_SECS, Restored::default);
        let mono = crate::throttle::now_ns();
        for _ in 0..3 {
            assert_eq!(cell.admit(mono), Ok(()));
        }
        let refused = cell.admit(mono).unwrap_err();
        assert!(refused.retry_after_secs <= DAY_SECS);
        assert_eq!(cell.period_state().unwrap().used, 3);
        // The next day.
        clock.shift(refused.retry_after_secs as i64 + 1);
        let mono = crate::throttle::now_ns();
        assert_eq!(cell.admit(mono), Ok(()));
        assert_eq!(cell.period_state().unwrap().used, 1);
        // Four admitted in all, filed under two days.
        let rows = usage.drain();
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 4);
        assert_eq!(rows.len(), 2);
        assert!(usage.drain().is_empty());
    }

    #[test]
    fn a_quota_added_later_counts_what_the_period_used() {
        let usage = Usage::new();
        let free = usage.cell("p", "k", None, 0, Restored::default);
        let mono = crate::throttle::now_ns();
        for _ in 0..4 {
            free.admit(mono).unwrap();
        }
        // 4 unflushed, and the store says 3 more earlier in the month.
        let q = QuotaSettings {
            limit: 10,
            period: Period::Month,
            offset: 0,
        };
        let cell = usage.cell("p", "k", Some(q), 0, || Restored {
            used: 3,
            ..Restored::default()
        });
        assert!(Arc::ptr_eq(&free, &cell));
        assert_eq!(cell.period_state().unwrap().used, 7);
        for _ in 0..3 {
            cell.admit(mono).unwrap();
        }
        assert!(cell.admit(mono).is_err());
    }

    #[test]
    fn set_remaining_extends_the_period() {
        let usage = Usage::new();
        let now = usage.clock().unix_secs();
        let q = QuotaSettings {
            limit: 1,
            period: Period::Month,
            offset: 0,
        };
        let cell = usage.cell("p", "k", Some(q), 0, Restored::default);
        let mono = crate::throttle::now_ns();
        assert!(cell.admit(mono).is_ok());
        assert!(cell.admit(mono).is_err());
        let s = cell.set_remaining(2).unwrap();
        assert_eq!((s.used, s.remaining()), (1, 2));
        assert!(cell.admit(mono).is_ok() && cell.admit(mono).is_ok());
        assert!(cell.admit(mono).is_err());
        assert!(s.start <= now && now < s.end);
    }

    #[test]
    fn restored_counts_and_unchanged_settings_keep_state() {
        let usage = Usage::new();
        let now = usage.clock().unix_secs();
        let q = QuotaSettings {
            limit: 10,
            period: Period::Week,
            offset: 0,
        };
        let (start, _) = Period::Week.bounds(now);
        let cell = usage.cell("p", "k", Some(q), 0, || Restored {
            used: 4,
            allowance: Some((start, 12)),
            force: false,
        });
        let s = cell.period_state().unwrap();
        assert_eq!((s.used, s.allowance), (4, 12));
        // Same settings again (a reload): nothing changes.
        let again = usage.cell("p", "k", Some(q), 0, Restored::default);
        assert!(Arc::ptr_eq(&cell, &again));
        assert_eq!(cell.period_state().unwrap().used, 4);
        // No quota: unlimited, still counted.
        let free = usage.cell("p", "other", None, 0, Restored::default);
        for _ in 0..100 {
            assert!(free.admit(crate::throttle::now_ns()).is_ok());
        }
        assert!(free.period_state().is_none());
        assert_eq!(usage.drain().iter().map(|r| r.count).sum::<u64>(), 100);
    }
}
