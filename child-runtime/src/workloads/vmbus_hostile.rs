//! Workload `vmbus-hostile`: a child that breaks its own VMBus on purpose,
//! to show the root closes the channel, says why, and keeps serving
//! everyone else (see `ipc::workload::VMBUS_HOSTILE`).
//!
//! # Invariants
//! Every attack stays inside the child's own ring pages; waits for the
//! root are bounded; vCPU 0 ends with `CLI; HLT`, the others at once.

use ipc::child::ChildBootInfo;
use ipc::vmbus::control::{ControlMessage, VERSION_MAJOR, VERSION_MINOR};
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet::{HEADER_BYTES, KIND_MESSAGE, PacketHeader};
use ipc::vmbus::ring::{CONTROL_BYTES, Producer, READ_INDEX, WRITE_INDEX};
use ipc::workload::{ChattyLine, VMBUS_HOSTILE_GOOD_LINES, VmbusAttack};
use partition_rt::println;

use crate::vmbus;

/// Yields to wait for the root.
const PATIENCE: u64 = 2_000_000;

/// Waits (bounded) until the root has read everything in the console ring.
fn wait_drained(ring: &impl RingMemory) {
    for _ in 0..PATIENCE {
        if ring.load_u32_acquire(READ_INDEX) == ring.load_u32_acquire(WRITE_INDEX) {
            return;
        }
        vmbus::yield_now();
    }
}

/// Waits (bounded) for the root's rescind of the console.
fn wait_rescind() {
    let _ = vmbus::with_bus(|bus| bus.wait_for_rescind(vmbus::yield_now, PATIENCE));
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    let (Some(console), Some(control)) = (vmbus::console_ring(info), vmbus::control_ring(info))
    else {
        println!("vmbus-hostile: no VMBus console to attack");
        partition_rt::halt_forever()
    };
    let of = VMBUS_HOSTILE_GOOD_LINES;
    for seq in 1..=of {
        println!("{}", ChattyLine { seq, of });
    }
    match info.args[0] {
        1 => {
            println!("{}", VmbusAttack("console write index"));
            wait_drained(&console);
            // A write index far outside the ring.
            console.store_u32_release(WRITE_INDEX, 0x7fff_fff8);
            vmbus::signal_console();
            wait_rescind();
            // A control packet that is no postcard message at all.
            if let Ok(mut tx) = Producer::new(control) {
                let _ = tx.send(KIND_MESSAGE, 0, 0, &[0xff; 9]);
                vmbus::signal_control();
            }
        }
        _ => {
            println!("{}", VmbusAttack("console packet length"));
            wait_drained(&console);
            // A packet header claiming 4000 bytes where 8 follow.
            let at = console.load_u32_acquire(WRITE_INDEX);
            let header = PacketHeader::new(KIND_MESSAGE, 0, 4000, 0);
            let size = console.len() - CONTROL_BYTES;
            if (at as usize) + HEADER_BYTES + 8 <= size {
                console.write(CONTROL_BYTES + at as usize, &header.to_wire());
                console.store_u32_release(WRITE_INDEX, at + HEADER_BYTES as u32 + 8);
            } else {
                console.store_u32_release(WRITE_INDEX, 4);
            }
            vmbus::signal_console();
            wait_rescind();
            // A version after the handshake: out of order.
            let _ = vmbus::with_bus(|bus| {
                bus.send_raw(
                    &ControlMessage::Version {
                        major: VERSION_MAJOR,
                        minor: VERSION_MINOR,
                    },
                    vmbus::signal_control,
                    vmbus::yield_now,
                )
            });
        }
    }
    // The console is gone: this line goes nowhere the test sees (DebugWrite
    // is off without `debug-console`).
    println!("{}", VmbusAttack("done"));
    partition_rt::halt_forever()
}
