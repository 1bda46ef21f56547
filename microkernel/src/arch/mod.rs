//! The hardware layer. One backend per architecture; the rest of the kernel
//! uses only what this facade exports.

mod x86_64;

pub use self::x86_64::*;
