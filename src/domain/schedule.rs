//! Drill schedules: a cron expression in a time zone. Pure: parsing, the
//! next fire time, and which tick is due.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A schedule as stored (`schedules/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub format_version: u32,
    pub id: String,
    pub environment: String,
    pub cron: String,
    /// IANA name; `UTC` by default.
    pub timezone: String,
    /// The snapshot each drill takes (default `latest`).
    pub snapshot: String,
    #[serde(default)]
    pub region: Option<String>,
    pub promote_on_pass: bool,
    pub created_by: String,
    pub created_at: String,
}

impl Schedule {
    /// What makes two schedules the same: they would start the same drills.
    fn identity(&self) -> (&str, &str, &str, &str, Option<&str>, bool) {
        (&self.environment, &self.cron, &self.timezone, &self.snapshot, self.region.as_deref(), self.promote_on_pass)
    }

    pub fn same_as(&self, other: &Schedule) -> bool {
        self.identity() == other.identity()
    }

    /// `s-` and 8 hex digits of the SHA-256 of what the schedule does.
    pub fn derived_id(&self) -> String {
        let (env, cron, tz, snapshot, region, promote) = self.identity();
        let key = format!("{env}\n{cron}\n{tz}\n{snapshot}\n{}\n{promote}", region.unwrap_or(""));
        format!("s-{}", &super::snapshot::sha256_hex(key.as_bytes())[..8])
    }
}

/// A parsed cron expression with its zone.
pub struct Timetable {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Timetable {
    /// Five fields (minute hour day-of-month month day-of-week) or six with
    /// seconds first; a zone name from the IANA database.
    pub fn parse(cron: &str, timezone: &str) -> Result<Timetable, String> {
        let fields = cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "cron expression {cron:?} has {fields} fields; use 5 (minute hour day-of-month month day-of-week), or 6 with seconds first"
            ));
        }
        let parsed = croner::Cron::from_str(cron)
            .map_err(|e| bad_field(cron).unwrap_or_else(|| format!("cron expression {cron:?} is not valid: {e}")))?;
        let tz = chrono_tz::Tz::from_str(if timezone.is_empty() { "UTC" } else { timezone })
            .map_err(|_| format!("unknown time zone {timezone:?}: use an IANA name such as Europe/Berlin or UTC"))?;
        Ok(Timetable { cron: parsed, tz })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = t.with_timezone(&self.tz);
        // A tick in the repeated hour of a DST change is one tick, at its
        // first pass: a second pass of a tick already behind `t` is skipped.
        for _ in 0..4 {
            let d = self.cron.find_next_occurrence(&from, false).ok()?;
            let first = self.first_pass(&d);
            if first > t {
                return Some(first);
            }
            from = d;
        }
        None
    }

    /// The latest tick at or before `now`: the one due now (fired at most
    /// once). In the repeated hour of a DST change, a wall-clock time that
    /// passes twice is one tick (its first pass), so it never fires twice.
    pub fn due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let d = self.cron.find_previous_occurrence(&now.with_timezone(&self.tz), true).ok()?;
        Some(self.first_pass(&d))
    }

    /// The first instant at which the local time of `d` occurs.
    fn first_pass(&self, d: &DateTime<chrono_tz::Tz>) -> DateTime<Utc> {
        use chrono::TimeZone;
        self.tz.from_local_datetime(&d.naive_local()).earliest().unwrap_or(*d).with_timezone(&Utc)
    }
}

/// Which field of a cron expression is wrong, in the user's own words (the
/// parser's message quotes text it rewrote: `SUN` becomes `0`).
fn bad_field(cron: &str) -> Option<String> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let names: &[&str] = if fields.len() == 6 {
        &["second", "minute", "hour", "day-of-month", "month", "day-of-week"]
    } else {
        &["minute", "hour", "day-of-month", "month", "day-of-week"]
    };
    let hint = |name: &str| match name {
        "second" | "minute" => "0-59",
        "hour" => "0-23",
        "day-of-month" => "1-31 (or L)",
        "month" => "1-12 or JAN-DEC",
        _ => "0-7 or SUN-SAT",
    };
    (0..fields.len()).find_map(|i| {
        let alone: Vec<&str> = (0..fields.len()).map(|j| if i == j { fields[j] } else { "*" }).collect();
        croner::Cron::from_str(&alone.join(" ")).is_err().then(|| {
            format!(
                "cron expression {cron:?}: field {} ({}) {:?} is not valid; use {}, ranges (1-5), lists (1,3) or steps (*/2)",
                i + 1,
                names[i],
                fields[i],
                hint(names[i])
            )
        })
    })
}

/// The name of one tick (its UTC time to the second), for its once-only key.
pub fn tick_name(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ticks_follow_the_zone() {
        let t = Timetable::parse("0 3 * * SUN", "Europe/Berlin").unwrap();
        // Saturday 2026-11-28 12:00 UTC: next is Sunday 03:00 Berlin = 02:00 UTC.
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        assert_eq!(t.next_after(now), Some(Utc.with_ymd_and_hms(2026, 11, 29, 2, 0, 0).unwrap()));
        assert_eq!(t.due(now), Some(Utc.with_ymd_and_hms(2026, 11, 22, 2, 0, 0).unwrap()));
        let every_second = Timetable::parse("* * * * * *", "").unwrap();
        assert_eq!(every_second.due(now), Some(now), "a tick at the very moment is due");
    }

    #[test]
    fn a_tick_in_the_repeated_hour_of_a_dst_change_fires_once() {
        // Berlin leaves summer time on 2026-10-25: 02:00-03:00 passes twice
        // (00:00-01:00 UTC at +2, then 01:00-02:00 UTC at +1).
        let t = Timetable::parse("30 2,14 * * *", "Europe/Berlin").unwrap();
        let first = Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap();
        // During the second pass, the due tick is still the first pass's: the same tick key.
        assert_eq!(t.due(Utc.with_ymd_and_hms(2026, 10, 25, 1, 45, 0).unwrap()), Some(first));
        assert_eq!(t.due(Utc.with_ymd_and_hms(2026, 10, 25, 0, 45, 0).unwrap()), Some(first));
        // After the first pass, the next tick is 14:30 CET, not 02:30 again.
        let next = t.next_after(Utc.with_ymd_and_hms(2026, 10, 25, 0, 31, 0).unwrap());
        assert_eq!(next, Some(Utc.with_ymd_and_hms(2026, 10, 25, 13, 30, 0).unwrap()));
        assert_eq!(tick_name(first), tick_name(t.due(Utc.with_ymd_and_hms(2026, 10, 25, 1, 31, 0).unwrap()).unwrap()));
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let e = Timetable::parse("0 3 * *", "UTC").err().unwrap();
        assert!(e.contains("has 4 fields"), "{e}");
        let e = Timetable::parse("61 3 * * *", "UTC").err().unwrap();
        assert!(e.contains("field 1 (minute) \"61\" is not valid; use 0-59"), "{e}");
        // The field named is the one typed, not what the parser rewrote it to.
        let e = Timetable::parse("0 3 * * SUNDAY", "UTC").err().unwrap();
        assert_eq!(
            e,
            "cron expression \"0 3 * * SUNDAY\": field 5 (day-of-week) \"SUNDAY\" is not valid; use 0-7 or SUN-SAT, ranges (1-5), lists (1,3) or steps (*/2)"
        );
        let e = Timetable::parse("0 3 * * *", "Mars/Olympus").err().unwrap();
        assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
    }
}
