//! Circular queue pointers (the PROD/CONS register values) and the command
//! queue error code.
//!
//! A queue of `1 << log2size` entries is indexed by the low `log2size` bits
//! of PROD/CONS; the bit just above is the wrap bit, toggled each time the
//! index passes the end. Same index and wrap: empty. Same index, different
//! wrap: full. Bit 31 is the overflow flag of the event and PRI queues
//! (PROD.OVFLG / CONS.OVACKFLG); it is not part of the position.

/// Bytes per command queue entry.
pub const CMDQ_ENTRY_BYTES: usize = 16;
/// Bytes per event queue entry.
pub const EVENTQ_ENTRY_BYTES: usize = 32;
/// Bytes per PRI queue entry.
pub const PRIQ_ENTRY_BYTES: usize = 16;
/// The largest LOG2SIZE the PROD/CONS layout allows (WR/RD are 20 bits:
/// 19 index bits plus the wrap bit).
pub const MAX_LOG2SIZE: u32 = 19;

/// A PROD or CONS value of a queue with `1 << log2size` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueuePtr {
    log2size: u32,
    /// Index, wrap bit and overflow flag; nothing else.
    raw: u32,
}

impl QueuePtr {
    /// The overflow flag (EVENTQ/PRIQ PROD.OVFLG, CONS.OVACKFLG).
    pub const OVERFLOW_FLAG: u32 = 1 << 31;

    /// Index 0, wrap 0, no overflow. Panics if `log2size > MAX_LOG2SIZE`.
    pub const fn new(log2size: u32) -> Self {
        assert!(log2size <= MAX_LOG2SIZE);
        Self { log2size, raw: 0 }
    }

    /// Interprets a register value; bits other than index, wrap and the
    /// overflow flag (e.g. CMDQ_CONS.ERR) are dropped.
    pub const fn from_raw(log2size: u32, raw: u32) -> Self {
        assert!(log2size <= MAX_LOG2SIZE);
        let keep = ((1u32 << (log2size + 1)) - 1) | Self::OVERFLOW_FLAG;
        Self {
            log2size,
            raw: raw & keep,
        }
    }

    /// The register value (index, wrap bit, overflow flag).
    pub const fn raw(self) -> u32 {
        self.raw
    }

    /// log2 of the number of entries.
    pub const fn log2size(self) -> u32 {
        self.log2size
    }

    /// Number of entries.
    pub const fn capacity(self) -> u32 {
        1 << self.log2size
    }

    const fn index_mask(self) -> u32 {
        (1 << self.log2size) - 1
    }

    const fn wrap_mask(self) -> u32 {
        1 << self.log2size
    }

    /// Index and wrap bit together.
    const fn position(self) -> u32 {
        self.raw & (self.index_mask() | self.wrap_mask())
    }

    /// Entry index (0..capacity).
    pub const fn index(self) -> u32 {
        self.raw & self.index_mask()
    }

    /// The wrap bit.
    pub const fn wrap(self) -> bool {
        self.raw & self.wrap_mask() != 0
    }

    /// The overflow flag (bit 31).
    pub const fn overflow(self) -> bool {
        self.raw & Self::OVERFLOW_FLAG != 0
    }

    /// The same position with the overflow flag set to `flag`.
    pub const fn with_overflow(self, flag: bool) -> Self {
        let raw = if flag {
            self.raw | Self::OVERFLOW_FLAG
        } else {
            self.raw & !Self::OVERFLOW_FLAG
        };
        Self {
            log2size: self.log2size,
            raw,
        }
    }

    /// The same position with the overflow flag toggled.
    pub const fn toggle_overflow(self) -> Self {
        self.with_overflow(!self.overflow())
    }

    /// Moves `n` entries forward (wrapping, toggling the wrap bit as
    /// needed); the overflow flag is kept.
    pub const fn advance(self, n: u32) -> Self {
        let span = 2 * self.capacity();
        // n mod 2*capacity: positions are modulo twice the capacity.
        let pos = (self.position() + (n % span)) % span;
        Self {
            log2size: self.log2size,
            raw: pos | (self.raw & Self::OVERFLOW_FLAG),
        }
    }

    /// Byte offset of the entry from the queue base.
    pub const fn entry_offset(self, entry_bytes: usize) -> usize {
        self.index() as usize * entry_bytes
    }

    /// True when a queue with producer `self` and consumer `cons` holds no
    /// entry.
    pub const fn is_empty(self, cons: QueuePtr) -> bool {
        self.position() == cons.position()
    }

    /// True when a queue with producer `self` and consumer `cons` has no
    /// free slot.
    pub const fn is_full(self, cons: QueuePtr) -> bool {
        self.index() == cons.index() && self.wrap() != cons.wrap()
    }

    /// Number of entries between consumer `cons` and producer `self`
    /// (0..=capacity).
    pub const fn distance(self, cons: QueuePtr) -> u32 {
        let span = 2 * self.capacity();
        (self.position() + span - cons.position()) % span
    }

    /// Free slots for a producer at `self` with consumer `cons`.
    pub const fn space(self, cons: QueuePtr) -> u32 {
        self.capacity() - self.distance(cons)
    }
}

spec_enum! {
    /// CMDQ_CONS.ERR: why the SMMU stopped consuming commands.
    pub enum CmdqError as "CMDQ_CONS.ERR" {
        /// No error.
        None = 0,
        /// CERROR_ILL: illegal command (unknown opcode, reserved field, or
        /// an unsupported feature).
        Ill = 1,
        /// CERROR_ABT: abort on command fetch.
        Abt = 2,
        /// CERROR_ATC_INV_SYNC: a CMD_SYNC failed because of an ATC
        /// invalidation timeout.
        AtcInvSync = 3,
    }
}

impl CmdqError {
    /// Decodes the ERR field of a CMDQ_CONS value.
    pub fn from_cons(cons: u32) -> Result<Self, crate::ReservedEncoding> {
        use crate::regs::CMDQ_CONS;
        Self::from_raw(CMDQ_CONS::ERR.read(cons) as u64)
    }

    /// CMDQ_CONS with the ERR field replaced by `self`.
    pub fn insert_into_cons(self, cons: u32) -> u32 {
        use crate::regs::CMDQ_CONS;
        let mut v = tock_registers::LocalRegisterCopy::<u32, CMDQ_CONS::Register>::new(cons);
        v.modify(CMDQ_CONS::ERR.val(self.raw() as u32));
        v.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_full_wrap() {
        let cons = QueuePtr::new(2);
        let mut prod = cons;
        assert!(prod.is_empty(cons));
        for i in 1..=4 {
            prod = prod.advance(1);
            assert_eq!(prod.distance(cons), i);
        }
        assert!(prod.is_full(cons));
        assert!(!prod.is_empty(cons));
        assert_eq!(prod.index(), 0);
        assert!(prod.wrap());
        assert_eq!(prod.raw(), 0b100);
        assert_eq!(prod.space(cons), 0);
        let cons = cons.advance(4);
        assert!(prod.is_empty(cons));
        assert_eq!(prod.advance(4).raw(), 0, "wrap bit toggles back");
    }

    #[test]
    fn overflow_flag_is_kept_and_not_positional() {
        let p = QueuePtr::from_raw(3, 0x8000_0005);
        assert!(p.overflow());
        assert_eq!(p.index(), 5);
        let q = p.advance(4);
        assert!(q.overflow());
        assert_eq!(q.index(), 1);
        assert!(q.wrap());
        let c = QueuePtr::from_raw(3, 0x9);
        assert!(q.is_empty(c), "the overflow flag does not affect emptiness");
        assert_eq!(p.toggle_overflow().raw(), 5);
    }

    #[test]
    fn cons_err_decode() {
        assert_eq!(CmdqError::from_cons(0x0100_0003), Ok(CmdqError::Ill));
        assert_eq!(CmdqError::from_cons(0x0200_0000), Ok(CmdqError::Abt));
        assert_eq!(CmdqError::from_cons(0x0300_0000), Ok(CmdqError::AtcInvSync));
        assert_eq!(CmdqError::from_cons(0x7), Ok(CmdqError::None));
        assert!(CmdqError::from_cons(0x0400_0000).is_err());
        assert_eq!(CmdqError::Ill.insert_into_cons(0x5), 0x0100_0005);
        // The error field is not part of the position.
        assert_eq!(QueuePtr::from_raw(4, 0x0100_0013).raw(), 0x13);
    }

    proptest! {
        #[test]
        fn advance_matches_modular_arithmetic(log2 in 0u32..=19, start in any::<u32>(), n in 0u32..2_000_000) {
            let cap = 1u64 << log2;
            let p = QueuePtr::from_raw(log2, start & !QueuePtr::OVERFLOW_FLAG);
            let linear = (p.wrap() as u64) * cap + p.index() as u64;
            let q = p.advance(n);
            let expect = (linear + n as u64) % (2 * cap);
            prop_assert_eq!(q.index() as u64, expect % cap);
            prop_assert_eq!(q.wrap(), expect >= cap);
            prop_assert!(!q.overflow());
        }

        #[test]
        fn distance_counts_pushes(log2 in 0u32..=12, start in any::<u32>(), n in 0u32..=4096) {
            let cap = 1u32 << log2;
            let n = n % (cap + 1);
            let cons = QueuePtr::from_raw(log2, start);
            let prod = cons.advance(n);
            prop_assert_eq!(prod.distance(cons), n);
            prop_assert_eq!(prod.space(cons), cap - n);
            prop_assert_eq!(prod.is_empty(cons), n == 0);
            prop_assert_eq!(prod.is_full(cons), n == cap);
        }

        #[test]
        fn advance_composes(log2 in 0u32..=19, start in any::<u32>(), a in any::<u32>(), b in any::<u32>()) {
            let p = QueuePtr::from_raw(log2, start);
            let span = 2u64 << log2;
            let total = ((a as u64 % span) + (b as u64 % span)) as u32;
            prop_assert_eq!(p.advance(a).advance(b), p.advance(total));
        }
    }
}
