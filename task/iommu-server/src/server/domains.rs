//! Domain lifetime: allocation (S2, S1, nested) and destruction.

use super::*;

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    pub(super) fn free_domain_slot(&self) -> Result<usize> {
        self.domains
            .iter()
            .position(|s| s.dom.is_none())
            .ok_or(Error::NoSpace)
    }

    pub(super) fn alloc_tag(&self, bits: u32, s2: bool) -> Result<u16> {
        let max = (1u32 << bits.min(16)) - 1;
        (1..=max)
            .map(|v| v as u16)
            .find(|&v| {
                !self.domains.iter().any(|s| match s.dom.map(|d| d.inner) {
                    Some(Inner::S2 { vmid, .. }) => s2 && vmid == v,
                    Some(Inner::S1 { asid, .. }) => !s2 && asid == v,
                    _ => false,
                })
            })
            .ok_or(Error::NoSpace)
    }

    pub(super) fn insert_domain(&mut self, slot: usize, d: Domain) -> DomainId {
        self.domains[slot].dom = Some(d);
        self.id_of(slot)
    }

    /// A stage 2 domain for the caller (a VM): a fresh VMID, an empty S2
    /// table, the MSI and context windows reserved from the start.
    pub fn alloc_s2_domain(&mut self, caller: TaskId, fault_capable: bool) -> Result<DomainId> {
        if !self.smmu.features.s2 {
            return Err(Error::Unsupported);
        }
        let slot = self.free_domain_slot()?;
        let vmid = self.alloc_tag(self.smmu.features.vmid_bits, true)?;
        let pt = PageTable::new(&self.smmu.mem, &mut self.smmu.alloc, Stage::S2)?;
        Ok(self.insert_domain(
            slot,
            Domain {
                owner: caller,
                fault_capable,
                users: 0,
                children: 0,
                inner: Inner::S2 { vmid, pt },
                needs_flush: false,
                owed: false,
            },
        ))
    }

    /// A server-managed stage 1 domain: a fresh ASID (VMID 0), an empty S1
    /// table and its CD (written now: no stream can see it yet).
    pub fn alloc_s1_domain(&mut self, caller: TaskId, fault_capable: bool) -> Result<DomainId> {
        if !self.smmu.features.s1 {
            return Err(Error::Unsupported);
        }
        let slot = self.free_domain_slot()?;
        let asid = self.alloc_tag(self.smmu.features.asid_bits, false)?;
        let cd_page = self.smmu.alloc_zeroed(0)?;
        let pt = match PageTable::new(&self.smmu.mem, &mut self.smmu.alloc, Stage::S1) {
            Ok(pt) => pt,
            Err(e) => {
                self.smmu.alloc.free(cd_page);
                return Err(e);
            }
        };
        let ips =
            AddrSize::from_bits(self.smmu.features.oas.bits().min(48)).unwrap_or(AddrSize::Bits40);
        let cd = self.build_cd(&GuestContext {
            ttb0: pt.root.pa,
            mair: smmuv3::pgtable::MAIR_DEFAULT,
            asid,
            t0sz: TSZ,
            tg0: Tg0::Granule4K,
            ips,
            record_faults: true,
        });
        for (i, w) in cd.words().iter().enumerate() {
            self.smmu.mem.write64(cd_page.off + 8 * i, *w);
        }
        self.smmu.mem.publish();
        Ok(self.insert_domain(
            slot,
            Domain {
                owner: caller,
                fault_capable,
                users: 0,
                children: 0,
                inner: Inner::S1 {
                    asid,
                    pt,
                    cd: cd_page,
                },
                needs_flush: false,
                owed: false,
            },
        ))
    }

    /// A nested domain: the guest's CD table (at an IPA) over the caller's
    /// S2 domain `parent`.
    pub fn alloc_nested_domain(
        &mut self,
        caller: TaskId,
        parent: DomainId,
        cfg: NestedConfig,
        fault_capable: bool,
    ) -> Result<DomainId> {
        let p = self.domain_idx(caller, parent)?;
        if !matches!(self.dom(p).map(|d| d.inner), Some(Inner::S2 { .. })) {
            return Err(Error::Invalid);
        }
        let f = &self.smmu.features;
        if !f.nested() {
            return Err(Error::Unsupported);
        }
        if cfg.s1cdmax as u32 > f.ssid_bits {
            return Err(if f.ssid_bits == 0 {
                Error::Unsupported
            } else {
                Error::Invalid
            });
        }
        match cfg.s1fmt {
            S1Fmt::Linear => {}
            _ if !f.cd_two_level => return Err(Error::Unsupported),
            _ => {}
        }
        if cfg.cd_table_ipa & 0x3f != 0 || cfg.cd_table_ipa >= IAS_END {
            return Err(Error::Invalid);
        }
        // The IPA is translated by the parent's stage 2, whose every
        // mapping passed `pa_allowed`; only the context window leads to
        // memory that is not the VM's (the server's CD tables).
        if CTX_WINDOW.overlaps(cfg.cd_table_ipa, 64) {
            return Err(Error::NotPermitted);
        }
        let slot = self.free_domain_slot()?;
        if let Some(d) = self.dom_mut(p) {
            d.children += 1;
        }
        Ok(self.insert_domain(
            slot,
            Domain {
                owner: caller,
                fault_capable,
                users: 0,
                children: 0,
                inner: Inner::Nested { parent: p, cfg },
                needs_flush: false,
                owed: false,
            },
        ))
    }

    /// Destroys an unused domain: Busy while streams are attached or
    /// nested domains use it as parent. Its TLB entries are invalidated
    /// (TLBI_S12_VMALL / TLBI_NH_ASID / TLBI_NH_ALL + SYNC) before its
    /// tables are freed and its VMID or ASID can be reused.
    pub fn destroy_domain(&mut self, caller: TaskId, id: DomainId) -> Result<()> {
        let i = self.domain_idx(caller, id)?;
        self.destroy_idx(i)
    }

    pub(super) fn destroy_idx(&mut self, i: usize) -> Result<()> {
        let d = *self.dom(i).ok_or(Error::NotFound)?;
        if d.users > 0 || d.children > 0 {
            return Err(Error::Busy);
        }
        let inv = match d.inner {
            Inner::S2 { vmid, .. } => Command::tlbi_s12_vmall(vmid),
            Inner::S1 { asid, .. } => Command::tlbi_nh_asid(0, asid),
            Inner::Nested { parent, .. } => Command::tlbi_nh_all(self.vmid_of(parent).unwrap_or(0)),
        };
        self.smmu.issue(&[inv]).map_err(issue_err)?;
        match d.inner {
            Inner::S2 { pt, .. } => pt.destroy(&self.smmu.mem, &mut self.smmu.alloc),
            Inner::S1 { pt, cd, .. } => {
                pt.destroy(&self.smmu.mem, &mut self.smmu.alloc);
                self.smmu.alloc.free(cd);
            }
            Inner::Nested { parent, .. } => {
                if let Some(p) = self.dom_mut(parent) {
                    p.children = p.children.saturating_sub(1);
                }
            }
        }
        let s = &mut self.domains[i];
        s.dom = None;
        s.gen = match s.gen.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        Ok(())
    }
}
