//! Guest-side support shared by partitions (placeholder).
#![no_std]
