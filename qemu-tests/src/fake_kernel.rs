//! A minimal multiboot2 kernel, written byte by byte, that proves the chain
//! (ISO, GRUB under BIOS and UEFI, QEMU command line, serial capture, exit
//! codes, harness) works without the real microkernel.
//!
//! The kernel is a 32-bit ELF loaded at 1 MiB: a multiboot2 header, then code
//! that writes a message to COM1 and an exit code to `isa-debug-exit`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use image::datadisk;
use image::kernel::Binaries;
use image::qemu::{Firmware, QemuOptions};
use ipc::exit::{DEBUG_EXIT_PORT, ExitCode};
use ipc::workload::base_pattern_byte;

use crate::cases::{Boot, Case};
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

/// The fake kernel and a module, written into `dir`.
fn fake_binaries(dir: &Path, code: ExitCode) -> Result<Binaries, String> {
    let kernel = dir.join("fake-kernel");
    let module = dir.join("module");
    std::fs::write(&kernel, elf("fake kernel up\nfake kernel done\n", code))
        .and_then(|()| std::fs::write(&module, b"not an ELF, never run"))
        .map_err(|e| e.to_string())?;
    Ok(Binaries {
        microkernel: kernel,
        root_partition: module.clone(),
        child_runtime: module.clone(),
        boot_config: module,
    })
}

fn fake_markers(first_line: Duration) -> Vec<Expectation> {
    vec![
        Expectation::new("fake kernel up", first_line),
        Expectation::new("fake kernel done", Duration::from_secs(30)),
    ]
}

/// A one-boot case of the fake kernel exiting with `code`.
fn fake_case(name: &'static str, firmware: Firmware, code: ExitCode, first_line: Duration) -> Case {
    Case {
        name,
        machine: QemuOptions {
            smp: 1,
            firmware,
            ..QemuOptions::default()
        },
        cmdline: "fake=1".to_owned(),
        markers: fake_markers(first_line),
        exit: ExpectedExit::Kernel(code),
        limits: Limits {
            overall: Duration::from_secs(200),
            exit: Duration::from_secs(30),
        },
        forbidden: Vec::new(),
        backend: crate::cases::Backend::Svm,
        data_disk: false,
        then: Vec::new(),
        host_check: None,
        prepare: None,
        host_client: None,
        transcript_check: None,
    }
}

fn boot(firmware: Firmware, code: ExitCode, first_line: Duration) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let binaries = fake_binaries(dir.path(), code)?;
    let case = fake_case("fake_kernel", firmware, code, first_line);
    runner::run_with(&case, &binaries).map(|transcripts| {
        assert_eq!(transcripts.len(), 1);
        let transcript = &transcripts[0];
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

/// The disks the multi-boot test's host check was given.
static CHECKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Reads `base.vhd`'s pattern back through `beta.vhd` (via capctl) and notes the disk.
fn pattern_through_beta(disk: &Path) -> Result<(), String> {
    CHECKED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(disk.to_path_buf());
    let got = runner::read_vhd(disk, datadisk::BETA, 512, 1024)?;
    let want: Vec<u8> = (512..1536).map(base_pattern_byte).collect();
    if got == want {
        Ok(())
    } else {
        Err("beta.vhd does not show base.vhd's pattern".to_owned())
    }
}

#[test]
fn two_boots_share_a_private_data_disk_then_the_host_check_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binaries = fake_binaries(dir.path(), ExitCode::Success).expect("binaries");
    let case = fake_case(
        "fake_two_boots",
        Firmware::Bios,
        ExitCode::Success,
        Duration::from_secs(60),
    )
    .then_boot_with(Boot {
        cmdline: "fake=2".to_owned(),
        markers: fake_markers(Duration::from_secs(60)),
        exit: ExpectedExit::Kernel(ExitCode::Success),
    })
    .host_check("pattern through beta", pattern_through_beta);
    assert!(case.data_disk);
    let transcripts = runner::run_with(&case, &binaries).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(transcripts.len(), 2);
    for transcript in &transcripts {
        assert!(transcript.serial.iter().any(|l| l == "fake kernel done"));
    }
    let checked = CHECKED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(checked.len(), 1, "{checked:?}");
    // The run's own copy, in its scratch directory (gone with it), not the master.
    let master = runner::data_disk_master().expect("master");
    assert_ne!(checked[0], master);
    assert!(master.is_file());
    let scratch = checked[0].parent().and_then(Path::file_name);
    let scratch = scratch.map(|n| n.to_string_lossy().into_owned());
    assert!(
        scratch.is_some_and(|n| n.starts_with("capvisor-fake_two_boots-")),
        "{checked:?}"
    );
    assert!(
        !checked[0].exists(),
        "the scratch directory outlived the run"
    );
}

/// Counts calls of [`never_reached`].
static REACHED: AtomicUsize = AtomicUsize::new(0);

fn never_reached(_: &Path) -> Result<(), String> {
    REACHED.fetch_add(1, Ordering::SeqCst);
    Err("ran after a failed boot".to_owned())
}

#[test]
fn a_failed_boot_stops_the_case_before_later_boots_and_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The kernel exits with Failure; the first boot expects Success.
    let binaries = fake_binaries(dir.path(), ExitCode::Failure).expect("binaries");
    let case = fake_case(
        "fake_fails_first",
        Firmware::Bios,
        ExitCode::Success,
        Duration::from_secs(60),
    )
    .then_boot_with(Boot {
        cmdline: String::new(),
        markers: fake_markers(Duration::from_secs(60)),
        exit: ExpectedExit::Kernel(ExitCode::Failure),
    })
    .host_check("never reached", never_reached);
    let error = runner::run_with(&case, &binaries).expect_err("boot 1 must fail");
    assert!(error.contains("(boot 1 of 2)"), "{error}");
    assert!(error.contains("-drive file="), "{error}");
    assert_eq!(REACHED.load(Ordering::SeqCst), 0);

    // Both boots pass, the check fails: the case fails naming the check.
    let case = Case {
        exit: ExpectedExit::Kernel(ExitCode::Failure),
        ..case
    };
    let error = runner::run_with(&case, &binaries).expect_err("the check fails");
    assert!(
        error.contains("host check never reached") && error.contains("ran after a failed boot"),
        "{error}"
    );
    assert_eq!(REACHED.load(Ordering::SeqCst), 1);
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
