//! Log set-up: structured `tracing` events to stderr, as text for people or as JSON lines for
//! log shippers. stdout is left to command output.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; the level comes from `RUST_LOG`, else `default_level`.
pub fn init(format: LogFormat, default_level: &str) {
    // The AWS SDK's configuration loader warns about every source of the credential and region
    // chain it tried (instance metadata off AWS, for one); what is missing in the end is an
    // error of the command itself.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},aws_config=error"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| OneLine(std::io::stderr()))
        // Colour codes only help a terminal; in files and journals they are noise.
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation can only happen in tests; the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// Writes each log event on one line: a field with line breaks in it (a job summary, a list of
/// policy errors) has them written as `\n`, so no event spans lines and every line starts
/// with its timestamp and level. The formatter hands over one whole event per write.
pub struct OneLine<W>(pub W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.contains(&b'\n') && !body.contains(&b'\r') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b => line.push(b),
            }
        }
        if body.len() < buf.len() {
            line.push(b'\n');
        }
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::OneLine;
    use std::io::Write;

    #[test]
    fn an_event_with_line_breaks_is_written_on_one_line() {
        let mut out = OneLine(Vec::new());
        out.write_all(b"INFO job finished summary=staging: 3 deploys\nproduction: 1 deploy\n")
            .unwrap();
        out.write_all(b"INFO plain\n").unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "INFO job finished summary=staging: 3 deploys\\nproduction: 1 deploy\nINFO plain\n"
        );
    }
}
