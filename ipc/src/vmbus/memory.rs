//! The shared memory a ring lives in, as a small trait, so the ring code
//! needs no `unsafe`: [`RingMemory`] (implemented over raw guest memory in
//! `partition-rt`'s `arch` module) and [`AtomicRingMemory`], a safe
//! implementation over a slice of `AtomicU64` for host tests, fuzzing and
//! the benchmark (two real threads, real shared-memory semantics).
//!
//! # Invariants
//! The ring code only ever passes offsets and lengths inside `len()`, with
//! 4-byte-aligned offsets for the index words; an implementation must
//! still never touch memory outside its range when given anything else
//! ([`AtomicRingMemory`] ignores such writes and reads zeros), so a ring bug
//! cannot become a wild access.

use core::sync::atomic::{AtomicU64, Ordering, fence};

/// Byte-addressed shared memory holding one ring (control page + data area).
///
/// The peer may change any byte at any time: implementations make every
/// access a real memory access (volatile or atomic), never cached.
pub trait RingMemory {
    /// Bytes of memory.
    fn len(&self) -> usize;
    /// Whether the memory holds no byte.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Loads the little-endian `u32` at `offset` (4-aligned) with Acquire ordering.
    fn load_u32_acquire(&self, offset: usize) -> u32;
    /// Stores the little-endian `u32` at `offset` (4-aligned) with Release
    /// ordering. At an 8-aligned `offset` the 4 bytes after the value are
    /// reserved and may be zeroed by the store (the ring's index fields all
    /// sit at such offsets, see `ring`), so an implementation can store a
    /// whole 8-byte word.
    fn store_u32_release(&self, offset: usize, value: u32);
    /// Stores like [`RingMemory::store_u32_release`], ordered before every
    /// later load as one sequentially consistent operation (the store half
    /// of a Dekker pair). The default is a store and a SeqCst fence; an
    /// implementation may use a SeqCst read-modify-write instead (cheaper
    /// than a fence on x86), and then must make
    /// [`RingMemory::load_u32_seqcst`] a SeqCst load.
    fn store_u32_seqcst(&self, offset: usize, value: u32) {
        self.store_u32_release(offset, value);
        fence(Ordering::SeqCst);
    }
    /// Loads like [`RingMemory::load_u32_acquire`], as the load half of a
    /// Dekker pair after [`RingMemory::store_u32_seqcst`] (see there).
    fn load_u32_seqcst(&self, offset: usize) -> u32 {
        self.load_u32_acquire(offset)
    }
    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Copies `data` to the memory starting at `offset`.
    fn write(&self, offset: usize, data: &[u8]);
}

/// Ring memory over a slice of atomic words (host side: tests, fuzzing,
/// benchmark). Byte `i` is byte `i % 8` of word `i / 8`, little-endian;
/// data moves a whole word per access, and an index stored at an 8-aligned
/// offset is one plain atomic store of its word (the upper half reserved).
#[derive(Clone, Copy, Debug)]
pub struct AtomicRingMemory<'a> {
    words: &'a [AtomicU64],
}

impl<'a> AtomicRingMemory<'a> {
    /// Memory over `words` (`8 * words.len()` bytes).
    pub fn new(words: &'a [AtomicU64]) -> Self {
        AtomicRingMemory { words }
    }

    /// Splits into the first `bytes` bytes (rounded down to whole words) and the rest.
    pub fn split_at(self, bytes: usize) -> (Self, Self) {
        let (a, b) = self.words.split_at((bytes / 8).min(self.words.len()));
        (Self::new(a), Self::new(b))
    }

    fn in_range(&self, offset: usize, len: usize) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.words.len() * 8)
    }

    /// Writes up to 8 bytes inside one word without touching its other bytes.
    fn merge_bytes(&self, at: usize, bytes: &[u8], order: Ordering) {
        let word = &self.words[at / 8];
        let shift = (at % 8) * 8;
        let mut value = 0u64;
        let mut mask = 0u64;
        for (i, &b) in bytes.iter().enumerate() {
            value |= u64::from(b) << (shift + i * 8);
            mask |= 0xffu64 << (shift + i * 8);
        }
        let mut current = word.load(Ordering::Relaxed);
        loop {
            let new = (current & !mask) | value;
            match word.compare_exchange_weak(current, new, order, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }
}

impl RingMemory for AtomicRingMemory<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.words.len() * 8
    }

    #[inline]
    fn load_u32_acquire(&self, offset: usize) -> u32 {
        if !offset.is_multiple_of(4) || !self.in_range(offset, 4) {
            return 0;
        }
        (self.words[offset / 8].load(Ordering::Acquire) >> ((offset % 8) * 8)) as u32
    }

    #[inline]
    fn store_u32_release(&self, offset: usize, value: u32) {
        if !offset.is_multiple_of(4) || !self.in_range(offset, 4) {
            return;
        }
        if offset.is_multiple_of(8) {
            // The upper half is reserved (see the trait): one plain store.
            self.words[offset / 8].store(u64::from(value), Ordering::Release);
        } else {
            self.merge_bytes(offset, &value.to_le_bytes(), Ordering::Release);
        }
    }

    #[inline]
    fn store_u32_seqcst(&self, offset: usize, value: u32) {
        if offset.is_multiple_of(8) && self.in_range(offset, 8) {
            // A SeqCst swap is a full barrier by itself (XCHG on x86).
            self.words[offset / 8].swap(u64::from(value), Ordering::SeqCst);
        } else {
            self.store_u32_release(offset, value);
            fence(Ordering::SeqCst);
        }
    }

    #[inline]
    fn load_u32_seqcst(&self, offset: usize) -> u32 {
        if !offset.is_multiple_of(4) || !self.in_range(offset, 4) {
            return 0;
        }
        (self.words[offset / 8].load(Ordering::SeqCst) >> ((offset % 8) * 8)) as u32
    }

    #[inline]
    fn read(&self, offset: usize, buf: &mut [u8]) {
        if !self.in_range(offset, buf.len()) {
            buf.fill(0);
            return;
        }
        let mut at = offset;
        let mut chunks = buf;
        // Unaligned head, byte by byte.
        while !at.is_multiple_of(8) && !chunks.is_empty() {
            chunks[0] = (self.words[at / 8].load(Ordering::Relaxed) >> ((at % 8) * 8)) as u8;
            chunks = &mut chunks[1..];
            at += 1;
        }
        let whole = chunks.len() / 8 * 8;
        let (body, tail) = chunks.split_at_mut(whole);
        for (chunk, word) in body.chunks_exact_mut(8).zip(&self.words[at / 8..]) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        if !tail.is_empty() {
            let w = self.words[(at + whole) / 8]
                .load(Ordering::Relaxed)
                .to_le_bytes();
            tail.copy_from_slice(&w[..tail.len()]);
        }
    }

    #[inline]
    fn write(&self, offset: usize, data: &[u8]) {
        if !self.in_range(offset, data.len()) {
            return;
        }
        let mut at = offset;
        let mut rest = data;
        while !at.is_multiple_of(8) && !rest.is_empty() {
            self.merge_bytes(at, &rest[..1], Ordering::Relaxed);
            rest = &rest[1..];
            at += 1;
        }
        let words = rest.chunks_exact(8);
        let tail = words.remainder();
        for (chunk, word) in words.zip(&self.words[at / 8..]) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        if !tail.is_empty() {
            self.merge_bytes(at + rest.len() - tail.len(), tail, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn bytes_round_trip_at_every_offset_and_length() {
        let words: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        let mem = AtomicRingMemory::new(&words);
        for offset in 0..24 {
            for len in 0..24 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + offset + 1) as u8).collect();
                for w in &words {
                    w.store(u64::MAX, Ordering::Relaxed);
                }
                mem.write(offset, &data);
                let mut back = std::vec![0u8; len];
                mem.read(offset, &mut back);
                assert_eq!(back, data);
                // Bytes around the write are untouched.
                let mut all = [0u8; 64];
                mem.read(0, &mut all);
                assert!(all[..offset].iter().all(|&b| b == 0xff));
                assert!(all[offset + len..].iter().all(|&b| b == 0xff));
            }
        }
    }

    #[test]
    fn out_of_range_is_ignored() {
        let words: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
        let mem = AtomicRingMemory::new(&words);
        mem.write(12, &[1; 8]);
        mem.store_u32_release(16, 5);
        mem.store_u32_release(usize::MAX - 1, 5);
        let mut buf = [9u8; 8];
        mem.read(usize::MAX - 2, &mut buf);
        assert_eq!(buf, [0; 8]);
        assert_eq!(mem.load_u32_acquire(16), 0);
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        mem.store_u32_release(4, 0xdead_beef);
        assert_eq!(mem.load_u32_acquire(4), 0xdead_beef);
        assert_eq!(mem.load_u32_acquire(0), 0);
    }
}
