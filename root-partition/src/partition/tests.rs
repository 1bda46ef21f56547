//! The memory plan and the fake kernel the services are tested over.

use ipc::hypercall::{Call, Name, Status};

use super::*;
use crate::hv::Kernel;
use crate::hv::fake::{FakeKernel, RAM_BASE, RAM_BYTES};

#[test]
fn the_root_finds_itself_and_its_pool_on_the_boot_page() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    assert_eq!(root.ram_range.start, RAM_BASE);
    assert_eq!(root.ram_range.end, RAM_BASE + RAM_BYTES);
    let (heap, _) = heap_range(&k.boot_info()).unwrap();
    assert_eq!(root.scratch, heap.start - 4096);
    assert_eq!(root.pool.start, heap.end);
    assert!(root.pool.start.is_multiple_of(2 << 20));
    // The capabilities it found are the kernel's: a call on them works.
    assert!(
        k.call(&Call::PartitionStatus {
            partition: root.authority
        })
        .is_ok()
    );
}

#[test]
fn the_pool_is_handed_out_top_down_without_overlap() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let a = place(&root, &[], 8 << 20).unwrap();
    assert_eq!(a + (8 << 20), root.pool.end & !((2 << 20) - 1));
    let spec = crate::config::ChildSpec::new(Name::new("alpha"));
    let taken = Child {
        spec,
        partition: root.authority,
        memory: root.ram,
        vcpus: [None; 4],
        base: a,
        pages: (8 << 20) / 4096,
        ended: false,
        from_root: None,
    };
    let b = place(&root, &[Some(taken)], 8 << 20).unwrap();
    assert_eq!(b + (8 << 20), a);
    assert_eq!(place(&root, &[], RAM_BYTES), None, "more than the pool");
}

#[test]
fn the_fake_kernel_is_the_kernel_core() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let first_page = (root.pool.end - (4 << 20) - root.ram_range.start) / 4096;
    let r = k
        .call(&Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page,
            pages: 1024,
            name: Name::new("alpha"),
            ceiling: 0,
        })
        .unwrap();
    assert!(handle(r[0]).is_ok());
    // The same frames cannot be donated twice: the kernel's own check.
    assert_eq!(
        k.call(&Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page,
            pages: 1,
            name: Name::new("beta"),
            ceiling: 0,
        }),
        Err(Status::NotOwned)
    );
    // A call that names a buffer goes through the scratch page only.
    let buffer = root.scratch;
    let read = Call::MemoryRead {
        partition: handle(r[0]).unwrap(),
        gpa: 0,
        buffer,
    };
    assert_eq!(k.call(&read), Err(Status::InvalidArgument));
}
