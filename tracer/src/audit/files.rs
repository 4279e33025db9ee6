//! Migration files as objects: each `struct file *` from its open (`mig-file-open`) to its
//! release (`mig-file-release`) belongs to the life of the mdev that opened it. A read,
//! write or release of a file whose mdev's life has ended is `file-after-release`; calls
//! nested in a file operation are the file's mdev's (allocations, buffer frees).

use std::sync::Arc;

use super::lifecycle::Phase;
use super::{secs, Auditor, Entering, Frame, Kind};
use crate::model::{Body, Event};

/// One open migration file.
#[derive(Clone, Debug)]
pub(super) struct MigFile {
    /// The mdev that opened it, and which life of that pointer.
    pub(super) mdev: u64,
    pub(super) life: u32,
    /// The return of the open that made it.
    pub(super) opened: Event,
    /// file-after-release was raised for it (once per file).
    pub(super) reported: bool,
}

/// At most this many open files are kept (a file whose release was never seen stays).
const FILES_CAP: usize = 4096;

impl Auditor {
    /// `mig-file-open` returned `filp` for the mdev `ptr`.
    pub(super) fn file_opened(&mut self, ptr: u64, filp: u64, ev: &Event) {
        let Some(life) = self.current_life(ptr) else {
            return;
        };
        if self.files.len() >= FILES_CAP && !self.files.contains_key(&filp) {
            // Forget the oldest: its release was lost.
            if let Some((&old, _)) = self.files.iter().min_by_key(|(_, f)| f.opened.seq) {
                self.files.remove(&old);
            }
        }
        self.files.insert(
            filp,
            MigFile {
                mdev: ptr,
                life,
                opened: ev.clone(),
                reported: false,
            },
        );
    }

    /// The file argument of a file operation's call, read from its entry.
    fn file_of(&self, spec: usize, entry: &Event) -> Option<u64> {
        let role = self.profile.functions[spec].role;
        role.file_arg()
            .and_then(|i| crate::calls::entry_arg(entry, i))
    }

    /// A read, write or release of a migration file: a file whose mdev's life has ended
    /// reaches freed driver memory through `private_data`.
    pub(super) fn file_used(&mut self, ev: &Event, frame: &Entering<'_>, func: &Arc<str>) {
        let Some(filp) = self.file_of(frame.call.spec, ev) else {
            return;
        };
        let Some(f) = self.files.get(&filp) else {
            return;
        };
        if f.reported {
            return;
        }
        let (ptr, life) = (f.mdev, f.life);
        let Some(m) = self.life(ptr, life) else {
            return;
        };
        if m.phase != Phase::Released {
            return;
        }
        let released_by = m.released_by;
        let opened = f.opened.clone();
        let label = format!(
            "{} (life {life})",
            m.uuid
                .as_ref()
                .map(|u| format!("mdev {u} ({ptr:#x})"))
                .unwrap_or_else(|| format!("mdev {ptr:#x}"))
        );
        if let Some(f) = self.files.get_mut(&filp) {
            f.reported = true;
        }
        let msg = format!(
            "{func} used migration file {filp:#x} at {}, opened by {} for {label} at {}, after that mdev's life ended (vfio_ap_mdev_release_dev, event #{}): the file does not pin its device",
            secs(ev.ts_ns),
            call_of(&opened),
            secs(opened.ts_ns),
            released_by.unwrap_or(0)
        );
        let stack = match &ev.body {
            Body::Enter { stack, .. } => stack.clone(),
            _ => Vec::new(),
        };
        // Raised against the mdev's pointer only while no later life holds it.
        let mdev = (self.current_life(ptr) == Some(life)).then_some(ptr);
        self.raise(
            Kind::FileAfterRelease,
            mdev,
            ev,
            Some(func.clone()),
            msg,
            vec![opened],
            stack,
        );
    }

    /// The file's release returned: it is gone.
    pub(super) fn file_released(&mut self, frame: &Frame) {
        if let Some(filp) = self.file_of(frame.call.spec, &frame.call.enter) {
            self.files.remove(&filp);
        }
    }

    /// The mdev of the task's innermost call that has one, else of the migration file whose
    /// operation the task is in (while that file's mdev life is the current one).
    pub(super) fn context_mdev(&self, tid: u32) -> Option<u64> {
        if let Some(m) = self.calls.context_mdev(tid) {
            return Some(m);
        }
        self.calls.stack(tid).iter().rev().find_map(|fr| {
            let f = self
                .files
                .get(&self.file_of(fr.call.spec, &fr.call.enter)?)?;
            (self.current_life(f.mdev) == Some(f.life)).then_some(f.mdev)
        })
    }
}

fn call_of(ev: &Event) -> &str {
    match &ev.body {
        Body::Enter { func, .. } | Body::Exit { func, .. } => func,
        _ => "?",
    }
}
