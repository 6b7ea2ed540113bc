//! Building STEs and CDs for domains and bound contexts.

use super::*;

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    pub(super) fn s2_fields(&self, ste: &mut Ste, vmid: u16, pt: &PageTable) {
        let oas = self.smmu.features.oas.bits().min(48);
        let ps = AddrSize::from_bits(oas).unwrap_or(AddrSize::Bits40);
        let (c, sh) = crate::driver::walk_attrs(self.smmu.mem.coherent());
        ste.set_s2vmid(vmid)
            .set_s2t0sz(TSZ)
            .set_s2sl0(s2sl0_for_level(START_LEVEL).unwrap_or(1))
            .set_s2ir0(c)
            .set_s2or0(c)
            .set_s2sh0(sh)
            .set_s2tg(Tg0::Granule4K)
            .set_s2ps(ps)
            // Never 0: QEMU asserts on AArch32 stage 2 tables.
            .set_s2aa64(true)
            .set_s2r(true)
            .set_s2s(self.smmu.features.stall_forced)
            .set_s2ttb(pt.root.pa);
    }

    pub(super) fn s1_fields(
        ste: &mut Ste,
        ctx_ptr: u64,
        s1cdmax: u8,
        fmt: S1Fmt,
        dss: S1Dss,
        coherent: bool,
    ) {
        let (c, sh) = crate::driver::walk_attrs(coherent);
        ste.set_s1fmt(fmt)
            .set_s1_context_ptr(ctx_ptr)
            .set_s1cdmax(s1cdmax)
            .set_s1dss(dss)
            .set_s1cir(c)
            .set_s1cor(c)
            .set_s1csh(sh)
            .set_strw(Strw::El1);
    }

    pub(super) fn ste_base(config: StreamConfig) -> Ste {
        let mut s = Ste::zeroed();
        s.set_v(true)
            .set_config(config)
            .set_shcfg(Shcfg::UseIncoming);
        s
    }

    /// Stage 1 of a stream whose domain is not fault-capable must never
    /// stall (nobody would answer): STE.S1STALLD = 1, so a CD with S = 1
    /// cannot make it stall (issue 7 item 5). Only where the SMMU's stall
    /// model is "stall and terminate" — elsewhere the field is ILLEGAL.
    pub(super) fn stall_disable(&self, ste: &mut Ste, fault_capable: bool) {
        if !fault_capable && self.smmu.features.stall_optional() {
            ste.set_s1stalld(true);
        }
    }

    /// The STE that attaches a stream to domain `i` (no bound contexts).
    pub(super) fn ste_for(&self, i: usize) -> Result<Ste> {
        let d = self.dom(i).ok_or(Error::NotFound)?;
        let fc = d.fault_capable;
        Ok(match d.inner {
            Inner::S2 { vmid, pt } => {
                let mut s = Self::ste_base(StreamConfig::S2Trans);
                self.s2_fields(&mut s, vmid, &pt);
                s
            }
            Inner::S1 { cd, .. } => {
                let mut s = Self::ste_base(StreamConfig::S1Trans);
                Self::s1_fields(
                    &mut s,
                    cd.pa,
                    0,
                    S1Fmt::Linear,
                    S1Dss::Terminate,
                    self.smmu.mem.coherent(),
                );
                s.set_s2vmid(0);
                self.stall_disable(&mut s, fc);
                s
            }
            Inner::Nested { parent, cfg } => {
                let Some(Domain {
                    inner: Inner::S2 { vmid, pt },
                    ..
                }) = self.dom(parent).copied()
                else {
                    return Err(Error::NotFound);
                };
                let mut s = Self::ste_base(StreamConfig::Nested);
                self.s2_fields(&mut s, vmid, &pt);
                Self::s1_fields(
                    &mut s,
                    cfg.cd_table_ipa,
                    cfg.s1cdmax,
                    cfg.s1fmt,
                    cfg.s1dss,
                    self.smmu.mem.coherent(),
                );
                self.stall_disable(&mut s, fc);
                s
            }
        })
    }

    /// The nested STE of a stream with bound contexts, on S2 domain `i`.
    pub(super) fn ste_with_contexts(
        &self,
        i: usize,
        table: &CdTable,
        pasid0_bound: bool,
    ) -> Result<Ste> {
        let Some(Domain {
            inner: Inner::S2 { vmid, pt },
            fault_capable,
            ..
        }) = self.dom(i).copied()
        else {
            return Err(Error::Invalid);
        };
        let dss = match (table.s1cdmax, pasid0_bound) {
            (0, _) => S1Dss::Terminate,
            (_, true) => S1Dss::Ssid0,
            (_, false) => S1Dss::Bypass,
        };
        let mut s = Self::ste_base(StreamConfig::Nested);
        self.s2_fields(&mut s, vmid, &pt);
        Self::s1_fields(
            &mut s,
            table.context_ptr(),
            table.s1cdmax,
            table.fmt,
            dss,
            self.smmu.mem.coherent(),
        );
        self.stall_disable(&mut s, fault_capable);
        Ok(s)
    }

    pub(super) fn validate_context(&self, c: &GuestContext) -> Result<()> {
        let f = &self.smmu.features;
        let gran_ok = match c.tg0 {
            Tg0::Granule4K => f.idr5 & (1 << 4) != 0,
            Tg0::Granule16K => f.idr5 & (1 << 5) != 0,
            Tg0::Granule64K => f.idr5 & (1 << 6) != 0,
        };
        if !gran_ok
            || !(16..=39).contains(&c.t0sz)
            || c.ips.bits() > f.oas.bits()
            || (c.asid as u32) >> f.asid_bits != 0
            || c.ttb0 & !Cd::TTB0.mask() != 0
            || c.ttb0 >> c.ips.bits() != 0
        {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    pub(super) fn build_cd(&self, c: &GuestContext) -> Cd {
        // The one CD builder (lib/smmuv3), as guests use it. Stall forced:
        // CD.S = 0 is ILLEGAL (§5.4 CdIllegal).
        let mut cd = smmuv3::S1Context {
            ttb0: c.ttb0,
            t0sz: c.t0sz,
            tg0: c.tg0,
            ips: c.ips,
            mair: c.mair,
            asid: c.asid,
            record_faults: c.record_faults,
            stall: self.smmu.features.stall_forced,
        }
        .cd();
        // The guest's own tables are walked with the mode's attributes
        // too: on a non-coherent SMMU the guest cleans them (docs).
        let (wc, wsh) = crate::driver::walk_attrs(self.smmu.mem.coherent());
        cd.set_ir0(wc).set_or0(wc).set_sh0(wsh);
        cd
    }
}
