//! Training metrics: a CSV with one row per logged step (and per evaluation), kept in memory too
//! so the curves can be drawn.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const METRICS_FILE: &str = "metrics.csv";

/// One CSV row: a value per column, empty cells for what was not measured at that step.
#[derive(Clone, Debug, PartialEq)]
pub struct Row(pub Vec<Option<f64>>);

pub struct MetricsLog {
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Creates `dir/metrics.csv`, or with `resume` appends to it keeping the rows up to `step`
    /// (rows past it were logged after the checkpoint and will be logged again).
    pub fn open(dir: &Path, columns: &[&str], resume_at: Option<usize>) -> Result<Self> {
        let path = dir.join(METRICS_FILE);
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let mut rows = Vec::new();
        if let (Some(step), true) = (resume_at, path.exists()) {
            let reader = BufReader::new(File::open(&path).with_context(|| format!("reading {}", path.display()))?);
            let mut lines = reader.lines();
            let header = lines.next().transpose()?.unwrap_or_default();
            if header.split(',').map(str::to_string).collect::<Vec<_>>() != columns {
                bail!("{} has columns `{header}`, expected `{}`", path.display(), columns.join(","));
            }
            for line in lines {
                let row = parse_row(&line?)?;
                if row.0.first().copied().flatten().is_some_and(|s| s <= step as f64) {
                    rows.push(row);
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(file, "{}", columns.join(","))?;
        for r in &rows {
            writeln!(file, "{}", format_row(r))?;
        }
        Ok(MetricsLog { columns, rows, path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a row of (column, value) pairs; unnamed columns stay empty.
    pub fn log(&mut self, values: &[(&str, f64)]) -> Result<()> {
        let mut row = vec![None; self.columns.len()];
        for (name, v) in values {
            let i =
                self.columns.iter().position(|c| c == name).with_context(|| format!("no metrics column `{name}`"))?;
            row[i] = Some(*v);
        }
        let row = Row(row);
        writeln!(self.file, "{}", format_row(&row))?;
        self.file.flush()?;
        self.rows.push(row);
        Ok(())
    }

    /// (step, value) of every row where `column` has a value.
    pub fn series(&self, column: &str) -> Vec<(f64, f64)> {
        let Some(i) = self.columns.iter().position(|c| c == column) else { return vec![] };
        self.rows.iter().filter_map(|r| Some((r.0.first().copied().flatten()?, r.0[i]?))).collect()
    }
}

fn format_row(r: &Row) -> String {
    r.0.iter().map(|v| v.map(|x| format!("{x}")).unwrap_or_default()).collect::<Vec<_>>().join(",")
}

fn parse_row(line: &str) -> Result<Row> {
    let cells = line
        .split(',')
        .map(|c| if c.is_empty() { Ok(None) } else { c.parse::<f64>().map(Some) })
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("bad metrics row `{line}`"))?;
    Ok(Row(cells))
}
