//! `cargo xtask testbed`: Debian's 6.1 and 6.12 kernels for x86_64 and s390x in QEMU (TCG),
//! the vfio_ap model module, and the scenarios of testbed/scenarios run against it, with
//! `aptrace live --record` inside the guest (the static agents are built by `cargo xtask
//! build`'s code unless given with `--agent-*`; `--no-agent` runs the scenarios bare).
//!
//! Cache (gitignored): `<repo>/.cache/testbed/`
//!   apt/<arch>/        private apt sources, lists and archive cache
//!   debs/<arch>-<series>/, debs/busybox-<arch>/   downloaded packages
//!   kernels/<arch>-<series>/   dpkg -x of image + headers + -common + kbuild (KVER, VERSION)
//!   busybox-<arch>     the guest's static busybox
//!   build/<pid>/<arch>-<series>/<module>/   module build trees (with debug info)
//!   runs/<pid>/<arch>-<series>/<boot>/      initrd, console.log, share/ (what the guest wrote)
//! `<pid>` is the invocation's: parallel runs on one cache keep apart; the folders of
//! invocations that have ended are removed by the next one.

pub mod bench;
mod bpftrace;
mod client;
mod cpio;
mod guest;
mod kernels;
mod kmod;
mod scenario;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;
use scenario::Scenario;

pub use crate::arch::Arch;

/// A kernel of the matrix: `ARCH-SERIES`, as `--kernels` names it (`x86_64-6.12`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSpec {
    pub arch: Arch,
    pub series: String,
}

impl std::str::FromStr for KernelSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (arch, series) = s.rsplit_once('-').context("kernel as ARCH-SERIES")?;
        Ok(Self {
            arch: Arch::parse(arch)?,
            series: series.to_string(),
        })
    }
}

/// The four kernels of the matrix (`--kernels`' default).
pub const ALL_KERNELS: &str = "x86_64-6.1,x86_64-6.12,s390x-6.1,s390x-6.12";

/// Boot Debian kernels in QEMU (TCG) with the vfio_ap model module and run the scenarios of
/// testbed/scenarios with `aptrace live --record` in the guest.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "cargo xtask testbed")]
pub struct TestbedArgs {
    /// Kernels as ARCH-SERIES, comma-separated or repeated [default: all four:
    /// x86_64-6.1,x86_64-6.12,s390x-6.1,s390x-6.12]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub kernels: Vec<KernelSpec>,
    /// Extra scenario folder (a folder of scenarios, or one scenario; repeatable)
    #[arg(long, value_name = "DIR")]
    pub scenarios: Vec<PathBuf>,
    /// Run only these scenario names (comma-separated or repeated)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Module source folder (Kbuild/Makefile) instead of testbed/kmod
    #[arg(long, value_name = "DIR")]
    pub module_src: Option<PathBuf>,
    /// Its module name
    #[arg(long, value_name = "NAME", default_value = "vfio_ap")]
    pub module_name: String,
    /// Static aptrace for x86_64 guests [default: built by `cargo xtask build`'s code]
    #[arg(long = "agent-x86_64", alias = "agent-x86-64", value_name = "PATH")]
    pub agent_x86_64: Option<PathBuf>,
    /// Static aptrace for s390x guests [default: built likewise]
    #[arg(long = "agent-s390x", value_name = "PATH")]
    pub agent_s390x: Option<PathBuf>,
    /// Run the scenarios without `aptrace live` (checks only run.sh)
    #[arg(long)]
    pub no_agent: bool,
    /// Run clean, leak, self-deadlock, invalid-arc on s390x 6.12 (unless --kernels/--only
    /// say otherwise) and copy their recordings to samples/
    #[arg(long)]
    pub update_samples: bool,
    /// Extra arguments for every `aptrace live`
    #[arg(
        long,
        value_name = "STR",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub agent_args: String,
    /// Arguments added where the module has no BTF; {mdevs_lock} and {mig_data} are
    /// replaced by the offsets pahole found
    #[arg(long, value_name = "STR", default_value = DEFAULT_OVERRIDE_ARGS, allow_hyphen_values = true)]
    pub btf_override_args: String,
    /// Cache folder [default: <repo>/.cache/testbed]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Per boot, in seconds
    #[arg(long = "boot-timeout", value_name = "SECS", default_value_t = 600)]
    pub boot_timeout_secs: u64,
    /// Do not apt-get install missing host tools
    #[arg(long)]
    pub no_install: bool,
    /// Run the kernel/probe proof job (testbed/guest/proof.sh) instead of the scenarios
    #[arg(long)]
    pub prove: bool,
    /// Fetch kernels and build the module only
    #[arg(long = "prepare")]
    pub prepare_only: bool,
    /// Run the kernel benchmarks (BENCHMARKS.md (b)-(e)) instead of the scenarios
    #[arg(long)]
    pub bench: bool,
    /// Runs per benchmark figure (medians)
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub bench_runs: u32,
    /// Benchmarks without the bpftrace peer (Debian's bpftrace, ~280 MiB, in the x86_64 guests)
    #[arg(long)]
    pub no_bpftrace: bool,
}

impl Default for TestbedArgs {
    /// What `cargo xtask testbed` with no option means (before [`TestbedArgs::resolved`]).
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["testbed"])
    }
}

/// What a user of a kernel whose modules have no BTF passes (offsets from pahole).
const DEFAULT_OVERRIDE_ARGS: &str =
    "--offset ap_matrix_dev.mdevs_lock={mdevs_lock} --offset ap_matrix_mdev.mig_data={mig_data}";

/// The guest path of the module file (for `--module-file`: where kallsyms lists no module
/// variables, the agent places `matrix_dev` from its symbol table).
const GUEST_KO: &str = "/model.ko";

/// The guest path of the rebuilt model (kmod::build_rebuilt), in boots whose scenarios ask for
/// it (file `rebuilt-module`).
const GUEST_KO_REBUILT: &str = "model-rebuilt.ko";

/// The guest path of the model without the series (kmod::build_mainline), in boots whose
/// scenarios ask for it (file `mainline-module`; the runner swaps it in for their run).
const GUEST_KO_MAINLINE: &str = "model-mainline.ko";

/// The scenarios whose s390x 6.12 recordings are samples/<name>.aptr.
pub const SAMPLE_SCENARIOS: [&str; 4] = ["clean", "leak", "self-deadlock", "invalid-arc"];

/// The sample made through the kernel's own VFIO core: this scenario's x86_64 6.12 recording
/// (default mode) is samples/<file>.
pub const REAL_CORE_SAMPLE: (&str, &str) = (
    "series-clean-migration",
    "series-clean-migration-real-core.aptr",
);

/// Every sample `--update-samples` makes: (kernel, scenario, file in samples/).
fn samples() -> Vec<(KernelSpec, &'static str, String)> {
    let k = |arch, series: &str| KernelSpec {
        arch,
        series: series.into(),
    };
    let mut v: Vec<_> = SAMPLE_SCENARIOS
        .iter()
        .map(|s| (k(Arch::S390x, "6.12"), *s, format!("{s}.aptr")))
        .collect();
    v.push((
        k(Arch::X86_64, "6.12"),
        REAL_CORE_SAMPLE.0,
        REAL_CORE_SAMPLE.1.to_string(),
    ));
    v
}

impl TestbedArgs {
    /// The defaults that depend on other options: `--update-samples` picks its kernels and
    /// scenarios unless told, and no `--kernels` means all four.
    pub fn resolved(mut self) -> Self {
        if self.update_samples {
            let (told_kernels, told_only) = (!self.kernels.is_empty(), !self.only.is_empty());
            for (k, s, _) in samples() {
                if !told_kernels && !self.kernels.contains(&k) {
                    self.kernels.push(k);
                }
                if !told_only && !self.only.iter().any(|o| o == s) {
                    self.only.push(s.to_string());
                }
            }
        }
        if self.kernels.is_empty() {
            self.kernels = parse_kernels(ALL_KERNELS).expect("the default kernels parse");
        }
        self
    }

    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.boot_timeout_secs)
    }
}

pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else {
            fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

/// Removes the `<pid>` folders under `dir` whose invocation has ended (the next run's
/// housekeeping; a running invocation's folder is left alone).
fn sweep_ended(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn have(tool: &str) -> bool {
    cmd::query(
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool} >/dev/null")),
    )
    .is_some()
}

/// Installs missing host tools with apt-get (root). QEMU comes from bookworm-backports when
/// the host's qemu-utils already does (the two must match).
fn ensure_host_tools(apt: &kernels::Apt, arches: &[Arch]) -> Result<()> {
    let mut pkgs = vec![];
    for (tool, pkg) in [
        ("pahole", "pahole"),
        ("modinfo", "kmod"),
        ("xz", "xz-utils"),
        ("make", "make"),
        ("gcc", "gcc"),
        ("readelf", "binutils"),
        ("dpkg", "dpkg"),
    ] {
        if !have(tool) {
            pkgs.push(pkg);
        }
    }
    if arches.contains(&Arch::S390x) && !have("s390x-linux-gnu-gcc") {
        pkgs.push("gcc-s390x-linux-gnu");
    }
    let mut qemu = vec![];
    if arches.contains(&Arch::X86_64) && !have("qemu-system-x86_64") {
        qemu.push("qemu-system-x86");
    }
    if arches.contains(&Arch::S390x) && !have("qemu-system-s390x") {
        qemu.push("qemu-system-misc");
    }
    if !pkgs.is_empty() {
        eprintln!("testbed: apt-get install {}", pkgs.join(" "));
        cmd::capture(
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !qemu.is_empty() {
        let bpo =
            cmd::query(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))
                .is_some_and(|v| v.contains("bpo"));
        eprintln!(
            "testbed: apt-get install {}{}",
            qemu.join(" "),
            if bpo { " (backports)" } else { "" }
        );
        let mut c = if bpo {
            let mut c = apt.cmd("apt-get", Arch::X86_64);
            c.args(["-t", "bookworm-backports"]);
            c
        } else {
            Command::new("apt-get")
        };
        cmd::capture(
            c.args(["install", "-y"])
                .args(&qemu)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}

/// One row of the result table.
struct Row {
    kernel: String,
    arch: &'static str,
    scenario: String,
    mode: String,
    expected: String,
    found: String,
    secs: f64,
    pass: bool,
    /// a pending scenario (file `pending`) that ran and is still pending: not a failure
    pending: bool,
    note: String,
    /// the run's own outputs (run.log, agent.log), quoted under the table when it failed
    logs: Vec<PathBuf>,
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<24} {:<7} {:<30} {:<16} {:<26} {:<26} {:>7}  pass",
        "kernel", "arch", "scenario", "mode", "expected", "found", "wall_s"
    );
    for r in rows {
        println!(
            "{:<24} {:<7} {:<30} {:<16} {:<26} {:<26} {:>7.1}  {}{}",
            r.kernel,
            r.arch,
            r.scenario,
            r.mode,
            r.expected,
            r.found,
            r.secs,
            if r.pending {
                "PENDING"
            } else if r.pass {
                "PASS"
            } else {
                "FAIL"
            },
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", r.note)
            }
        );
    }
}

/// The failed rows again, each with the tail of its logs: a CI log that keeps only its end
/// still names what failed and why (the run folders are swept by the next run).
fn print_failures(rows: &[Row]) {
    const TAIL: usize = 25;
    for r in rows.iter().filter(|r| !r.pass) {
        println!(
            "\nFAILED: {} {} {} {}: expected {}, found {}{}",
            r.kernel,
            r.arch,
            r.scenario,
            r.mode,
            r.expected,
            r.found,
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.note)
            }
        );
        for log in &r.logs {
            let text = guest::read_lossy(log);
            let lines: Vec<&str> = text.lines().collect();
            println!(
                "--- {} (last {} of {} lines)",
                log.display(),
                lines.len().min(TAIL),
                lines.len()
            );
            for l in &lines[lines.len().saturating_sub(TAIL)..] {
                println!("    {l}");
            }
        }
    }
}

pub fn run(args: TestbedArgs) -> Result<()> {
    run_collect(args.resolved()).map(|_| ())
}

/// The kernel-side figures (b)-(e) measured now on `kernels` (`cargo xtask bench`): what
/// `cargo xtask testbed --bench --kernels ... --bench-runs RUNS` measures, returned instead
/// of only printed.
pub fn kernel_figures(kernels: Vec<KernelSpec>, runs: u32) -> Result<Vec<bench::Figures>> {
    let args = TestbedArgs {
        kernels,
        bench: true,
        bench_runs: runs,
        ..Default::default()
    };
    run_collect(args)
}

/// Parses `--kernels`' list (`x86_64-6.12,s390x-6.12`).
pub fn parse_kernels(list: &str) -> Result<Vec<KernelSpec>> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// [`run`]; with `--bench`, the figures it printed.
fn run_collect(args: TestbedArgs) -> Result<Vec<bench::Figures>> {
    let root = crate::root();
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(|| root.join(".cache/testbed"));
    fs::create_dir_all(&cache)?;
    let apt = kernels::Apt::new(&cache);
    let arches: Vec<Arch> = args.kernels.iter().map(|k| k.arch).collect();
    apt.setup(Arch::X86_64)?;
    if arches.contains(&Arch::S390x) {
        apt.setup(Arch::S390x)?;
    }
    if !args.no_install {
        ensure_host_tools(&apt, &arches)?;
        for arch in Arch::ALL.into_iter().filter(|a| arches.contains(a)) {
            crate::provision::ensure_apt(client::packages(arch))?;
        }
    }
    let module_src = args
        .module_src
        .clone()
        .unwrap_or_else(|| root.join("testbed/kmod"));

    let mut scenarios: Vec<Scenario> = scenario::load_dir(&root.join("testbed/scenarios"))?;
    for d in &args.scenarios {
        for s in scenario::load_dir(d)? {
            scenarios.retain(|x| x.name != s.name);
            scenarios.push(s);
        }
    }
    if !args.only.is_empty() {
        scenarios.retain(|s| args.only.contains(&s.name));
    }

    let t0 = Instant::now();
    // The static agents, built by `cargo xtask build`'s code unless given.
    let mut agents: BTreeMap<&'static str, PathBuf> = BTreeMap::new();
    if !args.no_agent && !args.prepare_only && !args.prove {
        for arch in Arch::ALL {
            if !arches.contains(&arch) {
                continue;
            }
            let given = match arch {
                Arch::X86_64 => args.agent_x86_64.clone(),
                Arch::S390x => args.agent_s390x.clone(),
            };
            let path = match given {
                Some(p) => p,
                None => {
                    let t = Instant::now();
                    let p = crate::build::build(arch)
                        .with_context(|| format!("building the {} agent", arch.name()))?;
                    eprintln!(
                        "testbed: agent for {} built in {:.0}s",
                        arch.name(),
                        t.elapsed().as_secs_f64()
                    );
                    p
                }
            };
            agents.insert(arch.name(), path);
        }
    }
    let inv = std::process::id().to_string();
    let runs_base = cache.join("runs").join(&inv);
    let build_base = cache.join("build").join(&inv);
    for d in ["runs", "build"] {
        sweep_ended(&cache.join(d));
    }
    // the rebuilt model only where a scenario loads it (scenario file `rebuilt-module`)
    let want_rebuilt = !args.bench && !args.prove && scenarios.iter().any(|s| s.rebuilt_module);
    let want_mainline = !args.bench && !args.prove && scenarios.iter().any(|s| s.mainline_module);
    let mut rows = Vec::new();
    let mut failures = 0usize;
    let mut judged: Vec<Judged> = Vec::new();
    let mut bench_figures: Vec<bench::Figures> = Vec::new();
    for KernelSpec { arch, series } in &args.kernels {
        let arch = *arch;
        let k = kernels::provision(&cache, &apt, arch, series)?;
        let bb = kernels::busybox(&cache, &apt, arch)?;
        let core = kernels::vfio_core(&k);
        let m = kmod::build(&build_base, &k, &module_src, &args.module_name, &core)?;
        eprintln!(
            "testbed: {} ({} {}): {} built, BTF {}, pahole mdevs_lock {:?} mig_data {:?}, VFIO core: {}",
            k.id(),
            k.kver,
            k.version,
            m.ko.display(),
            if m.has_btf { "yes" } else { "no" },
            m.mdevs_lock_off,
            m.mig_data_off,
            match &core {
                kernels::Core::Real { mdev: true, .. } => "the kernel's, with mdev".to_string(),
                kernels::Core::Real { mdev: false, .. } =>
                    "the kernel's, devices of the model's own (no mdev)".to_string(),
                kernels::Core::Model { why } => format!("the model's ({why})"),
            }
        );
        if args.prepare_only {
            continue;
        }
        let rebuilt = if want_rebuilt {
            let r = kmod::build_rebuilt(&build_base, &k, &module_src, &m)?;
            eprintln!(
                "testbed: {}: {} built ({})",
                k.id(),
                r.display(),
                kmod::REBUILD_DEFINE
            );
            Some(r)
        } else {
            None
        };
        let mainline = if want_mainline {
            let r = kmod::build_mainline(&build_base, &k, &module_src, &m)?;
            eprintln!(
                "testbed: {}: {} built ({})",
                k.id(),
                r.display(),
                kmod::MAINLINE_VAR
            );
            Some(r)
        } else {
            None
        };
        let agent = agents.get(arch.name()).cloned();
        // As a user would: the module file for its symbol table (kallsyms of Debian's s390x
        // 6.1 lists no module variables), and pahole's offsets where the module has no BTF.
        let mut agent_args = format!("{} --module-file {GUEST_KO}", args.agent_args)
            .trim()
            .to_string();
        if !m.has_btf {
            if let (Some(l), Some(d)) = (m.mdevs_lock_off, m.mig_data_off) {
                let o = args
                    .btf_override_args
                    .replace("{mdevs_lock}", &l.to_string())
                    .replace("{mig_data}", &d.to_string());
                agent_args = format!("{agent_args} {o}").trim().to_string();
            }
            // The buffer reads of the series' rows, as a user would pass them too.
            for (member, off) in &m.slot_offsets {
                agent_args = format!("{agent_args} --offset {member}={off}");
            }
        }
        let runs_dir = runs_base.join(k.id());
        let client = if args.bench || args.prove {
            None
        } else {
            Some(client::build(&root, &build_base.join(k.id()), arch)?)
        };

        if args.bench {
            let conf = bench::BenchConf {
                runs: args.bench_runs,
                ..Default::default()
            };
            // the peer: Debian's bpftrace, on the x86_64 kernels (its tree is amd64)
            let bt = match arch {
                Arch::X86_64 if !args.no_bpftrace => Some(bpftrace::provision(&cache, &apt)?),
                _ => None,
            };
            let f = bench::bench_one(
                &root,
                &runs_dir,
                &k,
                &bb,
                &m,
                agent.as_ref(),
                &agent_args,
                &conf,
                args.boot_timeout(),
                bt.as_deref(),
            )?;
            println!("{}", f.render());
            bench_figures.push(f);
            continue;
        }
        if args.prove {
            let (ok, r) = prove(&root, &runs_dir, &k, &bb, &m, &args)?;
            failures += usize::from(!ok);
            rows.push(r);
            continue;
        }

        // boots: all shared scenarios in one, each isolated one in its own
        let mut boots: Vec<(String, Vec<&Scenario>)> = vec![];
        let shared: Vec<&Scenario> = scenarios.iter().filter(|s| !s.isolated).collect();
        if !shared.is_empty() {
            boots.push(("shared".into(), shared));
        }
        for s in scenarios.iter().filter(|s| s.isolated) {
            boots.push((s.name.clone(), vec![s]));
        }
        for (boot_name, list) in boots {
            let isolated = list.iter().any(|s| s.isolated);
            let dir = runs_dir.join(&boot_name);
            let share = dir.join("share");
            fs::create_dir_all(&share)?;
            let mut job = guest::Job::default();
            job.files
                .push(("job.sh".into(), root.join("testbed/guest/runner.sh"), 0o755));
            if let Some(r) = rebuilt
                .as_ref()
                .filter(|_| list.iter().any(|s| s.rebuilt_module))
            {
                job.files.push((GUEST_KO_REBUILT.into(), r.clone(), 0o644));
            }
            if let Some(r) = mainline
                .as_ref()
                .filter(|_| list.iter().any(|s| s.mainline_module))
            {
                job.files.push((GUEST_KO_MAINLINE.into(), r.clone(), 0o644));
            }
            let runs: Vec<String> = list
                .iter()
                .flat_map(|s| s.modes.iter().map(move |m| format!("{}:{m}", s.name)))
                .collect();
            let mut env = format!(
                "RUNS=\"{}\"\nMODULE={}\nCORE={}\n",
                runs.join(" "),
                args.module_name,
                core.name()
            );
            if let Some(c) = &client {
                job.files.push(("vfioclient".into(), c.clone(), 0o755));
            }
            if let Some(a) = &agent {
                job.files.push(("aptrace".into(), a.clone(), 0o755));
                env += &format!("AGENT=/aptrace\nAGENT_ARGS=\"{agent_args}\"\n");
            }
            if isolated {
                env += "ISOLATED=1\n";
            }
            job.texts.push(("job.env".into(), env, 0o644));
            job.dirs.push("scenarios".into());
            for s in &list {
                job.trees
                    .push((format!("scenarios/{}", s.name), s.dir.clone()));
            }
            let initrd = dir.join("initrd.cpio");
            fs::write(&initrd, guest::initramfs(&root, &k, &bb, &m.ko, &job)?)?;
            eprintln!(
                "testbed: boot {} {} ({} runs)",
                k.id(),
                boot_name,
                runs.len()
            );
            let res = guest::boot(
                &k,
                &initrd,
                &share,
                &dir.join("console.log"),
                args.boot_timeout(),
                isolated.then_some("APTRACE-TESTBED: evidence-out"),
            )?;
            let marks = guest::markers(&res.console);
            eprintln!(
                "testbed: boot {} {} took {:.1}s{}",
                k.id(),
                boot_name,
                res.secs,
                if res.timed_out { " (TIMED OUT)" } else { "" }
            );
            let booted = marks.iter().any(|l| l == "module loaded")
                && marks.iter().any(|l| l == "9p mounted");
            for s in &list {
                for mode in &s.modes {
                    let end = marks.iter().find_map(|l| {
                        l.strip_prefix(&format!("run {} {mode} end ", s.name))
                            .map(str::to_string)
                    });
                    let mut note = String::new();
                    let (rc, secs) = match &end {
                        Some(e) => {
                            let field = |k: &str| {
                                e.split_whitespace()
                                    .find_map(|w| w.strip_prefix(k))
                                    .unwrap_or("")
                                    .to_string()
                            };
                            (
                                field("rc=").parse::<i32>().unwrap_or(-1),
                                field("t=").parse::<f64>().unwrap_or(0.0),
                            )
                        }
                        None => (-1, 0.0),
                    };
                    if s.client {
                        // which core the client drove (the runner's end marker)
                        let c = end.as_deref().and_then(|e| {
                            e.split_whitespace().find_map(|w| w.strip_prefix("core="))
                        });
                        note = format!("{} core", c.unwrap_or("?"));
                    }
                    if !booted {
                        note = "guest did not boot/load the module".into();
                    } else if end.is_none() {
                        note = "no end marker".into();
                    } else if rc != 0 {
                        note = format!("{note} run.sh rc={rc}").trim().to_string();
                    }
                    // A scenario about the kernel's VFIO core expects less on the model core.
                    let (s_expected, s_at_least) = match (&s.model_core_expected, &core) {
                        (Some((e, a)), kernels::Core::Model { .. }) => (e, a),
                        _ => (&s.expected, &s.at_least),
                    };
                    let expected = scenario::fmt_expected(s_expected, s_at_least);
                    let mut agent_ok = true;
                    let (found, found_ok) = if agent.is_some() {
                        let out = |ext: &str| share.join(format!("{}.{mode}.{ext}", s.name));
                        let log = guest::read_lossy(&out("agent.log"));
                        // every profiled function attached, lock checks on
                        if !log.contains("(0 missing, lock checks on)") {
                            agent_ok = false;
                            note = format!(
                                "{note} agent: {}",
                                log.lines()
                                    .find(|l| l.starts_with("aptrace: attached"))
                                    .unwrap_or("never attached")
                            )
                            .trim()
                            .to_string();
                        }
                        let aptr = out("aptr");
                        if fs::metadata(&aptr).map(|m| m.len()).unwrap_or(0) == 0 {
                            agent_ok = false;
                            note = format!("{note} no recording").trim().to_string();
                        }
                        if isolated {
                            // named while the task hangs, before the agent was stopped
                            let live = marks.iter().find_map(|l| {
                                l.strip_prefix(&format!("run {} {mode} live", s.name))
                            });
                            let ok = s
                                .expected
                                .keys()
                                .all(|k| live.is_some_and(|l| l.contains(k.as_str())));
                            if !ok {
                                agent_ok = false;
                                note = format!("{note} not reported live: {live:?}")
                                    .trim()
                                    .to_string();
                            }
                        }
                        let json = out("json");
                        match fs::read_to_string(&json) {
                            Ok(t) => match scenario::count_report(&t) {
                                Ok(f) => {
                                    let mut ok =
                                        scenario::judge_at_least(s_expected, s_at_least, &f);
                                    if s.uncertain {
                                        let c = scenario::certain_findings(&t).unwrap_or_default();
                                        if !c.is_empty() {
                                            ok = false;
                                            note = format!("{note} not uncertain: {}", c.join(","))
                                                .trim()
                                                .to_string();
                                        }
                                    }
                                    if s.pending.is_none() {
                                        judged.push(Judged {
                                            id: format!("{} {} {mode}", k.id(), s.name),
                                            expected: s_expected.clone(),
                                            at_least: s_at_least.clone(),
                                            found: f.clone(),
                                        });
                                    }
                                    (scenario::fmt_counts(&f), ok)
                                }
                                Err(e) => {
                                    note = format!("{note} {e}").trim().to_string();
                                    ("-".into(), false)
                                }
                            },
                            Err(_) => {
                                note = format!("{note} no {}", json.display()).trim().to_string();
                                ("-".into(), false)
                            }
                        }
                    } else {
                        ("(no agent)".into(), true)
                    };
                    let mut pass = booted && end.is_some() && rc == 0 && found_ok && agent_ok;
                    if isolated && !res.ended_on_marker {
                        pass = false;
                        note = format!("{note} no evidence-out marker").trim().to_string();
                    }
                    let mut pending = false;
                    if let Some(why) = &s.pending {
                        let run_ok = booted && end.is_some() && rc == 0 && agent_ok;
                        match scenario::judge_pending(run_ok, found_ok && agent.is_some()) {
                            Ok(()) => {
                                pending = true;
                                pass = true;
                                note = format!("{note} pending: {why}").trim().to_string();
                            }
                            Err(e) => {
                                pass = false;
                                note = format!("{note} pending scenario: {e}").trim().to_string();
                            }
                        }
                    }
                    failures += usize::from(!pass);
                    rows.push(Row {
                        kernel: k.kver.clone(),
                        arch: arch.name(),
                        scenario: s.name.clone(),
                        mode: mode.clone(),
                        expected,
                        found,
                        secs,
                        pass,
                        pending,
                        note,
                        logs: ["run.log", "agent.log"]
                            .iter()
                            .map(|ext| share.join(format!("{}.{mode}.{ext}", s.name)))
                            .collect(),
                    });
                }
            }
            if agent.is_some() && !isolated {
                let sk = marks.iter().find(|l| l.starts_with("sigkill-check"));
                let ok = sk.is_some_and(|l| l.starts_with("sigkill-check ok"));
                failures += usize::from(!ok);
                rows.push(Row {
                    kernel: k.kver.clone(),
                    arch: arch.name(),
                    scenario: "sigkill-detach".into(),
                    mode: "-".into(),
                    expected: "no probe left".into(),
                    found: sk.cloned().unwrap_or_else(|| "no marker".into()),
                    secs: 0.0,
                    pass: ok,
                    pending: false,
                    note: String::new(),
                    logs: vec![dir.join("console.log")],
                });
            }
        }
    }
    if args.prepare_only {
        return Ok(Vec::new());
    }
    if args.bench {
        println!("\ntestbed bench ({:.0}s):", t0.elapsed().as_secs_f64());
        for f in &bench_figures {
            println!("{}", f.render());
        }
        return Ok(bench_figures);
    }
    // Self-check: the judgment must fail on these very results with one expected kind
    // removed (or, for a clean scenario, one added).
    for j in &judged {
        let mut wrong = j.expected.clone();
        // the first kind that must appear (an `>=0` kind may be absent anyway)
        match wrong.iter().find(|(_, n)| **n > 0).map(|(k, _)| k.clone()) {
            Some(k) => {
                wrong.remove(&k);
            }
            None => {
                wrong.insert("leak".into(), 1);
            }
        }
        if scenario::judge_at_least(&wrong, &j.at_least, &j.found) {
            failures += 1;
            rows.push(Row {
                kernel: j.id.clone(),
                arch: "-",
                scenario: "self-check".into(),
                mode: "-".into(),
                expected: scenario::fmt_counts(&wrong),
                found: scenario::fmt_counts(&j.found),
                secs: 0.0,
                pass: false,
                pending: false,
                note: "a wrong expectation was accepted".into(),
                logs: Vec::new(),
            });
        }
    }
    if !judged.is_empty() {
        println!(
            "testbed: self-check: {} results each judged against a wrong expectation (one kind removed, or added to clean): all rejected = {}",
            judged.len(),
            !rows.iter().any(|r| r.scenario == "self-check")
        );
    }
    if args.update_samples {
        update_samples(&root, &runs_base, &rows)?;
    }
    print_table(&rows);
    println!(
        "\ntestbed: {} rows, {} failed, {:.0}s",
        rows.len(),
        failures,
        t0.elapsed().as_secs_f64()
    );
    if failures > 0 {
        print_failures(&rows);
        bail!("testbed: {failures} failed (listed above, with their logs)");
    }
    Ok(Vec::new())
}

/// One judged result, kept for the self-check.
struct Judged {
    id: String,
    expected: BTreeMap<String, u64>,
    at_least: std::collections::BTreeSet<String>,
    found: BTreeMap<String, u64>,
}

/// Copies the recordings of the samples (default mode) whose kernel ran to samples/: each
/// must have passed, else samples/ is left as it was.
fn update_samples(root: &Path, runs_base: &Path, rows: &[Row]) -> Result<()> {
    let mut copies = Vec::new();
    for (k, name, file) in samples() {
        let id = format!("{}-{}", k.arch.deb(), k.series);
        let runs = runs_base.join(&id);
        if !runs.is_dir() {
            eprintln!("testbed: samples/{file} not made ({id} did not run)");
            continue;
        }
        let passed = rows.iter().any(|r| {
            r.arch == k.arch.name()
                && r.kernel.starts_with(&format!("{}.", k.series))
                && r.scenario == name
                && r.mode == "default"
                && r.pass
        });
        if !passed {
            bail!("--update-samples: {name} did not pass on {id}; samples/ left as it was");
        }
        let boot = if runs.join(name).join("share").is_dir() {
            runs.join(name)
        } else {
            runs.join("shared")
        };
        let from = boot.join("share").join(format!("{name}.default.aptr"));
        copies.push((from, root.join("samples").join(file)));
    }
    if copies.is_empty() {
        bail!("--update-samples: no sample's kernel ran");
    }
    for (from, to) in copies {
        fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        eprintln!(
            "testbed: {} <- {} ({} bytes)",
            to.display(),
            from.display(),
            fs::metadata(&to)?.len()
        );
    }
    Ok(())
}

/// The phase-1 proof on one kernel: symbols, filter functions, kprobe events on every
/// profiled function, the mdevs_lock owner word in three states, kmem tracepoints, 9p.
fn prove(
    root: &Path,
    runs_dir: &Path,
    k: &kernels::Kernel,
    bb: &Path,
    m: &kmod::BuiltModule,
    args: &TestbedArgs,
) -> Result<(bool, Row)> {
    let dir = runs_dir.join("proof");
    let share = dir.join("share");
    fs::create_dir_all(&share)?;
    let mut job = guest::Job::default();
    job.files
        .push(("job.sh".into(), root.join("testbed/guest/proof.sh"), 0o755));
    let env = match m.mdevs_lock_off {
        Some(o) => format!("MDEVS_LOCK_OFF={o}\n"),
        None => String::new(),
    };
    job.texts.push(("job.env".into(), env, 0o644));
    let initrd = dir.join("initrd.cpio");
    fs::write(&initrd, guest::initramfs(root, k, bb, &m.ko, &job)?)?;
    let res = guest::boot(
        k,
        &initrd,
        &share,
        &dir.join("console.log"),
        args.boot_timeout(),
        None,
    )?;
    let marks = guest::markers(&res.console);
    for l in &marks {
        println!("{} {l}", k.id());
    }
    let hello = fs::read_to_string(share.join("guest-hello.txt")).unwrap_or_default();
    let bad: Vec<&String> = marks
        .iter()
        .filter(|l| l.contains("hits=0") || (l.starts_with("kprobe") && l.contains("refused")))
        .collect();
    let ok =
        marks.iter().any(|l| l == "proof done") && bad.is_empty() && hello.starts_with("hello");
    let found: BTreeMap<&str, usize> = [("markers", marks.len())].into_iter().collect();
    Ok((
        ok,
        Row {
            kernel: k.kver.clone(),
            arch: k.arch.name(),
            scenario: "proof".into(),
            mode: "-".into(),
            expected: "all probes fire".into(),
            found: format!("{found:?}"),
            secs: res.secs,
            pass: ok,
            pending: false,
            note: if hello.is_empty() {
                "no 9p file".into()
            } else {
                String::new()
            },
            logs: vec![dir.join("console.log")],
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> TestbedArgs {
        TestbedArgs::try_parse_from(std::iter::once("testbed").chain(args.iter().copied()))
            .unwrap()
            .resolved()
    }

    fn spec(arch: Arch, series: &str) -> KernelSpec {
        KernelSpec {
            arch,
            series: series.into(),
        }
    }

    #[test]
    fn defaults() {
        let a = parse(&[]);
        assert_eq!(a.kernels.len(), 4);
        assert_eq!(a.kernels[0], spec(Arch::X86_64, "6.1"));
        assert_eq!(a.kernels[3], spec(Arch::S390x, "6.12"));
        assert_eq!(a.module_name, "vfio_ap");
        assert_eq!(a.btf_override_args, DEFAULT_OVERRIDE_ARGS);
        assert_eq!(a.boot_timeout(), Duration::from_secs(600));
        assert_eq!(a.bench_runs, 5);
        assert!(!a.no_install && !a.prove && !a.prepare_only && !a.bench && !a.no_agent);
        assert!(a.agent_args.is_empty());
    }

    #[test]
    fn the_spellings_the_docs_and_ci_use() {
        let a = parse(&[
            "--kernels",
            "s390x-6.12,amd64-6.1",
            "--only",
            "clean,leak",
            "--only=invalid-arc",
            "--agent-x86-64",
            "/a",
            "--agent-s390x=/b",
            "--agent-args",
            "--ring-buffer-size 4096",
            "--btf-override-args=--offset x.y={mdevs_lock}",
            "--boot-timeout",
            "30",
            "--no-install",
            "--prepare",
            "--scenarios",
            "d1",
            "--scenarios",
            "d2",
        ]);
        assert_eq!(
            a.kernels,
            [spec(Arch::S390x, "6.12"), spec(Arch::X86_64, "6.1")]
        );
        assert_eq!(a.only, ["clean", "leak", "invalid-arc"]);
        assert_eq!(a.agent_x86_64, Some("/a".into()));
        assert_eq!(a.agent_s390x, Some("/b".into()));
        assert_eq!(a.agent_args, "--ring-buffer-size 4096");
        assert_eq!(a.btf_override_args, "--offset x.y={mdevs_lock}");
        assert_eq!(a.boot_timeout(), Duration::from_secs(30));
        assert!(a.no_install && a.prepare_only);
        assert_eq!(a.scenarios, [PathBuf::from("d1"), PathBuf::from("d2")]);
        assert_eq!(
            parse(&["--agent-x86_64", "/c"]).agent_x86_64,
            Some("/c".into())
        );
        let b = parse(&["--bench", "--kernels", "x86_64-6.12", "--bench-runs", "3"]);
        assert!(b.bench && b.bench_runs == 3 && b.kernels.len() == 1);
    }

    #[test]
    fn update_samples_picks_its_kernel_and_scenarios() {
        let a = parse(&["--update-samples"]);
        assert_eq!(
            a.kernels,
            [spec(Arch::S390x, "6.12"), spec(Arch::X86_64, "6.12")]
        );
        let mut want: Vec<&str> = SAMPLE_SCENARIOS.to_vec();
        want.push(REAL_CORE_SAMPLE.0);
        assert_eq!(a.only, want);
        let b = parse(&["--update-samples", "--only", "leak"]);
        assert_eq!(b.only, ["leak"]);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--kernels", "arm64-6.1"][..],
            &["--kernels", "x86_64"],
            &["--frobnicate"],
            &["--boot-timeout", "soon"],
        ] {
            assert!(
                TestbedArgs::try_parse_from(std::iter::once("testbed").chain(bad.iter().copied()))
                    .is_err(),
                "{bad:?}"
            );
        }
    }
}
