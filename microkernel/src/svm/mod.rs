//! AMD SVM data structures that need no hardware: the VMCB layout, the I/O
//! and MSR permission maps, and exit decoding. Only VMRUN itself (and the
//! MSRs that enable SVM) live under `arch/`.

pub mod exit;
pub mod permissions;
pub mod state;
pub mod vmcb;
