//! A kprobe or kretprobe attached with a BPF cookie, which aya 0.14's `KProbe::attach`
//! cannot pass: the kernel's kprobe PMU opened with `perf_event_open(2)`, and the program
//! linked to it with `BPF_LINK_CREATE`, the cookie in the link (Linux 5.15+).
//!
//! One program then serves every function, the cookie naming its slot: the kernel verifies
//! two programs (entry and return) instead of two per function, which was most of the
//! time aptrace took to start on an emulated or slow host.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_LINK_CREATE: libc::c_long = 28;
/// `perf_event_open(2)` flags (uapi/linux/perf_event.h).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `enum bpf_attach_type`: BPF_PERF_EVENT.
const BPF_PERF_EVENT: u32 = 41;

/// The kprobe PMU's sysfs folder: its type number and the bit that makes a kretprobe.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// A probe attached by [`attach`]: dropping it detaches the program (the link) and removes
/// the probe (the perf event).
#[derive(Debug)]
pub struct CookieLink {
    _link: OwnedFd,
    _event: OwnedFd,
}

/// The kprobe PMU: its `type` and the `config` bit of a return probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KprobePmu {
    pub pmu_type: u32,
    pub retprobe_bit: u32,
}

impl KprobePmu {
    /// Read from sysfs; an error names the file (no kprobe PMU: a kernel without
    /// CONFIG_KPROBE_EVENTS, or sysfs not mounted).
    pub fn read() -> io::Result<KprobePmu> {
        let read = |f: &str| {
            let path = format!("{KPROBE_PMU}/{f}");
            fs::read_to_string(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
        };
        let pmu_type = read("type")?;
        let retprobe = read("format/retprobe")?;
        KprobePmu::parse(&pmu_type, &retprobe).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{KPROBE_PMU}: type {pmu_type:?}, format/retprobe {retprobe:?} not understood"
                ),
            )
        })
    }

    /// `type` is a number, `format/retprobe` reads `config:N`.
    pub fn parse(pmu_type: &str, retprobe: &str) -> Option<KprobePmu> {
        let bit = retprobe.trim().strip_prefix("config:")?.parse().ok()?;
        Some(KprobePmu {
            pmu_type: pmu_type.trim().parse().ok()?,
            retprobe_bit: bit,
        })
    }
}

/// `struct perf_event_attr` (uapi), as large as PERF_ATTR_SIZE_VER7; the kernel accepts
/// a larger structure than it knows when the tail is zero.
#[repr(C, align(8))]
struct PerfEventAttr([u8; 128]);

/// `union bpf_attr`, zero-tailed.
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Attaches `prog` (a loaded kprobe program) to the entry of `function`, or to its return
/// when `ret`, with `cookie` for `bpf_get_attach_cookie`.
pub fn attach(
    pmu: KprobePmu,
    prog: BorrowedFd<'_>,
    function: &str,
    ret: bool,
    cookie: u64,
) -> io::Result<CookieLink> {
    let name = CString::new(function)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a function name"))?;
    let mut attr = PerfEventAttr([0; 128]);
    // type 0, size 4, config 8, kprobe_func (config1) 56, probe_offset (config2) 64; every
    // other field zero: counting, enabled, no sampling.
    put_u32(&mut attr.0, 0, pmu.pmu_type);
    put_u32(&mut attr.0, 4, std::mem::size_of::<PerfEventAttr>() as u32);
    if ret {
        put_u64(&mut attr.0, 8, 1 << pmu.retprobe_bit);
    }
    put_u64(&mut attr.0, 56, name.as_ptr() as u64);
    // SAFETY: a valid perf_event_attr whose name pointer lives across the call; pid -1 with
    // cpu 0 is every task (a kprobe fires on every CPU whatever the cpu argument).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor from the kernel, owned from here.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = BpfAttr([0; 128]);
    // link_create: prog_fd 0, target_fd 4, attach_type 8, flags 12, perf_event.bpf_cookie 16.
    put_u32(&mut attr.0, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr.0, 4, event.as_raw_fd() as u32);
    put_u32(&mut attr.0, 8, BPF_PERF_EVENT);
    put_u64(&mut attr.0, 16, cookie);
    // SAFETY: a valid, zero-tailed bpf_attr of the size passed.
    let link = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const BpfAttr,
            std::mem::size_of::<BpfAttr>(),
        )
    };
    if link < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CookieLink {
        // SAFETY: as above.
        _link: unsafe { OwnedFd::from_raw_fd(link as i32) },
        _event: event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pmu_as_sysfs_writes_it() {
        assert_eq!(
            KprobePmu::parse("6\n", "config:0\n"),
            Some(KprobePmu {
                pmu_type: 6,
                retprobe_bit: 0
            })
        );
        assert_eq!(KprobePmu::parse("6", "config1:0"), None);
        assert_eq!(KprobePmu::parse("x", "config:0"), None);
    }
}
