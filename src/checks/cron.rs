//! Cron expressions for heartbeat checks: when a job is expected to run, in its own
//! time zone.
//!
//! The five fields of crontab(5), `minute hour day-of-month month day-of-week`, each a
//! `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a list of those; months and
//! days may be named (`jan`, `mon`), Sunday is 0 or 7. As in Vixie cron, when both the
//! day of the month and the day of the week are restricted (neither starts with `*`), a
//! day matching either is a run day. `@hourly`, `@daily` (`@midnight`), `@weekly`,
//! `@monthly` and `@yearly` (`@annually`) stand for their usual expressions.
//!
//! Times are wall-clock times in the zone: a time skipped by a change to summer time
//! runs at the same distance after the change (02:30 becomes 03:30), and a time that
//! comes twice runs at its first.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};

/// The longest expression accepted.
pub const MAX_LEN: usize = 120;

/// How far ahead a run is looked for; further than any real schedule (29 February on a
/// given weekday comes at least every 28 years, but such a schedule is refused).
const HORIZON_DAYS: i32 = 8 * 366;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// The day-of-month field starts with `*`.
    any_day_of_month: bool,
    /// The day-of-week field starts with `*`.
    any_day_of_week: bool,
}

/// One field's name, range and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

impl Cron {
    /// Parses an expression; the error (`is `…`: …`) says which field is wrong and how.
    pub fn parse(expression: &str) -> Result<Cron, String> {
        let expression = expression.trim();
        Cron::parse_trimmed(expression)
            .map_err(|message| format!("is `{}`: {message}", printable(expression)))
    }

    fn parse_trimmed(expression: &str) -> Result<Cron, String> {
        if expression.len() > MAX_LEN {
            return Err(format!(
                "it is {} characters long; write at most {MAX_LEN}",
                expression.len()
            ));
        }
        let expanded = match expression.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(
                    "write one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually, or five fields".to_owned(),
                );
            }
            _ => expression,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "it has {} fields; write five, `minute hour day-of-month month day-of-week` (e.g. `30 2 * * *`, every day at 02:30)",
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        for ((part, field), bits) in parts.iter().zip(&FIELDS).zip(&mut bits) {
            *bits = parse_field(part, field)?;
        }
        // Sunday is 0 or 7.
        let days_of_week = (bits[4] | (bits[4] >> 7)) & 0x7f;
        let cron = Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days_of_month: bits[2] as u32,
            months: bits[3] as u16,
            days_of_week: days_of_week as u8,
            any_day_of_month: parts[2].starts_with('*'),
            any_day_of_week: parts[4].starts_with('*'),
        };
        if cron
            .next_after(Timestamp::UNIX_EPOCH, &TimeZone::UTC)
            .is_none()
        {
            return Err("it names a day that never comes (such as 30 February)".to_owned());
        }
        Ok(cron)
    }

    /// The first run strictly after `after`, in the zone `zone`; `None` if none comes in
    /// the next eight years.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let mut day = after.to_zoned(zone.clone()).date();
        for _ in 0..HORIZON_DAYS {
            if self.runs_on(day) {
                for hour in bits(u64::from(self.hours)) {
                    for minute in bits(self.minutes) {
                        let wall = day.at(hour as i8, minute as i8, 0, 0);
                        let at = zone.to_ambiguous_timestamp(wall).compatible().ok()?;
                        if at > after {
                            return Some(at);
                        }
                    }
                }
            }
            day = day.checked_add(1.day()).ok()?;
        }
        None
    }

    fn runs_on(&self, day: Date) -> bool {
        if self.months & (1u16 << day.month()) == 0 {
            return false;
        }
        let by_month = self.days_of_month & (1u32 << day.day()) != 0;
        let by_week = self.days_of_week & (1u8 << day.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (false, false) => by_month || by_week,
            _ => by_month && by_week,
        }
    }
}

/// The set bits of `set`, lowest first.
fn bits(set: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |bit| set & (1 << bit) != 0)
}

fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| (1..=field.max).contains(s))
                    .ok_or_else(|| {
                        format!(
                            "the {} step `{}` is not a whole number from 1 to {}",
                            field.name,
                            printable(step),
                            field.max
                        )
                    })?;
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, field)?, value(high, field)?)
        } else {
            let low = value(range, field)?;
            // `5/15` runs from 5 to the end, as in Vixie cron.
            (low, if item.contains('/') { field.max } else { low })
        };
        if low > high {
            return Err(format!(
                "the {} range `{}` runs backwards; write the lower end first",
                field.name,
                printable(range)
            ));
        }
        for v in (low..=high).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|name| *name == lower) {
        return Ok(index as u32 + if field.min == 1 { 1 } else { 0 });
    }
    text.parse::<u32>()
        .ok()
        .filter(|v| (field.min..=field.max).contains(v))
        .ok_or_else(|| {
            let names = if field.names.is_empty() {
                String::new()
            } else {
                format!(" or a name such as `{}`", field.names[1])
            };
            format!(
                "the {} `{}` is not a number from {} to {}{names}",
                field.name,
                printable(text),
                field.min,
                field.max
            )
        })
}

/// At most 40 characters of `text`, for an error message.
fn printable(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The zone named `name` (an IANA name such as `Europe/Berlin`, or `UTC`), from the
/// system's time zone database.
pub fn zone(name: &str) -> Result<TimeZone, String> {
    if name.len() > 64 {
        return Err(format!(
            "is {} characters long: use an IANA name such as Europe/Berlin",
            name.len()
        ));
    }
    TimeZone::get(name).map_err(|_| {
        format!(
            "is `{}`, not a time zone: use an IANA name such as Europe/Berlin, America/New_York or UTC",
            printable(name)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::DateTime;

    fn at(text: &str, zone: &str) -> Timestamp {
        text.parse::<DateTime>()
            .unwrap()
            .in_tz(zone)
            .unwrap()
            .timestamp()
    }

    fn next(expression: &str, after: &str, zone_name: &str) -> String {
        let cron = Cron::parse(expression).unwrap();
        let zone = zone(zone_name).unwrap();
        let next = cron.next_after(at(after, zone_name), &zone).unwrap();
        next.to_zoned(zone)
            .strftime("%Y-%m-%d %H:%M %a %Z")
            .to_string()
    }

    #[test]
    fn every_field_form_finds_the_next_run() {
        assert_eq!(
            next("30 2 * * *", "2026-12-06T13:00", "UTC"),
            "2026-12-07 02:30 Mon UTC"
        );
        assert_eq!(
            next("30 2 * * *", "2026-12-06T02:29", "UTC"),
            "2026-12-06 02:30 Sun UTC"
        );
        // Strictly after: a run at the very minute is the next day's.
        assert_eq!(
            next("30 2 * * *", "2026-12-06T02:30", "UTC"),
            "2026-12-07 02:30 Mon UTC"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-06T13:01", "UTC"),
            "2026-12-06 13:15 Sun UTC"
        );
        assert_eq!(
            next("0 9-17/4 * * mon-fri", "2026-12-05T18:00", "UTC"),
            "2026-12-07 09:00 Mon UTC"
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "2026-12-06T00:00", "UTC"),
            "2027-01-01 00:00 Fri UTC"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-12-06T13:30", "UTC"),
            "2026-12-06 13:45 Sun UTC"
        );
        assert_eq!(
            next("0 12 * * 7", "2026-12-06T13:00", "UTC"),
            "2026-12-13 12:00 Sun UTC"
        );
        assert_eq!(
            next("@weekly", "2026-12-06T13:00", "UTC"),
            "2026-12-13 00:00 Sun UTC"
        );
        assert_eq!(
            next("@hourly", "2026-12-06T13:00", "UTC"),
            "2026-12-06 14:00 Sun UTC"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00", "UTC"),
            "2028-02-29 00:00 Tue UTC"
        );
    }

    #[test]
    fn a_restricted_day_of_month_and_day_of_week_match_either() {
        // The 13th, or any Friday (Vixie cron).
        assert_eq!(
            next("0 8 13 * fri", "2026-12-06T00:00", "UTC"),
            "2026-12-11 08:00 Fri UTC"
        );
        assert_eq!(
            next("0 8 13 * fri", "2026-12-12T00:00", "UTC"),
            "2026-12-13 08:00 Sun UTC"
        );
        // With `*` in the day of week, only the 13th.
        assert_eq!(
            next("0 8 13 * *", "2026-12-06T00:00", "UTC"),
            "2026-12-13 08:00 Sun UTC"
        );
        // With `*/1` in the day of month (starts with `*`), only Fridays.
        assert_eq!(
            next("0 8 */1 * fri", "2026-12-12T00:00", "UTC"),
            "2026-12-18 08:00 Fri UTC"
        );
    }

    #[test]
    fn runs_are_wall_clock_times_in_the_zone_through_summer_time() {
        assert_eq!(
            next("30 2 * * *", "2026-12-06T13:00", "Europe/Berlin"),
            "2026-12-07 02:30 Mon CET"
        );
        // 2026-03-29 02:30 does not exist in Berlin: it runs at 03:30 CEST.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00", "Europe/Berlin"),
            "2026-03-29 03:30 Sun CEST"
        );
        // 2026-11-01 01:30 comes twice in New York: it runs at the first (EDT), once.
        let cron = Cron::parse("30 1 * * *").unwrap();
        let zone = zone("America/New_York").unwrap();
        let first = cron
            .next_after(at("2026-11-01T00:00", "America/New_York"), &zone)
            .unwrap();
        assert_eq!(first.to_string(), "2026-11-01T05:30:00Z");
        let second = cron.next_after(first, &zone).unwrap();
        assert_eq!(second.to_string(), "2026-11-02T06:30:00Z");
    }

    #[test]
    fn bad_expressions_say_which_field_and_how_to_fix_it() {
        let error = |text: &str| Cron::parse(text).unwrap_err();
        assert_eq!(
            error("30 2 * *"),
            "is `30 2 * *`: it has 4 fields; write five, `minute hour day-of-month month day-of-week` (e.g. `30 2 * * *`, every day at 02:30)"
        );
        assert_eq!(
            error("30 25 * * *"),
            "is `30 25 * * *`: the hour `25` is not a number from 0 to 23"
        );
        assert_eq!(
            error("0 0 * foo *"),
            "is `0 0 * foo *`: the month `foo` is not a number from 1 to 12 or a name such as `feb`"
        );
        assert_eq!(
            error("*/0 * * * *"),
            "is `*/0 * * * *`: the minute step `0` is not a whole number from 1 to 59"
        );
        assert_eq!(
            error("0 0 * * 5-1"),
            "is `0 0 * * 5-1`: the day of week range `5-1` runs backwards; write the lower end first"
        );
        assert_eq!(
            error("0 0 30 2 *"),
            "is `0 0 30 2 *`: it names a day that never comes (such as 30 February)"
        );
        assert_eq!(
            error("@reboot"),
            "is `@reboot`: write one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually, or five fields"
        );
        assert_eq!(
            zone("Mars/Olympus").unwrap_err(),
            "is `Mars/Olympus`, not a time zone: use an IANA name such as Europe/Berlin, America/New_York or UTC"
        );
    }
}
