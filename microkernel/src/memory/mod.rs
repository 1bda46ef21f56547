//! Physical memory: the firmware's memory map made usable, and the allocator
//! of the frames the microkernel keeps for itself.

pub mod frames;
pub mod map;
