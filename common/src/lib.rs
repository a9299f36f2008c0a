//! Event layouts shared by the kernel probe (`ebpf/`) and the agent.
//!
//! Everything here is `#[repr(C)]`, uses fixed-width integers (no `bool`, no hidden padding)
//! and has its size pinned by a compile-time assertion, so both sides agree byte for byte.
#![no_std]
