//! Project tasks: `cargo xtask <task>`.

mod bench;
mod provision;
mod samples;
mod testbed;

use std::path::PathBuf;

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
    /// Write generated recordings (synthetic-*.aptr) into a folder.
    Synth {
        #[arg(long, default_value = "target/synth")]
        out: PathBuf,
    },
    /// Regenerate the big-endian fixture with an s390x aptrace under qemu-s390x.
    CrossEndianFixture,
    /// Install what the tests need, then run every test of the workspace.
    Test,
    /// Run the benchmarks and print every ratio of BENCHMARKS.md (`--quick`: compile and run
    /// each once on a small input, as CI does).
    Bench {
        #[arg(long)]
        quick: bool,
    },
    /// Boot Debian kernels in QEMU with the vfio_ap model module and run the scenarios
    /// (`cargo xtask testbed --help`).
    Testbed {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Synth { out } => {
            use tracer::synth::Fault;
            std::fs::create_dir_all(&out)?;
            samples::write_synthetic(&out, "synthetic-clean", &[], 6)?;
            samples::write_synthetic(&out, "synthetic-leak", &[Fault::Leak], 6)?;
            samples::write_synthetic(
                &out,
                "synthetic-mixed",
                &[
                    Fault::Leak,
                    Fault::OverwriteLeak,
                    Fault::LockNotHeld,
                    Fault::InvalidArc,
                    Fault::ErrorPathLeak,
                ],
                12,
            )?;
            Ok(())
        }
        Task::CrossEndianFixture => samples::cross_endian_fixture(&root()),
        Task::Test => test(),
        Task::Bench { quick } => bench::run(quick),
        Task::Testbed { args } => testbed::run(testbed::TestbedArgs::parse(args)?),
    }
}

/// Debian packages the test suite uses: tmux drives the TUI in a real terminal.
const TEST_PACKAGES: &[&str] = &["tmux"];

fn test() -> Result<()> {
    provision::ensure_apt(TEST_PACKAGES)?;
    provision::run(
        std::process::Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["test", "--workspace", "--exclude", "tracer-ebpf"]),
    )
}
