//! Fuzz target: the control-channel state machines fed arbitrary message
//! sequences (each message postcard-decoded from the input; bytes that do
//! not decode are skipped one at a time).
//! Invariants: neither side panics; the root only ever asks to open or
//! close an offered channel, in the state that allows it; after the first
//! error the root stops (the channel is closed), as it does for real.
#![no_main]

use ipc::vmbus::control::{
    CONSOLE_CLASS, ChannelState, ControlMessage, GuestControl, Guid, HostAction, HostControl,
    HostState, OfferProperties, OpenStatus,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let props = OfferProperties { max_payload: 256, flags: 0 };
    let mut host = HostControl::new(&[(CONSOLE_CLASS, Guid([1; 16]), props)]);
    let mut guest = GuestControl::new();
    let mut host_alive = true;
    let mut guest_alive = true;
    let mut rest = input;
    while !rest.is_empty() {
        let Ok((message, tail)) = postcard::take_from_bytes::<ControlMessage>(rest) else {
            rest = &rest[1..];
            continue;
        };
        rest = tail;
        if host_alive {
            let before = host.state();
            match host.handle(&message, |_| {}) {
                Ok(HostAction::Open { offer_id, .. }) => {
                    assert_eq!(before, HostState::Ready);
                    assert_eq!(host.channel(offer_id), Some(ChannelState::Open));
                    // Half the opens fail on the root's side.
                    let result = if offer_id % 2 == 0 { Ok((1, 2)) } else { Err(OpenStatus::BadRange) };
                    let _ = host.opened(offer_id, result);
                }
                Ok(HostAction::Close { offer_id }) => {
                    assert_eq!(before, HostState::Ready);
                    assert_eq!(host.channel(offer_id), Some(ChannelState::Offered));
                }
                Ok(HostAction::None) => {}
                Err(_) => host_alive = false,
            }
        }
        if guest_alive && guest.handle(&message).is_err() {
            guest_alive = false;
        }
    }
});
