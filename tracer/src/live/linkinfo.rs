//! The kernel's own count of missed kprobe and kretprobe hits, from `bpf_link_info`.
//!
//! A kretprobe that runs out of instances (`maxactive`), or a kprobe hit while another
//! kprobe handler runs on the CPU, is counted by the kernel in the probe's `nmissed` and
//! never reaches the program. Linux 6.7 reports it as `perf_event.kprobe.missed` in the
//! info of the perf link aya creates; aya 0.14 does not expose that field, so it is read
//! here with the raw `bpf(2)` commands. Older kernels fill less of the structure: the
//! caller then falls back on the probes' own count (`counter::RETURN_MISSED`).

use std::collections::HashSet;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;

const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_PERF_EVENT_KPROBE: u32 = 3;
const BPF_PERF_EVENT_KRETPROBE: u32 = 4;

// struct bpf_link_info (uapi): type, id, prog_id, then the union at 16; for perf links
// the perf_event type at 16 and kprobe { func_name 24, name_len 32, offset 36, addr 40,
// missed 48 }.
const INFO_TYPE: usize = 0;
const INFO_PROG_ID: usize = 8;
const INFO_PERF_TYPE: usize = 16;
const INFO_KPROBE_MISSED: usize = 48;
/// Bytes the kernel must fill for `missed` to be there (6.7+).
const INFO_WITH_MISSED: u32 = 56;

/// `union bpf_attr`, as large as any command here needs; zeroed tails are required.
#[repr(C, align(8))]
struct Attr([u8; 128]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable, zero-tailed bpf_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The sum of `missed` over every kprobe/kretprobe link of the given programs, or `None`
/// when none of them reports the field (a kernel before 6.7, or no such link).
pub fn kprobe_missed(prog_ids: &HashSet<u32>) -> io::Result<Option<u64>> {
    let mut total = None;
    let mut id = 0u32;
    loop {
        let mut attr = Attr([0; 128]);
        attr.0[0..4].copy_from_slice(&id.to_ne_bytes());
        match bpf(BPF_LINK_GET_NEXT_ID, &mut attr) {
            Ok(_) => id = u32_at(&attr.0, 4),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(total),
            Err(e) => return Err(e),
        }
        let mut attr = Attr([0; 128]);
        attr.0[0..4].copy_from_slice(&id.to_ne_bytes());
        let fd = match bpf(BPF_LINK_GET_FD_BY_ID, &mut attr) {
            // SAFETY: the kernel handed us this new descriptor; OwnedFd closes it.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
            // Gone between the two calls: the next id is still valid to continue from.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let mut info = [0u64; 32];
        let mut attr = Attr([0; 128]);
        {
            use std::os::fd::AsRawFd;
            attr.0[0..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
        }
        attr.0[4..8].copy_from_slice(&(std::mem::size_of_val(&info) as u32).to_ne_bytes());
        attr.0[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        let filled = u32_at(&attr.0, 4);
        // SAFETY: a plain u64 array viewed as its bytes.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(info.as_ptr().cast(), std::mem::size_of_val(&info))
        };
        if let Some(missed) = missed_in(bytes, filled, prog_ids) {
            *total.get_or_insert(0) += missed;
        }
    }
}

/// `missed` of one link's info (`filled` bytes of it written by the kernel), if it is a
/// kprobe or kretprobe perf link of one of `prog_ids` and the kernel knows the field.
fn missed_in(info: &[u8], filled: u32, prog_ids: &HashSet<u32>) -> Option<u64> {
    if u32_at(info, INFO_TYPE) != BPF_LINK_TYPE_PERF_EVENT
        || !prog_ids.contains(&u32_at(info, INFO_PROG_ID))
        || filled < INFO_WITH_MISSED
    {
        return None;
    }
    let perf = u32_at(info, INFO_PERF_TYPE);
    (perf == BPF_PERF_EVENT_KPROBE || perf == BPF_PERF_EVENT_KRETPROBE)
        .then(|| u64_at(info, INFO_KPROBE_MISSED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(link_type: u32, prog: u32, perf: u32, missed: u64) -> Vec<u8> {
        let mut b = vec![0u8; 256];
        b[INFO_TYPE..INFO_TYPE + 4].copy_from_slice(&link_type.to_ne_bytes());
        b[INFO_PROG_ID..INFO_PROG_ID + 4].copy_from_slice(&prog.to_ne_bytes());
        b[INFO_PERF_TYPE..INFO_PERF_TYPE + 4].copy_from_slice(&perf.to_ne_bytes());
        b[INFO_KPROBE_MISSED..INFO_KPROBE_MISSED + 8].copy_from_slice(&missed.to_ne_bytes());
        b
    }

    #[test]
    fn reads_missed_only_from_our_kprobe_links_on_kernels_that_fill_it() {
        let ours = HashSet::from([7u32]);
        let kret = info(BPF_LINK_TYPE_PERF_EVENT, 7, BPF_PERF_EVENT_KRETPROBE, 38);
        assert_eq!(missed_in(&kret, 64, &ours), Some(38));
        let kp = info(BPF_LINK_TYPE_PERF_EVENT, 7, BPF_PERF_EVENT_KPROBE, 2);
        assert_eq!(missed_in(&kp, 88, &ours), Some(2));
        // A kernel before 6.7 writes less of the structure: the field is not there.
        assert_eq!(missed_in(&kret, 48, &ours), None);
        // Another tool's program, a tracepoint link, another link type.
        assert_eq!(missed_in(&kret, 64, &HashSet::from([8])), None);
        let tp = info(BPF_LINK_TYPE_PERF_EVENT, 7, 5, 9);
        assert_eq!(missed_in(&tp, 64, &ours), None);
        let raw = info(1, 7, BPF_PERF_EVENT_KRETPROBE, 9);
        assert_eq!(missed_in(&raw, 64, &ours), None);
    }
}
