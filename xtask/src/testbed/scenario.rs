//! Scenarios are data: `<dir>/<name>/run.sh`, `expected` (lines `kind count`), optional
//! `isolated` (a boot of its own) and `modes` (`default`, `all-allocations`; default: default).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    pub expected: BTreeMap<String, u64>,
    pub isolated: bool,
    pub modes: Vec<String>,
}

pub const MODES: [&str; 2] = ["default", "all-allocations"];

pub fn parse_counts(text: &str) -> Result<BTreeMap<String, u64>> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let l = l.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let mut it = l.split_whitespace();
        let kind = it.next().unwrap_or_default().to_string();
        if !FINDING_KINDS.contains(&kind.as_str()) {
            bail!(
                "unknown finding kind {kind:?} (one of {})",
                FINDING_KINDS.join(", ")
            );
        }
        let n: u64 = it.next().context("`kind count` expected")?.parse()?;
        if n > 0 {
            *m.entry(kind).or_insert(0) += n;
        }
    }
    Ok(m)
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
    let expected = match fs::read_to_string(dir.join("expected")) {
        Ok(t) => parse_counts(&t).with_context(|| format!("{}/expected", dir.display()))?,
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
    Ok(Scenario {
        name,
        dir: dir.to_path_buf(),
        expected,
        isolated: dir.join("isolated").exists(),
        modes,
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

pub fn fmt_counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The finding kinds (DESIGN.md: stable names).
pub const FINDING_KINDS: [&str; 11] = [
    "leak",
    "overwrite-leak",
    "double-free",
    "unknown-free",
    "lock-not-held",
    "self-deadlock",
    "lifecycle-order",
    "use-after-release",
    "invalid-migration-arc",
    "error-path-leak",
    "events-lost",
];

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

/// Exact: every expected kind with its count, and nothing else (clean = no finding).
pub fn judge(expected: &BTreeMap<String, u64>, found: &BTreeMap<String, u64>) -> bool {
    expected == found
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let bad = r#"{"findings":[{"kind":"leak"}],"summary":{"findings_by_kind":{}}}"#;
        assert!(count_report(bad).is_err());
    }
}
