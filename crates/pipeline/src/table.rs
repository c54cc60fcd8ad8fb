//! Reading the metadata tables datasets ship (CSV with a header), tolerant of CRLF line endings,
//! a byte-order mark and stray whitespace, with errors that name the file, the line and the
//! column.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A CSV file's rows as column-name -> value maps (values trimmed).
#[derive(Debug, Clone)]
pub struct Table {
    /// Header names, in file order.
    pub columns: Vec<String>,
    /// Rows with their 1-based line number.
    pub rows: Vec<(usize, HashMap<String, String>)>,
}

/// Reads `path`, requiring every column in `required`; `hint` is appended to a not-found error
/// (e.g. "run `esc50 download` or pass --data-dir").
pub fn read_csv(path: &Path, required: &[&str], hint: &str) -> Result<Table> {
    crate::task::check_regular_file(path, hint)?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let columns: Vec<String> = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header line", path.display()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    for want in required {
        if !columns.iter().any(|c| c == want) {
            bail!(
                "{}: column `{want}` missing (expected columns {}; found {})",
                path.display(),
                required.join(","),
                columns.join(",")
            );
        }
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record =
            record.with_context(|| format!("{}: line {line} is malformed", path.display()))?;
        let row: HashMap<String, String> = columns
            .iter()
            .cloned()
            .zip(record.iter().map(str::to_string))
            .collect();
        rows.push((line, row));
    }
    Ok(Table { columns, rows })
}

impl Table {
    /// The value of `column` in a row, parsed, with an error naming the file, line and column.
    pub fn parse<T: std::str::FromStr>(
        path: &Path,
        line: usize,
        row: &HashMap<String, String>,
        column: &str,
    ) -> Result<T> {
        let raw = row.get(column).map(String::as_str).unwrap_or("");
        raw.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: line {line}: column `{column}` has {raw:?}, expected a {}",
                path.display(),
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("value")
            )
        })
    }
}

/// Errors if any of `paths` (relative to `root`) is missing, listing the first few, or is not a
/// regular file (a FIFO or a device would hang or never end when read).
pub fn check_files_exist<'a>(
    root: &Path,
    paths: impl IntoIterator<Item = &'a str>,
    hint: &str,
) -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    for p in paths {
        match std::fs::metadata(root.join(p)) {
            Ok(m) if m.is_file() => {}
            Ok(m) => bail!(
                "{} is not a regular file (it is {}); audio files must be regular files",
                root.join(p).display(),
                crate::task::file_kind(&m.file_type())
            ),
            Err(_) => missing.push(p),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(5)
            .map(|p| root.join(p).display().to_string())
            .collect();
        bail!(
            "{} audio files listed in the metadata are missing, e.g. {}; {hint}",
            missing.len(),
            shown.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_bom_and_whitespace_are_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        std::fs::write(&p, "\u{feff}a, b\r\n1 , x\r\n2,y\r\n").unwrap();
        let t = read_csv(&p, &["a", "b"], "").unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].1["b"], "x");
        let v: u32 = Table::parse(&p, t.rows[1].0, &t.rows[1].1, "a").unwrap();
        assert_eq!(v, 2);
        let err = Table::parse::<u32>(&p, t.rows[0].0, &t.rows[0].1, "b")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("`b`"), "{err}");
        let err = read_csv(&p, &["a", "fold"], "").unwrap_err().to_string();
        assert!(err.contains("column `fold` missing"), "{err}");
        let err = read_csv(&dir.path().join("none.csv"), &[], "run x download")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found; run x download"), "{err}");
    }
}
