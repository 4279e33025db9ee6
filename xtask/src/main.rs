//! Project tasks: `cargo xtask <task>`.

mod arch;
mod bench;
mod build;
mod cmd;
mod fuzz;
mod man;
mod provision;
mod samples;
mod soak;
mod testbed;
mod toolchain;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use arch::Arch;

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
    /// Run every cargo-fuzz target for N seconds (installs cargo-fuzz and the nightly).
    Fuzz(fuzz::FuzzArgs),
    /// Replay a recording at full speed in a loop and sample memory (not part of CI).
    Soak(soak::SoakArgs),
    /// Run the benchmarks, the kernel-side ones in the testbed's guests too, and print every
    /// ratio of BENCHMARKS.md (`--quick`: compile and run each userspace bench once on a small
    /// input, no guests, as CI does; `--no-kernel`: no guests).
    Bench(bench::BenchArgs),
    /// Boot Debian kernels in QEMU (TCG) with the vfio_ap model module and run the
    /// scenarios with `aptrace live --record` in each guest.
    Testbed(testbed::TestbedArgs),
    /// Build a static, stripped `aptrace` with live tracing (provisions the toolchain,
    /// bpf-linker and cross tools into .cache/tools and apt as needed).
    Build {
        #[arg(long, value_enum, default_value = "x86_64")]
        target: Arch,
    },
    /// Provision only (apt packages, pinned nightly + rust-src, targets, bpf-linker).
    Provision {
        #[arg(long, value_enum, default_value = "x86_64")]
        target: Arch,
    },
    /// clippy -D warnings for tracer-ebpf on bpfel (x86_64) and bpfeb (s390x).
    LintEbpf,
    /// Write the man pages of aptrace and each of its subcommands (default target/man).
    Man(man::ManArgs),
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
        Task::Fuzz(args) => fuzz::run(args),
        Task::Soak(args) => soak::run(args),
        Task::Bench(a) => bench::run(a),
        Task::Testbed(args) => testbed::run(args),
        Task::Build { target } => build::build(target).map(|_| ()),
        Task::Provision { target } => build::provision(target),
        Task::LintEbpf => build::lint_ebpf(),
        Task::Man(args) => man::run(args, &root()),
    }
}

/// Debian packages the test suite uses: tmux drives the TUI in a real terminal.
const TEST_PACKAGES: &[&str] = &["tmux"];

fn test() -> Result<()> {
    provision::ensure_apt(TEST_PACKAGES)?;
    // A real Prometheus for the dashboard and alert tests (its service is kept stopped).
    cmd::run(
        std::process::Command::new("sh")
            .current_dir(root())
            .arg("ci/prometheus-setup.sh"),
    )?;
    // tracer/tests/live_env.rs runs the static agent with live tracing against this host.
    let agent = build::build(Arch::X86_64)?;
    // The ignored tests are the ones that need those installed tools: run them too.
    cmd::run(
        std::process::Command::new(env!("CARGO"))
            .current_dir(root())
            .env("APTRACE_AGENT", &agent)
            .args([
                "test",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--",
                "--include-ignored",
            ]),
    )?;
    // The agent's own unit tests (bpf link info parsing, ...) need the `live` feature; the
    // eBPF object is not needed for them.
    cmd::run(
        std::process::Command::new(env!("CARGO"))
            .current_dir(root())
            .env("AYA_BUILD_SKIP", "1")
            .args(["test", "-p", "tracer", "--features", "live", "--lib"]),
    )
}
