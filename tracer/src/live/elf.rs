//! A module file's symbol table: the section and offset of a variable, for kernels whose
//! kallsyms lists no module variables (no CONFIG_KALLSYMS_ALL, as Debian's s390x 6.1).
//! The address is `/sys/module/NAME/sections/<section>` + the symbol's value.

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

/// Finds `name` in the symbol table of an ELF64 relocatable object, either byte order.
pub fn find_symbol(data: &[u8], name: &str) -> Result<SymbolLocation, ElfError> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(ElfError::NotElf64);
    }
    let big = data[5] == 2;
    let get = |off: usize, n: usize| data.get(off..off + n).ok_or(ElfError::Truncated);
    let u16_at = |off: usize| -> Result<u16, ElfError> {
        let b: [u8; 2] = get(off, 2)?.try_into().expect("2");
        Ok(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |off: usize| -> Result<u32, ElfError> {
        let b: [u8; 4] = get(off, 4)?.try_into().expect("4");
        Ok(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let u64_at = |off: usize| -> Result<u64, ElfError> {
        let b: [u8; 8] = get(off, 8)?.try_into().expect("8");
        Ok(if big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    };
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    struct Sh {
        name: u32,
        kind: u32,
        offset: usize,
        size: usize,
        link: u32,
        entsize: usize,
    }
    let sh = |i: usize| -> Result<Sh, ElfError> {
        let b = shoff + i * shentsize;
        Ok(Sh {
            name: u32_at(b)?,
            kind: u32_at(b + 4)?,
            offset: u64_at(b + 0x18)? as usize,
            size: u64_at(b + 0x20)? as usize,
            link: u32_at(b + 0x28)?,
            entsize: u64_at(b + 0x38)? as usize,
        })
    };
    let cstr = |off: usize| -> Result<&str, ElfError> {
        let s = data.get(off..).ok_or(ElfError::Truncated)?;
        let end = s.iter().position(|&b| b == 0).ok_or(ElfError::Truncated)?;
        std::str::from_utf8(&s[..end]).map_err(|_| ElfError::Truncated)
    };
    let shstr = sh(shstrndx)?;
    let section_name = |i: usize| -> Result<String, ElfError> {
        let s = sh(i)?;
        Ok(cstr(shstr.offset + s.name as usize)?.to_string())
    };
    for i in 0..shnum {
        let s = sh(i)?;
        if s.kind != 2 {
            continue; // SHT_SYMTAB
        }
        let strtab = sh(s.link as usize)?;
        let ent = if s.entsize == 0 { 24 } else { s.entsize };
        for j in 0..s.size / ent {
            let e = s.offset + j * ent;
            let st_name = u32_at(e)? as usize;
            let st_shndx = u16_at(e + 6)? as usize;
            let st_value = u64_at(e + 8)?;
            if st_name == 0 || cstr(strtab.offset + st_name)? != name {
                continue;
            }
            if st_shndx == 0 || st_shndx >= 0xff00 {
                continue; // undefined or special (COMMON, ABS)
            }
            return Ok(SymbolLocation {
                section: section_name(st_shndx)?,
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
}
