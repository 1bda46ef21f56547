//! A minimal multiboot2 kernel, written byte by byte, that proves the chain
//! (ISO, GRUB under BIOS and UEFI, QEMU command line, serial capture, exit
//! codes, harness) works without the real microkernel.
//!
//! The kernel is a 32-bit ELF loaded at 1 MiB: a multiboot2 header, then code
//! that writes a message to COM1 and an exit code to `isa-debug-exit`.

use std::time::Duration;

use image::kernel::Binaries;
use image::qemu::{Firmware, QemuOptions};
use ipc::exit::{DEBUG_EXIT_PORT, ExitCode};

use crate::cases::Case;
use crate::harness::{Expectation, ExpectedExit, Limits};
use crate::runner;

const LOAD_ADDRESS: u32 = 0x10_0000;
const ELF_HEADER_SIZE: u32 = 52;
const PROGRAM_HEADER_SIZE: u32 = 32;
/// Multiboot2 header offset: after the ELF headers, 8-byte aligned.
const MULTIBOOT_OFFSET: u32 = 88;
const MULTIBOOT_MAGIC: u32 = 0xE852_50D6;
const MULTIBOOT_LENGTH: u32 = 24;
const CODE_OFFSET: u32 = MULTIBOOT_OFFSET + MULTIBOOT_LENGTH;
const COM1: u16 = 0x3f8;

/// The ELF image of a kernel that prints `message` on COM1 and exits with `code`.
pub fn elf(message: &str, code: ExitCode) -> Vec<u8> {
    let mut program = Vec::new();
    // mov dx, COM1; mov esi, message
    program.extend([0x66, 0xBA]);
    program.extend(COM1.to_le_bytes());
    program.push(0xBE);
    let message_at = program.len();
    program.extend([0; 4]);
    // next: lodsb; test al, al; jz done; out dx, al; jmp next
    program.extend([0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8]);
    // done: mov dx, DEBUG_EXIT_PORT; mov eax, code; out dx, eax
    program.extend([0x66, 0xBA]);
    program.extend(DEBUG_EXIT_PORT.to_le_bytes());
    program.push(0xB8);
    program.extend((code as u32).to_le_bytes());
    program.push(0xEF);
    // halt: hlt; jmp halt
    program.extend([0xF4, 0xEB, 0xFD]);
    let message_address = LOAD_ADDRESS + CODE_OFFSET + program.len() as u32;
    program[message_at..message_at + 4].copy_from_slice(&message_address.to_le_bytes());
    program.extend(message.as_bytes());
    program.push(0);

    let size = CODE_OFFSET + program.len() as u32;
    let mut image = Vec::new();
    let word = |image: &mut Vec<u8>, value: u32| image.extend(value.to_le_bytes());
    // ELF header: ELFCLASS32, little-endian, version 1, ET_EXEC, EM_386.
    image.extend([0x7F, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    image.extend([2, 0, 3, 0]);
    word(&mut image, 1);
    word(&mut image, LOAD_ADDRESS + CODE_OFFSET);
    word(&mut image, ELF_HEADER_SIZE);
    word(&mut image, 0);
    word(&mut image, 0);
    image.extend([
        ELF_HEADER_SIZE as u8,
        0,
        PROGRAM_HEADER_SIZE as u8,
        0,
        1,
        0,
        40,
        0,
        0,
        0,
        0,
        0,
    ]);
    // One PT_LOAD of the whole file, RWX, at LOAD_ADDRESS.
    for value in [1, 0, LOAD_ADDRESS, LOAD_ADDRESS, size, size, 7, 0x1000] {
        word(&mut image, value);
    }
    image.resize(MULTIBOOT_OFFSET as usize, 0);
    // Multiboot2 header: magic, architecture 0 (i386), length, checksum, end tag.
    let checksum = 0_u32.wrapping_sub(MULTIBOOT_MAGIC.wrapping_add(MULTIBOOT_LENGTH));
    for value in [MULTIBOOT_MAGIC, 0, MULTIBOOT_LENGTH, checksum, 0, 8] {
        word(&mut image, value);
    }
    image.extend(program);
    image
}

fn boot(firmware: Firmware, code: ExitCode, first_line: Duration) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kernel = dir.path().join("fake-kernel");
    let module = dir.path().join("module");
    std::fs::write(&kernel, elf("fake kernel up\nfake kernel done\n", code))
        .and_then(|()| std::fs::write(&module, b"not an ELF, never run"))
        .map_err(|e| e.to_string())?;
    let binaries = Binaries {
        microkernel: kernel,
        root_partition: module.clone(),
        child_runtime: module.clone(),
        boot_config: module,
    };
    let case = Case {
        name: "fake_kernel",
        machine: QemuOptions {
            smp: 1,
            firmware,
            ..QemuOptions::default()
        },
        cmdline: "fake=1".to_owned(),
        markers: vec![
            Expectation::new("fake kernel up", first_line),
            Expectation::new("fake kernel done", Duration::from_secs(30)),
        ],
        exit: ExpectedExit::Kernel(code),
        limits: Limits {
            overall: Duration::from_secs(200),
            exit: Duration::from_secs(30),
        },
        forbidden: Vec::new(),
        backend: crate::cases::Backend::Svm,
    };
    runner::run_with(&case, &binaries).map(|transcript| {
        eprintln!("serial log:\n{}", transcript.serial.join("\n"));
        // GRUB stays off the serial port: the kernel's line comes first under BIOS.
        if firmware == Firmware::Bios {
            assert_eq!(
                transcript.serial.first().map(String::as_str),
                Some("fake kernel up")
            );
        }
    })
}

#[test]
fn elf_has_a_valid_multiboot2_header() {
    let image = elf("x", ExitCode::Success);
    let at = MULTIBOOT_OFFSET as usize;
    let field = |i: usize| {
        u32::from_le_bytes([
            image[at + 4 * i],
            image[at + 4 * i + 1],
            image[at + 4 * i + 2],
            image[at + 4 * i + 3],
        ])
    };
    assert_eq!(field(0), MULTIBOOT_MAGIC);
    assert_eq!(
        field(0)
            .wrapping_add(field(1))
            .wrapping_add(field(2))
            .wrapping_add(field(3)),
        0
    );
    assert_eq!(&image[..4], b"\x7FELF");
    assert!(image.ends_with(b"x\0"));
}

#[test]
fn fake_kernel_boots_from_the_iso_under_bios() {
    boot(Firmware::Bios, ExitCode::RootFault, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn fake_kernel_boots_from_the_iso_under_uefi() {
    boot(Firmware::Uefi, ExitCode::Failure, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
}
