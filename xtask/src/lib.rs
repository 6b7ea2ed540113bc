//! The project's build tool, as a library so that `test` and `bench` can run
//! the `dist` steps for many app files (and so its unit tests run with the
//! workspace's host tests). `main.rs` is only the command line.

pub mod bench;
pub mod boards;
pub mod config;
pub mod dist;
pub mod dump;
pub mod elf;
pub mod explore;
pub mod gdb;
pub mod gen;
pub mod linux_peer;
pub mod manifest;
pub mod mutants;
pub mod prereq;
pub mod qemu;
pub mod runner;
pub mod sizes;
pub mod ws;
