//! Helpers shared by the VHD tests: a deterministic pseudo-random generator,
//! disk parameters and an in-memory parent resolver.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use vhd::{MemDevice, NewDisk, ParentLocation, ParentResolver, Result};

/// xorshift64*: reproducible test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub fn new_disk(size: u64, block_size: u32, id: u8) -> NewDisk {
    NewDisk {
        size,
        block_size,
        unique_id: [id; 16],
        timestamp: 1000 + u32::from(id),
    }
}

/// Resolves parents from a list of in-memory devices by name.
pub struct MemResolver {
    pub disks: Vec<(String, MemDevice)>,
}

impl ParentResolver<MemDevice> for MemResolver {
    fn open_parent(
        &mut self,
        _depth: usize,
        locations: &[ParentLocation],
        parent_name: &str,
    ) -> Result<MemDevice> {
        let names: Vec<&str> = locations
            .iter()
            .map(|l| l.path.trim_start_matches(".\\"))
            .chain(std::iter::once(parent_name))
            .collect();
        self.disks
            .iter()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, d)| d.clone())
            .ok_or(vhd::Error::BadLocator("no such parent"))
    }
}

/// Run a host tool and return its stdout; panics with a clear message if the
/// tool is missing or fails (these tests need it: they must not skip).
pub fn run_tool(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}); install it (qemu-img/qemu-io: qemu-utils, \
             vhdiinfo/vhdimount: libvhdi-utils)"
            )
        });
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Opens parents as files in one folder, by the file name part of their locators.
pub struct DirResolver(pub std::path::PathBuf);

impl ParentResolver<std::fs::File> for DirResolver {
    fn open_parent(
        &mut self,
        _depth: usize,
        locations: &[ParentLocation],
        parent_name: &str,
    ) -> Result<std::fs::File> {
        let name = locations
            .first()
            .map(|l| {
                l.path
                    .rsplit(['\\', '/'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_else(|| parent_name.to_owned());
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.0.join(name))
            .map_err(|_| vhd::Error::BadLocator("parent file not found"))
    }
}
