//! Schedules of pre-checks: cron expressions and fixed intervals.
//!
//! Accepted forms:
//!
//! - the 5-field crontab form `min hour day-of-month month day-of-week`, run at
//!   second 0. Day-of-week numbers follow crontab: 0 and 7 are Sunday, 1 is
//!   Monday.
//! - the 6- or 7-field form with seconds first and an optional year last, as the
//!   `cron` crate reads it. Day-of-week numbers there run from 1 (Sunday) to 7
//!   (Saturday), so names (`MON-FRI`) are clearer.
//! - the shorthands `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
//! - `@every <duration>` with a humantime duration such as `30s`, `5m` or
//!   `1h 30m`, counted from the previous tick.
//!
//! Cron expressions are evaluated in the configured time zone (UTC unless set).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Shortest interval `@every` accepts. A check more frequent than once a
/// second would mostly measure its own overhead.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written, shown in listings and errors.
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<cron::Schedule>),
    Every(Duration),
}

/// An expression that is not a valid schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {expression:?}: {reason}")]
pub struct ScheduleError {
    /// The expression as written.
    pub expression: String,
    /// Reason the expression is invalid, with the accepted forms.
    pub reason: String,
}

const FORMS: &str = "write 5 crontab fields (\"*/5 * * * *\"), 6 or 7 fields with seconds first \
                     (\"0 */5 * * * *\"), @hourly/@daily/@weekly/@monthly/@yearly, or \"@every 30s\"";

impl Schedule {
    /// Parses a schedule expression.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        let error = |reason: String| ScheduleError {
            expression: text.to_string(),
            reason,
        };
        if let Some(interval) = trimmed.strip_prefix("@every") {
            let interval = interval.trim();
            let duration = humantime::parse_duration(interval).map_err(|parse_error| {
                error(format!(
                    "{interval:?} is not a duration ({parse_error}); write a value like 30s, 5m or 1h"
                ))
            })?;
            if duration < MIN_INTERVAL {
                return Err(error(format!(
                    "the interval must be at least {}",
                    humantime::format_duration(MIN_INTERVAL)
                )));
            }
            return Ok(Schedule {
                text: trimmed.to_string(),
                kind: Kind::Every(duration),
            });
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let expression = match fields.len() {
            1 if trimmed.starts_with('@') => trimmed.to_string(),
            5 => {
                let day_of_week = crontab_day_of_week(fields[4]);
                format!(
                    "0 {} {} {} {} {day_of_week}",
                    fields[0], fields[1], fields[2], fields[3]
                )
            }
            6 | 7 => fields.join(" "),
            count => {
                return Err(error(format!("found {count} fields; {FORMS}")));
            }
        };
        let schedule = cron::Schedule::from_str(&expression).map_err(|parse_error| {
            let reason = cron_reason(&parse_error.to_string(), &expression);
            error(format!("{reason}; {FORMS}"))
        })?;
        Ok(Schedule {
            text: trimmed.to_string(),
            kind: Kind::Cron(Box::new(schedule)),
        })
    }

    /// Returns the expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns the interval of an `@every` schedule.
    pub fn interval(&self) -> Option<Duration> {
        match self.kind {
            Kind::Every(interval) => Some(interval),
            Kind::Cron(_) => None,
        }
    }

    /// Returns the first time after `after` at which the schedule fires, or
    /// `None` when it never fires again (a cron year range in the past).
    pub fn next_after(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(interval) => {
                let interval = chrono::Duration::from_std(*interval).ok()?;
                after.checked_add_signed(interval)
            }
            Kind::Cron(schedule) => schedule
                .after(&after.with_timezone(&zone))
                .next()
                .map(|next| next.with_timezone(&Utc)),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a time zone name such as `UTC` or `Europe/Paris`.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?}; write an IANA name such as UTC or Europe/Paris")
    })
}

/// Rewrites the numbers of a crontab day-of-week field as day names, because
/// the `cron` crate numbers days from 1 (Sunday) where crontab uses 0 or 7 for
/// Sunday and 1 for Monday. Step values after `/` stay numbers.
fn crontab_day_of_week(field: &str) -> String {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = String::with_capacity(field.len() + 8);
    let mut digits = String::new();
    let mut after_slash = false;
    let flush = |digits: &mut String, out: &mut String, after_slash: bool| {
        if digits.is_empty() {
            return;
        }
        match digits.parse::<usize>() {
            Ok(day) if day < NAMES.len() && !after_slash => out.push_str(NAMES[day]),
            // Out of range or a step: left as written, so the parser reports it.
            _ => out.push_str(digits),
        }
        digits.clear();
    };
    for character in field.chars() {
        if character.is_ascii_digit() {
            digits.push(character);
            continue;
        }
        flush(&mut digits, &mut out, after_slash);
        after_slash = character == '/';
        out.push(character);
    }
    flush(&mut digits, &mut out, after_slash);
    out
}

/// Returns the cron parser's reason on one line. Its message also repeats the
/// expression with a caret under the error, which does not fit a one-line
/// config problem.
fn cron_reason(message: &str, expression: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && *line != expression.trim())
        .filter(|line| !line.chars().all(|c| c == '^' || c.is_whitespace()))
        .collect();
    if lines.is_empty() {
        "the cron parser rejected it".to_string()
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(expression: &str, after: &str) -> String {
        Schedule::parse(expression)
            .unwrap()
            .next_after(at(after), Tz::UTC)
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn five_fields_run_at_second_zero() {
        assert_eq!(
            next("*/5 * * * *", "2026-03-01T10:02:30Z"),
            "2026-03-01T10:05:00+00:00"
        );
    }

    #[test]
    fn five_fields_use_crontab_weekdays() {
        // 2026-03-06 is a Friday; 1-5 is Monday to Friday in crontab.
        assert_eq!(
            next("0 3 * * 1-5", "2026-03-06T04:00:00Z"),
            "2026-03-09T03:00:00+00:00"
        );
        // 0 and 7 are both Sunday.
        assert_eq!(
            next("0 3 * * 0", "2026-03-06T04:00:00Z"),
            "2026-03-08T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * 7", "2026-03-06T04:00:00Z"),
            "2026-03-08T03:00:00+00:00"
        );
    }

    #[test]
    fn weekday_steps_stay_numbers() {
        assert_eq!(crontab_day_of_week("1-5"), "MON-FRI");
        assert_eq!(crontab_day_of_week("*/2"), "*/2");
        assert_eq!(crontab_day_of_week("0,3/2"), "SUN,WED/2");
        assert_eq!(crontab_day_of_week("mon"), "mon");
    }

    #[test]
    fn six_and_seven_fields_have_seconds() {
        assert_eq!(
            next("30 * * * * *", "2026-03-01T10:02:30Z"),
            "2026-03-01T10:03:30+00:00"
        );
        assert_eq!(
            next("0 0 12 1 1 * 2030", "2026-03-01T10:02:30Z"),
            "2030-01-01T12:00:00+00:00"
        );
    }

    #[test]
    fn shorthand_is_accepted() {
        assert_eq!(
            next("@daily", "2026-03-01T10:02:30Z"),
            "2026-03-02T00:00:00+00:00"
        );
    }

    #[test]
    fn every_adds_interval() {
        let schedule = Schedule::parse("@every 1m 30s").unwrap();
        assert_eq!(schedule.interval(), Some(Duration::from_secs(90)));
        assert_eq!(
            next("@every 30s", "2026-03-01T10:02:30Z"),
            "2026-03-01T10:03:00+00:00"
        );
    }

    #[test]
    fn time_zone_shifts_cron() {
        let zone = parse_zone("Europe/Paris").unwrap();
        let schedule = Schedule::parse("0 3 * * *").unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        // 03:00 in Paris in winter is 02:00 UTC.
        assert_eq!(
            schedule.next_after(after, zone).unwrap().to_rfc3339(),
            "2026-01-10T02:00:00+00:00"
        );
    }

    #[test]
    fn unknown_zone_is_rejected() {
        let error = parse_zone("Mars/Olympus").unwrap_err();
        assert!(error.contains("\"Mars/Olympus\""), "{error}");
    }

    #[test]
    fn invalid_expressions_are_named() {
        for (expression, expected) in [
            ("* * *", "found 3 fields"),
            ("61 * * * *", "invalid schedule \"61 * * * *\""),
            ("@every soon", "\"soon\" is not a duration"),
            ("@every 100ms", "at least 1s"),
            ("@fortnightly", "invalid schedule"),
            ("", "found 0 fields"),
        ] {
            let error = Schedule::parse(expression).unwrap_err();
            assert_eq!(error.expression, expression);
            let message = error.to_string();
            assert!(message.contains(expected), "{expression}: {message}");
        }
    }

    #[test]
    fn past_year_never_fires() {
        let schedule = Schedule::parse("0 0 0 1 1 * 2020").unwrap();
        assert!(
            schedule
                .next_after(at("2026-03-01T00:00:00Z"), Tz::UTC)
                .is_none()
        );
    }
}
