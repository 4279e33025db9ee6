//! Builds the eBPF object (tracer-ebpf) with aya-build when the `live` feature is on.
//!
//! - The eBPF crate is compiled by the pinned nightly (the workspace Cargo.toml's
//!   `[workspace.metadata.aptrace] ebpf-toolchain`; `APTRACE_EBPF_TOOLCHAIN` overrides it):
//!   it must use LLVM 22 like bpf-linker, and aya-build adds `-Z build-std` only for a
//!   nightly. aya-build picks bpfel/bpfeb and `bpf_target_arch` from the userspace target.
//!   docs/toolchain.md says more.
//! - bpf-linker is looked up in `<workspace>/.cache/tools/bin` (where `cargo xtask build`
//!   provisions it), then on PATH.
//! - `AYA_BUILD_SKIP=1` writes an empty placeholder object so the crate still compiles
//!   (clippy, docs); such a binary says it has no eBPF object when asked to trace.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "live")]
    live::build();
}

#[cfg(feature = "live")]
mod live {
    use std::env;
    use std::path::{Path, PathBuf};

    pub fn build() {
        println!("cargo:rerun-if-env-changed=APTRACE_EBPF_TOOLCHAIN");
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
        let object = out_dir.join("tracer");
        let skip = env::var("AYA_BUILD_SKIP")
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        if skip {
            std::fs::write(&object, b"").expect("write placeholder eBPF object");
            println!("cargo:warning=AYA_BUILD_SKIP set: the eBPF object is an empty placeholder");
            return;
        }
        let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
        let workspace = manifest.parent().expect("workspace root").to_path_buf();
        let tools = workspace.join(".cache/tools/bin");
        if tools.join("bpf-linker").exists() {
            let path = env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![tools.clone()];
            dirs.extend(env::split_paths(&path));
            // SAFETY: the build script is single-threaded here.
            env::set_var("PATH", env::join_paths(dirs).expect("PATH"));
        } else if !on_path("bpf-linker") {
            panic!(
                "bpf-linker not found in {} or on PATH: run `cargo xtask build`, which provisions \
                 it (or set AYA_BUILD_SKIP=1 to build without the eBPF object)",
                tools.display()
            );
        }
        let toolchain =
            env::var("APTRACE_EBPF_TOOLCHAIN").unwrap_or_else(|_| pinned_nightly(&workspace));
        let ebpf_dir = workspace.join("tracer-ebpf");
        let common_dir = workspace.join("tracer-common");
        println!(
            "cargo:rerun-if-changed={}",
            common_dir.join("src").display()
        );
        let package = aya_build::Package {
            name: "tracer-ebpf",
            root_dir: ebpf_dir.to_str().expect("utf-8 path"),
            ..Default::default()
        };
        if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)) {
            panic!(
                "building the eBPF object with toolchain {toolchain} failed: {e:#}\n\
                 (`cargo xtask build` provisions the toolchain, rust-src and bpf-linker)"
            );
        }
        assert!(
            object.exists(),
            "aya-build produced no {}",
            object.display()
        );
    }

    /// `ebpf-toolchain` of `[workspace.metadata.aptrace]` in the workspace Cargo.toml (a
    /// line scan: a TOML parser would be a build dependency for one string).
    fn pinned_nightly(workspace: &Path) -> String {
        let manifest = workspace.join("Cargo.toml");
        println!("cargo:rerun-if-changed={}", manifest.display());
        let text = std::fs::read_to_string(&manifest).expect("read the workspace Cargo.toml");
        let mut in_table = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_table = line == "[workspace.metadata.aptrace]";
            } else if let Some(v) = line.strip_prefix("ebpf-toolchain").filter(|_| in_table) {
                return v
                    .trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string();
            }
        }
        panic!(
            "{} has no ebpf-toolchain in [workspace.metadata.aptrace]",
            manifest.display()
        );
    }

    fn on_path(exe: &str) -> bool {
        env::var_os("PATH")
            .map(|p| env::split_paths(&p).any(|d| Path::new(&d).join(exe).exists()))
            .unwrap_or(false)
    }
}
