//! I/O port range objects: a capability with USE lets its holder access
//! the ports directly (its I/O permission map passes them).

/// A contiguous range of I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoPorts {
    /// First port.
    pub first: u16,
    /// Number of ports.
    pub count: u32,
}
