//! Whether a call failed, from its return register and its function's return type.

use crate::profile::RetType;

/// The largest errno an `ERR_PTR` encodes (`MAX_ERRNO`).
const MAX_ERRNO: u64 = 4095;

/// The one failure test of a return value.
pub fn failed(ty: RetType, ret: u64) -> bool {
    match ty {
        RetType::Int => as_int(ret) < 0,
        RetType::Ssize => (ret as i64) < 0,
        // IS_ERR: the top MAX_ERRNO values of the address space.
        RetType::Pointer => ret >= MAX_ERRNO.wrapping_neg(),
        RetType::Bool => ret as u8 == 0,
        RetType::Size | RetType::Void => false,
    }
}

/// An `int` return: the upper bits of the return register are undefined, so the value is the
/// low 32 bits, sign-extended.
pub fn as_int(ret: u64) -> i32 {
    ret as u32 as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    const EINVAL: u64 = (-22i64) as u64;

    #[test]
    fn an_int_is_its_low_32_bits() {
        assert!(failed(RetType::Int, EINVAL));
        assert!(
            failed(RetType::Int, 0x1234_5678_ffff_ffea),
            "garbage above -22"
        );
        assert!(
            !failed(RetType::Int, 0xffff_ffff_0000_0000),
            "0 with garbage above"
        );
        assert!(!failed(RetType::Int, 0));
        assert_eq!(as_int(0xdead_beef_ffff_fff2), -14);
    }

    #[test]
    fn an_ssize_t_is_the_whole_register() {
        assert!(failed(RetType::Ssize, EINVAL));
        assert!(
            !failed(RetType::Ssize, 0x0000_0000_ffff_ffea),
            "a large positive count"
        );
    }

    #[test]
    fn a_pointer_fails_only_as_an_err_ptr() {
        assert!(failed(RetType::Pointer, EINVAL));
        assert!(failed(RetType::Pointer, (-4095i64) as u64));
        assert!(!failed(RetType::Pointer, (-4096i64) as u64));
        assert!(!failed(RetType::Pointer, 0), "NULL is no error");
        // An s390 kernel address whose low half reads as a negative int.
        assert!(!failed(RetType::Pointer, 0x0000_0000_8123_4560));
        assert!(!failed(RetType::Pointer, 0xffff_8881_0000_0000));
    }

    #[test]
    fn bool_size_t_and_void() {
        assert!(failed(RetType::Bool, 0));
        assert!(
            failed(RetType::Bool, 0xffff_ff00),
            "only the low byte is the bool"
        );
        assert!(!failed(RetType::Bool, 1));
        assert!(!failed(RetType::Size, EINVAL));
        assert!(!failed(RetType::Void, EINVAL));
    }
}
