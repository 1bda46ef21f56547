//! The boot configuration: named scenarios, each a list of actions the root
//! performs in order — start a child, pause, resume or destroy one.
//!
//! ```text
//! # comment
//! scenario demo
//! child alpha memory=8M vcpus=1 workload=hello
//! child beta memory=8M vcpus=2 workload=hello args=3,1000 cpu=2 priority=1
//! pause alpha
//! resume alpha
//! destroy alpha
//! child gamma workload=disk disk=gamma.vhd disk=extra.vhd   # LUN 0, LUN 1
//! hotadd gamma extra2.vhd lun=2 after=100   # once its controller served 100 requests
//! hotremove gamma lun=2 after=300
//! stop gamma timeout=5000 requests=40   # graceful shutdown, then turn off
//! lost delta within=30000               # wait until delta's heartbeat is lost
//! ```
//!
//! # Invariants
//! The parser never panics; a malformed line is an error naming the line.
//! Fixed capacities (no allocator in the root yet): [`MAX_ACTIONS`]
//! actions per scenario, names of at most 8 bytes.

use ipc::child::{MAX_CHILD_VCPUS, MAX_WORKLOAD};
use ipc::hypercall::Name;

/// Most actions in a scenario.
pub const MAX_ACTIONS: usize = 16;
/// Smallest child memory.
pub const MIN_CHILD_MEMORY: u64 = 4 << 20;
/// Largest child memory (one guest page directory in the child's initial tables).
pub const MAX_CHILD_MEMORY: u64 = 1 << 30;
/// Disks a child starts with (LUN 0 onwards).
pub const MAX_BOOT_DISKS: usize = 4;
/// Longest disk file name.
pub const MAX_DISK_NAME: usize = 32;
/// Highest LUN number + 1 (the storage controller's limit).
pub const LUNS: u64 = 64;
/// Time limit of a `stop` without `timeout=`.
pub const DEFAULT_STOP_TIMEOUT_MS: u32 = 10_000;
/// Longest `stop` time limit (`ipc::vmbus::integration::MAX_DEADLINE_MS`).
pub const MAX_STOP_TIMEOUT_MS: u32 = ipc::vmbus::integration::MAX_DEADLINE_MS;
/// How long `lost` waits without `within=`.
pub const DEFAULT_LOST_WITHIN_MS: u64 = 30_000;

/// A VHD file on the data volume, by name (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskName {
    bytes: [u8; MAX_DISK_NAME],
    len: usize,
}

impl DiskName {
    /// A disk name: 1 to [`MAX_DISK_NAME`] bytes of letters, digits, `-`,
    /// `_` and `.`, not starting with a dot.
    pub fn new(s: &str) -> Option<DiskName> {
        let valid = !s.is_empty()
            && s.len() <= MAX_DISK_NAME
            && !s.starts_with('.')
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        valid.then(|| {
            let mut bytes = [0; MAX_DISK_NAME];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            DiskName {
                bytes,
                len: s.len(),
            }
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// A child to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildSpec {
    /// Partition name.
    pub name: Name,
    /// Bytes of memory.
    pub memory: u64,
    /// vCPUs (1–4).
    pub vcpus: u32,
    /// Workload name.
    pub workload: [u8; MAX_WORKLOAD],
    /// Workload arguments.
    pub args: [u64; 4],
    /// Processor affinity of vCPU 0 (vCPU i gets `cpu + i`), or none.
    pub cpu: Option<u32>,
    /// Priority (0–7).
    pub priority: u8,
    /// Disks on its storage controller from the start: LUN `i` is `disks[i]`.
    pub disks: [Option<DiskName>; MAX_BOOT_DISKS],
}

impl ChildSpec {
    /// A child called `name` with the defaults: 16 MiB, one vCPU, no
    /// workload, no pinning, priority 0, no disks.
    pub fn new(name: Name) -> Self {
        ChildSpec {
            name,
            memory: 16 << 20,
            vcpus: 1,
            workload: [0; MAX_WORKLOAD],
            args: [0; 4],
            cpu: None,
            priority: 0,
            disks: [None; MAX_BOOT_DISKS],
        }
    }

    /// The workload name.
    pub fn workload(&self) -> &str {
        let len = self
            .workload
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(MAX_WORKLOAD);
        core::str::from_utf8(&self.workload[..len]).unwrap_or("")
    }
}

/// One step of a scenario.
// Scenarios are fixed arrays of actions, copied by value (no allocation):
// the size of the largest variant is the point, not an accident.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create and start a child.
    Start(ChildSpec),
    /// Pause a child's vCPUs and check that they stay put.
    Pause(Name),
    /// Resume a paused child and check that it moves on.
    Resume(Name),
    /// Destroy a child; its memory returns to the root.
    Destroy(Name),
    /// Delete the root's last capability on a running child (it keeps
    /// running until then): the microkernel destroys the orphan and its
    /// memory returns to the root.
    Forget(Name),
    /// Add a disk to a running child's controller, once the controller
    /// has served `after` requests.
    HotAdd {
        /// The child.
        child: Name,
        /// The disk file.
        disk: DiskName,
        /// Its LUN.
        lun: u8,
        /// Requests served first.
        after: u64,
    },
    /// Remove a disk from a running child's controller, once the
    /// controller has served `after` requests.
    HotRemove {
        /// The child.
        child: Name,
        /// Its LUN.
        lun: u8,
        /// Requests served first.
        after: u64,
    },
    /// Live-migrate a running child to a new partition on this node,
    /// `after_ms` milliseconds after the previous action (serving
    /// meanwhile); `abort` makes it fail on purpose at that point.
    Migrate {
        /// The child.
        child: Name,
        /// Frames its network adapter must have received first (0: none).
        after_frames: u64,
        /// Requests its storage controller must have served first (0: none).
        after_requests: u64,
        /// Milliseconds to wait then.
        after_ms: u64,
        /// Where to abort, if at all.
        abort: Option<AbortAt>,
    },
    /// Save a running child to a file on the data volume (it is destroyed
    /// then), once its storage controller served `after_requests` requests
    /// and `after_ms` milliseconds passed.
    Save {
        /// The child.
        child: Name,
        /// The file.
        file: DiskName,
        /// Requests its storage controller must have served first.
        after_requests: u64,
        /// Milliseconds to wait first.
        after_ms: u64,
    },
    /// Stop a child: a graceful shutdown over its integration channel
    /// with a time limit, then turn it off (destroy it) if it has not
    /// halted by then, refused, or has no channel. Waits first until its
    /// storage controller served `after_requests` requests and `after_ms`
    /// milliseconds passed.
    Stop {
        /// The child.
        child: Name,
        /// The shutdown's time limit (1..=600,000 ms; default
        /// [`DEFAULT_STOP_TIMEOUT_MS`]).
        timeout_ms: u32,
        /// Requests its storage controller must have served first.
        after_requests: u64,
        /// Milliseconds to wait first.
        after_ms: u64,
    },
    /// Wait (serving) until the child's heartbeat is lost; the scenario
    /// fails if it is still answering after `within_ms`.
    Lost {
        /// The child.
        child: Name,
        /// How long to wait at most.
        within_ms: u64,
    },
    /// Restore the child saved in a file into a new partition and start
    /// it, `after_ms` milliseconds after the previous action.
    Restore {
        /// The child (as saved).
        child: Name,
        /// The file.
        file: DiskName,
        /// Milliseconds to wait first.
        after_ms: u64,
    },
}

/// Where a `migrate ... abort=` makes a migration fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortAt {
    /// `abort=destination`: the destination partition is destroyed a few
    /// thousand pages into the first copy pass.
    Destination,
    /// `abort=blackout`: an abort is requested while the child is paused.
    Blackout,
}

/// A named list of actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Its name.
    pub name: Name,
    actions: [Option<Action>; MAX_ACTIONS],
    len: usize,
}

impl Scenario {
    /// The actions, in order.
    pub fn actions(&self) -> impl Iterator<Item = Action> + '_ {
        self.actions[..self.len].iter().flatten().copied()
    }
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The named scenario does not exist.
    NoSuchScenario,
    /// An action before any `scenario` line (line number).
    ActionOutsideScenario(usize),
    /// Unknown keyword or key (line number).
    Unknown(usize),
    /// A value is malformed or out of range (line number).
    BadValue(usize),
    /// Too many actions in a scenario (line number).
    TooManyActions(usize),
}

fn number(s: &str) -> Option<u64> {
    let (digits, scale) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let value = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    value.checked_mul(scale)
}

fn name(s: &str) -> Option<Name> {
    let valid = !s.is_empty()
        && s.len() <= 8
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    valid.then(|| Name::new(s))
}

fn child(words: core::str::SplitWhitespace<'_>, line: usize) -> Result<ChildSpec, ConfigError> {
    let mut words = words;
    let bad = ConfigError::BadValue(line);
    let mut spec = ChildSpec::new(name(words.next().ok_or(bad)?).ok_or(bad)?);
    let mut workload = false;
    let mut disks = 0;
    for word in words {
        let (key, value) = word.split_once('=').ok_or(ConfigError::Unknown(line))?;
        match key {
            "memory" => spec.memory = number(value).ok_or(bad)?,
            "vcpus" => {
                spec.vcpus = number(value)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(bad)?
            }
            "workload" => {
                if value.is_empty() || value.len() > MAX_WORKLOAD {
                    return Err(bad);
                }
                spec.workload[..value.len()].copy_from_slice(value.as_bytes());
                workload = true;
            }
            "args" => {
                for (n, arg) in value.split(',').enumerate() {
                    *spec.args.get_mut(n).ok_or(bad)? = number(arg).ok_or(bad)?;
                }
            }
            "cpu" => {
                spec.cpu = Some(
                    number(value)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or(bad)?,
                )
            }
            "priority" => spec.priority = number(value).filter(|&p| p <= 7).ok_or(bad)? as u8,
            "disk" => {
                *spec.disks.get_mut(disks).ok_or(bad)? = Some(DiskName::new(value).ok_or(bad)?);
                disks += 1;
            }
            _ => return Err(ConfigError::Unknown(line)),
        }
    }
    let memory_ok = (MIN_CHILD_MEMORY..=MAX_CHILD_MEMORY).contains(&spec.memory)
        && spec.memory.is_multiple_of(2 << 20);
    if !workload || !memory_ok || spec.vcpus == 0 || spec.vcpus > MAX_CHILD_VCPUS {
        return Err(bad);
    }
    Ok(spec)
}

/// `hotadd CHILD FILE lun=N [after=R]` or `hotremove CHILD lun=N [after=R]`.
fn hot(
    keyword: &str,
    words: core::str::SplitWhitespace<'_>,
    line: usize,
) -> Result<Action, ConfigError> {
    let bad = ConfigError::BadValue(line);
    let mut words = words;
    let child = name(words.next().ok_or(bad)?).ok_or(bad)?;
    let disk = if keyword == "hotadd" {
        Some(DiskName::new(words.next().ok_or(bad)?).ok_or(bad)?)
    } else {
        None
    };
    let (mut lun, mut after) = (None, 0);
    for word in words {
        match word.split_once('=').ok_or(ConfigError::Unknown(line))? {
            ("lun", v) => lun = Some(number(v).filter(|&l| l < LUNS).ok_or(bad)? as u8),
            ("after", v) => after = number(v).ok_or(bad)?,
            _ => return Err(ConfigError::Unknown(line)),
        }
    }
    let lun = lun.ok_or(bad)?;
    Ok(match disk {
        Some(disk) => Action::HotAdd {
            child,
            disk,
            lun,
            after,
        },
        None => Action::HotRemove { child, lun, after },
    })
}

/// `save CHILD FILE [requests=N] [after=MS]` or `restore CHILD FILE [after=MS]`.
fn save_restore(
    keyword: &str,
    words: core::str::SplitWhitespace<'_>,
    line: usize,
) -> Result<Action, ConfigError> {
    let bad = ConfigError::BadValue(line);
    let mut words = words;
    let child = name(words.next().ok_or(bad)?).ok_or(bad)?;
    let file = DiskName::new(words.next().ok_or(bad)?).ok_or(bad)?;
    let (mut after_ms, mut after_requests) = (0, 0);
    for word in words {
        match word.split_once('=').ok_or(ConfigError::Unknown(line))? {
            ("after", v) => after_ms = number(v).ok_or(bad)?,
            ("requests", v) if keyword == "save" => after_requests = number(v).ok_or(bad)?,
            _ => return Err(ConfigError::Unknown(line)),
        }
    }
    Ok(if keyword == "save" {
        Action::Save {
            child,
            file,
            after_requests,
            after_ms,
        }
    } else {
        Action::Restore {
            child,
            file,
            after_ms,
        }
    })
}

/// `migrate CHILD [frames=N] [requests=N] [after=MS] [abort=destination|blackout]`.
fn migrate(words: core::str::SplitWhitespace<'_>, line: usize) -> Result<Action, ConfigError> {
    let bad = ConfigError::BadValue(line);
    let mut words = words;
    let child = name(words.next().ok_or(bad)?).ok_or(bad)?;
    let (mut after_frames, mut after_requests, mut after_ms, mut abort) = (0, 0, 0, None);
    for word in words {
        match word.split_once('=').ok_or(ConfigError::Unknown(line))? {
            ("frames", v) => after_frames = number(v).ok_or(bad)?,
            ("requests", v) => after_requests = number(v).ok_or(bad)?,
            ("after", v) => after_ms = number(v).ok_or(bad)?,
            ("abort", "destination") => abort = Some(AbortAt::Destination),
            ("abort", "blackout") => abort = Some(AbortAt::Blackout),
            ("abort", _) => return Err(bad),
            _ => return Err(ConfigError::Unknown(line)),
        }
    }
    Ok(Action::Migrate {
        child,
        after_frames,
        after_requests,
        after_ms,
        abort,
    })
}

/// `stop CHILD [timeout=MS] [requests=N] [after=MS]` or `lost CHILD [within=MS]`.
fn stop_lost(
    keyword: &str,
    words: core::str::SplitWhitespace<'_>,
    line: usize,
) -> Result<Action, ConfigError> {
    let bad = ConfigError::BadValue(line);
    let mut words = words;
    let child = name(words.next().ok_or(bad)?).ok_or(bad)?;
    let (mut timeout_ms, mut after_requests, mut after_ms) = (DEFAULT_STOP_TIMEOUT_MS, 0, 0);
    let mut within_ms = DEFAULT_LOST_WITHIN_MS;
    for word in words {
        match (
            keyword,
            word.split_once('=').ok_or(ConfigError::Unknown(line))?,
        ) {
            ("stop", ("timeout", v)) => {
                timeout_ms = number(v)
                    .and_then(|t| u32::try_from(t).ok())
                    .filter(|t| (1..=MAX_STOP_TIMEOUT_MS).contains(t))
                    .ok_or(bad)?
            }
            ("stop", ("requests", v)) => after_requests = number(v).ok_or(bad)?,
            ("stop", ("after", v)) => after_ms = number(v).ok_or(bad)?,
            ("lost", ("within", v)) => within_ms = number(v).ok_or(bad)?,
            _ => return Err(ConfigError::Unknown(line)),
        }
    }
    Ok(if keyword == "stop" {
        Action::Stop {
            child,
            timeout_ms,
            after_requests,
            after_ms,
        }
    } else {
        Action::Lost { child, within_ms }
    })
}

/// Finds scenario `wanted` in `text` and parses it (other scenarios are
/// checked for syntax too, so a broken file is noticed whatever is chosen).
pub fn scenario(text: &str, wanted: &str) -> Result<Scenario, ConfigError> {
    let mut found: Option<Scenario> = None;
    let mut current: Option<Scenario> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("");
        let mut words = content.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let action = match keyword {
            "scenario" => {
                let n = name(words.next().ok_or(ConfigError::BadValue(line))?)
                    .ok_or(ConfigError::BadValue(line))?;
                if words.next().is_some() {
                    return Err(ConfigError::BadValue(line));
                }
                if let Some(done) = current.take().filter(|s| s.name.as_str() == wanted) {
                    found = Some(done);
                }
                current = Some(Scenario {
                    name: n,
                    actions: [None; MAX_ACTIONS],
                    len: 0,
                });
                continue;
            }
            "child" => Action::Start(child(words, line)?),
            "hotadd" | "hotremove" => hot(keyword, words, line)?,
            "migrate" => migrate(words, line)?,
            "save" | "restore" => save_restore(keyword, words, line)?,
            "stop" | "lost" => stop_lost(keyword, words, line)?,
            "pause" | "resume" | "destroy" | "forget" => {
                let n = name(words.next().ok_or(ConfigError::BadValue(line))?)
                    .ok_or(ConfigError::BadValue(line))?;
                if words.next().is_some() {
                    return Err(ConfigError::BadValue(line));
                }
                match keyword {
                    "pause" => Action::Pause(n),
                    "resume" => Action::Resume(n),
                    "forget" => Action::Forget(n),
                    _ => Action::Destroy(n),
                }
            }
            _ => return Err(ConfigError::Unknown(line)),
        };
        let scenario = current
            .as_mut()
            .ok_or(ConfigError::ActionOutsideScenario(line))?;
        let slot = scenario
            .actions
            .get_mut(scenario.len)
            .ok_or(ConfigError::TooManyActions(line))?;
        *slot = Some(action);
        scenario.len += 1;
    }
    if let Some(done) = current.filter(|s| s.name.as_str() == wanted) {
        found = Some(done);
    }
    found.ok_or(ConfigError::NoSuchScenario)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# the demo
scenario demo
child alpha memory=8M vcpus=1 workload=hello
child beta memory=16M vcpus=2 workload=spin args=3,0x100 cpu=2 priority=1   # two vCPUs

scenario life
child p1 workload=spin
pause p1
resume p1
destroy p1
";

    #[test]
    fn parses_scenarios() {
        let demo = scenario(TEXT, "demo").unwrap();
        let actions: Vec<Action> = demo.actions().collect();
        assert_eq!(actions.len(), 2);
        let Action::Start(beta) = actions[1] else {
            panic!("not a start")
        };
        assert_eq!(beta.name.as_str(), "beta");
        assert_eq!(beta.memory, 16 << 20);
        assert_eq!(beta.vcpus, 2);
        assert_eq!(beta.workload(), "spin");
        assert_eq!(beta.args, [3, 0x100, 0, 0]);
        assert_eq!(beta.cpu, Some(2));
        assert_eq!(beta.priority, 1);
        let life = scenario(TEXT, "life").unwrap();
        let actions: Vec<Action> = life.actions().collect();
        assert_eq!(actions[1], Action::Pause(Name::new("p1")));
        assert_eq!(actions[3], Action::Destroy(Name::new("p1")));
        assert_eq!(scenario(TEXT, "nope"), Err(ConfigError::NoSuchScenario));
    }

    #[test]
    fn every_scenario_of_the_shipped_boot_configuration_parses() {
        let text = include_str!("../boot.cfg");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("scenario "))
            .map(str::trim)
            .collect();
        assert!(names.len() > 20, "{names:?}");
        for n in names {
            assert!(
                scenario(text, n).is_ok(),
                "scenario {n}: {:?}",
                scenario(text, n)
            );
        }
    }

    #[test]
    fn forget_names_one_child() {
        let text = "scenario o\nchild o1 memory=16M vcpus=1 workload=spin\nforget o1\n";
        let actions: Vec<Action> = scenario(text, "o").unwrap().actions().collect();
        assert_eq!(actions[1], Action::Forget(Name::new("o1")));
        let bad = "scenario o\nforget o1 o2\n";
        assert!(scenario(bad, "o").is_err());
    }

    #[test]
    fn parses_migrations() {
        let text = "scenario m\nchild a workload=memdirty vcpus=2 memory=64M\nmigrate a\n\
                    migrate a frames=20 after=1500 abort=destination\nmigrate a requests=7 abort=blackout\n";
        let actions: Vec<Action> = scenario(text, "m").unwrap().actions().collect();
        let a = Name::new("a");
        assert_eq!(
            actions[1..],
            [
                Action::Migrate {
                    child: a,
                    after_frames: 0,
                    after_requests: 0,
                    after_ms: 0,
                    abort: None
                },
                Action::Migrate {
                    child: a,
                    after_frames: 20,
                    after_requests: 0,
                    after_ms: 1500,
                    abort: Some(AbortAt::Destination)
                },
                Action::Migrate {
                    child: a,
                    after_frames: 0,
                    after_requests: 7,
                    after_ms: 0,
                    abort: Some(AbortAt::Blackout)
                },
            ]
        );
        let text = "scenario q\nsave a a.sav after=500 requests=3\nrestore a a.sav\n";
        let actions: Vec<Action> = scenario(text, "q").unwrap().actions().collect();
        let file = DiskName::new("a.sav").unwrap();
        assert_eq!(
            actions,
            [
                Action::Save {
                    child: a,
                    file,
                    after_requests: 3,
                    after_ms: 500
                },
                Action::Restore {
                    child: a,
                    file,
                    after_ms: 0
                },
            ]
        );
        for bad in [
            "migrate",
            "migrate a abort=later",
            "migrate a after=x",
            "migrate a when=1",
            "save a",
            "save a ../x",
            "restore a x.sav at=1",
            "restore a x.sav requests=1",
        ] {
            let text = format!("scenario m\n{bad}\n");
            assert!(scenario(&text, "m").is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_stops_and_lost_heartbeats() {
        let text = "scenario s\nstop w\nstop w timeout=2500 requests=40 after=100\n\
                    lost h\nlost h within=9000\n";
        let actions: Vec<Action> = scenario(text, "s").unwrap().actions().collect();
        let (w, h) = (Name::new("w"), Name::new("h"));
        assert_eq!(
            actions,
            [
                Action::Stop {
                    child: w,
                    timeout_ms: DEFAULT_STOP_TIMEOUT_MS,
                    after_requests: 0,
                    after_ms: 0
                },
                Action::Stop {
                    child: w,
                    timeout_ms: 2500,
                    after_requests: 40,
                    after_ms: 100
                },
                Action::Lost {
                    child: h,
                    within_ms: DEFAULT_LOST_WITHIN_MS
                },
                Action::Lost {
                    child: h,
                    within_ms: 9000
                },
            ]
        );
        for bad in [
            "stop",
            "stop w timeout=0",
            "stop w timeout=600001",
            "stop w timeout=99999999999",
            "stop w within=5",
            "stop w colour=red",
            "stop w x",
            "lost",
            "lost h timeout=5",
            "lost h within=x",
        ] {
            let text = format!("scenario s\n{bad}\n");
            assert!(scenario(&text, "s").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_disks_and_hot_plugging() {
        let text = "scenario s\nchild g workload=disk disk=g.vhd disk=extra-1.vhd\n\
                    hotadd g x.vhd lun=2 after=100\nhotremove g lun=63\n";
        let actions: Vec<Action> = scenario(text, "s").unwrap().actions().collect();
        let Action::Start(g) = actions[0] else {
            panic!("not a start")
        };
        assert_eq!(
            g.disks[0].map(|d| d.as_str().to_string()),
            Some("g.vhd".into())
        );
        assert_eq!(g.disks[1].unwrap().as_str(), "extra-1.vhd");
        assert_eq!(g.disks[2], None);
        assert_eq!(
            actions[1],
            Action::HotAdd {
                child: Name::new("g"),
                disk: DiskName::new("x.vhd").unwrap(),
                lun: 2,
                after: 100
            }
        );
        assert_eq!(
            actions[2],
            Action::HotRemove {
                child: Name::new("g"),
                lun: 63,
                after: 0
            }
        );
        for bad in [
            "hotadd g lun=1",
            "hotadd g x.vhd",
            "hotadd g x.vhd lun=64",
            "hotremove g lun=1 after=x",
            "hotremove g lun=1 colour=red",
            "child g workload=disk disk=../etc",
            "child g workload=disk disk=.hidden",
            "child g workload=disk disk=a disk=b disk=c disk=d disk=e",
        ] {
            let text = format!("scenario s\n{bad}\n");
            assert!(scenario(&text, "s").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_malformed_lines() {
        let cases: [(&str, ConfigError); 9] = [
            ("child a workload=x", ConfigError::ActionOutsideScenario(1)),
            ("scenario s\nchild a", ConfigError::BadValue(2)),
            (
                "scenario s\nchild a workload=x vcpus=5",
                ConfigError::BadValue(2),
            ),
            (
                "scenario s\nchild a workload=x memory=3M",
                ConfigError::BadValue(2),
            ),
            (
                "scenario s\nchild a workload=x memory=99999999999999999999G",
                ConfigError::BadValue(2),
            ),
            (
                "scenario s\nchild a workload=x colour=red",
                ConfigError::Unknown(2),
            ),
            (
                "scenario s\nchild averyverylongname workload=x",
                ConfigError::BadValue(2),
            ),
            ("scenario s\nfly a", ConfigError::Unknown(2)),
            (
                "scenario s\nchild a workload=x args=1,2,3,4,5",
                ConfigError::BadValue(2),
            ),
        ];
        for (text, error) in cases {
            assert_eq!(scenario(text, "s"), Err(error), "{text:?}");
        }
        let many: String = core::iter::once("scenario s\n".to_string())
            .chain((0..=MAX_ACTIONS).map(|_| "pause a\n".to_string()))
            .collect();
        assert_eq!(
            scenario(&many, "s"),
            Err(ConfigError::TooManyActions(MAX_ACTIONS + 2))
        );
    }
}
