//! Samples and helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tracer::model::Event;
use tracer::profile::Profile;
use tracer::recording::{Header, ProbeState, ProbeStatus, Writer};
use tracer::synth::{Fault, Generator};

/// Runs the `aptrace` binary built for these tests, with warnings only in its log.
pub fn aptrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run aptrace")
}

/// The repository's top folder (samples/, docs/, README.md).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The UUID the generator gives the mdev of life `i`.
pub fn uuid_of(i: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i as u32, i)
}

/// Six mdev lives; the fourth (index 3) leaks its migration data at close.
pub const LEAKING_LIFE: u64 = 3;

pub fn leak_events() -> Vec<Event> {
    let mut g = Generator::new(11);
    g.fault_every = 4;
    g.faults = vec![Fault::Leak];
    for i in 0..6 {
        g.life(i, 1);
    }
    g.into_events()
}

/// A header as the live agent writes it: one probe missing (or inlined), one clone.
pub fn sample_header() -> Header {
    let profile = Profile::vfio_ap();
    let probes = profile
        .functions
        .iter()
        .map(|f| match f.name.as_str() {
            "vfio_ap_transition_to_state" => ProbeStatus {
                name: f.name.clone(),
                state: ProbeState::Missing,
                detail: "not in kallsyms (absent or inlined)".into(),
            },
            "vfio_ap_get_data_size" => ProbeStatus {
                name: format!("{}.isra.0", f.name),
                state: ProbeState::Clone,
                detail: "compiler clone: timed only".into(),
            },
            _ => ProbeStatus {
                name: f.name.clone(),
                state: ProbeState::Attached,
                detail: String::new(),
            },
        })
        .collect();
    Header {
        arch: "s390x".into(),
        kernel_release: "6.12.0-test".into(),
        hostname: "lpar1".into(),
        module: "vfio_ap".into(),
        profile: profile.to_toml(),
        probes,
        writer: tracer::writer_id(),
        ..Header::default()
    }
}

pub fn write_recording(path: &Path, events: &[Event]) {
    let mut w = Writer::create(path, &sample_header(), true).expect("create recording");
    for e in events {
        w.push(e).expect("push");
    }
    w.finish().expect("finish");
}

/// Bitwise CRC-32 (IEEE), independent of the implementation under test.
pub fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}
