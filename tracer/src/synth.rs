//! A generator of realistic event streams, as the driver would produce them: many mdevs,
//! guests opening them, migrations, allocations; mostly clean, with faults on request.
//! Used by tests, benchmarks, fuzz seeds and the synthetic samples.

use std::sync::Arc;

use crate::model::{Body, Event, LockObs, Task};

/// Faults the generator can inject, one per mdev life that draws it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// close forgets release_migration_data.
    Leak,
    /// init_migration_data runs twice.
    OverwriteLeak,
    /// init_migration_data entered without the lock.
    LockNotHeld,
    /// a request outside the device's flags is accepted.
    InvalidArc,
    /// open fails after init without cleanup.
    ErrorPathLeak,
}

/// A tiny deterministic PRNG (xorshift64*), so streams are reproducible without a crate.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Builds a stream of complete mdev lives.
pub struct Generator {
    rng: Rng,
    events: Vec<Event>,
    ts: u64,
    seq: u64,
    /// One in `fault_every` lives gets a fault (0: never).
    pub fault_every: u64,
    pub faults: Vec<Fault>,
    /// Migrations per open (round trips RUNNING→STOP→STOP_COPY→STOP→RUNNING).
    pub migrations: u32,
    names: Vec<Arc<str>>,
    /// The two task names, shared by every life's events as a decoder shares a task's name
    /// between its records.
    ctl: Arc<str>,
    qemu: Arc<str>,
}

const F: [&str; 12] = [
    "vfio_ap_mdev_probe",
    "vfio_ap_mdev_init_dev",
    "vfio_ap_init_migration_capabilities",
    "vfio_ap_mdev_open_device",
    "vfio_ap_init_migration_data",
    "vfio_ap_release_migration_data",
    "vfio_ap_mdev_close_device",
    "vfio_ap_mdev_remove",
    "vfio_ap_mdev_release_dev",
    "vfio_ap_set_state",
    "vfio_ap_get_state",
    "vfio_ap_transition_to_state",
];
const PROBE: usize = 0;
const INIT_DEV: usize = 1;
const CAPS: usize = 2;
const OPEN: usize = 3;
const INIT_MIG: usize = 4;
const REL_MIG: usize = 5;
const CLOSE: usize = 6;
const REMOVE: usize = 7;
const RELEASE: usize = 8;
const SET_STATE: usize = 9;
const GET_STATE: usize = 10;
const STEP: usize = 11;

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            events: Vec::new(),
            ts: 5_000_000_000,
            seq: 0,
            fault_every: 0,
            faults: Vec::new(),
            migrations: 2,
            names: F.iter().map(|s| Arc::from(*s)).collect(),
            ctl: Arc::from("mdevctl"),
            qemu: Arc::from("qemu-system-s39"),
        }
    }

    fn push(&mut self, pid: u32, comm: &Arc<str>, body: Body) {
        self.seq += 1;
        self.ts += 200 + self.rng.below(3000);
        self.events.push(Event {
            seq: self.seq,
            ts_ns: self.ts,
            cpu: (self.rng.below(4)) as u32,
            task: Task {
                pid,
                tid: pid,
                comm: comm.clone(),
            },
            body,
        });
    }

    fn enter(
        &mut self,
        pid: u32,
        comm: &Arc<str>,
        f: usize,
        args: &[u64],
        lock: LockObs,
        field: Option<u64>,
    ) {
        let func = self.names[f].clone();
        let mut a = args.to_vec();
        a.resize(4, 0);
        self.push(
            pid,
            comm,
            Body::Enter {
                func,
                args: a.into(),
                field,
                lock,
                untrusted: false,
                locks: Vec::new(),
                stack: Vec::new(),
            },
        );
    }

    fn exit(
        &mut self,
        pid: u32,
        comm: &Arc<str>,
        f: usize,
        arg0: u64,
        ret: u64,
        field: Option<u64>,
    ) {
        let func = self.names[f].clone();
        let d = 300 + self.rng.below(20_000);
        self.push(
            pid,
            comm,
            Body::Exit {
                func,
                ret,
                arg0,
                duration_ns: Some(d),
                field,
            },
        );
    }

    fn call(&mut self, pid: u32, comm: &Arc<str>, f: usize, args: &[u64], lock: LockObs, ret: u64) {
        self.enter(pid, comm, f, args, lock, None);
        self.exit(pid, comm, f, args[0], ret, None);
    }

    fn set_state(&mut self, pid: u32, comm: &Arc<str>, mdev: u64, steps: &[u64], ret: u64) {
        let to = *steps.last().expect("a step");
        self.enter(pid, comm, SET_STATE, &[mdev, to], LockObs::NotChecked, None);
        for &s in steps {
            self.call(pid, comm, STEP, &[mdev, s], LockObs::NotChecked, 0);
        }
        self.exit(pid, comm, SET_STATE, mdev, ret, None);
    }

    /// Appends one whole mdev life: create, `opens` guest sessions with migrations, remove,
    /// release. Returns the fault it carries, if any.
    pub fn life(&mut self, index: u64, opens: u32) -> Option<Fault> {
        let fault = if self.fault_every > 0
            && !self.faults.is_empty()
            && index % self.fault_every == self.fault_every - 1
        {
            Some(self.faults[(index / self.fault_every) as usize % self.faults.len()])
        } else {
            None
        };
        let mdev = 0xffff_8880_1000_0000 + (index % 4096) * 0x1000;
        let dev = 0xffff_8880_2000_0000 + (index % 4096) * 0x800;
        let (ctl, qemu) = (self.ctl.clone(), self.qemu.clone());
        let ctl_pid = 300 + (index % 50) as u32;
        let guest = 2000 + (index % 97) as u32;
        self.enter(ctl_pid, &ctl, PROBE, &[dev], LockObs::Free, None);
        self.call(ctl_pid, &ctl, INIT_DEV, &[mdev], LockObs::Free, 0);
        self.call(ctl_pid, &ctl, CAPS, &[mdev], LockObs::HeldByCurrent, 0);
        self.exit(ctl_pid, &ctl, PROBE, dev, 0, None);
        self.push(
            ctl_pid,
            &ctl,
            Body::MdevName {
                mdev,
                uuid: Arc::from(format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    index as u32, index
                )),
            },
        );
        for o in 0..opens {
            let mig = 0xffff_8880_3000_0000 + (index % 4096) * 0x100 + u64::from(o) * 0x40;
            self.enter(guest, &qemu, OPEN, &[mdev], LockObs::Free, None);
            let lock = if fault == Some(Fault::LockNotHeld) && o == 0 {
                LockObs::Free
            } else {
                LockObs::HeldByCurrent
            };
            self.enter(guest, &qemu, INIT_MIG, &[mdev], lock, None);
            self.exit(guest, &qemu, INIT_MIG, mdev, 0, Some(mig));
            if fault == Some(Fault::OverwriteLeak) && o == 0 {
                self.enter(
                    guest,
                    &qemu,
                    INIT_MIG,
                    &[mdev],
                    LockObs::HeldByCurrent,
                    None,
                );
                self.exit(guest, &qemu, INIT_MIG, mdev, 0, Some(mig + 0x20));
            }
            if fault == Some(Fault::ErrorPathLeak) && o == 0 {
                self.exit(guest, &qemu, OPEN, mdev, (-22i64) as u64, None);
                continue;
            }
            self.exit(guest, &qemu, OPEN, mdev, 0, None);
            for _ in 0..self.migrations {
                self.set_state(guest, &qemu, mdev, &[1], 0);
                self.set_state(guest, &qemu, mdev, &[3], 0xffff_8880_4000_0000);
                self.set_state(guest, &qemu, mdev, &[1], 0);
                self.set_state(guest, &qemu, mdev, &[2], 0);
                self.enter(
                    guest,
                    &qemu,
                    GET_STATE,
                    &[mdev, 0x7fff_0000],
                    LockObs::NotChecked,
                    None,
                );
                self.exit(guest, &qemu, GET_STATE, mdev, 0, Some(2));
            }
            if fault == Some(Fault::InvalidArc) && o == 0 {
                self.enter(
                    guest,
                    &qemu,
                    SET_STATE,
                    &[mdev, 6],
                    LockObs::NotChecked,
                    None,
                );
                self.exit(guest, &qemu, SET_STATE, mdev, 0, None);
                self.set_state(guest, &qemu, mdev, &[2], 0);
            }
            self.enter(guest, &qemu, CLOSE, &[mdev], LockObs::Free, None);
            if fault != Some(Fault::Leak) {
                let freed = if fault == Some(Fault::OverwriteLeak) && o == 0 {
                    mig + 0x20
                } else {
                    mig
                };
                self.enter(
                    guest,
                    &qemu,
                    REL_MIG,
                    &[mdev],
                    LockObs::HeldByCurrent,
                    Some(freed),
                );
                self.exit(guest, &qemu, REL_MIG, mdev, 0, None);
            }
            self.exit(guest, &qemu, CLOSE, mdev, 0, None);
        }
        self.call(ctl_pid, &ctl, REMOVE, &[dev], LockObs::Free, 0);
        self.enter(ctl_pid, &ctl, RELEASE, &[mdev], LockObs::Free, None);
        if fault == Some(Fault::ErrorPathLeak) {
            // release_dev frees what the failed open left behind (the seed's release does).
            // The error-path finding stands; this only keeps the stream realistic.
        }
        self.exit(ctl_pid, &ctl, RELEASE, mdev, 0, None);
        fault
    }

    /// Lives until at least `n` events exist; returns the events.
    pub fn stream(mut self, n: usize) -> Vec<Event> {
        let mut i = 0;
        while self.events.len() < n {
            self.life(i, 1 + (i % 3) as u32);
            i += 1;
        }
        self.events
    }

    /// The events generated so far.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Auditor, Kind};
    use crate::profile::Profile;

    #[test]
    fn a_clean_stream_audits_clean() {
        let evs = Generator::new(7).stream(20_000);
        let mut a = Auditor::new(Profile::vfio_ap());
        evs.iter().for_each(|e| a.ingest(e));
        assert!(a.findings().is_empty(), "{:#?}", &a.findings()[..1]);
        assert!(a.finish().outstanding.is_empty());
    }

    #[test]
    fn a_run_audits_as_its_events_one_by_one() {
        let mut g = Generator::new(11);
        g.fault_every = 2;
        g.faults = vec![Fault::Leak, Fault::InvalidArc, Fault::LockNotHeld];
        for i in 0..40 {
            g.life(i, 2);
        }
        let evs = g.into_events();
        let (mut one, mut all) = (
            Auditor::new(Profile::vfio_ap()),
            Auditor::new(Profile::vfio_ap()),
        );
        evs.iter().for_each(|e| one.ingest(e));
        all.ingest_all(&evs);
        assert!(!one.findings().is_empty());
        assert_eq!(
            format!("{:?}", one.findings()),
            format!("{:?}", all.findings())
        );
        assert_eq!(
            format!("{:?}", one.snapshot()),
            format!("{:?}", all.snapshot())
        );
    }

    #[test]
    fn injected_faults_are_found_exactly() {
        let mut g = Generator::new(9);
        g.fault_every = 3;
        g.faults = vec![
            Fault::Leak,
            Fault::OverwriteLeak,
            Fault::LockNotHeld,
            Fault::InvalidArc,
            Fault::ErrorPathLeak,
        ];
        for i in 0..15 {
            g.life(i, 1);
        }
        let evs = g.into_events();
        let mut a = Auditor::new(Profile::vfio_ap());
        evs.iter().for_each(|e| a.ingest(e));
        let mut kinds: Vec<Kind> = a.findings().iter().map(|f| f.kind).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                Kind::Leak,
                Kind::OverwriteLeak,
                Kind::LockNotHeld,
                Kind::InvalidMigrationArc,
                Kind::ErrorPathLeak
            ]
        );
    }
}
