//! `cargo xtask man`: the man pages of `aptrace` (one for the command, one per subcommand),
//! rendered by the binary itself from its clap definition so they never drift from `--help`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd;

#[derive(clap::Args)]
pub struct ManArgs {
    /// Folder to write aptrace.1 and aptrace-SUBCOMMAND.1 into (created if missing).
    #[arg(long, default_value = "target/man")]
    pub out: PathBuf,
}

/// The cargo invocation that renders the pages into `out`.
fn render_command(root: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root)
        .args([
            "run", "--quiet", "-p", "tracer", "--bin", "aptrace", "--", "man",
        ])
        .arg(out);
    c
}

pub fn run(args: ManArgs, root: &Path) -> Result<()> {
    let out = if args.out.is_absolute() {
        args.out
    } else {
        root.join(args.out)
    };
    cmd::run(&mut render_command(root, &out))?;
    let pages = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count();
    if pages == 0 {
        bail!("no man page was written into {}", out.display());
    }
    eprintln!(
        "xtask: {pages} man page(s) in {}; read one with `man -l {}/aptrace.1`",
        out.display(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_rendered_by_the_aptrace_binary_into_the_folder_given() {
        let c = render_command(Path::new("/repo"), Path::new("/repo/target/man"));
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args[args.len() - 3..],
            ["--", "man", "/repo/target/man"],
            "{args:?}"
        );
        assert!(args.windows(2).any(|w| w == ["--bin", "aptrace"]));
    }
}
