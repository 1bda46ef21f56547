//! Workload `kv`: a TCP key-value service on the child's network adapter
//! (`ipc::kv` documents the protocol and the arguments). One client at a
//! time; `QUIT` ends the service and the workload.
//!
//! # Invariants
//! Only vCPU 0 works. The store lives in the child's heap; a line longer
//! than `MAX_LINE` is answered `ERR` and dropped, never kept.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use ipc::child::ChildBootInfo;
use ipc::kv::{Command, KvDone, KvServing, MAX_LINE, parse};
use partition_rt::println;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use crate::network::Adapter;

fn now() -> Instant {
    // About a microsecond per thousand cycles: timers only need to move forward.
    Instant::from_micros((partition_rt::rdtsc() / 1000) as i64)
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    let [address, port, mtu, _] = info.args;
    let mtu = if mtu == 0 { 1500 } else { mtu as u16 };
    let mut adapter = match Adapter::open(info, mtu) {
        Ok(adapter) => adapter,
        Err(e) => {
            println!("kv: no network adapter: {e:?}");
            partition_rt::halt_forever()
        }
    };
    let address = Ipv4Address::from_bits(address as u32);
    let port = port as u16;
    let mac = adapter.mac();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
    let mut iface = Interface::new(config, &mut adapter, now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(address), 24));
    });
    let gateway = Ipv4Address::from_bits((address.to_bits() & 0xffff_ff00) | 2);
    let _ = iface.routes_mut().add_default_ipv4_route(gateway);
    let mut sockets = SocketSet::new(vec![]);
    let socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        tcp::SocketBuffer::new(vec![0; 16 * 1024]),
    );
    let handle = sockets.add(socket);
    println!(
        "{}",
        KvServing {
            endpoint: &format!("{address}:{port}"),
            mac: &format!("{mac}"),
            mtu: adapter.mtu(),
        }
    );
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut line: Vec<u8> = Vec::new();
    let mut done = KvDone::default();
    let mut quit = false;
    loop {
        iface.poll(now(), &mut adapter, &mut sockets);
        let socket = sockets.get_mut::<tcp::Socket<'_>>(handle);
        if !socket.is_open() {
            if quit {
                break;
            }
            socket.set_ack_delay(None);
            if socket.listen(port).is_err() {
                println!("kv: cannot listen on port {port}");
                break;
            }
        }
        if socket.can_recv() {
            let mut input = [0u8; 2048];
            let n = socket.recv_slice(&mut input).unwrap_or(0);
            for &byte in &input[..n] {
                if byte != b'\n' {
                    if line.len() <= MAX_LINE {
                        line.push(byte);
                    }
                    continue;
                }
                let answer = answer(&line, &mut store, &mut done, &mut quit);
                line.clear();
                let _ = socket.send_slice(&answer);
                if quit {
                    socket.close();
                }
            }
        }
        if quit && !socket.is_open() {
            break;
        }
        // Sleep until the root passes a frame (or a send completes).
        if !socket.can_recv() {
            adapter.wait();
        }
    }
    // Let the last answer and the FIN go out.
    for _ in 0..100 {
        iface.poll(now(), &mut adapter, &mut sockets);
    }
    println!("{done}");
    partition_rt::halt_forever()
}

fn answer(
    line: &[u8],
    store: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    done: &mut KvDone,
    quit: &mut bool,
) -> Vec<u8> {
    done.commands += 1;
    if line.len() > MAX_LINE {
        done.errors += 1;
        return b"ERR line too long\n".to_vec();
    }
    match parse(line) {
        Ok(Command::Set(k, v)) => {
            done.sets += 1;
            store.insert(k.to_vec(), v.to_vec());
            b"OK\n".to_vec()
        }
        Ok(Command::Get(k)) => {
            done.gets += 1;
            match store.get(k) {
                Some(v) => {
                    let mut out = b"VALUE ".to_vec();
                    out.extend_from_slice(v);
                    out.push(b'\n');
                    out
                }
                None => b"NOT_FOUND\n".to_vec(),
            }
        }
        Ok(Command::Del(k)) => {
            done.dels += 1;
            match store.remove(k) {
                Some(_) => b"OK\n".to_vec(),
                None => b"NOT_FOUND\n".to_vec(),
            }
        }
        Ok(Command::Quit) => {
            *quit = true;
            b"BYE\n".to_vec()
        }
        Err(e) => {
            done.errors += 1;
            format!("ERR {e}\n").into_bytes()
        }
    }
}
