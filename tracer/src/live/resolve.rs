//! Everything the agent must know about the running kernel and module before it attaches:
//! function addresses (kallsyms, tracefs), the module's text range, the `matrix_dev`
//! variable, the `mdevs_lock` and profile field offsets (BTF or overrides), the mutex owner
//! layout. Pure file reading: it runs on fixture trees in tests.

use tracer_common as abi;

use super::btf::{Btf, MutexLayout};
use super::elf;
use super::host::{read_module_file, Host};
use super::kallsyms::{filter_functions, Kallsyms};
use super::lockreads::{find_global, lock_symbols, lock_targets, slot_reads, LockTarget};
use crate::profile::{
    strip_clone_suffix, FunctionSpec, LockContract, MdevArg, Profile, ReadAt, Role,
};
use crate::recording::{ProbeState, ProbeStatus, Symbol};

// Their homes are `target` and `degrade`; callers name them here, as before the split.
pub use super::degrade::{degradation, inlined_checks};
pub use super::target::{
    check_offset_names, offset_names, parse_offset_override, parse_text_range, Overrides,
    TargetError, TargetOptions,
};

/// Kernel functions that `--all-allocations` probes, in order of preference.
pub const KVMALLOC_NAMES: &[&str] = &["__kvmalloc_node_noprof", "__kvmalloc_node", "kvmalloc_node"];
pub const VFREE_NAMES: &[&str] = &["vfree"];
pub const KVFREE_NAMES: &[&str] = &["kvfree"];

/// One profile function in the running kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncTarget {
    /// Index into the profile's functions.
    pub spec: usize,
    pub name: String,
    /// The symbol to attach to (the name, or a clone such as `name.isra.0`).
    pub attach_name: String,
    pub addr: u64,
    pub clone: bool,
    /// Listed in available_filter_functions (None: tracefs not readable, or not asked for:
    /// [`resolve_for`]).
    pub traceable: Option<bool>,
    pub config: abi::FuncConfig,
    /// The pointers followed before the field read (none for most functions).
    pub path: abi::PointerPath,
    /// The other declared locks the entry reads, the first `config.lock_reads` of them.
    pub locks: [abi::LockRead; abi::MAX_LOCK_READS],
    /// Why the field read was dropped, if it was.
    pub field_problem: Option<String>,
    /// What this probe cannot see although it attaches (its field read dropped, its lock
    /// check off), and which findings that hides: the detail of its `degraded` state.
    pub degraded: Option<String>,
}

/// What resolution found.
#[derive(Clone, Debug)]
pub struct Resolution {
    pub module: String,
    pub loaded: bool,
    pub kallsyms_readable: bool,
    pub targets: Vec<FuncTarget>,
    /// Functions of the profile that are not in the kernel: (name, optional, message).
    pub missing: Vec<(String, bool, String)>,
    /// The modules of rows of `missing` that are another module's (the VFIO core's `vfio`):
    /// absent with it, counted apart from the module's own.
    pub missing_elsewhere: Vec<(String, String)>,
    /// The series' rows of `missing` when the module has none of them: a driver without
    /// the live-migration series (mainline), traced with what it has; counted apart.
    pub series_absent: Vec<String>,
    pub text: Option<(u64, u64)>,
    pub matrix_dev_addr: Result<u64, String>,
    pub mdevs_lock_offset: Result<u64, String>,
    pub mutex: Result<(MutexLayout, String), String>,
    /// The declared locks other than the probed one, and how to read each.
    pub locks: Vec<LockTarget>,
    /// Whether the entries read them on this kernel ([`Overrides::lock_reads_on`]).
    pub lock_reads_on: bool,
    pub vmlinux_btf: bool,
    pub module_btf: bool,
    pub kvmalloc: Option<String>,
    pub vfree: Option<String>,
    pub kvfree: Option<String>,
    pub symbols: Vec<Symbol>,
    pub kallsyms: Kallsyms,
}

impl Resolution {
    /// The global configuration for the probes; lock checks are off (matrix_dev_addr 0)
    /// when any part of the lock's address is unknown.
    pub fn global_config(&self, all_allocations: bool) -> abi::GlobalConfig {
        let (addr, owner_off, mask) =
            match (&self.matrix_dev_addr, &self.mdevs_lock_offset, &self.mutex) {
                (Ok(a), Ok(l), Ok((m, _))) => (*a, l + m.owner_offset, m.owner_mask),
                _ => (0, 0, 0),
            };
        // The allocator programs test only the text range: it stays empty without
        // --all-allocations, so attached or not they keep nothing.
        let (ts, te) = match (all_allocations, self.text) {
            (true, Some(range)) => range,
            _ => (0, 0),
        };
        abi::GlobalConfig {
            matrix_dev_addr: addr,
            lock_owner_offset: owner_off,
            owner_mask: mask,
            text_start: ts,
            text_end: te,
            all_allocations: all_allocations as u32,
            owner_is_task: 1,
        }
    }

    pub fn lock_checks(&self) -> bool {
        self.matrix_dev_addr.is_ok() && self.mdevs_lock_offset.is_ok() && self.mutex.is_ok()
    }

    /// What to write into a recording's header about the probes (before attaching).
    pub fn probe_statuses(&self) -> Vec<ProbeStatus> {
        let mut v: Vec<ProbeStatus> = self
            .targets
            .iter()
            .map(|t| ProbeStatus {
                name: t.name.clone(),
                state: match (t.clone, &t.degraded) {
                    (true, _) => ProbeState::Clone,
                    (false, Some(_)) => ProbeState::Degraded,
                    (false, None) => ProbeState::Attached,
                },
                detail: if t.clone {
                    format!(
                        "attached to {} (compiler clone: arguments untrusted)",
                        t.attach_name
                    )
                } else {
                    t.degraded.clone().unwrap_or_default()
                },
            })
            .collect();
        v.extend(self.missing.iter().map(|(n, _, msg)| ProbeStatus {
            name: n.clone(),
            state: ProbeState::Missing,
            detail: msg.clone(),
        }));
        v
    }
}

/// How to find a struct offset when BTF cannot tell.
pub fn pahole_hint(strukt: &str, module: &str) -> String {
    format!(
        "find it with `pahole -C {strukt} {module}.ko` on the module built with debug info (or \
         its .debug file), then pass --offset {strukt}.MEMBER=N"
    )
}

/// Resolves a profile against a host, with what tracefs lists about each function (for
/// `check`'s rows).
pub fn resolve(host: &Host, profile: &Profile, module: &str, ov: &Overrides) -> Resolution {
    resolve_for(host, profile, module, ov, true)
}

/// [`resolve`], where `traceability` says whether to read tracefs's
/// available_filter_functions for every function ([`FuncTarget::traceable`]). Without it the
/// list is read only to explain a missing function: `live` shows nothing else of it, and
/// reading it was a fifth of the agent's start (the kernel writes out every traceable
/// function of the system).
pub fn resolve_for(
    host: &Host,
    profile: &Profile,
    module: &str,
    ov: &Overrides,
    traceability: bool,
) -> Resolution {
    let mut kernel_names: Vec<&str> = Vec::new();
    kernel_names.extend(KVMALLOC_NAMES);
    kernel_names.extend(VFREE_NAMES);
    kernel_names.extend(KVFREE_NAMES);
    // Rows of another module (the VFIO core's) are looked up there, else in vmlinux.
    fn other<'a>(spec: &'a FunctionSpec, profile: &Profile, module: &str) -> Option<&'a str> {
        spec.module
            .as_deref()
            .filter(|m| *m != profile.module && *m != module)
    }
    let other = |spec| other(spec, profile, module);
    kernel_names.extend(lock_symbols(profile));
    kernel_names.extend(
        profile
            .functions
            .iter()
            .filter(|f| other(f).is_some())
            .map(|f| f.name.as_str()),
    );
    let mut modules = vec![module];
    modules.extend(profile.other_modules().into_iter().filter(|m| *m != module));
    let t0 = std::time::Instant::now();
    let kallsyms_text = host.kallsyms();
    let kallsyms = kallsyms_text
        .as_deref()
        .map(|t| Kallsyms::parse_modules(t, &modules, &kernel_names))
        .unwrap_or_default();
    let kallsyms_readable = kallsyms_text.is_some() && !kallsyms.zeroed;
    let loaded = host.module_live(module) || kallsyms.functions_of(module).next().is_some();
    let t_kallsyms = t0.elapsed();
    let filter_text = std::cell::OnceCell::new();
    let filter_text = || {
        filter_text
            .get_or_init(|| host.available_filter_functions())
            .as_deref()
    };
    let filter = std::cell::OnceCell::new();
    let filter = || {
        filter
            .get_or_init(|| filter_text().map(|t| filter_functions(t, module)))
            .as_ref()
    };
    if traceability {
        filter();
    }
    let t_filter = t0.elapsed();

    let vmlinux = host.vmlinux_btf().and_then(|b| Btf::parse(&b).ok());
    let module_btf = host.module_btf(module).and_then(|b| match &vmlinux {
        Some(base) => Btf::parse_split(&b, base.clone()).ok(),
        None => None,
    });
    // Start-up time is what a user waits for before anything is traced (`RUST_LOG=debug`).
    log::debug!(
        "resolve: kallsyms {:?}, available_filter_functions {:?}, BTF {:?}",
        t_kallsyms,
        t_filter - t_kallsyms,
        t0.elapsed() - t_filter
    );

    let field_offset = |field: &str| -> Result<u64, String> {
        if let Ok(n) = crate::model::hex_u64::parse(field) {
            return Ok(n);
        }
        if let Some(v) = ov.offsets.get(field) {
            return Ok(*v);
        }
        let (strukt, member) = field
            .split_once('.')
            .ok_or_else(|| format!("field {field:?} is neither a number nor STRUCT.MEMBER"))?;
        match &module_btf {
            Some(b) => b.offset_of(strukt, member).ok_or_else(|| {
                format!("{field} is not in the BTF of module {module}; {}", pahole_hint(strukt, module))
            }),
            None => Err(format!(
                "offset of {field} unknown: module {module} has no BTF (/sys/kernel/btf/{module}); {}",
                pahole_hint(strukt, module)
            )),
        }
    };

    let mut targets = Vec::new();
    let mut missing = Vec::new();
    for (i, spec) in profile.functions.iter().enumerate() {
        let own = other(spec);
        let found = match own {
            None => find_function(&kallsyms, module, &spec.name),
            Some(m) => find_function(&kallsyms, m, &spec.name)
                .or_else(|| find_function(&kallsyms, "", &spec.name)),
        };
        let Some((attach_name, addr, clone)) = found else {
            let in_filter = match own {
                None => {
                    filter().is_some_and(|f| f.iter().any(|n| strip_clone_suffix(n).0 == spec.name))
                }
                Some(m) => filter_text().is_some_and(|t| listed_in_filter(t, m, &spec.name)),
            };
            let msg = if let Some(m) = own.filter(|m| loaded && !host.module_live(m)) {
                format!(
                    "module {m} is not loaded and the kernel has no built-in {}: attached when {m} loads",
                    spec.name
                )
            } else if !loaded {
                format!("module {module} is not loaded")
            } else if !kallsyms_readable {
                "/proc/kallsyms is not readable with addresses (run as root)".to_string()
            } else if in_filter {
                "listed by tracefs but not by kallsyms".to_string()
            } else if let Some(m) = own {
                format!(
                    "not in module {m} nor in vmlinux, or inlined into its caller (without debug info the two cannot be told apart)"
                )
            } else {
                "not in the running kernel, or inlined (without debug info the two cannot be told apart)".to_string()
            };
            missing.push((i, spec.optional, msg));
            continue;
        };
        let traceable = match own {
            _ if !traceability => None,
            None => filter().map(|f| f.contains(&attach_name)),
            Some(m) => filter_text().map(|t| listed_in_filter(t, m, &attach_name)),
        };
        let (config, path, field_problem) = func_config(spec, clone, &field_offset);
        targets.push(FuncTarget {
            spec: i,
            name: spec.name.clone(),
            attach_name,
            addr,
            clone,
            traceable,
            config,
            path,
            locks: Default::default(),
            field_problem,
            degraded: None,
        });
    }

    // An optional row absent while others of its kind are present: the series is there and
    // the compiler inlined this helper, so the checks its row declares cannot run.
    let series_present = targets.iter().any(|t: &FuncTarget| {
        let spec = &profile.functions[t.spec];
        spec.optional && other(spec).is_none()
    });
    let missing_elsewhere: Vec<(String, String)> = missing
        .iter()
        .filter_map(|(i, _, _)| {
            let spec = &profile.functions[*i];
            other(spec).map(|m| (spec.name.clone(), m.to_string()))
        })
        .collect();
    // None of the series' own rows there, in a loaded module whose symbols were read: a
    // driver without the series.
    let without_series = !series_present && loaded && kallsyms_readable;
    let series_absent: Vec<String> = missing
        .iter()
        .map(|(i, _, _)| &profile.functions[*i])
        .filter(|spec| without_series && spec.optional && other(spec).is_none())
        .map(|spec| spec.name.clone())
        .collect();
    let missing: Vec<(String, bool, String)> = missing
        .into_iter()
        .map(|(i, optional, msg)| {
            let spec = &profile.functions[i];
            let msg = match inlined_checks(spec) {
                Some(kinds) if optional && series_present && loaded && other(spec).is_none() => {
                    format!("{msg}; its checks cannot run: cannot detect {kinds} in it")
                }
                _ if series_absent.contains(&spec.name) => format!(
                    "absent: module {module} has no live-migration series (a driver without it, as mainline)"
                ),
                _ => msg,
            };
            (spec.name.clone(), optional, msg)
        })
        .collect();

    let mutex = match ov.offsets.get("mutex.owner") {
        Some(o) => Ok((
            MutexLayout {
                owner_offset: *o,
                owner_mask: ov.owner_mask.unwrap_or(!0x7),
                rt: ov.owner_mask == Some(!0x1),
            },
            "--offset mutex.owner".to_string(),
        )),
        None => match &vmlinux {
            Some(b) => match MutexLayout::from_btf(b) {
                Some(mut m) => {
                    if let Some(mask) = ov.owner_mask {
                        m.owner_mask = mask;
                    }
                    Ok((m, if m.rt { "vmlinux BTF (PREEMPT_RT)".into() } else { "vmlinux BTF".into() }))
                }
                None => Err("vmlinux BTF has no struct mutex owner; pass --offset mutex.owner=N".into()),
            },
            // Without vmlinux BTF (Debian 6.1 s390x): the non-RT layout every such kernel has.
            None => Ok((
                MutexLayout { owner_mask: ov.owner_mask.unwrap_or(!0x7), ..MutexLayout::DEFAULT },
                "default layout (no vmlinux BTF; owner at offset 0, mask ~0x7; override with --offset mutex.owner=N --owner-mask M)".into(),
            )),
        },
    };

    let (lock_struct, lock_member) = profile
        .lock_field
        .split_once('.')
        .unwrap_or(("ap_matrix_dev", "mdevs_lock"));
    let mdevs_lock_offset = field_offset(&profile.lock_field).map_err(|e| {
        if e.contains("no BTF") {
            format!(
                "offset of {lock_struct}.{lock_member} unknown: module {module} has no BTF; {} \
                 (e.g. --offset {lock_struct}.{lock_member}=N)",
                pahole_hint(lock_struct, module)
            )
        } else {
            e
        }
    });

    let matrix_dev_addr = locate_variable(
        host,
        &kallsyms,
        module,
        &profile.lock_holder_symbol,
        ov,
        loaded,
    );

    let pick = |names: &[&str]| {
        names
            .iter()
            .find(|n| kallsyms.lookup(n, "").is_some())
            .map(|n| n.to_string())
    };
    let mut text = ov.text_range.or_else(|| kallsyms.text_range(module));
    if let (Some((s, e)), Some(sec), None) =
        (text, host.module_section(module, ".text"), ov.text_range)
    {
        text = Some((s.min(sec), e));
    }
    let mut res = Resolution {
        module: module.to_string(),
        loaded,
        kallsyms_readable,
        missing,
        missing_elsewhere,
        series_absent,
        targets,
        text,
        matrix_dev_addr,
        mdevs_lock_offset,
        mutex,
        locks: Vec::new(),
        lock_reads_on: ov.lock_reads_on(&host.kernel_release()),
        vmlinux_btf: vmlinux.is_some(),
        module_btf: module_btf.is_some(),
        kvmalloc: pick(KVMALLOC_NAMES),
        vfree: pick(VFREE_NAMES),
        kvfree: pick(KVFREE_NAMES),
        symbols: kallsyms.module_symbols(module),
        kallsyms,
    };
    let modules: Vec<&str> = std::iter::once(module)
        .chain(profile.other_modules())
        .collect();
    let global = |sym: &str| -> Result<u64, String> {
        if sym == profile.lock_holder_symbol {
            return res.matrix_dev_addr.clone();
        }
        find_global(&res.kallsyms, &modules, sym)
    };
    // Every function that reads locks takes one, so its entry runs the probed lock's check,
    // which reads the holder pointer when the lock checks are on.
    let holder_read = res.lock_checks();
    res.locks = lock_targets(profile, &res.mutex, &global, &field_offset, holder_read);
    if res.lock_reads_on {
        for t in &mut res.targets {
            let (n, reads) = slot_reads(profile, &profile.functions[t.spec], t.clone, &res.locks);
            t.config.lock_reads = n;
            t.locks = reads;
        }
    }
    // Only a loaded module can say whether the lock is readable: before, nothing is degraded.
    let lock_off = res.loaded && !res.lock_checks();
    for t in &mut res.targets {
        t.degraded = degradation(
            &profile.functions[t.spec],
            t.field_problem.as_deref(),
            lock_off,
        );
    }
    res
}

/// Whether tracefs lists `name` (or a clone of it) as a function of `module`, or of vmlinux.
fn listed_in_filter(text: &str, module: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let mut it = line.split_whitespace();
        let (Some(n), m) = (it.next(), it.next().unwrap_or("")) else {
            return false;
        };
        let m = m.trim_start_matches('[').trim_end_matches(']');
        strip_clone_suffix(n).0 == strip_clone_suffix(name).0 && (m == module || m.is_empty())
    })
}

/// The function itself, else a compiler clone of it.
fn find_function(k: &Kallsyms, module: &str, name: &str) -> Option<(String, u64, bool)> {
    if let Some(s) = k.lookup(name, module).filter(|s| s.is_text()) {
        return Some((s.name.clone(), s.addr, false));
    }
    let mut clones: Vec<_> = k
        .functions_of(module)
        .filter(|s| {
            let (base, is_clone) = strip_clone_suffix(&s.name);
            is_clone && base == name
        })
        .collect();
    clones.sort_by(|a, b| a.name.cmp(&b.name));
    clones.first().map(|s| (s.name.clone(), s.addr, true))
}

fn func_config(
    spec: &FunctionSpec,
    clone: bool,
    field_offset: &dyn Fn(&str) -> Result<u64, String>,
) -> (abi::FuncConfig, abi::PointerPath, Option<String>) {
    let mut c = abi::FuncConfig {
        check_lock: match spec.lock {
            // A function that takes a declared lock reads the probed one at entry: held
            // there, it is an order edge (the core's registration under mdevs_lock).
            LockContract::None if !spec.takes.is_empty() => abi::check_lock::READ,
            LockContract::None => abi::check_lock::OFF,
            LockContract::Held => abi::check_lock::STACK_IF_NOT_HELD,
            LockContract::NotHeld => abi::check_lock::STACK_IF_HELD,
        },
        stack_on_entry: spec.stack as u8,
        extra_flags: if clone {
            abi::flags::ARGS_UNTRUSTED as u8
        } else {
            0
        },
        read_name: (spec.mdev == MdevArg::Object
            && matches!(
                spec.role,
                Role::InitDev | Role::Open | Role::Close | Role::ReleaseDev | Role::SetState
            )) as u8,
        ..Default::default()
    };
    let mut problem = None;
    let mut path = abi::PointerPath::default();
    if let Some(r) = &spec.read {
        match pointer_path(&r.path, field_offset) {
            Ok(p) => path = p,
            Err(e) => return (c, abi::PointerPath::default(), Some(e)),
        }
        match field_offset(&r.field) {
            Ok(off) if off <= u32::MAX as u64 => {
                c.field_offset = off as u32;
                c.field_arg = r.arg.min(abi::MAX_ARGS as u8 - 1);
                c.field_size = if r.size == 4 { 4 } else { 8 };
                c.read_field_at = match r.at {
                    ReadAt::Entry => abi::read_at::ENTRY,
                    ReadAt::Exit => abi::read_at::EXIT,
                };
            }
            Ok(off) => problem = Some(format!("offset {off} of {} is too large", r.field)),
            Err(e) => problem = Some(e),
        }
    }
    (c, path, problem)
}

/// The offsets of a read's pointer path; an error names the step that cannot be resolved.
fn pointer_path(
    steps: &[String],
    field_offset: &dyn Fn(&str) -> Result<u64, String>,
) -> Result<abi::PointerPath, String> {
    let mut path = abi::PointerPath::default();
    if steps.len() > abi::MAX_HOPS {
        return Err(format!(
            "a read path has {} pointers to follow, at most {} are supported",
            steps.len(),
            abi::MAX_HOPS
        ));
    }
    for (i, step) in steps.iter().enumerate() {
        let off = field_offset(step)?;
        path.hops[i] =
            u32::try_from(off).map_err(|_| format!("offset {off} of {step} is too large"))?;
    }
    path.count = steps.len() as u8;
    Ok(path)
}

fn locate_variable(
    host: &Host,
    k: &Kallsyms,
    module: &str,
    symbol: &str,
    ov: &Overrides,
    loaded: bool,
) -> Result<u64, String> {
    if let Some(a) = ov.matrix_dev_addr {
        return Ok(a);
    }
    if let Some(s) = k.lookup(symbol, module) {
        return Ok(s.addr);
    }
    if !loaded {
        return Err(format!("module {module} is not loaded"));
    }
    // No CONFIG_KALLSYMS_ALL: the module file's symbol table + the section's load address.
    let file = ov
        .module_file
        .clone()
        .or_else(|| host.find_module_file(module));
    let Some(file) = file else {
        return Err(format!(
            "{symbol} is not in /proc/kallsyms (kernel without CONFIG_KALLSYMS_ALL) and no {module}.ko \
             was found under /lib/modules/{}: pass --module-file PATH or --matrix-dev-addr ADDR",
            host.kernel_release()
        ));
    };
    let data = read_module_file(&file)?;
    let loc = elf::find_symbol(&data, symbol).map_err(|e| format!("{}: {e}", file.display()))?;
    let base = host.module_section(module, &loc.section).ok_or_else(|| {
        format!(
            "/sys/module/{module}/sections/{} is not readable (run as root) to place {symbol}",
            loc.section
        )
    })?;
    Ok(base + loc.value)
}
