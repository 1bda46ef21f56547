//! Host tests of the pre-copy engine with a fake partition that keeps
//! writing its memory while it is copied: the destination ends equal to the
//! source, the policy's stops, aborts at every point, failing transports and
//! sources, and the statistics' text and JSON.

use super::*;
use crate::migrate::policy::StopReason;
use crate::migrate::receive::{Destination, Loopback, Receiver, RestoreError};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A partition whose "guest" writes pages from a hot list: `per_read`
/// writes after each page read and `per_fetch` after each dirty fetch,
/// unless paused.
struct Fake {
    mem: Vec<u8>,
    pages: u64,
    vcpu_states: Vec<Vec<u8>>,
    devices: Vec<(DeviceKind, u8, Vec<u8>)>,
    logging: bool,
    paused: bool,
    dirty: Vec<u64>,
    hot: Vec<u64>,
    per_read: u32,
    per_fetch: u32,
    next: usize,
    counter: u64,
    reads: u64,
    fail_read_at: Option<u64>,
    fail_vcpu: bool,
    resumes: u32,
    /// Auto-converge throttle in force, and every change asked for.
    throttle: u8,
    throttles: Vec<u8>,
}

impl Fake {
    fn new(pages: u64, hot: Vec<u64>, per_read: u32, per_fetch: u32) -> Fake {
        let mut mem = vec![0u8; pages as usize * PAGE];
        for p in 0..pages {
            // Every seventh page starts zero.
            if p % 7 != 3 {
                let page = &mut mem[p as usize * PAGE..][..PAGE];
                for (i, b) in page.iter_mut().enumerate() {
                    *b = (p as usize * 31 + i) as u8 | 1;
                }
            }
        }
        Fake {
            mem,
            pages,
            vcpu_states: (0..2).map(|i| vec![0x40 + i as u8; 464]).collect(),
            devices: vec![
                (DeviceKind::Console, 0, b"console".to_vec()),
                (DeviceKind::Storage, 1, vec![9; 5000]),
            ],
            logging: false,
            paused: false,
            dirty: vec![0; pages.div_ceil(64) as usize],
            hot,
            per_read,
            per_fetch,
            next: 0,
            counter: 0,
            reads: 0,
            fail_read_at: None,
            fail_vcpu: false,
            resumes: 0,
            throttle: 0,
            throttles: Vec::new(),
        }
    }

    fn write(&mut self, n: u32) {
        // A throttled guest runs (and writes) that much less.
        let n = n * u32::from(100 - self.throttle) / 100;
        for _ in 0..n {
            if self.paused || self.hot.is_empty() {
                return;
            }
            let p = self.hot[self.next % self.hot.len()];
            self.next += 1;
            self.counter += 1;
            let at = p as usize * PAGE + (self.counter as usize % 512) * 8;
            self.mem[at..at + 8].copy_from_slice(&self.counter.to_le_bytes());
            if self.logging {
                self.dirty[(p / 64) as usize] |= 1 << (p % 64);
            }
        }
    }
}

#[derive(Debug)]
struct FakeError(#[allow(dead_code)] &'static str);

impl Source for Fake {
    type Error = FakeError;
    fn pages(&self) -> u64 {
        self.pages
    }
    fn vcpus(&self) -> u16 {
        self.vcpu_states.len() as u16
    }
    fn log_dirty(&mut self, on: bool) -> Result<(), FakeError> {
        self.logging = on;
        Ok(())
    }
    fn fetch_dirty(&mut self, first: u64, bits: &mut [u64]) -> Result<(), FakeError> {
        assert!(bits.len() <= DIRTY_WORDS_PER_CALL && first.is_multiple_of(64));
        self.write(self.per_fetch);
        for (i, b) in bits.iter_mut().enumerate() {
            if let Some(w) = self.dirty.get_mut((first / 64) as usize + i) {
                *b = core::mem::take(w);
            }
        }
        Ok(())
    }
    fn read_page(&mut self, page: u64, buf: &mut [u8; PAGE]) -> Result<(), FakeError> {
        self.reads += 1;
        if Some(self.reads) == self.fail_read_at {
            return Err(FakeError("read failed"));
        }
        buf.copy_from_slice(&self.mem[page as usize * PAGE..][..PAGE]);
        self.write(self.per_read);
        Ok(())
    }
    fn pause(&mut self) -> Result<(), FakeError> {
        assert!(!self.paused);
        self.paused = true;
        Ok(())
    }
    fn resume(&mut self) -> Result<(), FakeError> {
        assert!(self.paused);
        self.paused = false;
        self.resumes += 1;
        Ok(())
    }
    fn vcpu_state(&mut self, index: u16, buf: &mut [u8]) -> Result<usize, FakeError> {
        assert!(self.paused);
        if self.fail_vcpu {
            return Err(FakeError("vcpu state"));
        }
        let s = &self.vcpu_states[usize::from(index)];
        buf[..s.len()].copy_from_slice(s);
        Ok(s.len())
    }
    fn device_states(&mut self, out: &mut DeviceOut<'_>) -> Result<(), FakeError> {
        for (k, i, b) in &self.devices {
            if out(*k, *i, b).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
    fn throttle(&mut self, percent: u8) -> Result<(), FakeError> {
        self.throttle = percent;
        self.throttles.push(percent);
        Ok(())
    }
}

/// A destination partition in memory.
#[derive(Default)]
struct Mem {
    mem: Vec<u8>,
    vcpus: Vec<Vec<u8>>,
    devices: Vec<(DeviceKind, u8, Vec<u8>)>,
}

impl Destination for Mem {
    type Error = &'static str;
    fn begin(&mut self, h: &ipc::migration::Header) -> Result<(), &'static str> {
        // Garbage, so zero records must really zero.
        self.mem = vec![0xee; h.pages as usize * PAGE];
        self.vcpus = vec![Vec::new(); usize::from(h.vcpus)];
        Ok(())
    }
    fn write_page(&mut self, page: u64, data: &[u8; PAGE]) -> Result<(), &'static str> {
        self.mem[page as usize * PAGE..][..PAGE].copy_from_slice(data);
        Ok(())
    }
    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), &'static str> {
        self.mem[first as usize * PAGE..(first + count) as usize * PAGE].fill(0);
        Ok(())
    }
    fn set_vcpu_state(&mut self, index: u16, state: &[u8]) -> Result<(), &'static str> {
        self.vcpus[usize::from(index)] = state.to_vec();
        Ok(())
    }
    fn device_state(&mut self, k: DeviceKind, i: u8, s: &[u8]) -> Result<(), &'static str> {
        self.devices.push((k, i, s.to_vec()));
        Ok(())
    }
}

/// 1 µs per reading.
struct Ticks(u64);

impl Clock for Ticks {
    fn now_ns(&mut self) -> u64 {
        self.0 += 1_000;
        self.0
    }
    fn ticks(&mut self) -> u64 {
        self.0 / 10
    }
}

/// Says no at its `stop_at`-th call (counting from 1); records phases.
struct StopAt {
    calls: u32,
    stop_at: u32,
    phases: Vec<Phase>,
}

impl Control for StopAt {
    fn proceed(&mut self, phase: Phase) -> bool {
        self.calls += 1;
        self.phases.push(phase);
        self.calls != self.stop_at
    }
}

fn hot(pages: u64) -> Vec<u64> {
    // Scattered, some zero pages among them, the last page included.
    let mut h: Vec<u64> = (0..pages).filter(|p| p % 5 == 1 || p % 7 == 3).collect();
    h.push(pages - 1);
    h
}

fn assert_same(src: &Fake, dst: &Mem) {
    for p in 0..src.pages as usize {
        assert!(
            src.mem[p * PAGE..][..PAGE] == dst.mem[p * PAGE..][..PAGE],
            "page {p} differs"
        );
    }
    assert_eq!(src.vcpu_states, dst.vcpus);
    assert_eq!(src.devices, dst.devices);
}

fn run(src: &mut Fake, policy: &Policy) -> (Result<Stats, Aborted>, Loopback<Mem>) {
    let mut t = Loopback::new(Mem::default());
    let r = migrate(src, &mut t, &mut Ticks(0), &mut NoAbort, policy, "fake");
    (r, t)
}

#[test]
fn destination_equals_source_after_dirty_passes() {
    let mut src = Fake::new(300, hot(300), 1, 3);
    let policy = Policy {
        downtime_budget_ns: 0,
        blackout_overhead_ns: 0,
        ..Policy::default()
    };
    let (r, t) = run(&mut src, &policy);
    let stats = r.expect("completes");
    assert!(stats.passes.len() > 1, "{stats}");
    assert!(src.paused && !src.logging, "stays paused, log off");
    let (dst, summary) = t.receiver.finish().expect("complete stream");
    assert_same(&src, &dst);
    assert_eq!(summary.header.name(), "fake");
    assert_eq!(stats.total_bytes, summary.bytes);
    assert_eq!(stats.outcome, Outcome::Completed);
    let sent: u64 = stats.passes.iter().map(|p| p.pages).sum::<u64>() + stats.blackout_pages;
    assert_eq!(sent, summary.pages_total);
    assert_eq!(stats.passes[0].pages, 300);
    // Pass N+1 sends what pass N found dirty.
    for w in stats.passes.windows(2) {
        assert_eq!(w[1].pages, w[0].dirty_pages);
    }
}

#[test]
fn pass_limit_is_honoured() {
    // The guest dirties 40 pages at every fetch: never converges (and
    // is not throttled here).
    let mut src = Fake::new(256, hot(256), 0, 40);
    let policy = Policy {
        downtime_budget_ns: 0,
        blackout_overhead_ns: 0,
        throttle_initial_percent: 0,
        ..Policy::default()
    };
    let (r, t) = run(&mut src, &policy);
    let s = r.expect("completes");
    assert_eq!(s.passes.len(), 10);
    assert_eq!(s.stop, Some(StopReason::PassLimit));
    assert!(s.blackout_pages >= 40);
    let (dst, _) = t.receiver.finish().expect("complete");
    assert_same(&src, &dst);
    let three = Policy {
        max_passes: 3,
        ..policy
    };
    let mut src = Fake::new(256, hot(256), 0, 40);
    assert_eq!(run(&mut src, &three).0.expect("ok").passes.len(), 3);
}

#[test]
fn budget_and_all_sent_stops() {
    // A quiet guest: everything is sent in pass 1.
    let mut src = Fake::new(100, Vec::new(), 0, 0);
    let s = run(&mut src, &Policy::default()).0.expect("ok");
    assert_eq!((s.passes.len(), s.stop), (1, Some(StopReason::AllSent)));
    assert_eq!(s.blackout_pages, 0);
    // A busy guest within a generous budget: pass 1 left fewer than half
    // of its pages dirty, so pass 2 runs; it does not halve its own, so
    // the engine stops there.
    let mut src = Fake::new(100, hot(100), 0, 40);
    let s = run(&mut src, &Policy::default()).0.expect("ok");
    assert_eq!((s.passes.len(), s.stop), (2, Some(StopReason::FitsBudget)));
    assert!(s.passes[0].dirty_pages * 2 < s.passes[0].pages);
    assert!(s.passes[1].dirty_pages * 2 >= s.passes[1].pages);
    assert!(s.predicted_blackout_ns <= Policy::default().downtime_budget_ns);
    assert_eq!(s.blackout_pages, s.passes[1].dirty_pages);
}

#[test]
fn abort_at_every_control_point_leaves_the_source_running() {
    let policy = Policy {
        downtime_budget_ns: 0,
        blackout_overhead_ns: 0,
        max_passes: 3,
        ..Policy::default()
    };
    // Count the calls of a complete run (3000 pages: several batches a pass).
    let mut src = Fake::new(3000, hot(3000), 1, 5);
    let mut all = StopAt {
        calls: 0,
        stop_at: 0,
        phases: Vec::new(),
    };
    let mut t = Loopback::new(Mem::default());
    migrate(&mut src, &mut t, &mut Ticks(0), &mut all, &policy, "x").expect("ok");
    let kinds: Vec<&str> = all.phases.iter().map(|p| p.name()).collect();
    for k in ["setup", "precopy", "blackout", "handover"] {
        assert!(kinds.contains(&k), "{k} never asked: {kinds:?}");
    }
    assert!(all.phases.contains(&Phase::Precopy { pass: 3 }));
    for stop_at in 1..=all.calls {
        let mut src = Fake::new(3000, hot(3000), 1, 5);
        let mut ctl = StopAt {
            calls: 0,
            stop_at,
            phases: Vec::new(),
        };
        let mut t = Loopback::new(Mem::default());
        let e =
            migrate(&mut src, &mut t, &mut Ticks(0), &mut ctl, &policy, "x").expect_err("aborts");
        assert_eq!(e.reason, AbortReason::Requested);
        assert_eq!(e.phase, all.phases[stop_at as usize - 1]);
        assert!(!src.paused && !src.logging, "call {stop_at}");
        assert_eq!(
            src.resumes,
            u32::from(
                e.phase == Phase::Blackout
                    && ctl.phases.iter().filter(|p| **p == Phase::Blackout).count() > 1
                    || e.phase == Phase::Handover
            )
        );
        assert!(e.cleanup_error.is_none());
        assert!(matches!(e.stats.outcome, Outcome::Aborted { .. }));
        // The destination never saw an End: its stream is incomplete.
        assert!(matches!(
            t.receiver.finish(),
            Err(RestoreError::Format(
                ipc::migration::FormatError::Truncated { .. }
            ))
        ));
    }
}

/// Fails once `budget` bytes were sent.
struct Flaky {
    inner: Loopback<Mem>,
    budget: usize,
}

impl Transport for Flaky {
    type Error = String;
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() > self.budget {
            return Err("link down".to_string());
        }
        self.budget -= bytes.len();
        self.inner.send(bytes).map_err(|e| alloc::format!("{e:?}"))
    }
}

#[test]
fn transport_and_source_failures_abort_with_the_source_running() {
    let policy = Policy::default();
    for budget in [0, 100, 70_000, 600_000, 1_300_000] {
        let mut src = Fake::new(300, hot(300), 1, 3);
        let mut t = Flaky {
            inner: Loopback::new(Mem::default()),
            budget,
        };
        let e = migrate(&mut src, &mut t, &mut Ticks(0), &mut NoAbort, &policy, "x")
            .expect_err("link fails");
        assert!(
            matches!(&e.reason, AbortReason::Transport(m) if m.contains("link down")),
            "{:?}",
            e.reason
        );
        assert!(!src.paused && !src.logging);
    }
    // A page read fails mid-pass.
    let mut src = Fake::new(300, hot(300), 1, 3);
    src.fail_read_at = Some(150);
    let e = run(&mut src, &policy).0.expect_err("read fails");
    assert_eq!(e.phase, Phase::Precopy { pass: 1 });
    assert!(matches!(&e.reason, AbortReason::Source(m) if m.contains("read failed")));
    assert!(!src.paused && !src.logging);
    // vCPU state fails while paused: resumed.
    let mut src = Fake::new(300, hot(300), 1, 3);
    src.fail_vcpu = true;
    let e = run(&mut src, &policy).0.expect_err("vcpu fails");
    assert_eq!(e.phase, Phase::Blackout);
    assert!(!src.paused && !src.logging);
    assert_eq!(src.resumes, 1);
}

#[test]
fn saved_stream_restores_in_any_chunks() {
    /// Records the stream, as a save file would.
    struct File(Vec<u8>);
    impl Transport for File {
        type Error = ();
        fn send(&mut self, bytes: &[u8]) -> Result<(), ()> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }
    let mut src = Fake::new(200, hot(200), 1, 2);
    let mut file = File(Vec::new());
    migrate_with_flags(
        &mut src,
        &mut file,
        &mut Ticks(0),
        &mut NoAbort,
        &Policy::default(),
        "saved",
        ipc::migration::FLAG_SAVED_STATE,
    )
    .expect("saves");
    for chunk in [1, 1000, 4096, 65_536, file.0.len()] {
        let mut r = Receiver::new(Mem::default());
        for c in file.0.chunks(chunk) {
            r.feed(c).expect("feeds");
        }
        let (dst, summary) = r.finish().expect("restores");
        assert_eq!(summary.header.flags, ipc::migration::FLAG_SAVED_STATE);
        assert_same(&src, &dst);
    }
    // Cut short: refused.
    let mut r = Receiver::new(Mem::default());
    r.feed(&file.0[..file.0.len() - 1]).expect("feeds");
    assert!(r.finish().is_err());
}

#[test]
fn stats_text_and_json() {
    let mut src = Fake::new(300, hot(300), 1, 3);
    let policy = Policy {
        downtime_budget_ns: 0,
        blackout_overhead_ns: 0,
        ..Policy::default()
    };
    let s = run(&mut src, &policy).0.expect("ok");
    let text = s.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("migration: ")), "{text}");
    assert!(lines[0].starts_with("migration: pass 1 pages=300 bytes="));
    assert!(text.contains("migration: stop reason="));
    assert!(text.contains("migration: blackout pages="));
    assert!(lines.last().is_some_and(
        |l| l.starts_with("migration: total bytes=") && l.ends_with("outcome=completed")
    ));
    let mut json = String::new();
    s.write_json(&mut json).expect("json");
    assert!(!json.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&json).expect("parses");
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["passes"].as_array().map(Vec::len), Some(s.passes.len()));
    assert_eq!(v["passes"][0]["pages"], 300);
    assert_eq!(v["total_bytes"], s.total_bytes);
    assert_eq!(v["stop"], s.stop.map(StopReason::name).unwrap_or("none"));
    // Aborted, with a reason that needs escaping.
    let mut src = Fake::new(300, hot(300), 1, 3);
    let mut t = Flaky {
        inner: Loopback::new(Mem::default()),
        budget: 100,
    };
    let e =
        migrate(&mut src, &mut t, &mut Ticks(0), &mut NoAbort, &policy, "x").expect_err("fails");
    let mut json = String::new();
    e.stats.write_json(&mut json).expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("parses");
    assert_eq!(v["outcome"], "aborted");
    assert_eq!(v["phase"], "precopy");
    assert_eq!(v["pass"], 1);
    assert_eq!(v["reason"], "transport error: \"link down\"");
    assert!(
        e.stats
            .to_string()
            .contains("migration: aborted phase=precopy")
    );
}

#[test]
fn auto_converge_throttles_a_guest_that_outpaces_the_copy_then_lifts_it() {
    // Two writes per page read over a small hot set: passes stop halving.
    let mut src = Fake::new(2000, (0..200).collect(), 2, 0);
    let policy = Policy {
        downtime_budget_ns: 0,
        blackout_overhead_ns: 0,
        ..Policy::default()
    };
    let (r, t) = run(&mut src, &policy);
    let s = r.expect("completes");
    assert!(s.throttle_percent >= 20, "{s}");
    assert_eq!(src.throttles.first(), Some(&20));
    assert!(src.throttles.windows(2).all(|w| w[1] > w[0] || w[1] == 0));
    assert_eq!(src.throttles.last(), Some(&0), "lifted before the blackout");
    let (dst, _) = t.receiver.finish().expect("complete");
    assert_same(&src, &dst);
    // The same guest unthrottled dirties more: the blackout is larger.
    let mut free = Fake::new(2000, (0..200).collect(), 2, 0);
    let off = Policy {
        throttle_initial_percent: 0,
        ..policy
    };
    let s_free = run(&mut free, &off).0.expect("completes");
    assert!(free.throttles.is_empty());
    assert!(s_free.blackout_pages >= s.blackout_pages, "{s_free} vs {s}");
    // An abort after the throttle rose lifts it too.
    let mut src = Fake::new(2000, (0..200).collect(), 2, 0);
    let mut stop = StopAt {
        calls: 0,
        stop_at: 0,
        phases: Vec::new(),
    };
    let _ = migrate(
        &mut src,
        &mut Loopback::new(Mem::default()),
        &mut Ticks(0),
        &mut stop,
        &policy,
        "fake",
    );
    let blackout = stop
        .phases
        .iter()
        .position(|p| *p == Phase::Blackout)
        .expect("reaches the blackout");
    let mut src = Fake::new(2000, (0..200).collect(), 2, 0);
    let mut stop = StopAt {
        calls: 0,
        // The last control point of the last pass, throttled by then.
        stop_at: blackout as u32,
        phases: Vec::new(),
    };
    let r = migrate(
        &mut src,
        &mut Loopback::new(Mem::default()),
        &mut Ticks(0),
        &mut stop,
        &policy,
        "fake",
    );
    assert!(r.is_err());
    assert!(!src.throttles.is_empty());
    assert_eq!(src.throttle, 0);
}
