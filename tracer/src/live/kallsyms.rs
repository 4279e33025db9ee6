//! `/proc/kallsyms`: the module's functions and text range, variables where the kernel lists
//! them (CONFIG_KALLSYMS_ALL), and a [`Symbolizer`] for call sites and stack frames.
//!
//! Reading kallsyms takes seconds under emulated s390x: read it once per module load.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::Symbolizer;
use crate::recording::Symbol;

/// One line of kallsyms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sym {
    pub addr: u64,
    /// `t`, `T`, `d`, `b`, ...
    pub kind: char,
    pub name: String,
    /// `[module]` without brackets, empty for vmlinux.
    pub module: String,
}

impl Sym {
    pub fn is_text(&self) -> bool {
        matches!(self.kind, 't' | 'T' | 'w' | 'W')
    }
}

/// The parsed symbol table.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    /// Text symbols sorted by address (for the symbolizer).
    text: Vec<Sym>,
    /// Every symbol of the watched module and a few kernel ones, by name.
    by_name: HashMap<String, Vec<Sym>>,
    /// True when every address read as 0 (not root, or kptr_restrict).
    pub zeroed: bool,
}

impl Kallsyms {
    /// Parses kallsyms text. `module` limits the by-name index to that module plus the
    /// kernel's own symbols named in `kernel_names` (kvmalloc, vfree, ...).
    pub fn parse(text: &str, module: &str, kernel_names: &[&str]) -> Kallsyms {
        Kallsyms::parse_modules(text, &[module], kernel_names)
    }

    /// As [`Kallsyms::parse`], indexing every symbol of each of `modules` (the profile's
    /// module first, then those of its rows of other modules, such as the VFIO core's).
    pub fn parse_modules(text: &str, modules: &[&str], kernel_names: &[&str]) -> Kallsyms {
        let mut k = Kallsyms::default();
        let mut nonzero = false;
        let mut any = false;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let module_name = it
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string())
                .unwrap_or_default();
            any = true;
            nonzero |= addr != 0;
            let kind = kind.chars().next().unwrap_or('?');
            let sym = Sym {
                addr,
                kind,
                name: name.to_string(),
                module: module_name,
            };
            let keep_name = modules.contains(&sym.module.as_str())
                || (sym.module.is_empty() && kernel_names.contains(&sym.name.as_str()));
            if keep_name {
                k.by_name
                    .entry(sym.name.clone())
                    .or_default()
                    .push(sym.clone());
            }
            if sym.is_text() {
                k.text.push(sym);
            }
        }
        k.zeroed = any && !nonzero;
        k.text.sort_by_key(|s| s.addr);
        k
    }

    /// A symbol of the module (or a listed kernel symbol) by exact name.
    pub fn lookup(&self, name: &str, module: &str) -> Option<&Sym> {
        self.by_name.get(name)?.iter().find(|s| s.module == module)
    }

    /// Text symbols of `module` whose name is `name` or a compiler clone of it.
    pub fn functions_of<'a>(&'a self, module: &'a str) -> impl Iterator<Item = &'a Sym> + 'a {
        self.by_name
            .values()
            .flatten()
            .filter(move |s| s.module == module && s.is_text())
    }

    /// `[start, end)` of the module's text: from its first text symbol to the first symbol
    /// after its last one (or one page past it).
    pub fn text_range(&self, module: &str) -> Option<(u64, u64)> {
        let mut first = None;
        let mut last_idx = None;
        for (i, s) in self.text.iter().enumerate() {
            if s.module == module {
                first.get_or_insert(s.addr);
                last_idx = Some(i);
            }
        }
        let start = first?;
        let li = last_idx?;
        let last = self.text[li].addr;
        let end = self.text[li + 1..]
            .iter()
            .find(|s| s.addr > last)
            .map(|s| s.addr.min(last + 0x10000))
            .unwrap_or(last + 0x1000);
        Some((start, end))
    }

    /// The module's function symbols for a recording header (sizes from the next symbol).
    pub fn module_symbols(&self, module: &str) -> Vec<Symbol> {
        let mut out = Vec::new();
        for (i, s) in self.text.iter().enumerate() {
            if s.module != module {
                continue;
            }
            let next = self.text[i + 1..].iter().find(|n| n.addr > s.addr);
            let size = next
                .map(|n| (n.addr - s.addr).min(u32::MAX as u64) as u32)
                .unwrap_or(0);
            out.push(Symbol {
                addr: s.addr,
                size,
                name: s.name.clone(),
            });
        }
        out
    }

    fn containing(&self, addr: u64) -> Option<&Sym> {
        let i = self.text.partition_point(|s| s.addr <= addr);
        let s = self.text.get(i.checked_sub(1)?)?;
        // Beyond 1 MiB past a symbol it is not that function any more.
        (addr - s.addr < 0x10_0000).then_some(s)
    }
}

impl Symbolizer for Kallsyms {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        self.containing(addr).map(|s| Arc::from(s.name.as_str()))
    }

    fn frame(&self, addr: u64) -> Arc<str> {
        match self.containing(addr) {
            Some(s) if s.module.is_empty() => Arc::from(format!("{}+{:#x}", s.name, addr - s.addr)),
            Some(s) => Arc::from(format!("{}+{:#x} [{}]", s.name, addr - s.addr, s.module)),
            None => Arc::from(format!("{addr:#x}")),
        }
    }
}

/// Lines of tracefs `available_filter_functions` (`name [module]`; newer kernels may add
/// an address column in `available_filter_functions_addrs`, not read here) that belong to
/// `module`.
pub fn filter_functions(text: &str, module: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let m = it.next().unwrap_or("");
        if m.trim_start_matches('[').trim_end_matches(']') == module {
            out.push(name.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81234560 T __kvmalloc_node_noprof
ffffffff81234600 T vfree
ffffffffc0a01000 t vfio_ap_mdev_probe\t[vfio_ap]
ffffffffc0a01200 t vfio_ap_set_state.isra.0\t[vfio_ap]
ffffffffc0a01400 t vfio_ap_get_state\t[vfio_ap]
ffffffffc0a03000 b matrix_dev\t[vfio_ap]
ffffffffc0b00000 t other_fn\t[other]
";

    #[test]
    fn module_symbols_and_range() {
        let k = Kallsyms::parse(KALLSYMS, "vfio_ap", &["__kvmalloc_node_noprof"]);
        assert!(!k.zeroed);
        assert_eq!(
            k.lookup("matrix_dev", "vfio_ap").unwrap().addr,
            0xffffffffc0a03000
        );
        assert_eq!(
            k.lookup("__kvmalloc_node_noprof", "").unwrap().addr,
            0xffffffff81234560
        );
        assert!(k.lookup("vfree", "").is_none(), "not asked for");
        assert_eq!(
            k.text_range("vfio_ap"),
            Some((0xffffffffc0a01000, 0xffffffffc0a11400))
        );
        assert_eq!(
            k.function_at(0xffffffffc0a01010).as_deref(),
            Some("vfio_ap_mdev_probe")
        );
        assert_eq!(
            &*k.frame(0xffffffffc0a01410),
            "vfio_ap_get_state+0x10 [vfio_ap]"
        );
        assert_eq!(k.module_symbols("vfio_ap").len(), 3);
    }

    #[test]
    fn zeroed_addresses_are_noticed() {
        let k = Kallsyms::parse(
            "0000000000000000 T _stext\n0000000000000000 t f [m]\n",
            "m",
            &[],
        );
        assert!(k.zeroed);
    }

    #[test]
    fn filter_functions_of_a_module() {
        let t = "schedule\nvfio_ap_mdev_probe [vfio_ap]\nvfio_ap_set_state.isra.0 [vfio_ap]\nx [other]\n";
        assert_eq!(
            filter_functions(t, "vfio_ap"),
            vec!["vfio_ap_mdev_probe", "vfio_ap_set_state.isra.0"]
        );
    }
}
