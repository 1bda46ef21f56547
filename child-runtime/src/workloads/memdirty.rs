//! Workload `memdirty` (`ipc::memdirty` documents the arguments and lines):
//! the last vCPU rewrites pages of a working set at a set rate and checks
//! every page against a checksum table kept in the same memory; vCPU 0
//! may serve the key-value protocol meanwhile.
//!
//! # Invariants
//! Only the dirtying vCPU touches the working set and its tables. A page's
//! contents are checked before each rewrite; the whole set after every
//! signal from the root and at the end.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use ipc::child::{CHILD_EVENT_VECTOR, ChildBootInfo};
use ipc::hypercall::Call;
use ipc::memdirty::{MemdirtyDone, MemdirtyVerified, WORDS, checksum, endpoint, page_word};
use partition_rt::{halt_forever, hypercall, println};

/// Signals from the root seen on `from_root`.
static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// `from_root`, raw, for the handler to acknowledge.
static FROM_ROOT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);

fn on_event(_vector: u8) {
    SIGNALS.fetch_add(1, Ordering::AcqRel);
    if let Ok(slot) = ipc::hypercall::SlotHandle::from_raw(FROM_ROOT.load(Ordering::Acquire)) {
        let _ = hypercall(&Call::Acknowledge { slot });
    }
}

/// The working set: pages, each page's version and checksum.
struct WorkingSet {
    pages: Vec<[u64; WORDS]>,
    versions: Vec<u64>,
    sums: Vec<u64>,
    writes: u64,
    bad: u64,
}

impl WorkingSet {
    fn new(count: usize) -> Self {
        let mut set = WorkingSet {
            pages: vec![[0; WORDS]; count],
            versions: vec![0; count],
            sums: vec![0; count],
            writes: 0,
            bad: 0,
        };
        for page in 0..count {
            set.fill(page);
        }
        set
    }

    fn fill(&mut self, page: usize) {
        let version = self.versions[page];
        for (i, w) in self.pages[page].iter_mut().enumerate() {
            *w = page_word(page as u64, version, i);
        }
        self.sums[page] = checksum(&self.pages[page]);
        self.writes += 1;
    }

    /// Whether page `page` holds what its version says and its checksum records.
    fn intact(&self, page: usize) -> bool {
        let version = self.versions[page];
        checksum(&self.pages[page]) == self.sums[page]
            && self.pages[page]
                .iter()
                .enumerate()
                .all(|(i, &w)| w == page_word(page as u64, version, i))
    }

    /// Checks, then rewrites page `page` with its next version.
    fn rewrite(&mut self, page: usize) {
        if !self.intact(page) {
            self.bad += 1;
            println!("memdirty: page {page} was corrupt before its rewrite");
        }
        self.versions[page] += 1;
        self.fill(page);
    }

    /// Checks every page; returns how many are bad.
    fn verify(&self) -> u64 {
        (0..self.pages.len()).filter(|&p| !self.intact(p)).count() as u64
    }
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    let [service, pages, rate, seconds] = info.args;
    let dirtier = info.vcpu_count - 1;
    if vcpu == 0 {
        if let Some(from_root) = info.from_root {
            FROM_ROOT.store(from_root.raw(), Ordering::Release);
            if partition_rt::set_interrupt_handler(CHILD_EVENT_VECTOR, on_event).is_err() {
                println!("memdirty: cannot take the root's signals");
            }
        }
        partition_rt::enable_interrupts();
        if let Some((address, port)) = endpoint(service) {
            if dirtier == 0 {
                println!("memdirty: a key-value service needs a second vCPU");
                halt_forever()
            }
            let mut kv = *info;
            kv.args = [u64::from(address), u64::from(port), 0, 0];
            super::kv::run_in_memory(&kv)
        }
    }
    if vcpu != dirtier {
        halt_forever()
    }
    if info.tsc_khz == 0 || rate == 0 || pages == 0 {
        println!("memdirty: needs a time-stamp counter rate, a dirty rate and a working set");
        halt_forever()
    }
    let mut set = WorkingSet::new(pages as usize);
    let ticks_per_second = info.tsc_khz * 1000;
    let interval = (ticks_per_second / rate).max(1);
    let start = partition_rt::rdtsc();
    let end = start.saturating_add(seconds.saturating_mul(ticks_per_second));
    println!(
        "memdirty: {pages} pages, {rate} pages/s for {seconds} s ({} KiB/s)",
        rate * 4
    );
    let mut next = start;
    let mut seen = 0;
    let mut random: u64 = 0x9e37_79b9_7f4a_7c15 ^ pages;
    loop {
        let now = partition_rt::rdtsc();
        if now >= end {
            break;
        }
        let signals = SIGNALS.load(Ordering::Acquire);
        if signals != seen {
            seen = signals;
            let bad = set.verify();
            set.bad += bad;
            let verified = MemdirtyVerified {
                epoch: signals,
                pages,
                bad,
                writes: set.writes,
            };
            println!("{verified}");
        }
        if now >= next {
            random = random
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            set.rewrite(((random >> 33) % pages) as usize);
            next += interval;
            // After a pause (a migration's blackout) go on at the set rate,
            // without a burst to catch up.
            if now.saturating_sub(next) > ticks_per_second / 10 {
                next = now;
            }
        } else {
            // Nothing due: let the other vCPU (the service) have the processor.
            let _ = hypercall(&Call::Yield);
        }
    }
    let bad = set.verify();
    set.bad += bad;
    println!(
        "{}",
        MemdirtyVerified {
            epoch: 0,
            pages,
            bad,
            writes: set.writes
        }
    );
    println!(
        "{}",
        MemdirtyDone {
            writes: set.writes,
            bad: set.bad,
            signals: SIGNALS.load(Ordering::Acquire)
        }
    );
    halt_forever()
}
