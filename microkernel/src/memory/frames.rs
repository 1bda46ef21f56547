//! The frame allocator for the microkernel's own memory pool.
//!
//! The pool is one contiguous, page-aligned range of RAM that the boot code
//! takes for the microkernel (its heap, stacks, page tables, VMCBs); the
//! root partition's SLAT never maps it. A bitmap records which frames are in
//! use; allocations are runs of contiguous frames with a power-of-two
//! alignment.
//!
//! # Invariants
//! A frame is handed out at most once until it is freed; `free` of a frame
//! that is not allocated, or outside the pool, is refused.

use crate::PAGE_SIZE;

/// Most frames a pool can hold (256 MiB of 4 KiB frames).
pub const MAX_POOL_FRAMES: usize = 64 * 1024;
const WORDS: usize = MAX_POOL_FRAMES / 64;

/// Why an allocator call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free run of the requested size and alignment.
    OutOfMemory,
    /// The address is not a frame of this pool, or not allocated.
    NotAllocated,
    /// Count 0, an alignment that is not a power of two, or a misaligned pool.
    BadRequest,
}

/// A bitmap allocator over one contiguous pool of frames.
pub struct FrameAllocator {
    base: u64,
    frames: usize,
    used: [u64; WORDS],
    in_use: usize,
}

impl FrameAllocator {
    /// An allocator over `[base, base + frames * 4 KiB)`, all free.
    pub fn new(base: u64, frames: usize) -> Result<Self, FrameError> {
        if !base.is_multiple_of(PAGE_SIZE) || frames == 0 || frames > MAX_POOL_FRAMES {
            return Err(FrameError::BadRequest);
        }
        Ok(FrameAllocator {
            base,
            frames,
            used: [0; WORDS],
            in_use: 0,
        })
    }

    /// First byte of the pool.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// One past the last byte of the pool.
    pub fn end(&self) -> u64 {
        self.base + self.frames as u64 * PAGE_SIZE
    }

    /// Frames currently allocated.
    pub fn frames_in_use(&self) -> usize {
        self.in_use
    }

    /// Frames free.
    pub fn frames_free(&self) -> usize {
        self.frames - self.in_use
    }

    fn is_used(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, used: bool) {
        if used {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Allocates `count` contiguous frames whose address is a multiple of
    /// `align` bytes (a power of two, at least 4 KiB). Returns the address.
    pub fn alloc(&mut self, count: usize, align: u64) -> Result<u64, FrameError> {
        if count == 0 || !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(FrameError::BadRequest);
        }
        let mut first = 0usize;
        while first + count <= self.frames {
            let addr = self.base + first as u64 * PAGE_SIZE;
            if !addr.is_multiple_of(align) {
                let aligned = crate::align_up(addr, align).ok_or(FrameError::OutOfMemory)?;
                first = ((aligned - self.base) / PAGE_SIZE) as usize;
                continue;
            }
            match (first..first + count).find(|&i| self.is_used(i)) {
                Some(busy) => first = busy + 1,
                None => {
                    for i in first..first + count {
                        self.set(i, true);
                    }
                    self.in_use += count;
                    return Ok(addr);
                }
            }
        }
        Err(FrameError::OutOfMemory)
    }

    /// Frees `count` frames at `addr`, all of which must be allocated.
    pub fn free(&mut self, addr: u64, count: usize) -> Result<(), FrameError> {
        if addr < self.base || !addr.is_multiple_of(PAGE_SIZE) || count == 0 {
            return Err(FrameError::NotAllocated);
        }
        let first = ((addr - self.base) / PAGE_SIZE) as usize;
        let last = first.checked_add(count).ok_or(FrameError::NotAllocated)?;
        if last > self.frames || (first..last).any(|i| !self.is_used(i)) {
            return Err(FrameError::NotAllocated);
        }
        for i in first..last {
            self.set(i, false);
        }
        self.in_use -= count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_aligned_runs() {
        let mut a = FrameAllocator::new(0x20_1000, 1024).unwrap();
        let x = a.alloc(1, PAGE_SIZE).unwrap();
        assert_eq!(x, 0x20_1000);
        let big = a.alloc(3, 0x20_0000).unwrap();
        assert_eq!(big % 0x20_0000, 0);
        assert_eq!(big, 0x40_0000);
        let y = a.alloc(2, PAGE_SIZE).unwrap();
        assert_eq!(y, 0x20_2000);
        assert_eq!(a.frames_in_use(), 6);
        a.free(big, 3).unwrap();
        assert_eq!(a.alloc(3, 0x20_0000).unwrap(), big);
    }

    #[test]
    fn exhaustion_and_bad_frees_are_errors() {
        let mut a = FrameAllocator::new(0x1000, 4).unwrap();
        assert_eq!(a.alloc(5, PAGE_SIZE), Err(FrameError::OutOfMemory));
        let all = a.alloc(4, PAGE_SIZE).unwrap();
        assert_eq!(a.alloc(1, PAGE_SIZE), Err(FrameError::OutOfMemory));
        assert_eq!(
            a.free(all + PAGE_SIZE * 4, 1),
            Err(FrameError::NotAllocated)
        );
        assert_eq!(a.free(0, 1), Err(FrameError::NotAllocated));
        assert_eq!(a.free(all + 1, 1), Err(FrameError::NotAllocated));
        a.free(all, 2).unwrap();
        assert_eq!(a.free(all, 1), Err(FrameError::NotAllocated), "double free");
        assert_eq!(a.frames_free(), 2);
        assert_eq!(a.alloc(0, PAGE_SIZE), Err(FrameError::BadRequest));
        assert_eq!(a.alloc(1, 3000), Err(FrameError::BadRequest));
        assert!(FrameAllocator::new(0x1001, 4).is_err());
    }

    #[test]
    fn fragmented_pool_finds_a_fitting_hole() {
        let mut a = FrameAllocator::new(0, 16).unwrap();
        let frames: Vec<u64> = (0..16).map(|_| a.alloc(1, PAGE_SIZE).unwrap()).collect();
        for f in frames.iter().step_by(2) {
            a.free(*f, 1).unwrap();
        }
        assert_eq!(a.alloc(2, PAGE_SIZE), Err(FrameError::OutOfMemory));
        a.free(frames[5], 1).unwrap();
        assert_eq!(a.alloc(3, PAGE_SIZE).unwrap(), frames[4]);
    }
}
