//! Builds the model module (or another module source) against an unpacked kernel, and reads
//! struct offsets from its debug info with pahole, as a user of a BTF-less kernel would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::kernels::{Core, Kernel};
use super::{copy_tree, Arch};
use crate::cmd;

pub struct BuiltModule {
    pub ko: PathBuf,
    pub has_btf: bool,
    /// offset of `mdevs_lock` in `struct ap_matrix_dev`, from pahole (None if the module has
    /// no such struct)
    pub mdevs_lock_off: Option<u64>,
    /// offset of `mig_data` in `struct ap_matrix_mdev`
    pub mig_data_off: Option<u64>,
    /// `--offset` arguments for the file slots' buffer pointers the profile reads
    /// (`vfio_ap_migration_data.{resuming,stop_copy}_mig_file.ap_config`); empty when the
    /// module has no migration files
    pub slot_offsets: Vec<(String, u64)>,
    /// the make variables of its core (testbed/kmod/Kbuild), repeated by the rebuild
    pub core_vars: Vec<&'static str>,
}

/// The nested members of the series' migration data whose offsets the built-in profile's
/// buffer reads need: (slot member, then `ap_config` inside `struct vfio_ap_migration_file`).
fn slot_offsets(ko: &Path) -> Result<Vec<(String, u64)>> {
    let Some(cfg) = pahole_offset(ko, "vfio_ap_migration_file", "ap_config")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for slot in ["resuming_mig_file", "stop_copy_mig_file"] {
        if let Some(off) = pahole_offset(ko, "vfio_ap_migration_data", slot)? {
            out.push((
                format!("vfio_ap_migration_data.{slot}.ap_config"),
                off + cfg,
            ));
        }
    }
    Ok(out)
}

/// The make variables of a core (testbed/kmod/Kbuild): none for the model core.
pub fn core_vars(core: &Core) -> Vec<&'static str> {
    match core {
        Core::Real { mdev: true, .. } => vec!["APTRACE_REAL_CORE=1"],
        Core::Real { mdev: false, .. } => vec!["APTRACE_REAL_CORE=1", "APTRACE_NO_MDEV=1"],
        Core::Model { .. } => vec![],
    }
}

/// Builds `src` as module `name` in `<build>/<kernel id>/<name>` (`build`: this invocation's
/// build folder, so parallel testbed runs do not remove each other's trees).
/// Built for `core`: with the real one, the model registers with the kernel's VFIO core.
pub fn build(build: &Path, k: &Kernel, src: &Path, name: &str, core: &Core) -> Result<BuiltModule> {
    let core_vars = core_vars(core);
    let ko = make(build, k, src, name, name, &core_vars)?;
    let has_btf = section_names(&ko)?.iter().any(|s| s == ".BTF");
    Ok(BuiltModule {
        mdevs_lock_off: pahole_offset(&ko, "ap_matrix_dev", "mdevs_lock")?,
        mig_data_off: pahole_offset(&ko, "ap_matrix_mdev", "mig_data")?,
        slot_offsets: slot_offsets(&ko)?,
        ko,
        has_btf,
        core_vars,
    })
}

/// The define that makes the rebuilt model (testbed/kmod/vfio_ap_model.c): more text ahead
/// of the driver functions, nothing else.
pub const REBUILD_DEFINE: &str = "-DAPTRACE_MODEL_REBUILD";

/// The same module built a second time with [`REBUILD_DEFINE`] (scenario module-reload loads
/// it in place of the first). Its struct offsets and the placement of `matrix_dev` must be
/// the first build's: the agent keeps the --offset overrides and reads `--module-file` for
/// `matrix_dev`, and a difference would make the scenario test a wrong configuration.
pub fn build_rebuilt(build: &Path, k: &Kernel, src: &Path, first: &BuiltModule) -> Result<PathBuf> {
    let name = first
        .ko
        .file_stem()
        .context("module file name")?
        .to_string_lossy()
        .into_owned();
    let kcflags = format!("KCFLAGS={REBUILD_DEFINE}");
    let mut extra = vec![kcflags.as_str()];
    extra.extend(&first.core_vars);
    let ko = make(build, k, src, &name, &format!("{name}-rebuilt"), &extra)?;
    let same = |what: &str, a: Option<u64>, b: Option<u64>| -> Result<()> {
        if a != b {
            bail!(
                "{}: {what} is {b:?} in the rebuilt module, {a:?} in the first",
                k.id()
            );
        }
        Ok(())
    };
    same(
        "offsetof(ap_matrix_dev, mdevs_lock)",
        first.mdevs_lock_off,
        pahole_offset(&ko, "ap_matrix_dev", "mdevs_lock")?,
    )?;
    same(
        "offsetof(ap_matrix_mdev, mig_data)",
        first.mig_data_off,
        pahole_offset(&ko, "ap_matrix_mdev", "mig_data")?,
    )?;
    let (a, b) = (
        symbol_place(&first.ko, "matrix_dev")?,
        symbol_place(&ko, "matrix_dev")?,
    );
    if a != b {
        bail!(
            "{}: matrix_dev at {b:?} in the rebuilt module, {a:?} in the first",
            k.id()
        );
    }
    Ok(ko)
}

/// The make variable of the build without the live-migration series (testbed/kmod/Kbuild:
/// `-DAPTRACE_MODEL_MAINLINE`), vfio_ap as mainline and enterprise distributions have it.
pub const MAINLINE_VAR: &str = "APTRACE_MAINLINE=1";

/// The same module built without the series, for scenarios with a `mainline-module` file.
/// `struct ap_matrix_dev` must keep the first build's layout: the agent's `--offset
/// ap_matrix_dev.mdevs_lock` (where the module has no BTF) is the boot's, given for both.
pub fn build_mainline(
    build: &Path,
    k: &Kernel,
    src: &Path,
    first: &BuiltModule,
) -> Result<PathBuf> {
    let name = first
        .ko
        .file_stem()
        .context("module file name")?
        .to_string_lossy()
        .into_owned();
    let mut extra = vec![MAINLINE_VAR];
    extra.extend(&first.core_vars);
    let ko = make(build, k, src, &name, &format!("{name}-mainline"), &extra)?;
    let lock = pahole_offset(&ko, "ap_matrix_dev", "mdevs_lock")?;
    if lock != first.mdevs_lock_off {
        bail!(
            "{}: offsetof(ap_matrix_dev, mdevs_lock) is {lock:?} in the mainline build, {:?} in the first",
            k.id(),
            first.mdevs_lock_off
        );
    }
    if pahole_offset(&ko, "ap_matrix_mdev", "mig_data")?.is_some() {
        bail!(
            "{}: the mainline build still has ap_matrix_mdev.mig_data",
            k.id()
        );
    }
    Ok(ko)
}

/// `make modules` of a copy of `src` in `<build>/<kernel id>/<dir>`; the path of `name`.ko.
fn make(
    build: &Path,
    k: &Kernel,
    src: &Path,
    name: &str,
    dir: &str,
    extra: &[&str],
) -> Result<PathBuf> {
    let out = build.join(k.id()).join(dir);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    copy_tree(src, &out)?;
    let mut c = Command::new("nice");
    c.arg("make")
        .arg("-s")
        .arg("-C")
        .arg(k.kdir())
        .arg(format!("M={}", out.display()));
    if k.arch == Arch::S390x {
        c.arg("ARCH=s390").arg("CROSS_COMPILE=s390x-linux-gnu-");
    }
    c.args(extra);
    c.arg("modules");
    cmd::capture(&mut c).with_context(|| format!("building {name} for {}", k.id()))?;
    let ko = out.join(format!("{name}.ko"));
    if !ko.exists() {
        bail!("{} was not built", ko.display());
    }
    Ok(ko)
}

/// (section name, value) of a symbol in an ELF file's symbol table (`readelf -sW`).
fn symbol_place(elf: &Path, sym: &str) -> Result<Option<(String, u64)>> {
    let symbols = cmd::capture(Command::new("readelf").arg("-sW").arg(elf))?;
    // section index -> name, from "  [43] .bss  NOBITS ..." lines
    let headers = cmd::capture(Command::new("readelf").arg("-SW").arg(elf))?;
    let sections: std::collections::BTreeMap<String, String> = headers
        .lines()
        .filter_map(|l| {
            let (i, rest) = l.trim_start().strip_prefix('[')?.split_once(']')?;
            Some((
                i.trim().to_string(),
                rest.split_whitespace().next()?.to_string(),
            ))
        })
        .collect();
    for l in symbols.lines() {
        // "   116: 0000000000000000     8 OBJECT  GLOBAL DEFAULT   43 matrix_dev"
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 8 && w[7] == sym {
            let value = u64::from_str_radix(w[1], 16)?;
            let section = sections
                .get(w[6])
                .cloned()
                .unwrap_or_else(|| w[6].to_string());
            return Ok(Some((section, value)));
        }
    }
    Ok(None)
}

fn section_names(elf: &Path) -> Result<Vec<String>> {
    let text = cmd::capture(Command::new("readelf").arg("-S").arg("-W").arg(elf))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(str::to_string)
        })
        .collect())
}

/// `pahole -C STRUCT module.ko`, the byte offset of MEMBER (`/* OFFSET SIZE */`).
pub fn pahole_offset(ko: &Path, strukt: &str, member: &str) -> Result<Option<u64>> {
    let out = Command::new("pahole")
        .arg("-C")
        .arg(strukt)
        .arg(ko)
        .output()
        .context("running pahole")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines() {
        let Some((decl, comment)) = l.split_once("/*") else {
            continue;
        };
        let decl = decl.trim().trim_end_matches(';');
        let last = decl.rsplit([' ', '*']).next().unwrap_or("");
        let last = last.split('[').next().unwrap_or("");
        if last == member {
            let off = comment.split_whitespace().next().context("pahole line")?;
            // bitfields print OFFSET:BITS
            let off = off.split(':').next().unwrap_or(off);
            return Ok(Some(off.parse()?));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_core_has_its_make_variables() {
        let real = |mdev| Core::Real {
            modules: vec![],
            mdev,
        };
        assert_eq!(core_vars(&real(true)), ["APTRACE_REAL_CORE=1"]);
        assert_eq!(
            core_vars(&real(false)),
            ["APTRACE_REAL_CORE=1", "APTRACE_NO_MDEV=1"]
        );
        assert!(core_vars(&Core::Model { why: "x".into() }).is_empty());
    }
}
