//! Memory objects: a contiguous range of host-physical frames owned by one
//! partition. Part of a range can be donated to create a partition; the
//! donated frames leave every mapping of the donor and come back when the
//! partition is destroyed.
//!
//! # Invariants
//! Donated sub-ranges never overlap; a page is mapped into a partition's
//! SLAT only while it is not donated.

use alloc::vec::Vec;

use super::ObjectId;

/// Where a memory object is mapped in some partition's guest-physical space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The partition.
    pub partition: ObjectId,
    /// Guest-physical address of the first mapped page.
    pub gpa: u64,
    /// First page of the object that is mapped.
    pub first_page: u64,
    /// Pages mapped.
    pub pages: u64,
}

/// A range of frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Host-physical address of the first frame.
    pub base: u64,
    /// Frames in the range.
    pub pages: u64,
    /// The partition whose memory this is.
    pub owner: ObjectId,
    /// The memory object this one was donated from, if any.
    pub donor: Option<ObjectId>,
    /// Sub-ranges donated away: (first page, pages, the child memory object).
    pub donated: Vec<(u64, u64, ObjectId)>,
    /// Where the object is mapped.
    pub mappings: Vec<Mapping>,
    /// For a donated object: the donor's mappings its pages were removed
    /// from (pages numbered in the donor), restored when it returns.
    pub restore: Vec<Mapping>,
}

impl Memory {
    /// Whether `[first, first + pages)` lies inside the object.
    pub fn contains(&self, first: u64, pages: u64) -> bool {
        first
            .checked_add(pages)
            .is_some_and(|end| end <= self.pages)
            && pages > 0
    }

    /// Whether any page of `[first, first + pages)` is donated.
    pub fn overlaps_donation(&self, first: u64, pages: u64) -> bool {
        self.donated
            .iter()
            .any(|&(f, p, _)| first < f + p && f < first + pages)
    }

    /// Removes the pages `[first, first + pages)` from the mapping records,
    /// splitting records as needed; returns the removed pieces.
    /// Only records of `only` are touched when it is given.
    pub fn unrecord(&mut self, first: u64, pages: u64, only: Option<ObjectId>) -> Vec<Mapping> {
        let end = first + pages;
        let chosen = |m: &Mapping| only.is_none_or(|p| p == m.partition);
        let removed = self
            .mappings
            .iter()
            .filter(|m| chosen(m))
            .filter_map(|m| {
                let start = first.max(m.first_page);
                let stop = end.min(m.first_page + m.pages);
                (start < stop).then(|| Mapping {
                    partition: m.partition,
                    gpa: m.gpa + (start - m.first_page) * 4096,
                    first_page: start,
                    pages: stop - start,
                })
            })
            .collect();
        let mut kept = Vec::new();
        for m in self.mappings.drain(..) {
            let m_end = m.first_page + m.pages;
            if m_end <= first || m.first_page >= end || !chosen(&m) {
                kept.push(m);
                continue;
            }
            if m.first_page < first {
                kept.push(Mapping {
                    pages: first - m.first_page,
                    ..m
                });
            }
            if m_end > end {
                let skip = end - m.first_page;
                kept.push(Mapping {
                    gpa: m.gpa + skip * 4096,
                    first_page: end,
                    pages: m_end - end,
                    ..m
                });
            }
        }
        self.mappings = kept;
        removed
    }

    /// Removes the guest-physical range `[gpa, gpa + pages)` of
    /// `partition` from the mapping records, splitting records as needed;
    /// returns the removed pieces. Other mappings of the same pages (an
    /// alias at another address, another partition's) stay.
    pub fn unrecord_gpa(&mut self, partition: ObjectId, gpa: u64, pages: u64) -> Vec<Mapping> {
        let end = gpa + pages * 4096;
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for m in self.mappings.drain(..) {
            let m_end = m.gpa + m.pages * 4096;
            if m.partition != partition || m_end <= gpa || m.gpa >= end {
                kept.push(m);
                continue;
            }
            let start = gpa.max(m.gpa);
            let stop = end.min(m_end);
            removed.push(Mapping {
                partition,
                gpa: start,
                first_page: m.first_page + (start - m.gpa) / 4096,
                pages: (stop - start) / 4096,
            });
            if m.gpa < start {
                kept.push(Mapping {
                    pages: (start - m.gpa) / 4096,
                    ..m
                });
            }
            if m_end > stop {
                kept.push(Mapping {
                    gpa: stop,
                    first_page: m.first_page + (stop - m.gpa) / 4096,
                    pages: (m_end - stop) / 4096,
                    ..m
                });
            }
        }
        self.mappings = kept;
        removed
    }

    /// Records of `partition` that removing `[gpa, gpa + pages)` would split
    /// in two (they extend past both ends): what an unmap adds.
    pub fn splits_gpa(&self, partition: ObjectId, gpa: u64, pages: u64) -> usize {
        let end = gpa + pages * 4096;
        self.mappings
            .iter()
            .filter(|m| m.partition == partition && m.gpa < gpa && m.gpa + m.pages * 4096 > end)
            .count()
    }

    /// Records that removing object pages `[first, first + pages)` would
    /// split in two, per partition.
    pub fn splits(&self, first: u64, pages: u64) -> Vec<ObjectId> {
        self.mappings
            .iter()
            .filter(|m| m.first_page < first && m.first_page + m.pages > first + pages)
            .map(|m| m.partition)
            .collect()
    }

    /// The mappings that cover any page of `[first, first + pages)`, as
    /// (partition, gpa of the first overlapping page, pages overlapping).
    pub fn mapped_overlap(&self, first: u64, pages: u64) -> Vec<(ObjectId, u64, u64)> {
        self.mappings
            .iter()
            .filter_map(|m| {
                let start = first.max(m.first_page);
                let end = (first + pages).min(m.first_page + m.pages);
                (start < end).then(|| {
                    (
                        m.partition,
                        m.gpa + (start - m.first_page) * 4096,
                        end - start,
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ObjectId = ObjectId {
        index: 0,
        generation: 0,
    };
    const C: ObjectId = ObjectId {
        index: 5,
        generation: 0,
    };

    #[test]
    fn ranges_and_overlaps() {
        let mut m = Memory {
            base: 0x100_0000,
            pages: 100,
            owner: P,
            donor: None,
            donated: Vec::new(),
            mappings: Vec::new(),
            restore: Vec::new(),
        };
        assert!(m.contains(0, 100));
        assert!(!m.contains(1, 100));
        assert!(!m.contains(0, 0));
        assert!(!m.contains(u64::MAX, 2));
        m.donated.push((10, 10, C));
        assert!(m.overlaps_donation(19, 5));
        assert!(!m.overlaps_donation(20, 5));
        m.mappings.push(Mapping {
            partition: P,
            gpa: 0x100_0000,
            first_page: 0,
            pages: 100,
        });
        assert_eq!(m.mapped_overlap(10, 10), alloc::vec![(P, 0x100_a000, 10)]);
        assert_eq!(
            m.unrecord(10, 10, None),
            alloc::vec![Mapping {
                partition: P,
                gpa: 0x100_a000,
                first_page: 10,
                pages: 10
            }]
        );
        assert_eq!(m.mappings.len(), 2, "split around the hole");
        assert!(m.mapped_overlap(10, 10).is_empty());
        assert_eq!(
            m.mapped_overlap(0, 100).iter().map(|x| x.2).sum::<u64>(),
            90
        );
    }

    #[test]
    fn unrecording_an_alias_keeps_the_original() {
        let mut m = Memory {
            base: 0x100_0000,
            pages: 100,
            owner: P,
            donor: None,
            donated: Vec::new(),
            mappings: Vec::new(),
            restore: Vec::new(),
        };
        let original = Mapping {
            partition: P,
            gpa: 0x100_0000,
            first_page: 0,
            pages: 100,
        };
        m.mappings.push(original);
        // Page 7 mapped a second time, at 0x4000_0000.
        m.mappings.push(Mapping {
            partition: P,
            gpa: 0x4000_0000,
            first_page: 7,
            pages: 1,
        });
        assert_eq!(m.splits_gpa(P, 0x4000_0000, 1), 0);
        let removed = m.unrecord_gpa(P, 0x4000_0000, 1);
        assert_eq!(
            removed,
            alloc::vec![Mapping {
                partition: P,
                gpa: 0x4000_0000,
                first_page: 7,
                pages: 1
            }]
        );
        assert_eq!(
            m.mappings,
            alloc::vec![original],
            "the original stays whole"
        );
        // A hole in the middle of the original splits it.
        assert_eq!(m.splits_gpa(P, 0x100_7000, 2), 1);
        let removed = m.unrecord_gpa(P, 0x100_7000, 2);
        assert_eq!(removed[0].first_page, 7);
        assert_eq!(removed[0].pages, 2);
        assert_eq!(m.mappings.len(), 2);
        assert_eq!(m.mappings[1].first_page, 9);
        assert_eq!(m.mappings[1].gpa, 0x100_9000);
        assert_eq!(m.mappings[1].pages, 91);
        assert_eq!(m.splits(50, 1), alloc::vec![P]);
        assert!(m.splits(0, 7).is_empty());
    }
}
