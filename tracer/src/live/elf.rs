//! A module file's symbol table: the section and offset of a variable, for kernels whose
//! kallsyms lists no module variables (no CONFIG_KALLSYMS_ALL, as Debian's s390x 6.1).
//! The address is `/sys/module/NAME/sections/<section>` + the symbol's value.

use crate::bytes_reader::{Endian, OutOfBounds, Reader};

/// Where a symbol lives inside the module file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolLocation {
    /// Section name, e.g. `.bss` or `.data`.
    pub section: String,
    /// Offset inside that section.
    pub value: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not a 64-bit ELF file")]
    NotElf64,
    #[error("ELF file truncated")]
    Truncated,
    #[error("no symbol table (stripped module?)")]
    NoSymtab,
    #[error("symbol {0} not found")]
    NotFound(String),
}

impl From<OutOfBounds> for ElfError {
    fn from(_: OutOfBounds) -> ElfError {
        ElfError::Truncated
    }
}

/// `base + index * size`, or Truncated: every term comes from the file.
fn offset(base: u64, index: u64, size: u64) -> Result<usize, ElfError> {
    index
        .checked_mul(size)
        .and_then(|o| o.checked_add(base))
        .and_then(|o| usize::try_from(o).ok())
        .ok_or(ElfError::Truncated)
}

/// A section header, as far as symbol lookup needs it.
struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
    entsize: u64,
}

/// The parts of an ELF64 file that symbol lookup reads.
struct Elf<'a> {
    r: Reader<'a>,
    shoff: u64,
    shentsize: u64,
}

impl Elf<'_> {
    fn section(&self, i: usize) -> Result<Section, ElfError> {
        let b = offset(self.shoff, i as u64, self.shentsize)?;
        let at = |o: usize| b.checked_add(o).ok_or(ElfError::Truncated);
        Ok(Section {
            name: self.r.read_at(at(0)?)?,
            kind: self.r.read_at(at(4)?)?,
            offset: self.r.read_at(at(0x18)?)?,
            size: self.r.read_at(at(0x20)?)?,
            link: self.r.read_at(at(0x28)?)?,
            entsize: self.r.read_at(at(0x38)?)?,
        })
    }

    /// The NUL-terminated string at `base + off`.
    fn cstr(&self, base: u64, off: u64) -> Result<&str, ElfError> {
        let start = offset(base, off, 1)?;
        let s = self.r.data().get(start..).ok_or(ElfError::Truncated)?;
        let end = s.iter().position(|&b| b == 0).ok_or(ElfError::Truncated)?;
        std::str::from_utf8(&s[..end]).map_err(|_| ElfError::Truncated)
    }
}

/// Finds `name` in the symbol table of an ELF64 relocatable object, either byte order.
pub fn find_symbol(data: &[u8], name: &str) -> Result<SymbolLocation, ElfError> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(ElfError::NotElf64);
    }
    let endian = if data[5] == 2 {
        Endian::Big
    } else {
        Endian::Little
    };
    let r = Reader::new(data, endian);
    let elf = Elf {
        shoff: r.read_at(0x28)?,
        shentsize: u64::from(r.read_at::<u16>(0x3a)?),
        r,
    };
    let shnum: u16 = elf.r.read_at(0x3c)?;
    let shstr = elf.section(usize::from(elf.r.read_at::<u16>(0x3e)?))?;
    for i in 0..usize::from(shnum) {
        let s = elf.section(i)?;
        if s.kind != 2 {
            continue; // SHT_SYMTAB
        }
        let strtab = elf.section(s.link as usize)?;
        let ent = if s.entsize == 0 { 24 } else { s.entsize };
        for j in 0..s.size / ent {
            let e = offset(s.offset, j, ent)?;
            let at = |o: usize| e.checked_add(o).ok_or(ElfError::Truncated);
            let st_name: u32 = elf.r.read_at(at(0)?)?;
            let st_shndx: u16 = elf.r.read_at(at(6)?)?;
            let st_value: u64 = elf.r.read_at(at(8)?)?;
            if st_name == 0 || elf.cstr(strtab.offset, u64::from(st_name))? != name {
                continue;
            }
            if st_shndx == 0 || st_shndx >= 0xff00 {
                continue; // undefined or special (COMMON, ABS)
            }
            let section = elf.section(usize::from(st_shndx))?;
            return Ok(SymbolLocation {
                section: elf.cstr(shstr.offset, u64::from(section.name))?.to_string(),
                value: st_value,
            });
        }
        return Err(ElfError::NotFound(name.to_string()));
    }
    Err(ElfError::NoSymtab)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal relocatable ELF64 with .data, .bss, .symtab, .strtab, .shstrtab and one
    /// symbol `sym` at `value` in `.bss`.
    pub fn tiny_ko(big: bool, sym: &str, value: u64) -> Vec<u8> {
        let p16 = |v: u16| {
            if big {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        };
        let p32 = |v: u32| {
            if big {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        };
        let p64 = |v: u64| {
            if big {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        };
        let shstr = b"\0.data\0.bss\0.symtab\0.strtab\0.shstrtab\0".to_vec();
        let mut strtab = b"\0other\0".to_vec();
        let sym_off = strtab.len() as u32;
        strtab.extend_from_slice(sym.as_bytes());
        strtab.push(0);
        let mut symtab = vec![0u8; 24]; // null symbol
        for (n, shndx, v) in [(1u32, 1u16, 0u64), (sym_off, 2, value)] {
            symtab.extend(p32(n));
            symtab.push(0x11);
            symtab.push(0);
            symtab.extend(p16(shndx));
            symtab.extend(p64(v));
            symtab.extend(p64(8));
        }
        let mut body = Vec::new();
        let symtab_off = 64 + body.len();
        body.extend_from_slice(&symtab);
        let strtab_off = 64 + body.len();
        body.extend_from_slice(&strtab);
        let shstr_off = 64 + body.len();
        body.extend_from_slice(&shstr);
        while body.len() % 8 != 0 {
            body.push(0);
        }
        let shoff = 64 + body.len();
        let mut out = b"\x7fELF".to_vec();
        out.push(2);
        out.push(if big { 2 } else { 1 });
        out.push(1);
        out.resize(16, 0);
        out.extend(p16(1)); // ET_REL
        out.extend(p16(if big { 22 } else { 62 }));
        out.extend(p32(1));
        out.extend(p64(0));
        out.extend(p64(0));
        out.extend(p64(shoff as u64));
        out.extend(p32(0));
        out.extend(p16(64));
        out.extend(p16(0));
        out.extend(p16(0));
        out.extend(p16(64));
        out.extend(p16(6));
        out.extend(p16(5));
        assert_eq!(out.len(), 64);
        out.extend_from_slice(&body);
        // name, type, flags, addr, offset, size, link, info, align, entsize
        let sect = |name: u32, kind: u32, off: usize, size: usize, link: u32, entsize: u64| {
            let mut s = Vec::new();
            s.extend(p32(name));
            s.extend(p32(kind));
            s.extend(p64(0));
            s.extend(p64(0));
            s.extend(p64(off as u64));
            s.extend(p64(size as u64));
            s.extend(p32(link));
            s.extend(p32(0));
            s.extend(p64(8));
            s.extend(p64(entsize));
            s
        };
        out.extend(sect(0, 0, 0, 0, 0, 0));
        out.extend(sect(1, 1, 0, 0, 0, 0)); // .data
        out.extend(sect(7, 8, 0, 64, 0, 0)); // .bss
        out.extend(sect(12, 2, symtab_off, symtab.len(), 4, 24)); // .symtab
        out.extend(sect(20, 3, strtab_off, strtab.len(), 0, 0)); // .strtab
        out.extend(sect(28, 3, shstr_off, shstr.len(), 0, 0)); // .shstrtab
        out
    }

    #[test]
    fn finds_a_bss_variable_in_both_byte_orders() {
        for big in [false, true] {
            let ko = tiny_ko(big, "matrix_dev", 0x28);
            assert_eq!(
                find_symbol(&ko, "matrix_dev").unwrap(),
                SymbolLocation {
                    section: ".bss".into(),
                    value: 0x28
                }
            );
            assert_eq!(
                find_symbol(&ko, "nope"),
                Err(ElfError::NotFound("nope".into()))
            );
        }
        assert_eq!(find_symbol(b"not an elf", "x"), Err(ElfError::NotElf64));
    }

    #[test]
    fn offsets_past_the_end_are_truncation_not_a_panic() {
        let ko = tiny_ko(false, "matrix_dev", 0x28);
        // e_shoff, then e_shentsize at its largest.
        for (at, bytes) in [(0x28, vec![0xff; 8]), (0x3a, vec![0xff; 2])] {
            let mut bad = ko.clone();
            bad[at..at + bytes.len()].copy_from_slice(&bytes);
            assert_eq!(find_symbol(&bad, "matrix_dev"), Err(ElfError::Truncated));
        }
        // Every byte cut off the end, and every section header field set to its largest.
        for len in 64..ko.len() {
            let _ = find_symbol(&ko[..len], "matrix_dev");
        }
        let shoff = ko.len() - 6 * 64;
        for at in (shoff..ko.len()).step_by(4) {
            let mut bad = ko.clone();
            bad[at..at + 4].copy_from_slice(&[0xff; 4]);
            let _ = find_symbol(&bad, "matrix_dev");
        }
    }
}
