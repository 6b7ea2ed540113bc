//! The prq-server interface: types, errors, client stub, server trait, `dispatch_decode`
//! (pure, the fuzzing entry point), `dispatch` and `run_server` — generated at build
//! time from `idl/prq-server.idol.ron` by the `idl` crate. The reviewed copy of the
//! generated code is `idl/golden/prq-server.rs`.

#![no_std]

include!(concat!(env!("OUT_DIR"), "/api.rs"));
