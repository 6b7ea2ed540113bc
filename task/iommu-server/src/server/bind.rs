//! PASID binds: guest stage 1 contexts in a server-owned CD table.

use super::*;

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Binds a guest stage 1 context to (stream, PASID): the stream must be
    /// attached to the caller's S2 domain; its STE becomes nested over that
    /// S2 with a server-owned CD table (mapped read-only in the domain's
    /// context window). A second bind of the same pair with the same
    /// context only counts a user; with a different context it is
    /// AlreadyExists. Returns the users count. PASID ≠ 0 on an SMMU without
    /// substreams is Unsupported.
    pub fn bind(&mut self, caller: TaskId, sid: u32, pasid: u32, ctx: GuestContext) -> Result<u16> {
        let r = self.bind_inner(caller, sid, pasid, ctx);
        match &r {
            Ok(_) => trace!(Iommu::Bind, sid, pasid),
            Err(e) => trace!(Iommu::BindRefused, sid, *e as u32),
        }
        r
    }

    fn bind_inner(
        &mut self,
        caller: TaskId,
        sid: u32,
        pasid: u32,
        ctx: GuestContext,
    ) -> Result<u16> {
        let si = self.stream_idx(caller, sid)?;
        if !self.smmu.features.nested() {
            return Err(Error::Unsupported);
        }
        if pasid != 0 && self.smmu.features.ssid_bits == 0 {
            return Err(Error::Unsupported);
        }
        if pasid as u64 >= 1u64 << self.pasid_bits {
            return Err(Error::Invalid);
        }
        self.validate_context(&ctx)?;
        // TTB0 is an IPA under the VM's stage 2 (see alloc_nested_domain).
        if CTX_WINDOW.overlaps(ctx.ttb0, PAGE_SIZE as u64) {
            return Err(Error::NotPermitted);
        }
        let st = *self.stream(si);
        let di = st.attached.ok_or(Error::Invalid)?;
        let Some(Inner::S2 { pt, .. }) = self.dom(di).map(|d| d.inner) else {
            return Err(Error::Invalid);
        };
        if let Some(ci) = self.context_idx(si, pasid) {
            let c = self.contexts[ci].as_mut().ok_or(Error::NotFound)?;
            if c.ctx != ctx {
                return Err(Error::AlreadyExists);
            }
            c.users = c.users.checked_add(1).ok_or(Error::NoSpace)?;
            return Ok(c.users);
        }
        let ci = self
            .contexts
            .iter()
            .position(|c| c.is_none())
            .ok_or(Error::NoSpace)?;

        // Allocate everything first (the only failures that leave no trace).
        let mut pt = pt;
        let new_table = st.ctx.is_none();
        let mut table = match st.ctx {
            Some(t) => t,
            None => CdTable::new(
                &self.smmu.mem,
                &mut self.smmu.alloc,
                self.pasid_bits as u8,
                self.smmu.features.cd_two_level,
                CTX_WINDOW.base,
            )?,
        };
        let mut mapped = [0u64; 33];
        let mut nmapped = 0;
        let mut leaf = None;
        let prepared = (|| -> Result<()> {
            if new_table {
                for k in 0..(1usize << table.root.order) {
                    let off = table.root.off + k * PAGE_SIZE;
                    self.map_ctx_page(&mut pt, off)?;
                    mapped[nmapped] = off as u64;
                    nmapped += 1;
                }
            }
            if table.needs_leaf(&self.smmu.mem, pasid) {
                let p = self.smmu.alloc_zeroed(0)?;
                leaf = Some(p);
                self.map_ctx_page(&mut pt, p.off)?;
                mapped[nmapped] = p.off as u64;
                nmapped += 1;
            }
            Ok(())
        })();
        if let Err(e) = prepared {
            for off in &mapped[..nmapped] {
                pt.unmap(&self.smmu.mem, CTX_WINDOW.base + off);
            }
            if let Some(p) = leaf {
                self.smmu.alloc.free(p);
            }
            if new_table {
                table.destroy(&self.smmu.mem, &mut self.smmu.alloc);
            }
            return Err(e);
        }

        // Hardware-visible steps. Failures here are timeouts or SMMU
        // errors; the stream is then made to abort.
        let r = (|| -> Result<()> {
            if let Some(p) = leaf {
                table.install_leaf(&self.smmu.mem, pasid, p);
                if !new_table {
                    self.smmu
                        .issue(&[Command::cfgi_cd(sid, pasid, false)])
                        .map_err(issue_err)?;
                }
            }
            let off = table.cd_off(&self.smmu.mem, pasid).ok_or(Error::Invalid)?;
            let cd = self.build_cd(&ctx);
            self.smmu
                .write_cd(off, &cd, &[Command::cfgi_cd(sid, pasid, true)])?;
            let pasid0 = pasid == 0 || self.context_idx(si, 0).is_some();
            let target = self.ste_with_contexts(di, &table, pasid0)?;
            self.smmu.write_ste(sid, &target)?;
            Ok(())
        })();
        if let Some(s) = self.stream_mut(si) {
            s.ctx = Some(table);
        }
        self.contexts[ci] = Some(Context {
            stream: si,
            pasid,
            users: 1,
            ctx,
        });
        if let Err(e) = r {
            // Undo through the normal path (clears the CD, restores the S2
            // STE or aborts).
            // No drain: the pair was never routed (the route is set only after
            // a bind succeeded), and a PASID-0 drain would answer the
            // attached domain's groups.
            let _ = self.unbind_idx(ci, true, None);
            return Err(e);
        }
        // The first bind routes the PASID's page requests to its owner.
        self.fault_route(sid, pasid, caller, ctx.record_faults);
        Ok(1)
    }

    /// Maps one server table page into an S2 table's context window.
    pub(super) fn map_ctx_page(&mut self, pt: &mut PageTable, off: usize) -> Result<()> {
        let pa = self.smmu.mem.base_pa() + off as u64;
        pt.map(
            &self.smmu.mem,
            &mut self.smmu.alloc,
            CTX_WINDOW.base + off as u64,
            pa,
            Prot::RO,
        )
    }

    /// Drops one user of (stream, PASID). The last one clears the CD
    /// (V = 0 first; CFGI_CD + SYNC per step), then issues TLBI_NH_ASID,
    /// ATC_INV and one CMD_SYNC; the stream's last context also returns its
    /// STE to plain S2 (hitless) and unmaps and frees the CD table.
    /// Returns the users left. After a successful return with 0 users, the
    /// hardware holds nothing of the context (prq-server's drain is the
    /// next step of the unbind protocol).
    pub fn unbind(&mut self, caller: TaskId, sid: u32, pasid: u32) -> Result<u16> {
        self.unbind_marked(caller, sid, pasid, false)
    }

    /// [`Self::unbind`], telling prq-server's drain whether the device
    /// sends a stop marker for the PASID (then the drain reads until it).
    pub fn unbind_marked(
        &mut self,
        caller: TaskId,
        sid: u32,
        pasid: u32,
        uses_stop_marker: bool,
    ) -> Result<u16> {
        let si = self.stream_idx(caller, sid)?;
        let ci = self.context_idx(si, pasid).ok_or(Error::NotFound)?;
        self.unbind_idx(ci, false, Some(uses_stop_marker))
    }

    /// Drops one user of context `ci` (every user with `all`). The last
    /// one takes the context off the hardware and then drains its page
    /// requests in prq-server (`fault_unbound`): every path that removes
    /// a context comes through here — unbind, detach, the defunct-PASID
    /// drain, reclaim, a pasid-alloc restart — so none skips the drain.
    /// A failed drain is returned like a failed hardware step (unbind does
    /// not reply Drained, a defunct PASID is not reported drained).
    pub(super) fn unbind_idx(&mut self, ci: usize, all: bool, drain: Option<bool>) -> Result<u16> {
        let c = self.contexts[ci].ok_or(Error::NotFound)?;
        if !all && c.users > 1 {
            if let Some(c) = self.contexts[ci].as_mut() {
                c.users -= 1;
                return Ok(c.users);
            }
        }
        let st = *self.stream(c.stream);
        let sid = st.sid;
        trace!(Iommu::Unbind, sid, c.pasid);
        let table = st.ctx.ok_or(Error::NotFound)?;
        let di = st.attached.ok_or(Error::NotFound)?;
        let vmid = self.vmid_of(di).unwrap_or(0);
        let mut first_err = None;
        if let Some(off) = table.cd_off(&self.smmu.mem, c.pasid) {
            if let Err(e) =
                self.smmu
                    .write_cd(off, &Cd::zeroed(), &[Command::cfgi_cd(sid, c.pasid, true)])
            {
                first_err.get_or_insert(e);
            }
        }
        // The ATC is invalidated only after the TLB invalidation has
        // completed (IHI 0070 §4.5.1): TLBI, SYNC, then ATC_INV, SYNC.
        if let Err(f) = self.smmu.issue(&[Command::tlbi_nh_asid(vmid, c.ctx.asid)]) {
            first_err.get_or_insert(issue_err(f));
        }
        // ATC_INV is an illegal command on an SMMU without ATS (QEMU
        // accepts it as a no-op); there is no ATC to invalidate then.
        if self.smmu.features.ats {
            // PASID 0 is the CD the stream's transactions *without* a PASID
            // use (S1DSS = SSID0; a PASID-0 transaction is then refused
            // with F_STREAM_DISABLED), and their ATC entries carry no
            // PASID: invalidate with SSV = 0 (§4.5.1). Likewise without
            // substreams (S1CDMax = 0).
            let ssid = (table.s1cdmax > 0 && c.pasid != 0).then_some(c.pasid);
            if let Err(f) = self
                .smmu
                .issue(&[Command::atc_inv(sid, ssid, 0, 52, false)])
            {
                first_err.get_or_insert(issue_err(f));
            }
        }
        self.contexts[ci] = None;
        if self.contexts_on(c.stream) == 0 {
            // Back to plain S2, then take the table away.
            let target = self.ste_for(di);
            let r = target.and_then(|t| self.smmu.write_ste(sid, &t));
            if let Err(e) = r {
                first_err.get_or_insert(e);
                self.fail_closed(c.stream);
            }
            let mut leak = false;
            if let Some(Inner::S2 { mut pt, vmid }) = self.dom(di).map(|d| d.inner) {
                let mut cmds = [Command::zeroed(); BATCH_MAX];
                let mut n = 0;
                let mem = &self.smmu.mem;
                table.for_each_page(mem, &self.smmu.alloc, |p| {
                    for k in 0..(1usize << p.order) {
                        let ipa = CTX_WINDOW.base + (p.off + k * PAGE_SIZE) as u64;
                        pt.unmap(mem, ipa);
                        if n < BATCH_MAX - 1 {
                            cmds[n] = Command::tlbi_s2_ipa(vmid, ipa, true);
                            n += 1;
                        } else {
                            cmds[0] = Command::tlbi_s12_vmall(vmid);
                        }
                    }
                });
                if let Err(f) = self.smmu.issue(&cmds[..n]) {
                    first_err.get_or_insert(issue_err(f));
                    // The context window's stale entries may still lead to
                    // the table pages: the domain owes an invalidation, and
                    // the pages are not reused (kept allocated, lost)
                    // rather than handed out while reachable.
                    self.owe(di);
                    leak = true;
                }
            }
            if !leak {
                table.destroy(&self.smmu.mem, &mut self.smmu.alloc);
            }
            if let Some(s) = self.stream_mut(c.stream) {
                s.ctx = None;
            }
        } else if c.pasid == 0 && table.s1cdmax > 0 {
            // Transactions without PASID no longer use CD 0.
            let r = self
                .ste_with_contexts(di, &table, false)
                .and_then(|t| self.smmu.write_ste(sid, &t));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        // Only now, with the CD gone and invalidated (or the stream
        // aborting), does prq-server drain: nothing new can be raised.
        // `drain`: Some(uses_stop_marker), None only when undoing a bind
        // that failed before it was routed.
        if let Some(stop_marker) = drain {
            if let Err(e) = self.fault_unbound(c.stream, c.pasid, stop_marker) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }

    /// Drops every context bound on stream `si`; returns how many.
    pub(super) fn unbind_all(&mut self, si: usize) -> Result<u32> {
        let mut n = 0;
        for ci in 0..MAX_CONTEXTS {
            if matches!(self.contexts[ci], Some(c) if c.stream == si) {
                self.unbind_idx(ci, true, Some(false))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Users of a bound (stream, PASID), for tests and the frontend.
    pub fn bind_users(&self, caller: TaskId, sid: u32, pasid: u32) -> Result<u16> {
        let si = self.stream_idx(caller, sid)?;
        let ci = self.context_idx(si, pasid).ok_or(Error::NotFound)?;
        Ok(self.contexts[ci].map(|c| c.users).unwrap_or(0))
    }
}
