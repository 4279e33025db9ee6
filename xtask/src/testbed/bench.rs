//! `cargo xtask testbed --bench`: the kernel-side figures of issue 7 (b-e) in the testbed's
//! guests. One boot per kernel runs testbed/guest/bench.sh with the model module, the second
//! module `aptrace_bench` (testbed/kmod/alloc_loop.c) and the static agent; the guest prints
//! `bench ...` markers and the host takes medians and prints ratios.
//!
//! (b) `vfio_ap_get_data_size` called N times from aptrace_bench through its kallsyms
//!     address, timed with ktime in the kernel: nothing attached, the kernel's kprobe events
//!     (entry + return, tracing on; bare, and fetching the data aptrace records), `aptrace
//!     live` (its entry + return probes).
//! (c) kmalloc(64)+kfree N times from aptrace_bench: nothing, `aptrace live`, `aptrace live
//!     --all-allocations`, and the floor: `aptrace live --noop-floor`, a do-nothing BPF
//!     program on the same allocator tracepoints (the guests have no bpftool).
//! (d) K calls every millisecond for RATE_MS ms at rising K with `aptrace live` (default
//!     4 MiB ring): the achieved events/s and whether events-lost was raised.
//! (e) agent start to its `aptrace: attached` line, timed by the guest script.
//!
//! Two boots per kernel: (b) and (c) under `-icount shift=0 -smp 1` (guest time counts
//! instructions: reproducible on a loaded host, and the agent's work on another vCPU stays
//! out of the loops), (d) and (e) in real time on two vCPUs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::kernels::Kernel;
use super::{guest, kmod, Arch};

#[derive(Debug, Default)]
pub struct Figures {
    pub kernel: String,
    pub arch: &'static str,
    /// ns per call / per pair, each run
    pub samples: BTreeMap<String, Vec<f64>>,
    /// mode -> seconds, real time (two vCPUs)
    pub attach: BTreeMap<String, f64>,
    /// mode -> seconds, instruction time (the `-icount` boot); `bpftrace` is the peer's
    /// start to its BEGIN probe with the same functions, entry and return
    pub attach_icount: BTreeMap<String, f64>,
    /// kprobes attached, per mode of `attach_icount`
    pub attach_probes: BTreeMap<String, u64>,
    /// (calls per ms, achieved events/s, events-lost findings raised, agent alive)
    pub rates: Vec<(u64, u64, u64, bool)>,
    pub secs: f64,
    /// net.core.bpf_jit_enable in the guest ("none": the kernel has no BPF JIT)
    pub jit: Option<String>,
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    })
}

impl Figures {
    pub fn med(&self, key: &str) -> Option<f64> {
        self.samples.get(key).and_then(|v| median(v))
    }

    /// Parses the guest's `bench ...` markers.
    pub fn parse(kernel: &str, arch: Arch, marks: &[String]) -> Self {
        let mut f = Figures {
            kernel: kernel.into(),
            arch: arch.name(),
            ..Default::default()
        };
        let kv = |l: &str, k: &str| -> Option<String> {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_string)
        };
        for l in marks {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["bench", what @ ("call" | "alloc"), who, ..] => {
                    if let Some(ps) = kv(l, "ps=").and_then(|s| s.parse::<f64>().ok()) {
                        f.samples
                            .entry(format!("{what} {who}"))
                            .or_default()
                            .push(ps / 1000.0);
                    }
                }
                ["bench", "jit", v] => f.jit = Some(v.to_string()),
                ["bench", "attach", mode, ..]
                    if l.contains("aptrace: attached") || l.contains("bpftrace: ready") =>
                {
                    if let Some(s) = kv(l, "s=").and_then(|s| s.parse().ok()) {
                        f.attach.insert(mode.to_string(), s);
                    }
                    if let Some(n) = kv(l, "kprobes=").and_then(|s| s.parse().ok()) {
                        f.attach_probes.insert(mode.to_string(), n);
                    }
                }
                ["bench", "rate", ..] => {
                    let n = |k: &str| kv(l, k).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                    f.rates.push((
                        n("k="),
                        n("events_per_s="),
                        n("lost="),
                        kv(l, "alive=").as_deref() == Some("yes"),
                    ));
                }
                _ => {}
            }
        }
        f
    }

    /// The figures (b)-(e) that have no number (the guest printed no marker for them): a
    /// run that measured nothing must not pass for a measurement.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if [
            "call none",
            "call ftrace",
            "call ftrace-args",
            "call aptrace",
            "call aptrace-lock-reads-off",
            "call aptrace-lock-reads-on",
        ]
        .iter()
        .any(|k| self.med(k).is_none())
        {
            v.push("(b)");
        }
        if [
            "alloc none",
            "alloc aptrace-default",
            "alloc aptrace-all",
            "alloc noop",
        ]
        .iter()
        .any(|k| self.med(k).is_none())
        {
            v.push("(c)");
        }
        if self.rates.is_empty() {
            v.push("(d)");
        }
        if !self.attach.contains_key("default") || !self.attach.contains_key("all-allocations") {
            v.push("(e)");
        }
        v
    }

    /// The figures as text lines (ratios first).
    pub fn render(&self) -> String {
        let mut s = format!("{} {} (TCG):\n", self.arch, self.kernel);
        let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let ns = |v: Option<f64>| v.map(|v| format!("{v:.1} ns")).unwrap_or("-".into());
        let (cn, cf, cfa, ca) = (
            self.med("call none"),
            self.med("call ftrace"),
            self.med("call ftrace-args"),
            self.med("call aptrace"),
        );
        let jit = match self.jit.as_deref() {
            Some("none") => "no BPF JIT in this kernel: programs interpreted",
            Some("0") => "BPF JIT off: programs interpreted",
            Some(_) => "BPF JIT on",
            None => "BPF JIT not reported",
        };
        s += &format!(
            "  (b) per call of vfio_ap_get_data_size: nothing {}, ftrace kprobe+kretprobe events {} (bare) / {} (fetching 4 args, comm, retval as aptrace does), aptrace {}; aptrace/nothing {}, aptrace/ftrace {} bare, {} same data (target <= 1.00x); {jit}\n",
            ns(cn), ns(cf), ns(cfa), ns(ca), r(ca, cn), r(ca, cf), r(ca, cfa)
        );
        let (con, coff) = (
            self.med("call aptrace-lock-reads-on"),
            self.med("call aptrace-lock-reads-off"),
        );
        if con.is_some() || coff.is_some() {
            s += &format!(
                "  (b) the other declared locks' reads: --lock-reads on {} / off {}: {} (target <= 1.10x)
",
                ns(con),
                ns(coff),
                r(con, coff)
            );
        }
        let cb = self.med("call bpftrace");
        if cb.is_some() {
            s += &format!(
                "  (b) peer: bpftrace one-liner (kprobe+kretprobe printing the same data) {}; aptrace/bpftrace {}\n",
                ns(cb),
                r(ca, cb)
            );
        }
        let (an, ad, aa) = (
            self.med("alloc none"),
            self.med("alloc aptrace-default"),
            self.med("alloc aptrace-all"),
        );
        let noop = self.med("alloc noop");
        s += &format!(
            "  (c) per kmalloc(64)+kfree in aptrace_bench: nothing {}, aptrace default {} ({}, target 1.00), --all-allocations {} ({}); a do-nothing BPF program on the same tracepoints {} ({}); --all-allocations / do-nothing {} (target <= 1.1x)\n",
            ns(an), ns(ad), r(ad, an), ns(aa), r(aa, an), ns(noop), r(noop, an), r(aa, noop)
        );
        let ok = self.rates.iter().filter(|r| r.2 == 0).map(|r| r.1).max();
        let above: Vec<String> = self
            .rates
            .iter()
            .filter(|r| r.2 > 0)
            .map(|r| {
                format!(
                    "{} ev/s: events-lost raised, agent {}",
                    r.1,
                    if r.3 { "kept running" } else { "DIED" }
                )
            })
            .collect();
        s += &format!(
            "  (d) highest sustained rate without loss: {} events/s (steps: {}); above: {}\n",
            ok.map(|v| v.to_string()).unwrap_or("-".into()),
            self.rates
                .iter()
                .map(|r| format!("{}{}", r.1, if r.2 > 0 { "(lost)" } else { "" }))
                .collect::<Vec<_>>()
                .join(" "),
            if above.is_empty() {
                "no loss at the highest rate the loop reached".into()
            } else {
                above.join("; ")
            }
        );
        s += &self.render_attach();
        let rt = |k: &str| self.med(&format!("{k} (real time)"));
        if rt("call none").is_some() {
            s += &format!(
                "  real time, 2 vCPUs (host load included): call nothing {}, ftrace {}, aptrace {} ({}); alloc nothing {}, default {}, all {} ({})\n",
                ns(rt("call none")),
                ns(rt("call ftrace")),
                ns(rt("call aptrace")),
                r(rt("call aptrace"), rt("call none")),
                ns(rt("alloc none")),
                ns(rt("alloc aptrace-default")),
                ns(rt("alloc aptrace-all")),
                r(rt("alloc aptrace-all"), rt("alloc none")),
            );
        }
        let runs = self.samples.values().map(Vec::len).max().unwrap_or(0);
        s += &format!(
            "  ({runs} runs per figure, medians; (b)(c) instruction time, (d)(e) real time; boots {:.0} s)\n",
            self.secs
        );
        s
    }
}

impl Figures {
    /// (e) per attached function (entry and return: two kprobes each), instruction time.
    pub fn attach_per_function(&self, mode: &str) -> Option<f64> {
        let s = self.attach_icount.get(mode)?;
        let n = *self.attach_probes.get(mode)?;
        (n >= 2).then(|| s / (n / 2) as f64)
    }

    /// (e): start to all probes attached, in instruction time (the -icount boot) and in
    /// real time, per attached function, and bpftrace's start with the same functions.
    fn render_attach(&self) -> String {
        let secs = |m: &BTreeMap<String, f64>, k: &str| {
            m.get(k).map(|v| format!("{v:.2} s")).unwrap_or("-".into())
        };
        let per_fn = |k: &str| match self.attach_per_function(k) {
            Some(s) => format!("{s:.3} s per function"),
            None => "-".into(),
        };
        let probes = |k: &str| {
            self.attach_probes
                .get(k)
                .map(|n| format!("{n} kprobes"))
                .unwrap_or("-".into())
        };
        let mut s = format!(
            "  (e) attach, start to all probes attached, instruction time: default {} ({}, {}), --all-allocations {}; real time: default {}, --all-allocations {}\n",
            secs(&self.attach_icount, "default"),
            probes("default"),
            per_fn("default"),
            secs(&self.attach_icount, "all-allocations"),
            secs(&self.attach, "default"),
            secs(&self.attach, "all-allocations"),
        );
        if self.attach_icount.contains_key("bpftrace") || self.attach.contains_key("bpftrace") {
            let ratio = match (
                self.attach_icount.get("default"),
                self.attach_icount.get("bpftrace"),
            ) {
                (Some(a), Some(b)) if *b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            s += &format!(
                "  (e) peer: bpftrace start to its BEGIN probe with the same functions, entry and return: {} instruction time ({}, {}), {} real time; aptrace/bpftrace {ratio}\n",
                secs(&self.attach_icount, "bpftrace"),
                probes("bpftrace"),
                per_fn("bpftrace"),
                secs(&self.attach, "bpftrace"),
            );
        }
        s
    }
}

pub struct BenchConf {
    pub runs: u32,
    pub ncall: u64,
    pub nalloc: u64,
    pub rates: String,
    pub rate_ms: u64,
}

impl Default for BenchConf {
    fn default() -> Self {
        Self {
            runs: 5,
            ncall: 2_000,
            nalloc: 50_000,
            rates: "5 10 20 50 100 200".into(),
            rate_ms: 2000,
        }
    }
}

/// One bench boot on one kernel.
#[allow(clippy::too_many_arguments)]
pub fn bench_one(
    root: &Path,
    runs_dir: &Path,
    k: &Kernel,
    bb: &Path,
    m: &kmod::BuiltModule,
    agent: Option<&PathBuf>,
    agent_args: &str,
    conf: &BenchConf,
    timeout: std::time::Duration,
    bpftrace: Option<&Path>,
) -> Result<Figures> {
    let dir = runs_dir.join("bench");
    let share = dir.join("share");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&share)?;
    let bko = m.ko.with_file_name("aptrace_bench.ko");
    let mut job = guest::Job::default();
    job.files
        .push(("job.sh".into(), root.join("testbed/guest/bench.sh"), 0o755));
    job.files.push(("bench.ko".into(), bko.clone(), 0o644));
    let mut env = format!(
        "R={}\nNCALL={}\nNALLOC={}\nRATES=\"{}\"\nRATE_MS={}\n",
        conf.runs, conf.ncall, conf.nalloc, conf.rates, conf.rate_ms
    );
    if let Some(a) = agent {
        job.files.push(("aptrace".into(), a.clone(), 0o755));
        env += &format!("AGENT=/aptrace\nAGENT_ARGS=\"{agent_args}\"\n");
    }
    let mut extra: Vec<String> = Vec::new();
    if let Some(tree) = bpftrace {
        env += "BPFTRACE=1\n";
        extra = super::bpftrace::qemu_args(tree);
    }
    job.texts.push(("job.env".into(), env, 0o644));
    let initrd = dir.join("initrd.cpio");
    fs::write(&initrd, guest::initramfs(root, k, bb, &m.ko, &job)?)
        .with_context(|| format!("initrd with {}", bko.display()))?;
    eprintln!("testbed: bench boot {}", k.id());
    // (b), (c): guest time counts instructions (-icount shift=0: 1 ns per instruction) on
    // one vCPU, so neither the shared host's load nor the agent's own work on another CPU
    // enters the loops' times. (d), (e): real time, two vCPUs, as a user would see it.
    let share_ic = dir.join("share-icount");
    fs::create_dir_all(&share_ic)?;
    let mut ic_args: Vec<&str> = vec!["-icount", "shift=0", "-smp", "1"];
    ic_args.extend(extra.iter().map(String::as_str));
    let ic = guest::boot_with(
        k,
        &initrd,
        &share_ic,
        &dir.join("console-icount.log"),
        timeout,
        None,
        &ic_args,
    )?;
    let wall_args: Vec<&str> = extra.iter().map(String::as_str).collect();
    let res = guest::boot_with(
        k,
        &initrd,
        &share,
        &dir.join("console.log"),
        timeout,
        None,
        &wall_args,
    )?;
    let mut f = Figures::parse(&k.kver, k.arch, &guest::markers(&ic.console));
    let wall = Figures::parse(&k.kver, k.arch, &guest::markers(&res.console));
    f.rates = wall.rates;
    f.attach_icount = std::mem::take(&mut f.attach);
    f.attach = wall.attach;
    for (key, v) in wall.samples {
        f.samples.insert(format!("{key} (real time)"), v);
    }
    f.secs = ic.secs + res.secs;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers_and_takes_medians() {
        let m: Vec<String> = [
            "bench call none ps=8000",
            "bench call none ps=9000",
            "bench call none ps=100000",
            "bench call aptrace ps=400000",
            "bench attach default s=3.5 aptrace: attached 13 probes",
            "bench rate k=5 events_per_s=9000 lost=0 alive=yes",
            "bench rate k=50 events_per_s=90000 lost=1 alive=yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = Figures::parse("6.12", Arch::X86_64, &m);
        assert_eq!(f.med("call none"), Some(9.0));
        assert_eq!(f.attach["default"], 3.5);
        let t = f.render();
        assert!(t.contains("aptrace/nothing 44.44x"), "{t}");
        assert!(t.contains("without loss: 9000 events/s"), "{t}");
        // no ftrace call, no alloc line, no --all-allocations attach in these markers
        assert_eq!(f.missing(), vec!["(b)", "(c)", "(e)"]);
        assert_eq!(
            Figures::parse("6.12", Arch::X86_64, &[]).missing(),
            vec!["(b)", "(c)", "(d)", "(e)"]
        );
    }

    #[test]
    fn the_lock_reads_pair_is_a_ratio_and_part_of_b() {
        let m: Vec<String> = [
            "bench call none ps=9000",
            "bench call ftrace ps=90000",
            "bench call ftrace-args ps=95000",
            "bench call aptrace ps=400000",
            "bench call aptrace-lock-reads-off ps=400000",
            "bench call aptrace-lock-reads-on ps=420000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = Figures::parse("6.12", Arch::S390x, &m);
        assert!(!f.missing().contains(&"(b)"), "{:?}", f.missing());
        let t = f.render();
        assert!(
            t.contains("--lock-reads on 420.0 ns / off 400.0 ns: 1.05x"),
            "{t}"
        );
        // Without the pair, (b) is not measured.
        let without: Vec<String> = m[..4].to_vec();
        assert!(Figures::parse("6.12", Arch::S390x, &without)
            .missing()
            .contains(&"(b)"));
    }

    #[test]
    fn the_bpftrace_peer_is_set_beside_aptrace_per_function() {
        let icount: Vec<String> = [
            "bench call aptrace ps=400000",
            "bench call bpftrace ps=800000",
            "bench attach default s=4.0 kprobes=52 aptrace: attached 26 probes to module vfio_ap",
            "bench attach bpftrace s=16.0 kprobes=52 bpftrace: ready",
            // a peer that never became ready has no time
            "bench attach bpftrace-one s=9 kprobes=0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut f = Figures::parse("6.12", Arch::X86_64, &icount);
        assert!(!f.attach.contains_key("bpftrace-one"));
        // bench_one: the instruction-time boot's attach times, beside the real-time ones
        f.attach_icount = std::mem::take(&mut f.attach);
        let t = f.render();
        assert!(t.contains("aptrace/bpftrace 0.50x"), "{t}");
        assert!(
            t.contains("default 4.00 s (52 kprobes, 0.154 s per function)"),
            "{t}"
        );
        assert!(
            t.contains("16.00 s instruction time (52 kprobes, 0.615 s per function)"),
            "{t}"
        );
        assert!(t.contains("aptrace/bpftrace 0.25x"), "{t}");
    }

    #[test]
    fn the_allocation_floor_and_the_jit_come_from_the_guest() {
        let m: Vec<String> = [
            "bench alloc none ps=200000",
            "bench alloc aptrace-default ps=200000",
            "bench alloc aptrace-all ps=500000",
            "bench alloc noop ps=400000",
            "bench jit none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = Figures::parse("6.12", Arch::S390x, &m);
        assert!(!f.missing().contains(&"(c)"));
        let t = f.render();
        assert!(t.contains("same tracepoints 400.0 ns (2.00x)"), "{t}");
        assert!(t.contains("--all-allocations / do-nothing 1.25x"), "{t}");
        assert!(t.contains("no BPF JIT in this kernel"), "{t}");
        let no_floor: Vec<String> = m.iter().filter(|l| !l.contains("noop")).cloned().collect();
        assert!(Figures::parse("6.12", Arch::S390x, &no_floor)
            .missing()
            .contains(&"(c)"));
    }
}
