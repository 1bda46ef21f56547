//! Workload `kv`: a TCP key-value service on the child's network adapter
//! (`ipc::kv` documents the protocol, the arguments and the table's
//! layout on disk). One client at a time; `QUIT` ends the service and the
//! workload.
//!
//! With a disk at LUN 0 the table outlives the VM: it is loaded from the
//! disk before the service listens, and saved there (written and flushed)
//! when a client says `QUIT` or the root asks for a graceful shutdown,
//! which then ends properly (`integration::finish`). A table on disk that
//! does not decode is left as it is: the service starts empty and never
//! writes that disk. Without a disk the table lives in the heap only.
//!
//! # Invariants
//! Only vCPU 0 works. The store lives in the child's heap; a line longer
//! than `MAX_LINE` is answered `ERR` and dropped, never kept. Every disk
//! wait is bounded (`WAIT_PATIENCE`); a failed save is reported and the
//! shutdown ends unflushed, never hangs.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use ipc::child::ChildBootInfo;
use ipc::kv::{
    Command, DISK_SECTOR, DiskError, DiskHeader, KvDone, KvLoadFailed, KvLoaded, KvSaveFailed,
    KvSaved, KvServing, MAX_LINE, decode_payload, encode, encoded_len, parse,
};
use ipc::vmbus::storage::Status;
use partition_rt::println;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use crate::network::Adapter;
use crate::storage;
use crate::vmbus::WAIT_PATIENCE;

type Store = BTreeMap<Vec<u8>, Vec<u8>>;

fn now() -> Instant {
    // About a microsecond per thousand cycles: timers only need to move forward.
    Instant::from_micros((partition_rt::rdtsc() / 1000) as i64)
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    serve(info, true)
}

/// The service on vCPU 0 with its table in the heap only, whatever disks
/// the VM has (the key-value service of workload `memdirty`).
pub fn run_in_memory(info: &ChildBootInfo) -> ! {
    serve(info, false)
}

/// The service; `use_disk`: look for a disk at LUN 0 and keep the table there.
fn serve(info: &ChildBootInfo, use_disk: bool) -> ! {
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
    let mut store = Store::new();
    let disk = if use_disk {
        Disk::load(info, &mut store)
    } else {
        None
    };
    println!(
        "{}",
        KvServing {
            endpoint: &format!("{address}:{port}"),
            mac: &format!("{mac}"),
            mtu: adapter.mtu(),
        }
    );
    let mut line: Vec<u8> = Vec::new();
    let mut done = KvDone::default();
    let mut quit = false;
    let mut stop = false;
    loop {
        if crate::integration::stop_requested() {
            // A graceful shutdown: end the client's session, keep the table.
            let socket = sockets.get_mut::<tcp::Socket<'_>>(handle);
            socket.close();
            stop = true;
            break;
        }
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
        // The client left (its FIN read, nothing more to read): close our
        // side too, so the socket closes and listens for the next client.
        if socket.state() == tcp::State::CloseWait && !socket.can_recv() {
            socket.close();
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
    let saved = disk.as_ref().is_some_and(|d| d.save(&store));
    if stop {
        crate::integration::finish(saved)
    }
    partition_rt::halt_forever()
}

/// LUN 0, holding the table.
struct Disk {
    /// Its capacity in sectors.
    sectors: u64,
}

impl Disk {
    /// Opens the storage controller and loads the table on LUN 0 into
    /// `store`. `None`: no disk at LUN 0, or one whose table did not load
    /// (reported; that disk is never written).
    fn load(info: &ChildBootInfo, store: &mut Store) -> Option<Disk> {
        storage::open(info).ok()?;
        match storage::with(|c| read_table(c, store))? {
            Ok(Some(disk)) => {
                println!(
                    "{}",
                    KvLoaded {
                        keys: store.len() as u64
                    }
                );
                Some(disk)
            }
            Ok(None) => None,
            Err(reason) => {
                store.clear();
                println!("{}", KvLoadFailed { reason: &reason });
                None
            }
        }
    }

    /// Writes the table and flushes; reports either way. Whether it is
    /// on the disk.
    fn save(&self, store: &Store) -> bool {
        let result = storage::with(|c| write_table(c, self.sectors, store))
            .unwrap_or_else(|| Err("the storage controller is gone".to_string()));
        match result {
            Ok(keys) => {
                println!("{}", KvSaved { keys });
                true
            }
            Err(reason) => {
                println!("{}", KvSaveFailed { reason: &reason });
                false
            }
        }
    }
}

type Client = vsc::storage::StorageClient<partition_rt::SharedRingMemory>;

/// A zeroed buffer of `bytes`, or why not (a damaged length must not
/// abort the child).
fn buffer(bytes: u64) -> Result<Vec<u8>, String> {
    let n = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes do not fit in memory"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| format!("not enough memory for {bytes} bytes"))?;
    v.resize(n, 0);
    Ok(v)
}

/// Reads LUN 0's table into `store`. `Ok(None)`: there is no LUN 0.
fn read_table(c: &mut Client, store: &mut Store) -> Result<Option<Disk>, String> {
    let sectors = match c.capacity(0, storage::signal, storage::wait, WAIT_PATIENCE) {
        Ok(sectors) => sectors,
        Err(vsc::storage::StorageClientError::Status(Status::NoSuchLun)) => return Ok(None),
        Err(e) => return Err(format!("LUN 0: {e:?}")),
    };
    let have = sectors.saturating_mul(DISK_SECTOR as u64);
    let mut head = [0u8; DISK_SECTOR];
    if sectors > 0 {
        c.read(
            0,
            0,
            &mut head,
            storage::signal,
            storage::wait,
            WAIT_PATIENCE,
        )
        .map_err(|e| format!("reading LBA 0: {e:?}"))?;
    }
    let Some(header) = DiskHeader::decode(&head).map_err(|e| e.to_string())? else {
        return Ok(Some(Disk { sectors }));
    };
    if header.total_bytes() > have {
        return Err(DiskError::Truncated {
            needed: header.total_bytes(),
            have,
        }
        .to_string());
    }
    let mut payload = buffer(header.payload_sectors() * DISK_SECTOR as u64)?;
    c.read(
        0,
        1,
        &mut payload,
        storage::signal,
        storage::wait,
        WAIT_PATIENCE,
    )
    .map_err(|e| format!("reading the table: {e:?}"))?;
    let table = decode_payload(&header, &payload).map_err(|e| e.to_string())?;
    for (key, value) in table {
        store.insert(key.to_vec(), value.to_vec());
    }
    Ok(Some(Disk { sectors }))
}

/// Writes `store` as a table at LBA 0 and flushes; the keys written.
fn write_table(c: &mut Client, sectors: u64, store: &Store) -> Result<u64, String> {
    let entries = || store.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
    let needed = encoded_len(entries());
    let have = sectors.saturating_mul(DISK_SECTOR as u64);
    if needed > have {
        return Err(DiskError::NoRoom { needed, have }.to_string());
    }
    let mut bytes = buffer(needed)?;
    encode(entries(), &mut bytes).map_err(|e| e.to_string())?;
    c.write(0, 0, &bytes, storage::signal, storage::wait, WAIT_PATIENCE)
        .map_err(|e| format!("writing the table: {e:?}"))?;
    c.flush(0, storage::signal, storage::wait, WAIT_PATIENCE)
        .map_err(|e| format!("flushing: {e:?}"))?;
    Ok(store.len() as u64)
}

fn answer(line: &[u8], store: &mut Store, done: &mut KvDone, quit: &mut bool) -> Vec<u8> {
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
