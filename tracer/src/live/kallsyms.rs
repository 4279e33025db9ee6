//! `/proc/kallsyms`: the module's functions and text range, variables where the kernel lists
//! them (CONFIG_KALLSYMS_ALL), and a [`Symbolizer`] for call sites and stack frames.
//!
//! Reading kallsyms takes seconds under emulated s390x: read it once per module load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
        is_text(self.kind)
    }
}

/// A text symbol of the sorted table: its name in [`Kallsyms::names`], its module an index
/// into [`Kallsyms::modules`]. A kernel has some 100 000 of them: two strings each took
/// longer than the kernel's own writing of kallsyms.
#[derive(Clone, Copy, Debug)]
struct TextSym {
    addr: u64,
    name_at: u32,
    name_len: u32,
    /// Index into `modules`; 0 is vmlinux (the empty name).
    module: u32,
}

/// The parsed symbol table.
#[derive(Clone, Debug)]
pub struct Kallsyms {
    /// Text symbols sorted by address (for the symbolizer).
    text: Vec<TextSym>,
    /// Every text symbol's name, back to back.
    names: String,
    /// Module names, vmlinux's (empty) first.
    modules: Vec<String>,
    /// Every symbol of the watched module and a few kernel ones, by name.
    by_name: HashMap<String, Vec<Sym>>,
    /// True when every address read as 0 (not root, or kptr_restrict).
    pub zeroed: bool,
    /// Function names already handed out, by text symbol.
    named: Named,
}

/// The names [`Symbolizer::function_at`] gave, by index into [`Kallsyms::text`]: the agent
/// names the function of every record it decodes, and a new string each time was an
/// allocation, a copy and a free per event (while a few functions make nearly every
/// record). A copy of the table starts without them.
#[derive(Debug, Default)]
struct Named(Mutex<HashMap<u32, Arc<str>>>);

impl Clone for Named {
    fn clone(&self) -> Named {
        Named::default()
    }
}

impl Default for Kallsyms {
    fn default() -> Kallsyms {
        Kallsyms {
            text: Vec::new(),
            names: String::new(),
            modules: vec![String::new()],
            by_name: HashMap::new(),
            zeroed: false,
            named: Named::default(),
        }
    }
}

/// A kallsyms line's fields (`addr kind name` and a tab before `[module]`), split on ASCII
/// blanks byte by byte: `split_whitespace` decodes every character, which made parsing cost
/// as much as the kernel's writing of the text.
fn fields(line: &str) -> impl Iterator<Item = &str> {
    let bytes = line.as_bytes();
    bytes
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
        .map(move |f| {
            // Split at ASCII bytes, so at character boundaries.
            let at = f.as_ptr() as usize - bytes.as_ptr() as usize;
            &line[at..at + f.len()]
        })
}

/// The record of the kallsyms line at byte `at` of `text` (address, kind, name, `[module]`
/// or ""; None for a line that is not one), and where the next line starts. The kernel
/// writes `%px %c %s\t[%s]`: where the address has its 16 digits the fields are where they
/// must be and one pass over the line's bytes finds the name's end and the line's; any
/// other line is split field by field.
fn next_record(text: &str, at: usize) -> (Option<(u64, char, &str, &str)>, usize) {
    let b = text.as_bytes();
    let n = b.len();
    if at + 19 < n && b[at + 16] == b' ' && b[at + 18] == b' ' && b[at + 17].is_ascii_alphabetic() {
        if let Some(addr) = hex_u64(&text[at..at + 16]) {
            let name_at = at + 19;
            let mut j = name_at;
            while j < n && !matches!(b[j], b'\t' | b' ' | b'\n') {
                j += 1;
            }
            let name = &text[name_at..j];
            let mut module = "";
            if j < n && b[j] != b'\n' {
                let module_at = j + 1;
                j = module_at;
                while j < n && b[j] != b'\n' {
                    j += 1;
                }
                module = text[module_at..j].trim();
            }
            if !name.is_empty() {
                return (Some((addr, char::from(b[at + 17]), name, module)), j + 1);
            }
        }
    }
    let end = text[at..].find('\n').map_or(n, |i| at + i);
    let mut it = fields(&text[at..end]);
    let record = (|| {
        let (addr, kind, name) = (hex_u64(it.next()?)?, it.next()?, it.next()?);
        let kind = kind.chars().next()?;
        Some((addr, kind, name, it.next().unwrap_or("")))
    })();
    (record, end + 1)
}

/// A hexadecimal address; None for anything else (or more than 16 digits).
fn hex_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for b in s.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

fn is_text(kind: char) -> bool {
    matches!(kind, 't' | 'T' | 'w' | 'W')
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
        // Tested for each of the kernel's own symbols: a binary search, not a walk.
        let mut kernel_names = kernel_names.to_vec();
        kernel_names.sort_unstable();
        // Modules' symbols come together: the last one's index saves most lookups.
        let mut last_module = 0u32;
        let mut at = 0;
        while at < text.len() {
            let (record, next) = next_record(text, at);
            at = next;
            let Some((addr, kind, name, module)) = record else {
                continue;
            };
            let module = module.trim_start_matches('[').trim_end_matches(']');
            any = true;
            nonzero |= addr != 0;
            let keep_name = modules.contains(&module)
                || (module.is_empty() && kernel_names.binary_search(&name).is_ok());
            if keep_name {
                k.by_name.entry(name.to_string()).or_default().push(Sym {
                    addr,
                    kind,
                    name: name.to_string(),
                    module: module.to_string(),
                });
            }
            if is_text(kind) {
                if k.modules[last_module as usize] != module {
                    last_module = k.module_index(module).unwrap_or_else(|| {
                        k.modules.push(module.to_string());
                        (k.modules.len() - 1) as u32
                    });
                }
                let module = last_module;
                k.text.push(TextSym {
                    addr,
                    name_at: k.names.len() as u32,
                    name_len: name.len() as u32,
                    module,
                });
                k.names.push_str(name);
            }
        }
        k.zeroed = any && !nonzero;
        k.text.sort_by_key(|s| s.addr);
        k
    }

    fn name(&self, s: &TextSym) -> &str {
        let at = s.name_at as usize;
        &self.names[at..at + s.name_len as usize]
    }

    /// The index of `module` among the text symbols' modules (vmlinux: the empty name).
    fn module_index(&self, module: &str) -> Option<u32> {
        self.modules
            .iter()
            .position(|m| m == module)
            .map(|i| i as u32)
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
        let m = self.module_index(module)?;
        let mut first = None;
        let mut last_idx = None;
        for (i, s) in self.text.iter().enumerate() {
            if s.module == m {
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
        let Some(m) = self.module_index(module) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, s) in self.text.iter().enumerate() {
            if s.module != m {
                continue;
            }
            let next = self.text[i + 1..].iter().find(|n| n.addr > s.addr);
            let size = next
                .map(|n| (n.addr - s.addr).min(u32::MAX as u64) as u32)
                .unwrap_or(0);
            out.push(Symbol {
                addr: s.addr,
                size,
                name: self.name(s).to_string(),
            });
        }
        out
    }

    fn containing(&self, addr: u64) -> Option<&TextSym> {
        self.containing_at(addr).map(|i| &self.text[i])
    }

    /// The index in `text` of the symbol containing `addr`.
    fn containing_at(&self, addr: u64) -> Option<usize> {
        let i = self
            .text
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        // Beyond 1 MiB past a symbol it is not that function any more.
        (addr - self.text[i].addr < 0x10_0000).then_some(i)
    }
}

impl Symbolizer for Kallsyms {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        let i = self.containing_at(addr)?;
        // A poisoned lock still holds good names: a panic cannot leave one half made.
        let mut named = self.named.0.lock().unwrap_or_else(|e| e.into_inner());
        let name = named
            .entry(i as u32)
            .or_insert_with(|| Arc::from(self.name(&self.text[i])));
        Some(name.clone())
    }

    fn frame(&self, addr: u64) -> Arc<str> {
        match self.containing(addr) {
            Some(s) if s.module == 0 => Arc::from(format!("{}+{:#x}", self.name(s), addr - s.addr)),
            Some(s) => Arc::from(format!(
                "{}+{:#x} [{}]",
                self.name(s),
                addr - s.addr,
                self.modules[s.module as usize]
            )),
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
        // A function's name is made once and shared by every later record of it.
        let (a, b) = (
            k.function_at(0xffffffffc0a01010).unwrap(),
            k.function_at(0xffffffffc0a01020).unwrap(),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            k.function_at(0xffffffffc0a01410).as_deref(),
            Some("vfio_ap_get_state"),
            "another function keeps its own name"
        );
        assert!(k.function_at(0x1000).is_none(), "below every symbol");
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

    #[test]
    fn lines_in_the_kernels_layout_and_others_parse_alike() {
        fn one(line: &str) -> Option<(u64, char, &str, &str)> {
            next_record(line, 0).0
        }
        assert_eq!(
            one("ffffffffc0a01000 t vfio_ap_mdev_probe\t[vfio_ap]\n"),
            Some((
                0xffff_ffff_c0a0_1000,
                't',
                "vfio_ap_mdev_probe",
                "[vfio_ap]"
            ))
        );
        assert_eq!(
            one("ffffffff81234600 T vfree"),
            Some((0xffff_ffff_8123_4600, 'T', "vfree", ""))
        );
        // A 32-bit kernel's addresses, or blanks where a tab was: field by field.
        assert_eq!(
            one("c0a01000 t vfio_ap_mdev_probe [vfio_ap]"),
            Some((0xc0a0_1000, 't', "vfio_ap_mdev_probe", "[vfio_ap]"))
        );
        assert_eq!(one("ffffffff81234600 T"), None);
        assert_eq!(one("not a symbol at all\n"), None);
        // The next line starts after the newline, whichever way this one was read.
        let two = "ffffffff81234600 T vfree\nc0a01000 t f [m]\nffffffff81234700 T kfree";
        let (_, second) = next_record(two, 0);
        let (r, third) = next_record(two, second);
        assert_eq!(r, Some((0xc0a0_1000, 't', "f", "[m]")));
        assert_eq!(next_record(two, third).0.map(|r| r.2), Some("kfree"));
        assert_eq!(hex_u64("ffffffffc0a01000"), Some(0xffff_ffff_c0a0_1000));
        assert_eq!(hex_u64("FF"), Some(0xff));
        for bad in ["", "0x10", "fffffffffffffffff", "g"] {
            assert_eq!(hex_u64(bad), None, "{bad:?}");
        }
        let spaced = KALLSYMS.replace('\t', " ");
        let (a, b) = (
            Kallsyms::parse(KALLSYMS, "vfio_ap", &["vfree"]),
            Kallsyms::parse(&spaced, "vfio_ap", &["vfree"]),
        );
        assert_eq!(a.text_range("vfio_ap"), b.text_range("vfio_ap"));
        assert_eq!(a.lookup("vfree", ""), b.lookup("vfree", ""));
        assert_eq!(
            a.function_at(0xffff_ffff_c0a0_1210).as_deref(),
            Some("vfio_ap_set_state.isra.0")
        );
        assert_eq!(
            &*b.frame(0xffff_ffff_c0a0_1210),
            "vfio_ap_set_state.isra.0+0x10 [vfio_ap]"
        );
    }
}
