//! PRI queue entries (16 bytes): PCIe page requests as the SMMU records
//! them.

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A page request: 2 little-endian 64-bit words.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct PriEntry {
    words: [U64; 2],
}

entry_words!(PriEntry, 2);

impl PriEntry {
    // ---- word 0 ----
    uint_field!(
        /// StreamID.
        SID, sid, set_sid, u32, 0, 31, 0
    );
    uint_field!(
        /// SubstreamID (PASID), valid when SSV.
        SSID, ssid, set_ssid, u32, 0, 51, 32
    );
    flag_field!(
        /// PRIV: privileged access requested.
        PRIV, privileged, set_privileged, 0, 58
    );
    flag_field!(
        /// EXEC: execute access requested.
        EXEC, exec, set_exec, 0, 59
    );
    flag_field!(
        /// READ: read access requested.
        READ, read, set_read, 0, 60
    );
    flag_field!(
        /// WRITE: write access requested.
        WRITE, write, set_write, 0, 61
    );
    flag_field!(
        /// Last: the last request of its group; only it is answered.
        LAST, last, set_last, 0, 62
    );
    flag_field!(
        /// SSV: SubstreamID valid.
        SSV, ssv, set_ssv, 0, 63
    );

    // ---- word 1 ----
    uint_field!(
        /// PRGI: page request group index (9 bits).
        PRGI, prgi, set_prgi, u16, 1, 8, 0
    );
    addr_field!(
        /// Page address \[63:12\].
        PAGE_ADDR, page_addr, set_page_addr, 1, 63, 12
    );

    /// A request for the page at `addr` (rounded down to 4 KiB).
    pub fn new(sid: u32, ssid: Option<u32>, prgi: u16, addr: u64) -> Self {
        let mut e = Self::zeroed();
        e.set_sid(sid)
            .set_prgi(prgi)
            .set_page_addr(addr & Self::PAGE_ADDR.mask());
        if let Some(s) = ssid {
            e.set_ssv(true).set_ssid(s);
        }
        e
    }

    /// The SubstreamID when SSV is set.
    pub fn substream(&self) -> Option<u32> {
        self.ssv().then(|| self.ssid())
    }

    /// A PCIe stop marker: Last set and neither READ nor WRITE. It means
    /// "no more requests for this PASID before this point" and is never
    /// answered.
    pub fn is_stop_marker(&self) -> bool {
        self.last() && !self.read() && !self.write()
    }
}
