//! Human output: aligned tables and readable numbers, and where output goes.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};

/// A buffered writer to `path`, or to stdout without one (`--out FILE`).
pub fn writer(path: Option<&Path>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| path.display().to_string())?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// Widest cell a table shows; longer text ends in `…` (`--json` has it whole).
const MAX_CELL: usize = 120;

/// A cell as a table shows it: control characters (line breaks, escapes a stored text may
/// hold) as spaces, at most [`MAX_CELL`] characters.
fn cell(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_CELL)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_CELL).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// Prints rows as a table with a header, columns aligned (numbers to the right).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            rows.iter().all(|r| {
                r.get(i).is_none_or(|c| {
                    c.is_empty() || c.replace([',', '%'], "").parse::<f64>().is_ok()
                })
            })
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if numeric[i] {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// An integer with thousands separators: `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Money with two decimals and thousands separators.
pub fn money(x: f64) -> String {
    let cents = (x * 100.0).round() as i64;
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", thousands(cents / 100), cents % 100)
}

/// A share as a percentage with one decimal.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_are_one_line_and_bounded() {
        assert_eq!(cell("a\nb\x1b[31m"), "a b [31m");
        let long = "x".repeat(70_000);
        let shown = cell(&long);
        assert_eq!(shown.chars().count(), MAX_CELL);
        assert!(shown.ends_with('…'));
        assert_eq!(cell(&"y".repeat(MAX_CELL)), "y".repeat(MAX_CELL));
        // A cell wider than a format width can be (65,535) used to panic.
        print_table(&["description"], &[vec![long]]);
    }

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(money(2500.005), "2,500.01");
        assert_eq!(money(-3.5), "-3.50");
        assert_eq!(percent(1, 3), "33.3%");
    }
}
