//! VMCS field encodings (Intel SDM vol. 3, appendix B), by name: the
//! encodings are the `x86` crate's (`x86::vmx::vmcs`), under the names the
//! VMX backend uses, as the `u64` VMREAD and VMWRITE take.
#![allow(missing_docs)] // Each name is the SDM's field name.

use x86::vmx::vmcs::{control, guest, host, ro};

pub const VPID: u64 = control::VPID as u64;
pub const GUEST_ES_SELECTOR: u64 = guest::ES_SELECTOR as u64;
pub const GUEST_CS_SELECTOR: u64 = guest::CS_SELECTOR as u64;
pub const GUEST_SS_SELECTOR: u64 = guest::SS_SELECTOR as u64;
pub const GUEST_DS_SELECTOR: u64 = guest::DS_SELECTOR as u64;
pub const GUEST_FS_SELECTOR: u64 = guest::FS_SELECTOR as u64;
pub const GUEST_GS_SELECTOR: u64 = guest::GS_SELECTOR as u64;
pub const GUEST_LDTR_SELECTOR: u64 = guest::LDTR_SELECTOR as u64;
pub const GUEST_TR_SELECTOR: u64 = guest::TR_SELECTOR as u64;
pub const HOST_ES_SELECTOR: u64 = host::ES_SELECTOR as u64;
pub const HOST_CS_SELECTOR: u64 = host::CS_SELECTOR as u64;
pub const HOST_SS_SELECTOR: u64 = host::SS_SELECTOR as u64;
pub const HOST_DS_SELECTOR: u64 = host::DS_SELECTOR as u64;
pub const HOST_FS_SELECTOR: u64 = host::FS_SELECTOR as u64;
pub const HOST_GS_SELECTOR: u64 = host::GS_SELECTOR as u64;
pub const HOST_TR_SELECTOR: u64 = host::TR_SELECTOR as u64;
pub const IO_BITMAP_A: u64 = control::IO_BITMAP_A_ADDR_FULL as u64;
pub const IO_BITMAP_B: u64 = control::IO_BITMAP_B_ADDR_FULL as u64;
pub const MSR_BITMAP: u64 = control::MSR_BITMAPS_ADDR_FULL as u64;
pub const EPT_POINTER: u64 = control::EPTP_FULL as u64;
pub const GUEST_PHYSICAL_ADDRESS: u64 = ro::GUEST_PHYSICAL_ADDR_FULL as u64;
pub const VMCS_LINK_POINTER: u64 = guest::LINK_PTR_FULL as u64;
pub const GUEST_IA32_PAT: u64 = guest::IA32_PAT_FULL as u64;
pub const GUEST_IA32_EFER: u64 = guest::IA32_EFER_FULL as u64;
pub const HOST_IA32_PAT: u64 = host::IA32_PAT_FULL as u64;
pub const HOST_IA32_EFER: u64 = host::IA32_EFER_FULL as u64;
pub const PIN_BASED_CONTROLS: u64 = control::PINBASED_EXEC_CONTROLS as u64;
pub const PRIMARY_CONTROLS: u64 = control::PRIMARY_PROCBASED_EXEC_CONTROLS as u64;
pub const EXCEPTION_BITMAP: u64 = control::EXCEPTION_BITMAP as u64;
pub const EXIT_CONTROLS: u64 = control::VMEXIT_CONTROLS as u64;
pub const EXIT_MSR_STORE_COUNT: u64 = control::VMEXIT_MSR_STORE_COUNT as u64;
pub const EXIT_MSR_LOAD_COUNT: u64 = control::VMEXIT_MSR_LOAD_COUNT as u64;
pub const ENTRY_CONTROLS: u64 = control::VMENTRY_CONTROLS as u64;
pub const ENTRY_MSR_LOAD_COUNT: u64 = control::VMENTRY_MSR_LOAD_COUNT as u64;
pub const ENTRY_INTERRUPTION_INFO: u64 = control::VMENTRY_INTERRUPTION_INFO_FIELD as u64;
pub const ENTRY_EXCEPTION_ERROR_CODE: u64 = control::VMENTRY_EXCEPTION_ERR_CODE as u64;
pub const ENTRY_INSTRUCTION_LENGTH: u64 = control::VMENTRY_INSTRUCTION_LEN as u64;
pub const SECONDARY_CONTROLS: u64 = control::SECONDARY_PROCBASED_EXEC_CONTROLS as u64;
pub const VM_INSTRUCTION_ERROR: u64 = ro::VM_INSTRUCTION_ERROR as u64;
pub const EXIT_REASON: u64 = ro::EXIT_REASON as u64;
pub const IDT_VECTORING_INFO: u64 = ro::IDT_VECTORING_INFO as u64;
pub const IDT_VECTORING_ERROR_CODE: u64 = ro::IDT_VECTORING_ERR_CODE as u64;
pub const EXIT_INSTRUCTION_LENGTH: u64 = ro::VMEXIT_INSTRUCTION_LEN as u64;
pub const GUEST_ES_LIMIT: u64 = guest::ES_LIMIT as u64;
pub const GUEST_GDTR_LIMIT: u64 = guest::GDTR_LIMIT as u64;
pub const GUEST_IDTR_LIMIT: u64 = guest::IDTR_LIMIT as u64;
pub const GUEST_ES_ACCESS_RIGHTS: u64 = guest::ES_ACCESS_RIGHTS as u64;
pub const GUEST_INTERRUPTIBILITY: u64 = guest::INTERRUPTIBILITY_STATE as u64;
pub const GUEST_ACTIVITY_STATE: u64 = guest::ACTIVITY_STATE as u64;
pub const GUEST_SYSENTER_CS: u64 = guest::IA32_SYSENTER_CS as u64;
pub const HOST_SYSENTER_CS: u64 = host::IA32_SYSENTER_CS as u64;
pub const CR0_GUEST_HOST_MASK: u64 = control::CR0_GUEST_HOST_MASK as u64;
pub const CR4_GUEST_HOST_MASK: u64 = control::CR4_GUEST_HOST_MASK as u64;
pub const CR0_READ_SHADOW: u64 = control::CR0_READ_SHADOW as u64;
pub const CR4_READ_SHADOW: u64 = control::CR4_READ_SHADOW as u64;
pub const EXIT_QUALIFICATION: u64 = ro::EXIT_QUALIFICATION as u64;
pub const GUEST_CR0: u64 = guest::CR0 as u64;
pub const GUEST_CR3: u64 = guest::CR3 as u64;
pub const GUEST_CR4: u64 = guest::CR4 as u64;
pub const GUEST_ES_BASE: u64 = guest::ES_BASE as u64;
pub const GUEST_GDTR_BASE: u64 = guest::GDTR_BASE as u64;
pub const GUEST_IDTR_BASE: u64 = guest::IDTR_BASE as u64;
pub const GUEST_DR7: u64 = guest::DR7 as u64;
pub const GUEST_RSP: u64 = guest::RSP as u64;
pub const GUEST_RIP: u64 = guest::RIP as u64;
pub const GUEST_RFLAGS: u64 = guest::RFLAGS as u64;
pub const GUEST_SYSENTER_ESP: u64 = guest::IA32_SYSENTER_ESP as u64;
pub const GUEST_SYSENTER_EIP: u64 = guest::IA32_SYSENTER_EIP as u64;
pub const HOST_CR0: u64 = host::CR0 as u64;
pub const HOST_CR3: u64 = host::CR3 as u64;
pub const HOST_CR4: u64 = host::CR4 as u64;
pub const HOST_FS_BASE: u64 = host::FS_BASE as u64;
pub const HOST_GS_BASE: u64 = host::GS_BASE as u64;
pub const HOST_TR_BASE: u64 = host::TR_BASE as u64;
pub const HOST_GDTR_BASE: u64 = host::GDTR_BASE as u64;
pub const HOST_IDTR_BASE: u64 = host::IDTR_BASE as u64;
pub const HOST_SYSENTER_ESP: u64 = host::IA32_SYSENTER_ESP as u64;
pub const HOST_SYSENTER_EIP: u64 = host::IA32_SYSENTER_EIP as u64;
pub const HOST_RSP: u64 = host::RSP as u64;
pub const HOST_RIP: u64 = host::RIP as u64;

/// Segment `i` (ES, CS, SS, DS, FS, GS, LDTR, TR in encoding order) of a
/// family of guest fields whose first member is `first`.
pub const fn segment(first: u64, i: u64) -> u64 {
    first + 2 * i
}
