//! The physical memory map: regions from the boot loader, normalised.
//!
//! # Invariants
//! After every operation the regions are sorted by start, never overlap,
//! are page-aligned, and adjacent regions of the same kind are merged.
//! Usable RAM only ever shrinks: a range reported both usable and reserved
//! is reserved, and partial pages at the edge of usable RAM are dropped.

use crate::{PAGE_SIZE, align_down, align_up};

/// Most regions a map holds (firmware maps on servers have a few dozen).
pub const MAX_REGIONS: usize = 128;

/// What a physical range is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegionKind {
    /// Free RAM.
    Usable,
    /// ACPI tables the OS may reclaim after reading them.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Bad,
    /// Reserved by firmware (or of an unknown type).
    Reserved,
    /// Held by the microkernel (its image, its frame pool, boot structures).
    Hypervisor,
    /// A boot module (partition images, configuration).
    Module,
}

impl RegionKind {
    /// Priority when two kinds claim the same range: the higher one wins.
    fn priority(self) -> u8 {
        match self {
            RegionKind::Usable => 0,
            RegionKind::AcpiReclaimable => 1,
            RegionKind::Module => 2,
            RegionKind::AcpiNvs => 3,
            RegionKind::Reserved => 4,
            RegionKind::Bad => 5,
            RegionKind::Hypervisor => 6,
        }
    }
}

/// A half-open physical range `[start, end)` of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the range is.
    pub kind: RegionKind,
}

impl Region {
    /// Bytes in the region.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the region is empty.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Why a map operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// More than [`MAX_REGIONS`] regions would be needed.
    TooManyRegions,
}

/// A normalised physical memory map (see the module's invariants).
#[derive(Clone, Debug)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    /// An empty map.
    pub const fn new() -> Self {
        MemoryMap {
            regions: [Region {
                start: 0,
                end: 0,
                kind: RegionKind::Reserved,
            }; MAX_REGIONS],
            len: 0,
        }
    }

    /// The regions, sorted.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Iterates over the regions of one kind.
    pub fn of_kind(&self, kind: RegionKind) -> impl Iterator<Item = Region> + '_ {
        self.regions()
            .iter()
            .copied()
            .filter(move |r| r.kind == kind)
    }

    /// Total bytes of one kind.
    pub fn total(&self, kind: RegionKind) -> u64 {
        self.of_kind(kind).map(|r| r.len()).sum()
    }

    /// One past the highest byte of usable RAM (0 if none).
    pub fn usable_end(&self) -> u64 {
        self.of_kind(RegionKind::Usable)
            .map(|r| r.end)
            .max()
            .unwrap_or(0)
    }

    /// The kind of the region holding `addr`, if any.
    pub fn kind_at(&self, addr: u64) -> Option<RegionKind> {
        self.regions()
            .iter()
            .find(|r| r.start <= addr && addr < r.end)
            .map(|r| r.kind)
    }

    /// Adds a range as reported by firmware. Usable ranges shrink to whole
    /// pages; other kinds grow to whole pages. Overlaps resolve to the kind
    /// with the higher priority.
    pub fn add(&mut self, start: u64, len: u64, kind: RegionKind) -> Result<(), MapError> {
        let end = start.saturating_add(len);
        let (start, end) = if kind == RegionKind::Usable {
            (
                align_up(start, PAGE_SIZE).unwrap_or(u64::MAX),
                align_down(end, PAGE_SIZE),
            )
        } else {
            (
                align_down(start, PAGE_SIZE),
                align_up(end, PAGE_SIZE).unwrap_or(u64::MAX),
            )
        };
        if end <= start {
            return Ok(());
        }
        self.paint(Region { start, end, kind })
    }

    /// Marks `[start, end)` as `kind` whatever it was before (used to carve
    /// the hypervisor's and the modules' ranges out of usable RAM). Only
    /// ranges that are RAM-like (usable, reclaimable or module) are repainted.
    pub fn reserve(&mut self, start: u64, end: u64, kind: RegionKind) -> Result<(), MapError> {
        let start = align_down(start, PAGE_SIZE);
        let end = align_up(end, PAGE_SIZE).unwrap_or(u64::MAX);
        if end <= start {
            return Ok(());
        }
        self.paint(Region { start, end, kind })
    }

    /// Paints `new` over the map where its priority is at least the existing one's.
    fn paint(&mut self, new: Region) -> Result<(), MapError> {
        let mut out = MemoryMap::new();
        let mut cursor = new.start;
        for &old in self.regions() {
            if old.end <= new.start || old.start >= new.end {
                out.push(old)?;
                continue;
            }
            // Part of `old` before `new`.
            if old.start < new.start {
                out.push(Region {
                    end: new.start,
                    ..old
                })?;
            }
            // Gap in the map before `old`, inside `new`.
            if cursor < old.start {
                out.push(Region {
                    start: cursor,
                    end: old.start,
                    kind: new.kind,
                })?;
            }
            let overlap_start = old.start.max(new.start);
            let overlap_end = old.end.min(new.end);
            let kind = if new.kind.priority() >= old.kind.priority() {
                new.kind
            } else {
                old.kind
            };
            out.push(Region {
                start: overlap_start,
                end: overlap_end,
                kind,
            })?;
            cursor = overlap_end;
            if old.end > new.end {
                out.push(Region {
                    start: new.end,
                    ..old
                })?;
            }
        }
        if cursor < new.end {
            out.push(Region {
                start: cursor,
                end: new.end,
                kind: new.kind,
            })?;
        }
        out.sort_and_merge();
        *self = out;
        Ok(())
    }

    fn push(&mut self, region: Region) -> Result<(), MapError> {
        if region.is_empty() {
            return Ok(());
        }
        let slot = self
            .regions
            .get_mut(self.len)
            .ok_or(MapError::TooManyRegions)?;
        *slot = region;
        self.len += 1;
        Ok(())
    }

    fn sort_and_merge(&mut self) {
        self.regions[..self.len].sort_unstable_by_key(|r| r.start);
        let mut write = 0;
        for read in 0..self.len {
            let r = self.regions[read];
            if write > 0 {
                let last = &mut self.regions[write - 1];
                if last.kind == r.kind && last.end == r.start {
                    last.end = r.end;
                    continue;
                }
            }
            self.regions[write] = r;
            write += 1;
        }
        self.len = write;
    }

    /// Finds `size` bytes of usable RAM aligned to `align`, inside
    /// `[min, max)`, as high as possible. Does not reserve it.
    pub fn find_usable_top_down(&self, size: u64, align: u64, min: u64, max: u64) -> Option<u64> {
        self.of_kind(RegionKind::Usable)
            .filter_map(|r| {
                let end = r.end.min(max);
                let start = align_down(end.checked_sub(size)?, align);
                (start >= r.start.max(min)).then_some(start)
            })
            .max()
    }

    /// Finds `size` bytes of usable RAM aligned to `align` at or above `min`,
    /// as low as possible. Does not reserve it.
    pub fn find_usable_bottom_up(&self, size: u64, align: u64, min: u64) -> Option<u64> {
        self.of_kind(RegionKind::Usable)
            .filter_map(|r| {
                let start = align_up(r.start.max(min), align)?;
                (start.checked_add(size)? <= r.end).then_some(start)
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegionKind::*;

    fn check_invariants(map: &MemoryMap) {
        let r = map.regions();
        for w in r.windows(2) {
            assert!(w[0].end <= w[1].start, "overlap or unsorted: {w:?}");
            assert!(
                !(w[0].end == w[1].start && w[0].kind == w[1].kind),
                "unmerged: {w:?}"
            );
        }
        for region in r {
            assert_eq!(region.start % PAGE_SIZE, 0);
            assert_eq!(region.end % PAGE_SIZE, 0);
            assert!(!region.is_empty());
        }
    }

    /// The map SeaBIOS gives QEMU with -m 512M.
    fn qemu_map() -> MemoryMap {
        let mut map = MemoryMap::new();
        map.add(0, 0x9fc00, Usable).unwrap();
        map.add(0x9fc00, 0x400, Reserved).unwrap();
        map.add(0xf0000, 0x10000, Reserved).unwrap();
        map.add(0x100000, 0x1fee0000, Usable).unwrap();
        map.add(0x1ffe0000, 0x20000, Reserved).unwrap();
        map.add(0xfffc0000, 0x40000, Reserved).unwrap();
        map
    }

    #[test]
    fn firmware_map_is_normalised() {
        let map = qemu_map();
        check_invariants(&map);
        // The partial page at 0x9fc00 is not usable.
        assert_eq!(map.kind_at(0x9f000), Some(Reserved));
        assert_eq!(map.kind_at(0x9e000), Some(Usable));
        assert_eq!(map.usable_end(), 0x1ffe0000);
        assert_eq!(map.total(Usable), 0x9f000 + 0x1fee0000);
    }

    #[test]
    fn overlapping_reports_resolve_to_reserved() {
        let mut map = MemoryMap::new();
        map.add(0x1000, 0x10000, Usable).unwrap();
        map.add(0x8000, 0x10000, Reserved).unwrap();
        map.add(0x4000, 0x1000, Usable).unwrap(); // already usable, stays
        map.add(0x9000, 0x1000, Usable).unwrap(); // inside reserved: stays reserved
        check_invariants(&map);
        assert_eq!(map.kind_at(0x7fff), Some(Usable));
        assert_eq!(map.kind_at(0x8000), Some(Reserved));
        assert_eq!(map.kind_at(0x9000), Some(Reserved));
        assert_eq!(map.total(Usable), 0x7000);
    }

    #[test]
    fn reserving_punches_holes_and_module_does_not_unreserve() {
        let mut map = qemu_map();
        map.reserve(0x100000, 0x180000, Hypervisor).unwrap();
        map.reserve(0x200123, 0x200456, Module).unwrap();
        map.reserve(0xf0000, 0x100000, Module).unwrap(); // firmware range stays reserved
        check_invariants(&map);
        assert_eq!(map.kind_at(0x17ffff), Some(Hypervisor));
        assert_eq!(map.kind_at(0x180000), Some(Usable));
        assert_eq!(map.kind_at(0x200000), Some(Module));
        assert_eq!(map.kind_at(0x201000), Some(Usable));
        assert_eq!(map.kind_at(0xf0000), Some(Reserved));
    }

    #[test]
    fn degenerate_and_hostile_ranges() {
        let mut map = MemoryMap::new();
        map.add(0x1234, 0x10, Usable).unwrap(); // less than a page: dropped
        map.add(u64::MAX - 0x1000, 0x10000, Usable).unwrap(); // wraps: clamped
        map.add(5, 0, Reserved).unwrap();
        check_invariants(&map);
        assert_eq!(map.total(Usable), 0);
        let mut map = MemoryMap::new();
        for i in 0..(MAX_REGIONS as u64 / 2) {
            map.add(i * 0x4000, 0x1000, Usable).unwrap();
            map.add(i * 0x4000 + 0x2000, 0x1000, Reserved).unwrap();
        }
        assert_eq!(
            map.add(0x1000_0000, 0x1000, Usable),
            Err(MapError::TooManyRegions)
        );
        check_invariants(&map);
    }

    #[test]
    fn finds_aligned_ranges() {
        let map = qemu_map();
        let top = map
            .find_usable_top_down(32 << 20, 2 << 20, 0x100000, 1 << 32)
            .unwrap();
        assert_eq!(top % (2 << 20), 0);
        assert!(top + (32 << 20) <= 0x1ffe0000);
        assert_eq!(top, 0x1de0_0000);
        let low = map.find_usable_bottom_up(0x3000, 0x1000, 0x1000).unwrap();
        assert_eq!(low, 0x1000);
        assert_eq!(map.find_usable_top_down(1 << 40, 4096, 0, u64::MAX), None);
    }
}
