//! Physical memory: the firmware's memory map made usable, the allocator
//! of the frames the microkernel keeps for itself, and the rights of the
//! microkernel's own identity map.

pub mod frames;
pub mod kernel_map;
pub mod map;
