//! What the modelled SMMU implements: a builder that also produces the ID
//! register values the driver probes.

use smmuv3::regs::{IDR0, IDR1, IDR3, IDR5};
use smmuv3::AddrSize;
use tock_registers::fields::FieldValue;

/// IDR0.STALL_MODEL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallModel {
    /// Stall and terminate models both supported (CD.S / STE.S2S choose).
    StallAndTerminate,
    /// Stalling not supported (QEMU): CD.S, STE.S2S are illegal, RESUME
    /// and STALL_TERM are illegal commands.
    TerminateOnly,
    /// Every stallable fault stalls; STE.S1STALLD is illegal.
    StallForced,
}

/// Configuration of a modelled SMMU.
#[derive(Clone, Debug)]
pub struct SmmuConfig {
    /// IDR1.SIDSIZE: StreamID bits.
    pub sidsize: u32,
    /// IDR1.SSIDSIZE: SubstreamID (PASID) bits, 0..=20.
    pub ssidsize: u32,
    /// IDR0.S1P.
    pub s1p: bool,
    /// IDR0.S2P.
    pub s2p: bool,
    /// IDR0.PRI: the PRI queue exists.
    pub pri: bool,
    /// IDR0.ATS: ATC_INV is legal (the device ATC itself is not modelled).
    pub ats: bool,
    /// IDR0.MSI: CMD_SYNC and the queues/GERROR may signal by MSI writes.
    pub msi: bool,
    /// IDR0.SEV: CMD_SYNC CS=SEV is legal.
    pub sev: bool,
    /// IDR0.HYP: StreamWorld EL2 / EL2-E2H.
    pub hyp: bool,
    /// IDR0.COHACC: the system gives the SMMU IO-coherent access to its
    /// structures, queues and walks. Only the ID bit: whether the CPU side
    /// is coherent is the harness's [`crate::CpuCache`] mode (a board may
    /// disagree with IDR0, which the driver logs).
    pub cohacc: bool,
    /// IDR0.STALL_MODEL.
    pub stall_model: StallModel,
    /// IDR0.ST_LEVEL: 2-level stream tables.
    pub two_level_strtab: bool,
    /// IDR0.CD2L: 2-level CD tables.
    pub two_level_cd: bool,
    /// IDR0.ASID16.
    pub asid16: bool,
    /// IDR0.VMID16.
    pub vmid16: bool,
    /// IDR1.CMDQS: log2 of the largest command queue.
    pub cmdqs: u32,
    /// IDR1.EVENTQS.
    pub eventqs: u32,
    /// IDR1.PRIQS.
    pub priqs: u32,
    /// IDR3.RIL: range invalidation.
    pub ril: bool,
    /// IDR5.OAS.
    pub oas: AddrSize,
    /// Maximum IOTLB entries (oldest evicted first).
    pub tlb_capacity: usize,
    /// Apply CFGI/TLBI only when a later CMD_SYNC completes (an
    /// implementation may do so): a driver that forgets the SYNC keeps
    /// seeing stale data. `false` applies them when consumed.
    pub defer_invalidation_to_sync: bool,
    /// Whether CMD_CFGI_STE(sid) also drops the CDs cached for `sid`. The
    /// strict default (`false`) requires CFGI_CD / CFGI_CD_ALL for CD
    /// changes even when the STE is invalidated too.
    pub cfgi_ste_invalidates_cds: bool,

    // --- Strict modes: what the architecture allows an implementation to
    // do that a lenient model never does. Each is off by default; each
    // takes its choices from `seed`. [`SmmuConfig::strict`] turns all on.
    /// Seed of the model's own random choices (strict modes only).
    pub seed: u64,
    /// Eager configuration caching (IHI 0070 §3.21.3, §5.2, §5.4): any
    /// reachable STE, L1STD, CD or L1CD may be fetched and cached at any
    /// time, valid or not, and cached entries may be dropped at any time.
    /// Lookups use a cached invalid entry (C_BAD_STE / C_BAD_CD) instead of
    /// fetching again. A missing CFGI after any change is caught.
    pub eager_config_cache: bool,
    /// Slow command consumption: see [`CmdqThrottle`]. `None`: commands
    /// run when CMDQ_PROD is written.
    pub cmdq_throttle: Option<CmdqThrottle>,
    /// Walk caching (§3.21.1, §4.4): stage 2 translations of CD and stage 1
    /// descriptor fetches are cached as stage 2 TLB entries, and table
    /// (non-leaf) descriptors of both stages in walk caches, each kept until
    /// a TLBI whose scope covers it (Leaf = 1 forms keep walk-cache
    /// entries).
    pub walk_cache: bool,
    /// UNKNOWN reset values and slow handshakes (§6.3): the *_IRQ_CFG0/1/2
    /// registers reset to seeded garbage, GBPA.UPDATE stays 1 for a few
    /// reads or steps after a write, and a GBPA write while UPDATE = 1 is
    /// ignored (as on SMMUv3.2+).
    pub unknown_reset: bool,
}

/// How fast the SMMU consumes commands when throttled: only in
/// [`crate::Smmu::step`], between 1 and `max_per_step` commands per step,
/// and a CMD_SYNC completes only after it has sat at the head of the queue
/// for up to `sync_delay_steps` steps (seeded). The driver has to poll
/// CMDQ_CONS, wait for space when the queue fills, and wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdqThrottle {
    pub max_per_step: u32,
    pub sync_delay_steps: u32,
}

impl Default for SmmuConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SmmuConfig {
    /// The project's model: everything QEMU 10.0 lacks, on. 16-bit
    /// StreamIDs, 20-bit SubstreamIDs, both stages, PRI, ATS, stall and
    /// terminate, 2-level stream and CD tables, 16-bit ASIDs/VMIDs, queues
    /// of up to 256 entries, 48-bit OAS, wired interrupts.
    pub fn new() -> Self {
        Self {
            sidsize: 16,
            ssidsize: 20,
            s1p: true,
            s2p: true,
            pri: true,
            ats: true,
            msi: false,
            sev: true,
            hyp: false,
            cohacc: true,
            stall_model: StallModel::StallAndTerminate,
            two_level_strtab: true,
            two_level_cd: true,
            asid16: true,
            vmid16: true,
            cmdqs: 8,
            eventqs: 8,
            priqs: 8,
            ril: true,
            oas: AddrSize::Bits48,
            tlb_capacity: 256,
            defer_invalidation_to_sync: true,
            cfgi_ste_invalidates_cds: false,
            seed: 0,
            eager_config_cache: false,
            cmdq_throttle: None,
            walk_cache: false,
            unknown_reset: false,
        }
    }

    /// Every strict mode on, seeded: eager configuration caching, throttled
    /// command consumption (up to 8 commands per step, SYNC up to 3 steps
    /// late), walk caches, UNKNOWN reset values and a slow GBPA.UPDATE.
    pub fn strict(self, seed: u64) -> Self {
        self.seed(seed)
            .eager_config_cache(true)
            .cmdq_throttle(Some(CmdqThrottle {
                max_per_step: 8,
                sync_delay_steps: 3,
            }))
            .walk_cache(true)
            .unknown_reset(true)
    }

    /// See [`SmmuConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// See [`SmmuConfig::eager_config_cache`].
    pub fn eager_config_cache(mut self, on: bool) -> Self {
        self.eager_config_cache = on;
        self
    }

    /// See [`SmmuConfig::cmdq_throttle`].
    pub fn cmdq_throttle(mut self, t: Option<CmdqThrottle>) -> Self {
        self.cmdq_throttle = t.map(|t| CmdqThrottle {
            max_per_step: t.max_per_step.max(1),
            ..t
        });
        self
    }

    /// See [`SmmuConfig::walk_cache`].
    pub fn walk_cache(mut self, on: bool) -> Self {
        self.walk_cache = on;
        self
    }

    /// See [`SmmuConfig::unknown_reset`].
    pub fn unknown_reset(mut self, on: bool) -> Self {
        self.unknown_reset = on;
        self
    }

    /// QEMU 10.0 `virt`: IDR0 0x0d44101b, IDR1 0x02730010 (no PRI, no
    /// stall, no substreams), OAS 44.
    pub fn qemu_virt() -> Self {
        Self {
            ssidsize: 0,
            pri: false,
            ats: false,
            sev: false,
            stall_model: StallModel::TerminateOnly,
            two_level_cd: false,
            cmdqs: 19,
            eventqs: 19,
            priqs: 0,
            oas: AddrSize::Bits44,
            ..Self::new()
        }
    }

    /// IDR1.SIDSIZE.
    pub fn sidsize(mut self, bits: u32) -> Self {
        assert!(bits <= 32);
        self.sidsize = bits;
        self
    }

    /// IDR1.SSIDSIZE (0..=20).
    pub fn ssidsize(mut self, bits: u32) -> Self {
        assert!(bits <= smmuv3::MAX_SSID_BITS);
        self.ssidsize = bits;
        self
    }

    /// IDR0.S1P and IDR0.S2P.
    pub fn stages(mut self, s1: bool, s2: bool) -> Self {
        self.s1p = s1;
        self.s2p = s2;
        self
    }

    /// IDR0.PRI.
    pub fn pri(mut self, on: bool) -> Self {
        self.pri = on;
        self
    }

    /// IDR0.ATS.
    pub fn ats(mut self, on: bool) -> Self {
        self.ats = on;
        self
    }

    /// IDR0.MSI.
    pub fn msi(mut self, on: bool) -> Self {
        self.msi = on;
        self
    }

    /// IDR0.HYP.
    pub fn hyp(mut self, on: bool) -> Self {
        self.hyp = on;
        self
    }

    /// IDR0.STALL_MODEL.
    pub fn stall_model(mut self, m: StallModel) -> Self {
        self.stall_model = m;
        self
    }

    /// IDR0.ST_LEVEL and IDR0.CD2L.
    pub fn two_level(mut self, strtab: bool, cd: bool) -> Self {
        self.two_level_strtab = strtab;
        self.two_level_cd = cd;
        self
    }

    /// IDR1.CMDQS, EVENTQS, PRIQS (each ≤ 19).
    pub fn queue_sizes(mut self, cmdqs: u32, eventqs: u32, priqs: u32) -> Self {
        let max = smmuv3::queue::MAX_LOG2SIZE;
        assert!(cmdqs <= max && eventqs <= max && priqs <= max);
        self.cmdqs = cmdqs;
        self.eventqs = eventqs;
        self.priqs = priqs;
        self
    }

    /// IDR5.OAS.
    pub fn oas(mut self, oas: AddrSize) -> Self {
        self.oas = oas;
        self
    }

    /// IOTLB capacity.
    pub fn tlb_capacity(mut self, n: usize) -> Self {
        self.tlb_capacity = n.max(1);
        self
    }

    /// See [`SmmuConfig::defer_invalidation_to_sync`].
    pub fn defer_invalidation_to_sync(mut self, on: bool) -> Self {
        self.defer_invalidation_to_sync = on;
        self
    }

    /// See [`SmmuConfig::cohacc`].
    pub fn cohacc(mut self, on: bool) -> Self {
        self.cohacc = on;
        self
    }

    /// See [`SmmuConfig::cfgi_ste_invalidates_cds`].
    pub fn cfgi_ste_invalidates_cds(mut self, on: bool) -> Self {
        self.cfgi_ste_invalidates_cds = on;
        self
    }

    /// The IDR0 value.
    pub fn idr0(&self) -> u32 {
        let flag = |on: bool, f: tock_registers::fields::Field<u32, IDR0::Register>| {
            if on {
                f.val(1)
            } else {
                f.val(0)
            }
        };
        let stall = match self.stall_model {
            StallModel::StallAndTerminate => IDR0::STALL_MODEL::StallAndTerminate,
            StallModel::TerminateOnly => IDR0::STALL_MODEL::TerminateOnly,
            StallModel::StallForced => IDR0::STALL_MODEL::StallForced,
        };
        let st = if self.two_level_strtab {
            IDR0::ST_LEVEL::TwoLevel
        } else {
            IDR0::ST_LEVEL::Linear
        };
        let v: FieldValue<u32, IDR0::Register> = flag(self.s2p, IDR0::S2P)
            + flag(self.s1p, IDR0::S1P)
            + IDR0::TTF::AArch64
            + flag(self.cohacc, IDR0::COHACC)
            + flag(self.hyp, IDR0::HYP)
            + flag(self.ats, IDR0::ATS)
            + flag(self.asid16, IDR0::ASID16)
            + flag(self.msi, IDR0::MSI)
            + flag(self.sev, IDR0::SEV)
            + flag(self.pri, IDR0::PRI)
            + flag(self.vmid16, IDR0::VMID16)
            + flag(self.two_level_cd, IDR0::CD2L)
            + IDR0::TTENDIAN::LittleEndian
            + stall
            + IDR0::TERM_MODEL::SET
            + st;
        v.value
    }

    /// The IDR1 value.
    pub fn idr1(&self) -> u32 {
        (IDR1::SIDSIZE.val(self.sidsize)
            + IDR1::SSIDSIZE.val(self.ssidsize)
            + IDR1::PRIQS.val(if self.pri { self.priqs } else { 0 })
            + IDR1::EVENTQS.val(self.eventqs)
            + IDR1::CMDQS.val(self.cmdqs))
        .value
    }

    /// The IDR3 value.
    pub fn idr3(&self) -> u32 {
        (IDR3::RIL.val(self.ril as u32) + IDR3::HAD::SET).value
    }

    /// The IDR5 value (4K granule only: the model walks 4 KiB tables).
    pub fn idr5(&self) -> u32 {
        (IDR5::OAS.val(self.oas.raw() as u32)
            + IDR5::GRAN4K::SET
            + IDR5::STALL_MAX.val(if self.stall_model == StallModel::TerminateOnly {
                0
            } else {
                64
            }))
        .value
    }

    /// Largest StreamID + 1.
    pub fn num_sids(&self) -> u64 {
        1u64 << self.sidsize
    }

    /// ASID mask (8 or 16 bits).
    pub fn asid_mask(&self) -> u16 {
        if self.asid16 {
            u16::MAX
        } else {
            0xff
        }
    }

    /// VMID mask (8 or 16 bits).
    pub fn vmid_mask(&self) -> u16 {
        if self.vmid16 {
            u16::MAX
        } else {
            0xff
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_idregs() {
        let c = SmmuConfig::qemu_virt();
        assert_eq!(c.idr0(), 0x0d44_101b);
        assert_eq!(c.idr1(), 0x0273_0010);
    }
}
