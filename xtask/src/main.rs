//! Project tasks: `cargo xtask <task>`.

mod build;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate the synthetic sample recordings in samples/.
    Samples,
    /// Build a static, stripped `aptrace` with live tracing (provisions the toolchain,
    /// bpf-linker and cross tools into .cache/tools and apt as needed).
    Build {
        #[arg(long, value_enum, default_value = "x86_64")]
        target: build::Arch,
    },
    /// Provision only (apt packages, pinned nightly + rust-src, targets, bpf-linker).
    Provision {
        #[arg(long, value_enum, default_value = "x86_64")]
        target: build::Arch,
    },
    /// clippy -D warnings for tracer-ebpf on bpfel (x86_64) and bpfeb (s390x).
    LintEbpf,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Samples => {
            anyhow::bail!("not yet")
        }
        Task::Build { target } => build::build(target).map(|_| ()),
        Task::Provision { target } => build::provision(target),
        Task::LintEbpf => build::lint_ebpf(),
    }
}
