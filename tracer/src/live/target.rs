//! What `check` and `live` are asked to trace: the module and profile, and the values given
//! on the command line instead of reading them from the kernel (`--offset`, ...), checked
//! against the profile before anything is resolved.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::profile::Profile;

/// Values given on the command line instead of reading them from the kernel.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--offset STRUCT.MEMBER=N`: `ap_matrix_dev.mdevs_lock`, `ap_matrix_mdev.mig_data`,
    /// `mutex.owner`, or any field a profile reads.
    pub offsets: BTreeMap<String, u64>,
    /// `--matrix-dev-addr`: address of the `matrix_dev` pointer variable.
    pub matrix_dev_addr: Option<u64>,
    /// `--owner-mask`: mask of the mutex owner word (default `!0x7`, PREEMPT_RT `!0x1`).
    pub owner_mask: Option<u64>,
    /// `--module-file`: the module's .ko, for its symbol table.
    pub module_file: Option<PathBuf>,
    /// `--text-range START-END` (hidden, for self-tests on hosts without the module):
    /// attribute allocations from this range as if it were the module's text.
    pub text_range: Option<(u64, u64)>,
    /// `--lock-reads off`: the probes read no declared lock but the probed one (to measure
    /// what the reads cost).
    pub lock_reads_off: bool,
    /// `--lock-reads auto`: the live agent turns the reads off on a kernel whose verifier is
    /// not known to take them ([`verifier_takes_lock_reads`]).
    pub lock_reads_auto: bool,
}

impl Overrides {
    /// Whether the entries read the other declared locks on the kernel of `release`: not with
    /// `--lock-reads off`, nor with `auto` where the verifier is not known to take them.
    pub fn lock_reads_on(&self, release: &str) -> bool {
        !self.lock_reads_off && (!self.lock_reads_auto || verifier_takes_lock_reads(release))
    }
}

/// Whether the kernel of `release` (`uname -r`) is one whose verifier takes the entry
/// programs with the other locks' reads: 6.1 and 6.12 do since the reads write straight into
/// the reserved record and a NULL argument 0 ends them (6.1's verifier gave up on the earlier,
/// longer program after a million instructions). Kernels before 6.1 are untried, so they are
/// traced without the reads unless `--lock-reads on` asks to try; a refusal falls back anyway.
pub fn verifier_takes_lock_reads(release: &str) -> bool {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 1),
        _ => false,
    }
}

/// What `check` and `live` trace: which module and profile, and the overrides.
#[derive(Clone, Debug, Default)]
pub struct TargetOptions {
    pub module: Option<String>,
    pub profile: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Why the target of `check` or `live` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error("--offset {name}: the profile reads no such struct member; known: {}", known.join(", "))]
    UnknownOffset { name: String, known: Vec<String> },
}

impl TargetOptions {
    /// The profile (built-in unless `--profile`) and the module (`--module`, else the
    /// profile's), once every `--offset` names a member that profile reads.
    pub fn resolve(&self) -> Result<(crate::profile::Profile, String), TargetError> {
        let profile = match &self.profile {
            Some(p) => crate::profile::Profile::load(p)?,
            None => crate::profile::Profile::vfio_ap(),
        };
        check_offset_names(&self.overrides, &profile)?;
        let module = self
            .module
            .clone()
            .unwrap_or_else(|| profile.module.clone());
        Ok((profile, module))
    }
}

/// The struct members whose offsets `--offset` may give for `profile`: its lock field, the
/// fields its functions read, and the kernel's `mutex.owner`. Sorted, without duplicates.
pub fn offset_names(profile: &Profile) -> Vec<String> {
    let mut names: Vec<String> = std::iter::once(profile.lock_field.clone())
        .chain(
            profile
                .functions
                .iter()
                .filter_map(|f| f.read.as_ref())
                .flat_map(|r| {
                    r.path
                        .iter()
                        .cloned()
                        .chain(std::iter::once(r.field.clone()))
                }),
        )
        .chain(profile.locks.iter().flat_map(|l| l.path.iter().cloned()))
        // A field given as a number needs no offset.
        .filter(|f| f.contains('.') && crate::model::hex_u64::parse(f).is_err())
        .chain(std::iter::once("mutex.owner".to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// An `--offset` for a member the profile does not read would be silently ignored (a typo
/// leaving a check off): refuse it, listing the names that are read.
pub fn check_offset_names(ov: &Overrides, profile: &Profile) -> Result<(), TargetError> {
    let known = offset_names(profile);
    match ov.offsets.keys().find(|k| !known.contains(k)) {
        Some(name) => Err(TargetError::UnknownOffset {
            name: name.clone(),
            known,
        }),
        None => Ok(()),
    }
}

/// Parses `STRUCT.MEMBER=N` (N decimal or 0x hex).
pub fn parse_offset_override(s: &str) -> Result<(String, u64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--offset {s:?}: expected STRUCT.MEMBER=N"))?;
    if !k.contains('.') {
        return Err(format!("--offset {s:?}: expected STRUCT.MEMBER=N"));
    }
    let v = crate::model::hex_u64::parse(v).map_err(|e| format!("--offset {s:?}: {e}"))?;
    Ok((k.trim().to_string(), v))
}

/// Parses `START-END` (hex with 0x, or decimal).
pub fn parse_text_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected START-END"))?;
    let a = crate::model::hex_u64::parse(a)?;
    let b = crate::model::hex_u64::parse(b)?;
    if a >= b {
        return Err(format!("{s:?}: START must be below END"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_the_profile_does_not_read_is_refused_listing_the_known_ones() {
        let p = Profile::vfio_ap();
        let known = offset_names(&p);
        assert!(known.contains(&p.lock_field), "{known:?}");
        assert!(known.contains(&"mutex.owner".to_string()));
        let mut ov = Overrides::default();
        for name in &known {
            ov.offsets.insert(name.clone(), 8);
        }
        assert!(check_offset_names(&ov, &p).is_ok());
        ov.offsets.insert("ap_matrix_dev.mdevs_lok".into(), 8);
        let e = check_offset_names(&ov, &p).unwrap_err().to_string();
        assert!(
            e.starts_with("--offset ap_matrix_dev.mdevs_lok: the profile reads no such"),
            "{e}"
        );
        for name in &known {
            assert!(e.contains(name.as_str()), "{e} lacks {name}");
        }
    }

    #[test]
    fn offset_overrides_parse() {
        assert_eq!(
            parse_offset_override("ap_matrix_dev.mdevs_lock=0x328").unwrap(),
            ("ap_matrix_dev.mdevs_lock".to_string(), 0x328)
        );
        assert_eq!(parse_offset_override("mutex.owner=0").unwrap().1, 0);
        assert!(parse_offset_override("mdevs_lock=8").is_err());
        assert!(parse_offset_override("a.b=x").is_err());
    }
}

#[cfg(test)]
mod lock_reads_tests {
    use super::verifier_takes_lock_reads;

    #[test]
    fn the_kernels_whose_verifier_takes_the_lock_reads() {
        for (release, takes) in [
            ("6.12.95+deb12-amd64", true),
            ("6.12.95+deb12-s390x", true),
            ("6.18.44-fc-v1147", true),
            ("7.0.0", true),
            ("6.1.0-57-amd64", true),
            ("6.1.0-50-s390x", true),
            ("5.15.0-91-generic", false),
            ("5.14.0-427.el9.s390x", false),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(verifier_takes_lock_reads(release), takes, "{release}");
        }
    }

    #[test]
    fn auto_reads_where_the_verifier_takes_them_off_never_on_always() {
        use super::Overrides;
        let with = |off: bool, auto: bool| Overrides {
            lock_reads_off: off,
            lock_reads_auto: auto,
            ..Default::default()
        };
        let (new, old) = ("6.12.95+deb12-s390x", "5.14.0-427.el9.s390x");
        assert!(with(false, true).lock_reads_on(new));
        assert!(!with(false, true).lock_reads_on(old));
        assert!(
            with(false, false).lock_reads_on(old),
            "on tries on any kernel"
        );
        assert!(!with(true, false).lock_reads_on(new));
    }
}
