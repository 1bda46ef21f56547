//! The 512-byte hard disk footer: at the end of every VHD file, and copied
//! to offset 0 of dynamic and differencing files.
//!
//! Invariants: a parsed [`Footer`] had the `conectix` cookie, a matching
//! checksum, format version 1.0 and a supported disk type; [`Footer::to_bytes`]
//! always produces a footer whose checksum is valid.

use crate::bytes::{be_u16, be_u32, be_u64, checksum, put};
use crate::error::{Error, Result};

/// Size of the footer in bytes.
pub const FOOTER_SIZE: usize = 512;
/// The footer's cookie.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// Data offset stored by fixed disks (no dynamic header).
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// Largest virtual size the format addresses (2040 GiB, as Hyper-V and qemu).
pub const MAX_DISK_SIZE: u64 = 0xff00_0000 * 512;
const CHECKSUM_AT: usize = 64;
const VERSION_1_0: u32 = 0x0001_0000;
/// "Wi2k": the host OS code Windows writes.
const HOST_OS_WINDOWS: u32 = 0x5769_326b;

/// Creator applications whose disks QEMU before 10.0 sizes by the footer's
/// current size (its creator table, up to 9.2: `win ` Hyper-V, `qem2`
/// qemu-img with `force_size`, `d2v ` Disk2vhd, `CTXS` XenConverter, `tap\0`
/// XenServer); it sizes every other creator by CHS geometry. Hyper-V always
/// takes the current size; QEMU 10.0 and later do for every creator but
/// `vpc ` and `qemu`; Virtual PC always goes by geometry.
pub const CURRENT_SIZE_CREATORS: [[u8; 4]; 5] = [*b"win ", *b"qem2", *b"d2v ", *b"CTXS", *b"tap\0"];

/// The creator application capvisor records: Hyper-V's. A disk's size need
/// not be a CHS product (Hyper-V and capvisor keep the size asked for), and
/// with this creator every QEMU that has a creator table, not only 10.0 and
/// later, takes the current size as Hyper-V and capvisor do. With `capv`
/// (capvisor before issue 14) QEMU before 10.0 read such a disk short by the
/// sectors its geometry leaves out.
pub const CREATOR_APP: [u8; 4] = *b"win ";
/// The creator version capvisor records (1.0).
pub const CREATOR_VERSION: u32 = 0x0001_0000;

/// What kind of VHD a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Data stored flat before the footer.
    Fixed,
    /// Blocks allocated on first write.
    Dynamic,
    /// Blocks hold only what differs from a parent disk.
    Differencing,
}

impl DiskType {
    fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }

    fn from_code(code: u32) -> Result<Self> {
        match code {
            2 => Ok(DiskType::Fixed),
            3 => Ok(DiskType::Dynamic),
            4 => Ok(DiskType::Differencing),
            other => Err(Error::UnsupportedDiskType(other)),
        }
    }

    /// A lowercase name: `fixed`, `dynamic`, `differencing`.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// Cylinder/head/sector geometry recorded for BIOS-era guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The largest geometry the footer can hold (65535/16/255).
    pub const MAX: Geometry = Geometry {
        cylinders: 65535,
        heads: 16,
        sectors_per_track: 255,
    };

    /// The geometry for `total_sectors`, by the algorithm in the VHD specification.
    pub fn for_sectors(total_sectors: u64) -> Geometry {
        let total = total_sectors.min(65535 * 16 * 255);
        let (spt, heads, cyl_times_heads);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cyl_times_heads = total / spt;
        } else {
            let mut s = 17;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            spt = s;
            heads = h;
            cyl_times_heads = cth;
        }
        Geometry {
            cylinders: (cyl_times_heads / heads).min(65535) as u16,
            heads: heads as u8,
            sectors_per_track: spt as u8,
        }
    }

    /// Sectors the geometry addresses.
    pub fn sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// Whether the geometry addresses the most sectors a footer can
    /// describe (65535 x 16 x 255, or another triple with that product, as
    /// qemu compares): then qemu and Hyper-V size the disk by its current
    /// size, whatever the creator.
    pub fn is_max(self) -> bool {
        self.sectors() == Geometry::MAX.sectors()
    }
}

/// The decoded hard disk footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Feature flags (bit 1, "reserved", is always set).
    pub features: u32,
    /// Offset of the dynamic header, or [`NO_DATA_OFFSET`] for fixed disks.
    pub data_offset: u64,
    /// Creation time, seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: u32,
    /// Four-character code of the creating application (`qemu`, `win `,
    /// `vpc `; capvisor writes [`CREATOR_APP`], and wrote `capv` before).
    pub creator_app: [u8; 4],
    /// Version of the creating application.
    pub creator_version: u32,
    /// Host OS code of the creator.
    pub creator_host_os: u32,
    /// Size at creation, bytes.
    pub original_size: u64,
    /// Current virtual size, bytes.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// Identifies this disk; children record it as their parent's id.
    pub unique_id: [u8; 16],
    /// Set while a virtual machine's saved state depends on the disk.
    pub saved_state: bool,
}

impl Footer {
    /// A fresh footer made by capvisor: current and original size `size`,
    /// geometry by the specification's algorithm (rounded down when `size`
    /// is not a CHS product, as Hyper-V does), creator [`CREATOR_APP`].
    pub fn new(disk_type: DiskType, size: u64, unique_id: [u8; 16], timestamp: u32) -> Footer {
        Footer {
            features: 2,
            data_offset: if disk_type == DiskType::Fixed {
                NO_DATA_OFFSET
            } else {
                512
            },
            timestamp,
            creator_app: CREATOR_APP,
            creator_version: CREATOR_VERSION,
            creator_host_os: HOST_OS_WINDOWS,
            original_size: size,
            current_size: size,
            geometry: Geometry::for_sectors(size / 512),
            disk_type,
            unique_id,
            saved_state: false,
        }
    }

    /// Decode and validate a footer.
    pub fn parse(buf: &[u8]) -> Result<Footer> {
        if buf.len() < FOOTER_SIZE - 1 || buf.get(..8) != Some(&FOOTER_COOKIE[..]) {
            return Err(Error::NoFooter);
        }
        let stored = be_u32(buf, CHECKSUM_AT);
        // Footers from before Virtual PC 2004 are 511 bytes; the checksum covers what is there.
        let computed = checksum(&buf[..buf.len().min(FOOTER_SIZE)], CHECKSUM_AT);
        if stored != computed {
            return Err(Error::FooterChecksum { stored, computed });
        }
        let version = be_u32(buf, 12);
        if version != VERSION_1_0 {
            return Err(Error::UnsupportedVersion(version));
        }
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&buf[28..32]);
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&buf[68..84]);
        Ok(Footer {
            features: be_u32(buf, 8),
            data_offset: be_u64(buf, 16),
            timestamp: be_u32(buf, 24),
            creator_app,
            creator_version: be_u32(buf, 32),
            creator_host_os: be_u32(buf, 36),
            original_size: be_u64(buf, 40),
            current_size: be_u64(buf, 48),
            geometry: Geometry {
                cylinders: be_u16(buf, 56),
                heads: buf[58],
                sectors_per_track: buf[59],
            },
            disk_type: DiskType::from_code(be_u32(buf, 60))?,
            unique_id,
            saved_state: buf[84] != 0,
        })
    }

    /// Encode with a correct checksum.
    pub fn to_bytes(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        put(&mut b, 0, FOOTER_COOKIE);
        put(&mut b, 8, &self.features.to_be_bytes());
        put(&mut b, 12, &VERSION_1_0.to_be_bytes());
        put(&mut b, 16, &self.data_offset.to_be_bytes());
        put(&mut b, 24, &self.timestamp.to_be_bytes());
        put(&mut b, 28, &self.creator_app);
        put(&mut b, 32, &self.creator_version.to_be_bytes());
        put(&mut b, 36, &self.creator_host_os.to_be_bytes());
        put(&mut b, 40, &self.original_size.to_be_bytes());
        put(&mut b, 48, &self.current_size.to_be_bytes());
        put(&mut b, 56, &self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors_per_track;
        put(&mut b, 60, &self.disk_type.code().to_be_bytes());
        put(&mut b, 68, &self.unique_id);
        b[84] = u8::from(self.saved_state);
        let sum = checksum(&b, CHECKSUM_AT);
        put(&mut b, CHECKSUM_AT, &sum.to_be_bytes());
        b
    }

    /// The virtual size readers should use, following qemu's rule so both
    /// agree: Virtual PC and old qemu images (`vpc `, `qemu`) are sized by
    /// their CHS geometry unless it is the maximum; all others by `current_size`.
    pub fn virtual_size(&self) -> u64 {
        if self.sized_by_chs() {
            self.chs_size()
        } else {
            self.current_size
        }
    }

    /// Bytes the CHS geometry addresses.
    pub fn chs_size(&self) -> u64 {
        self.geometry.sectors() * 512
    }

    /// Whether capvisor (and every qemu) sizes the disk by its geometry:
    /// creator `vpc ` or `qemu` and a geometry short of the maximum.
    pub fn sized_by_chs(&self) -> bool {
        matches!(&self.creator_app, b"vpc " | b"qemu") && !self.geometry.is_max()
    }

    /// The size QEMU before 10.0 opens the disk with (without size options):
    /// the current size for [`CURRENT_SIZE_CREATORS`] or a maximum
    /// geometry, the CHS size otherwise.
    pub fn legacy_qemu_size(&self) -> u64 {
        if self.geometry.is_max() || CURRENT_SIZE_CREATORS.contains(&self.creator_app) {
            self.current_size
        } else {
            self.chs_size()
        }
    }

    /// Whether capvisor, Hyper-V (current size) and qemu before and since
    /// 10.0 (see [`Footer::legacy_qemu_size`]) see the same virtual size. Virtual
    /// PC (CHS always) also agrees when the size is a CHS product.
    pub fn readers_agree(&self) -> bool {
        let size = self.virtual_size();
        size == self.current_size && size == self.legacy_qemu_size()
    }
}
