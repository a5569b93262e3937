//! What the operator commands share for their output and their selection: the table layout,
//! timestamps, writing to stdout and `--repo`.

use std::io::Write;

use jiff::Timestamp;
use shipgate::domain::RepoName;
use shipgate_cli::error::CliError;

pub(crate) fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// Left-aligned columns separated by two spaces, trailing spaces trimmed.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            s.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            s.push_str(&" ".repeat(pad + 2));
        }
        format!("{}\n", s.trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One CSV line (RFC 4180): a field with a comma, a quote or a line break is quoted, its
/// quotes doubled.
pub(crate) fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| {
            let f = f.as_ref();
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

pub(crate) fn emit(text: &str) -> Result<(), CliError> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(CliError::Output)
}

/// `--repo`, checked.
pub(crate) fn parse_repo(given: Option<&str>) -> Result<Option<RepoName>, CliError> {
    given
        .map(|g| RepoName::parse(g).map_err(|e| CliError::Usage(format!("--repo {g:?}: {e}"))))
        .transpose()
}
