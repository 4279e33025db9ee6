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

/// Counts findings in an agent's JSON output without assuming its exact shape: every
/// `"kind": "<finding kind>"` pair counts once.
pub fn count_findings(json: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let mut rest = json;
    while let Some(i) = rest.find("\"kind\"") {
        rest = &rest[i + 6..];
        let r = rest.trim_start();
        let Some(r) = r.strip_prefix(':') else {
            continue;
        };
        let r = r.trim_start();
        let Some(r) = r.strip_prefix('"') else {
            continue;
        };
        let Some(end) = r.find('"') else { break };
        let kind = &r[..end];
        if FINDING_KINDS.contains(&kind) {
            *m.entry(kind.to_string()).or_insert(0) += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let e = parse_counts("leak 1\n# c\n\nlock-not-held 2\n").unwrap();
        assert_eq!(fmt_counts(&e), "leak 1, lock-not-held 2");
        let j = r#"{"findings":[{"kind":"leak","x":1},{"kind" : "leak"}]}
{"kind":"vfio_ap_mdev_probe"}"#;
        assert_eq!(fmt_counts(&count_findings(j)), "leak 2");
    }
}
