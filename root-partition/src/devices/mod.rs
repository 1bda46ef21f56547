//! What the root does with the devices it drives, as far as it is
//! hypercalls, boot-page lookups and decisions: a device's interrupt
//! ([`irq`]). The register accesses stay in the binary (`hal::pci`,
//! `virtio.rs`, `devirq.rs`), behind the traits these modules define.

pub mod irq;
