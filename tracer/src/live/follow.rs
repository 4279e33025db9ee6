//! Following the module across rmmod and insmod: which load of it is there, what an attach
//! to it achieved, and the lines the agent says about it.

use tracer_common as abi;

use super::host::Host;
use super::resolve::{FuncTarget, Overrides, Resolution};
use crate::profile::Profile;
use crate::recording::{ProbeState, ProbeStatus};

/// Which load of the module is there: its .text address (a new load moves it), or the
/// self-test's text range; None while it is absent.
pub fn module_identity(host: &Host, module: &str, ov: &Overrides) -> Option<String> {
    if !host.module_live(module) {
        // Self-test without the module: allocator probes over a given text range.
        return ov
            .text_range
            .map(|(a, b)| format!("text-range {a:#x}-{b:#x}"));
    }
    Some(
        host.read_string(&format!("/sys/module/{module}/sections/.text"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "live".to_string()),
    )
}

/// Which loads of the module and of the other modules the profile's rows live in (the
/// VFIO core's `vfio`) are there: a change of any of them re-resolves and re-attaches, so a
/// core row absent before its module loaded is attached once it has. None while the
/// profile's own module is absent.
pub fn load_identity(
    host: &Host,
    profile: &Profile,
    module: &str,
    ov: &Overrides,
) -> Option<String> {
    let mut id = module_identity(host, module, ov)?;
    for m in profile.other_modules().into_iter().filter(|m| *m != module) {
        let text = match host.module_live(m) {
            true => host
                .read_string(&format!("/sys/module/{m}/sections/.text"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| "live".to_string()),
            false => "absent".to_string(),
        };
        id.push_str(&format!("{OTHER_SEP}{m}={text}"));
    }
    Some(id)
}

const OTHER_SEP: &str = " | ";

/// Whether two identities of [`load_identity`] differ in the profile's own module (an
/// unload or a new load of it), not only in the other modules.
pub fn own_module_changed(a: Option<&str>, b: Option<&str>) -> bool {
    let own = |s: Option<&str>| s.map(|s| s.split(OTHER_SEP).next().unwrap_or(s).to_string());
    own(a) != own(b)
}

/// The targets that get a function slot, and the statuses of those beyond the last slot.
pub fn slotted(targets: &[FuncTarget]) -> (&[FuncTarget], Vec<ProbeStatus>) {
    let n = targets.len().min(abi::FUNC_SLOTS as usize);
    let over = targets[n..]
        .iter()
        .map(|t| ProbeStatus {
            name: t.name.clone(),
            state: ProbeState::Failed,
            detail: format!("more than {} functions in the profile", abi::FUNC_SLOTS),
        })
        .collect();
    (&targets[..n], over)
}

/// A function's status after its entry and exit probes were attached; `failed` is why
/// one of them could not be.
pub fn function_status(t: &FuncTarget, failed: Option<String>) -> ProbeStatus {
    ProbeStatus {
        name: t.name.clone(),
        state: match (&failed, t.clone, &t.degraded) {
            (Some(_), _, _) => ProbeState::Failed,
            (None, true, _) => ProbeState::Clone,
            (None, false, Some(_)) => ProbeState::Degraded,
            (None, false, None) => ProbeState::Attached,
        },
        detail: failed.unwrap_or_else(|| {
            let mut d = if t.clone {
                format!(
                    "attached to {} (compiler clone: arguments untrusted)",
                    t.attach_name
                )
            } else {
                String::new()
            };
            if let Some(why) = &t.degraded {
                if !d.is_empty() {
                    d.push_str("; ");
                }
                d.push_str(why);
            }
            d
        }),
    }
}

/// The statuses of the profile's functions missing from the kernel.
pub fn missing_statuses(res: &Resolution) -> Vec<ProbeStatus> {
    res.missing
        .iter()
        .map(|(name, _, msg)| ProbeStatus {
            name: name.clone(),
            state: ProbeState::Missing,
            detail: msg.clone(),
        })
        .collect()
}

/// What the agent says after attaching to a load of the module, last the `attached` line.
pub fn attach_lines(module: &str, res: &Resolution, statuses: &[ProbeStatus]) -> Vec<String> {
    // The series' rows of a driver without the series: one notice naming them, not a line
    // each as for a function that should be there.
    let mut lines: Vec<String> = statuses
        .iter()
        .filter(|s| !matches!(s.state, ProbeState::Attached))
        .filter(|s| !res.series_absent.contains(&s.name))
        .map(|s| format!("aptrace: {} {}: {}", s.name, s.state.name(), s.detail))
        .collect();
    if !res.series_absent.is_empty() {
        lines.push(format!(
            "aptrace: notice: module {module} has no live-migration series (a driver without it, as mainline): its {} optional functions are absent and not traced: {}",
            res.series_absent.len(),
            res.series_absent.join(", ")
        ));
    }
    if !res.lock_checks() {
        let why: Vec<String> = [&res.matrix_dev_addr, &res.mdevs_lock_offset]
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        lines.push(format!(
            "aptrace: mdevs_lock checks off: {}",
            why.join("; ")
        ));
    }
    let n = statuses
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                ProbeState::Attached | ProbeState::Clone | ProbeState::Degraded
            )
        })
        .count();
    let degraded = statuses
        .iter()
        .filter(|s| s.state == ProbeState::Degraded)
        .count();
    // Degraded probes are counted only when there are some: the line of a full attach stays
    // what the testbed waits for.
    let degraded = match degraded {
        0 => String::new(),
        n => format!(", {n} degraded"),
    };
    // Rows of other modules (the VFIO core's) are counted apart: a kernel without VFIO, or
    // one that inlines a core function, is not a driver missing a function.
    let mut elsewhere: Vec<String> = Vec::new();
    for (_, m) in &res.missing_elsewhere {
        if !elsewhere
            .iter()
            .any(|e| e.ends_with(&format!("module {m}")))
        {
            let k = res.missing_elsewhere.iter().filter(|(_, o)| o == m).count();
            elsewhere.push(format!("{k} absent of module {m}"));
        }
    }
    if !res.series_absent.is_empty() {
        elsewhere.insert(
            0,
            format!(
                "{} absent of the live-migration series",
                res.series_absent.len()
            ),
        );
    }
    let elsewhere = match elsewhere.is_empty() {
        true => String::new(),
        false => format!("; {}", elsewhere.join(", ")),
    };
    lines.push(format!(
        "aptrace: attached {n} probes to module {module} ({} missing{degraded}, lock checks {}){elsewhere}",
        res.missing.len() - res.missing_elsewhere.len() - res.series_absent.len(),
        if res.lock_checks() { "on" } else { "off" }
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &std::path::Path, rel: &str, data: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn a_new_load_of_the_module_has_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::at(dir.path());
        let ov = Overrides::default();
        assert_eq!(module_identity(&host, "vfio_ap", &ov), None);
        put(dir.path(), "sys/module/vfio_ap/initstate", "live\n");
        put(
            dir.path(),
            "sys/module/vfio_ap/sections/.text",
            "0xffffffffc0a50000\n",
        );
        let first = module_identity(&host, "vfio_ap", &ov);
        assert_eq!(first.as_deref(), Some("0xffffffffc0a50000"));
        put(
            dir.path(),
            "sys/module/vfio_ap/sections/.text",
            "0xffffffffc0b60000\n",
        );
        assert_ne!(module_identity(&host, "vfio_ap", &ov), first);
    }

    #[test]
    fn the_self_test_range_stands_for_an_absent_module() {
        let dir = tempfile::tempdir().unwrap();
        let ov = Overrides {
            text_range: Some((0x1000, 0x2000)),
            ..Default::default()
        };
        assert_eq!(
            module_identity(&Host::at(dir.path()), "vfio_ap", &ov).as_deref(),
            Some("text-range 0x1000-0x2000")
        );
    }

    fn target(name: &str, clone: bool) -> FuncTarget {
        FuncTarget {
            spec: 0,
            name: name.into(),
            attach_name: if clone {
                format!("{name}.isra.0")
            } else {
                name.into()
            },
            addr: 0x1000,
            clone,
            traceable: Some(true),
            config: Default::default(),
            path: Default::default(),
            locks: Default::default(),
            field_problem: None,
            degraded: None,
        }
    }

    #[test]
    fn statuses_say_attached_clone_failed_and_overflow() {
        let ok = function_status(&target("a", false), None);
        assert_eq!((ok.state, ok.detail.as_str()), (ProbeState::Attached, ""));
        let cl = function_status(&target("b", true), None);
        assert_eq!(cl.state, ProbeState::Clone);
        assert!(cl.detail.contains("b.isra.0"), "{}", cl.detail);
        let bad = function_status(&target("c", false), Some("EINVAL".into()));
        assert_eq!(
            (bad.state, bad.detail.as_str()),
            (ProbeState::Failed, "EINVAL")
        );

        let many: Vec<_> = (0..abi::FUNC_SLOTS + 2)
            .map(|i| target(&format!("f{i}"), false))
            .collect();
        let (slots, over) = slotted(&many);
        assert_eq!(slots.len(), abi::FUNC_SLOTS as usize);
        assert_eq!(over.len(), 2);
        assert!(over.iter().all(|s| s.state == ProbeState::Failed));
    }
}
