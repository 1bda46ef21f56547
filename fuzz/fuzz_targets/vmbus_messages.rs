//! Fuzz target: packet and postcard decoding of every control and console
//! message. Invariants: decoding arbitrary bytes under an arbitrary header
//! never panics; a message that decodes re-encodes to bytes that decode to
//! the same message; console messages that decode are checked without panic.
#![no_main]

use ipc::vmbus::console::ConsoleMessage;
use ipc::vmbus::control::ControlMessage;
use ipc::vmbus::packet::{self, HEADER_BYTES, Packet, PacketHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut wire = [0u8; HEADER_BYTES];
    let n = input.len().min(HEADER_BYTES);
    wire[..n].copy_from_slice(&input[..n]);
    let header = PacketHeader::from_wire(&wire);
    let _ = header.total_bytes();
    let payload = &input[n..];
    // Use the header as sent, and once more with a well-formed one.
    for header in [header, PacketHeader::new(packet::KIND_MESSAGE, 0, payload.len() as u32, 0)] {
        let p = Packet { header, payload };
        let mut scratch = [0u8; 4096];
        if let Ok(m) = packet::decode::<ControlMessage>(&p) {
            let bytes = packet::encode(&m, &mut scratch).expect("a decoded message re-encodes");
            let again = Packet { header, payload: bytes };
            assert_eq!(packet::decode::<ControlMessage>(&again), Ok(m));
        }
        if let Ok(m) = packet::decode::<ConsoleMessage<'_>>(&p) {
            let _ = m.check();
            let bytes = packet::encode(&m, &mut scratch).expect("a decoded message re-encodes");
            let again = Packet { header, payload: bytes };
            assert_eq!(packet::decode::<ConsoleMessage<'_>>(&again), Ok(m));
        }
    }
});
