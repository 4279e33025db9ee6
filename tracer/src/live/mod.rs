//! Live tracing: resolution of the module in the running kernel, the preflight check, and
//! (Linux with the `live` feature) the aya agent that loads the probes and feeds the
//! pipeline.
//!
//! Everything that decides or decodes only reads files or bytes, so it is tested on fixture
//! trees on any OS: resolution and check, [`decode`] (records → events), [`losses`],
//! [`follow`] (the module's loads, attach statuses and lines), [`report`], [`options`].
//! [`agent`] is the only part that needs aya and a Linux kernel: loading, attaching, the
//! run loop.

pub mod btf;
pub mod cancel;
pub mod check;
pub mod decode;
mod degrade;
pub mod elf;
pub mod follow;
pub mod host;
pub mod kallsyms;
pub mod lockreads;
pub mod losses;
pub mod options;
pub mod output;
pub mod report;
pub mod resolve;
pub mod sink;
mod target;

#[cfg(all(feature = "live", target_os = "linux"))]
pub mod agent;
#[cfg(all(feature = "live", target_os = "linux"))]
mod linkinfo;
#[cfg(all(feature = "live", target_os = "linux"))]
mod perflink;

pub use options::{LiveOptions, Preflight, Session};

use std::io::Read;

/// The running kernel's build configuration: /boot/config-RELEASE, else /proc/config.gz.
pub fn kernel_config(host: &host::Host) -> Option<String> {
    if let Some(c) = host.kernel_config() {
        return Some(c);
    }
    let gz = std::fs::read(host.path("/proc/config.gz")).ok()?;
    let mut s = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// `uname -m` of this machine.
pub fn machine() -> String {
    match std::env::consts::ARCH {
        "x86" => "i686".into(),
        other => other.into(),
    }
}

/// Why this binary cannot trace, if it cannot.
pub fn live_support() -> Result<(), String> {
    #[cfg(all(feature = "live", target_os = "linux"))]
    {
        agent::object_present()
    }
    #[cfg(not(all(feature = "live", target_os = "linux")))]
    {
        Err(if cfg!(target_os = "linux") {
            "this aptrace was built without live support (the `live` feature)".into()
        } else {
            "live tracing needs Linux; this aptrace reads recordings only".into()
        })
    }
}

#[cfg(test)]
mod tests;
