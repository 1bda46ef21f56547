//! Workload `netflood`: a hostile network child (`ipc::kv` documents
//! args). It sends `args[1]` broadcast frames whose source is another
//! child's MAC (`Mac::for_child(args[0])`), then as many with its own MAC,
//! as fast as the send slots allow, and reports what the root answered.
//!
//! # Invariants
//! Only vCPU 0 works; every wait is bounded.

use ipc::child::ChildBootInfo;
use ipc::kv::NetFloodDone;
use ipc::vmbus::network::Mac;
use partition_rt::println;

use crate::network::Adapter;

/// EtherType of the flood's frames (IEEE local experimental).
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    let [victim, count, _, _] = info.args;
    let mut adapter = match Adapter::open(info, 1500) {
        Ok(adapter) => adapter,
        Err(e) => {
            println!("netflood: no network adapter: {e:?}");
            partition_rt::halt_forever()
        }
    };
    let forged = Mac::for_child(victim as u16);
    let own = adapter.mac();
    let mut frame = [0u8; 128];
    frame[..6].copy_from_slice(&Mac::BROADCAST.0);
    frame[12..14].copy_from_slice(&ETHERTYPE);
    let mut done = NetFloodDone::default();
    for (source, sent) in [(forged, &mut done.forged), (own, &mut done.own)] {
        frame[6..12].copy_from_slice(&source.0);
        for i in 0..count {
            frame[14..22].copy_from_slice(&i.to_le_bytes());
            match adapter.send_frame(&frame) {
                Ok(_) => *sent += 1,
                Err(_) => done.failed += 1,
            }
        }
        // The last batch.
        let _ = adapter.flush();
    }
    println!("{done}");
    partition_rt::halt_forever()
}
