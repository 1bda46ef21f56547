//! The receiving side: a [`Receiver`] decodes a migration stream fed in
//! chunks (from the network, from a saved-state file, or from the engine
//! directly through [`Loopback`]) and applies each validated record to a
//! [`Destination`].
//!
//! # Invariants
//! - The destination sees only records the decoder validated, in stream
//!   order, and `begin` before any of them.
//! - `finish` succeeds only if the stream ended with a valid `End`, every
//!   page `0..pages` was written or zeroed at least once and every vCPU got
//!   a state. On any error the caller destroys the destination.

use crate::migrate::engine::{PAGE, Transport};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use ipc::migration::{
    DecodeError, Decoder, DeviceKind, FormatError, Header, Record, RecordSink, Summary,
};

/// Largest partition a receiver accepts: what a partition may address.
pub const MAX_PAGES: u64 = ipc::hypercall::MAX_GPA / PAGE as u64;

/// The partition being restored (created, not running).
pub trait Destination {
    /// The destination's error.
    type Error: core::fmt::Debug;
    /// The stream's header, before any record: refuse a size or vCPU count
    /// the destination partition does not have.
    fn begin(&mut self, header: &Header) -> Result<(), Self::Error>;
    /// Writes one page.
    fn write_page(&mut self, page: u64, data: &[u8; PAGE]) -> Result<(), Self::Error>;
    /// Zeroes `count` pages from `first`.
    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), Self::Error>;
    /// Sets vCPU `index`'s state.
    fn set_vcpu_state(&mut self, index: u16, state: &[u8]) -> Result<(), Self::Error>;
    /// Restores a device's state.
    fn device_state(
        &mut self,
        kind: DeviceKind,
        instance: u8,
        state: &[u8],
    ) -> Result<(), Self::Error>;
}

/// Why a restore failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError<E> {
    /// The stream is invalid or truncated.
    Format(FormatError),
    /// The destination refused.
    Destination(E),
    /// The header declares more pages than [`MAX_PAGES`].
    TooLarge(u64),
    /// The stream ended but did not cover everything.
    Incomplete {
        /// Pages never written nor zeroed.
        missing_pages: u64,
        /// vCPUs without a state.
        missing_vcpus: u16,
    },
}

struct Apply<D> {
    dest: D,
    /// Pages covered (bit n of word w = page 64w + n).
    covered: Vec<u64>,
    vcpus: Vec<bool>,
}

impl<D> Apply<D> {
    fn cover(&mut self, first: u64, count: u64) {
        for page in first..first + count {
            if let Some(w) = self.covered.get_mut((page / 64) as usize) {
                *w |= 1 << (page % 64);
            }
        }
    }
}

impl<D: Destination> RecordSink for Apply<D> {
    type Error = RestoreError<D::Error>;

    fn header(&mut self, h: &Header) -> Result<(), Self::Error> {
        if h.pages > MAX_PAGES {
            return Err(RestoreError::TooLarge(h.pages));
        }
        self.dest.begin(h).map_err(RestoreError::Destination)?;
        self.covered = vec![0; h.pages.div_ceil(64) as usize];
        self.vcpus = vec![false; usize::from(h.vcpus)];
        Ok(())
    }

    fn record(&mut self, r: &Record<'_>) -> Result<(), Self::Error> {
        let d = RestoreError::Destination;
        match *r {
            Record::Pages {
                first_page, data, ..
            } => {
                for (i, chunk) in data.chunks_exact(PAGE).enumerate() {
                    let page: &[u8; PAGE] = chunk
                        .try_into()
                        .map_err(|_| RestoreError::Format(FormatError::BadRecordPageCount(0)))?;
                    self.dest
                        .write_page(first_page + i as u64, page)
                        .map_err(d)?;
                }
                self.cover(first_page, r.pages());
            }
            Record::ZeroPages { first_page, count } => {
                self.dest.zero_pages(first_page, count).map_err(d)?;
                self.cover(first_page, count);
            }
            Record::Vcpu { index, state } => {
                self.dest.set_vcpu_state(index, state).map_err(d)?;
                if let Some(v) = self.vcpus.get_mut(usize::from(index)) {
                    *v = true;
                }
            }
            Record::Device {
                kind,
                instance,
                state,
            } => self.dest.device_state(kind, instance, state).map_err(d)?,
            Record::PassMark { .. } | Record::End { .. } => {}
        }
        Ok(())
    }
}

/// Decodes a stream and applies it to a destination.
pub struct Receiver<D> {
    decoder: Box<Decoder>,
    apply: Apply<D>,
}

fn flatten<E>(e: DecodeError<RestoreError<E>>) -> RestoreError<E> {
    match e {
        DecodeError::Format(f) => RestoreError::Format(f),
        DecodeError::Sink(s) => s,
    }
}

impl<D: Destination> Receiver<D> {
    /// Expects a stream's header first.
    pub fn new(dest: D) -> Receiver<D> {
        Receiver {
            decoder: Box::new(Decoder::new()),
            apply: Apply {
                dest,
                covered: Vec::new(),
                vcpus: Vec::new(),
            },
        }
    }

    /// Applies what `chunk` completes (chunks may split records anywhere).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), RestoreError<D::Error>> {
        self.decoder
            .feed(chunk, &mut self.apply)
            .map(|_| ())
            .map_err(flatten)
    }

    /// The destination.
    pub fn destination(&self) -> &D {
        &self.apply.dest
    }

    /// The end of input: checks the stream was complete and covered every
    /// page and vCPU; returns the destination and the stream's summary.
    pub fn finish(self) -> Result<(D, Summary), RestoreError<D::Error>> {
        let summary = self.decoder.finish().map_err(RestoreError::Format)?;
        let pages = summary.header.pages;
        let mut covered = 0u64;
        for (i, w) in self.apply.covered.iter().enumerate() {
            let valid = pages.saturating_sub(i as u64 * 64).min(64);
            let mask = if valid == 64 {
                u64::MAX
            } else {
                (1u64 << valid) - 1
            };
            covered += u64::from((w & mask).count_ones());
        }
        let missing_vcpus = self.apply.vcpus.iter().filter(|v| !**v).count() as u16;
        if covered < pages || missing_vcpus > 0 {
            return Err(RestoreError::Incomplete {
                missing_pages: pages - covered,
                missing_vcpus,
            });
        }
        Ok((self.apply.dest, summary))
    }
}

/// A [`Transport`] that applies the stream as it is sent: migration within
/// one node, and the host tests.
pub struct Loopback<D> {
    /// The receiving side.
    pub receiver: Receiver<D>,
}

impl<D: Destination> Loopback<D> {
    /// Sends into a new receiver for `dest`.
    pub fn new(dest: D) -> Loopback<D> {
        Loopback {
            receiver: Receiver::new(dest),
        }
    }
}

impl<D: Destination> Transport for Loopback<D> {
    type Error = RestoreError<D::Error>;
    fn send(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.receiver.feed(bytes)
    }
}
