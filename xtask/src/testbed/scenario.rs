//! Scenarios are data: `<dir>/<name>/run.sh`, `expected` (lines `kind count`), optional
//! `isolated` (a boot of its own) and `modes` (`default`, `all-allocations`; default: default).
//! An `expected` line `kind >=N` asks for at least N (`>=0`: allowed, not required: kinds that
//! lost events may or may not cause). Optional `agent-args` (added to that scenario's `aptrace
//! live`, read by the guest runner) and `uncertain` (every finding other than events-lost must
//! be marked uncertain in the JSON report). Optional `rebuilt-module`: the boot carries
//! /model-rebuilt.ko, the module built again with kmod::REBUILD_DEFINE (its functions at
//! other offsets). Optional `mainline-module`: the boot carries /model-mainline.ko, the module
//! built without the live-migration series (kmod::MAINLINE_VAR), which the guest runner loads
//! in place of the series build for that scenario's run and puts back after it. Optional
//! `module-unloaded` (read by the guest runner): the module is
//! unloaded before the agent starts, the runner waits for the agent's "waiting for module"
//! line instead of "attached", and run.sh loads the module. A run.sh that drives the model
//! through the userspace VFIO client (lib.sh's `vc`) runs through the kernel's own VFIO core
//! where the kernel has one (kernels::vfio_core), unless its optional `core` file says
//! `model` (with the reason on the next lines).
//! run.sh runs in the guest with busybox sh and sources /lib.sh (testbed/guest/lib.sh) for
//! what scenarios share: commands to the model, the leaking life, waits on the agent's log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    pub expected: BTreeMap<String, u64>,
    /// kinds of `expected` judged as "at least" (`kind >=N` lines)
    pub at_least: BTreeSet<String>,
    /// every finding but events-lost must be uncertain (file `uncertain`)
    pub uncertain: bool,
    pub isolated: bool,
    /// the boot needs /model-rebuilt.ko (file `rebuilt-module`)
    pub rebuilt_module: bool,
    /// the run loads /model-mainline.ko, the module without the series (file
    /// `mainline-module`)
    pub mainline_module: bool,
    pub modes: Vec<String>,
    /// The finding it plants has no detector yet (file `pending`: why). The run must still
    /// pass run.sh; the table shows PENDING instead of judging `expected`, and FAIL once the
    /// finding is found (the file must then go).
    pub pending: Option<String>,
    /// What it finds where its steps ran on the model core (file `expected-model-core`,
    /// first a `#` line saying why): a scenario about the kernel's VFIO core's own
    /// functions expects less where the kernel has none (s390x 6.1).
    pub model_core_expected: Option<(BTreeMap<String, u64>, BTreeSet<String>)>,
    /// run.sh drives the device through the VFIO client (lib.sh's `vc`)
    pub client: bool,
}

pub const MODES: [&str; 2] = ["default", "all-allocations"];

#[cfg(test)]
pub fn parse_counts(text: &str) -> Result<BTreeMap<String, u64>> {
    Ok(parse_expected(text)?.0)
}

/// `kind N` (exact) and `kind >=N` (at least) lines: the counts and the at-least kinds.
#[cfg(test)]
pub fn parse_expected(text: &str) -> Result<(BTreeMap<String, u64>, BTreeSet<String>)> {
    parse_expected_kinds(text, false)
}

/// `kind N` and `kind >=N` lines; with `future`, kinds aptrace does not have yet are taken too (a
/// pending scenario names the finding its planted bug will get).
fn parse_expected_kinds(
    text: &str,
    future: bool,
) -> Result<(BTreeMap<String, u64>, BTreeSet<String>)> {
    let mut m = BTreeMap::new();
    let mut at_least = BTreeSet::new();
    for l in text.lines() {
        let l = l.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let mut it = l.split_whitespace();
        let kind = it.next().unwrap_or_default().to_string();
        let known = finding_kinds();
        if !future && !known.contains(&kind.as_str()) {
            bail!(
                "unknown finding kind {kind:?} (one of {})",
                known.join(", ")
            );
        }
        let c = it.next().context("`kind count` expected")?;
        let n: u64 = match c.strip_prefix(">=") {
            Some(n) => {
                at_least.insert(kind.clone());
                m.entry(kind.clone()).or_insert(0);
                n.parse()?
            }
            None => c.parse()?,
        };
        if n > 0 {
            *m.entry(kind).or_insert(0) += n;
        }
    }
    Ok((m, at_least))
}

pub fn load_one(dir: &Path) -> Result<Scenario> {
    let name = dir
        .file_name()
        .context("scenario dir")?
        .to_string_lossy()
        .into_owned();
    if !dir.join("run.sh").exists() {
        bail!("{}: no run.sh", dir.display());
    }
    let pending = match fs::read_to_string(dir.join("pending")) {
        Ok(t) if t.trim().is_empty() => {
            bail!("{}/pending: say why the scenario is pending", dir.display())
        }
        Ok(t) => Some(t.trim().to_string()),
        Err(_) => None,
    };
    let (expected, at_least) = match fs::read_to_string(dir.join("expected")) {
        Ok(t) => parse_expected_kinds(&t, pending.is_some())
            .with_context(|| format!("{}/expected", dir.display()))?,
        Err(_) => bail!("{}: no expected file", dir.display()),
    };
    let modes: Vec<String> = match fs::read_to_string(dir.join("modes")) {
        Ok(t) => t.split_whitespace().map(str::to_string).collect(),
        Err(_) => vec!["default".into()],
    };
    for m in &modes {
        if !MODES.contains(&m.as_str()) {
            bail!("{}: unknown mode {m}", dir.display());
        }
    }
    // file `core` (read by the guest runner): `model` keeps the model core under this
    // scenario on every kernel
    if let Ok(t) = fs::read_to_string(dir.join("core")) {
        if !(t.split_whitespace().next() == Some("model") && t.lines().count() > 1) {
            bail!(
                "{}/core: `model` on the first line, then why the real core cannot drive it",
                dir.display()
            );
        }
    }
    let model_core_expected = match fs::read_to_string(dir.join("expected-model-core")) {
        Ok(t) if !t.trim_start().starts_with('#') => bail!(
            "{}/expected-model-core: a `#` line first, saying why the model core shows less",
            dir.display()
        ),
        Ok(t) => Some(
            parse_expected_kinds(&t, pending.is_some())
                .with_context(|| format!("{}/expected-model-core", dir.display()))?,
        ),
        Err(_) => None,
    };
    let client = fs::read_to_string(dir.join("run.sh"))?
        .lines()
        .any(|l| l.trim_start().starts_with("vc "));
    Ok(Scenario {
        client,
        name,
        dir: dir.to_path_buf(),
        expected,
        at_least,
        uncertain: dir.join("uncertain").exists(),
        isolated: dir.join("isolated").exists(),
        rebuilt_module: dir.join("rebuilt-module").exists(),
        mainline_module: dir.join("mainline-module").exists(),
        modes,
        pending,
        model_core_expected,
    })
}

/// A folder of scenario folders, or one scenario folder.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>> {
    if dir.join("run.sh").exists() {
        return Ok(vec![load_one(dir)?]);
    }
    let mut v = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("run.sh").exists())
        .collect();
    entries.sort();
    for p in entries {
        v.push(load_one(&p)?);
    }
    Ok(v)
}

/// `expected` for the table, with `>=` on the at-least kinds.
pub fn fmt_expected(m: &BTreeMap<String, u64>, at_least: &BTreeSet<String>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let allowed = m
        .iter()
        .filter(|(k, v)| **v == 0 && at_least.contains(*k))
        .count();
    let mut s = m
        .iter()
        .filter(|(k, v)| **v > 0 || !at_least.contains(*k))
        .map(|(k, v)| {
            let op = if at_least.contains(k) { ">=" } else { "" };
            format!("{k} {op}{v}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    if allowed > 0 {
        s += &format!(" (+{allowed} kinds >=0)");
    }
    s
}

pub fn fmt_counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The finding kinds, by their stable names (docs/report-schema.md): the auditor's own list,
/// so a kind added there is known here.
fn finding_kinds() -> Vec<&'static str> {
    tracer::audit::Kind::ALL.iter().map(|k| k.name()).collect()
}

/// Finding counts from the agent's JSON report (`--json`): the `findings` array, which must
/// agree with `summary.findings_by_kind`.
pub fn count_report(json: &str) -> Result<BTreeMap<String, u64>> {
    let v: serde_json::Value = serde_json::from_str(json).context("the JSON report")?;
    let mut m = BTreeMap::new();
    for f in v["findings"]
        .as_array()
        .context("report without findings[]")?
    {
        let kind = f["kind"].as_str().context("finding without kind")?;
        *m.entry(kind.to_string()).or_insert(0) += 1;
    }
    let by_kind: BTreeMap<String, u64> = v["summary"]["findings_by_kind"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default();
    if by_kind != m {
        bail!(
            "findings[] ({}) and summary.findings_by_kind ({}) disagree",
            fmt_counts(&m),
            fmt_counts(&by_kind)
        );
    }
    Ok(m)
}

/// The table's word for a pending scenario's run: PENDING while its planted bug is not
/// found as `expected` says (and run.sh and the agent were fine), an error once it is.
pub fn judge_pending(run_ok: bool, found_as_expected: bool) -> Result<(), &'static str> {
    match (run_ok, found_as_expected) {
        (false, _) => Err("the run itself failed"),
        (true, true) => Err("found as expected: no longer pending, remove its `pending` file"),
        (true, false) => Ok(()),
    }
}

/// Exact: every expected kind with its count, and nothing else (clean = no finding).
#[cfg(test)]
pub fn judge(expected: &BTreeMap<String, u64>, found: &BTreeMap<String, u64>) -> bool {
    expected == found
}

/// As [`judge`], but the `at_least` kinds need only reach their count (0: may be absent).
pub fn judge_at_least(
    expected: &BTreeMap<String, u64>,
    at_least: &BTreeSet<String>,
    found: &BTreeMap<String, u64>,
) -> bool {
    let exact_ok = expected
        .iter()
        .filter(|(k, _)| !at_least.contains(*k))
        .all(|(k, n)| found.get(k) == Some(n));
    let least_ok = at_least
        .iter()
        .all(|k| found.get(k).copied().unwrap_or(0) >= expected.get(k).copied().unwrap_or(0));
    let no_extra = found.keys().all(|k| expected.contains_key(k));
    exact_ok && least_ok && no_extra
}

/// Findings other than events-lost that are not marked uncertain in the JSON report.
pub fn certain_findings(json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(json).context("the JSON report")?;
    Ok(v["findings"]
        .as_array()
        .context("report without findings[]")?
        .iter()
        .filter(|f| f["kind"] != "events-lost" && f["uncertain"] != true)
        .map(|f| f["kind"].as_str().unwrap_or("?").to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_knows_every_kind_the_auditor_raises() {
        // lock-order (issue 15's scenarios) was missing from a hand-kept list
        let (m, _) = parse_expected("lock-order 1\nbuffer-held-at-close 1\n").unwrap();
        assert_eq!(m["lock-order"], 1);
        let e = parse_expected("lock-ordr 1\n").unwrap_err().to_string();
        assert!(e.contains("lock-ordr") && e.contains("lock-order"), "{e}");
    }

    #[test]
    fn counts() {
        let e = parse_counts("leak 1\n# c\n\nlock-not-held 2\n").unwrap();
        assert_eq!(fmt_counts(&e), "leak 1, lock-not-held 2");
        assert!(parse_counts("leek 1").is_err());
    }

    #[test]
    fn report_counts_and_exact_judgment() {
        let j = r#"{"findings":[{"kind":"leak"},{"kind":"lock-not-held"}],
            "summary":{"findings_by_kind":{"leak":1,"lock-not-held":1}}}"#;
        let f = count_report(j).unwrap();
        assert!(judge(&parse_counts("leak 1\nlock-not-held 1").unwrap(), &f));
        // one kind removed, one count off, one extra kind: all fail
        assert!(!judge(&parse_counts("leak 1").unwrap(), &f));
        assert!(!judge(
            &parse_counts("leak 2\nlock-not-held 1").unwrap(),
            &f
        ));
        assert!(!judge(
            &parse_counts("leak 1\nlock-not-held 1\nevents-lost 1").unwrap(),
            &f
        ));
        // clean: zero findings only
        assert!(judge(&parse_counts("").unwrap(), &BTreeMap::new()));
        assert!(!judge(&parse_counts("").unwrap(), &f));
        // at least: events-lost >=1 and leak >=0 (allowed, not required); nothing else
        let (e, al) = parse_expected("events-lost >=1\nleak >=0\n").unwrap();
        let f2 = |t: &str| parse_counts(t).unwrap();
        assert!(judge_at_least(&e, &al, &f2("events-lost 3")));
        assert!(judge_at_least(&e, &al, &f2("events-lost 1\nleak 2")));
        assert!(!judge_at_least(&e, &al, &f2("leak 2")));
        assert!(!judge_at_least(
            &e,
            &al,
            &f2("events-lost 1\nlock-not-held 1")
        ));
        assert!(!judge(&e, &f2("events-lost 3")));
        let (e, al) = parse_expected("leak 1").unwrap();
        assert!(al.is_empty() && judge_at_least(&e, &al, &f2("leak 1")));
        assert!(!judge_at_least(&e, &al, &f2("leak 2")));
        let u = r#"{"findings":[{"kind":"events-lost"},{"kind":"leak","uncertain":true},
            {"kind":"unknown-free","uncertain":false}]}"#;
        assert_eq!(
            certain_findings(u).unwrap(),
            vec!["unknown-free".to_string()]
        );
        let bad = r#"{"findings":[{"kind":"leak"}],"summary":{"findings_by_kind":{}}}"#;
        assert!(count_report(bad).is_err());
    }

    #[test]
    fn a_pending_scenario_is_pending_only_while_its_finding_is_missing() {
        assert_eq!(judge_pending(true, false), Ok(()));
        assert!(judge_pending(true, true).unwrap_err().contains("remove"));
        assert!(judge_pending(false, false).is_err());
        assert!(judge_pending(false, true).is_err());
    }

    #[test]
    fn a_pending_file_must_say_why() {
        let d = std::env::temp_dir().join(format!("aptrace-pending-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::write(d.join("expected"), "leak 1\n").unwrap();
        fs::write(d.join("pending"), "\n").unwrap();
        let err = load_one(&d).unwrap_err().to_string();
        assert!(err.contains("pending"), "{err}");
        fs::write(d.join("pending"), "needs kind x\n").unwrap();
        assert_eq!(
            load_one(&d).unwrap().pending.as_deref(),
            Some("needs kind x")
        );
        // a pending scenario may name a kind aptrace does not have yet; others may not
        fs::write(d.join("expected"), "not-a-kind-yet 1\n").unwrap();
        assert_eq!(load_one(&d).unwrap().expected["not-a-kind-yet"], 1);
        fs::remove_file(d.join("pending")).unwrap();
        assert!(load_one(&d).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_mainline_scenario_loads_the_build_without_the_series_in_default_mode() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/scenarios");
        let all = load_dir(&dir).unwrap();
        let m = all.iter().find(|s| s.name == "mainline-driver").unwrap();
        assert!(m.mainline_module && m.client && !m.isolated);
        assert_eq!(m.modes, ["default"]);
        assert!(m.expected.is_empty(), "no finding");
        // the others keep the series build
        assert!(all
            .iter()
            .filter(|s| s.name != "mainline-driver")
            .all(|s| !s.mainline_module));
        // the buffer scenarios run in the default mode too
        for n in [
            "series-buffer-leak-on-close",
            "series-reset",
            "series-close-with-fd-open",
        ] {
            let s = all.iter().find(|s| s.name == n).unwrap();
            assert_eq!(s.modes, ["default", "all-allocations"], "{n}");
        }
    }

    #[test]
    fn a_core_file_says_model_and_why_and_vc_marks_a_client_scenario() {
        let d = std::env::temp_dir().join(format!("aptrace-core-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("run.sh"),
            ". /lib.sh
ctl create U
",
        )
        .unwrap();
        fs::write(d.join("expected"), "").unwrap();
        assert!(!load_one(&d).unwrap().client);
        fs::write(
            d.join("run.sh"),
            ". /lib.sh
vc \"create U\" \"open U\"\n",
        )
        .unwrap();
        assert!(load_one(&d).unwrap().client);
        for bad in ["model\n", "real\nbecause\n", "\n"] {
            fs::write(d.join("core"), bad).unwrap();
            let err = load_one(&d).unwrap_err().to_string();
            assert!(err.contains("core"), "{bad:?}: {err}");
        }
        fs::write(d.join("core"), "model\nthe real core frees the mdev\n").unwrap();
        assert!(load_one(&d).is_ok());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_expected_model_core_file_says_why_then_what_the_model_core_finds() {
        let d = std::env::temp_dir().join(format!("xtask-scn-mc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("run.sh"), ". /lib.sh\n").unwrap();
        fs::write(d.join("expected"), "lock-order 1\n").unwrap();
        assert!(load_one(&d).unwrap().model_core_expected.is_none());
        fs::write(d.join("expected-model-core"), "lock-order 1\n").unwrap();
        let err = load_one(&d).unwrap_err().to_string();
        assert!(err.contains("expected-model-core"), "{err}");
        fs::write(
            d.join("expected-model-core"),
            "# no VFIO: the core's rows are absent\nleak 1\n",
        )
        .unwrap();
        let s = load_one(&d).unwrap();
        let (e, _) = s.model_core_expected.unwrap();
        assert_eq!(e.get("leak"), Some(&1));
        assert_eq!(s.expected.get("lock-order"), Some(&1));
        fs::write(d.join("expected-model-core"), "# why\n").unwrap();
        assert!(load_one(&d)
            .unwrap()
            .model_core_expected
            .unwrap()
            .0
            .is_empty());
        fs::remove_dir_all(&d).unwrap();
    }
}
