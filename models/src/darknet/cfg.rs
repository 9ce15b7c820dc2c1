//! The `.cfg` text format: `[section]` headers followed by `key=value` lines. Darknet strips all
//! whitespace and skips lines starting with `#` or `;`; we do the same, keep line numbers for
//! error messages, and parse values strictly (darknet's `atoi` silently reads garbage as 0).

use std::str::FromStr;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Section {
    /// Name without brackets, lower case (`convolutional`).
    pub name: String,
    /// 1-based line of the `[name]` header.
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// Splits `text` into sections. `path` only labels errors.
pub fn parse_sections(text: &str, path: &str) -> Result<Vec<Section>> {
    let mut sections: Vec<Section> = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |msg: String| Error::Cfg { path: path.to_string(), line, msg };
        let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() || compact.starts_with('#') || compact.starts_with(';') {
            continue;
        }
        if let Some(rest) = compact.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(format!("section header `{}` has no closing `]`", raw.trim())));
            };
            if name.is_empty() {
                return Err(err("empty section name `[]`".into()));
            }
            sections.push(Section { name: name.to_ascii_lowercase(), line, entries: vec![] });
            continue;
        }
        let Some((key, value)) = compact.split_once('=') else {
            return Err(err(format!("expected `key=value` or `[section]`, found `{}`", raw.trim())));
        };
        // Darknet reads numbers with atoi, which stops at a trailing `#comment`; allow that.
        let value = value.split('#').next().unwrap_or("");
        let Some(section) = sections.last_mut() else {
            return Err(err(format!("option `{key}` before the first section")));
        };
        if key.is_empty() {
            return Err(err(format!("option without a key in [{}]", section.name)));
        }
        if let Some(first) = section.entries.iter().find(|e| e.key == key) {
            return Err(err(format!("[{}] sets `{key}` twice (first on line {})", section.name, first.line)));
        }
        section.entries.push(Entry { key: key.to_string(), value: value.to_string(), line });
    }
    Ok(sections)
}

/// Typed access to one section's options, with errors that name the file, line and key.
pub struct Options<'a> {
    pub section: &'a Section,
    pub path: &'a str,
}

impl<'a> Options<'a> {
    pub fn new(section: &'a Section, path: &'a str) -> Self {
        Options { section, path }
    }

    /// An error located at the section header.
    pub fn error(&self, msg: impl Into<String>) -> Error {
        Error::Cfg {
            path: self.path.to_string(),
            line: self.section.line,
            msg: format!("[{}]: {}", self.section.name, msg.into()),
        }
    }

    /// An error located at the line that sets `entry`.
    pub fn entry_error(&self, entry: &Entry, msg: impl Into<String>) -> Error {
        Error::Cfg {
            path: self.path.to_string(),
            line: entry.line,
            msg: format!("[{}] {}={}: {}", self.section.name, entry.key, entry.value, msg.into()),
        }
    }

    pub fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.section.entries.iter().find(|e| e.key == key)
    }

    /// Rejects keys outside `known` (what we implement) and `ignored` (training-only settings
    /// that do not change inference), so an unsupported feature never passes silently.
    pub fn check_keys(&self, known: &[&str], ignored: &[&str]) -> Result<()> {
        for e in &self.section.entries {
            if !known.contains(&e.key.as_str()) && !ignored.contains(&e.key.as_str()) {
                return Err(self.entry_error(e, "unsupported option"));
            }
        }
        Ok(())
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> &'a str {
        self.entry(key).map_or(default, |e| e.value.as_str())
    }

    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.entry(key) {
            None => Ok(default),
            Some(e) => e.value.parse().map_err(|_| self.entry_error(e, format!("not a valid {}", type_word::<T>()))),
        }
    }

    /// A comma-separated list (empty items, as in a trailing comma, are skipped).
    pub fn list<T: FromStr>(&self, key: &str) -> Result<Option<Vec<T>>> {
        let Some(e) = self.entry(key) else {
            return Ok(None);
        };
        let items = e
            .value
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| self.entry_error(e, format!("`{s}` is not a valid {}", type_word::<T>()))))
            .collect::<Result<Vec<T>>>()?;
        Ok(Some(items))
    }

    /// A positive integer (sizes, strides, counts).
    pub fn positive_or(&self, key: &str, default: usize) -> Result<usize> {
        let v = self.parse_or::<usize>(key, default)?;
        if v == 0 {
            let e = self.entry(key).ok_or_else(|| self.error(format!("`{key}` must be positive")))?;
            return Err(self.entry_error(e, "must be positive"));
        }
        Ok(v)
    }

    /// A 0/1 flag.
    pub fn flag(&self, key: &str) -> Result<bool> {
        match self.entry(key) {
            None => Ok(false),
            Some(e) => match e.value.as_str() {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(self.entry_error(e, "expected 0 or 1")),
            },
        }
    }
}

fn type_word<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    if name.starts_with('f') {
        "number"
    } else if name.starts_with('u') {
        "non-negative integer"
    } else if name.starts_with('i') {
        "integer"
    } else {
        "value"
    }
}
