//! A minimal BTF reader: struct member offsets by name, for vmlinux BTF and a module's split
//! BTF (whose type ids and string offsets continue those of vmlinux). Either byte order.
//! No CO-RE: the offsets are handed to the probes as plain numbers.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF (bad magic)")]
    Magic,
    #[error("BTF truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown BTF kind {0}")]
    Kind(u32),
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// Referenced type for typedef/const/volatile/...; members for struct/union.
    type_ref: u32,
    members: Vec<Member>,
}

#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

/// Parsed BTF, possibly split on top of a base.
#[derive(Clone, Debug, Default)]
pub struct Btf {
    /// Type id of `types[0]` (1 for a base, base count + 1 for split BTF).
    first_id: u32,
    types: Vec<Type>,
    /// String section; offsets below `str_base` resolve in `base_strings`.
    strings: Vec<u8>,
    str_base: u32,
    base: Option<Box<Btf>>,
    by_name: HashMap<String, Vec<u32>>,
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

impl Btf {
    /// Parses a base BTF blob (vmlinux).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::parse_inner(data, None)
    }

    /// Parses a module's split BTF on top of `base` (vmlinux). Without the base, names that
    /// the module shares with vmlinux cannot be read, and those lookups fail.
    pub fn parse_split(data: &[u8], base: Btf) -> Result<Btf, BtfError> {
        Btf::parse_inner(data, Some(base))
    }

    fn parse_inner(data: &[u8], base: Option<Btf>) -> Result<Btf, BtfError> {
        if data.len() < 24 {
            return Err(BtfError::Truncated(data.len()));
        }
        let big = match (
            u16::from_le_bytes([data[0], data[1]]),
            u16::from_be_bytes([data[0], data[1]]),
        ) {
            (MAGIC, _) => false,
            (_, MAGIC) => true,
            _ => return Err(BtfError::Magic),
        };
        let u32_at = |off: usize| -> Result<u32, BtfError> {
            let b: [u8; 4] = data
                .get(off..off + 4)
                .ok_or(BtfError::Truncated(off))?
                .try_into()
                .expect("4 bytes");
            Ok(if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            })
        };
        let hdr_len = u32_at(4)? as usize;
        let type_off = u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let str_start = hdr_len + str_off;
        let strings = data
            .get(str_start..str_start + str_len)
            .ok_or(BtfError::Truncated(str_start + str_len))?
            .to_vec();
        if types_end > data.len() {
            return Err(BtfError::Truncated(types_end));
        }
        let (first_id, str_base) = match &base {
            Some(b) => (
                b.first_id + b.types.len() as u32,
                b.str_base + b.strings.len() as u32,
            ),
            None => (1, 0),
        };
        let mut types = Vec::new();
        let mut off = types_start;
        while off < types_end {
            let name_off = u32_at(off)?;
            let info = u32_at(off + 4)?;
            let size_or_type = u32_at(off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                1 | 14 | 17 => off += 4, // INT, VAR, DECL_TAG
                3 => off += 12,          // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let m_name = u32_at(off)?;
                        let m_type = u32_at(off + 4)?;
                        let m_off = u32_at(off + 8)?;
                        let bit_offset = if kind_flag { m_off & 0xff_ffff } else { m_off };
                        members.push(Member {
                            name_off: m_name,
                            type_id: m_type,
                            bit_offset,
                        });
                        off += 12;
                    }
                }
                6 | 13 => off += 8 * vlen,   // ENUM, FUNC_PROTO
                15 | 19 => off += 12 * vlen, // DATASEC, ENUM64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => {}
                other => return Err(BtfError::Kind(other)),
            }
            types.push(Type {
                name_off,
                kind,
                kind_flag,
                type_ref: size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            first_id,
            types,
            strings,
            str_base,
            base: base.map(Box::new),
            by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) && t.name_off != 0 {
                if let Some(n) = btf.string(t.name_off) {
                    by_name
                        .entry(n.to_string())
                        .or_default()
                        .push(first_id + i as u32);
                }
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn string(&self, off: u32) -> Option<&str> {
        if off < self.str_base {
            return self.base.as_ref()?.string(off);
        }
        let s = &self.strings[(off - self.str_base) as usize..];
        let end = s.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&s[..end]).ok()
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        if id < self.first_id {
            return self.base.as_ref()?.ty(id);
        }
        self.types.get((id - self.first_id) as usize)
    }

    fn struct_ids(&self, name: &str) -> Vec<u32> {
        let mut ids: Vec<u32> = self.by_name.get(name).cloned().unwrap_or_default();
        if let Some(b) = &self.base {
            ids.extend(b.struct_ids(name));
        }
        ids
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.type_ref
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// Whether a struct or union of this name with members exists.
    pub fn has_struct(&self, name: &str) -> bool {
        self.struct_ids(name)
            .iter()
            .any(|&id| self.ty(id).is_some_and(|t| !t.members.is_empty()))
    }

    /// Members of a struct, by name (the first definition with members).
    pub fn members(&self, struct_name: &str) -> Option<Vec<String>> {
        let id = *self
            .struct_ids(struct_name)
            .iter()
            .find(|&&id| self.ty(id).is_some_and(|t| !t.members.is_empty()))?;
        let t = self.ty(id)?;
        Some(
            t.members
                .iter()
                .map(|m| self.string(m.name_off).unwrap_or("").to_string())
                .collect(),
        )
    }

    /// Byte offset of `path` (`member` or `member.member...`) inside `struct_name`,
    /// following nested structs (and anonymous members on the way).
    pub fn offset_of(&self, struct_name: &str, path: &str) -> Option<u64> {
        let ids = self.struct_ids(struct_name);
        ids.iter().find_map(|&id| {
            let t = self.ty(id)?;
            if t.members.is_empty() {
                return None;
            }
            self.path_offset(id, &path.split('.').collect::<Vec<_>>())
        })
    }

    fn path_offset(&self, id: u32, path: &[&str]) -> Option<u64> {
        let (first, rest) = path.split_first()?;
        let id = self.resolve(id)?;
        let t = self.ty(id)?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let _ = t.kind_flag;
        for m in &t.members {
            let name = self.string(m.name_off).unwrap_or("");
            let here = (m.bit_offset / 8) as u64;
            if name == *first {
                return if rest.is_empty() {
                    Some(here)
                } else {
                    self.path_offset(m.type_id, rest).map(|o| here + o)
                };
            }
            if name.is_empty() {
                // An anonymous struct or union: look inside.
                if let Some(o) = self.path_offset(m.type_id, path) {
                    return Some(here + o);
                }
            }
        }
        None
    }
}

/// Where the mutex owner word sits and how to mask it, from vmlinux BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MutexLayout {
    /// Offset of the owner word inside `struct mutex`.
    pub owner_offset: u64,
    /// Mask that leaves the task pointer.
    pub owner_mask: u64,
    /// PREEMPT_RT: struct mutex wraps an rt_mutex_base.
    pub rt: bool,
}

impl MutexLayout {
    /// The non-RT layout: `atomic_long_t owner` first, flags in the low 3 bits.
    pub const DEFAULT: MutexLayout = MutexLayout {
        owner_offset: 0,
        owner_mask: !0x7,
        rt: false,
    };

    /// Reads the layout of `struct mutex` from vmlinux BTF.
    pub fn from_btf(btf: &Btf) -> Option<MutexLayout> {
        if let Some(o) = btf.offset_of("mutex", "owner") {
            return Some(MutexLayout {
                owner_offset: o,
                owner_mask: !0x7,
                rt: false,
            });
        }
        btf.offset_of("mutex", "rtmutex.owner")
            .map(|o| MutexLayout {
                owner_offset: o,
                owner_mask: !0x1,
                rt: true,
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF blobs for tests: structs with named members, in either byte order.
    pub struct Builder {
        big: bool,
        types: Vec<u8>,
        strings: Vec<u8>,
        str_base: u32,
        next_id: u32,
    }

    impl Builder {
        pub fn new(big: bool) -> Builder {
            Builder {
                big,
                types: Vec::new(),
                strings: vec![0],
                str_base: 0,
                next_id: 1,
            }
        }
        /// Split BTF over a base with `base_types` types and `base_str_len` string bytes.
        pub fn split(big: bool, base_types: u32, base_str_len: u32) -> Builder {
            Builder {
                big,
                types: Vec::new(),
                strings: Vec::new(),
                str_base: base_str_len,
                next_id: base_types + 1,
            }
        }
        fn u32(&mut self, v: u32) {
            let b = if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.types.extend_from_slice(&b);
        }
        pub fn str(&mut self, s: &str) -> u32 {
            let off = self.str_base + self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        /// An INT of `size` bytes; returns its id.
        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let n = self.str(name);
            self.u32(n);
            self.u32(1 << 24);
            self.u32(size);
            self.u32(size * 8);
            self.id()
        }
        /// A struct of (member name offset or new name, type id, byte offset).
        pub fn strukt(&mut self, name: &str, size: u32, members: &[(u32, u32, u32)]) -> u32 {
            let n = if name.is_empty() { 0 } else { self.str(name) };
            self.u32(n);
            self.u32((KIND_STRUCT << 24) | members.len() as u32);
            self.u32(size);
            for &(mn, mt, mo) in members {
                self.u32(mn);
                self.u32(mt);
                self.u32(mo * 8);
            }
            self.id()
        }
        fn id(&mut self) -> u32 {
            self.next_id += 1;
            self.next_id - 1
        }
        pub fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            let p16 = |o: &mut Vec<u8>, v: u16| {
                o.extend_from_slice(&if self.big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                })
            };
            let p32 = |o: &mut Vec<u8>, v: u32| {
                o.extend_from_slice(&if self.big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                })
            };
            p16(&mut out, MAGIC);
            out.push(1);
            out.push(0);
            p32(&mut out, 24);
            p32(&mut out, 0);
            p32(&mut out, self.types.len() as u32);
            p32(&mut out, self.types.len() as u32);
            p32(&mut out, self.strings.len() as u32);
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A vmlinux-like base with `struct mutex` (non-RT or RT) and a split module BTF with
    /// `struct ap_matrix_dev` whose `mdevs_lock` name lives in the base's strings.
    pub fn vmlinux_and_module(big: bool, rt: bool) -> (Vec<u8>, Vec<u8>) {
        let mut b = Builder::new(big);
        let long = b.int("long", 8);
        let lock_name = b.str("mdevs_lock");
        let mutex = if rt {
            let w = b.str("wait_lock");
            let o = b.str("owner");
            let base = b.strukt("rt_mutex_base", 32, &[(w, long, 0), (o, long, 24)]);
            let rtm = b.str("rtmutex");
            b.strukt("mutex", 40, &[(rtm, base, 0)])
        } else {
            let o = b.str("owner");
            let wl = b.str("wait_lock");
            b.strukt("mutex", 32, &[(o, long, 0), (wl, long, 8)])
        };
        let base_types = b.next_id - 1;
        let base_str = b.strings.len() as u32;
        let vmlinux = b.finish();
        let mut m = Builder::split(big, base_types, base_str);
        let info = m.str("info");
        let mig = m.str("mig_data");
        m.strukt(
            "ap_matrix_dev",
            1024,
            &[(info, long, 0), (lock_name, mutex, 808)],
        );
        m.strukt(
            "ap_matrix_mdev",
            4096,
            &[(info, long, 0), (mig, long, 3368)],
        );
        (vmlinux, m.finish())
    }

    #[test]
    fn split_btf_offsets_in_both_byte_orders() {
        for big in [false, true] {
            let (v, m) = vmlinux_and_module(big, false);
            let base = Btf::parse(&v).unwrap();
            assert_eq!(MutexLayout::from_btf(&base), Some(MutexLayout::DEFAULT));
            let module = Btf::parse_split(&m, base).unwrap();
            assert_eq!(module.offset_of("ap_matrix_dev", "mdevs_lock"), Some(808));
            assert_eq!(
                module.offset_of("ap_matrix_dev", "mdevs_lock.owner"),
                Some(808)
            );
            assert_eq!(module.offset_of("ap_matrix_mdev", "mig_data"), Some(3368));
            assert_eq!(module.offset_of("ap_matrix_mdev", "nope"), None);
        }
    }

    #[test]
    fn preempt_rt_mutex_layout() {
        let (v, _) = vmlinux_and_module(false, true);
        let base = Btf::parse(&v).unwrap();
        assert_eq!(
            MutexLayout::from_btf(&base),
            Some(MutexLayout {
                owner_offset: 24,
                owner_mask: !0x1,
                rt: true
            })
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            Btf::parse(b"hello, this is not btf at all").unwrap_err(),
            BtfError::Magic
        );
        assert!(Btf::parse(&[0x9f, 0xeb]).is_err());
    }
}
