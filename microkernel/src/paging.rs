//! Four-level page tables, generic over the entry format and over how table
//! memory is reached.
//!
//! The same walker builds the microkernel's own page tables, the root
//! partition's initial guest page tables and the nested page tables (NPT)
//! that confine every partition; an EPT format slots in beside them. Table
//! memory is reached through [`TableMemory`], so host tests run the code
//! over fake memory.
//!
//! The x86-64 entry bits are the `x86_64` crate's [`PageTableFlags`]; the
//! EPT bits, which that crate lacks, are [`EptFlags`].
//!
//! # Invariants
//! A mapping never silently replaces another: mapping over a present entry
//! is an error. Addresses are checked for alignment before any table changes.

use x86_64::structures::paging::PageTableFlags;

use crate::{LARGE_PAGE_SIZE, PAGE_SIZE};

/// Entries per table.
pub const ENTRIES: usize = 512;

/// Access rights of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Writes allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
}

impl Access {
    /// Read, write and execute.
    pub const RWX: Access = Access {
        write: true,
        execute: true,
    };
    /// Read and write, no execute.
    pub const RW: Access = Access {
        write: true,
        execute: false,
    };
    /// Read only.
    pub const R: Access = Access {
        write: false,
        execute: false,
    };
}

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Write-back: RAM.
    WriteBack,
    /// Uncacheable: device registers.
    Uncacheable,
}

/// Page sizes a leaf entry can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB.
    Small,
    /// 2 MiB.
    Large,
}

impl PageSize {
    /// Bytes mapped by one entry.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Small => PAGE_SIZE,
            PageSize::Large => LARGE_PAGE_SIZE,
        }
    }
}

/// How entries of one kind of page table are encoded.
pub trait EntryFormat {
    /// A non-leaf entry pointing at the table at `table`.
    fn table(table: u64) -> u64;
    /// A leaf entry mapping `frame` (aligned to the page size).
    fn leaf(frame: u64, size: PageSize, access: Access, cache: CacheMode) -> u64;
    /// Whether the entry is present.
    fn is_present(entry: u64) -> bool;
    /// Whether a present entry at `level` (1 = page table, 2 = directory) is a leaf.
    fn is_leaf(entry: u64, level: u8) -> bool;
    /// Physical address in the entry.
    fn address(entry: u64) -> u64 {
        entry & 0x000f_ffff_ffff_f000
    }
    /// Access rights of a present leaf entry.
    fn access(entry: u64) -> Access;
    /// The bit the processor sets in a leaf when the page is written.
    const DIRTY: u64 = PageTableFlags::DIRTY.bits();
}

/// The page-size bit of a directory entry (bit 7 in both formats; PAT in
/// a 4 KiB x86-64 leaf).
const PS: u64 = PageTableFlags::HUGE_PAGE.bits();

/// The flag bits of an x86-64 entry (the address bits dropped).
fn x86_flags(entry: u64) -> PageTableFlags {
    PageTableFlags::from_bits_truncate(entry)
}

fn x86_leaf(frame: u64, size: PageSize, access: Access, cache: CacheMode, user: bool) -> u64 {
    let mut flags = PageTableFlags::PRESENT;
    flags.set(PageTableFlags::USER_ACCESSIBLE, user);
    flags.set(PageTableFlags::WRITABLE, access.write);
    flags.set(PageTableFlags::NO_EXECUTE, !access.execute);
    flags.set(
        PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH,
        cache == CacheMode::Uncacheable,
    );
    flags.set(PageTableFlags::HUGE_PAGE, size == PageSize::Large);
    frame | flags.bits()
}

fn x86_access(entry: u64) -> Access {
    let flags = x86_flags(entry);
    Access {
        write: flags.contains(PageTableFlags::WRITABLE),
        execute: !flags.contains(PageTableFlags::NO_EXECUTE),
    }
}

/// x86-64 page-table entries; `USER` sets the U bit in every entry.
pub struct X86Entries<const USER: bool>;

/// x86-64 page tables for supervisor code (the microkernel's own, and a
/// partition's guest page tables).
pub type X86Format = X86Entries<false>;

/// AMD nested page tables: the x86-64 format, walked as user accesses, so
/// every entry carries the U bit (without it the first guest walk faults).
pub type NptFormat = X86Entries<true>;

impl<const USER: bool> EntryFormat for X86Entries<USER> {
    fn table(table: u64) -> u64 {
        let mut flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
        flags.set(PageTableFlags::USER_ACCESSIBLE, USER);
        table | flags.bits()
    }
    fn leaf(frame: u64, size: PageSize, access: Access, cache: CacheMode) -> u64 {
        x86_leaf(frame, size, access, cache, USER)
    }
    fn is_present(entry: u64) -> bool {
        x86_flags(entry).contains(PageTableFlags::PRESENT)
    }
    fn is_leaf(entry: u64, level: u8) -> bool {
        level == 1 || x86_flags(entry).contains(PageTableFlags::HUGE_PAGE)
    }
    fn access(entry: u64) -> Access {
        x86_access(entry)
    }
}

/// Intel extended page tables: read/write/execute bits instead of
/// present/writable/no-execute, the memory type in bits 3–5 of a leaf, the
/// dirty flag in bit 9 (with A/D flags enabled in the EPT pointer).
pub struct EptFormat;

bitflags::bitflags! {
    /// The flag bits of an EPT entry (Intel SDM vol. 3, "EPT Translation
    /// Mechanism"; the address bits are not flags).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EptFlags: u64 {
        /// Reads allowed.
        const READ = 1 << 0;
        /// Writes allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches allowed.
        const EXECUTE = 1 << 2;
        /// Memory type write-back (6 in bits 3–5 of a leaf; 0 is uncacheable).
        const WRITE_BACK = 6 << 3;
        /// A 2 MiB leaf (in a directory entry).
        const LARGE = 1 << 7;
        /// Accessed (with A/D flags enabled in the EPT pointer).
        const ACCESSED = 1 << 8;
        /// Dirty (with A/D flags enabled in the EPT pointer).
        const DIRTY = 1 << 9;
    }
}

impl EntryFormat for EptFormat {
    fn table(table: u64) -> u64 {
        table | (EptFlags::READ | EptFlags::WRITE | EptFlags::EXECUTE).bits()
    }
    fn leaf(frame: u64, size: PageSize, access: Access, cache: CacheMode) -> u64 {
        let mut flags = EptFlags::READ;
        flags.set(EptFlags::WRITE, access.write);
        flags.set(EptFlags::EXECUTE, access.execute);
        flags.set(EptFlags::WRITE_BACK, cache == CacheMode::WriteBack);
        flags.set(EptFlags::LARGE, size == PageSize::Large);
        frame | flags.bits()
    }
    fn is_present(entry: u64) -> bool {
        EptFlags::from_bits_truncate(entry)
            .intersects(EptFlags::READ | EptFlags::WRITE | EptFlags::EXECUTE)
    }
    fn is_leaf(entry: u64, level: u8) -> bool {
        level == 1 || EptFlags::from_bits_truncate(entry).contains(EptFlags::LARGE)
    }
    fn access(entry: u64) -> Access {
        let flags = EptFlags::from_bits_truncate(entry);
        Access {
            write: flags.contains(EptFlags::WRITE),
            execute: flags.contains(EptFlags::EXECUTE),
        }
    }
    const DIRTY: u64 = EptFlags::DIRTY.bits();
}

/// Where page-table memory lives and how new tables are obtained.
pub trait TableMemory {
    /// A new zeroed table; its physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Reads entry `index` of the table at `table`.
    fn read(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` of the table at `table`.
    fn write(&mut self, table: u64, index: usize, value: u64);
}

/// Why a page-table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or length is not aligned to the page size.
    Misaligned,
    /// The address is beyond 48 bits (or the range wraps).
    OutOfRange,
    /// The range is already (partly) mapped.
    AlreadyMapped,
    /// No memory for a new table.
    NoMemory,
}

/// A translation found by [`PageTable::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address the input address maps to.
    pub phys: u64,
    /// Size of the page holding it.
    pub size: PageSize,
    /// Its access rights.
    pub access: Access,
}

/// A four-level page table rooted at `root`.
pub struct PageTable<F: EntryFormat> {
    root: u64,
    format: core::marker::PhantomData<F>,
}

fn index(addr: u64, level: u8) -> usize {
    ((addr >> (12 + 9 * (level as u64 - 1))) & 0x1ff) as usize
}

/// Whether `addr` is a canonical 48-bit address (bits 63..47 all equal).
fn canonical(addr: u64) -> bool {
    !((1 << 47)..0xffff_8000_0000_0000).contains(&addr)
}

impl<F: EntryFormat> PageTable<F> {
    /// A new, empty table tree.
    pub fn new(mem: &mut impl TableMemory) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::NoMemory)?;
        Ok(PageTable {
            root,
            format: core::marker::PhantomData,
        })
    }

    /// The tree rooted at `root` (built earlier with the same format).
    pub fn from_root(root: u64) -> Self {
        PageTable {
            root,
            format: core::marker::PhantomData,
        }
    }

    /// Physical address of the top-level table (for CR3 / nCR3 / EPTP).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `[virt, virt + len)` to `[phys, phys + len)` with pages of `size`.
    // A parameter struct would only rename the same seven values.
    #[allow(clippy::too_many_arguments)]
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        virt: u64,
        phys: u64,
        len: u64,
        size: PageSize,
        access: Access,
        cache: CacheMode,
    ) -> Result<(), MapError> {
        let step = size.bytes();
        if !virt.is_multiple_of(step) || !phys.is_multiple_of(step) || !len.is_multiple_of(step) {
            return Err(MapError::Misaligned);
        }
        let end = virt.checked_add(len).ok_or(MapError::OutOfRange)?;
        let last = end.saturating_sub(1).max(virt);
        let same_half = (virt >> 47) == (last >> 47);
        if !canonical(virt) || !canonical(last) || !same_half || phys.checked_add(len).is_none() {
            return Err(MapError::OutOfRange);
        }
        // Check first so a failure changes nothing.
        let mut at = virt;
        while at < end {
            if self.translate(mem, at).is_some() {
                return Err(MapError::AlreadyMapped);
            }
            at += step;
        }
        let mut offset = 0;
        while offset < len {
            self.map_one(mem, virt + offset, phys + offset, size, access, cache)?;
            offset += step;
        }
        Ok(())
    }

    /// Maps a range with the largest pages that fit, 4 KiB at the unaligned edges.
    pub fn map_range(
        &mut self,
        mem: &mut impl TableMemory,
        virt: u64,
        phys: u64,
        len: u64,
        access: Access,
        cache: CacheMode,
    ) -> Result<(), MapError> {
        if !virt.is_multiple_of(PAGE_SIZE)
            || !phys.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
        {
            return Err(MapError::Misaligned);
        }
        let mut offset = 0;
        while offset < len {
            let (v, p, rest) = (virt + offset, phys + offset, len - offset);
            let size = if v % LARGE_PAGE_SIZE == 0
                && p % LARGE_PAGE_SIZE == 0
                && rest >= LARGE_PAGE_SIZE
            {
                PageSize::Large
            } else {
                PageSize::Small
            };
            self.map(mem, v, p, size.bytes(), size, access, cache)?;
            offset += size.bytes();
        }
        Ok(())
    }

    fn map_one(
        &mut self,
        mem: &mut impl TableMemory,
        virt: u64,
        phys: u64,
        size: PageSize,
        access: Access,
        cache: CacheMode,
    ) -> Result<(), MapError> {
        let leaf_level = if size == PageSize::Large { 2 } else { 1 };
        let mut table = self.root;
        let mut level = 4;
        while level > leaf_level {
            let i = index(virt, level);
            let entry = mem.read(table, i);
            table = if F::is_present(entry) {
                if F::is_leaf(entry, level) {
                    return Err(MapError::AlreadyMapped);
                }
                F::address(entry)
            } else {
                let next = mem.alloc_table().ok_or(MapError::NoMemory)?;
                mem.write(table, i, F::table(next));
                next
            };
            level -= 1;
        }
        let i = index(virt, leaf_level);
        if F::is_present(mem.read(table, i)) {
            return Err(MapError::AlreadyMapped);
        }
        mem.write(table, i, F::leaf(phys, size, access, cache));
        Ok(())
    }

    /// Removes the page mapping `virt`, splitting nothing: `virt` must be the
    /// start of a mapped page. Returns the page's size.
    pub fn unmap(&mut self, mem: &mut impl TableMemory, virt: u64) -> Result<PageSize, MapError> {
        let (table, i, level) = self.leaf_slot(mem, virt).ok_or(MapError::OutOfRange)?;
        let size = if level == 2 {
            PageSize::Large
        } else {
            PageSize::Small
        };
        if !virt.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned);
        }
        mem.write(table, i, 0);
        Ok(size)
    }

    fn leaf_slot(&self, mem: &impl TableMemory, virt: u64) -> Option<(u64, usize, u8)> {
        if !canonical(virt) {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4u8).rev() {
            let i = index(virt, level);
            let entry = mem.read(table, i);
            if !F::is_present(entry) {
                return None;
            }
            if level <= 2 && F::is_leaf(entry, level) {
                return Some((table, i, level));
            }
            table = F::address(entry);
        }
        None
    }

    /// Unmaps every page in `[virt, virt + len)` that is mapped, splitting
    /// 2 MiB pages that the range covers only partly.
    pub fn unmap_range(
        &mut self,
        mem: &mut impl TableMemory,
        virt: u64,
        len: u64,
    ) -> Result<(), MapError> {
        if !virt.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        let end = virt.checked_add(len).ok_or(MapError::OutOfRange)?;
        let mut at = virt;
        while at < end {
            match self.leaf_slot(mem, at) {
                None => at += PAGE_SIZE,
                Some((table, i, 2)) => {
                    let large = at & !(LARGE_PAGE_SIZE - 1);
                    if large >= virt && large + LARGE_PAGE_SIZE <= end {
                        mem.write(table, i, 0);
                        at = large + LARGE_PAGE_SIZE;
                    } else {
                        self.split(mem, table, i)?;
                    }
                }
                Some((table, i, _)) => {
                    mem.write(table, i, 0);
                    at += PAGE_SIZE;
                }
            }
        }
        Ok(())
    }

    /// Replaces the 2 MiB leaf at `table[i]` by a table of 512 4 KiB leaves
    /// with the same frame, rights and memory type.
    fn split(&mut self, mem: &mut impl TableMemory, table: u64, i: usize) -> Result<(), MapError> {
        let entry = mem.read(table, i);
        let next = mem.alloc_table().ok_or(MapError::NoMemory)?;
        let base = F::address(entry) & !(LARGE_PAGE_SIZE - 1);
        // The small-page encoding keeps every attribute bit except PS (bit 7,
        // which is PAT in a 4 KiB entry): clear it.
        let attrs = entry & !0x000f_ffff_ffff_f000 & !PS;
        for j in 0..ENTRIES {
            mem.write(next, j, (base + j as u64 * PAGE_SIZE) | attrs);
        }
        mem.write(table, i, F::table(next));
        Ok(())
    }

    /// Reads and clears the dirty bit of the leaf mapping `virt` (false if unmapped).
    pub fn take_dirty(&mut self, mem: &mut impl TableMemory, virt: u64) -> bool {
        match self.leaf_slot(mem, virt) {
            Some((table, i, _)) => {
                let entry = mem.read(table, i);
                if entry & F::DIRTY != 0 {
                    mem.write(table, i, entry & !F::DIRTY);
                    true
                } else {
                    false
                }
            }
            None => false,
        }
    }

    /// Every table of the tree, root last (to free them).
    pub fn tables(&self, mem: &impl TableMemory) -> alloc::vec::Vec<u64> {
        let mut out = alloc::vec::Vec::new();
        self.collect(mem, self.root, 4, &mut out);
        out
    }

    fn collect(
        &self,
        mem: &impl TableMemory,
        table: u64,
        level: u8,
        out: &mut alloc::vec::Vec<u64>,
    ) {
        if level > 1 {
            for i in 0..ENTRIES {
                let e = mem.read(table, i);
                if F::is_present(e) && !F::is_leaf(e, level) {
                    self.collect(mem, F::address(e), level - 1, out);
                }
            }
        }
        out.push(table);
    }

    /// Walks the tables for `virt`.
    pub fn translate(&self, mem: &impl TableMemory, virt: u64) -> Option<Translation> {
        let (table, i, level) = self.leaf_slot(mem, virt)?;
        let entry = mem.read(table, i);
        let size = if level == 2 {
            PageSize::Large
        } else {
            PageSize::Small
        };
        let offset = virt & (size.bytes() - 1);
        Some(Translation {
            phys: F::address(entry) + offset,
            size,
            access: F::access(entry),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const P: u64 = PageTableFlags::PRESENT.bits();
    const US: u64 = PageTableFlags::USER_ACCESSIBLE.bits();
    const PWT: u64 = PageTableFlags::WRITE_THROUGH.bits();
    const PCD: u64 = PageTableFlags::NO_CACHE.bits();
    const NX: u64 = PageTableFlags::NO_EXECUTE.bits();
    const DIRTY: u64 = PageTableFlags::DIRTY.bits();
    const ACCESSED: u64 = PageTableFlags::ACCESSED.bits();

    /// Fake physical memory: tables in a map, handed out from a counter.
    struct FakeMemory {
        tables: HashMap<u64, [u64; ENTRIES]>,
        next: u64,
        limit: usize,
    }

    impl FakeMemory {
        fn new(limit: usize) -> Self {
            FakeMemory {
                tables: HashMap::new(),
                next: 0x1000_0000,
                limit,
            }
        }
    }

    impl TableMemory for FakeMemory {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() >= self.limit {
                return None;
            }
            let at = self.next;
            self.next += PAGE_SIZE;
            self.tables.insert(at, [0; ENTRIES]);
            Some(at)
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, value: u64) {
            self.tables
                .get_mut(&table)
                .expect("write to a table never allocated")[index] = value;
        }
    }

    #[test]
    fn maps_and_walks_small_and_large_pages() {
        let mut mem = FakeMemory::new(64);
        let mut pt = PageTable::<X86Format>::new(&mut mem).unwrap();
        pt.map(
            &mut mem,
            0x40_0000,
            0x1234_5000,
            0x2000,
            PageSize::Small,
            Access::RW,
            CacheMode::WriteBack,
        )
        .unwrap();
        pt.map(
            &mut mem,
            0x7fff_8000_0000,
            0x20_0000,
            0x40_0000,
            PageSize::Large,
            Access::RWX,
            CacheMode::Uncacheable,
        )
        .unwrap();
        let t = pt.translate(&mem, 0x40_1abc).unwrap();
        assert_eq!(
            t,
            Translation {
                phys: 0x1234_6abc,
                size: PageSize::Small,
                access: Access::RW
            }
        );
        let t = pt.translate(&mem, 0x7fff_8030_0001).unwrap();
        assert_eq!(t.phys, 0x50_0001);
        assert_eq!(t.size, PageSize::Large);
        assert_eq!(pt.translate(&mem, 0x40_2000), None);
        assert_eq!(pt.translate(&mem, 1 << 50), None);
        // The top 2 GiB (where partition images are linked) is canonical.
        pt.map(
            &mut mem,
            0xffff_ffff_8000_0000,
            0x30_0000,
            0x1000,
            PageSize::Small,
            Access::RWX,
            CacheMode::WriteBack,
        )
        .unwrap();
        assert_eq!(
            pt.translate(&mem, 0xffff_ffff_8000_0123).unwrap().phys,
            0x30_0123
        );
        assert_eq!(
            pt.map(
                &mut mem,
                0x7fff_ffff_f000,
                0,
                0x2000,
                PageSize::Small,
                Access::R,
                CacheMode::WriteBack
            ),
            Err(MapError::OutOfRange),
            "a range crossing the canonical hole"
        );
        // The leaf entry encodes NX for non-executable pages and PCD/PWT for UC.
        let (table, i, _) = pt.leaf_slot(&mem, 0x7fff_8000_0000).unwrap();
        let e = mem.read(table, i);
        assert_eq!(e & (NX | PCD | PWT | PS | US), PCD | PWT | PS);
    }

    #[test]
    fn refuses_overlaps_misalignment_and_wrap_without_changing_anything() {
        let mut mem = FakeMemory::new(64);
        let mut pt = PageTable::<NptFormat>::new(&mut mem).unwrap();
        pt.map(
            &mut mem,
            0x20_0000,
            0x20_0000,
            0x20_0000,
            PageSize::Large,
            Access::RWX,
            CacheMode::WriteBack,
        )
        .unwrap();
        let before = mem.tables.clone();
        assert_eq!(
            pt.map(
                &mut mem,
                0x1f_f000,
                0,
                0x2000,
                PageSize::Small,
                Access::R,
                CacheMode::WriteBack
            ),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            pt.map(
                &mut mem,
                0x1000,
                0x1800,
                0x1000,
                PageSize::Small,
                Access::R,
                CacheMode::WriteBack
            ),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            pt.map(
                &mut mem,
                u64::MAX - 0xfff,
                0,
                0x2000,
                PageSize::Small,
                Access::R,
                CacheMode::WriteBack
            ),
            Err(MapError::OutOfRange)
        );
        assert_eq!(before, mem.tables, "failed maps changed the tables");
    }

    #[test]
    fn npt_entries_all_carry_the_user_bit() {
        let mut mem = FakeMemory::new(64);
        let mut pt = PageTable::<NptFormat>::new(&mut mem).unwrap();
        pt.map_range(
            &mut mem,
            0x1f_f000,
            0x1f_f000,
            0x40_2000,
            Access::RWX,
            CacheMode::WriteBack,
        )
        .unwrap();
        for table in mem.tables.values() {
            for &e in table.iter().filter(|e| **e & P != 0) {
                assert_ne!(e & US, 0, "entry {e:#x} lacks U");
            }
        }
        // map_range used one 4K page, two 2M pages, then one 4K page.
        assert_eq!(pt.translate(&mem, 0x1f_f000).unwrap().size, PageSize::Small);
        assert_eq!(pt.translate(&mem, 0x20_0000).unwrap().size, PageSize::Large);
        assert_eq!(pt.translate(&mem, 0x40_0000).unwrap().size, PageSize::Large);
        assert_eq!(pt.translate(&mem, 0x60_0000).unwrap().size, PageSize::Small);
        assert_eq!(pt.translate(&mem, 0x60_1000), None);
    }

    #[test]
    fn unmap_range_splits_large_pages_and_tracks_dirty_bits() {
        let mut mem = FakeMemory::new(64);
        let mut pt = PageTable::<NptFormat>::new(&mut mem).unwrap();
        pt.map_range(&mut mem, 0, 0, 0x60_0000, Access::RWX, CacheMode::WriteBack)
            .unwrap();
        pt.unmap_range(&mut mem, 0x20_3000, 0x2000).unwrap();
        assert_eq!(pt.translate(&mem, 0x20_2fff).unwrap().phys, 0x20_2fff);
        assert_eq!(
            pt.translate(&mem, 0x20_2fff).unwrap().size,
            PageSize::Small,
            "split"
        );
        assert_eq!(pt.translate(&mem, 0x20_3000), None);
        assert_eq!(pt.translate(&mem, 0x20_4fff), None);
        assert_eq!(pt.translate(&mem, 0x20_5000).unwrap().access, Access::RWX);
        assert_eq!(
            pt.translate(&mem, 0x40_0000).unwrap().size,
            PageSize::Large,
            "untouched"
        );
        pt.unmap_range(&mut mem, 0x40_0000, 0x20_0000).unwrap();
        assert_eq!(pt.translate(&mem, 0x40_0000), None);
        // Dirty bits: set by "hardware", read and cleared once.
        let (table, i, _) = pt.leaf_slot(&mem, 0x20_6000).unwrap();
        let e = mem.read(table, i);
        mem.write(table, i, e | DIRTY | ACCESSED);
        assert!(pt.take_dirty(&mut mem, 0x20_6000));
        assert!(!pt.take_dirty(&mut mem, 0x20_6000));
        assert!(!pt.take_dirty(&mut mem, 0x40_0000), "unmapped");
        assert_eq!(pt.tables(&mem).len(), mem.tables.len());
    }

    #[test]
    fn ept_entries_encode_rights_type_and_dirty_bit() {
        let mut mem = FakeMemory::new(16);
        let mut pt = PageTable::<EptFormat>::new(&mut mem).unwrap();
        pt.map(
            &mut mem,
            0x20_0000,
            0x20_0000,
            0x20_0000,
            PageSize::Large,
            Access::RW,
            CacheMode::WriteBack,
        )
        .unwrap();
        pt.map(
            &mut mem,
            0x1000,
            0x9000,
            0x1000,
            PageSize::Small,
            Access::R,
            CacheMode::Uncacheable,
        )
        .unwrap();
        let (table, i, _) = pt.leaf_slot(&mem, 0x20_0000).unwrap();
        assert_eq!(mem.read(table, i), 0x20_0000 | 0b011 | (6 << 3) | PS);
        let (small, j, _) = pt.leaf_slot(&mem, 0x1000).unwrap();
        assert_eq!(mem.read(small, j), 0x9000 | 0b001);
        assert_eq!(pt.translate(&mem, 0x20_1234).unwrap().access, Access::RW);
        mem.write(table, i, mem.read(table, i) | (1 << 9));
        assert!(pt.take_dirty(&mut mem, 0x20_0000));
        assert!(!pt.take_dirty(&mut mem, 0x20_0000));
    }

    #[test]
    fn unmap_and_out_of_table_memory() {
        let mut mem = FakeMemory::new(3);
        let mut pt = PageTable::<X86Format>::new(&mut mem).unwrap();
        // Needs PDPT + PD + PT = 3 more tables, only 2 left.
        assert_eq!(
            pt.map(
                &mut mem,
                0x1000,
                0x1000,
                0x1000,
                PageSize::Small,
                Access::RW,
                CacheMode::WriteBack
            ),
            Err(MapError::NoMemory)
        );
        let mut mem = FakeMemory::new(8);
        let mut pt = PageTable::<X86Format>::new(&mut mem).unwrap();
        pt.map(
            &mut mem,
            0x1000,
            0x5000,
            0x1000,
            PageSize::Small,
            Access::RW,
            CacheMode::WriteBack,
        )
        .unwrap();
        assert_eq!(pt.unmap(&mut mem, 0x1000), Ok(PageSize::Small));
        assert_eq!(pt.translate(&mem, 0x1000), None);
        assert_eq!(pt.unmap(&mut mem, 0x1000), Err(MapError::OutOfRange));
    }
}
