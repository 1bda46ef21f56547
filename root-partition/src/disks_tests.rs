use super::*;
use alloc::rc::Rc;
use core::cell::RefCell;
use exfat::FormatOptions;
use vhd::{DEFAULT_BLOCK_SIZE, MemDevice, NewDisk};

/// A sector disk in memory that counts requests and can be told to fail.
struct MemSectors {
    data: Vec<u8>,
    requests: usize,
    flushes: usize,
    fail: bool,
}

impl MemSectors {
    fn new(bytes: usize) -> Self {
        MemSectors {
            data: vec![0; bytes],
            requests: 0,
            flushes: 0,
            fail: false,
        }
    }
}

impl Sectors for MemSectors {
    fn sector_count(&self) -> u64 {
        (self.data.len() / SECTOR) as u64
    }
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        assert_eq!(
            buf.len() % SECTOR,
            0,
            "partial sector read reached the disk"
        );
        self.requests += 1;
        if self.fail {
            return Err(IoError::new("injected"));
        }
        let at = lba as usize * SECTOR;
        buf.copy_from_slice(&self.data[at..at + buf.len()]);
        Ok(())
    }
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        assert_eq!(
            buf.len() % SECTOR,
            0,
            "partial sector write reached the disk"
        );
        self.requests += 1;
        if self.fail {
            return Err(IoError::new("injected"));
        }
        let at = lba as usize * SECTOR;
        self.data[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.flushes += 1;
        Ok(())
    }
}

#[test]
fn sector_bytes_reads_and_writes_unaligned_ranges() {
    let mut dev = SectorBytes::new(MemSectors::new(8 * SECTOR), 2);
    let data: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
    dev.write_at(300, &data).unwrap();
    let mut back = vec![0; 1500];
    dev.read_at(300, &mut back).unwrap();
    assert_eq!(back, data);
    // Bytes around the write are untouched.
    let mut before = [0xffu8; 300];
    dev.read_at(0, &mut before).unwrap();
    assert!(before.iter().all(|&b| b == 0));
    assert_eq!(&dev.disk().data[300..1800], &data[..]);
    // Aligned runs are split into chunks of two sectors.
    dev.disk().requests = 0;
    let mut four = vec![0; 4 * SECTOR];
    dev.read_at(0, &mut four).unwrap();
    assert_eq!(dev.disk().requests, 2);
}

#[test]
fn sector_bytes_refuses_access_past_the_end() {
    let mut dev = SectorBytes::new(MemSectors::new(4 * SECTOR), 8);
    let mut buf = [0u8; 2];
    assert!(dev.read_at(4 * SECTOR as u64 - 1, &mut buf).is_err());
    assert!(dev.write_at(u64::MAX - 1, &buf).is_err());
    assert_eq!(dev.disk().requests, 0);
    dev.disk().fail = true;
    assert!(dev.read_at(0, &mut buf).is_err());
}

const MIB: u64 = 1 << 20;

/// Memory whose bytes the test can copy at any moment (what a power cut would leave).
#[derive(Clone, Default)]
struct SharedMem(Rc<RefCell<MemDevice>>);

impl BlockDevice for SharedMem {
    fn size(&mut self) -> Result<u64, IoError> {
        self.0.borrow_mut().size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.0.borrow_mut().read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.0.borrow_mut().write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

fn new_disk(size: u64, id: u8) -> NewDisk {
    NewDisk {
        size,
        block_size: DEFAULT_BLOCK_SIZE,
        unique_id: [id; 16],
        timestamp: 0,
    }
}

/// A 64 MiB volume holding `a.vhd` (dynamic 8 MiB), `base.vhd` (dynamic
/// 8 MiB, first sector 0xb0), and `c1.vhd`, `c2.vhd` differencing on it.
fn volume() -> (SharedVolume<SharedMem>, SharedMem) {
    let options = FormatOptions {
        size: 64 * MIB,
        cluster_size: None,
        label: String::from("TEST"),
        serial: 1,
    };
    let mem = SharedMem(Rc::new(RefCell::new(MemDevice::new(Vec::new()))));
    let volume = Volume::format(mem.clone(), &options).unwrap();
    // The test device shares its bytes through an `Rc` (not `Send`); the
    // volume stays on this thread.
    #[allow(clippy::arc_with_non_send_sync)]
    let volume = Arc::new(SpinLock::new(volume));
    for name in ["/a.vhd", "/base.vhd", "/c1.vhd", "/c2.vhd"] {
        volume.lock().create(name).unwrap();
    }
    let file = |name| VolumeFile::open(&volume, name).unwrap();
    let mut a = Vhd::create_dynamic(file("/a.vhd"), &new_disk(8 * MIB, 1)).unwrap();
    a.flush().unwrap();
    let mut base = Vhd::create_dynamic(file("/base.vhd"), &new_disk(8 * MIB, 2)).unwrap();
    base.write_at(0, &[0xb0; SECTOR]).unwrap();
    base.flush().unwrap();
    for (name, id) in [("/c1.vhd", 3), ("/c2.vhd", 4)] {
        let mut c = Vhd::create_differencing(
            file(name),
            &base,
            "base.vhd",
            &[ParentLocation::relative(".\\base.vhd")],
            &new_disk(8 * MIB, id),
        )
        .unwrap();
        c.flush().unwrap();
    }
    (volume, mem)
}

#[test]
fn recorded_parent_paths_become_volume_paths() {
    assert_eq!(volume_path(".\\base.vhd"), "/base.vhd");
    assert_eq!(volume_path("C:\\vms\\base.vhd"), "/vms/base.vhd");
    assert_eq!(volume_path("base.vhd"), "/base.vhd");
    assert_eq!(volume_path("./x//y.vhd"), "/x/y.vhd");
}

#[test]
fn luns_read_write_flush_and_check_ranges() {
    let (volume, _) = volume();
    let mut luns = Luns::new(&volume);
    assert_eq!(luns.attach(0, "/a.vhd"), Ok(8 * MIB / SECTOR as u64));
    assert_eq!(luns.attach(0, "/a.vhd"), Err(LunError::InUse));
    assert!(matches!(
        luns.attach(1, "/missing.vhd"),
        Err(LunError::Open(_))
    ));
    assert_eq!(luns.attach(64, "/a.vhd"), Err(LunError::NoSuchLun));
    let data: Vec<u8> = (0..4 * SECTOR).map(|i| (i % 251) as u8).collect();
    luns.write(0, 100, &data).unwrap();
    luns.flush(0).unwrap();
    let mut back = vec![0; 4 * SECTOR];
    luns.read(0, 100, &mut back).unwrap();
    assert_eq!(back, data);
    let last = 8 * MIB / SECTOR as u64 - 1;
    assert!(luns.read(0, last, &mut back[..SECTOR]).is_ok());
    assert_eq!(
        luns.read(0, last, &mut back[..2 * SECTOR]),
        Err(LunError::OutOfRange)
    );
    assert_eq!(
        luns.write(0, u64::MAX / 2, &data),
        Err(LunError::OutOfRange)
    );
    assert_eq!(luns.read(5, 0, &mut back), Err(LunError::NoSuchLun));
    assert_eq!(luns.present().collect::<Vec<_>>(), vec![0]);
    // Reopened after a detach, the data is there.
    assert_eq!(luns.detach(0).as_deref(), Ok("/a.vhd"));
    assert_eq!(luns.capacity(0), None);
    luns.attach(7, "/a.vhd").unwrap();
    luns.read(7, 100, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn differencing_children_share_a_parent_and_see_only_their_writes() {
    let (volume, _) = volume();
    let mut luns = Luns::new(&volume);
    luns.attach(0, "/c1.vhd").unwrap();
    luns.attach(1, "/c2.vhd").unwrap();
    let mut sector = [0u8; SECTOR];
    luns.read(1, 0, &mut sector).unwrap();
    assert!(sector.iter().all(|&b| b == 0xb0), "parent data through c2");
    luns.write(0, 0, &[0xc1; SECTOR]).unwrap();
    luns.flush(0).unwrap();
    luns.read(0, 0, &mut sector).unwrap();
    assert!(sector.iter().all(|&b| b == 0xc1));
    luns.read(1, 0, &mut sector).unwrap();
    assert!(
        sector.iter().all(|&b| b == 0xb0),
        "c1's write leaked into c2"
    );
    // The parent itself is unchanged.
    luns.attach(2, "/base.vhd").unwrap();
    luns.read(2, 0, &mut sector).unwrap();
    assert!(sector.iter().all(|&b| b == 0xb0));
}

#[test]
fn flushed_writes_survive_remounting_the_volume() {
    let (volume, mem) = volume();
    let mut luns = Luns::new(&volume);
    luns.attach(0, "/c1.vhd").unwrap();
    luns.write(0, 2048, &[0x5a; 8 * SECTOR]).unwrap();
    luns.flush(0).unwrap();
    // The device's bytes as they are after the flush (nothing closed or
    // unmounted, as after a power cut): mount them afresh.
    let bytes = mem.0.borrow().data.clone();
    let again = mount(MemDevice::new(bytes)).unwrap();
    let mut luns = Luns::new(&again);
    luns.attach(0, "/c1.vhd").unwrap();
    let mut back = vec![0; 8 * SECTOR];
    luns.read(0, 2048, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0x5a));
}

#[test]
fn the_direct_benchmark_reads_its_file_and_times_both_phases() {
    let (volume, _) = volume();
    volume.lock().create("/bench.vhd").unwrap();
    let mut b = Vhd::create_dynamic(
        VolumeFile::open(&volume, "/bench.vhd").unwrap(),
        &new_disk(24 * MIB, 9),
    )
    .unwrap();
    b.flush().unwrap();
    drop(b);
    let mut clock = 0;
    let r = bench_direct(&volume, "bench.vhd", || {
        clock += 10;
        clock
    })
    .unwrap();
    assert_eq!(r.who, ipc::disk::ROOT_DIRECT);
    // Each phase is measured by two looks at the clock.
    assert_eq!((r.sequential_cycles, r.random_cycles), (10, 10));
    // The LUN is detached again: the file can be attached anew.
    let mut luns = Luns::new(&volume);
    assert!(luns.attach(0, "/bench.vhd").is_ok());
    assert!(
        bench_direct(&volume, "missing.vhd", || 0)
            .unwrap_err()
            .starts_with("missing.vhd")
    );
}

thread_local! {
    static PRINTED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn keep(line: core::fmt::Arguments<'_>) {
    PRINTED.with(|p| p.borrow_mut().push(alloc::format!("{line}")));
}

#[test]
fn the_data_volume_is_mounted_and_described_or_refused() {
    let (_, mem) = volume();
    let v = mount_data_volume(mem.clone(), "00:04.0", 11, |_| (7, 3), keep);
    assert!(v.is_some());
    let printed = PRINTED.with(|p| p.borrow().clone());
    assert_eq!(
        printed.last().unwrap(),
        &alloc::format!(
            "{}",
            ipc::markers::DataVolume {
                location: "00:04.0",
                gsi: 11,
                mib: 64,
                label: "TEST",
                files: 4,
                requests: 7,
                interrupts: 3,
            }
        )
    );
    let blank = SharedMem(Rc::new(RefCell::new(MemDevice::new(vec![0; 1 << 20]))));
    assert!(mount_data_volume(blank, "00:05.0", 10, |_| (0, 0), keep).is_none());
    let printed = PRINTED.with(|p| p.borrow().clone());
    assert!(
        printed
            .last()
            .unwrap()
            .starts_with("root partition: data disk at 00:05.0: no exFAT volume: "),
        "{printed:?}"
    );
}
