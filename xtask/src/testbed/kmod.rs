//! Builds the model module (or another module source) against an unpacked kernel, and reads
//! struct offsets from its debug info with pahole, as a user of a BTF-less kernel would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::kernels::Kernel;
use super::{copy_tree, run_cmd, Arch};

pub struct BuiltModule {
    pub ko: PathBuf,
    pub has_btf: bool,
    /// offset of `mdevs_lock` in `struct ap_matrix_dev`, from pahole (None if the module has
    /// no such struct)
    pub mdevs_lock_off: Option<u64>,
    /// offset of `mig_data` in `struct ap_matrix_mdev`
    pub mig_data_off: Option<u64>,
}

pub fn build(cache: &Path, k: &Kernel, src: &Path, name: &str) -> Result<BuiltModule> {
    let out = cache.join("build").join(k.id()).join(name);
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
    c.arg("modules");
    run_cmd(&mut c).with_context(|| format!("building {name} for {}", k.id()))?;
    let ko = out.join(format!("{name}.ko"));
    if !ko.exists() {
        bail!("{} was not built", ko.display());
    }
    let has_btf = section_names(&ko)?.iter().any(|s| s == ".BTF");
    Ok(BuiltModule {
        mdevs_lock_off: pahole_offset(&ko, "ap_matrix_dev", "mdevs_lock")?,
        mig_data_off: pahole_offset(&ko, "ap_matrix_mdev", "mig_data")?,
        ko,
        has_btf,
    })
}

fn section_names(elf: &Path) -> Result<Vec<String>> {
    let out = Command::new("readelf")
        .arg("-S")
        .arg("-W")
        .arg(elf)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
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
