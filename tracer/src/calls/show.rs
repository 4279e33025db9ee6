//! Evidence as the kernel would print it: a return value by its function's return type
//! (errno names, `ERR_PTR`, `NULL`, nothing for void) and only the function's own arguments.

use std::collections::HashMap;

use super::ret::{as_int, failed};
use crate::model::Event;
use crate::profile::{strip_clone_suffix, Profile, RetType};

/// The common errno values (include/uapi/asm-generic/errno-base.h, errno.h and the kernel's
/// internal linux/errno.h) by number.
const ERRNOS: &[(i32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (4, "EINTR"),
    (5, "EIO"),
    (6, "ENXIO"),
    (7, "E2BIG"),
    (9, "EBADF"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (16, "EBUSY"),
    (17, "EEXIST"),
    (19, "ENODEV"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (25, "ENOTTY"),
    (27, "EFBIG"),
    (28, "ENOSPC"),
    (34, "ERANGE"),
    (35, "EDEADLK"),
    (38, "ENOSYS"),
    (61, "ENODATA"),
    (62, "ETIME"),
    (75, "EOVERFLOW"),
    (95, "EOPNOTSUPP"),
    (110, "ETIMEDOUT"),
    (125, "ECANCELED"),
    (512, "ERESTARTSYS"),
    (524, "ENOTSUPP"),
];

/// `-EINVAL` for -22; the number itself when it has no name here.
pub fn errno_name(err: i32) -> String {
    let name = ERRNOS
        .iter()
        .find(|(n, _)| i64::from(*n) == -i64::from(err))
        .map(|(_, name)| *name);
    match name {
        Some(name) if err < 0 => format!("-{name}"),
        _ => err.to_string(),
    }
}

/// A return value as its type reads; `None` for a void function (there is no value).
pub fn ret_text(ty: RetType, ret: u64) -> Option<String> {
    Some(match ty {
        RetType::Void => return None,
        RetType::Int => errno_name(as_int(ret)),
        RetType::Ssize if failed(ty, ret) => errno_name(ret as i64 as i32),
        RetType::Ssize => (ret as i64).to_string(),
        RetType::Pointer if failed(ty, ret) => {
            format!("ERR_PTR({})", errno_name(ret as i64 as i32))
        }
        RetType::Pointer if ret == 0 => "NULL".to_string(),
        RetType::Pointer => format!("{ret:#x}"),
        RetType::Bool => (ret as u8 != 0).to_string(),
        RetType::Size => ret.to_string(),
    })
}

/// What evidence needs to know of a profiled function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    pub ret: RetType,
    /// Arguments it takes, when known.
    pub args: Option<u8>,
}

/// The signatures of a profile's functions, by name (a compiler clone has its original's).
#[derive(Clone, Debug, Default)]
pub struct Signatures(HashMap<String, Signature>);

impl Signatures {
    pub fn of(profile: &Profile) -> Signatures {
        Signatures(
            profile
                .functions
                .iter()
                .map(|f| {
                    let sig = Signature {
                        ret: f.ret_type(),
                        args: f.arg_count(),
                    };
                    (f.name.clone(), sig)
                })
                .collect(),
        )
    }

    pub fn get(&self, func: &str) -> Option<Signature> {
        self.0.get(strip_clone_suffix(func).0).copied()
    }

    /// The event's line, with its function's signature when the profile has it.
    pub fn describe(&self, ev: &Event) -> String {
        match ev.body.func().and_then(|f| self.get(f)) {
            Some(sig) => ev.describe_with(sig.args.map(usize::from), |r| ret_text(sig.ret, r)),
            None => ev.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(n: i64) -> u64 {
        n as u64
    }

    #[test]
    fn errnos_print_by_name() {
        assert_eq!(errno_name(-22), "-EINVAL");
        assert_eq!(errno_name(-12), "-ENOMEM");
        assert_eq!(errno_name(-4000), "-4000", "no name: the number");
        assert_eq!(errno_name(22), "22", "a positive value is no errno");
    }

    #[test]
    fn each_return_type_reads_as_the_kernel_means_it() {
        assert_eq!(ret_text(RetType::Void, neg(-22)), None);
        assert_eq!(ret_text(RetType::Int, 0).as_deref(), Some("0"));
        // the upper half of an int return register is garbage
        assert_eq!(
            ret_text(RetType::Int, 0x1234_5678_ffff_ffea).as_deref(),
            Some("-EINVAL")
        );
        assert_eq!(
            ret_text(RetType::Pointer, neg(-12)).as_deref(),
            Some("ERR_PTR(-ENOMEM)")
        );
        assert_eq!(ret_text(RetType::Pointer, 0).as_deref(), Some("NULL"));
        // a kernel address whose low half reads as a negative int is no error
        assert_eq!(
            ret_text(RetType::Pointer, 0x0000_0000_8123_4560).as_deref(),
            Some("0x81234560")
        );
        assert_eq!(ret_text(RetType::Ssize, neg(-5)).as_deref(), Some("-EIO"));
        assert_eq!(ret_text(RetType::Bool, 0x100).as_deref(), Some("false"));
        assert_eq!(ret_text(RetType::Size, 4096).as_deref(), Some("4096"));
    }
}
