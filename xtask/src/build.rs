//! `cargo xtask build [--target x86_64|s390x]`: a statically linked, stripped `aptrace` with
//! live tracing, after provisioning what is missing into the project (`.cache/tools`):
//! apt packages, the pinned nightly with rust-src (the eBPF crate's compiler: LLVM 22 like
//! bpf-linker), rustup targets, and bpf-linker built against LLVM 22.
//!
//! `cargo xtask lint-ebpf`: clippy -D warnings for tracer-ebpf on bpfel (x86_64) and bpfeb
//! (s390x), each with its `bpf_target_arch`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::{cmd, provision, root, toolchain};

/// bpf-linker is built against this LLVM, the one the eBPF nightly's rustc uses.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

impl Arch {
    fn build_packages(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["llvm-22-dev", "musl-tools"],
            Arch::S390x => &[
                "llvm-22-dev",
                "gcc-s390x-linux-gnu",
                "libc6-dev-s390x-cross",
            ],
        }
    }
    fn strip(self) -> &'static str {
        match self {
            Arch::X86_64 => "strip",
            Arch::S390x => "s390x-linux-gnu-strip",
        }
    }
}

fn tools_dir() -> PathBuf {
    root().join(".cache/tools")
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

fn ensure_bpf_linker() -> Result<PathBuf> {
    let bin = tools_dir().join("bin/bpf-linker");
    if bin.exists() {
        return Ok(bin);
    }
    say(&format!(
        "building bpf-linker against LLVM 22 into {}",
        tools_dir().display()
    ));
    cmd::run(
        Command::new("cargo")
            .current_dir(root())
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
                "--root",
            ])
            .arg(tools_dir()),
    )?;
    Ok(bin)
}

/// Everything the eBPF build needs.
pub fn provision(arch: Arch) -> Result<()> {
    provision::ensure_apt(arch.build_packages())?;
    provision::ensure_toolchain(&toolchain::ebpf_nightly()?, &["rust-src"], &[])?;
    provision::ensure_toolchain(&toolchain::stable()?, &[], &[arch.triple()])?;
    ensure_bpf_linker()?;
    Ok(())
}

fn path_with_tools() -> std::ffi::OsString {
    let mut dirs = vec![tools_dir().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).expect("PATH")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds, strips and places the static binary; returns its path.
pub fn build(arch: Arch) -> Result<PathBuf> {
    provision(arch)?;
    let nightly = toolchain::ebpf_nightly()?;
    let triple = arch.triple();
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(root())
        .env("PATH", path_with_tools())
        .env_remove("AYA_BUILD_SKIP")
        .args([
            "build",
            "--release",
            "--package",
            "tracer",
            "--bin",
            "aptrace",
            "--features",
            "live",
            "--target",
            triple,
        ]);
    if arch == Arch::S390x {
        cargo
            .env(
                "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER",
                "s390x-linux-gnu-gcc",
            )
            .env(
                "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            );
    } else {
        cargo.env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    }
    say(&format!(
        "building aptrace for {} ({triple}, static, eBPF by {nightly})",
        arch.name()
    ));
    cmd::run(&mut cargo)?;
    let built = target_dir().join(triple).join("release/aptrace");
    let out_dir = target_dir().join(format!("aptrace-{}", arch.name()));
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("aptrace");
    std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    cmd::run(Command::new(arch.strip()).arg(&out))?;
    let data = std::fs::read(&out)?;
    if has_interp(&data) {
        bail!("{} is dynamically linked (has PT_INTERP)", out.display());
    }
    say(&format!(
        "{} is static, {} bytes",
        out.display(),
        data.len()
    ));
    println!("{}", out.display());
    Ok(out)
}

/// Whether an ELF64 file asks for a dynamic loader.
fn has_interp(d: &[u8]) -> bool {
    if d.len() < 64 || &d[..4] != b"\x7fELF" {
        return false;
    }
    let big = d[5] == 2;
    let rd = |o: usize, n: usize| -> u64 {
        let b = &d[o..o + n];
        let mut v = 0u64;
        for i in 0..n {
            let byte = if big { b[i] } else { b[n - 1 - i] };
            v = (v << 8) | byte as u64;
        }
        v
    };
    let phoff = rd(0x20, 8) as usize;
    let phentsize = rd(0x36, 2) as usize;
    let phnum = rd(0x38, 2) as usize;
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= d.len() && rd(o, 4) == 3
    })
}

/// clippy -D warnings on the eBPF crate for both byte orders.
pub fn lint_ebpf() -> Result<()> {
    let nightly = toolchain::ebpf_nightly()?;
    provision::ensure_toolchain(&nightly, &["rust-src", "clippy"], &[])?;
    for (target, arch) in [
        ("bpfel-unknown-none", "x86_64"),
        ("bpfeb-unknown-none", "s390x"),
    ] {
        say(&format!(
            "clippy tracer-ebpf for {target} (bpf_target_arch={arch})"
        ));
        cmd::run(
            Command::new("rustup")
                .current_dir(root())
                .args(["run", &nightly])
                .args([
                    "cargo",
                    "clippy",
                    "--package",
                    "tracer-ebpf",
                    "--release",
                    "--target",
                    target,
                    "-Z",
                    "build-std=core",
                    "--target-dir",
                ])
                .arg(target_dir().join("lint-ebpf"))
                .env(
                    "CARGO_ENCODED_RUSTFLAGS",
                    format!("--cfg=bpf_target_arch=\"{arch}\""),
                )
                .env_remove("RUSTC")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .args(["--", "-D", "warnings"]),
        )?;
    }
    Ok(())
}
