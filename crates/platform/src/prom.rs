//! Prometheus' text format as the box writes it: one [`Writer`] for every textfile (storaged's,
//! abupdate's), and the naming rules they keep ([`check`], from Prometheus' own conventions),
//! run by each renderer's tests so a new series cannot make a new time series per scrape or
//! break a dashboard's queries. Pure: text in, text out.

use std::fmt::Write as _;

/// A label value as the format wants it: backslash, double quote and newline escaped.
pub fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Builds a textfile: each family's HELP and TYPE once, before its first sample (samples of one
/// family are written one after another).
#[derive(Debug, Default)]
pub struct Writer {
    s: String,
    last: String,
}

impl Writer {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        if self.last != name {
            let _ = writeln!(self.s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            self.last = name.into();
        }
    }
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let _ = if l.is_empty() {
            writeln!(self.s, "{name} {v}")
        } else {
            writeln!(self.s, "{name}{{{}}} {v}", l.join(","))
        };
    }
    pub fn one(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.family(name, kind, help);
        self.sample(name, labels, v);
    }
    pub fn finish(self) -> String {
        self.s
    }
}

/// The unit words a name may carry, always as its last word (before `_total`).
const UNITS: &[&str] = &["bytes", "seconds", "celsius", "ratio"];
/// Label names that would hold a time, making a new series whenever it changes.
const TIME_LABELS: &[&str] = &["since", "time", "timestamp", "at", "when", "date"];

fn ident(s: &str, colon: bool) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || (colon && f == ':'))
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || (colon && x == ':'))
}

/// `name{k="v",...} value` into its name and label pairs (escapes undone).
fn sample(line: &str) -> Option<(String, Vec<(String, String)>)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.chars();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let key = key.trim_start_matches(',').to_string();
            if key.is_empty() {
                break;
            }
            if chars.next() != Some('"') {
                return None;
            }
            let mut val = String::new();
            loop {
                match chars.next()? {
                    '\\' => match chars.next()? {
                        'n' => val.push('\n'),
                        c => val.push(c),
                    },
                    '"' => break,
                    c => val.push(c),
                }
            }
            labels.push((key, val));
            match chars.clone().next() {
                Some(',') => {
                    chars.next();
                }
                Some('}') => break,
                _ => return None,
            }
        }
    }
    Some((name.to_string(), labels))
}

/// Every rule `text` breaks, one line each; empty when it keeps them all.
pub fn check(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut types: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(r) = line.strip_prefix("# TYPE ") {
            let mut f = r.split(' ');
            let (name, kind) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            if types.iter().any(|(n, _)| n == name) {
                bad.push(format!("{name}: TYPE declared twice"));
            }
            if !ident(name, true) || !name.starts_with("eve_") {
                bad.push(format!("{name}: not a name of ours (eve_...)"));
            }
            match kind {
                "counter" if !name.ends_with("_total") => {
                    bad.push(format!("{name}: a counter's name ends in _total"))
                }
                "gauge" | "untyped" if name.ends_with("_total") => {
                    bad.push(format!("{name}: only a counter's name ends in _total"))
                }
                "counter" | "gauge" | "untyped" | "histogram" | "summary" => {}
                k => bad.push(format!("{name}: unknown type {k}")),
            }
            let words: Vec<&str> = name.trim_end_matches("_total").split('_').collect();
            for (i, w) in words.iter().enumerate() {
                if UNITS.contains(w) && i + 1 != words.len() {
                    bad.push(format!("{name}: the unit `{w}` goes last"));
                }
            }
            types.push((name.into(), kind.into()));
        } else if line.starts_with('#') {
            continue;
        } else {
            let Some((name, labels)) = sample(line) else {
                bad.push(format!("unparsable sample: {line}"));
                continue;
            };
            if !types.iter().any(|(n, _)| *n == name) {
                bad.push(format!("{name}: sampled before its TYPE"));
            }
            for (k, v) in &labels {
                if !ident(k, false) {
                    bad.push(format!("{name}: label `{k}` is not a label name"));
                }
                // A Unix time in seconds or milliseconds; identifiers (`guid`, `id`) are stable.
                let epoch = matches!(v.len(), 10 | 13) && v.bytes().all(|b| b.is_ascii_digit());
                if TIME_LABELS.contains(&k.as_str()) || (epoch && !k.ends_with("id")) {
                    bad.push(format!(
                        "{name}: label {k}=\"{v}\" holds a time or a count: make it a value"
                    ));
                }
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_text_passes_and_each_broken_rule_is_named() {
        let good = "# HELP eve_x_bytes B.\n# TYPE eve_x_bytes gauge\neve_x_bytes{pool=\"a\\\"b\",k=\"v\",guid=\"10862151665355022024\",id=\"1765094400\"} 1\n# TYPE eve_y_total counter\neve_y_total 3\n";
        assert!(check(good).is_empty(), "{:?}", check(good));
        for (text, why) in [
            ("# TYPE eve_x counter\neve_x 1\n", "ends in _total"),
            (
                "# TYPE eve_x_total gauge\neve_x_total 1\n",
                "only a counter",
            ),
            (
                "# TYPE eve_bytes_used gauge\neve_bytes_used 1\n",
                "goes last",
            ),
            ("# TYPE eve_a gauge\neve_a{since=\"7\"} 1\n", "holds a time"),
            (
                "# TYPE eve_a gauge\neve_a{k=\"1765094400\"} 1\n",
                "holds a time",
            ),
            (
                "# TYPE eve_a gauge\neve_a{k=\"1765094400123\"} 1\n",
                "holds a time",
            ),
            ("eve_a 1\n", "before its TYPE"),
            ("# TYPE eve_a gauge\n# TYPE eve_a gauge\n", "twice"),
            ("# TYPE node_a gauge\n", "not a name of ours"),
            ("# TYPE eve_a gauge\neve_a{k=1} 1\n", "unparsable"),
        ] {
            let p = check(text);
            assert!(p.iter().any(|l| l.contains(why)), "{text}: {p:?}");
        }
    }
}
