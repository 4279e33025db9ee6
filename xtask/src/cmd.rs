//! Running the commands the tasks are made of. Every command that changes something is
//! printed before it runs and fails with an error that names it; queries whose failure is an
//! answer (is this package installed?) go through [`query`].

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// The command as a reader would type it (program and arguments, no environment).
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with the terminal's stdio; fails naming it when it cannot start or fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let name = shown(cmd);
    eprintln!("xtask: {name}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{name}`"))?;
    if !status.success() {
        bail!("`{name}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` with its output captured (noisy tools: apt, make); returns its stdout. A
/// failure's error carries what it printed.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let name = shown(cmd);
    eprintln!("xtask: {name}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{name}`"))?;
    check(&name, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A query: stdout when `cmd` ran and succeeded, None otherwise. Not printed.
pub fn query(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(name: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "`{name}` failed ({})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command() {
        let e = run(Command::new("sh").args(["-c", "exit 3"])).unwrap_err();
        assert!(e.to_string().contains("`sh -c exit 3` failed"), "{e}");
        let e = capture(Command::new("sh").args(["-c", "echo why >&2; exit 1"])).unwrap_err();
        assert!(e.to_string().contains("why"), "{e}");
        assert_eq!(
            capture(Command::new("echo").arg("hi")).unwrap().trim(),
            "hi"
        );
        assert_eq!(query(&mut Command::new("false")), None);
        assert!(run(&mut Command::new("/nonexistent/tool"))
            .unwrap_err()
            .to_string()
            .contains("cannot start"));
    }
}
