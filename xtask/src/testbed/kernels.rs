//! Debian kernels for the testbed: resolved from apt metadata at run time (private lists,
//! so the host's apt state is left alone), downloaded with `apt-get download`, unpacked with
//! `dpkg -x` and cached under `<cache>/kernels/<arch>-<series>/`.
//!
//! - 6.1: the `linux-image-<arch>` metapackage's newest 6.1 version (bookworm-security for
//!   amd64, bookworm main for s390x, which security does not carry);
//! - 6.12: its newest 6.12 version (bookworm-backports);
//! - headers of the same version, their `-common` package and the amd64 `linux-kbuild`
//!   (the build machine's, also for s390x).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use super::Arch;
use crate::cmd;

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Clone, Debug)]
pub struct Kernel {
    pub arch: Arch,
    pub series: String,
    /// `uname -r` of the kernel, e.g. 6.1.0-50-s390x
    pub kver: String,
    /// the Debian package version
    pub version: String,
    pub root: PathBuf,
}

impl Kernel {
    pub fn id(&self) -> String {
        format!("{}-{}", self.arch.deb(), self.series)
    }
    pub fn kdir(&self) -> PathBuf {
        self.root
            .join("usr/src")
            .join(format!("linux-headers-{}", self.kver))
    }
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.kver))
    }
    pub fn module_dir(&self) -> PathBuf {
        self.root
            .join("lib/modules")
            .join(&self.kver)
            .join("kernel")
    }
}

/// Private apt state for one architecture under `<cache>/apt/<arch>/`.
pub struct Apt {
    cache: PathBuf,
}

/// The Debian mirrors /etc/apt uses (deb822 `.sources` or one-line `sources.list`).
fn mirrors() -> Result<(String, String)> {
    let mut uris = Vec::new();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "sources") {
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                for l in text.lines() {
                    if let Some(rest) = l.trim().strip_prefix("URIs:") {
                        uris.extend(rest.split_whitespace().map(str::to_string));
                    }
                }
            }
        }
    }
    for f in ["/etc/apt/sources.list"] {
        let text = fs::read_to_string(f).unwrap_or_default();
        for l in text.lines() {
            let l = l.trim();
            if l.starts_with("deb ") {
                let toks: Vec<&str> = l.split_whitespace().collect();
                let mut i = 1;
                if toks.get(1).is_some_and(|t| t.starts_with('[')) {
                    while i < toks.len() && !toks[i].ends_with(']') {
                        i += 1;
                    }
                    i += 1;
                }
                if let Some(u) = toks.get(i) {
                    uris.push(u.to_string());
                }
            }
        }
    }
    let main = uris
        .iter()
        .find(|u| !u.contains("security") && u.contains("debian"))
        .cloned()
        .context("no Debian mirror found in /etc/apt")?;
    let sec = uris
        .iter()
        .find(|u| u.contains("security"))
        .cloned()
        .unwrap_or_else(|| format!("{}-security", main.trim_end_matches('/')));
    Ok((main, sec))
}

impl Apt {
    pub fn new(cache: &Path) -> Self {
        Self {
            cache: cache.to_path_buf(),
        }
    }

    fn dir(&self, arch: Arch) -> PathBuf {
        self.cache.join("apt").join(arch.deb())
    }

    pub fn opts(&self, arch: Arch) -> Vec<String> {
        let d = self.dir(arch);
        vec![
            format!(
                "-oDir::Etc::SourceList={}",
                d.join("sources.list").display()
            ),
            "-oDir::Etc::SourceParts=-".into(),
            format!("-oDir::State::Lists={}", d.join("lists").display()),
            format!("-oDir::Cache={}", d.join("cache").display()),
            format!("-oAPT::Architecture={}", arch.deb()),
            format!("-oAPT::Architectures={}", arch.deb()),
            "-oDebug::NoLocking=1".into(),
            "-qq".into(),
        ]
    }

    pub fn cmd(&self, prog: &str, arch: Arch) -> Command {
        let mut c = Command::new(prog);
        c.args(self.opts(arch));
        c
    }

    /// Writes the private sources list and refreshes the lists at most once a day.
    pub fn setup(&self, arch: Arch) -> Result<()> {
        let d = self.dir(arch);
        fs::create_dir_all(d.join("lists/partial"))?;
        fs::create_dir_all(d.join("cache/archives/partial"))?;
        let (main, sec) = mirrors()?;
        let mut s = String::new();
        for suite in ["bookworm", "bookworm-updates", "bookworm-backports"] {
            s += &format!("deb [signed-by={KEYRING}] {main} {suite} main\n");
        }
        if arch == Arch::X86_64 {
            s += &format!("deb [signed-by={KEYRING}] {sec} bookworm-security main\n");
        }
        let list = d.join("sources.list");
        let changed = fs::read_to_string(&list).ok().as_deref() != Some(s.as_str());
        fs::write(&list, &s)?;
        let fresh = fs::read_dir(d.join("lists"))?.flatten().any(|e| {
            e.file_name().to_string_lossy().contains("Packages")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age < Duration::from_secs(86400))
        });
        if changed || !fresh {
            eprintln!("testbed: apt-get update ({})", arch.deb());
            cmd::capture(self.cmd("apt-get", arch).arg("update"))?;
        }
        Ok(())
    }

    fn output(&self, arch: Arch, prog: &str, args: &[&str]) -> Result<String> {
        cmd::capture(self.cmd(prog, arch).args(args))
    }

    /// All versions apt knows of a package (`apt-cache madison`).
    pub fn versions(&self, arch: Arch, pkg: &str) -> Result<Vec<String>> {
        let text = self.output(arch, "apt-cache", &["madison", pkg])?;
        Ok(text
            .lines()
            .filter_map(|l| l.split('|').nth(1))
            .map(|v| v.trim().to_string())
            .collect())
    }

    /// A field of `apt-cache show <spec>` (first stanza).
    pub fn field(&self, arch: Arch, spec: &str, field: &str) -> Result<String> {
        let text = self.output(arch, "apt-cache", &["show", "--no-all-versions", spec])?;
        let key = format!("{field}: ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .map(str::to_string)
            .with_context(|| format!("no {field} in apt-cache show {spec}"))
    }

    pub fn download(&self, arch: Arch, specs: &[String], dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        cmd::capture(
            self.cmd("apt-get", arch)
                .arg("download")
                .args(specs)
                .current_dir(dir),
        )
        .map(drop)
    }
}

fn dep_names(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .map(|d| d.trim().split([' ', '|']).next().unwrap_or("").to_string())
        .collect()
}

/// Compares Debian versions well enough for kernel metapackages (numeric runs compared as
/// numbers; `~` sorts first).
fn version_key(v: &str) -> Vec<(u8, u64, String)> {
    let mut key = Vec::new();
    let mut chars = v.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(d);
                chars.next();
            }
            key.push((1, n.parse().unwrap_or(0), String::new()));
        } else {
            chars.next();
            key.push((if c == '~' { 0 } else { 2 }, 0, c.to_string()));
        }
    }
    key
}

/// The newest `linux-image-<arch>` version in `series` (6.1 or 6.12).
fn meta_version(apt: &Apt, arch: Arch, series: &str) -> Result<String> {
    let mut vs: Vec<String> = apt
        .versions(arch, &format!("linux-image-{}", arch.deb()))?
        .into_iter()
        .filter(|v| v.starts_with(&format!("{series}.")))
        .collect();
    vs.sort_by_key(|v| version_key(v));
    vs.pop()
        .with_context(|| format!("no linux-image-{} {series}.x in apt metadata", arch.deb()))
}

/// Resolves, downloads and unpacks one kernel (cached).
pub fn provision(cache: &Path, apt: &Apt, arch: Arch, series: &str) -> Result<Kernel> {
    let dest = cache
        .join("kernels")
        .join(format!("{}-{series}", arch.deb()));
    if dest.join("KVER").exists() {
        return Ok(Kernel {
            arch,
            series: series.into(),
            kver: fs::read_to_string(dest.join("KVER"))?.trim().into(),
            version: fs::read_to_string(dest.join("VERSION"))?.trim().into(),
            root: dest,
        });
    }
    let meta = meta_version(apt, arch, series)?;
    let img = dep_names(&apt.field(
        arch,
        &format!("linux-image-{}={meta}", arch.deb()),
        "Depends",
    )?)
    .into_iter()
    .find(|d| d.starts_with("linux-image-"))
    .context("metapackage names no linux-image")?;
    let kver = img.trim_start_matches("linux-image-").to_string();
    let hdr = format!("linux-headers-{kver}");
    let ver = apt.field(arch, &hdr, "Version")?;
    let deps = dep_names(&apt.field(arch, &format!("{hdr}={ver}"), "Depends")?);
    let common = deps
        .iter()
        .find(|d| d.ends_with("-common"))
        .context("no -common")?
        .clone();
    let kbuild = deps
        .iter()
        .find(|d| d.starts_with("linux-kbuild"))
        .context("no linux-kbuild")?
        .clone();
    eprintln!(
        "testbed: {} {series}: {img} {hdr}={ver} {common} {kbuild}",
        arch.deb()
    );
    let dl = cache.join("debs").join(format!("{}-{series}", arch.deb()));
    let _ = fs::remove_dir_all(&dl);
    apt.download(
        arch,
        &[
            img.clone(),
            format!("{hdr}={ver}"),
            format!("{common}={ver}"),
        ],
        &dl,
    )?;
    apt.download(Arch::X86_64, &[format!("{kbuild}:amd64={ver}")], &dl)?;

    let tmp = dest.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    for e in fs::read_dir(&dl)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            cmd::capture(Command::new("dpkg").arg("-x").arg(&p).arg(&tmp))?;
        }
    }
    // the arch headers' Makefile includes the common tree by an absolute path
    let mk = tmp.join("usr/src").join(&hdr).join("Makefile");
    let text = fs::read_to_string(&mk)?;
    fs::write(
        &mk,
        text.replace("/usr/src/", &format!("{}/usr/src/", dest.display())),
    )?;
    // absolute symlinks in the header trees point into the final location
    for e in fs::read_dir(tmp.join("usr/src"))?.flatten() {
        for l in fs::read_dir(e.path())?.flatten() {
            if let Ok(t) = fs::read_link(l.path()) {
                if t.is_absolute() {
                    fs::remove_file(l.path())?;
                    std::os::unix::fs::symlink(dest.join(t.strip_prefix("/")?), l.path())?;
                }
            }
        }
    }
    fs::write(tmp.join("KVER"), format!("{kver}\n"))?;
    fs::write(tmp.join("VERSION"), format!("{ver}\n"))?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&tmp, &dest)?;
    provision(cache, apt, arch, series)
}

/// busybox (static) for the guest, from the guest architecture's busybox-static package.
pub fn busybox(cache: &Path, apt: &Apt, arch: Arch) -> Result<PathBuf> {
    let out = cache.join(format!("busybox-{}", arch.deb()));
    if out.exists() {
        return Ok(out);
    }
    let dl = cache.join("debs").join(format!("busybox-{}", arch.deb()));
    let _ = fs::remove_dir_all(&dl);
    apt.download(arch, &["busybox-static".into()], &dl)?;
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("busybox-static not downloaded")?;
    let x = dl.join("x");
    cmd::capture(Command::new("dpkg").arg("-x").arg(&deb).arg(&x))?;
    fs::copy(x.join("bin/busybox"), &out)?;
    Ok(out)
}

/// Which VFIO core drives the series scenarios on a kernel (testbed/README.md's table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Core {
    /// The kernel's own: the model is built with `APTRACE_REAL_CORE=1` (an mdev parent and
    /// driver, `vfio_register_emulated_iommu_dev`) and the guest loads these modules first.
    /// Without `mdev` (a kernel with VFIO but no mdev) also with `APTRACE_NO_MDEV=1`: the
    /// devices are the model's own, registered with `vfio_register_emulated_iommu_dev`.
    Real {
        modules: Vec<&'static str>,
        mdev: bool,
    },
    /// The model's own core (debugfs), and why the kernel's cannot drive it.
    Model { why: String },
}

/// The kernel modules the real core needs, in load order (their own dependencies are
/// loaded before them by the initramfs builder); mdev where the kernel has it.
pub const REAL_CORE_MODULES: [&str; 2] = ["vfio", "vfio_iommu_type1"];

impl Core {
    pub fn is_real(&self) -> bool {
        matches!(self, Core::Real { .. })
    }
    /// `real` or `model`: the guest's `CORE` (testbed/guest/lib.sh).
    pub fn name(&self) -> &'static str {
        if self.is_real() {
            "real"
        } else {
            "model"
        }
    }
}

/// The real core where the kernel ships vfio and vfio_iommu_type1 (Debian's x86_64 6.1 and
/// 6.12 with mdev, s390x 6.12 without); the model core elsewhere, saying which module is
/// missing (s390x 6.1 has no VFIO at all).
pub fn vfio_core(k: &Kernel) -> Core {
    let missing: Vec<&str> = REAL_CORE_MODULES
        .iter()
        .copied()
        .filter(|m| find_module(&k.module_dir(), m).is_none())
        .collect();
    if missing.is_empty() {
        let mdev = find_module(&k.module_dir(), "mdev").is_some();
        let mut modules = REAL_CORE_MODULES.to_vec();
        if mdev {
            modules.push("mdev");
        }
        Core::Real { modules, mdev }
    } else {
        Core::Model {
            why: format!("{} ships no {}", k.id(), missing.join(", ")),
        }
    }
}

/// `NAME.ko` or `NAME.ko.xz` under `dir`, searched recursively.
pub fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_module(&p, name) {
                return Some(f);
            }
        } else {
            let f = e.file_name().to_string_lossy().into_owned();
            if f == format!("{name}.ko") || f == format!("{name}.ko.xz") {
                return Some(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_with(modules: &[&str]) -> (Kernel, PathBuf) {
        let root = std::env::temp_dir().join(format!(
            "aptrace-core-{}-{}",
            std::process::id(),
            modules.join("-")
        ));
        let _ = fs::remove_dir_all(&root);
        let k = Kernel {
            arch: Arch::S390x,
            series: "6.12".into(),
            kver: "6.12.0-test".into(),
            version: "0".into(),
            root: root.clone(),
        };
        let dir = k.module_dir().join("drivers/vfio");
        fs::create_dir_all(dir.join("mdev")).unwrap();
        for m in modules {
            let sub = if *m == "mdev" { "mdev/" } else { "" };
            fs::write(dir.join(format!("{sub}{m}.ko.xz")), b"").unwrap();
        }
        (k, root)
    }

    #[test]
    fn the_core_follows_the_modules_the_kernel_ships() {
        // x86_64 6.1 and 6.12: all three
        let (k, root) = kernel_with(&["vfio", "vfio_iommu_type1", "mdev"]);
        assert_eq!(
            vfio_core(&k),
            Core::Real {
                modules: vec!["vfio", "vfio_iommu_type1", "mdev"],
                mdev: true
            }
        );
        fs::remove_dir_all(root).unwrap();
        // s390x 6.12: no mdev, devices of the model's own
        let (k, root) = kernel_with(&["vfio", "vfio_iommu_type1"]);
        let c = vfio_core(&k);
        assert_eq!(c.name(), "real");
        assert!(matches!(c, Core::Real { mdev: false, .. }));
        fs::remove_dir_all(root).unwrap();
        // s390x 6.1: no VFIO; the model core says what is missing
        let (k, root) = kernel_with(&[]);
        match vfio_core(&k) {
            Core::Model { why } => assert!(why.contains("vfio, vfio_iommu_type1"), "{why}"),
            c => panic!("{c:?}"),
        }
        fs::remove_dir_all(root).unwrap();
    }
}
