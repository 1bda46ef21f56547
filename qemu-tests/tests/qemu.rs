//! The QEMU suite: one test per row of `qemu_tests::cases::all()`.
//! Run with `cargo nextest run -p qemu-tests` (or `cargo image test`).

use libtest_mimic::{Arguments, Trial};
use qemu_tests::{cases, runner};

fn main() {
    let arguments = Arguments::from_args();
    let trials = cases::all()
        .into_iter()
        .map(|case| {
            Trial::test(case.name, move || match runner::run(&case) {
                Ok(_) => Ok(()),
                Err(message) => Err(message.into()),
            })
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit();
}
