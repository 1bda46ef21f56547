//! `kprintln!`: one line on the serial console.

/// Prints one line on the microkernel's console.
macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::arch::serial::write_line(format_args!($($arg)*))
    };
}
