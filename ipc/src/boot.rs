//! The boot protocol between the microkernel and the root partition.
//!
//! The microkernel starts the root partition's first vCPU in 64-bit mode at
//! its ELF entry with `rdi` = the guest address of a [`BootInfo`] page (see
//! `docs/boot.md`). Everything here is `#[repr(C)]` with fixed-size arrays so
//! the page has one layout on both sides.
//!
//! # Invariants
//! `BootInfo` fits in one 4 KiB page; counts never exceed their array's length
//! (the accessors clamp them regardless).

/// `BootInfo::magic`: "CAPVBOOT" in little-endian.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"CAPVBOOT");
/// `BootInfo::version` this crate describes.
pub const BOOT_INFO_VERSION: u32 = 1;
/// Physical (and root guest-physical) address the microkernel image is linked at.
pub const HYPERVISOR_IMAGE_BASE: u64 = 0x10_0000;
/// Virtual address the root partition and child runtime images are linked at
/// (the top 2 GiB, as for a kernel code model).
pub const PARTITION_IMAGE_BASE: u64 = 0xffff_ffff_8000_0000;
/// Kernel command-line word that makes the root partition deliberately read
/// the first page of the hypervisor image (an isolation self-test).
pub const SELFTEST_READ_HYPERVISOR_FRAME: &str = "selftest=read-hypervisor-frame";
/// Most RAM ranges a `BootInfo` lists.
pub const MAX_MEMORY_RANGES: usize = 64;
/// Most hypervisor-reserved ranges a `BootInfo` lists.
pub const MAX_RESERVED_RANGES: usize = 16;
/// Most initial capabilities a `BootInfo` lists.
pub const MAX_BOOT_CAPS: usize = 48;

/// Object types in [`BootCap::kind`].
pub mod cap_kind {
    /// The root's own partition (CREATE, CONTROL, INSPECT, GRANT).
    pub const PARTITION: u32 = 1;
    /// A RAM range: `a` = base, `b` = pages (READ, WRITE, EXECUTE, MAP, DONATE, GRANT).
    pub const MEMORY: u32 = 2;
    /// A device interrupt: `a` = GSI (BIND, GRANT).
    pub const INTERRUPT: u32 = 3;
    /// An I/O port range: `a` = first port, `b` = count (USE, GRANT).
    pub const IO_PORTS: u32 = 4;
    /// The root's own first vCPU: `a` = its index (CONTROL, INSPECT).
    pub const VCPU: u32 = 5;
    /// A port (never in the boot page; `CapInspect` reports it).
    pub const PORT: u32 = 6;
    /// A timer (never in the boot page; `CapInspect` reports it).
    pub const TIMER: u32 = 7;
}

/// One initial capability of the root partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootCap {
    /// The slot handle (`SlotHandle::raw`).
    pub slot: u64,
    /// A [`cap_kind`] value.
    pub kind: u32,
    /// First descriptive word.
    pub a: u64,
    /// Second descriptive word.
    pub b: u64,
}
/// Longest kernel command line passed on (longer ones are cut).
pub const MAX_CMDLINE: usize = 512;

/// A half-open range of physical addresses `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PhysRange {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

impl PhysRange {
    /// Size in bytes (0 for an inverted range).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The boot-information page handed to the root partition.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// Logical processors the microkernel brought up.
    pub cpu_count: u32,
    /// Valid entries in `memory`.
    pub memory_count: u32,
    /// Valid entries in `reserved`.
    pub reserved_count: u32,
    /// Valid bytes in `cmdline`.
    pub cmdline_len: u32,
    /// Virtualization backend: 1 = AMD SVM + NPT, 2 = Intel VMX + EPT.
    pub backend: u32,
    /// ACPI revision from the RSDP (0 = ACPI 1.0 with an RSDT, 2+ = XSDT).
    pub acpi_revision: u32,
    /// Time-stamp counter ticks per millisecond, measured against the PIT
    /// at boot (0: not measured).
    pub tsc_khz: u32,
    /// Physical address of the ACPI RSDT (revision 0) or XSDT (revision 2+), 0 if none.
    pub acpi_root_table: u64,
    /// Where the microkernel image lies (never mapped into any partition).
    pub hypervisor_image: PhysRange,
    /// Where the child-runtime ELF module lies (readable by the root), or empty.
    pub child_image: PhysRange,
    /// Guest-physical range of the root's initial page tables, boot page and stack.
    pub boot_area: PhysRange,
    /// Where the boot configuration module lies (text), or empty.
    pub config: PhysRange,
    /// The kernel command line (UTF-8, not NUL-terminated).
    pub cmdline: [u8; MAX_CMDLINE],
    /// RAM the root partition owns (guest-physical = host-physical).
    pub memory: [PhysRange; MAX_MEMORY_RANGES],
    /// RAM the microkernel keeps for itself; the root's SLAT never maps it.
    pub reserved: [PhysRange; MAX_RESERVED_RANGES],
    /// Valid entries in `caps`.
    pub cap_count: u32,
    /// The root's initial capabilities.
    pub caps: [BootCap; MAX_BOOT_CAPS],
    /// Guest-physical space the root's page tables map but its SLAT does
    /// not: where it may map other partitions' memory (`MemoryMap`), or
    /// empty.
    pub shared_window: PhysRange,
}

const _: () = assert!(core::mem::size_of::<BootInfo>() <= 4096);

impl BootInfo {
    /// An empty boot page with the magic and version filled in.
    pub const fn new() -> Self {
        BootInfo {
            magic: BOOT_INFO_MAGIC,
            version: BOOT_INFO_VERSION,
            cpu_count: 0,
            memory_count: 0,
            reserved_count: 0,
            cmdline_len: 0,
            backend: 0,
            acpi_revision: 0,
            tsc_khz: 0,
            acpi_root_table: 0,
            hypervisor_image: PhysRange { start: 0, end: 0 },
            child_image: PhysRange { start: 0, end: 0 },
            boot_area: PhysRange { start: 0, end: 0 },
            config: PhysRange { start: 0, end: 0 },
            cmdline: [0; MAX_CMDLINE],
            memory: [PhysRange { start: 0, end: 0 }; MAX_MEMORY_RANGES],
            reserved: [PhysRange { start: 0, end: 0 }; MAX_RESERVED_RANGES],
            cap_count: 0,
            caps: [BootCap {
                slot: 0,
                kind: 0,
                a: 0,
                b: 0,
            }; MAX_BOOT_CAPS],
            shared_window: PhysRange { start: 0, end: 0 },
        }
    }

    /// Whether magic and version match this crate.
    pub fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC && self.version == BOOT_INFO_VERSION
    }

    /// The RAM ranges the root owns.
    pub fn memory(&self) -> &[PhysRange] {
        &self.memory[..(self.memory_count as usize).min(MAX_MEMORY_RANGES)]
    }

    /// The ranges the hypervisor keeps.
    pub fn reserved(&self) -> &[PhysRange] {
        &self.reserved[..(self.reserved_count as usize).min(MAX_RESERVED_RANGES)]
    }

    /// The command line, or "" if it is not UTF-8.
    pub fn cmdline(&self) -> &str {
        let len = (self.cmdline_len as usize).min(MAX_CMDLINE);
        core::str::from_utf8(&self.cmdline[..len]).unwrap_or("")
    }

    /// Whether the command line holds `word` as a whole whitespace-separated word.
    pub fn has_flag(&self, word: &str) -> bool {
        self.cmdline().split_whitespace().any(|w| w == word)
    }

    /// Stores `line` as the command line, cut at [`MAX_CMDLINE`] bytes on a char boundary.
    pub fn set_cmdline(&mut self, line: &str) {
        let mut len = line.len().min(MAX_CMDLINE);
        while !line.is_char_boundary(len) {
            len -= 1;
        }
        self.cmdline[..len].copy_from_slice(&line.as_bytes()[..len]);
        self.cmdline_len = len as u32;
    }

    /// The initial capabilities.
    pub fn caps(&self) -> &[BootCap] {
        &self.caps[..(self.cap_count as usize).min(MAX_BOOT_CAPS)]
    }

    /// Appends an initial capability; false when the table is full.
    pub fn push_cap(&mut self, cap: BootCap) -> bool {
        match self.caps.get_mut(self.cap_count as usize) {
            Some(slot) => {
                *slot = cap;
                self.cap_count += 1;
                true
            }
            None => false,
        }
    }

    /// Appends a RAM range; false when the table is full.
    pub fn push_memory(&mut self, range: PhysRange) -> bool {
        push(&mut self.memory, &mut self.memory_count, range)
    }

    /// Appends a reserved range; false when the table is full.
    pub fn push_reserved(&mut self, range: PhysRange) -> bool {
        push(&mut self.reserved, &mut self.reserved_count, range)
    }
}

/// Bytes in a boot-information page.
pub const BOOT_PAGE_BYTES: usize = 4096;

/// Why a boot page was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The magic number is wrong.
    BadMagic,
    /// The version is not [`BOOT_INFO_VERSION`].
    BadVersion(u32),
}

struct Writer<'a> {
    page: &'a mut [u8; BOOT_PAGE_BYTES],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.page[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn range(&mut self, r: PhysRange) {
        self.u64(r.start);
        self.u64(r.end);
    }
}

struct Reader<'a> {
    page: &'a [u8; BOOT_PAGE_BYTES],
    at: usize,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.page[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn range(&mut self) -> PhysRange {
        PhysRange {
            start: self.u64(),
            end: self.u64(),
        }
    }
}

impl BootInfo {
    /// Encodes the page: fields in declaration order, little-endian, no
    /// padding (the layout `docs/boot.md` documents), zeros after the end.
    pub fn to_page(&self) -> [u8; BOOT_PAGE_BYTES] {
        let mut page = [0; BOOT_PAGE_BYTES];
        let mut w = Writer {
            page: &mut page,
            at: 0,
        };
        w.u64(self.magic);
        for v in [
            self.version,
            self.cpu_count,
            self.memory_count,
            self.reserved_count,
        ] {
            w.u32(v);
        }
        for v in [
            self.cmdline_len,
            self.backend,
            self.acpi_revision,
            self.tsc_khz,
        ] {
            w.u32(v);
        }
        w.u64(self.acpi_root_table);
        for r in [
            self.hypervisor_image,
            self.child_image,
            self.boot_area,
            self.config,
        ] {
            w.range(r);
        }
        w.bytes(&self.cmdline);
        for r in self.memory.iter().chain(self.reserved.iter()) {
            w.range(*r);
        }
        w.u32(self.cap_count);
        w.u32(0);
        for c in &self.caps {
            w.u64(c.slot);
            w.u32(c.kind);
            w.u32(0);
            w.u64(c.a);
            w.u64(c.b);
        }
        w.range(self.shared_window);
        page
    }

    /// Decodes a page written by [`BootInfo::to_page`]. Counts larger than
    /// the tables are kept as they are; the accessors clamp them.
    pub fn from_page(page: &[u8; BOOT_PAGE_BYTES]) -> Result<Self, BootInfoError> {
        let mut r = Reader { page, at: 0 };
        let mut info = BootInfo::new();
        info.magic = r.u64();
        if info.magic != BOOT_INFO_MAGIC {
            return Err(BootInfoError::BadMagic);
        }
        info.version = r.u32();
        if info.version != BOOT_INFO_VERSION {
            return Err(BootInfoError::BadVersion(info.version));
        }
        info.cpu_count = r.u32();
        info.memory_count = r.u32();
        info.reserved_count = r.u32();
        info.cmdline_len = r.u32();
        info.backend = r.u32();
        info.acpi_revision = r.u32();
        info.tsc_khz = r.u32();
        info.acpi_root_table = r.u64();
        info.hypervisor_image = r.range();
        info.child_image = r.range();
        info.boot_area = r.range();
        info.config = r.range();
        info.cmdline = r.bytes();
        for slot in info.memory.iter_mut() {
            *slot = r.range();
        }
        for slot in info.reserved.iter_mut() {
            *slot = r.range();
        }
        info.cap_count = r.u32();
        r.u32();
        for c in info.caps.iter_mut() {
            c.slot = r.u64();
            c.kind = r.u32();
            r.u32();
            c.a = r.u64();
            c.b = r.u64();
        }
        info.shared_window = r.range();
        Ok(info)
    }
}

impl Default for BootInfo {
    fn default() -> Self {
        Self::new()
    }
}

fn push(table: &mut [PhysRange], count: &mut u32, range: PhysRange) -> bool {
    match table.get_mut(*count as usize) {
        Some(slot) => {
            *slot = range;
            *count += 1;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;

    #[test]
    fn the_boot_document_states_the_table_sizes_the_code_has() {
        let doc = include_str!("../../docs/boot.md");
        for (field, table, size) in [
            ("memory_count", "memory", MAX_MEMORY_RANGES),
            ("reserved_count", "reserved", MAX_RESERVED_RANGES),
        ] {
            let row = std::format!("| {field} | valid entries in `{table}` (≤ {size}) |");
            assert!(doc.contains(&row), "docs/boot.md lacks {row:?}");
            let array = std::format!("| {table}[{size}] |");
            assert!(doc.contains(&array), "docs/boot.md lacks {array:?}");
        }
    }

    #[test]
    fn cmdline_flags_and_truncation() {
        let mut info = BootInfo::new();
        info.set_cmdline("quiet selftest=read-hypervisor-frame");
        assert!(info.has_flag(SELFTEST_READ_HYPERVISOR_FRAME));
        assert!(!info.has_flag("selftest"));
        let long = "é".repeat(400);
        info.set_cmdline(&long);
        assert!(info.cmdline_len as usize <= MAX_CMDLINE);
        assert_eq!(info.cmdline().len(), info.cmdline_len as usize);
    }

    #[test]
    fn page_round_trips_and_rejects_garbage() {
        let mut info = BootInfo::new();
        info.cpu_count = 4;
        info.acpi_root_table = 0x7fe_1234;
        info.set_cmdline("selftest=read-hypervisor-frame");
        assert!(info.push_memory(PhysRange {
            start: 0x20_0000,
            end: 0x1000_0000
        }));
        assert!(info.push_reserved(PhysRange {
            start: 0x10_0000,
            end: 0x20_0000
        }));
        info.reserved[MAX_RESERVED_RANGES - 1] = PhysRange { start: 7, end: 9 };
        assert!(info.push_cap(BootCap {
            slot: 0x1_0002,
            kind: cap_kind::MEMORY,
            a: 0x20_0000,
            b: 512
        }));
        info.caps[MAX_BOOT_CAPS - 1].b = 42;
        let page = info.to_page();
        let back = BootInfo::from_page(&page).unwrap();
        assert_eq!(back.to_page(), page);
        assert_eq!(back.cmdline(), "selftest=read-hypervisor-frame");
        assert_eq!(back.memory(), info.memory());
        assert_eq!(
            back.reserved[MAX_RESERVED_RANGES - 1],
            PhysRange { start: 7, end: 9 }
        );
        let mut bad = page;
        bad[0] ^= 1;
        assert_eq!(
            BootInfo::from_page(&bad).unwrap_err(),
            BootInfoError::BadMagic
        );
        let mut bad = page;
        bad[8] = 9;
        assert_eq!(
            BootInfo::from_page(&bad).unwrap_err(),
            BootInfoError::BadVersion(9)
        );
    }

    #[test]
    fn tables_refuse_overflow_and_clamp_counts() {
        let mut info = BootInfo::new();
        for i in 0..MAX_RESERVED_RANGES as u64 {
            assert!(info.push_reserved(PhysRange {
                start: i,
                end: i + 1
            }));
        }
        assert!(!info.push_reserved(PhysRange { start: 0, end: 1 }));
        info.memory_count = u32::MAX;
        assert_eq!(info.memory().len(), MAX_MEMORY_RANGES);
        assert!(info.is_valid());
    }
}
