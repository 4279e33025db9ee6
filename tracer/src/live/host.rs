//! The files of the traced host that resolution reads, under a root directory (`/` live,
//! a fixture tree in tests).

use std::fs;
use std::path::{Path, PathBuf};

/// A view of a host's /proc, /sys and /lib/modules.
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Host {
        Host::live()
    }
}

impl Host {
    /// The running system.
    pub fn live() -> Host {
        Host {
            root: PathBuf::from("/"),
        }
    }

    /// A fixture tree laid out like `/`.
    pub fn at(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    pub fn read_string(&self, p: &str) -> Option<String> {
        fs::read_to_string(self.path(p)).ok()
    }

    /// `net.core.bpf_jit_enable`, trimmed; None where the kernel has no BPF JIT (the
    /// sysctl exists only then: Debian's s390x kernels have none).
    pub fn bpf_jit_enable(&self) -> Option<String> {
        self.read_string("/proc/sys/net/core/bpf_jit_enable")
            .map(|s| s.trim().to_string())
    }

    /// Whether this kernel compiles BPF programs. Where it interprets them, the shared
    /// programs' cookie lookup and computed slot would cost each call about twenty
    /// interpreted instructions more than a slot's own programs do: there each function
    /// keeps its own pair, verified once at start.
    pub fn jits_bpf(&self) -> bool {
        self.bpf_jit_enable().is_some_and(|v| v != "0")
    }

    pub fn exists(&self, p: &str) -> bool {
        self.path(p).exists()
    }

    pub fn kernel_release(&self) -> String {
        self.read_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    }

    pub fn kallsyms(&self) -> Option<String> {
        self.read_string("/proc/kallsyms")
    }

    /// The tracefs mount that lists filterable functions.
    pub fn tracefs(&self) -> Option<String> {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .find(|d| self.exists(&format!("{d}/available_filter_functions")))
            .map(str::to_string)
    }

    /// tracefs is there but this user may not look inside (mode 0700 for root).
    pub fn tracefs_unreadable(&self) -> bool {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .any(|d| {
                fs::read_dir(self.path(d))
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            })
    }

    pub fn available_filter_functions(&self) -> Option<String> {
        self.read_string(&format!("{}/available_filter_functions", self.tracefs()?))
    }

    /// `/sys/module/NAME/initstate` says `live`.
    pub fn module_live(&self, module: &str) -> bool {
        self.read_string(&format!("/sys/module/{module}/initstate"))
            .is_some_and(|s| s.trim() == "live")
    }

    /// Address of a loaded module's section from `/sys/module/NAME/sections/SECTION`.
    pub fn module_section(&self, module: &str, section: &str) -> Option<u64> {
        let s = self.read_string(&format!("/sys/module/{module}/sections/{section}"))?;
        crate::model::hex_u64::parse(s.trim()).ok()
    }

    pub fn vmlinux_btf(&self) -> Option<Vec<u8>> {
        fs::read(self.path("/sys/kernel/btf/vmlinux")).ok()
    }

    pub fn module_btf(&self, module: &str) -> Option<Vec<u8>> {
        fs::read(self.path(&format!("/sys/kernel/btf/{module}"))).ok()
    }

    /// The kernel's build configuration (`/proc/config.gz` is not decompressed here;
    /// `/boot/config-RELEASE` is read when present).
    pub fn kernel_config(&self) -> Option<String> {
        self.read_string(&format!("/boot/config-{}", self.kernel_release()))
    }

    /// The module file for `module` under /lib/modules/RELEASE (`-` and `_` are the same
    /// in module names), `.ko` or `.ko.xz`.
    pub fn find_module_file(&self, module: &str) -> Option<PathBuf> {
        let dir = self.path(&format!("/lib/modules/{}", self.kernel_release()));
        let want = module.replace('-', "_");
        find_file(
            &dir,
            &|name: &str| {
                let stem = name
                    .strip_suffix(".ko")
                    .or_else(|| name.strip_suffix(".ko.xz"))
                    .or_else(|| name.strip_suffix(".ko.zst"));
                stem.is_some_and(|s| s.replace('-', "_") == want)
            },
            8,
        )
    }
}

fn find_file(dir: &Path, matches: &dyn Fn(&str) -> bool, depth: u32) -> Option<PathBuf> {
    if depth == 0 {
        return None;
    }
    let mut subdirs = Vec::new();
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            subdirs.push(p);
        } else if p.file_name().and_then(|n| n.to_str()).is_some_and(matches) {
            return Some(p);
        }
    }
    subdirs.sort();
    subdirs
        .into_iter()
        .find_map(|d| find_file(&d, matches, depth - 1))
}

/// Reads a module file, decompressing `.ko.xz` / `.ko.zst` with the `xz` / `zstd` tools.
pub fn read_module_file(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        None => fs::read(path).map_err(|e| format!("cannot read {name}: {e}")),
        Some(tool) => {
            let out = std::process::Command::new(tool)
                .args(["-dc"])
                .arg(path)
                .output()
                .map_err(|e| {
                    format!("cannot run `{tool} -dc {name}` to decompress the module: {e}")
                })?;
            if !out.status.success() {
                return Err(format!("`{tool} -dc {name}` failed"));
            }
            Ok(out.stdout)
        }
    }
}

/// The guest name in a QEMU command line (NUL-separated `/proc/PID/cmdline`):
/// `-name guest=NAME,debug-threads=on` or `-name NAME`.
pub fn guest_name_from_cmdline(cmdline: &[u8]) -> Option<String> {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let pos = args
        .iter()
        .position(|a| *a == b"-name" || *a == b"--name")?;
    let value = String::from_utf8_lossy(args.get(pos + 1)?).to_string();
    let mut first = None;
    // QEMU's option syntax: commas are escaped by doubling.
    let value = value.replace(",,", "\u{1}");
    for part in value.split(',') {
        let part = part.replace('\u{1}', ",");
        if let Some(v) = part.strip_prefix("guest=") {
            return Some(v.to_string()).filter(|s| !s.is_empty());
        }
        if first.is_none() && !part.contains('=') {
            first = Some(part);
        }
    }
    first.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names_from_qemu_command_lines() {
        let c = b"qemu-system-s390x\0-name\0guest=vm1,debug-threads=on\0-m\x001024\0";
        assert_eq!(guest_name_from_cmdline(c).as_deref(), Some("vm1"));
        assert_eq!(
            guest_name_from_cmdline(b"qemu\0-name\0plain\0").as_deref(),
            Some("plain")
        );
        assert_eq!(
            guest_name_from_cmdline(b"qemu\0-name\0a,,b\0").as_deref(),
            Some("a,b")
        );
        assert_eq!(guest_name_from_cmdline(b"mdevctl\0start\0"), None);
    }
}
