//! The two Rust toolchains of the project, each pinned in one file: stable for userspace in
//! rust-toolchain.toml, the eBPF nightly in the root Cargo.toml's
//! `[workspace.metadata.aptrace] ebpf-toolchain` (docs/toolchain.md).

use anyhow::{Context, Result};

use crate::root;

fn read_toml(name: &str) -> Result<toml::Table> {
    let path = root().join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.parse()
        .with_context(|| format!("parsing {}", path.display()))
}

fn string_at<'a>(table: &'a toml::Table, keys: &[&str]) -> Option<&'a str> {
    let (last, path) = keys.split_last()?;
    let mut t = table;
    for k in path {
        t = t.get(*k)?.as_table()?;
    }
    t.get(*last)?.as_str()
}

/// The nightly that compiles the eBPF crate and runs cargo-fuzz.
pub fn ebpf_nightly() -> Result<String> {
    let keys = ["workspace", "metadata", "aptrace", "ebpf-toolchain"];
    string_at(&read_toml("Cargo.toml")?, &keys)
        .map(str::to_string)
        .with_context(|| format!("Cargo.toml has no {}", keys.join(".")))
}

/// The stable toolchain of rust-toolchain.toml (userspace and the static agents).
pub fn stable() -> Result<String> {
    string_at(
        &read_toml("rust-toolchain.toml")?,
        &["toolchain", "channel"],
    )
    .map(str::to_string)
    .context("rust-toolchain.toml has no toolchain.channel")
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_pins_are_read() {
        assert!(super::ebpf_nightly().unwrap().starts_with("nightly-"));
        assert!(super::stable().unwrap().starts_with("1."));
    }
}
