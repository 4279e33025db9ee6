//! Resolution and `check` on host trees built from tracer/tests/fixtures/live (no kernel).

use std::fs;
use std::path::{Path, PathBuf};

use super::btf::tests::vmlinux_and_module;
use super::check::{exit_code, live_gate, preflight, Probed, Status};
use super::elf::tests::tiny_ko;
use super::follow::{attach_lines, function_status, missing_statuses};
use super::host::Host;
use super::resolve::{resolve, resolve_for, Overrides};
use crate::profile::Profile;
use tracer_common as abi;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/live")
        .join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn put(root: &Path, rel: &str, data: impl AsRef<[u8]>) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Debian-like 6.12 x86_64 with the module loaded, BTF everywhere, kprobes.
fn host_612(dir: &Path) -> Host {
    put(dir, "proc/sys/kernel/osrelease", "6.12.43+deb12-amd64\n");
    put(dir, "proc/kallsyms", fixture("kallsyms-6.12-x86_64"));
    put(
        dir,
        "proc/self/status",
        "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n",
    );
    put(
        dir,
        "sys/kernel/tracing/available_filter_functions",
        fixture("available_filter_functions-6.12"),
    );
    put(dir, "sys/kernel/tracing/kprobe_events", "");
    put(dir, "sys/kernel/tracing/events/kmem/kfree/format", "");
    put(dir, "sys/bus/event_source/devices/kprobe/type", "6\n");
    put(dir, "sys/module/vfio_ap/initstate", "live\n");
    put(
        dir,
        "sys/module/vfio_ap/sections/.text",
        "0xffffffffc0a50000\n",
    );
    put(dir, "sys/module/vfio/initstate", "live\n");
    put(
        dir,
        "sys/module/vfio/sections/.text",
        "0xffffffffc0b00000\n",
    );
    let (v, m) = vmlinux_and_module(false, false);
    put(dir, "sys/kernel/btf/vmlinux", v);
    put(dir, "sys/kernel/btf/vfio_ap", m);
    put(
        dir,
        "boot/config-6.12.43+deb12-amd64",
        fixture("config-debian"),
    );
    Host::at(dir)
}

/// Debian 6.1 s390x: no BTF, no module variables in kallsyms; the .ko under /lib/modules.
fn host_61_s390x(dir: &Path, with_ko: bool) -> Host {
    put(dir, "proc/sys/kernel/osrelease", "6.1.0-37-s390x\n");
    put(dir, "proc/kallsyms", fixture("kallsyms-6.1-s390x"));
    put(
        dir,
        "proc/self/status",
        "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n",
    );
    put(dir, "sys/kernel/tracing/kprobe_events", "");
    put(
        dir,
        "sys/kernel/tracing/available_filter_functions",
        "vfio_ap_mdev_probe [vfio_ap]\n",
    );
    put(dir, "sys/bus/event_source/devices/kprobe/type", "6\n");
    put(dir, "sys/module/vfio_ap/initstate", "live\n");
    put(
        dir,
        "sys/module/vfio_ap/sections/.bss",
        "0x000003ff80020000\n",
    );
    put(dir, "boot/config-6.1.0-37-s390x", fixture("config-debian"));
    if with_ko {
        put(
            dir,
            "lib/modules/6.1.0-37-s390x/updates/vfio_ap.ko",
            tiny_ko(true, "matrix_dev", 0x40),
        );
    }
    Host::at(dir)
}

/// The build machine: no CONFIG_KPROBES, no module.
fn host_nokprobes(dir: &Path) -> Host {
    put(dir, "proc/sys/kernel/osrelease", "6.18.44\n");
    put(
        dir,
        "proc/kallsyms",
        "ffffffff81000000 T _stext\nffffffff81635550 T __kvmalloc_node_noprof\n",
    );
    put(
        dir,
        "proc/self/status",
        "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n",
    );
    put(
        dir,
        "sys/kernel/tracing/available_filter_functions",
        "vfs_read\n",
    );
    let (v, _) = vmlinux_and_module(false, false);
    put(dir, "sys/kernel/btf/vmlinux", v);
    Host::at(dir)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn live_ok() -> Probed {
    Probed {
        live_support: Ok(()),
        ..Default::default()
    }
}

#[test]
fn live_reads_tracefs_only_to_explain_a_missing_function() {
    let d = tmp();
    let host = host_612(d.path());
    let p = Profile::vfio_ap();
    let r = resolve_for(&host, &p, "vfio_ap", &Overrides::default(), false);
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert!(
        r.targets.iter().all(|t| t.traceable.is_none()),
        "live does not read what only check shows"
    );
    // A function tracefs lists and kallsyms does not: the list is read for the reason.
    let kallsyms = fixture("kallsyms-6.12-x86_64")
        .lines()
        .filter(|l| !l.contains(" vfio_ap_get_state\t"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    put(d.path(), "proc/kallsyms", kallsyms);
    let r = resolve_for(&host, &p, "vfio_ap", &Overrides::default(), false);
    let reason = r
        .missing
        .iter()
        .find(|(name, _, _)| name == "vfio_ap_get_state")
        .map(|(_, _, why)| why.as_str())
        .unwrap_or_default();
    assert!(
        reason.starts_with("listed by tracefs but not by kallsyms"),
        "{reason}"
    );
}

#[test]
fn check_says_how_functions_are_attached_with_and_without_a_jit() {
    let d = tmp();
    let host = host_612(d.path());
    let jit_row = |host: &Host| row(&preflight_on(host, &live_ok(), None), "BPF JIT").clone();
    // Debian's s390x kernels: no sysctl, no JIT.
    let none = jit_row(&host);
    assert_eq!(none.status, Status::Warn);
    assert!(
        none.detail.contains("its own program pair"),
        "{}",
        none.detail
    );
    put(d.path(), "proc/sys/net/core/bpf_jit_enable", "1\n");
    let on = jit_row(&host);
    assert_eq!(on.status, Status::Ok);
    assert!(
        on.detail
            .contains("one entry and one return program serve every function"),
        "{}",
        on.detail
    );
}

#[test]
fn resolves_a_612_host_with_btf() {
    let d = tmp();
    let host = host_612(d.path());
    let p = Profile::vfio_ap();
    let r = resolve(&host, &p, "vfio_ap", &Overrides::default());
    assert!(r.loaded && r.kallsyms_readable && r.vmlinux_btf && r.module_btf);
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert_eq!(r.targets.len(), p.functions.len());
    let set_state = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_set_state")
        .unwrap();
    assert!(set_state.clone);
    assert_eq!(set_state.attach_name, "vfio_ap_set_state.isra.0");
    assert_eq!(
        set_state.config.extra_flags as u16,
        abi::flags::ARGS_UNTRUSTED
    );
    assert_eq!(set_state.traceable, Some(true));
    let init = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_init_migration_data")
        .unwrap();
    assert_eq!(init.config.field_offset, 3368, "mig_data from module BTF");
    assert_eq!(init.config.read_field_at, abi::read_at::EXIT);
    assert_eq!(init.config.check_lock, abi::check_lock::STACK_IF_NOT_HELD);
    // mdev → mig_data → the stop-copy slot: one pointer followed, then the nested member.
    let get_config = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_get_config")
        .unwrap();
    assert_eq!(get_config.field_problem, None);
    assert_eq!((get_config.path.count, get_config.path.hops[0]), (1, 3368));
    assert_eq!(get_config.config.field_offset, 40);
    assert_eq!(get_config.config.read_field_at, abi::read_at::EXIT);
    assert_eq!(init.path.count, 0, "no path: the argument's own struct");
    let get_state = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_get_state")
        .unwrap();
    assert_eq!(
        (
            get_state.config.field_offset,
            get_state.config.field_arg,
            get_state.config.field_size
        ),
        (0, 1, 4)
    );
    let probe = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_mdev_probe")
        .unwrap();
    assert_eq!(probe.addr, 0xffffffffc0a50040);
    assert_eq!(probe.config.check_lock, abi::check_lock::STACK_IF_HELD);
    assert_eq!(r.matrix_dev_addr, Ok(0xffffffffc0a54000));
    assert_eq!(r.mdevs_lock_offset, Ok(808));
    let g = r.global_config(true);
    assert_eq!(g.matrix_dev_addr, 0xffffffffc0a54000);
    assert_eq!(g.lock_owner_offset, 808);
    assert_eq!(g.owner_mask, !0x7);
    assert_eq!(g.text_start, 0xffffffffc0a50000);
    assert!(g.text_end > 0xffffffffc0a50d00 && g.text_end <= 0xffffffffc0a60000);
    // Without --all-allocations the allocator programs find an empty range.
    let off = r.global_config(false);
    assert_eq!((off.text_start, off.text_end), (0, 0));
    assert_eq!(r.kvmalloc.as_deref(), Some("__kvmalloc_node_noprof"));
    let (rows, _) = preflight(
        &host,
        &p,
        "vfio_ap",
        &Overrides::default(),
        &live_ok(),
        None,
        "x86_64",
        true,
    );
    assert_eq!(exit_code(&rows), 0);
    let bad: Vec<_> = rows.iter().filter(|r| r.status == Status::Fail).collect();
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn s390x_61_without_btf_uses_the_module_file_and_overrides() {
    let d = tmp();
    let host = host_61_s390x(d.path(), true);
    let p = Profile::vfio_ap();
    let r = resolve(&host, &p, "vfio_ap", &Overrides::default());
    assert!(!r.vmlinux_btf && !r.module_btf);
    // matrix_dev: .bss of the loaded module + st_value from the big-endian .ko.
    assert_eq!(r.matrix_dev_addr, Ok(0x3ff80020040));
    let err = r.mdevs_lock_offset.clone().unwrap_err();
    assert!(err.contains("pahole -C ap_matrix_dev"), "{err}");
    assert!(!r.lock_checks());
    assert_eq!(r.global_config(false).matrix_dev_addr, 0, "lock checks off");
    let missing: Vec<_> = r.missing.iter().map(|m| (m.0.as_str(), m.1)).collect();
    // the seed patch's functions only: every later one of the series is missing, as optional
    let profile = Profile::vfio_ap();
    let seed = [
        "vfio_ap_init_migration_capabilities",
        "vfio_ap_init_migration_data",
        "vfio_ap_release_migration_data",
        "vfio_ap_set_state",
        "vfio_ap_get_state",
        "vfio_ap_get_data_size",
    ];
    let later: Vec<_> = profile
        .functions
        .iter()
        .filter(|f| f.optional && !seed.contains(&f.name.as_str()))
        .map(|f| (f.name.as_str(), true))
        .collect();
    assert!(later.contains(&("vfio_ap_transition_to_state", true)));
    assert_eq!(missing, later);
    let init = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_init_migration_data")
        .unwrap();
    assert_eq!(init.config.read_field_at, 0, "no offset: field read off");
    assert!(init
        .field_problem
        .as_deref()
        .unwrap()
        .contains("--offset ap_matrix_mdev.MEMBER=N"));

    let mut ov = Overrides::default();
    ov.offsets.insert("ap_matrix_dev.mdevs_lock".into(), 0x328);
    ov.offsets.insert("ap_matrix_mdev.mig_data".into(), 3368);
    let r = resolve(&host, &p, "vfio_ap", &ov);
    assert!(r.lock_checks());
    let g = r.global_config(false);
    assert_eq!(
        (g.matrix_dev_addr, g.lock_owner_offset, g.owner_mask),
        (0x3ff80020040, 0x328, !0x7)
    );
    let init = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_init_migration_data")
        .unwrap();
    assert_eq!(init.config.field_offset, 3368);
    let (rows, _) = preflight(&host, &p, "vfio_ap", &ov, &live_ok(), None, "s390x", true);
    assert_eq!(exit_code(&rows), 0, "degraded, but it runs");
    assert!(rows
        .iter()
        .any(|r| r.item == "BTF vmlinux" && r.status == Status::Warn));
}

#[test]
fn s390x_61_without_module_file_says_what_to_pass() {
    let d = tmp();
    let host = host_61_s390x(d.path(), false);
    let r = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &Overrides::default());
    let e = r.matrix_dev_addr.unwrap_err();
    assert!(
        e.contains("--module-file") && e.contains("--matrix-dev-addr"),
        "{e}"
    );
    let ov = Overrides {
        matrix_dev_addr: Some(0x3ff80020040),
        ..Default::default()
    };
    let r = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &ov);
    assert_eq!(r.matrix_dev_addr, Ok(0x3ff80020040));
}

#[test]
fn a_kernel_without_kprobes_cannot_trace_and_says_so() {
    let d = tmp();
    let host = host_nokprobes(d.path());
    let config = fixture("config-nokprobes");
    let (rows, _) = preflight(
        &host,
        &Profile::vfio_ap(),
        "vfio_ap",
        &Overrides::default(),
        &live_ok(),
        Some(&config),
        "x86_64",
        true,
    );
    assert_eq!(exit_code(&rows), 2);
    let k = rows.iter().find(|r| r.item == "kprobes").unwrap();
    assert_eq!(k.status, Status::Fail);
    assert!(k.detail.contains("without CONFIG_KPROBES"), "{}", k.detail);
    assert!(k.fix.contains("CONFIG_KPROBES=y"));
    // Without the config file the missing kprobe PMU and kprobe_events still tell.
    let (rows, _) = preflight(
        &host,
        &Profile::vfio_ap(),
        "vfio_ap",
        &Overrides::default(),
        &live_ok(),
        None,
        "x86_64",
        true,
    );
    let k = rows.iter().find(|r| r.item == "kprobes").unwrap();
    assert_eq!(k.status, Status::Fail);
    // The module is not loaded: a warning, the agent waits for it.
    assert!(rows
        .iter()
        .any(|r| r.item == "module vfio_ap" && r.status == Status::Warn));
}

#[test]
fn a_binary_without_live_support_says_so() {
    let d = tmp();
    let host = host_612(d.path());
    let probed = Probed {
        live_support: Err("built without live support".into()),
        ..Default::default()
    };
    let (rows, _) = preflight(
        &host,
        &Profile::vfio_ap(),
        "vfio_ap",
        &Overrides::default(),
        &probed,
        None,
        "x86_64",
        true,
    );
    assert_eq!(exit_code(&rows), 2);
    let r = rows.iter().find(|r| r.item == "live support").unwrap();
    assert!(r.fix.contains("cargo xtask build"));
    let text = super::check::to_text(&rows);
    assert!(text.contains("cannot run"), "{text}");
}

#[test]
fn a_profile_file_adds_a_function_that_gets_a_probe() {
    let d = tmp();
    let host = host_612(d.path());
    let p = Profile::from_toml(&fixture("profile-adds-function.toml"), "fixture").unwrap();
    let r = resolve(&host, &p, "vfio_ap", &Overrides::default());
    let ping = r
        .targets
        .iter()
        .find(|t| t.name == "vfio_ap_model_ping")
        .unwrap();
    assert_eq!(ping.addr, 0xffffffffc0a50000);
    assert_eq!(ping.config.stack_on_entry, 1);
    assert_eq!(r.targets.len(), Profile::vfio_ap().functions.len() + 1);
    assert!(r.targets.len() <= abi::FUNC_SLOTS as usize);
}

/// The VFIO core's rows resolve in module `vfio`; the probed lock is read at the entry of
/// the one that takes a declared lock (registration), not of those that only assert one.
#[test]
fn the_cores_rows_resolve_in_module_vfio() {
    let d = tmp();
    let host = host_612(d.path());
    let r = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &Overrides::default());
    let t = |n: &str| r.targets.iter().find(|t| t.name == n).unwrap();
    let reg = t("vfio_register_emulated_iommu_dev");
    assert_eq!(reg.addr, 0xffffffffc0b01720);
    assert_eq!(reg.traceable, Some(true));
    assert_eq!(reg.config.check_lock, abi::check_lock::READ);
    assert_eq!(reg.config.stack_on_entry, 1);
    assert_eq!(t("vfio_df_open").addr, 0xffffffffc0b01b50);
    assert_eq!(t("vfio_df_close").config.check_lock, abi::check_lock::OFF);
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert!(r.missing_elsewhere.is_empty());
    // A kernel whose vfio inlines vfio_df_open (Debian's 6.1 inlines its equivalent).
    let inlined: String = fixture("kallsyms-6.12-x86_64")
        .lines()
        .filter(|l| !l.contains("vfio_df_open"))
        .map(|l| format!("{l}\n"))
        .collect();
    put(d.path(), "proc/kallsyms", &inlined);
    let filter: String = fixture("available_filter_functions-6.12")
        .lines()
        .filter(|l| !l.contains("vfio_df_open"))
        .map(|l| format!("{l}\n"))
        .collect();
    put(
        d.path(),
        "sys/kernel/tracing/available_filter_functions",
        &filter,
    );
    let r6 = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &Overrides::default());
    assert_eq!(
        r6.missing_elsewhere,
        [("vfio_df_open".to_string(), "vfio".to_string())]
    );
    assert!(
        r6.missing[0]
            .2
            .starts_with("not in module vfio nor in vmlinux, or inlined"),
        "{:?}",
        r6.missing
    );
    // A change of vfio's load alone is a new identity, not an unload of vfio_ap.
    let ov = Overrides::default();
    let p = Profile::vfio_ap();
    let with = super::follow::load_identity(&host, &p, "vfio_ap", &ov).unwrap();
    assert!(with.contains("vfio=0xffffffffc0b00000"), "{with}");
    fs::remove_file(d.path().join("sys/module/vfio/initstate")).unwrap();
    let without = super::follow::load_identity(&host, &p, "vfio_ap", &ov).unwrap();
    assert!(without.contains("vfio=absent"), "{without}");
    assert!(!super::follow::own_module_changed(
        Some(&with),
        Some(&without)
    ));
    assert!(super::follow::own_module_changed(Some(&with), None));
}

/// Without the VFIO core (vfio not loaded, nothing built in), its rows are absent, each
/// with a line naming module vfio, and counted apart from the driver's own.
#[test]
fn the_cores_rows_are_absent_until_vfio_loads() {
    let d = tmp();
    let host = host_612(d.path());
    let text: String = fixture("kallsyms-6.12-x86_64")
        .lines()
        .filter(|l| !l.ends_with("[vfio]"))
        .map(|l| format!("{l}\n"))
        .collect();
    put(d.path(), "proc/kallsyms", &text);
    fs::remove_file(d.path().join("sys/module/vfio/initstate")).unwrap();
    let r = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &Overrides::default());
    let absent: Vec<&str> = r.missing_elsewhere.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        absent,
        [
            "vfio_register_emulated_iommu_dev",
            "vfio_df_open",
            "vfio_df_close"
        ]
    );
    let (_, optional, msg) = r.missing.iter().find(|m| m.0 == "vfio_df_open").unwrap();
    assert!(optional);
    assert!(msg.contains("module vfio is not loaded"), "{msg}");
    let mut statuses: Vec<_> = r.targets.iter().map(|t| function_status(t, None)).collect();
    statuses.extend(missing_statuses(&r));
    let lines = attach_lines("vfio_ap", &r, &statuses);
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "aptrace: attached {} probes to module vfio_ap (0 missing, lock checks on); 3 absent of module vfio",
            r.targets.len()
        )
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("aptrace: vfio_df_open missing: module vfio is not loaded")));
}

#[test]
fn a_missing_function_is_reported_and_the_rest_resolve() {
    let d = tmp();
    let host = host_612(d.path());
    let text =
        fixture("kallsyms-6.12-x86_64").replace("vfio_ap_mdev_close_device", "renamed_close");
    put(d.path(), "proc/kallsyms", text);
    let filter = fixture("available_filter_functions-6.12")
        .replace("vfio_ap_mdev_close_device", "renamed_close");
    put(
        d.path(),
        "sys/kernel/tracing/available_filter_functions",
        filter,
    );
    let r = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &Overrides::default());
    assert_eq!(r.missing.len(), 1);
    assert!(r.missing[0].2.contains("inlined"), "{}", r.missing[0].2);
    assert_eq!(r.targets.len(), Profile::vfio_ap().functions.len() - 1);
}

/// A series helper inlined by the compiler (absent while the rest of the series is there):
/// listed as missing, naming the checks of its row that cannot run; the report's
/// cannot-detect list carries them.
#[test]
fn an_inlined_series_helper_says_which_checks_cannot_run() {
    let d = tmp();
    let host = host_612(d.path());
    let gone = "vfio_ap_release_stop_copy_file";
    let text = fixture("kallsyms-6.12-x86_64").replace(gone, "unrelated_symbol");
    put(d.path(), "proc/kallsyms", text);
    let r = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &Overrides::default());
    let (name, optional, msg) = &r.missing[0];
    assert_eq!((name.as_str(), *optional), (gone, true));
    assert!(
        msg.contains(
            "cannot detect lock-not-held, double-free, buffer-held-at-close and leaks of configuration buffers without --all-allocations in it"
        ),
        "{msg}"
    );
    let statuses = super::follow::missing_statuses(&r);
    let blind = crate::report::undetected(&statuses);
    assert_eq!(blind.len(), 1);
    assert_eq!(blind[0].probe, gone);
    assert_eq!(
        blind[0].kinds,
        vec!["double-free", "lock-not-held", "buffer-held-at-close"]
    );
}

#[test]
fn this_hosts_vmlinux_btf_gives_the_mutex_owner_when_readable() {
    let Ok(data) = fs::read(PathBuf::from("/sys/kernel/btf/vmlinux")) else {
        return;
    };
    let btf = super::btf::Btf::parse(&data).expect("the running kernel's BTF parses");
    let m = super::btf::MutexLayout::from_btf(&btf).expect("struct mutex has an owner");
    assert!(m.owner_offset < 64);
    assert!(btf.has_struct("task_struct"));
}

/// Records captured from the ring buffer of a real kernel (x86_64 6.18, the hidden
/// `--text-range` self-test over `single_open`, `APTRACE_RAW_DUMP`): a kmalloc from
/// single_open and its kfree from single_release.
#[test]
fn raw_records_captured_from_a_real_run_decode() {
    use crate::model::{decode_record, Allocator, Body, Endian, NoSymbols};
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/live/raw-x86_64-alloc-free.bin");
    let data = fs::read(&p).unwrap();
    let mut recs = Vec::new();
    let mut off = 0;
    while off + 4 <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        recs.push(&data[off + 4..off + 4 + len]);
        off += 4 + len;
    }
    assert!(recs.len() >= 2, "{} records", recs.len());
    let evs: Vec<_> = recs
        .iter()
        .map(|r| {
            decode_record(r, Endian::Little, &NoSymbols)
                .expect("decodes")
                .event
        })
        .collect();
    let alloc_ptr = evs
        .iter()
        .find_map(|e| match &e.body {
            Body::Alloc {
                ptr,
                allocator: Allocator::Kmalloc,
                bytes,
                ..
            } if *bytes > 0 => Some(*ptr),
            _ => None,
        })
        .expect("an allocation");
    assert!(evs
        .iter()
        .any(|e| matches!(&e.body, Body::Free { ptr, .. } if *ptr == alloc_ptr)));
    assert!(evs.iter().all(|e| e.ts_ns > 0 && e.task.pid > 0));
    // Read with the wrong byte order they are refused, not misread.
    assert!(decode_record(recs[0], Endian::Big, &NoSymbols).is_err());
}

// The environment cases of `check` and of `live`'s gate (issue 8, item 5) on fixture hosts
// and injected probe results. The real binary is run against this host in tests/live_env.rs.

fn preflight_on(host: &Host, probed: &Probed, config: Option<&str>) -> Vec<super::check::Row> {
    preflight(
        host,
        &Profile::vfio_ap(),
        "vfio_ap",
        &Overrides::default(),
        probed,
        config,
        "x86_64",
        true,
    )
    .0
}

fn row<'a>(rows: &'a [super::check::Row], item: &str) -> &'a super::check::Row {
    rows.iter()
        .find(|r| r.item == item)
        .unwrap_or_else(|| panic!("no row {item}: {rows:?}"))
}

#[test]
fn env_not_root_fails_naming_root_or_the_capabilities() {
    let d = tmp();
    let host = host_612(d.path());
    put(
        d.path(),
        "proc/self/status",
        "Uid:\t65534\t65534\t65534\t65534\nCapEff:\t0000000000000000\n",
    );
    let rows = preflight_on(&host, &live_ok(), None);
    assert_eq!(exit_code(&rows), 2);
    let r = row(&rows, "privileges");
    assert_eq!(r.status, Status::Fail);
    assert!(
        r.fix.contains("run as root") && r.fix.contains("CAP_BPF and CAP_PERFMON"),
        "{}",
        r.fix
    );
    let e = live_gate(&rows, false).unwrap_err();
    assert!(
        e.contains("privileges: no CAP_BPF") && e.contains("setcap cap_bpf,cap_perfmon"),
        "{e}"
    );
    // The lines privileges would fix point at it rather than repeating it.
    let probed = Probed {
        ringbuf: Some(Err("`bpf_map_create` failed".into())),
        ..live_ok()
    };
    let rows = preflight_on(&host, &probed, None);
    assert_eq!(
        row(&rows, "ring buffer").fix,
        "run as root (see privileges)"
    );
    // CAP_BPF + CAP_PERFMON without root are enough.
    put(
        d.path(),
        "proc/self/status",
        "Uid:\t1000\t1000\t1000\t1000\nCapEff:\t000000c000000000\n",
    );
    let rows = preflight_on(&host, &live_ok(), None);
    assert_eq!(row(&rows, "privileges").status, Status::Ok);
    // The bpf syscall refusing is a privilege problem, not a missing kernel feature.
    let probed = Probed {
        load: Some(Err(
            "loading the eBPF object: map error: Operation not permitted (os error 1)".into(),
        )),
        ..live_ok()
    };
    let rows = preflight_on(&host, &probed, None);
    assert_eq!(exit_code(&rows), 2);
    assert!(row(&rows, "eBPF programs").fix.contains("run as root"));
}

#[test]
fn env_tracefs_not_mounted_warns_with_the_mount_command() {
    let d = tmp();
    let host = host_612(d.path());
    fs::remove_dir_all(d.path().join("sys/kernel/tracing")).unwrap();
    fs::create_dir_all(d.path().join("sys/kernel/tracing")).unwrap();
    let rows = preflight_on(&host, &live_ok(), None);
    assert_eq!(exit_code(&rows), 0, "the kprobe PMU still attaches");
    let r = row(&rows, "tracefs");
    assert_eq!(r.status, Status::Warn);
    assert!(r.detail.contains("not mounted"), "{}", r.detail);
    assert_eq!(r.fix, "mount -t tracefs tracefs /sys/kernel/tracing");
    let warnings = live_gate(&rows, false).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("mount -t tracefs tracefs /sys/kernel/tracing")),
        "{warnings:?}"
    );
    // Without tracefs and without the kprobe PMU nothing can attach.
    fs::remove_dir_all(d.path().join("sys/bus/event_source/devices/kprobe")).unwrap();
    let rows = preflight_on(&host, &live_ok(), None);
    assert_eq!(exit_code(&rows), 2);
    assert!(row(&rows, "kprobes")
        .fix
        .contains("mount -t tracefs tracefs /sys/kernel/tracing"));
    // A kernel without kprobes and tracefs unmounted: live's error names both fixes.
    let e = live_gate(&rows, false).unwrap_err();
    assert!(
        e.contains("kprobes: no kprobe support")
            && e.contains("tracefs: not mounted")
            && e.contains("→ mount -t tracefs tracefs /sys/kernel/tracing"),
        "{e}"
    );
}

#[test]
fn env_no_vmlinux_btf_is_degraded_with_the_override() {
    let d = tmp();
    let host = host_612(d.path());
    fs::remove_file(d.path().join("sys/kernel/btf/vmlinux")).unwrap();
    let rows = preflight_on(&host, &live_ok(), None);
    assert_eq!(
        exit_code(&rows),
        0,
        "no CO-RE needed: degraded, not refused"
    );
    let r = row(&rows, "BTF vmlinux");
    assert_eq!(r.status, Status::Warn);
    assert!(r.detail.contains("no CO-RE"), "{}", r.detail);
    assert!(r.fix.contains("--offset mutex.owner=N"), "{}", r.fix);
    let text = super::check::to_text(&rows);
    assert!(text.contains("can run, degraded"), "{text}");
    let warnings = live_gate(&rows, false).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("BTF vmlinux:") && w.contains("--offset mutex.owner=N")),
        "{warnings:?}"
    );
}

#[test]
fn env_no_kprobes_stops_live_naming_config_kprobes() {
    let d = tmp();
    let host = host_nokprobes(d.path());
    let config = fixture("config-nokprobes");
    let rows = preflight_on(&host, &live_ok(), Some(&config));
    let e = live_gate(&rows, false).unwrap_err();
    assert!(
        e.contains("cannot run") && e.contains("without CONFIG_KPROBES"),
        "{e}"
    );
    assert!(e.contains("→ boot a kernel with CONFIG_KPROBES=y"), "{e}");
    // The hidden allocator self-test (--text-range) needs no kprobes: a warning only.
    let w = live_gate(&rows, true).unwrap();
    assert!(w.iter().any(|w| w.contains("CONFIG_KPROBES")), "{w:?}");
}

#[test]
fn env_a_kernel_without_ring_buffers_cannot_trace() {
    let d = tmp();
    let host = host_612(d.path());
    let probed = Probed {
        ringbuf: Some(Ok(false)),
        ..live_ok()
    };
    let rows = preflight_on(&host, &probed, None);
    assert_eq!(exit_code(&rows), 2);
    let r = row(&rows, "ring buffer");
    assert_eq!(r.status, Status::Fail);
    assert!(r.fix.contains("5.8+"), "{}", r.fix);
    let e = live_gate(&rows, false).unwrap_err();
    assert!(
        e.contains("BPF_MAP_TYPE_RINGBUF not supported") && e.contains("5.8+"),
        "{e}"
    );
    // The verifier refusing the programs: stops too, naming the kernel options.
    let probed = Probed {
        load: Some(Err("loading eBPF program enter_00: invalid argument".into())),
        ..live_ok()
    };
    let rows = preflight_on(&host, &probed, None);
    assert_eq!(exit_code(&rows), 2);
    assert!(row(&rows, "eBPF programs")
        .fix
        .contains("CONFIG_BPF_SYSCALL"));
    assert!(live_gate(&rows, false).is_err());
}

#[test]
fn env_module_not_loaded_warns_with_modprobe_and_live_goes_on() {
    let d = tmp();
    let host = host_612(d.path());
    fs::remove_dir_all(d.path().join("sys/module/vfio_ap")).unwrap();
    let kallsyms: String = fixture("kallsyms-6.12-x86_64")
        .lines()
        .filter(|l| !l.contains("[vfio_ap]"))
        .map(|l| format!("{l}\n"))
        .collect();
    put(d.path(), "proc/kallsyms", kallsyms);
    let rows = preflight_on(&host, &live_ok(), None);
    assert_eq!(exit_code(&rows), 0);
    let r = row(&rows, "module vfio_ap");
    assert_eq!(r.status, Status::Warn);
    assert!(r.detail.contains("not loaded") && r.detail.contains("waits for it"));
    assert!(r.fix.starts_with("modprobe vfio_ap"), "{}", r.fix);
    // What only the module can tell is deferred, not blamed on missing BTF.
    fs::remove_file(d.path().join("sys/kernel/btf/vfio_ap")).ok();
    let rows = preflight_on(&host, &live_ok(), None);
    for item in ["BTF module", "lock mdevs_lock"] {
        let r = row(&rows, item);
        assert_eq!(r.status, Status::Info, "{item}: {}", r.detail);
        assert!(r.detail.contains("loads"), "{item}: {}", r.detail);
    }
    assert!(
        rows.iter().all(|r| !r.detail.contains("has no BTF")),
        "{rows:?}"
    );
    // live does not stop for it (the agent says it is waiting), nor warns twice.
    let w = live_gate(&rows, false).unwrap();
    assert!(w.iter().all(|w| !w.contains("vfio_ap")), "{w:?}");
}

/// The lines the agent says after attaching, which the QEMU testbed waits for: a status
/// line for each probe that is not plainly attached, then the `attached` line.
#[test]
fn the_attach_lines_name_clones_and_end_with_the_count() {
    use super::follow::{attach_lines, function_status, missing_statuses};
    let d = tmp();
    let host = host_612(d.path());
    let r = resolve(&host, &Profile::vfio_ap(), "vfio_ap", &Overrides::default());
    let mut statuses: Vec<_> = r.targets.iter().map(|t| function_status(t, None)).collect();
    statuses.extend(missing_statuses(&r));
    let lines = attach_lines("vfio_ap", &r, &statuses);
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "aptrace: attached {} probes to module vfio_ap (0 missing, lock checks on)",
            r.targets.len()
        )
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("aptrace: vfio_ap_set_state ")
                && l.contains("vfio_ap_set_state.isra.0 (compiler clone: arguments untrusted)")),
        "{lines:#?}"
    );
}

/// Debian 6.1 s390x without `--offset`: the probes attach but cannot read `mig_data` nor
/// check the lock. They are `degraded`, naming what cannot be detected, in the header
/// statuses, the agent's lines and `check`; with the offsets given, nothing is degraded.
#[test]
fn probes_without_a_read_they_need_are_degraded_everywhere_the_agent_says_so() {
    use super::follow::{attach_lines, function_status, missing_statuses};
    use crate::recording::ProbeState;
    let d = tmp();
    let host = host_61_s390x(d.path(), true);
    let p = Profile::vfio_ap();
    let r = resolve(&host, &p, "vfio_ap", &Overrides::default());
    let state_of = |statuses: &[crate::recording::ProbeStatus], name: &str| {
        let s = statuses.iter().find(|s| s.name == name).unwrap().clone();
        (s.state, s.detail)
    };

    let header = r.probe_statuses();
    let (st, detail) = state_of(&header, "vfio_ap_init_migration_data");
    assert_eq!(st, ProbeState::Degraded);
    assert!(
        detail.contains("ap_matrix_mdev.mig_data not read")
            && detail.contains("cannot detect leak, overwrite-leak, error-path-leak")
            && detail.contains("cannot detect lock-not-held"),
        "{detail}"
    );
    let (st, detail) = state_of(&header, "vfio_ap_mdev_release_dev");
    assert_eq!(
        st,
        ProbeState::Degraded,
        "NotHeld contract, lock checks off"
    );
    assert!(detail.contains("cannot detect self-deadlock"), "{detail}");
    // No read and no lock contract: nothing to lose.
    assert_eq!(
        state_of(&header, "vfio_ap_init_migration_capabilities").0,
        ProbeState::Attached
    );

    let mut statuses: Vec<_> = r.targets.iter().map(|t| function_status(t, None)).collect();
    statuses.extend(missing_statuses(&r));
    assert_eq!(
        state_of(&statuses, "vfio_ap_init_migration_data"),
        state_of(&header, "vfio_ap_init_migration_data")
    );
    let lines = attach_lines("vfio_ap", &r, &statuses);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("aptrace: vfio_ap_init_migration_data degraded: ")),
        "{lines:#?}"
    );
    let n = statuses
        .iter()
        .filter(|s| s.state == ProbeState::Degraded)
        .count();
    assert!(n >= 2);
    assert!(
        lines
            .last()
            .unwrap()
            .contains(&format!(", {n} degraded, lock checks off)")),
        "{lines:#?}"
    );

    let (rows, _) = preflight(
        &host,
        &p,
        "vfio_ap",
        &Overrides::default(),
        &live_ok(),
        None,
        "s390x",
        true,
    );
    let f = row(&rows, "function vfio_ap_init_migration_data");
    assert_eq!(f.status, Status::Warn, "{f:?}");
    assert!(f.detail.contains("degraded: "), "{f:?}");
    assert!(f.fix.contains("--offset"), "{f:?}");
    let f = row(&rows, "function vfio_ap_mdev_release_dev");
    assert_eq!(f.status, Status::Warn, "{f:?}");
    assert!(super::check::to_text(&rows).contains("degraded"));

    let mut ov = Overrides::default();
    ov.offsets.insert("ap_matrix_dev.mdevs_lock".into(), 0x328);
    ov.offsets.insert("ap_matrix_mdev.mig_data".into(), 3368);
    let r = resolve(&host, &p, "vfio_ap", &ov);
    assert!(r.targets.iter().all(|t| t.degraded.is_none()));
    assert!(r
        .probe_statuses()
        .iter()
        .all(|s| s.state != ProbeState::Degraded));
}

#[test]
fn the_first_attach_reuses_the_start_up_resolution_only_for_the_same_module_load() {
    let d = tmp();
    let host = host_612(d.path());
    let identity = super::follow::module_identity(&host, "vfio_ap", &Overrides::default())
        .expect("the module is loaded on this host");
    let res = std::sync::Arc::new(resolve(
        &host,
        &Profile::vfio_ap(),
        "vfio_ap",
        &Overrides::default(),
    ));
    let preflight = super::options::Preflight {
        identity: identity.clone(),
        resolution: res.clone(),
    };
    let reused = preflight.clone().for_load(&identity).expect("same load");
    assert!(std::sync::Arc::ptr_eq(&reused, &res));
    // the module was reloaded between the check and the attach: its .text moved
    assert!(preflight.for_load("0xffffffffc0990000").is_none());
}

/// vfio_ap without the live-migration series (mainline, as enterprise distributions ship
/// it): the lifecycle rows attach with lock checks on, the series' rows are absent, named in
/// one notice and counted apart from missing functions, and `check` shows them as
/// information, not warnings; no probe is degraded and no report says a kind is undetected.
#[test]
fn a_driver_without_the_series_is_traced_with_what_it_has() {
    use super::follow::{attach_lines, function_status, missing_statuses};
    let d = tmp();
    let host = host_612(d.path());
    let profile = Profile::vfio_ap();
    let series: Vec<&str> = profile
        .functions
        .iter()
        .filter(|f| f.optional && f.module.is_none())
        .map(|f| f.name.as_str())
        .collect();
    assert!(series.contains(&"vfio_ap_init_migration_data"));
    let text: String = fixture("kallsyms-6.12-x86_64")
        .lines()
        .filter(|l| {
            let name = l.split_whitespace().nth(2).unwrap_or("");
            let name = name.split('.').next().unwrap_or(name);
            !(l.ends_with("[vfio_ap]") && series.contains(&name))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    put(d.path(), "proc/kallsyms", &text);
    let r = resolve(&host, &profile, "vfio_ap", &Overrides::default());
    assert_eq!(r.series_absent, series);
    let mainline: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
    for f in [
        "vfio_ap_mdev_probe",
        "vfio_ap_mdev_open_device",
        "vfio_ap_mdev_close_device",
        "vfio_ap_mdev_release_dev",
    ] {
        assert!(mainline.contains(&f), "{f} in {mainline:?}");
    }
    assert!(r.lock_checks());
    let mut statuses: Vec<_> = r.targets.iter().map(|t| function_status(t, None)).collect();
    statuses.extend(missing_statuses(&r));
    assert!(crate::report::undetected(&statuses).is_empty());
    let lines = attach_lines("vfio_ap", &r, &statuses);
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "aptrace: attached {} probes to module vfio_ap (0 missing, lock checks on); {} absent of the live-migration series",
            r.targets.len(),
            series.len()
        )
    );
    let notice = lines
        .iter()
        .find(|l| l.starts_with("aptrace: notice: module vfio_ap has no live-migration series"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    for f in &series {
        assert!(notice.contains(f), "{f} not in {notice}");
    }
    // one notice, not a line per function
    assert!(
        !lines.iter().any(|l| l.contains(" missing: ")),
        "{lines:#?}"
    );

    let rows = preflight_on(&host, &live_ok(), None);
    let init = row(&rows, "function vfio_ap_init_migration_data");
    assert_eq!(init.status, super::check::Status::Info, "{init:?}");
    assert!(init.detail.contains("no live-migration series"), "{init:?}");
}

/// The declared locks besides mdevs_lock: placed from kallsyms and offsets (here `--offset`,
/// as where BTF lacks them), read where a function can reach them; one that cannot be placed
/// says why and is not read; `--lock-reads off` reads none.
#[test]
fn the_other_locks_are_placed_and_read_where_reachable_and_lock_reads_off_reads_none() {
    let d = tmp();
    let host = host_612(d.path());
    let p = Profile::vfio_ap();
    let mut ov = Overrides::default();
    for (k, v) in [
        ("ap_matrix_dev.guests_lock", 0x100),
        ("ap_matrix_mdev.kvm", 0x2c0),
        ("kvm.lock", 0x40),
        ("vfio_device.dev_set", 0x18),
        ("vfio_device_set.lock", 0x8),
    ] {
        ov.offsets.insert(k.to_string(), v);
    }
    let r = resolve(&host, &p, "vfio_ap", &ov);
    let lock = |n: &str| r.locks.iter().find(|l| l.name == n).unwrap();
    let attr = lock("ap_attr_mutex").read.as_ref().unwrap_err();
    assert!(
        attr.contains("ap_attr_mutex is not in /proc/kallsyms"),
        "{attr}"
    );
    let guests = lock("guests_lock").read.as_ref().unwrap();
    // Behind matrix_dev, which the mdevs_lock check reads at the same entries.
    assert!(r.lock_checks());
    assert_eq!(
        (guests.from, guests.path.count),
        (abi::lock_from::HOLDER, 0)
    );
    assert_eq!(guests.owner_offset, 0x100);
    let target = |n: &str| r.targets.iter().find(|t| t.name == n).unwrap();
    let names = |n: &str| {
        let t = target(n);
        t.locks[..t.config.lock_reads as usize]
            .iter()
            .map(|l| p.locks[l.id as usize].name.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("vfio_ap_mdev_open_device"), ["dev_set_lock"]);
    let open = target("vfio_ap_mdev_open_device");
    assert_eq!(
        (
            open.locks[0].from,
            open.locks[0].path.count,
            open.locks[0].path.hops[0]
        ),
        (abi::lock_from::ARG, 1, 0x18)
    );
    assert_eq!(open.locks[0].owner_offset, 0x8);
    assert_eq!(names("vfio_ap_mdev_probe"), ["guests_lock"]);
    assert_eq!(
        names("vfio_ap_mdev_release_dev"),
        ["guests_lock", "kvm_lock", "dev_set_lock"]
    );
    // A clone (set_state here) reads no argument path.
    assert_eq!(names("vfio_ap_set_state"), ["guests_lock"]);
    assert!(names("vfio_ap_init_migration_data").is_empty());
    ov.lock_reads_off = true;
    let off = resolve(&host, &p, "vfio_ap", &ov);
    assert!(off.targets.iter().all(|t| t.config.lock_reads == 0));
    assert!(off.lock_checks(), "the probed lock is still read");
}
