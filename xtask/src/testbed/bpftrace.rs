//! bpftrace as the benchmarks' peer (issue 16): Debian's own bpftrace (bookworm: 0.17 with
//! LLVM 14 and libbcc, about 280 MiB unpacked) and every library it needs, unpacked into a
//! tree the x86_64 guest mounts read-only over a second 9p share and runs through the tree's
//! own dynamic loader. Too large for the initramfs, and the guests have no package manager.
//!
//! Cached under `<cache>/bpftrace-amd64/`: `debs/` (apt-get download), `root/` (dpkg -x of
//! each), `root/.packages` (the names and versions unpacked, so a changed closure unpacks again).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::kernels::Apt;
use super::Arch;
use crate::cmd;

/// The tree's dynamic loader, as a path inside it (lib64's link is absolute, to the host's).
const LOADER: &str = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
/// The 9p mount tag of the tree.
pub const MOUNT_TAG: &str = "bpft";

/// The names of the packages bpftrace needs, recursively (Depends and Pre-Depends only:
/// what a user's `apt install --no-install-recommends bpftrace` would bring).
fn closure(apt: &Apt) -> Result<Vec<String>> {
    let text = cmd::capture(apt.cmd("apt-cache", Arch::X86_64).args([
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
        "bpftrace",
    ]))?;
    // Package names are the unindented lines; `<name>` is a virtual package, which some
    // real package in the list provides.
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    names.sort();
    names.dedup();
    if !names.iter().any(|n| n == "bpftrace") {
        bail!("apt knows no bpftrace package for amd64 (apt-cache depends printed nothing)");
    }
    Ok(names)
}

/// The unpacked tree with `usr/bin/bpftrace` and its libraries; downloaded and unpacked
/// once, again when the package set changes.
pub fn provision(cache: &Path, apt: &Apt) -> Result<PathBuf> {
    apt.setup(Arch::X86_64)?;
    let base = cache.join("bpftrace-amd64");
    let debs = base.join("debs");
    let root = base.join("root");
    let names = closure(apt)?;
    let mut specs = Vec::new();
    for n in &names {
        let v = apt.field(Arch::X86_64, n, "Version")?;
        specs.push(format!("{n}={v}"));
    }
    let stamp = root.join(".packages");
    let want = specs.join("\n");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(root);
    }
    eprintln!(
        "testbed: bpftrace: downloading and unpacking {} packages into {}",
        specs.len(),
        root.display()
    );
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    let _ = fs::remove_dir_all(&debs);
    apt.download(Arch::X86_64, &specs, &debs)
        .context("downloading bpftrace and its libraries")?;
    for e in fs::read_dir(&debs)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            cmd::run(Command::new("dpkg").arg("-x").arg(&p).arg(&root))
                .with_context(|| format!("unpacking {}", p.display()))?;
        }
    }
    for needed in ["usr/bin/bpftrace", LOADER] {
        if !root.join(needed).exists() {
            bail!(
                "the unpacked bpftrace tree has no {needed} ({})",
                root.display()
            );
        }
    }
    fs::write(&stamp, want)?;
    Ok(root)
}

/// QEMU arguments that share `root` read-only with the guest as [`MOUNT_TAG`].
pub fn qemu_args(root: &Path) -> Vec<String> {
    vec![
        "-fsdev".into(),
        format!(
            "local,id={MOUNT_TAG},path={},security_model=none,readonly=on",
            root.display()
        ),
        "-device".into(),
        format!("virtio-9p-pci,fsdev={MOUNT_TAG},mount_tag={MOUNT_TAG}"),
    ]
}
