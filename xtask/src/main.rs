//! Project tasks: `cargo xtask <task>`.

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
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Samples => {
            anyhow::bail!("not yet")
        }
    }
}
