//! Where a command's result goes: a private file or standard output.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use tracer::recording::create_private;

/// Writes to a file (0600, no symlinks, no overwrite without --force) or stdout. A closed
/// pipe on stdout (`aptrace report … | head`) is not an error.
pub fn write_output(output: Option<&Path>, bytes: &[u8], force: bool) -> Result<()> {
    match output {
        Some(p) => {
            let mut f = create_private(p, force)?;
            f.write_all(bytes)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("writing to standard output");
                }
            }
        }
    }
    Ok(())
}
