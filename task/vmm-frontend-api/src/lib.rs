//! The vmm-frontend interface: types, errors, client stub, server trait, `dispatch_decode`
//! (pure, the fuzzing entry point), `dispatch` and `run_server` — generated at build
//! time from `idl/vmm-frontend.idol.ron` by the `idl` crate. Its summary (ops, numbers,
//! sizes, callers) is reviewed in `idl/golden/interfaces.txt`.

#![no_std]

include!(concat!(env!("OUT_DIR"), "/api.rs"));
