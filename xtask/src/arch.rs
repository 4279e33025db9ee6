//! The two architectures the project builds agents for and boots in the testbed.

use anyhow::{anyhow, Result};
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Arch {
    /// Debian calls it amd64; both spellings are accepted.
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    S390x,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::S390x];

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::S390x => "s390x",
        }
    }

    /// Debian's architecture name.
    pub fn deb(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::S390x => "s390x",
        }
    }

    /// The Rust target of the static agent.
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::S390x => "s390x-unknown-linux-gnu",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        <Self as ValueEnum>::from_str(s, false)
            .map_err(|_| anyhow!("unknown arch {s} (x86_64, s390x)"))
    }
}

#[cfg(test)]
mod tests {
    use super::Arch;

    #[test]
    fn both_spellings() {
        assert_eq!(Arch::parse("amd64").unwrap(), Arch::X86_64);
        assert_eq!(Arch::parse("x86_64").unwrap(), Arch::X86_64);
        assert_eq!(Arch::parse("s390x").unwrap(), Arch::S390x);
        assert!(Arch::parse("arm64").is_err());
    }
}
