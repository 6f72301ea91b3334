//! Where a command's JSON goes: a file, written atomically, or stdout when
//! the path is `-`; then the human summary moves to stderr so that stdout
//! holds nothing but the JSON (`resid pack ... --json - | jq`).

use std::io::Write;
use std::path::Path;

/// True when `--json -` asks for JSON on stdout.
pub fn json_to_stdout(p: Option<&Path>) -> bool {
    p.is_some_and(|p| p.as_os_str() == "-")
}

/// The stream for the human summary: stdout, or stderr when stdout is
/// reserved for JSON.
pub fn human(json: Option<&Path>) -> Box<dyn Write> {
    if json_to_stdout(json) {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    }
}

/// Writes `json` (plus a newline) to `p`, or to stdout for `-`.
pub fn write_json(p: &Path, json: &str) -> anyhow::Result<()> {
    if p.as_os_str() == "-" {
        let mut so = std::io::stdout().lock();
        so.write_all(json.as_bytes())?;
        so.write_all(b"\n")?;
        so.flush()?;
    } else {
        let mut s = json.to_string();
        s.push('\n');
        resid::io::atomic::write_atomic(p, s.as_bytes())?;
    }
    Ok(())
}
