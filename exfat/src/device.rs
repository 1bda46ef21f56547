//! The byte-addressed storage an exFAT volume lives on (a disk, a partition,
//! an image file): the same small block-device trait the VHD library uses,
//! so a volume can sit on a raw disk or inside a VHD alike.

pub use vhd::{BlockDevice, IoError, MemDevice};
