//! Raw ring-buffer records → events: function names through the symbolizer, stacks from the
//! kernel's stack map, mdev names said once, and a guest's name from its command line the
//! first time it opens an mdev (or, for a `--guest PID` whose process is gone by the time
//! its open is decoded, from its command line read when the probes attached).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use super::host::{guest_name_from_cmdline, Host};
use crate::calls::names::NameCache;
use crate::model::{decode_record_into, Body, Endian, Event, Symbolizer};
use crate::profile::{Profile, Role};

/// The kernel's stack map, or a stand-in: the instruction pointers of a stack id.
pub trait StackFrames {
    fn frames(&self, stack_id: u32) -> Option<Vec<u64>>;
}

/// No stacks (tests, or a record read back without its map).
pub struct NoStacks;

impl StackFrames for NoStacks {
    fn frames(&self, _: u32) -> Option<Vec<u64>> {
        None
    }
}

/// The byte order of records written by this machine's kernel.
pub fn native_endian() -> Endian {
    if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    }
}

/// Turns raw records into events: names, stacks, mdev and guest names.
pub struct Decoder {
    endian: Endian,
    /// Which profile function each name string of the records is (by the string's
    /// identity: one lookup per record was a hash of its name), and their roles.
    functions: NameCache,
    roles: Vec<Role>,
    names: HashMap<u64, Arc<str>>,
    guests: HashSet<u32>,
    /// Guest names read ahead of their opens (`--guest PID`): the open is decoded after the
    /// fact, and a short-lived process may have exited by then.
    named_ahead: HashMap<u32, String>,
    /// The profile's declared locks, by the number an entry record gives them.
    lock_names: Vec<Arc<str>>,
    host: Host,
    /// `APTRACE_RAW_DUMP=FILE`: every raw record, as a little-endian u32 length and the
    /// bytes (test fixtures captured from real kernels).
    raw_dump: Option<Box<dyn Write + Send>>,
}

impl Decoder {
    pub fn new(profile: &Profile, endian: Endian, host: Host) -> Decoder {
        Decoder {
            endian,
            functions: NameCache::new(profile),
            roles: profile.functions.iter().map(|f| f.role).collect(),
            names: HashMap::new(),
            guests: HashSet::new(),
            named_ahead: HashMap::new(),
            lock_names: profile
                .locks
                .iter()
                .map(|l| Arc::from(l.name.as_str()))
                .collect(),
            host,
            raw_dump: None,
        }
    }

    /// Reads `pid`'s guest name now, to name it by if its command line is gone when its
    /// first open is decoded.
    pub fn name_guest_ahead(&mut self, pid: u32) {
        if let Some(name) = self.guest_name_of(pid) {
            self.named_ahead.insert(pid, name);
        }
    }

    fn guest_name_of(&self, pid: u32) -> Option<String> {
        let cmdline = std::fs::read(self.host.path(&format!("/proc/{pid}/cmdline"))).ok()?;
        guest_name_from_cmdline(&cmdline)
    }

    /// Copies every raw record to `w` as it is decoded.
    pub fn dump_raw_to(&mut self, w: Box<dyn Write + Send>) {
        self.raw_dump = Some(w);
    }

    /// Decodes one record into a box from `spare` (one the auditor is done with, so the
    /// event is written once, in place) and appends what it yields (nothing, the event,
    /// or a guest's name and the event).
    pub fn decode(
        &mut self,
        raw: &[u8],
        symbols: &dyn Symbolizer,
        stacks: &dyn StackFrames,
        spare: &mut dyn FnMut() -> Box<Event>,
        out: &mut Vec<Box<Event>>,
    ) {
        if let Some(f) = &mut self.raw_dump {
            let _ = f
                .write_all(&(raw.len() as u32).to_le_bytes())
                .and_then(|_| f.write_all(raw));
        }
        let named = ProfileLocks {
            symbols,
            names: &self.lock_names,
        };
        let mut ev = spare();
        match decode_record_into(raw, self.endian, &named, &mut ev) {
            Ok(stack_id) => self.accept((ev, stack_id), symbols, stacks, out),
            Err(e) => log::warn!("undecodable record ({} bytes): {e}", raw.len()),
        }
    }

    /// The role of the function a record names exactly (a compiler clone's is not taken).
    fn role_of(&mut self, func: &Arc<str>) -> Option<Role> {
        match self.functions.lookup(func) {
            Some((spec, false)) => self.roles.get(spec).copied(),
            _ => None,
        }
    }

    /// What a decoded record (its event and stack id) adds to the stream.
    pub fn accept(
        &mut self,
        (mut ev, stack_id): (Box<Event>, Option<i32>),
        symbols: &dyn Symbolizer,
        stacks: &dyn StackFrames,
        out: &mut Vec<Box<Event>>,
    ) {
        if let Some(ips) = stack_id.and_then(|id| stacks.frames(id as u32)) {
            let frames = useful_frames(ips.iter().map(|&ip| symbols.frame(ip)));
            match &mut ev.body {
                Body::Enter { stack, .. } | Body::Alloc { stack, .. } => *stack = frames,
                _ => {}
            }
        }
        match &ev.body {
            Body::MdevName { mdev, uuid } => {
                if self.names.get(mdev) == Some(uuid) || uuid.is_empty() {
                    return;
                }
                self.names.insert(*mdev, uuid.clone());
            }
            Body::Enter { func, .. } if self.role_of(func) == Some(Role::Open) => {
                let pid = ev.task.pid;
                if self.guests.insert(pid) {
                    let ahead = self.named_ahead.remove(&pid);
                    let name = self.guest_name_of(pid).or(ahead);
                    if let Some(name) = name {
                        out.push(Box::new(Event {
                            seq: 0,
                            ts_ns: ev.ts_ns.saturating_sub(1),
                            cpu: ev.cpu,
                            task: ev.task.clone(),
                            body: Body::GuestName {
                                guest_pid: pid,
                                name: Arc::from(name),
                            },
                        }));
                    }
                }
            }
            Body::Exit { func, arg0, .. } if self.role_of(func) == Some(Role::ReleaseDev) => {
                self.names.remove(arg0);
            }
            _ => {}
        }
        out.push(ev);
    }
}

/// A symbolizer that also names the profile's locks.
struct ProfileLocks<'a> {
    symbols: &'a dyn Symbolizer,
    names: &'a [Arc<str>],
}

impl Symbolizer for ProfileLocks<'_> {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        self.symbols.function_at(addr)
    }
    fn frame(&self, addr: u64) -> Arc<str> {
        self.symbols.frame(addr)
    }
    fn lock_name(&self, id: u8) -> Arc<str> {
        match self.names.get(id as usize) {
            Some(n) => n.clone(),
            None => self.symbols.lock_name(id),
        }
    }
}

/// A stack without the probe's own frames (the BPF program, the trace trampoline).
fn useful_frames(frames: impl Iterator<Item = Arc<str>>) -> Vec<Arc<str>> {
    frames
        .skip_while(|f| {
            f.contains("[bpf]") || f.starts_with("bpf_trace_run") || f.starts_with("kprobe_")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::{LockObs, NoSymbols, Task};

    fn task(pid: u32) -> Task {
        Task {
            pid,
            tid: pid,
            comm: Arc::from("qemu-system-s39"),
        }
    }

    fn decoded(pid: u32, body: Body, stack_id: Option<i32>) -> (Box<Event>, Option<i32>) {
        let ev = Event {
            seq: 0,
            ts_ns: 1_000,
            cpu: 1,
            task: task(pid),
            body,
        };
        (Box::new(ev), stack_id)
    }

    fn enter(func: &str) -> Body {
        Body::Enter {
            func: Arc::from(func),
            args: [0x1000].into(),
            field: None,
            lock: LockObs::NotChecked,
            untrusted: false,
            locks: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// The profile's open function: a guest is named at its first.
    fn open_function() -> String {
        Profile::vfio_ap()
            .functions
            .iter()
            .find(|f| f.role == Role::Open)
            .expect("an open function")
            .name
            .clone()
    }

    fn new_box() -> Box<Event> {
        Box::new(Event::placeholder())
    }

    fn decoder(root: &Path) -> Decoder {
        Decoder::new(&Profile::vfio_ap(), Endian::Little, Host::at(root))
    }

    /// The first open by a guest names it from its command line, once.
    #[test]
    fn a_guest_is_named_from_its_cmdline_on_its_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("proc/77");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("cmdline"),
            b"qemu-system-s390x\0-name\0guest=g1,debug-threads=on\0",
        )
        .unwrap();
        let open = open_function();
        let mut d = decoder(dir.path());
        let mut out = Vec::new();
        d.accept(
            decoded(77, enter(&open), None),
            &NoSymbols,
            &NoStacks,
            &mut out,
        );
        d.accept(
            decoded(77, enter(&open), None),
            &NoSymbols,
            &NoStacks,
            &mut out,
        );
        assert_eq!(out.len(), 3, "{out:?}");
        match &out[0].body {
            Body::GuestName { guest_pid, name } => {
                assert_eq!((*guest_pid, &**name), (77, "g1"));
                assert_eq!(out[0].ts_ns, 999, "just before the open");
            }
            other => panic!("{other:?}"),
        }
    }

    /// `--guest PID` whose process exited before its open was decoded: still named, from
    /// the command line read when the probes attached.
    #[test]
    fn a_guest_gone_before_its_open_is_decoded_is_named_from_the_early_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("proc/78");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("cmdline"), b"qemu\0-name\0guest=vm1\0").unwrap();
        let open = open_function();
        let mut d = decoder(dir.path());
        d.name_guest_ahead(78);
        d.name_guest_ahead(79); // no such process: nothing read, nothing said
        std::fs::remove_dir_all(&p).unwrap();
        let mut out = Vec::new();
        for pid in [78, 79] {
            d.accept(
                decoded(pid, enter(&open), None),
                &NoSymbols,
                &NoStacks,
                &mut out,
            );
        }
        let names: Vec<_> = out
            .iter()
            .filter_map(|e| match &e.body {
                Body::GuestName { guest_pid, name } => Some((*guest_pid, name.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(names, [(78, "vm1".to_string())]);
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn an_mdev_name_is_said_once_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = decoder(dir.path());
        let name = |uuid: &str| Body::MdevName {
            mdev: 0xa0,
            uuid: Arc::from(uuid),
        };
        let mut out = Vec::new();
        for u in ["u-1", "u-1", "", "u-2"] {
            d.accept(decoded(1, name(u), None), &NoSymbols, &NoStacks, &mut out);
        }
        let said: Vec<_> = out
            .iter()
            .map(|e| match &e.body {
                Body::MdevName { uuid, .. } => uuid.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(said, ["u-1", "u-2"]);

        // The object's release forgets its name: the same name said again is news (a new
        // life at that address). A compiler clone of the release function is not believed.
        let release = Profile::vfio_ap()
            .functions
            .iter()
            .find(|f| f.role == Role::ReleaseDev)
            .map(|f| f.name.clone())
            .unwrap();
        let exit = |func: String| Body::Exit {
            func: Arc::from(func),
            ret: 0,
            arg0: 0xa0,
            duration_ns: None,
            field: None,
        };
        out.clear();
        for body in [
            exit(format!("{release}.isra.0")),
            name("u-2"),
            exit(release.clone()),
            name("u-2"),
        ] {
            d.accept(decoded(1, body, None), &NoSymbols, &NoStacks, &mut out);
        }
        let said: Vec<_> = out
            .iter()
            .filter_map(|e| match &e.body {
                Body::MdevName { uuid, .. } => Some(uuid.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(said, ["u-2"], "said again only after the real release");
    }

    struct OneStack(Vec<u64>);
    impl StackFrames for OneStack {
        fn frames(&self, id: u32) -> Option<Vec<u64>> {
            (id == 7).then(|| self.0.clone())
        }
    }

    struct Named;
    impl Symbolizer for Named {
        fn function_at(&self, _: u64) -> Option<Arc<str>> {
            None
        }
        fn frame(&self, ip: u64) -> Arc<str> {
            Arc::from(match ip {
                1 => "bpf_prog_1234 [bpf]",
                2 => "kprobe_ftrace_handler",
                3 => "vfio_ap_mdev_open_device+0x10",
                _ => "vfio_df_open+0x40",
            })
        }
    }

    #[test]
    fn stacks_lose_the_probes_own_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = decoder(dir.path());
        let mut out = Vec::new();
        let stacks = OneStack(vec![1, 2, 3, 4]);
        d.accept(
            decoded(1, enter("other"), Some(7)),
            &Named,
            &stacks,
            &mut out,
        );
        match &out[0].body {
            Body::Enter { stack, .. } => {
                let s: Vec<&str> = stack.iter().map(|f| &**f).collect();
                assert_eq!(s, ["vfio_ap_mdev_open_device+0x10", "vfio_df_open+0x40"]);
            }
            other => panic!("{other:?}"),
        }
    }

    /// An entry record's lock reads are named by the profile's locks, in their order.
    #[test]
    fn lock_reads_are_named_by_the_profile() {
        use crate::model::{encode_record, LockSeen};
        let dir = tempfile::tempdir().unwrap();
        let mut d = decoder(dir.path());
        let mut body = enter("0xffffffffc0001000");
        if let Body::Enter { locks, .. } = &mut body {
            *locks = vec![
                LockSeen {
                    lock: Arc::from("lock#0"),
                    obs: LockObs::Free,
                },
                LockSeen {
                    lock: Arc::from("lock#4"),
                    obs: LockObs::HeldByCurrent,
                },
            ];
        }
        let ev = *decoded(7, body, None).0;
        let raw = encode_record(&ev, None, Endian::Little, &|_: &str| None).unwrap();
        let mut out = Vec::new();
        d.decode(&raw, &NoSymbols, &NoStacks, &mut new_box, &mut out);
        let Body::Enter { locks, .. } = &out[0].body else {
            panic!("{out:?}");
        };
        let names: Vec<&str> = locks.iter().map(|l| &*l.lock).collect();
        let p = Profile::vfio_ap();
        assert_eq!(names, [p.locks[0].name.as_str(), p.locks[4].name.as_str()]);
        assert_eq!(names, ["ap_attr_mutex", "dev_set_lock"]);
    }

    /// Records from a real kernel, through the whole decoder, copied to the raw dump as
    /// they were read.
    #[test]
    fn captured_records_decode_and_are_dumped_unchanged() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/live/raw-x86_64-alloc-free.bin");
        let data = std::fs::read(p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut d = decoder(dir.path());
        let dump = Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        d.dump_raw_to(Box::new(Shared(dump.clone())));
        let mut out = Vec::new();
        let mut off = 0;
        let mut n = 0;
        while off + 4 <= data.len() {
            let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            d.decode(
                &data[off + 4..off + 4 + len],
                &NoSymbols,
                &NoStacks,
                &mut new_box,
                &mut out,
            );
            off += 4 + len;
            n += 1;
        }
        assert_eq!(out.len(), n);
        assert!(out.iter().any(|e| matches!(e.body, Body::Alloc { .. })));
        assert_eq!(*dump.lock().unwrap(), data);
        // An undecodable record is dropped, not passed on.
        d.decode(&[0u8; 3], &NoSymbols, &NoStacks, &mut new_box, &mut out);
        assert_eq!(out.len(), n);
    }
}
