//! A minimal BTF reader: struct member offsets by name, for vmlinux BTF and a module's split
//! BTF (whose type ids and string offsets continue those of vmlinux). Either byte order.
//! No CO-RE: the offsets are handed to the probes as plain numbers.

use std::collections::{HashMap, HashSet};

use crate::bytes_reader::{Endian, OutOfBounds, Reader};

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

impl From<OutOfBounds> for BtfError {
    fn from(e: OutOfBounds) -> BtfError {
        BtfError::Truncated(e.at)
    }
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
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
        let endian = match (
            u16::from_le_bytes([data[0], data[1]]),
            u16::from_be_bytes([data[0], data[1]]),
        ) {
            (MAGIC, _) => Endian::Little,
            (_, MAGIC) => Endian::Big,
            _ => return Err(BtfError::Magic),
        };
        let mut r = Reader::new(data, endian);
        let at = |o: u64| usize::try_from(o).map_err(|_| BtfError::Truncated(data.len()));
        // Section bounds are sums of header fields: computed in u64, they cannot wrap.
        let hdr_len = u64::from(r.read_at::<u32>(4)?);
        let types_start = hdr_len + u64::from(r.read_at::<u32>(8)?);
        let types_end = at(types_start + u64::from(r.read_at::<u32>(12)?))?;
        let str_start = hdr_len + u64::from(r.read_at::<u32>(16)?);
        let str_len = r.read_at::<u32>(20)? as usize;
        let strings = r.bytes_at(at(str_start)?, str_len)?.to_vec();
        if types_end > data.len() {
            return Err(BtfError::Truncated(types_end));
        }
        let (first_id, str_base) = match &base {
            Some(b) => (
                b.next_id().ok_or(BtfError::Truncated(data.len()))?,
                u32::try_from(b.strings.len())
                    .ok()
                    .and_then(|n| b.str_base.checked_add(n))
                    .ok_or(BtfError::Truncated(data.len()))?,
            ),
            None => (1, 0),
        };
        let mut types = Vec::new();
        r.seek(at(types_start)?)?;
        while r.pos() < types_end {
            let name_off = r.u32()?;
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                1 | 14 | 17 => r.skip(4)?, // INT, VAR, DECL_TAG
                3 => r.skip(12)?,          // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let m_name = r.u32()?;
                        let m_type = r.u32()?;
                        let m_off = r.u32()?;
                        let bit_offset = if kind_flag { m_off & 0xff_ffff } else { m_off };
                        members.push(Member {
                            name_off: m_name,
                            type_id: m_type,
                            bit_offset,
                        });
                    }
                }
                6 | 13 => r.skip(8 * vlen)?,   // ENUM, FUNC_PROTO
                15 | 19 => r.skip(12 * vlen)?, // DATASEC, ENUM64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => {}
                other => return Err(BtfError::Kind(other)),
            }
            types.push(Type {
                name_off,
                kind,
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
                        .push(first_id.saturating_add(i as u32));
                }
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    /// The id the next type after these would have (the first of a split BTF on top).
    fn next_id(&self) -> Option<u32> {
        u32::try_from(self.types.len())
            .ok()
            .and_then(|n| self.first_id.checked_add(n))
    }

    fn string(&self, off: u32) -> Option<&str> {
        if off < self.str_base {
            return self.base.as_ref()?.string(off);
        }
        let s = self.strings.get((off - self.str_base) as usize..)?;
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
            let path: Vec<&str> = path.split('.').collect();
            self.path_offset(id, &path, &mut HashSet::new())
        })
    }

    /// `seen` holds the (type, path length) pairs already searched: the same search again
    /// finds nothing new, so a type graph that loops (crafted BTF) ends, in linear time.
    fn path_offset(&self, id: u32, path: &[&str], seen: &mut HashSet<(u32, usize)>) -> Option<u64> {
        let (first, rest) = path.split_first()?;
        let id = self.resolve(id)?;
        if !seen.insert((id, path.len())) {
            return None;
        }
        let t = self.ty(id)?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            let name = self.string(m.name_off).unwrap_or("");
            let here = u64::from(m.bit_offset / 8);
            if name == *first {
                return if rest.is_empty() {
                    Some(here)
                } else {
                    self.path_offset(m.type_id, rest, seen)
                        .and_then(|o| here.checked_add(o))
                };
            }
            if name.is_empty() {
                // An anonymous struct or union: look inside.
                if let Some(o) = self.path_offset(m.type_id, path, seen) {
                    return here.checked_add(o);
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
        // The series' migration data: a state, then two file slots of three words.
        let (filp, cfg, sz) = (m.str("filp"), m.str("ap_config"), m.str("config_sz"));
        let file = m.strukt(
            "vfio_ap_migration_file",
            24,
            &[(filp, long, 0), (cfg, long, 8), (sz, long, 16)],
        );
        let (state, resuming, stop_copy) = (
            m.str("mig_state"),
            m.str("resuming_mig_file"),
            m.str("stop_copy_mig_file"),
        );
        m.strukt(
            "vfio_ap_migration_data",
            56,
            &[(state, long, 0), (resuming, file, 8), (stop_copy, file, 32)],
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
            assert_eq!(
                module.offset_of("vfio_ap_migration_data", "stop_copy_mig_file.ap_config"),
                Some(40),
                "a member of a nested struct"
            );
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

    #[test]
    fn crafted_btf_is_an_error_or_a_miss_never_a_panic() {
        // A name past the string section, and an anonymous member that contains itself.
        let mut b = Builder::new(false);
        let long = b.int("long", 8);
        let me = b.next_id;
        b.strukt("loop", 8, &[(0, me, 0), (9999, long, 0)]);
        let btf = Btf::parse(&b.finish()).unwrap();
        assert_eq!(btf.offset_of("loop", "nope"), None);
        assert!(btf.members("loop").is_some());
        // Section lengths that point past the end, or wrap a 32-bit sum.
        let (v, _) = vmlinux_and_module(true, false);
        for (at, value) in [
            (12, u32::MAX),
            (16, u32::MAX),
            (20, u32::MAX),
            (4, u32::MAX),
        ] {
            let mut bad = v.clone();
            bad[at..at + 4].copy_from_slice(&value.to_be_bytes());
            assert!(Btf::parse(&bad).is_err(), "header field at {at}");
        }
        // A struct that claims more members than the section holds.
        let mut bad = v.clone();
        let info = 24 + 16 + 4;
        bad[info + 2..info + 4].copy_from_slice(&[0xff, 0xff]);
        assert!(Btf::parse(&bad).is_err());
    }
}
