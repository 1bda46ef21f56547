//! Workload `dirty`: writes a chosen set of pages while the root logs
//! dirty pages, so the root can check the log (protocol at
//! `ipc::workload::DIRTY`).
//!
//! # Invariants
//! Between "ready" and "done" the workload writes exactly one byte in each
//! selected page of the window and nothing else in it; it allocates
//! nothing. Only vCPU 0 takes part; the others halt at once.

use core::sync::atomic::{AtomicBool, Ordering};

use ipc::child::{CHILD_EVENT_VECTOR, ChildBootInfo};
use ipc::hypercall::{Call, SlotHandle};
use ipc::workload::{DIRTY_BYTE_OFFSET, DIRTY_WINDOW_PAGES, DirtyDone};
use partition_rt::{halt_forever, hypercall, println};

use crate::arch::DirtyWindow;

/// Set by the event handler when the root's "go" arrives.
static GO: AtomicBool = AtomicBool::new(false);

fn on_event(_vector: u8) {
    GO.store(true, Ordering::Release);
}

fn signal(port: SlotHandle, what: &str) {
    if let Err(status) = hypercall(&Call::PortSignal { port }) {
        println!("dirty: signalling {what} to the root failed: {status:?}");
        halt_forever()
    }
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        halt_forever()
    }
    let (Some(to_root), Some(from_root)) = (info.to_root, info.from_root) else {
        println!("dirty: the boot page has no to_root/from_root ports");
        halt_forever()
    };
    let Some(window) = DirtyWindow::new(info, info.args[0], DIRTY_WINDOW_PAGES) else {
        println!(
            "dirty: refusing window at {:#x}: not page-aligned, outside memory, or over the boot page or stacks",
            info.args[0]
        );
        halt_forever()
    };
    let selected = info.args[1];
    if partition_rt::set_interrupt_handler(CHILD_EVENT_VECTOR, on_event).is_err() {
        halt_forever()
    }
    partition_rt::enable_interrupts();
    signal(to_root, "ready");
    partition_rt::wait_until(|| GO.load(Ordering::Acquire));
    if let Err(status) = hypercall(&Call::Acknowledge { slot: from_root }) {
        println!("dirty: acknowledging the root's event failed: {status:?}");
    }
    let mut pages = 0;
    for page in 0..DIRTY_WINDOW_PAGES {
        if selected & (1 << page) != 0 {
            window.write(page, DIRTY_BYTE_OFFSET, 0x80 | page as u8);
            pages += 1;
        }
    }
    // The line first: it is in the console ring before the root hears "done".
    println!("{}", DirtyDone { pages });
    signal(to_root, "done");
    halt_forever()
}
