//! Where things go in a child partition's guest-physical memory, and the
//! initial page tables that map it.
//!
//! | GPA | content |
//! |---|---|
//! | 0x0000 | unmapped (null pointers fault) |
//! | 0x1000 | boot page (`ipc::child::ChildBootInfo`) |
//! | 0x2000 | page tables: PML4, low PDPT, low PD, high PDPT, high PD, image PTs |
//! | 0x4_0000–0x8_0000 | vCPU stacks, 64 KiB each, vCPU 0 at the top |
//! | 0x10_0000 | the runtime image (its loadable segments) |
//! | after the image | heap |
//! | last 16 KiB | VMBus control channel: a 2-page ring child-to-root, then one root-to-child |
//!
//! Guest-virtual: `[0, memory)` identity (2 MiB pages) and the image at its
//! link address in the top 2 GiB (4 KiB pages).
//!
//! # Invariants
//! Every table entry written points inside the child's memory.

use ipc::boot::{PARTITION_IMAGE_BASE, PhysRange};
use ipc::child::CHILD_BOOT_PAGE;
use ipc::vmbus::control::CONTROL_CHANNEL_PAGES;

/// First page-table page.
pub const TABLES: u64 = 0x2000;
/// Top of vCPU 0's stack.
pub const STACK_TOP: u64 = 0x8_0000;
/// Bytes per vCPU stack.
pub const STACK_BYTES: u64 = 0x1_0000;
/// Where the image's first page is loaded.
pub const IMAGE: u64 = 0x10_0000;
/// Page-table pages available for the image (each maps 2 MiB).
pub const IMAGE_TABLES: u64 = 8;
/// Largest image span.
pub const MAX_IMAGE: u64 = IMAGE_TABLES * (2 << 20);

const PML4: u64 = TABLES;
const PDPT_LOW: u64 = TABLES + 0x1000;
const PD_LOW: u64 = TABLES + 0x2000;
const PDPT_HIGH: u64 = TABLES + 0x3000;
const PD_HIGH: u64 = TABLES + 0x4000;
const PT_IMAGE: u64 = TABLES + 0x5000;
const PRESENT_WRITABLE: u64 = 0b11;
const LARGE: u64 = 1 << 7;

/// Why a layout is impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The image does not fit.
    ImageTooLarge,
    /// Memory too small for the fixed areas, or over 1 GiB.
    BadMemorySize,
}

/// A child's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of memory.
    pub memory: u64,
    /// Link address of the image's first page.
    pub image_base: u64,
    /// Pages of image.
    pub image_pages: u64,
    /// The heap.
    pub heap: PhysRange,
}

impl Layout {
    /// Plans a child of `memory` bytes whose image spans `[span_start, span_end)`.
    pub fn new(memory: u64, span_start: u64, span_end: u64) -> Result<Layout, LayoutError> {
        if !(4 << 20..=1 << 30).contains(&memory) || !memory.is_multiple_of(2 << 20) {
            return Err(LayoutError::BadMemorySize);
        }
        let image_base = span_start & !0xfff;
        let image_pages = (span_end.saturating_sub(image_base)).div_ceil(4096);
        if span_start < PARTITION_IMAGE_BASE || image_pages * 4096 > MAX_IMAGE {
            return Err(LayoutError::ImageTooLarge);
        }
        let heap_start = (IMAGE + image_pages * 4096 + 0xffff) & !0xffff;
        if heap_start + (1 << 20) > memory {
            return Err(LayoutError::BadMemorySize);
        }
        Ok(Layout {
            memory,
            image_base,
            image_pages,
            heap: PhysRange {
                start: heap_start,
                end: memory - CONTROL_CHANNEL_PAGES * 4096,
            },
        })
    }

    /// The VMBus control channel's pages (the last ones of memory).
    pub fn vmbus_control(&self) -> PhysRange {
        PhysRange {
            start: self.memory - CONTROL_CHANNEL_PAGES * 4096,
            end: self.memory,
        }
    }

    /// Whether the child may grant `[gpa, gpa + pages * 4096)` for a
    /// channel: page-aligned, inside its heap (so clear of the boot page,
    /// page tables, stacks, image and the control channel).
    pub fn grantable(&self, gpa: u64, pages: u64) -> bool {
        let end = pages
            .checked_mul(4096)
            .and_then(|bytes| gpa.checked_add(bytes));
        gpa.is_multiple_of(4096)
            && pages > 0
            && gpa >= self.heap.start
            && end.is_some_and(|end| end <= self.heap.end)
    }

    /// Where the image byte at link address `vaddr` is loaded (GPA).
    pub fn image_gpa(&self, vaddr: u64) -> u64 {
        IMAGE + (vaddr - self.image_base)
    }

    /// The boot page's GPA.
    pub const fn boot_page(&self) -> u64 {
        CHILD_BOOT_PAGE
    }

    /// The page-table root (CR3).
    pub const fn cr3(&self) -> u64 {
        PML4
    }

    /// Every page-table entry to write, as (GPA of the entry, value). The
    /// table pages themselves must be zero beforehand.
    pub fn table_entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let index = |va: u64, level: u32| (va >> (12 + 9 * (level - 1))) & 0x1ff;
        let high = self.image_base;
        let upper = [
            (PML4, PDPT_LOW | PRESENT_WRITABLE),
            (PML4 + index(high, 4) * 8, PDPT_HIGH | PRESENT_WRITABLE),
            (PDPT_LOW, PD_LOW | PRESENT_WRITABLE),
            (PDPT_HIGH + index(high, 3) * 8, PD_HIGH | PRESENT_WRITABLE),
        ];
        let identity = (0..self.memory / (2 << 20))
            .map(|i| (PD_LOW + i * 8, (i * (2 << 20)) | PRESENT_WRITABLE | LARGE));
        let image_tables = self.image_pages.div_ceil(512);
        let first_pd = index(high, 2);
        let pds = (0..image_tables).map(move |t| {
            (
                PD_HIGH + (first_pd + t) * 8,
                (PT_IMAGE + t * 0x1000) | PRESENT_WRITABLE,
            )
        });
        let ptes = (0..self.image_pages).map(move |p| {
            let va = high + p * 4096;
            let table = (va - (high & !((2 << 20) - 1))) / (2 << 20);
            (
                PT_IMAGE + table * 0x1000 + index(va, 1) * 8,
                (IMAGE + p * 4096) | PRESENT_WRITABLE,
            )
        });
        upper.into_iter().chain(identity).chain(pds).chain(ptes)
    }

    /// The range of page-table pages.
    pub fn tables(&self) -> PhysRange {
        PhysRange {
            start: TABLES,
            end: PT_IMAGE + IMAGE_TABLES * 0x1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables the way the processor would.
    fn walk(entries: &[(u64, u64)], va: u64) -> Option<u64> {
        let read = |gpa: u64| {
            entries
                .iter()
                .rev()
                .find(|e| e.0 == gpa)
                .map(|e| e.1)
                .unwrap_or(0)
        };
        let mut table = PML4;
        for level in (1..=4u32).rev() {
            let e = read(table + ((va >> (12 + 9 * (level - 1))) & 0x1ff) * 8);
            if e & 1 == 0 {
                return None;
            }
            if level == 2 && e & LARGE != 0 {
                return Some((e & !0x1f_ffff & 0x000f_ffff_ffff_f000) + (va & 0x1f_ffff));
            }
            if level == 1 {
                return Some((e & 0x000f_ffff_ffff_f000) + (va & 0xfff));
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
        None
    }

    #[test]
    fn tables_map_identity_and_image() {
        let layout = Layout::new(
            16 << 20,
            PARTITION_IMAGE_BASE,
            PARTITION_IMAGE_BASE + 0x2_3456,
        )
        .unwrap();
        let entries: Vec<(u64, u64)> = layout.table_entries().collect();
        assert_eq!(walk(&entries, 0x1234), Some(0x1234));
        assert_eq!(walk(&entries, (16 << 20) - 1), Some((16 << 20) - 1));
        assert_eq!(walk(&entries, 16 << 20), None);
        assert_eq!(
            walk(&entries, PARTITION_IMAGE_BASE + 0x1_0010),
            Some(IMAGE + 0x1_0010)
        );
        assert_eq!(walk(&entries, PARTITION_IMAGE_BASE + 0x2_4000), None);
        for (gpa, _) in &entries {
            assert!(layout.tables().start <= *gpa && *gpa < layout.tables().end);
        }
        assert!(layout.heap.start >= IMAGE + 0x2_4000);
        assert_eq!(layout.vmbus_control().end, 16 << 20);
        assert_eq!(layout.heap.end, layout.vmbus_control().start);
        assert!(layout.grantable(layout.heap.start, 4));
        assert!(!layout.grantable(layout.heap.start + 1, 4));
        assert!(!layout.grantable(CHILD_BOOT_PAGE, 1));
        assert!(!layout.grantable(layout.vmbus_control().start - 4096, 2));
        assert!(!layout.grantable(layout.heap.start, 0));
        assert!(!layout.grantable(!0xfff, 2));
        assert!(!layout.grantable(layout.heap.start, u64::MAX));
        assert_eq!(layout.image_gpa(PARTITION_IMAGE_BASE + 5), IMAGE + 5);
    }

    #[test]
    fn refuses_impossible_layouts() {
        assert_eq!(
            Layout::new(3 << 20, PARTITION_IMAGE_BASE, PARTITION_IMAGE_BASE + 1),
            Err(LayoutError::BadMemorySize)
        );
        assert_eq!(
            Layout::new(2 << 30, PARTITION_IMAGE_BASE, PARTITION_IMAGE_BASE + 1),
            Err(LayoutError::BadMemorySize)
        );
        assert_eq!(
            Layout::new(
                16 << 20,
                PARTITION_IMAGE_BASE,
                PARTITION_IMAGE_BASE + MAX_IMAGE + 1
            ),
            Err(LayoutError::ImageTooLarge)
        );
        assert_eq!(
            Layout::new(16 << 20, 0x1000, 0x2000),
            Err(LayoutError::ImageTooLarge)
        );
        assert_eq!(
            Layout::new(
                4 << 20,
                PARTITION_IMAGE_BASE,
                PARTITION_IMAGE_BASE + (3 << 20)
            ),
            Err(LayoutError::BadMemorySize)
        );
    }
}
