//! The cron expressions of `schedule` (PROTOCOL-MESH.md §12): five fields
//! (minute hour day-of-month month day-of-week), each a comma list of `*`,
//! `n`, `a-b`, `*/n` or `a-b/n`, evaluated in UTC. Day-of-month *and*
//! day-of-week must both match, as in the reference broker (classic cron
//! matches either). Values outside a field's range are dropped.

use chrono::{DateTime, Datelike, Duration, DurationRound, NaiveTime, TimeZone, Timelike, Utc};

/// How far ahead a match is looked for; none within it is `invalid_cron`.
pub const HORIZON_DAYS: i64 = 366;

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
}

/// (lowest, highest) of each field, in field order.
const RANGES: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];
const NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

impl Cron {
    /// Parses `text`, or says why it is not a usable expression (the
    /// `invalid_cron` sentence). An expression that never matches within
    /// [`HORIZON_DAYS`] of `now` is refused too.
    pub fn parse(text: &str, now: DateTime<Utc>) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week); got {}",
                fields.len()
            ));
        }
        let mut bits = [0u64; 5];
        for (i, field) in fields.iter().enumerate() {
            bits[i] = field_bits(field, RANGES[i])
                .map_err(|e| format!("{} field `{field}`: {e}", NAMES[i]))?;
        }
        let cron = Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays: bits[4] as u8,
        };
        match cron.next_after(now) {
            Some(_) => Ok(cron),
            None => Err(format!(
                "`{text}` matches no minute within {HORIZON_DAYS} days"
            )),
        }
    }

    /// The first matching minute strictly after `t`, if one comes within
    /// [`HORIZON_DAYS`].
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t.duration_trunc(Duration::minutes(1)).ok()? + Duration::minutes(1);
        let first_day = start.date_naive();
        for d in 0..=HORIZON_DAYS {
            let day = first_day + Duration::days(d);
            if !self.day_matches(day.day(), day.month(), day.weekday().num_days_from_sunday()) {
                continue;
            }
            let from = if d == 0 {
                (start.hour(), start.minute())
            } else {
                (0, 0)
            };
            for h in from.0..24 {
                if self.hours & (1 << h) == 0 {
                    continue;
                }
                let m0 = if h == from.0 { from.1 } else { 0 };
                if let Some(m) = (m0..60).find(|m| self.minutes & (1 << m) != 0) {
                    let time = NaiveTime::from_hms_opt(h, m, 0)?;
                    return Some(Utc.from_utc_datetime(&day.and_time(time)));
                }
            }
        }
        None
    }

    fn day_matches(&self, day: u32, month: u32, weekday: u32) -> bool {
        self.days & (1 << day) != 0
            && self.months & (1 << month) != 0
            && self.weekdays & (1 << weekday) != 0
    }
}

/// One field's allowed values as bits; out-of-range values are dropped.
fn field_bits(field: &str, (lo, hi): (u32, u32)) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err("an empty list item".into());
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = number(s)?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else if step > 1 {
            return Err(format!("`{item}`: a step needs `*` or a range"));
        } else {
            let n = number(range)?;
            (n, n)
        };
        let mut v = a;
        while v <= b {
            if (lo..=hi).contains(&v) {
                bits |= 1 << v;
            }
            v = match v.checked_add(step) {
                Some(v) => v,
                None => break,
            };
        }
    }
    Ok(bits)
}

fn number(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 4 {
        return Err(format!("`{s}` is not a number"));
    }
    s.parse().map_err(|_| format!("`{s}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_matching_minutes() {
        // 2026-06-14 is a Sunday.
        let cases = [
            ("* * * * *", "2026-06-14T12:51:31Z", "2026-06-14T12:52:00Z"),
            ("* * * * *", "2026-06-14T12:51:00Z", "2026-06-14T12:52:00Z"),
            (
                "0 9 * * 1-5",
                "2026-06-14T12:51:31Z",
                "2026-06-15T09:00:00Z",
            ),
            (
                "0 9 * * 1-5",
                "2026-06-15T08:59:59Z",
                "2026-06-15T09:00:00Z",
            ),
            (
                "*/15 * * * *",
                "2026-06-14T12:51:31Z",
                "2026-06-14T13:00:00Z",
            ),
            (
                "5-20/5 * * * *",
                "2026-06-14T12:10:00Z",
                "2026-06-14T12:15:00Z",
            ),
            (
                "30 23 31 12 *",
                "2026-06-14T12:00:00Z",
                "2026-12-31T23:30:00Z",
            ),
            ("0 0 1 * *", "2026-12-31T23:59:00Z", "2027-01-01T00:00:00Z"),
            ("0 0 29 2 *", "2027-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            // Both day fields must match: the 13th that is a Friday.
            (
                "0 12 13 * 5",
                "2026-06-14T00:00:00Z",
                "2026-11-13T12:00:00Z",
            ),
            // Out-of-range values are dropped, the rest stays.
            (
                "0,75 * * * *",
                "2026-06-14T12:51:31Z",
                "2026-06-14T13:00:00Z",
            ),
            (
                "0 0 * * 0,7",
                "2026-06-15T00:00:00Z",
                "2026-06-21T00:00:00Z",
            ),
            (
                "1,2,3 4 * * *",
                "2026-06-14T04:02:00Z",
                "2026-06-14T04:03:00Z",
            ),
        ];
        for (expr, now, want) in cases {
            let now = at(now);
            let cron = Cron::parse(expr, now).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(cron.next_after(now), Some(at(want)), "{expr} after {now}");
        }
    }

    #[test]
    fn invalid_expressions_say_why() {
        let now = at("2026-06-14T12:51:31Z");
        let cases = [
            ("", "5 fields"),
            ("* * * *", "got 4"),
            ("* * * * * *", "got 6"),
            ("a * * * *", "minute field `a`"),
            ("1, * * * *", "empty list item"),
            ("*/0 * * * *", "step of 0"),
            ("5/2 * * * *", "a step needs"),
            ("* -1 * * *", "hour field"),
            ("99 * * * *", "matches no minute"),
            ("0 0 30 2 *", "matches no minute"),
            ("0 0 31 4 *", "matches no minute"),
        ];
        for (expr, want) in cases {
            let e = Cron::parse(expr, now).unwrap_err();
            assert!(e.contains(want), "{expr}: {e}");
        }
    }

    #[test]
    fn a_match_far_ahead_is_found_within_the_horizon() {
        // Feb 29 on a Monday: 2032 from mid-2026 is beyond 366 days.
        let now = at("2026-06-14T12:00:00Z");
        assert!(Cron::parse("0 0 29 2 1", now).is_err());
        let cron = Cron::parse("0 0 29 2 *", at("2027-03-01T00:00:00Z")).unwrap();
        assert_eq!(
            cron.next_after(at("2027-03-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
    }
}
