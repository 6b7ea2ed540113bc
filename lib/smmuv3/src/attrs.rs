//! Encodings shared by several formats: cacheability, shareability, address
//! sizes and translation granules (the TCR/VTCR-style fields of STEs and CDs).

spec_enum! {
    /// Inner/outer cacheability of table walks (CD.IR0/OR0/IR1/OR1,
    /// STE.S1CIR/S1COR, STE.S2IR0/S2OR0): TCR_ELx.IRGN/ORGN encoding.
    pub enum Cacheability as "IRGN/ORGN" {
        /// Normal memory, non-cacheable.
        NonCacheable = 0b00,
        /// Write-back, read-allocate, write-allocate.
        WriteBackAlloc = 0b01,
        /// Write-through, read-allocate, no write-allocate.
        WriteThrough = 0b10,
        /// Write-back, read-allocate, no write-allocate.
        WriteBackNoWriteAlloc = 0b11,
    }
}

spec_enum! {
    /// Shareability of table walks (CD.SH0/SH1, STE.S1CSH, STE.S2SH0).
    /// 0b01 is reserved.
    pub enum Shareability as "SH" {
        /// Non-shareable.
        NonShareable = 0b00,
        /// Outer shareable.
        OuterShareable = 0b10,
        /// Inner shareable.
        InnerShareable = 0b11,
    }
}

spec_enum! {
    /// A physical/intermediate address size: IDR5.OAS, CD.IPS, STE.S2PS
    /// (TCR.IPS / VTCR.PS encoding).
    pub enum AddrSize as "OAS/IPS/PS" {
        /// 32 bits, 4 GiB.
        Bits32 = 0b000,
        /// 36 bits, 64 GiB.
        Bits36 = 0b001,
        /// 40 bits, 1 TiB.
        Bits40 = 0b010,
        /// 42 bits, 4 TiB.
        Bits42 = 0b011,
        /// 44 bits, 16 TiB.
        Bits44 = 0b100,
        /// 48 bits, 256 TiB.
        Bits48 = 0b101,
        /// 52 bits, 4 PiB.
        Bits52 = 0b110,
    }
}

impl AddrSize {
    /// The size in bits.
    pub const fn bits(self) -> u32 {
        match self {
            AddrSize::Bits32 => 32,
            AddrSize::Bits36 => 36,
            AddrSize::Bits40 => 40,
            AddrSize::Bits42 => 42,
            AddrSize::Bits44 => 44,
            AddrSize::Bits48 => 48,
            AddrSize::Bits52 => 52,
        }
    }

    /// The smallest encoding of at least `bits` bits, if any.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits {
            0..=32 => AddrSize::Bits32,
            33..=36 => AddrSize::Bits36,
            37..=40 => AddrSize::Bits40,
            41..=42 => AddrSize::Bits42,
            43..=44 => AddrSize::Bits44,
            45..=48 => AddrSize::Bits48,
            49..=52 => AddrSize::Bits52,
            _ => return None,
        })
    }
}

spec_enum! {
    /// Translation granule of TTB0 (CD.TG0) and of stage 2 (STE.S2TG):
    /// TCR.TG0 / VTCR.TG0 encoding.
    pub enum Tg0 as "TG0/S2TG" {
        /// 4 KiB granule.
        Granule4K = 0b00,
        /// 64 KiB granule.
        Granule64K = 0b01,
        /// 16 KiB granule.
        Granule16K = 0b10,
    }
}

spec_enum! {
    /// Translation granule of TTB1 (CD.TG1): TCR.TG1 encoding, which
    /// differs from TG0's.
    pub enum Tg1 as "TG1" {
        /// 16 KiB granule.
        Granule16K = 0b01,
        /// 4 KiB granule.
        Granule4K = 0b10,
        /// 64 KiB granule.
        Granule64K = 0b11,
    }
}

impl Tg0 {
    /// log2 of the granule size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            Tg0::Granule4K => 12,
            Tg0::Granule16K => 14,
            Tg0::Granule64K => 16,
        }
    }
}

impl Tg1 {
    /// log2 of the granule size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            Tg1::Granule4K => 12,
            Tg1::Granule16K => 14,
            Tg1::Granule64K => 16,
        }
    }
}
