//! `cargo xtask build [--target x86_64|s390x]`: a statically linked, stripped `aptrace` with
//! live tracing, after provisioning what is missing into the project (`.cache/tools`):
//! apt packages, the pinned nightly with rust-src (the eBPF crate's compiler: LLVM 22 like
//! bpf-linker), rustup targets, and bpf-linker built against LLVM 22.
//!
//! `cargo xtask lint-ebpf`: clippy -D warnings for tracer-ebpf on bpfel (x86_64) and bpfeb
//! (s390x), each with its `bpf_target_arch`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The nightly that compiles the eBPF crate: LLVM 22, like the bpf-linker built here.
/// Later nightlies use LLVM 23 and the link fails (TOOLCHAIN.md).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-08-05";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    S390x,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::S390x => "s390x",
        }
    }
    fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::S390x => "s390x-unknown-linux-gnu",
        }
    }
    fn apt_packages(self) -> &'static [&'static str] {
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

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn tools_dir() -> PathBuf {
    root().join(".cache/tools")
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

fn run(cmd: &mut Command) -> Result<()> {
    say(&format!("running {cmd:?}"));
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}

fn stable_toolchain() -> String {
    std::fs::read_to_string(root().join("rust-toolchain.toml"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.trim().strip_prefix("channel").map(|v| {
                    v.trim_start_matches([' ', '='])
                        .trim()
                        .trim_matches('"')
                        .to_string()
                })
            })
        })
        .unwrap_or_else(|| "stable".into())
}

fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!("installing apt packages {}", missing.join(" ")));
    // SAFETY: geteuid has no preconditions.
    let root = output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0");
    let sudo: &[&str] = if root { &[] } else { &["sudo"] };
    let mut update = Command::new(sudo.first().copied().unwrap_or("apt-get"));
    if !root {
        update.arg("apt-get");
    }
    run(update.arg("update"))?;
    let mut install = Command::new(sudo.first().copied().unwrap_or("apt-get"));
    if !root {
        install.arg("apt-get");
    }
    run(install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
        .args(&missing))
}

fn ensure_toolchain(toolchain: &str, components: &[&str], targets: &[&str]) -> Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with(toolchain)) {
        say(&format!("installing Rust toolchain {toolchain}"));
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
        ]))?;
    }
    let have = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))
    .unwrap_or_default();
    for c in components {
        if !have.lines().any(|l| l.starts_with(c)) {
            say(&format!("adding component {c} to {toolchain}"));
            run(Command::new("rustup").args(["component", "add", "--toolchain", toolchain, c]))?;
        }
    }
    let have_targets = output(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))
    .unwrap_or_default();
    for t in targets {
        if !have_targets.lines().any(|l| l.trim() == *t) {
            say(&format!("adding target {t} to {toolchain}"));
            run(Command::new("rustup").args(["target", "add", "--toolchain", toolchain, t]))?;
        }
    }
    Ok(())
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
    run(Command::new("cargo")
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
        .arg(tools_dir()))?;
    Ok(bin)
}

/// Everything the eBPF build needs.
pub fn provision(arch: Arch) -> Result<()> {
    ensure_apt(arch.apt_packages())?;
    ensure_toolchain(EBPF_TOOLCHAIN, &["rust-src"], &[])?;
    ensure_toolchain(&stable_toolchain(), &[], &[arch.triple()])?;
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
    let triple = arch.triple();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .env("PATH", path_with_tools())
        .env("APTRACE_EBPF_TOOLCHAIN", EBPF_TOOLCHAIN)
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
        cmd.env(
            "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER",
            "s390x-linux-gnu-gcc",
        )
        .env(
            "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    } else {
        cmd.env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    }
    say(&format!(
        "building aptrace for {} ({triple}, static, eBPF by {EBPF_TOOLCHAIN})",
        arch.name()
    ));
    run(&mut cmd)?;
    let built = target_dir().join(triple).join("release/aptrace");
    let out_dir = target_dir().join(format!("aptrace-{}", arch.name()));
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("aptrace");
    std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    run(Command::new(arch.strip()).arg(&out))?;
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
    ensure_toolchain(EBPF_TOOLCHAIN, &["rust-src", "clippy"], &[])?;
    for (target, arch) in [
        ("bpfel-unknown-none", "x86_64"),
        ("bpfeb-unknown-none", "s390x"),
    ] {
        say(&format!(
            "clippy tracer-ebpf for {target} (bpf_target_arch={arch})"
        ));
        run(Command::new("rustup")
            .current_dir(root())
            .args([
                "run",
                EBPF_TOOLCHAIN,
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
            .args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}
