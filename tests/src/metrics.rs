//! Reading Prometheus text exposition: one sample by metric name and labels.

/// The value of the first sample `name{labels...}` (label order does not matter; the sample may
/// carry more labels than asked for). `None` when no such sample exists.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name, labels).next()
}

/// The sum over every sample `name{labels...}` matches (0 when none does).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name, labels).sum()
}

fn samples<'a>(text: &'a str, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = f64> + 'a {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(move |line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let present: Vec<(&str, &str)> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        labels.iter().all(|want| present.contains(want)).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Like [`sample`], 0 when absent (counters that were never incremented).
pub fn sample_or_zero(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x help\n# TYPE x counter\n\
        csp_requests_total{endpoint=\"classify\",model=\"cls\",status=\"ok\"} 3\n\
        csp_batch_size_bucket{model=\"cls\",le=\"1\"} 2\n\
        csp_batch_size_bucket{model=\"cls\",le=\"+Inf\"} 5\n\
        csp_batch_size_count{model=\"cls\"} 5\n\
        plain 7\n";

    #[test]
    fn finds_samples_by_name_and_labels() {
        assert_eq!(sample(TEXT, "csp_requests_total", &[("model", "cls"), ("status", "ok")]), Some(3.0));
        assert_eq!(sample(TEXT, "csp_batch_size_bucket", &[("le", "1")]), Some(2.0));
        assert_eq!(sample(TEXT, "csp_batch_size_bucket", &[("le", "+Inf")]), Some(5.0));
        assert_eq!(sample(TEXT, "csp_batch_size_count", &[]), Some(5.0));
        assert_eq!(sample(TEXT, "plain", &[]), Some(7.0));
        assert_eq!(sample(TEXT, "csp_requests_total", &[("status", "overloaded")]), None);
        assert_eq!(sample_or_zero(TEXT, "missing", &[]), 0.0);
        assert_eq!(sum(TEXT, "csp_batch_size_bucket", &[("model", "cls")]), 7.0);
        assert_eq!(sum(TEXT, "missing", &[]), 0.0);
    }
}
