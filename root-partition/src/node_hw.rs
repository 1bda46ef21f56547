//! The node on the machine: the real [`Platform`] of the root's event loop
//! (`root_partition::node`) and the services that drive the hardware and
//! the children. Booted when the kernel command line names no scenario.
//!
//! Command-line words (test fixtures and the benchmark's peer):
//! - `node.run-for=SECONDS`: stop the node after that long (the children
//!   are destroyed, the root powers off); without it the node runs until
//!   it is told to power off.
//! - `node.stop-timeout=SECONDS`: how long a VM has to shut down when
//!   stopped before it is turned off (default 30).
//! - `node.poll`: never sleep (the loop polls round after round), the
//!   behaviour of the root before it was a node: the idle benchmark's peer.

use ipc::boot::BootInfo;
use ipc::elf::Image;
use root_partition::node::options::{Options, StopAt};
use root_partition::node::{self, Platform, Poll, Service};
use root_partition::services::mgmt::api::auth::{Auth, NO_TOKEN};
use root_partition::services::mgmt::api::{Api, NodeFacts};
use root_partition::services::vm::manager::ManagerConfig;

use crate::node_vms::Vms;

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// The machine: time from the time-stamp counter, events from the
/// partition's interrupt count, sleep in `STI; HLT`.
struct Machine {
    tsc_khz: u64,
    seen: u64,
    /// A kernel timer on a port bound to [`TIMER_VECTOR`] of the root's
    /// vCPU: sleeps with a deadline end by it (`None` if the kernel
    /// refused one: such sleeps then yield the processor until the
    /// deadline instead).
    sleeper: Option<partition_rt::timer::Sleeper>,
}

/// The vector of the node's timer on the root's vCPU.
const TIMER_VECTOR: u8 = 0x71;

impl Machine {
    /// The kernel's clock (ns), which timers' deadlines are on.
    fn ns(&self, tsc: u64) -> u64 {
        ipc::hypercall::timer::clock_ns(tsc, self.tsc_khz)
    }
}

impl Platform for Machine {
    fn now_ns(&mut self) -> u64 {
        self.ns(partition_rt::rdtsc())
    }

    fn take_events(&mut self) -> u64 {
        let now = partition_rt::interrupts::taken();
        if now == self.seen {
            return 0;
        }
        self.seen = now;
        node::event::OTHER
    }

    fn sleep(&mut self, deadline: Option<u64>) {
        let seen = self.seen;
        match deadline {
            // Checked with interrupts off, slept with STI; HLT: an
            // interrupt after the check ends the HLT.
            None => partition_rt::wait_until(|| partition_rt::interrupts::taken() != seen),
            // The timer's signal is an interrupt like the others: it ends
            // the HLT. The timer is cancelled and its port re-armed after.
            Some(deadline) => match self.sleeper {
                Some(sleeper) if sleeper.set_at(deadline).is_ok() => {
                    partition_rt::wait_until(|| partition_rt::interrupts::taken() != seen);
                    let _ = sleeper.cancel();
                    let _ = sleeper.acknowledge();
                }
                _ => loop {
                    if partition_rt::interrupts::taken() != seen || self.now_ns() >= deadline {
                        break;
                    }
                    let _ = partition_rt::hypercall(&ipc::hypercall::Call::Yield);
                },
            },
        }
    }
}

/// How often the VMBus service passes while children run, for their
/// heartbeats (sent every second by `vmbus::service_all`).
const HEARTBEAT_PASS_NS: u64 = 500_000_000;

/// Serves every child's VMBus and the virtual switch.
struct Vmbus;

impl Service for Vmbus {
    fn name(&self) -> &'static str {
        "vmbus"
    }
    fn poll(&mut self, now: u64, _events: u64) -> Poll {
        if crate::vmbus::service_all() > 0 {
            Poll::Busy
        } else if crate::vmbus::any_bus() {
            // Heartbeats go out (and lost ones are noticed) on a pass.
            Poll::Idle(Some(now + HEARTBEAT_PASS_NS))
        } else {
            Poll::Idle(None)
        }
    }
}

pub fn run(info: &BootInfo) {
    let options = Options::parse(info.cmdline());
    for word in &options.ignored {
        println!("root partition: node: ignored {word}");
    }
    let mode = options.mode();
    let tsc_khz = u64::from(info.tsc_khz);
    if tsc_khz == 0 {
        println!("root partition: node: no time-stamp counter frequency in the boot page");
        return;
    }
    crate::vmbus::choose_windows(info.shared_window);
    crate::children::install_handlers();
    crate::vmbus::set_clock(tsc_khz);
    partition_rt::enable_interrupts();
    let sleeper = crate::children::discover(info)
        .map_err(|e| alloc::format!("{e:?}"))
        .and_then(|root| {
            partition_rt::timer::Sleeper::new(root.vcpu, TIMER_VECTOR, tsc_khz)
                .map_err(|e| alloc::format!("{e:?}"))
        });
    let sleeper = match sleeper {
        Ok(s) => Some(s),
        Err(e) => {
            println!("root partition: node: no kernel timer ({e}): deadlines yield instead");
            None
        }
    };
    let mut machine = Machine {
        tsc_khz,
        seen: partition_rt::interrupts::taken(),
        sleeper,
    };
    let start = machine.now_ns();
    let stop_at = options.stop_at(start);
    println!("{}", options.banner());
    let vms = vm_service(info, &mut machine, stop_at, options.stop_timeout_s);
    let mut management = vms.map(|vms| management(info, vms, machine.now_ns()));
    let mut stop = StopAt { deadline: stop_at };
    let mut vmbus = Vmbus;
    let mut services: alloc::vec::Vec<&mut dyn Service> = alloc::vec![&mut vmbus];
    match management.as_mut() {
        Some(m) => services.push(m),
        None => services.push(&mut stop),
    }
    let stats = node::run(&mut machine, &mut services, mode);
    flush_volume();
    let ran_ms = (machine.now_ns() - start) / 1_000_000;
    println!(
        "root partition: node stopped after {ran_ms} ms: {} rounds, {} busy, {} sleeps ({} ended by deadline)",
        stats.rounds, stats.busy_rounds, stats.sleeps, stats.timeouts
    );
}

/// The VMs and their management API, on the management NIC if the
/// machine has one (the second virtio-net). The token's digest comes
/// from the data volume; without one every request is refused.
fn management(info: &BootInfo, mut vms: Vms, now: u64) -> crate::mgmt::Management {
    let auth = Auth::load(vms.manager.store());
    if !auth.configured() {
        println!("root partition: node: {NO_TOKEN}: every API request is refused");
    }
    let facts = NodeFacts {
        name: alloc::string::String::from("capvisor"),
        version: alloc::string::String::from(env!("CARGO_PKG_VERSION")),
        processors: info.cpu_count,
        seed: partition_rt::rdtsc() ^ (u64::from(info.tsc_khz) << 32),
    };
    let api = Api::new(auth, facts, now);
    let server = crate::hal::net::take_management_nic().and_then(|nic| {
        match crate::mgmt::server(nic, now) {
            Ok(server) => {
                let (address, _) = crate::hal::net::management_address();
                println!(
                    "root partition: node: management API at {address}:{}",
                    root_partition::services::mgmt::server::API_PORT
                );
                Some(server)
            }
            Err(e) => {
                println!("root partition: node: management network unusable: {e}");
                None
            }
        }
    });
    if server.is_none() {
        println!("root partition: node: no management network: the API is not served");
    }
    crate::mgmt::Management::new(vms, api, server)
}

/// Makes everything written to the data volume durable before the node
/// powers off (VM definitions, saved states, the VHDs' metadata).
fn flush_volume() {
    use root_partition::services::vm::store::Store;
    let Some(mut volume) = crate::storage::volume() else {
        return;
    };
    match volume.flush() {
        Ok(()) => println!("root partition: node: data volume flushed"),
        Err(e) => println!("root partition: node: flushing the data volume failed: {e}"),
    }
}

/// The VM manager over the data volume's definitions (`/vms`), booted:
/// autostart VMs are started (or restored). `None` without a data volume
/// or a child image (the node then runs with no VM).
fn vm_service(
    info: &BootInfo,
    machine: &mut Machine,
    stop_at: Option<u64>,
    stop_timeout_s: Option<u64>,
) -> Option<Vms> {
    let Some(volume) = crate::storage::volume() else {
        println!("root partition: node: no data volume: no VMs");
        return None;
    };
    let root = match crate::children::discover(info) {
        Ok(root) => root,
        Err(e) => {
            println!("root partition: node: {e:?}: no VMs");
            return None;
        }
    };
    let image = match Image::parse(
        crate::hal::ram::modules().child_image,
        ipc::boot::PARTITION_IMAGE_BASE,
        u64::MAX,
    ) {
        Ok(image) => image,
        Err(e) => {
            println!("root partition: node: no child image ({e:?}): no VMs");
            return None;
        }
    };
    let mut config = ManagerConfig::default();
    if let Some(s) = stop_timeout_s {
        config.stop_timeout_ns = s.saturating_mul(1_000_000_000);
    }
    let hv = crate::node_vms::machine_hv(root, image, config.stop_timeout_ns);
    Vms::boot(hv, volume, config, machine.now_ns(), stop_at, |line| {
        partition_rt::console::print_line(line)
    })
}
