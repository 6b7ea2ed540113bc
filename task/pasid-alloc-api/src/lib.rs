//! The pasid-alloc interface: types, errors, client stub, server trait, `dispatch_decode`
//! (pure, the fuzzing entry point), `dispatch` and `run_server` — generated at build
//! time from `idl/pasid-alloc.idol.ron` by the `idl` crate. The reviewed copy of the
//! generated code is `idl/golden/pasid-alloc.rs`.

#![no_std]

include!(concat!(env!("OUT_DIR"), "/api.rs"));
