//! Where the declared locks' owner words are in the running kernel, and which of them each
//! profiled function's entry reads: the probed lock has its own check; the others are read
//! where they give order edges (a function that takes a lock) and where they can be reached
//! (a global, or an argument that is the driver's object).

use tracer_common as abi;

use super::btf::MutexLayout;
use super::kallsyms::Kallsyms;
use crate::profile::{FunctionSpec, LockSpec, MdevArg, Profile};

/// One declared lock in the running kernel: how to read its owner word, or why it cannot be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockTarget {
    pub name: String,
    /// The read with its start, path and offsets; `id` is the lock's index in the profile.
    pub read: Result<abi::LockRead, String>,
}

/// Where each declared lock other than the probed one is. `symbol` finds a global's address
/// (None: not found, with the reason); `field_offset` a `struct.member`'s offset.
/// `holder_read`: the probed lock's check reads the profile's `lock_holder_symbol` pointer
/// at every entry that reads locks, so a lock behind it starts from that value.
pub fn lock_targets(
    profile: &Profile,
    mutex: &Result<(MutexLayout, String), String>,
    symbol: &dyn Fn(&str) -> Result<u64, String>,
    field_offset: &dyn Fn(&str) -> Result<u64, String>,
    holder_read: bool,
) -> Vec<LockTarget> {
    let probed = profile.probed_lock();
    profile
        .locks
        .iter()
        .enumerate()
        .filter(|(_, l)| l.name != probed)
        .map(|(id, l)| {
            let mut read = lock_read(l, id, mutex, symbol, field_offset);
            if let Ok(r) = &mut read {
                if holder_read
                    && l.symbol.as_deref() == Some(profile.lock_holder_symbol.as_str())
                    && r.path.count > 0
                {
                    // The first hop reads the holder pointer: the check already did.
                    r.from = abi::lock_from::HOLDER;
                    r.start = 0;
                    r.path.hops.rotate_left(1);
                    r.path.hops[abi::MAX_HOPS - 1] = 0;
                    r.path.count -= 1;
                }
            }
            LockTarget {
                name: l.name.clone(),
                read,
            }
        })
        .collect()
}

fn lock_read(
    l: &LockSpec,
    id: usize,
    mutex: &Result<(MutexLayout, String), String>,
    symbol: &dyn Fn(&str) -> Result<u64, String>,
    field_offset: &dyn Fn(&str) -> Result<u64, String>,
) -> Result<abi::LockRead, String> {
    let id = u8::try_from(id).map_err(|_| format!("lock {} is past the 256th", l.name))?;
    let (layout, _) = mutex.as_ref().map_err(Clone::clone)?;
    let mut r = abi::LockRead {
        owner_mask: l.owner_mask.unwrap_or(layout.owner_mask),
        id,
        ..Default::default()
    };
    let mut hops: Vec<u64> = Vec::new();
    match (&l.symbol, l.arg) {
        (Some(sym), _) => {
            r.from = abi::lock_from::GLOBAL;
            r.start = symbol(sym)?;
            // A symbol with a path is a pointer variable: read it first.
            if !l.path.is_empty() {
                hops.push(0);
            }
        }
        (None, Some(arg)) => {
            r.from = abi::lock_from::ARG;
            r.arg = arg.min(abi::MAX_ARGS as u8 - 1);
        }
        (None, None) => return Err(format!("lock {} has no start", l.name)),
    }
    let (last, pointers) = match l.path.split_last() {
        Some((last, pointers)) => (field_offset(last)?, pointers),
        None => (0, &[][..]),
    };
    for step in pointers {
        hops.push(field_offset(step)?);
    }
    if hops.len() > abi::MAX_HOPS {
        return Err(format!(
            "lock {}: {} pointers to follow, at most {} are supported",
            l.name,
            hops.len(),
            abi::MAX_HOPS
        ));
    }
    for (i, h) in hops.iter().enumerate() {
        r.path.hops[i] = u32::try_from(*h).map_err(|_| format!("offset {h} is too large"))?;
    }
    r.path.count = hops.len() as u8;
    let owner = last + l.owner_offset.map_or(layout.owner_offset, u64::from);
    r.owner_offset = u32::try_from(owner).map_err(|_| format!("offset {owner} is too large"))?;
    Ok(r)
}

/// The reads of `spec`'s entry: the resolved locks it can reach and may hold there, and whose
/// edge could show something, at most [`abi::MAX_LOCK_READS`] of them. A function that takes
/// no lock gives no order edge, so it reads none; nor does a compiler clone read through its
/// (untrusted) arguments.
pub fn slot_reads(
    profile: &Profile,
    spec: &FunctionSpec,
    clone: bool,
    locks: &[LockTarget],
) -> (u8, [abi::LockRead; abi::MAX_LOCK_READS]) {
    let mut out = [abi::LockRead::default(); abi::MAX_LOCK_READS];
    let probed = profile.probed_lock();
    let taken = spec.locks_taken(probed);
    if taken.is_empty() {
        return (0, out);
    }
    let rank = |l: &str| profile.lock_order.iter().position(|o| o == l);
    // An edge from a lock no profiled function takes can close no cycle, and it can go
    // against the documented order only when that lock ranks after one taken here: a read
    // that could show neither costs every call (interpreted, on s390x) for nothing.
    let can_matter = |held: &str| {
        profile
            .functions
            .iter()
            .any(|f| f.locks_taken(probed).contains(&held))
            || taken
                .iter()
                .any(|b| matches!((rank(held), rank(b)), (Some(a), Some(b)) if a > b))
    };
    let mut n = 0;
    for t in locks {
        let Ok(r) = &t.read else { continue };
        if taken.contains(&t.name.as_str()) || !can_matter(&t.name) {
            continue;
        }
        // Only the driver's object is known to be the struct an argument path starts at.
        let reachable = r.from == abi::lock_from::GLOBAL
            || r.from == abi::lock_from::HOLDER
            || (!clone && spec.mdev == MdevArg::Object && r.arg == 0);
        if !reachable || n == abi::MAX_LOCK_READS {
            continue;
        }
        out[n] = *r;
        n += 1;
    }
    // Reads from argument 0 last: the probe stops the slot's reads at the first of them that
    // finds the argument NULL (the driver's object before a guest opens it, as the bench
    // calls it), so the others would stop there too.
    out[..n].sort_by_key(|r| r.from == abi::lock_from::ARG && r.arg == 0);
    (n as u8, out)
}

/// The global symbols the declared locks start at, for the kallsyms index.
pub fn lock_symbols(profile: &Profile) -> Vec<&str> {
    profile
        .locks
        .iter()
        .filter_map(|l| l.symbol.as_deref())
        .collect()
}

/// A global's address: the module's symbol, else another of `modules`', else vmlinux's.
pub fn find_global(k: &Kallsyms, modules: &[&str], name: &str) -> Result<u64, String> {
    modules
        .iter()
        .chain(std::iter::once(&""))
        .find_map(|m| k.lookup(name, m))
        .map(|s| s.addr)
        .ok_or_else(|| {
            format!("{name} is not in /proc/kallsyms (not loaded, or no CONFIG_KALLSYMS_ALL)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(f: &str) -> Result<u64, String> {
        Ok(match f {
            "ap_matrix_dev.guests_lock" => 0x100,
            "ap_matrix_mdev.kvm" => 0x2c0,
            "kvm.lock" => 0x40,
            "vfio_device.dev_set" => 0x18,
            "vfio_device_set.lock" => 0x8,
            other => return Err(format!("no offset for {other}")),
        })
    }

    fn targets(symbol: &dyn Fn(&str) -> Result<u64, String>) -> Vec<LockTarget> {
        let mutex = Ok((MutexLayout::DEFAULT, "test".to_string()));
        lock_targets(&Profile::vfio_ap(), &mutex, symbol, &offsets, false)
    }

    fn all_symbols(s: &str) -> Result<u64, String> {
        Ok(match s {
            "matrix_dev" => 0xffff_0000_0000_1000,
            _ => 0xffff_0000_0000_2000,
        })
    }

    #[test]
    fn each_lock_but_the_probed_one_gets_its_path() {
        let t = targets(&all_symbols);
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["ap_attr_mutex", "guests_lock", "kvm_lock", "dev_set_lock"]
        );
        let read = |n: &str| {
            t.iter()
                .find(|t| t.name == n)
                .unwrap()
                .read
                .clone()
                .unwrap()
        };
        // The lock itself: no pointer to follow, the owner at the mutex's offset.
        let attr = read("ap_attr_mutex");
        assert_eq!(
            (attr.from, attr.start, attr.path.count),
            (abi::lock_from::GLOBAL, 0xffff_0000_0000_2000, 0)
        );
        assert_eq!((attr.owner_offset, attr.owner_mask), (0, !0x7));
        // matrix_dev is a pointer variable: read it, then the member.
        let guests = read("guests_lock");
        assert_eq!(guests.start, 0xffff_0000_0000_1000);
        assert_eq!((guests.path.count, guests.path.hops[0]), (1, 0));
        assert_eq!(guests.owner_offset, 0x100);
        // From the argument: mdev->kvm, then kvm's lock.
        let kvm = read("kvm_lock");
        assert_eq!(
            (kvm.from, kvm.arg, kvm.path.count, kvm.path.hops[0]),
            (abi::lock_from::ARG, 0, 1, 0x2c0)
        );
        assert_eq!(kvm.owner_offset, 0x40);
        assert_eq!(
            read("dev_set_lock").id as usize,
            4,
            "its index in the profile"
        );
    }

    #[test]
    fn a_lock_that_cannot_be_placed_says_why_and_is_not_read() {
        let t = targets(&|s: &str| {
            if s == "ap_attr_mutex" {
                Err("ap_attr_mutex is not in /proc/kallsyms".into())
            } else {
                all_symbols(s)
            }
        });
        let attr = t.iter().find(|t| t.name == "ap_attr_mutex").unwrap();
        assert!(attr.read.as_ref().unwrap_err().contains("ap_attr_mutex"));
        let p = Profile::vfio_ap();
        let probe = p
            .functions
            .iter()
            .find(|f| f.name == "vfio_ap_mdev_probe")
            .unwrap();
        let (n, reads) = slot_reads(&p, probe, false, &t);
        assert_eq!(n, 1, "guests_lock only");
        assert_eq!(reads[0].id, 1);
    }

    /// Only locks a function can reach, and may hold, are read; one that takes none reads none.
    #[test]
    fn a_function_reads_the_locks_it_can_reach_and_may_hold() {
        let t = targets(&all_symbols);
        let p = Profile::vfio_ap();
        let ids = |name: &str, clone: bool| {
            let f = p.functions.iter().find(|f| f.name == name).unwrap();
            let (n, reads) = slot_reads(&p, f, clone, &t);
            reads[..n as usize]
                .iter()
                .map(|r| p.locks[r.id as usize].name.clone())
                .collect::<Vec<_>>()
        };
        // open takes guests_lock, kvm_lock and mdevs_lock: what it may hold is the AP bus's
        // mutex and the core's dev_set->lock, through its vfio device. No profiled function
        // takes ap_attr_mutex and it ranks first in the documented order: an edge from it
        // could close no cycle and break no order, so it is not read.
        assert_eq!(ids("vfio_ap_mdev_open_device", false), ["dev_set_lock"]);
        // A clone's arguments are untrusted: globals only.
        assert!(ids("vfio_ap_mdev_open_device", true).is_empty());
        // probe's argument is the mdev_device, not the driver's object.
        assert_eq!(ids("vfio_ap_mdev_probe", false), ["guests_lock"]);
        // The core's registration takes dev_set_lock; its argument is any driver's device.
        assert_eq!(
            ids("vfio_register_emulated_iommu_dev", false),
            ["guests_lock"]
        );
        // Takes nothing: no order edge to see, nothing read.
        assert!(ids("vfio_df_open", false).is_empty());
        assert!(ids("vfio_ap_init_migration_data", false).is_empty());
    }

    /// The probe ends a slot's reads at a NULL argument 0: those reads come last, whatever
    /// the profile's order of the locks.
    #[test]
    fn reads_from_argument_0_come_last() {
        let mut p = Profile::vfio_ap();
        // dev_set_lock (argument 0) declared before guests_lock (behind matrix_dev).
        let at = p
            .locks
            .iter()
            .position(|l| l.name == "dev_set_lock")
            .unwrap();
        let dev_set = p.locks.remove(at);
        p.locks.insert(0, dev_set);
        let mutex = Ok((MutexLayout::DEFAULT, "test".to_string()));
        let t = lock_targets(&p, &mutex, &all_symbols, &offsets, true);
        let f = p
            .functions
            .iter()
            .find(|f| f.name == "vfio_ap_get_data_size")
            .unwrap();
        let (n, reads) = slot_reads(&p, f, false, &t);
        let names: Vec<_> = reads[..n as usize]
            .iter()
            .map(|r| p.locks[r.id as usize].name.as_str())
            .collect();
        assert_eq!(names, ["guests_lock", "dev_set_lock", "kvm_lock"]);
        assert_eq!(reads[0].from, abi::lock_from::HOLDER);
    }

    /// A profile where some function takes the AP bus's mutex: an edge from it can close a
    /// cycle, so the functions that take other locks read it again.
    #[test]
    fn a_lock_some_function_takes_is_read_where_it_may_be_held() {
        let t = targets(&all_symbols);
        let mut p = Profile::vfio_ap();
        let remove = p
            .functions
            .iter_mut()
            .find(|f| f.name == "vfio_ap_mdev_remove")
            .unwrap();
        remove.takes.push("ap_attr_mutex".to_string());
        let f = p
            .functions
            .iter()
            .find(|f| f.name == "vfio_ap_mdev_open_device")
            .unwrap();
        let (n, reads) = slot_reads(&p, f, false, &t);
        let names: Vec<_> = reads[..n as usize]
            .iter()
            .map(|r| p.locks[r.id as usize].name.clone())
            .collect();
        assert_eq!(names, ["ap_attr_mutex", "dev_set_lock"]);
    }
}
