//! Installs what the project's tasks need on a fresh machine, saying what it does: Debian
//! packages, Rust toolchains with their components and targets.

use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;

fn installed(pkg: &str) -> bool {
    cmd::query(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn is_root() -> bool {
    cmd::query(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Debian packages: installs the missing ones with apt-get (as root, or through sudo).
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let root = is_root();
    let apt = |args: &[&str]| -> Result<()> {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd::run(
            c.args(["-o", "DPkg::Lock::Timeout=600", "-q"])
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| format!("install these packages by hand: {}", missing.join(" ")))
    };
    apt(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)
}

fn rustup_list(args: &[&str]) -> String {
    cmd::query(Command::new("rustup").args(args)).unwrap_or_default()
}

/// A Rust toolchain with the given components and targets, each installed when missing.
pub fn ensure_toolchain(toolchain: &str, components: &[&str], targets: &[&str]) -> Result<()> {
    if !rustup_list(&["toolchain", "list"])
        .lines()
        .any(|l| l.starts_with(toolchain))
    {
        eprintln!("xtask: installing the Rust toolchain {toolchain}");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
        ]))?;
    }
    let have = rustup_list(&["component", "list", "--installed", "--toolchain", toolchain]);
    for c in components {
        if !have.lines().any(|l| l.starts_with(c)) {
            cmd::run(Command::new("rustup").args([
                "component",
                "add",
                "--toolchain",
                toolchain,
                c,
            ]))?;
        }
    }
    let have = rustup_list(&["target", "list", "--installed", "--toolchain", toolchain]);
    for t in targets {
        if !have.lines().any(|l| l.trim() == *t) {
            cmd::run(Command::new("rustup").args(["target", "add", "--toolchain", toolchain, t]))?;
        }
    }
    Ok(())
}
