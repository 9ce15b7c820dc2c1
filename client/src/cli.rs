//! Argument values shared by the binary's parser: durations and comma-separated lists.

use std::time::Duration;

/// `10s`, `500ms`, `2m`, `1.5s`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A comma-separated list given as one argument (clap would take a bare `Vec` for repeated
/// arguments instead).
#[derive(Clone, Debug, PartialEq)]
pub struct List<T>(pub Vec<T>);

/// `1,2,4,8` (spaces allowed; at least one item).
pub fn parse_list<T: std::str::FromStr>(text: &str) -> Result<List<T>, String> {
    let items: Result<Vec<T>, String> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<T>().map_err(|_| format!("`{}` in `{text}` is not a valid value", s.trim())))
        .collect();
    let items = items?;
    if items.is_empty() {
        return Err(format!("`{text}`: give at least one value"));
    }
    Ok(List(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn lists() {
        assert_eq!(parse_list::<usize>("1,2, 4,8"), Ok(List(vec![1, 2, 4, 8])));
        assert_eq!(parse_list::<f64>("2.5"), Ok(List(vec![2.5])));
        assert!(parse_list::<usize>("1,x").is_err());
        assert!(parse_list::<usize>(",").is_err());
    }
}
