//! The guest: an initramfs (busybox, the kernel's 9p modules, testbed/guest/init and lib.sh,
//! the model module, a job) and a QEMU boot under TCG with a 9p share for the files that come out.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cpio::Cpio;
use super::kernels::{find_module, vfio_core, Core, Kernel};
use super::Arch;

pub const MARK: &str = "APTRACE-TESTBED: ";

/// What one boot carries besides the base.
#[derive(Default)]
pub struct Job {
    /// extra guest directories (created first)
    pub dirs: Vec<String>,
    /// guest path -> host file
    pub files: Vec<(String, PathBuf, u32)>,
    /// guest path -> contents
    pub texts: Vec<(String, String, u32)>,
    /// guest dir -> host dir (recursive)
    pub trees: Vec<(String, PathBuf)>,
}

/// The kernel's 9p stack (and virtio_pci where it is a module), and where the model uses the
/// kernel's own VFIO core its modules (kernels::vfio_core), decompressed, in load order.
fn guest_modules(k: &Kernel) -> Result<Vec<(String, Vec<u8>)>> {
    let mut order = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    fn add(
        k: &Kernel,
        name: &str,
        seen: &mut std::collections::BTreeSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = find_module(&k.module_dir(), name) else {
            return Ok(());
        }; // built in
        let depends =
            crate::cmd::capture(Command::new("modinfo").args(["-F", "depends"]).arg(&path))?;
        for d in depends.trim().split(',').filter(|d| !d.is_empty()) {
            add(k, d, seen, order)?;
        }
        let data = if path.extension().is_some_and(|x| x == "xz") {
            let out = Command::new("xz").arg("-dc").arg(&path).output()?;
            if !out.status.success() {
                bail!("xz -dc {}", path.display());
            }
            out.stdout
        } else {
            fs::read(&path)?
        };
        order.push((format!("{name}.ko"), data));
        Ok(())
    }
    let mut names = vec!["virtio_pci", "9pnet_virtio", "9p"];
    if let Core::Real { modules, .. } = vfio_core(k) {
        names.extend(modules);
    }
    for m in names {
        add(k, m, &mut seen, &mut order)?;
    }
    Ok(order)
}

pub fn initramfs(root: &Path, k: &Kernel, busybox: &Path, ko: &Path, job: &Job) -> Result<Vec<u8>> {
    let mut c = Cpio::new();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "out",
        "lib",
        "lib/modules",
    ] {
        c.dir(d);
    }
    c.file("bin/busybox", 0o755, &fs::read(busybox)?);
    c.char_dev("dev/console", 0o600, 5, 1);
    c.char_dev("dev/null", 0o666, 1, 3);
    c.file("init", 0o755, &fs::read(root.join("testbed/guest/init"))?);
    // the helpers every job and scenario sources as /lib.sh
    c.file(
        "lib.sh",
        0o644,
        &fs::read(root.join("testbed/guest/lib.sh"))?,
    );
    c.file("model.ko", 0o644, &fs::read(ko)?);
    let mut order = String::new();
    for (name, data) in guest_modules(k)? {
        c.file(&format!("lib/modules/{name}"), 0o644, &data);
        order += &format!("{name}\n");
    }
    c.file("lib/modules/load.order", 0o644, order.as_bytes());
    for d in &job.dirs {
        c.dir(d);
    }
    for (g, h, perm) in &job.files {
        c.file(
            g,
            *perm,
            &fs::read(h).with_context(|| format!("reading {}", h.display()))?,
        );
    }
    for (g, t, perm) in &job.texts {
        c.file(g, *perm, t.as_bytes());
    }
    for (g, h) in &job.trees {
        c.dir(g);
        c.tree(h, g)?;
    }
    Ok(c.finish())
}

pub struct BootResult {
    pub console: String,
    pub timed_out: bool,
    pub ended_on_marker: bool,
    pub secs: f64,
}

/// Boots under TCG (never KVM), console to `log`, the 9p share `share` as mount tag `out`.
/// Ends QEMU when `kill_marker` shows on the console, or at the timeout.
pub fn boot(
    k: &Kernel,
    initrd: &Path,
    share: &Path,
    log: &Path,
    timeout: Duration,
    kill_marker: Option<&str>,
) -> Result<BootResult> {
    boot_with(k, initrd, share, log, timeout, kill_marker, &[])
}

/// [`boot`] with extra QEMU arguments (the benchmarks' `-icount shift=0 -smp 1`).
pub fn boot_with(
    k: &Kernel,
    initrd: &Path,
    share: &Path,
    log: &Path,
    timeout: Duration,
    kill_marker: Option<&str>,
    extra: &[&str],
) -> Result<BootResult> {
    let fsdev = format!("local,id=out,path={},security_model=none", share.display());
    let mut c = Command::new("nice");
    c.arg("-n").arg("5");
    match k.arch {
        Arch::X86_64 => {
            c.arg("qemu-system-x86_64")
                .args(["-machine", "accel=tcg", "-cpu", "max"]);
            c.arg("-append").arg("console=ttyS0 panic=-1 loglevel=4");
            c.args(["-device", "virtio-9p-pci,fsdev=out,mount_tag=out"]);
        }
        Arch::S390x => {
            c.arg("qemu-system-s390x").args([
                "-machine",
                "s390-ccw-virtio,accel=tcg",
                "-cpu",
                "max",
            ]);
            c.arg("-append").arg("panic=-1 loglevel=4");
            c.args(["-device", "virtio-9p-ccw,fsdev=out,mount_tag=out"]);
        }
    }
    c.args(["-m", "1G", "-smp", "2", "-nographic", "-no-reboot"]);
    // e.g. APTRACE_QEMU_EXTRA="-icount shift=0" (the kernel benchmarks: guest time counts
    // instructions, not the shared host's load)
    if let Ok(x) = std::env::var("APTRACE_QEMU_EXTRA") {
        c.args(x.split_whitespace());
    }
    c.args(extra);
    c.arg("-kernel").arg(k.vmlinuz()).arg("-initrd").arg(initrd);
    c.arg("-fsdev").arg(fsdev);
    let out = File::create(log)?;
    c.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    let start = Instant::now();
    let mut child = c.spawn().context("starting QEMU")?;
    let mut timed_out = false;
    let mut ended_on_marker = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        if let Some(m) = kill_marker {
            if read_lossy(log).contains(m) {
                sleep(Duration::from_millis(500));
                let _ = child.kill();
                let _ = child.wait();
                ended_on_marker = true;
                break;
            }
        }
        sleep(Duration::from_millis(200));
    }
    Ok(BootResult {
        console: read_lossy(log),
        timed_out,
        ended_on_marker,
        secs: start.elapsed().as_secs_f64(),
    })
}

pub fn read_lossy(p: &Path) -> String {
    let mut v = Vec::new();
    if let Ok(mut f) = File::open(p) {
        let _ = f.read_to_end(&mut v);
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// Console lines carrying the testbed marker, without the marker.
pub fn markers(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| {
            l.find(MARK)
                .map(|i| l[i + MARK.len()..].trim_end().to_string())
        })
        .collect()
}
