//! The generated `idl_*` tests of the pci-server interface: round trips
//! of every type, argument set, reply and error code; malformed messages per
//! operation; `dispatch_decode` never panics.

include!(concat!(env!("OUT_DIR"), "/idl_tests.rs"));
