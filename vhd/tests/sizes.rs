//! Virtual sizes every reader agrees on (issue 14): the CHS geometry follows
//! the specification's algorithm, new disks keep the size asked for and
//! record a creator that Hyper-V, QEMU before 10.0 and QEMU since 10.0 all
//! size by current size, and `check` reports disks readers size differently.

mod common;

use common::{MemResolver, new_disk};
use vhd::{
    CREATOR_APP, CURRENT_SIZE_CREATORS, ChainAccess, Footer, Geometry, MemDevice, ParentLocation,
    Severity, Vhd,
};

/// Sectors of the largest CHS geometry (65535 x 16 x 255).
const CHS_MAX: u64 = 65535 * 16 * 255;

/// The specification's pseudo-code ("Virtual Hard Disk Image Format
/// Specification", appendix "CHS calculation"), transcribed line by line as
/// an independent model of [`Geometry::for_sectors`].
#[allow(clippy::manual_div_ceil)] // the specification's arithmetic, as written
fn spec_geometry(total_sectors: u64) -> (u64, u64, u64) {
    let mut total = total_sectors;
    if total > 65535 * 16 * 255 {
        total = 65535 * 16 * 255;
    }
    let (sectors_per_track, heads, cylinder_times_heads);
    if total >= 65535 * 16 * 63 {
        sectors_per_track = 255;
        heads = 16;
        cylinder_times_heads = total / sectors_per_track;
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut h = (cth + 1023) / 1024;
        if h < 4 {
            h = 4;
        }
        if cth >= (h * 1024) || h > 16 {
            spt = 31;
            h = 16;
            cth = total / spt;
        }
        if cth >= (h * 1024) {
            spt = 63;
            h = 16;
            cth = total / spt;
        }
        sectors_per_track = spt;
        heads = h;
        cylinder_times_heads = cth;
    }
    (cylinder_times_heads / heads, heads, sectors_per_track)
}

fn triple(g: Geometry) -> (u64, u64, u64) {
    (
        u64::from(g.cylinders),
        u64::from(g.heads),
        u64::from(g.sectors_per_track),
    )
}

#[test]
fn geometry_follows_the_specification() {
    // Worked by hand from the specification's steps.
    let known = [
        // 40 MiB: 17 sectors, 4818 cylinders x heads, 5 heads.
        (81_920, (963, 5, 17)),
        // 1 GiB: too many heads for 17 and for 31 sectors per track.
        (2_097_152, (2080, 16, 63)),
        // The first size with 255 sectors per track.
        (65535 * 16 * 63, (16191, 16, 255)),
        (CHS_MAX, (65535, 16, 255)),
        // 130 GiB and the format's limit: the maximum geometry.
        (130 << 21, (65535, 16, 255)),
        (0xff00_0000, (65535, 16, 255)),
    ];
    for (sectors, expected) in known {
        assert_eq!(
            triple(Geometry::for_sectors(sectors)),
            expected,
            "{sectors}"
        );
    }
    // Every size up to 256 MiB, the edges where the algorithm switches, and
    // a sweep over everything the footer can address.
    let mut sizes: Vec<u64> = (0..=(256 << 11)).collect();
    for edge in [
        4 * 1024 * 17,
        16 * 1024 * 17,
        16 * 1024 * 31,
        16 * 1024 * 63,
        65535 * 16 * 63,
        CHS_MAX,
    ] {
        sizes.extend(edge - 40..edge + 40);
    }
    sizes.extend((0..0xff00_0000u64).step_by(1_000_003));
    for sectors in sizes {
        let g = Geometry::for_sectors(sectors);
        assert_eq!(triple(g), spec_geometry(sectors), "{sectors} sectors");
        assert!(g.sectors() <= sectors, "{sectors}: geometry rounds down");
    }
    assert!(Geometry::MAX.is_max());
    let same_product = Geometry {
        cylinders: 65535,
        heads: 255,
        sectors_per_track: 16,
    };
    assert!(same_product.is_max(), "qemu compares the product");
    assert!(!Geometry::for_sectors(CHS_MAX - 4080).is_max());
}

/// Sizes on both sides of CHS representability, and past the CHS maximum.
fn sizes() -> Vec<(&'static str, u64)> {
    vec![
        ("CHS product (964x5x17)", 964 * 5 * 17 * 512),
        ("40 MiB (issue 14)", 40 << 20),
        ("odd sector count", 12_345 * 512),
        ("1 GiB + 7 sectors", (1 << 30) + 7 * 512),
        ("130 GiB", 130 << 30),
    ]
}

/// Rewrite the footer (and, for sparse disks, its copy at 0) with `edit`.
fn patch_footer(dev: &mut MemDevice, edit: impl Fn(&mut Footer)) {
    let end = dev.data.len() - 512;
    let mut footer = Footer::parse(&dev.data[end..]).expect("footer");
    edit(&mut footer);
    let bytes = footer.to_bytes();
    dev.data[end..].copy_from_slice(&bytes);
    if Footer::parse(&dev.data[..512]).is_ok() {
        dev.data[..512].copy_from_slice(&bytes);
    }
}

#[test]
fn new_disks_keep_their_size_and_every_reader_agrees() {
    assert!(CURRENT_SIZE_CREATORS.contains(&CREATOR_APP));
    assert!(!matches!(&CREATOR_APP, b"vpc " | b"qemu"));
    for (name, size) in sizes() {
        let chs_aligned = Geometry::for_sectors(size / 512).sectors() * 512 == size;
        assert_eq!(
            chs_aligned,
            name.starts_with("CHS product"),
            "{name}: premise"
        );
        let mut disks = vec![(
            "dynamic",
            Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 2 << 20, 1)).expect(name),
        )];
        if size <= 1 << 30 {
            disks.push((
                "fixed",
                Vhd::create_fixed(MemDevice::default(), &new_disk(size, 2 << 20, 2)).expect(name),
            ));
        }
        for (kind, mut disk) in disks {
            let f = disk.footer().clone();
            assert_eq!(disk.size(), size, "{name} {kind}: capvisor's size");
            assert_eq!((f.current_size, f.original_size), (size, size), "{name}");
            assert_eq!(f.geometry, Geometry::for_sectors(size / 512), "{name}");
            assert_eq!(f.creator_app, CREATOR_APP, "{name}");
            assert_eq!(f.legacy_qemu_size(), size, "{name} {kind}: QEMU < 10.0");
            assert!(f.readers_agree(), "{name} {kind}");
            assert_eq!(f.geometry.is_max(), size >= CHS_MAX * 512, "{name}");
            assert!(disk.check().expect("check").is_empty(), "{name} {kind}");
            // Reopened, the same.
            let dev = disk.into_device().expect("close");
            assert_eq!(Vhd::open(dev).expect("reopen").size(), size, "{name}");
        }
    }
}

#[test]
fn check_reports_disks_readers_size_differently() {
    // What capctl made before issue 14: creator `capv`, 40 MiB, which QEMU
    // before 10.0 read as 41,909,760 bytes.
    let size = 40 << 20;
    let disk = Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 2 << 20, 1)).expect("a");
    let mut dev = disk.into_device().expect("close");
    patch_footer(&mut dev, |f| f.creator_app = *b"capv");
    let mut old = Vhd::open(dev).expect("open");
    assert_eq!(old.size(), size, "capvisor keeps the current size");
    assert_eq!(old.footer().legacy_qemu_size(), 41_909_760);
    assert!(!old.footer().readers_agree());
    let findings = old.check().expect("check");
    assert!(
        findings.len() == 1
            && findings[0].severity == Severity::Warning
            && findings[0]
                .message
                .contains("41909760 bytes (CHS geometry) in QEMU before 10.0")
            && findings[0].message.contains("'capv'"),
        "{findings:?}"
    );

    // The same creator is harmless where the geometry says the same (a CHS
    // product) or is the maximum (past 127 GiB): no finding.
    for size in [964 * 5 * 17 * 512, 130 << 30] {
        let disk =
            Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 2 << 20, 1)).expect("b");
        let mut dev = disk.into_device().expect("close");
        patch_footer(&mut dev, |f| f.creator_app = *b"capv");
        let mut disk = Vhd::open(dev).expect("open");
        assert!(disk.footer().readers_agree(), "{size}");
        assert!(disk.check().expect("check").is_empty(), "{size}");
    }

    // A Virtual PC disk whose current size is past its geometry: capvisor
    // and QEMU go by geometry, Hyper-V by current size.
    let disk = Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 2 << 20, 1)).expect("c");
    let mut dev = disk.into_device().expect("close");
    patch_footer(&mut dev, |f| f.creator_app = *b"vpc ");
    let mut vpc = Vhd::open(dev).expect("open");
    assert_eq!(vpc.size(), 41_909_760);
    let findings = vpc.check().expect("check");
    assert!(
        findings.len() == 1 && findings[0].message.contains("in Hyper-V"),
        "{findings:?}"
    );
}

#[test]
fn differencing_child_has_the_size_its_parent_is_read_with() {
    let size = 40 << 20;
    for creator in [CREATOR_APP, *b"vpc "] {
        let base =
            Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 2 << 20, 1)).expect("base");
        let mut base_dev = base.into_device().expect("close");
        patch_footer(&mut base_dev, |f| f.creator_app = creator);
        let base = Vhd::open_read_only(base_dev.clone()).expect("base");
        let child = Vhd::create_differencing(
            MemDevice::default(),
            &base,
            "base.vhd",
            &[ParentLocation::relative(".\\base.vhd")],
            &new_disk(base.size(), 2 << 20, 2),
        )
        .expect("child");
        let f = child.footer().clone();
        assert_eq!(f.current_size, base.size());
        assert_eq!(f.geometry, base.footer().geometry);
        assert!(f.readers_agree());
        let mut resolver = MemResolver {
            disks: vec![("base.vhd".into(), base_dev)],
        };
        let dev = child.into_device().expect("close");
        let mut chain =
            Vhd::open_chain(dev, ChainAccess::default(), &mut resolver).expect("chain opens");
        assert_eq!(chain.size(), base.size());
        assert!(chain.check().expect("check").is_empty());
    }
}
