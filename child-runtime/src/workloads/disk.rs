//! Workload `disk`: the storage controller from a child's side
//! (`ipc::disk` documents the modes, arguments and lines).
//!
//! # Invariants
//! Only vCPU 0 works (others halt); every wait is bounded, so a root that
//! stops answering ends the workload with an error line, never a hang.

use alloc::vec;

use ipc::child::ChildBootInfo;
use ipc::disk::{
    BENCH_RANDOM_READS, BENCH_SEQUENTIAL_BYTES, BENCH_SEQUENTIAL_REQUEST, BaseSeen, BenchResult,
    CHILD_ONE_AT_A_TIME, CHILD_QUEUED, ClientCounts, DiskStopped, DiskVerified, FOUND,
    HotRemoveClean, HotRemoved, LunSeen, STORAGE_HOSTILE_CHECKS, STREAM_CHUNK, StopRecord,
    StorageHostileCheck, StorageHostileSummary, WROTE, bench_random_offset, fill_pattern, mode,
    pattern_mismatch,
};
use ipc::vmbus::storage::{Op, Request, SECTOR_BYTES, Status};
use ipc::workload::{BASE_PATTERN_LEN, base_pattern_byte};
use partition_rt::SharedRingMemory;
use partition_rt::println;
use vsc::storage::{StorageClient, StorageClientError, StorageEvent};

use crate::storage::wait;
use crate::storage::{self, BUFFER_PAGES};
use crate::vmbus::WAIT_PATIENCE;

const SECTOR: u64 = SECTOR_BYTES as u64;
/// Sectors per write or read request of the pattern modes.
const CHUNK: u64 = 128;
/// Requests kept in flight on a hot-added LUN.
const IN_FLIGHT: usize = 32;

type Client = StorageClient<SharedRingMemory>;

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    if let Err(e) = storage::open(info) {
        println!("disk: no storage controller: {e:?}");
        partition_rt::halt_forever()
    }
    let [which, seed, lba, sectors] = info.args;
    let result = storage::with(|c| match which {
        mode::WRITE_VERIFY => write_verify(c, seed, lba, sectors),
        mode::VERIFY => verify(c, 0, seed, lba, sectors, FOUND),
        mode::HOTPLUG => hotplug(c, seed, lba, sectors),
        mode::HOSTILE => hostile(c, seed, lba, sectors),
        mode::BENCH => bench(c),
        mode::STREAM => stream(c, seed, lba, sectors),
        _ => {
            println!("disk: unknown mode {which}");
            Ok(())
        }
    });
    match result {
        Some(Ok(())) => {}
        Some(Err(e)) => println!("disk: storage error {e:?}"),
        None => println!("disk: storage controller gone"),
    }
    let counts = storage::with(|c| ClientCounts {
        requests: c.requests(),
        signals: c.signals(),
    });
    if let Some(counts) = counts {
        println!("{counts}");
    }
    partition_rt::halt_forever()
}

fn write_pattern(
    c: &mut Client,
    lun: u8,
    seed: u64,
    lba: u64,
    sectors: u64,
) -> Result<(), StorageClientError> {
    let mut data = vec![0u8; (CHUNK * SECTOR) as usize];
    let mut done = 0;
    while done < sectors {
        let n = (sectors - done).min(CHUNK);
        let bytes = &mut data[..(n * SECTOR) as usize];
        fill_pattern(seed, (lba + done) * SECTOR, bytes);
        c.write(lun, lba + done, bytes, storage::signal, wait, WAIT_PATIENCE)?;
        done += n;
    }
    Ok(())
}

/// Reads `sectors` at `lba` of `lun`; the first byte that is not the
/// pattern of `seed`.
fn check_pattern(
    c: &mut Client,
    lun: u8,
    seed: u64,
    lba: u64,
    sectors: u64,
) -> Result<Option<u64>, StorageClientError> {
    let mut data = vec![0u8; (CHUNK * SECTOR) as usize];
    let mut done = 0;
    while done < sectors {
        let n = (sectors - done).min(CHUNK);
        let bytes = &mut data[..(n * SECTOR) as usize];
        c.read(lun, lba + done, bytes, storage::signal, wait, WAIT_PATIENCE)?;
        if let Some(at) = pattern_mismatch(seed, (lba + done) * SECTOR, bytes) {
            return Ok(Some(at));
        }
        done += n;
    }
    Ok(None)
}

fn write_verify(
    c: &mut Client,
    seed: u64,
    lba: u64,
    sectors: u64,
) -> Result<(), StorageClientError> {
    write_pattern(c, 0, seed, lba, sectors)?;
    c.flush(0, storage::signal, wait, WAIT_PATIENCE)?;
    verify(c, 0, seed, lba, sectors, WROTE)?;
    // The sectors just past the pattern: the base disk's data if this is a
    // differencing disk over `base.vhd` and they lie in its pattern.
    let next = lba + sectors;
    if (next + 8) * SECTOR <= BASE_PATTERN_LEN {
        let mut data = [0u8; 8 * SECTOR as usize];
        c.read(0, next, &mut data, storage::signal, wait, WAIT_PATIENCE)?;
        let base = data
            .iter()
            .enumerate()
            .all(|(i, &b)| b == base_pattern_byte(next * SECTOR + i as u64));
        println!("{}", BaseSeen(base));
    }
    Ok(())
}

fn verify(
    c: &mut Client,
    lun: u8,
    seed: u64,
    lba: u64,
    sectors: u64,
    action: &'static str,
) -> Result<(), StorageClientError> {
    let mismatch = check_pattern(c, lun, seed, lba, sectors)?;
    println!(
        "{}",
        DiskVerified {
            action,
            sectors,
            lba,
            mismatch
        }
    );
    Ok(())
}

/// Waits (bounded) for LUN `lun` to be added; its capacity.
fn await_lun(c: &mut Client, lun: u8) -> Result<u64, StorageClientError> {
    for _ in 0..WAIT_PATIENCE {
        match c.poll(storage::signal)? {
            Some(StorageEvent::LunAdded { lun: l, sectors }) if l == lun => return Ok(sectors),
            Some(_) => {}
            None => wait(),
        }
    }
    Err(StorageClientError::Timeout)
}

fn hotplug(c: &mut Client, seed: u64, lba: u64, sectors: u64) -> Result<(), StorageClientError> {
    // LUN 0 works first.
    write_pattern(c, 0, seed ^ 1, 0, 16)?;
    verify(c, 0, seed ^ 1, 0, 16, WROTE)?;
    let capacity = await_lun(c, 1)?;
    println!(
        "{}",
        LunSeen {
            lun: 1,
            sectors: capacity
        }
    );
    // Data on the new LUN, flushed: it must survive the removal.
    write_pattern(c, 1, seed, lba, sectors)?;
    c.flush(1, storage::signal, wait, WAIT_PATIENCE)?;
    verify(c, 1, seed, lba, sectors, WROTE)?;
    // Keep the LUN busy until it goes away.
    let stream_base = lba + sectors;
    let span = capacity.saturating_sub(stream_base).max(8);
    let mut report = HotRemoved {
        lun: 1,
        in_flight: 0,
        completed: 0,
        failed_cleanly: 0,
        other: 0,
    };
    let removed = core::cell::Cell::new(false);
    let mut back = None;
    let filler = [0x5au8; 4096];
    let next = |c: &mut Client, i: usize| {
        if removed.get() {
            return Ok(None);
        }
        let slot = i % IN_FLIGHT;
        c.buffer_write(slot as u64 * 4096, &filler)?;
        Ok(Some(Request {
            lun: 1,
            op: Op::Write,
            lba: stream_base + (i as u64 * 8) % span,
            sectors: 8,
            buffer_offset: (slot * 4096) as u32,
        }))
    };
    keep_in_flight(c, IN_FLIGHT, next, |event, outstanding| match event {
        StorageEvent::Completed { completion, .. } => match completion.status {
            Status::Ok => report.completed += 1,
            Status::Removed | Status::NoSuchLun => report.failed_cleanly += 1,
            _ => report.other += 1,
        },
        StorageEvent::LunRemoved { lun: 1 } => {
            removed.set(true);
            report.in_flight = outstanding as u64;
        }
        // The file may come back before the last completions.
        StorageEvent::LunAdded { lun: 2, sectors } => back = Some(sectors),
        _ => {}
    })?;
    println!("{report}");
    println!(
        "{}",
        HotRemoveClean(report.in_flight > 0 && report.other == 0)
    );
    // The root adds the same disk back as LUN 2: the flushed data is there.
    let again = match back {
        Some(sectors) => sectors,
        None => await_lun(c, 2)?,
    };
    println!(
        "{}",
        LunSeen {
            lun: 2,
            sectors: again
        }
    );
    verify(c, 2, seed, lba, sectors, FOUND)
}

/// Mode stream: writes chunk after chunk until the root asks for a
/// shutdown (`max_chunks` at most, 0: as many as fit), then flushes,
/// leaves the [`StopRecord`] at LBA 0, flushes again and ends the
/// shutdown. Without a request it waits for one after the last chunk.
fn stream(c: &mut Client, seed: u64, lba: u64, max_chunks: u64) -> Result<(), StorageClientError> {
    let capacity = c.capacity(0, storage::signal, wait, WAIT_PATIENCE)?;
    let fit = capacity.saturating_sub(lba) / STREAM_CHUNK;
    let limit = if max_chunks == 0 {
        fit
    } else {
        max_chunks.min(fit)
    };
    let mut data = vec![0u8; (STREAM_CHUNK * SECTOR) as usize];
    let mut chunks = 0;
    while !crate::integration::stop_requested() {
        if chunks == limit {
            wait();
            continue;
        }
        let at = lba + chunks * STREAM_CHUNK;
        fill_pattern(seed, at * SECTOR, &mut data);
        c.write(0, at, &data, storage::signal, wait, WAIT_PATIENCE)?;
        chunks += 1;
    }
    c.flush(0, storage::signal, wait, WAIT_PATIENCE)?;
    let record = StopRecord {
        chunks,
        lba,
        seed,
        chunk_sectors: STREAM_CHUNK,
    };
    c.write(
        0,
        0,
        &record.to_sector(),
        storage::signal,
        wait,
        WAIT_PATIENCE,
    )?;
    c.flush(0, storage::signal, wait, WAIT_PATIENCE)?;
    println!(
        "{}",
        DiskStopped {
            chunks,
            chunk_sectors: STREAM_CHUNK,
            lba
        }
    );
    crate::integration::finish(true)
}

fn status_name(result: &Result<ipc::vmbus::storage::Completion, StorageClientError>) -> Status {
    match result {
        Ok(completion) => completion.status,
        Err(StorageClientError::Status(status)) => *status,
        // Anything else (a broken channel, a timeout) is not an answer.
        Err(_) => Status::Malformed,
    }
}

fn hostile(c: &mut Client, seed: u64, lba: u64, sectors: u64) -> Result<(), StorageClientError> {
    let capacity = c.capacity(0, storage::signal, wait, WAIT_PATIENCE)?;
    let region = u64::from(BUFFER_PAGES) * 4096;
    let read = |lun: u8, lba: u64, sectors: u32, buffer_offset: u32| Request {
        lun,
        op: Op::Read,
        lba,
        sectors,
        buffer_offset,
    };
    let checks: [(&str, Request, &[Status]); STORAGE_HOSTILE_CHECKS as usize - 1] = [
        (
            "read of an absent LUN",
            read(5, 0, 1, 0),
            &[Status::NoSuchLun],
        ),
        ("read of LUN 200", read(200, 0, 1, 0), &[Status::NoSuchLun]),
        (
            "read at the LUN's end",
            read(0, capacity, 1, 0),
            &[Status::OutOfRange],
        ),
        (
            "read at LBA 2^64-1",
            read(0, u64::MAX, 8, 0),
            &[Status::OutOfRange],
        ),
        (
            "write across the LUN's end",
            Request {
                op: Op::Write,
                ..read(0, capacity - 1, 2, 0)
            },
            &[Status::OutOfRange],
        ),
        (
            "buffer past the region",
            read(0, 0, 1, region as u32),
            &[Status::BadBuffer],
        ),
        (
            "buffer across the region's end",
            read(0, 0, 2, (region - SECTOR) as u32),
            &[Status::BadBuffer],
        ),
        (
            "transfer of 1 GiB",
            read(0, 0, 1 << 21, 0),
            &[Status::TooLarge],
        ),
    ];
    let mut passed = 0;
    for (name, request, expected) in checks {
        let status = status_name(&c.request(request, storage::signal, wait, WAIT_PATIENCE));
        let pass = expected.contains(&status);
        passed += u32::from(pass);
        println!(
            "{}",
            StorageHostileCheck {
                name,
                answer: &alloc::format!("{status:?}"),
                pass
            }
        );
    }
    // After all that, its own disk still works.
    write_pattern(c, 0, seed, lba, sectors)?;
    c.flush(0, storage::signal, wait, WAIT_PATIENCE)?;
    let intact = check_pattern(c, 0, seed, lba, sectors)?.is_none();
    passed += u32::from(intact);
    println!(
        "{}",
        StorageHostileCheck {
            name: "own LUN still works",
            answer: if intact { "Ok" } else { "wrong data" },
            pass: intact
        }
    );
    println!("{}", StorageHostileSummary { passed });
    Ok(())
}

/// Keeps up to `depth` requests in flight: `next(client, i)` makes request
/// `i` (`None`: no more), `on(event, in_flight)` sees every completion and
/// notice. Returns when no request is left and none is in flight.
fn keep_in_flight(
    c: &mut Client,
    depth: usize,
    mut next: impl FnMut(&mut Client, usize) -> Result<Option<Request>, StorageClientError>,
    mut on: impl FnMut(StorageEvent, usize),
) -> Result<(), StorageClientError> {
    let mut pending: Option<Request> = None;
    let mut more = true;
    let (mut submitted, mut outstanding, mut idle) = (0usize, 0usize, 0u64);
    while more || pending.is_some() || outstanding > 0 {
        while outstanding < depth {
            if pending.is_none() && more {
                pending = next(c, submitted)?;
                more = pending.is_some();
            }
            let Some(request) = pending else {
                break;
            };
            match c.submit(request, storage::signal) {
                Ok(_) => {
                    pending = None;
                    submitted += 1;
                    outstanding += 1;
                }
                Err(StorageClientError::Full | StorageClientError::Busy) => break,
                Err(e) => return Err(e),
            }
        }
        if !more && pending.is_none() && outstanding == 0 {
            // Nothing left to send or to wait for (do not sleep).
            break;
        }
        match c.poll(storage::signal)? {
            Some(event) => {
                if matches!(event, StorageEvent::Completed { .. }) {
                    outstanding -= 1;
                    idle = 0;
                }
                on(event, outstanding);
            }
            None => {
                idle += 1;
                if idle > WAIT_PATIENCE {
                    return Err(StorageClientError::Timeout);
                }
                wait();
            }
        }
    }
    Ok(())
}

/// Reads the requests `(lba, sectors)` of `requests` on LUN 0 with up to
/// `depth` in flight, request `i` into region slot `i % depth` of
/// `slot_bytes`; the data is used where it lands (zero copy).
fn read_queued(
    c: &mut Client,
    requests: impl Iterator<Item = (u64, u32)>,
    depth: usize,
    slot_bytes: u64,
) -> Result<(), StorageClientError> {
    let mut requests = requests;
    let mut failed = None;
    let next = |_: &mut Client, i: usize| {
        Ok(requests.next().map(|(lba, sectors)| Request {
            lun: 0,
            op: Op::Read,
            lba,
            sectors,
            buffer_offset: ((i % depth) as u64 * slot_bytes) as u32,
        }))
    };
    keep_in_flight(c, depth, next, |event, _| {
        if let StorageEvent::Completed { completion, .. } = event
            && completion.status != Status::Ok
        {
            failed = Some(completion.status);
        }
    })?;
    match failed {
        Some(status) => Err(StorageClientError::Status(status)),
        None => Ok(()),
    }
}

/// The benchmark: the data lands in the buffer region and is used there,
/// as the root's direct reads land in its buffer (no copy either side).
/// Sequential reads keep 4 requests of 64 KiB in flight (the region holds
/// 256 KiB), random ones 32 of 4 KiB: the controller's outstanding
/// requests are what a client uses to hide the trip through VMBus.
fn bench(c: &mut Client) -> Result<(), StorageClientError> {
    // One request in flight (latency), then queued (throughput).
    for (who, sequential_depth, random_depth) in
        [(CHILD_ONE_AT_A_TIME, 1, 1), (CHILD_QUEUED, 4, 32)]
    {
        let chunk = BENCH_SEQUENTIAL_REQUEST / SECTOR;
        let sequential = (0..BENCH_SEQUENTIAL_BYTES / BENCH_SEQUENTIAL_REQUEST)
            .map(|i| (i * chunk, chunk as u32));
        let start = partition_rt::rdtsc();
        read_queued(c, sequential, sequential_depth, BENCH_SEQUENTIAL_REQUEST)?;
        let sequential_cycles = partition_rt::rdtsc().wrapping_sub(start);
        let random = (0..BENCH_RANDOM_READS).map(|i| (bench_random_offset(i) / SECTOR, 8));
        let start = partition_rt::rdtsc();
        read_queued(c, random, random_depth, 4096)?;
        let random_cycles = partition_rt::rdtsc().wrapping_sub(start);
        println!(
            "{}",
            BenchResult {
                who,
                sequential_cycles,
                random_cycles
            }
        );
    }
    Ok(())
}
