//! The microkernel's own page tables: an identity map in which only the
//! kernel's code can be executed and nothing executable can be written
//! (W^X).
//!
//! The decision is made here, on the host, from the image's section
//! boundaries (the linker script's symbols); `arch/x86_64/memory.rs` builds
//! the tables from [`plan`], turns EFER.NXE and CR0.WP on, and checks the
//! loaded tables against [`access_at`] at boot.
//!
//! # Invariants
//! - `.text` is read + execute; `.rodata` and the boot code before `.text`
//!   (which runs only on the boot loader's tables, never again once these
//!   are loaded) are read-only, no-execute; every other address — `.data`,
//!   `.bss`, the frame pool, partition memory, low memory with the
//!   processors' start-up page, device memory — is read + write,
//!   no-execute.
//! - No 2 MiB page covers a byte of a range that is not read + write
//!   (those 2 MiB regions are mapped in 4 KiB pages), so a large page
//!   never widens the rights of code or read-only data.

use crate::paging::{Access, PageSize};
use crate::{LARGE_PAGE_SIZE, PAGE_SIZE};

/// Read + execute: code.
pub const CODE: Access = Access {
    write: false,
    execute: true,
};

/// The kernel image's sections as the linker script lays them out, each
/// page-aligned and half-open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// The multiboot2 header and the 32-bit entry code (`.boot`).
    pub boot: (u64, u64),
    /// Code (`.text`).
    pub text: (u64, u64),
    /// Read-only data (`.rodata`).
    pub rodata: (u64, u64),
    /// Everything after it to the image's end (`.got`, `.data`, `.bss`).
    pub data: (u64, u64),
}

/// Why a layout cannot be mapped W^X.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// A section boundary is not on a 4 KiB page.
    Misaligned,
    /// The sections are not in order, boot, text, rodata, data, or overlap.
    OutOfOrder,
    /// There is no code.
    NoText,
}

fn contains(range: (u64, u64), addr: u64) -> bool {
    range.0 <= addr && addr < range.1
}

impl ImageLayout {
    /// Checks that the sections can be told apart page by page.
    pub fn check(&self) -> Result<(), LayoutError> {
        let bounds = [
            self.boot.0,
            self.boot.1,
            self.text.0,
            self.text.1,
            self.rodata.0,
            self.rodata.1,
            self.data.0,
            self.data.1,
        ];
        if bounds.iter().any(|b| !b.is_multiple_of(PAGE_SIZE)) {
            return Err(LayoutError::Misaligned);
        }
        if bounds.windows(2).any(|w| w[0] > w[1]) {
            return Err(LayoutError::OutOfOrder);
        }
        if self.text.0 == self.text.1 {
            return Err(LayoutError::NoText);
        }
        Ok(())
    }

    /// The access the identity map gives the page holding `addr`.
    pub fn access_at(&self, addr: u64) -> Access {
        access_at(self, addr)
    }
}

/// The access the identity map gives the page holding `addr`: code
/// read + execute, read-only data and boot code read-only, everything else
/// read + write and never executable.
pub fn access_at(layout: &ImageLayout, addr: u64) -> Access {
    if contains(layout.text, addr) {
        CODE
    } else if contains(layout.rodata, addr) || contains(layout.boot, addr) {
        Access::R
    } else {
        Access::RW
    }
}

/// One mapping of the identity map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address (virtual = physical).
    pub at: u64,
    /// Page size.
    pub size: PageSize,
    /// Its rights.
    pub access: Access,
}

/// The identity map of `[0, top)` (`top` a multiple of 2 MiB): 2 MiB pages,
/// read + write, no-execute, except the 2 MiB regions holding code or
/// read-only data, which are mapped page by page.
pub fn plan(layout: ImageLayout, top: u64) -> impl Iterator<Item = Mapping> {
    let special = [layout.boot, layout.text, layout.rodata];
    let overlaps = move |chunk: u64| {
        special
            .iter()
            .any(|r| r.0 < chunk + LARGE_PAGE_SIZE && chunk < r.1)
    };
    (0..top / LARGE_PAGE_SIZE).flat_map(move |i| {
        let chunk = i * LARGE_PAGE_SIZE;
        let (pages, size, step) = if overlaps(chunk) {
            (LARGE_PAGE_SIZE / PAGE_SIZE, PageSize::Small, PAGE_SIZE)
        } else {
            (1, PageSize::Large, LARGE_PAGE_SIZE)
        };
        (0..pages).map(move |p| {
            let at = chunk + p * step;
            Mapping {
                at,
                size,
                access: access_at(&layout, at),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::paging::{CacheMode, PageTable, TableMemory, X86Format};

    /// The layout of a kernel linked at 1 MiB (as `microkernel/linker.ld` does).
    const LAYOUT: ImageLayout = ImageLayout {
        boot: (0x10_0000, 0x10_1000),
        text: (0x10_1000, 0x12_5000),
        rodata: (0x12_5000, 0x12_a000),
        data: (0x12_a000, 0x14_5000),
    };

    #[test]
    fn sections_get_their_rights() {
        LAYOUT.check().expect("valid layout");
        let execute = |a| access_at(&LAYOUT, a).execute;
        let write = |a| access_at(&LAYOUT, a).write;
        // Code: executable, never writable.
        for a in [0x10_1000, 0x11_0123, 0x12_4fff] {
            assert_eq!(access_at(&LAYOUT, a), CODE);
        }
        // Read-only data and the boot code: neither.
        for a in [0x10_0000, 0x10_0fff, 0x12_5000, 0x12_9fff] {
            assert_eq!(access_at(&LAYOUT, a), Access::R);
        }
        // Data, bss, and everything outside the image: writable, never executable.
        for a in [
            0x12_a000,
            0x14_4fff,
            0x14_5000,
            0,
            0x9_f000,
            0x20_0000,
            0xfee0_0000,
        ] {
            assert!(write(a) && !execute(a), "{a:#x}");
        }
        // Nothing anywhere is both.
        for a in (0..0x40_0000).step_by(0x1000) {
            assert!(
                !(write(a) && execute(a)),
                "{a:#x} is writable and executable"
            );
        }
    }

    #[test]
    fn large_pages_never_cover_code_or_read_only_data() {
        let top = 8 * LARGE_PAGE_SIZE;
        let mut expected_at = 0;
        for m in plan(LAYOUT, top) {
            assert_eq!(m.at, expected_at, "the plan covers [0, top) in order");
            expected_at += m.size.bytes();
            if m.size == PageSize::Large {
                assert_eq!(m.access, Access::RW);
                for (start, end) in [LAYOUT.boot, LAYOUT.text, LAYOUT.rodata] {
                    assert!(end <= m.at || start >= m.at + LARGE_PAGE_SIZE);
                }
            } else {
                assert_eq!(m.access, access_at(&LAYOUT, m.at));
            }
        }
        assert_eq!(expected_at, top);
        // The first 2 MiB in 4 KiB pages, the other seven in one page each.
        assert_eq!(plan(LAYOUT, top).count(), 512 + 7);
    }

    #[test]
    fn an_image_across_a_2_mib_boundary_is_split_on_both_sides() {
        let layout = ImageLayout {
            boot: (0x1f_f000, 0x20_0000),
            text: (0x20_0000, 0x40_1000),
            rodata: (0x40_1000, 0x40_2000),
            data: (0x40_2000, 0x40_3000),
        };
        layout.check().expect("valid");
        let small: Vec<u64> = plan(layout, 0x80_0000)
            .filter(|m| m.size == PageSize::Small)
            .map(|m| m.at & !(LARGE_PAGE_SIZE - 1))
            .collect();
        assert!(small.contains(&0) && small.contains(&0x20_0000) && small.contains(&0x40_0000));
        assert!(!small.contains(&0x60_0000));
    }

    #[test]
    fn bad_layouts_are_refused() {
        let mut l = LAYOUT;
        l.text.1 += 1;
        assert_eq!(l.check(), Err(LayoutError::Misaligned));
        let mut l = LAYOUT;
        l.rodata = (0x11_0000, 0x12_a000);
        assert_eq!(l.check(), Err(LayoutError::OutOfOrder));
        let mut l = LAYOUT;
        l.text.1 = l.text.0;
        assert_eq!(l.check(), Err(LayoutError::NoText));
    }

    /// Page tables in a map.
    #[derive(Default)]
    struct Tables {
        tables: HashMap<u64, [u64; 512]>,
        next: u64,
    }

    impl TableMemory for Tables {
        fn alloc_table(&mut self) -> Option<u64> {
            self.next += 0x1000;
            self.tables.insert(self.next, [0; 512]);
            Some(self.next)
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).expect("a table")[index] = value;
        }
    }

    /// The entries the plan produces say what `access_at` decided: the NX
    /// bit set on everything but code, the W bit on nothing executable.
    #[test]
    fn built_tables_hold_the_decision() {
        let mut mem = Tables::default();
        let mut table = PageTable::<X86Format>::new(&mut mem).expect("root");
        let top = 4 * LARGE_PAGE_SIZE;
        for m in plan(LAYOUT, top) {
            table
                .map(
                    &mut mem,
                    m.at,
                    m.at,
                    m.size.bytes(),
                    m.size,
                    m.access,
                    CacheMode::WriteBack,
                )
                .expect("maps");
        }
        for a in (0..top).step_by(0x1000) {
            let t = table.translate(&mem, a).expect("mapped");
            assert_eq!(t.phys, a);
            assert_eq!(t.access, access_at(&LAYOUT, a), "{a:#x}");
        }
        let leaf = |a: u64| {
            let mut entry = 0;
            let mut t = table.root();
            for level in (1..=4u8).rev() {
                entry = mem.read(t, ((a >> (12 + 9 * (level - 1) as u64)) & 0x1ff) as usize);
                if level == 2 && entry & (1 << 7) != 0 {
                    break;
                }
                t = entry & 0x000f_ffff_ffff_f000;
            }
            entry
        };
        const NX: u64 = 1 << 63;
        const W: u64 = 1 << 1;
        assert_eq!(leaf(0x10_2000) & (NX | W), 0);
        assert_eq!(leaf(0x12_6000) & (NX | W), NX);
        assert_eq!(leaf(0x13_0000) & (NX | W), NX | W);
        assert_eq!(leaf(0x60_0000) & (NX | W), NX | W);
    }
}
