//! Sizes and intervals as people write and read them: `512M`, `20%`, `1.50G`, `1h`, and UTC stamps
//! that sort and are safe in a dataset name.

use serde::{Deserialize, Serialize};

/// A size: absolute (`512M`, `20G`, `1T`, plain bytes) or a share of the pool (`20%`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Size {
    Bytes(u64),
    Percent(f64),
}

/// Bytes for people, in powers of 1024 like `zfs list`: `512B`, `16M`, `1.50G`, `234G`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut unit = 0;
    let mut div: u64 = 1024;
    while unit + 1 < UNITS.len() && bytes / div >= 1024 {
        unit += 1;
        div *= 1024;
    }
    let u = UNITS[unit];
    if bytes % div == 0 {
        return format!("{}{u}", bytes / div);
    }
    let x = bytes as f64 / div as f64;
    if x < 10.0 {
        format!("{x:.2}{u}")
    } else if x < 100.0 {
        format!("{x:.1}{u}")
    } else {
        format!("{x:.0}{u}")
    }
}

/// A size in a table: exact bytes when asked for (`--bytes`), else [`human`].
pub fn size_cell(b: u64, bytes: bool) -> String {
    if bytes {
        b.to_string()
    } else {
        human(b)
    }
}

/// `30s`, `15m`, `1h`, `1d`, `1w` (or a plain number of seconds) to seconds, from `min` up to
/// 366 days.
pub fn parse_interval(s: &str, min: u64) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not an interval like 30s, 15m, 1h, 1d or 1w"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("`{s}`: the unit must be s, m, h, d or w")),
    };
    let secs = n
        .checked_mul(mul)
        .ok_or_else(|| format!("`{s}` is too long"))?;
    if !(min..=366 * 86_400).contains(&secs) {
        return Err(format!("`{s}` must be from {min}s to 366d"));
    }
    Ok(secs)
}

/// A duration for people, rounded to its largest unit: `45 s`, `12 min`, `3 h 20 min`, `2 d 4 h`.
pub fn duration_text(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 if secs % 3600 / 60 == 0 => format!("{} h", secs / 3600),
        3600..=86_399 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ if secs % 86_400 / 3600 == 0 => format!("{} d", secs / 86_400),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// An interval in the largest unit that divides it: 3600 -> `1h`, 5400 -> `90m`.
pub fn interval_label(secs: u64) -> String {
    for (u, m) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs % m == 0 && secs > 0 {
            return format!("{}{u}", secs / m);
        }
    }
    format!("{secs}s")
}

/// Seconds since the epoch as a UTC civil date and time: (year, month, day, hour, minute, second).
pub fn civil(epoch: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (epoch / 86_400) as i64;
    let s = epoch % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's published algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// Seconds since the epoch as RFC 3339 in UTC, `2026-12-04T01:02:03Z`: logs and journals.
pub fn rfc3339(epoch: u64) -> String {
    let (y, m, d, h, mi, s) = civil(epoch);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A time for people, with how long ago (or how soon) it is from `now`:
/// `2026-12-04 01:02 UTC (3 h ago)`, `2026-12-11 01:02 UTC (in 6 d)`.
pub fn when(epoch: u64, now: u64) -> String {
    let (y, m, d, h, mi, _) = civil(epoch);
    // The largest unit only: a table column, not a stopwatch.
    let rough = |s: u64| match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    };
    let rel = match epoch.cmp(&now) {
        std::cmp::Ordering::Equal => "now".to_string(),
        std::cmp::Ordering::Less => format!("{} ago", rough(now - epoch)),
        std::cmp::Ordering::Greater => format!("in {}", rough(epoch - now)),
    };
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02} UTC ({rel})")
}

/// Seconds since the epoch as `20261204T010203Z`: UTC, sortable, safe in a dataset name.
pub fn utc_stamp(epoch: u64) -> String {
    let (y, m, d, h, mi, s) = civil(epoch);
    format!("{y:04}{m:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

impl Size {
    pub fn parse(s: &str) -> Result<Size, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("`{s}` is outside 0-100%"));
            }
            return Ok(Size::Percent(v));
        }
        if t.starts_with('-') {
            return Err(format!("`{s}` is negative"));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (like 512M, 20G or 10%)"))?;
        let mult: u64 = match unit
            .trim()
            .to_ascii_uppercase()
            .trim_end_matches("IB")
            .trim_end_matches('B')
        {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            "T" => 1 << 40,
            "P" => 1 << 50,
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit `{unit}` (K, M, G, T, P or %)"
                ))
            }
        };
        Ok(Size::Bytes((n * mult as f64) as u64))
    }

    /// Share of the pool in percent; absolute sizes count as 0 until the pool size is known.
    pub fn percent_of(self, pool: Option<u64>) -> f64 {
        match self {
            Size::Percent(p) => p,
            Size::Bytes(b) => pool
                .map(|s| b as f64 * 100.0 / s.max(1) as f64)
                .unwrap_or(0.0),
        }
    }

    /// Bytes, given the pool's usable size.
    pub fn bytes(self, pool: u64) -> u64 {
        match self {
            Size::Bytes(b) => b,
            Size::Percent(p) => (pool as f64 * p / 100.0) as u64,
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) if i < 0 => Err(serde::de::Error::custom(format!("`{i}` is negative"))),
            Raw::Int(i) => Ok(Size::Bytes(i as u64)),
            Raw::Str(s) => Size::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_for_people_say_how_long_ago_or_how_soon() {
        let t = 1_796_601_723; // 2026-12-07T00:02:03Z
        assert_eq!(
            when(t, t + 3 * 3600 + 100),
            "2026-12-07 00:02 UTC (3 h ago)"
        );
        assert_eq!(when(t, t + 59), "2026-12-07 00:02 UTC (59 s ago)");
        assert_eq!(when(t, t + 2 * 86_400), "2026-12-07 00:02 UTC (2 d ago)");
        assert_eq!(when(t + 6 * 86_400, t), "2026-12-13 00:02 UTC (in 6 d)");
        assert_eq!(when(t, t), "2026-12-07 00:02 UTC (now)");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        for (s, t) in [
            (45, "45 s"),
            (720, "12 min"),
            (7200, "2 h"),
            (12_000, "3 h 20 min"),
            (86_400 * 2, "2 d"),
            (86_400 * 2 + 4 * 3600 + 7, "2 d 4 h"),
        ] {
            assert_eq!(duration_text(s), t);
        }
    }

    #[test]
    fn human_sizes_read_like_zfs_list() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(16 << 20), "16M");
        assert_eq!(human(1536 << 20), "1.50G");
        assert_eq!(human(12_288), "12K");
        assert_eq!(human(12_800), "12.5K");
        assert_eq!(human(234 * (1 << 30) + (1 << 29)), "234G");
        assert_eq!(human(u64::MAX), "16.0E");
    }

    #[test]
    fn sizes_and_units() {
        assert_eq!(Size::parse("512M").unwrap(), Size::Bytes(512 << 20));
        assert_eq!(Size::parse("1.5G").unwrap(), Size::Bytes(3 << 29));
        assert_eq!(Size::parse("20GiB").unwrap(), Size::Bytes(20 << 30));
        assert_eq!(Size::parse("4096").unwrap(), Size::Bytes(4096));
        assert_eq!(Size::parse("20%").unwrap(), Size::Percent(20.0));
        assert_eq!(Size::Percent(25.0).bytes(400), 100);
        assert!(Size::parse("-1G").unwrap_err().contains("negative"));
        assert!(Size::parse("120%").unwrap_err().contains("0-100"));
        assert!(Size::parse("3X").unwrap_err().contains("unknown unit"));
        assert!(Size::parse("lots").is_err());
    }
}
