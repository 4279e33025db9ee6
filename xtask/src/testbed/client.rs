//! Builds the guest's userspace VFIO client (testbed/client/vfioclient.c), a static binary
//! per guest architecture: `gcc -static` for x86_64, `s390x-linux-gnu-gcc -static` (glibc's
//! s390x cross package) for s390x.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::Arch;
use crate::cmd;

/// The Debian packages the build needs: the compiler and the static C library of the target.
pub fn packages(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["gcc", "libc6-dev"],
        Arch::S390x => &["gcc-s390x-linux-gnu", "libc6-dev-s390x-cross"],
    }
}

/// `<build>/vfioclient-<arch>`, built from `<root>/testbed/client/vfioclient.c`.
pub fn build(root: &Path, build: &Path, arch: Arch) -> Result<PathBuf> {
    let src = root.join("testbed/client/vfioclient.c");
    let out = build.join(format!("vfioclient-{}", arch.name()));
    std::fs::create_dir_all(build)?;
    let cc = match arch {
        Arch::X86_64 => "gcc",
        Arch::S390x => "s390x-linux-gnu-gcc",
    };
    cmd::capture(
        Command::new(cc)
            .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&out)
            .arg(&src),
    )
    .with_context(|| {
        format!(
            "building the VFIO client for {} with {cc} (packages: {})",
            arch.name(),
            packages(arch).join(" ")
        )
    })?;
    Ok(out)
}
