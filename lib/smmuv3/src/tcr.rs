//! TCR_EL1-style translation control of a stage 1 context, as a guest
//! driver hands it to its (virtual) SMMU: the bits of TCR_EL1 that map onto
//! CD word 0 (T0SZ, EPD0, IRGN0, ORGN0, SH0, TG0, EPD1, IPS). The CD keeps
//! the same fields at other positions ([`crate::Cd`]); [`crate::cd::S1Context`]
//! converts between the two.
//!
//! Bit positions are TCR_EL1's (Arm ARM D19.2): T0SZ \[5:0\], EPD0 \[7\],
//! IRGN0 \[9:8\], ORGN0 \[11:10\], SH0 \[13:12\], TG0 \[15:14\], EPD1 \[23\],
//! IPS \[34:32\].

/// T0SZ: the TTB0 region is 2^(64 - T0SZ) bytes.
pub const T0SZ_MASK: u64 = 0x3f;
/// EPD0: TTB0 walks disabled.
pub const EPD0: u64 = 1 << 7;
/// IRGN0: inner cacheability of TTB0 walks (the CD's IR0 encoding).
pub const IRGN0_SHIFT: u32 = 8;
/// ORGN0: outer cacheability of TTB0 walks (the CD's OR0 encoding).
pub const ORGN0_SHIFT: u32 = 10;
/// SH0: shareability of TTB0 walks.
pub const SH0_SHIFT: u32 = 12;
/// TG0: TTB0 granule (the CD's TG0 encoding).
pub const TG0_SHIFT: u32 = 14;
/// EPD1: TTB1 walks disabled.
pub const EPD1: u64 = 1 << 23;
/// IPS: intermediate physical address size (the CD's IPS encoding).
pub const IPS_SHIFT: u32 = 32;

/// Every bit a TCR given to the SMMU may set (the TTB0 half, EPD1 and
/// IPS); the others have no CD counterpart.
pub const ALLOWED: u64 = T0SZ_MASK
    | EPD0
    | 3 << IRGN0_SHIFT
    | 3 << ORGN0_SHIFT
    | 3 << SH0_SHIFT
    | 3 << TG0_SHIFT
    | EPD1
    | 7 << IPS_SHIFT;

/// The TCR of a 4 KiB-granule, write-back (read/write-allocate)
/// inner-shareable TTB0 context of `64 - t0sz` VA bits and an `ips`
/// (encoding, [`crate::AddrSize::raw`]) output size, TTB1 disabled.
pub const fn value(t0sz: u8, ips: u8) -> u64 {
    (t0sz as u64 & T0SZ_MASK)
        | 1 << IRGN0_SHIFT
        | 1 << ORGN0_SHIFT
        | 3 << SH0_SHIFT
        | EPD1
        | (ips as u64 & 7) << IPS_SHIFT
}

/// The 2-bit field at `shift`.
pub const fn field(tcr: u64, shift: u32) -> u64 {
    (tcr >> shift) & 3
}
