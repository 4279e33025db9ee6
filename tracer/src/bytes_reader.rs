//! The one endian-aware integer reader of the binary formats aptrace parses: kernel BTF,
//! module ELF files and the probes' ABI records. A read past the end is an error, never a
//! panic: all three formats can come from someone else's machine.

use bytes::Buf;
use serde::{Deserialize, Serialize};

/// Byte order of the machine that produced the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    /// The byte order of the architecture named as `uname -m` prints it.
    pub fn of_arch(arch: &str) -> Endian {
        match arch {
            "s390x" | "s390" | "ppc64" | "sparc64" | "mips" | "bpfeb" => Endian::Big,
            _ => Endian::Little,
        }
    }

    /// The byte order of the machine running this code.
    pub const fn native() -> Endian {
        if cfg!(target_endian = "big") {
            Endian::Big
        } else {
            Endian::Little
        }
    }
}

/// A read that needed bytes the input does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{need} byte(s) wanted at offset {at}, but the input is {len} bytes long")]
pub struct OutOfBounds {
    pub at: usize,
    pub need: usize,
    pub len: usize,
}

/// An integer the reader can read.
pub trait Int: Sized {
    /// Reads `size_of::<Self>()` bytes from the front of `b`, which holds at least as many.
    fn get(b: &mut &[u8], endian: Endian) -> Self;
}

macro_rules! int {
    ($t:ty, $be:ident, $le:ident) => {
        impl Int for $t {
            fn get(b: &mut &[u8], endian: Endian) -> Self {
                match endian {
                    Endian::Big => b.$be(),
                    Endian::Little => b.$le(),
                }
            }
        }
    };
}

int!(u8, get_u8, get_u8);
int!(u16, get_u16, get_u16_le);
int!(u32, get_u32, get_u32_le);
int!(u64, get_u64, get_u64_le);
int!(i32, get_i32, get_i32_le);
int!(i64, get_i64, get_i64_le);

/// A cursor over a byte slice in a fixed byte order.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    endian: Endian,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], endian: Endian) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            endian,
        }
    }

    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// The whole input, whatever the position.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The range `at..at + need`, if the input holds it.
    fn range(&self, at: usize, need: usize) -> Result<std::ops::Range<usize>, OutOfBounds> {
        let err = OutOfBounds {
            at,
            need,
            len: self.data.len(),
        };
        let end = at.checked_add(need).ok_or(err)?;
        if end > self.data.len() {
            return Err(err);
        }
        Ok(at..end)
    }

    /// Moves to `pos` (the end of the input is a valid position).
    pub fn seek(&mut self, pos: usize) -> Result<(), OutOfBounds> {
        self.range(pos, 0)?;
        self.pos = pos;
        Ok(())
    }

    /// Moves `n` bytes on.
    pub fn skip(&mut self, n: usize) -> Result<(), OutOfBounds> {
        self.bytes(n).map(|_| ())
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], OutOfBounds> {
        let r = self.range(self.pos, n)?;
        self.pos = r.end;
        Ok(&self.data[r])
    }

    /// `n` bytes at `at`, without moving.
    pub fn bytes_at(&self, at: usize, n: usize) -> Result<&'a [u8], OutOfBounds> {
        Ok(&self.data[self.range(at, n)?])
    }

    /// The next integer.
    pub fn read<T: Int>(&mut self) -> Result<T, OutOfBounds> {
        let mut b = self.bytes(std::mem::size_of::<T>())?;
        Ok(T::get(&mut b, self.endian))
    }

    /// The integer at `at`, without moving.
    pub fn read_at<T: Int>(&self, at: usize) -> Result<T, OutOfBounds> {
        let mut b = self.bytes_at(at, std::mem::size_of::<T>())?;
        Ok(T::get(&mut b, self.endian))
    }

    pub fn u8(&mut self) -> Result<u8, OutOfBounds> {
        self.read()
    }
    pub fn u16(&mut self) -> Result<u16, OutOfBounds> {
        self.read()
    }
    pub fn u32(&mut self) -> Result<u32, OutOfBounds> {
        self.read()
    }
    pub fn u64(&mut self) -> Result<u64, OutOfBounds> {
        self.read()
    }
    pub fn i32(&mut self) -> Result<i32, OutOfBounds> {
        self.read()
    }
    pub fn i64(&mut self) -> Result<i64, OutOfBounds> {
        self.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_byte_orders() {
        let data = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        let mut be = Reader::new(&data, Endian::Big);
        assert_eq!(be.u16().unwrap(), 0x0102);
        assert_eq!(be.u8().unwrap(), 0x03);
        assert_eq!(be.read_at::<u32>(4).unwrap(), 0x0506_0708);
        assert_eq!(be.pos(), 3);
        let mut le = Reader::new(&data, Endian::Little);
        assert_eq!(le.u64().unwrap(), 0x0807_0605_0403_0201);
        assert_eq!(le.remaining(), 0);
        let neg = (-22i64).to_be_bytes();
        assert_eq!(Reader::new(&neg, Endian::Big).i64().unwrap(), -22);
        assert_eq!(Reader::new(&neg[4..], Endian::Big).i32().unwrap(), -22);
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let data = [0u8; 5];
        let mut r = Reader::new(&data, Endian::Little);
        assert_eq!(
            r.u64(),
            Err(OutOfBounds {
                at: 0,
                need: 8,
                len: 5
            })
        );
        assert_eq!(r.pos(), 0, "a failed read does not move");
        assert!(r.read_at::<u32>(1).is_ok());
        assert!(r.read_at::<u32>(2).is_err());
        assert!(r.read_at::<u8>(usize::MAX).is_err());
        assert!(r.bytes_at(usize::MAX, 2).is_err());
        assert!(r.seek(5).is_ok());
        assert!(r.seek(6).is_err());
        assert!(r.skip(1).is_err());
        assert!(r.u8().is_err());
    }
}
