//! The console device's messages (class [`super::control::CONSOLE_CLASS`]):
//! the child's log lines out, an input stream in. See
//! `docs/devices/console.md`.
//!
//! # Invariants
//! A line is at most [`MAX_LINE`] bytes of UTF-8 without a newline;
//! [`ConsoleMessage::check`] enforces it on the receiving side (postcard
//! already refuses invalid UTF-8).

use serde::{Deserialize, Serialize};

use super::packet::Bytes;

/// Longest console line (bytes).
pub const MAX_LINE: usize = 160;
/// Longest input chunk (bytes).
pub const MAX_INPUT: usize = 256;

/// One console message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleMessage<'a> {
    /// Child to root: one line of output (no newline).
    Line {
        /// The text.
        text: &'a str,
    },
    /// Root to child: bytes of input.
    Input {
        /// The bytes.
        #[serde(borrow)]
        bytes: Bytes<'a>,
    },
}

/// Why a console message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// A line longer than [`MAX_LINE`], or containing a newline.
    BadLine,
    /// Input longer than [`MAX_INPUT`].
    BadInput,
}

impl ConsoleMessage<'_> {
    /// Checks the limits above.
    pub fn check(&self) -> Result<(), ConsoleError> {
        match self {
            ConsoleMessage::Line { text } if text.len() > MAX_LINE || text.contains('\n') => {
                Err(ConsoleError::BadLine)
            }
            ConsoleMessage::Input { bytes } if bytes.0.len() > MAX_INPUT => {
                Err(ConsoleError::BadInput)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_are_checked() {
        let mut buf = [0u8; 512];
        let m = ConsoleMessage::Line {
            text: "hello from vcpu 0 of 1",
        };
        let bytes = postcard::to_slice(&m, &mut buf).unwrap();
        let back: ConsoleMessage<'_> = postcard::from_bytes(bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.check(), Ok(()));
        let long = [b'x'; MAX_LINE + 1];
        let text = core::str::from_utf8(&long).unwrap();
        assert_eq!(
            ConsoleMessage::Line { text }.check(),
            Err(ConsoleError::BadLine)
        );
        assert_eq!(
            ConsoleMessage::Line { text: "a\nb" }.check(),
            Err(ConsoleError::BadLine)
        );
        assert_eq!(
            ConsoleMessage::Input {
                bytes: Bytes(&[0; MAX_INPUT + 1])
            }
            .check(),
            Err(ConsoleError::BadInput)
        );
        // Invalid UTF-8 in a line is refused by the decoder.
        let mut raw = [0u8; 8];
        raw[0] = 0; // variant Line
        raw[1] = 2; // length
        raw[2] = 0xff;
        raw[3] = 0xfe;
        assert!(postcard::from_bytes::<ConsoleMessage<'_>>(&raw[..4]).is_err());
    }
}
