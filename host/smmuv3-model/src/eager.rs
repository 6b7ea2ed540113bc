//! Eager configuration caching (strict mode `eager_config_cache`).
//!
//! IHI 0070 §3.21.3: "An implementation is permitted to fetch or prefetch
//! any reachable structure at any time [...] and to cache any successfully
//! fetched or prefetched configuration structure, whether marked as valid
//! or not, in its entirety or partially." The lenient model fetches only
//! for transactions and caches valid entries only, so a driver that skips
//! a CFGI after making an entry valid, or after filling a CD slot that was
//! empty, passes. In eager mode the model, at seeded moments (each
//! [`crate::Smmu::step`], each transaction, each store a harness reports
//! with [`crate::Smmu::store_boundary`]):
//!
//! - prefetches STEs (through their L1STD) and CDs (through their L1CD)
//!   of the streams and substreams devices have used, and of random
//!   StreamIDs in range, caching them valid or not;
//! - drops cached entries (caches may also forget at any time);
//! - on a store into a reachable STE or CD, may re-fetch that entry then
//!   and there, so the cache can hold a half-written entry: an update that
//!   is not "break-before-make" at every 64-bit store is caught.
//!
//! Prefetches never record events: a fetch that fails (external abort,
//! stage 2 fault) is not cached (§3.21.3) and is invisible.

use crate::smmu::State;
use smmuv3::regs::{CR0, STRTAB_BASE_CFG};
use smmuv3::{Cd, S1Fmt, Ste};

impl State {
    /// One speculative action: a prefetch or an eviction.
    pub(crate) fn speculate(&mut self) {
        // No structure is reachable while SMMUEN = 0.
        if !self.cr0_has(CR0::SMMUEN) {
            return;
        }
        // Evictions are rare: holding stale entries is what exposes a
        // missing CFGI; an eviction now and then exposes a driver that
        // relies on an entry staying cached.
        match self.below(100) {
            0 => {
                if let Some(k) = self.pick(self.ste_cache.keys().copied().collect()) {
                    self.ste_cache.remove(&k);
                }
            }
            1 => {
                if let Some(k) = self.pick(self.cd_cache.keys().copied().collect()) {
                    self.cd_cache.remove(&k);
                }
                if let Some(k) = self.pick(self.l1cd_cache.keys().copied().collect()) {
                    self.l1cd_cache.remove(&k);
                }
                if let Some(k) = self.pick(self.l1std_cache.keys().copied().collect()) {
                    self.l1std_cache.remove(&k);
                }
            }
            2..=49 => {
                let sid = if self.chance(1, 4) {
                    let log2 = STRTAB_BASE_CFG::LOG2SIZE
                        .read(self.strtab_base_cfg)
                        .min(self.cfg.sidsize);
                    self.below(1u64 << log2.min(32)) as u32
                } else {
                    match self.pick(self.seen_sids.iter().copied().collect()) {
                        Some(s) => s,
                        None => return,
                    }
                };
                // Fetch-and-cache, valid or not; failures leave no trace.
                let _ = self.get_ste_quiet(sid);
            }
            _ => {
                let Some((sid, ssid)) = self.pick(self.seen_ssids.iter().copied().collect()) else {
                    if let Some(sid) = self.pick(self.seen_sids.iter().copied().collect()) {
                        self.prefetch_cd(sid, 0);
                    }
                    return;
                };
                // Neighbours in the same CD table are reachable too.
                let ssid = if self.chance(1, 3) { ssid ^ 1 } else { ssid };
                self.prefetch_cd(sid, ssid);
            }
        }
    }

    fn pick<T: Copy>(&mut self, v: Vec<T>) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            let i = self.below(v.len() as u64) as usize;
            Some(v[i])
        }
    }

    /// The STE through the cache (fetching and caching it if absent),
    /// without recording events.
    fn get_ste_quiet(&mut self, sid: u32) -> Option<Ste> {
        self.get_ste_any(sid)
    }

    /// Prefetches CD `ssid` of `sid` if a valid STE makes it reachable.
    fn prefetch_cd(&mut self, sid: u32, ssid: u32) {
        let Some(ste) = self.get_ste_quiet(sid) else {
            return;
        };
        if !self.ste_is_legal(&ste) || !ste.config().is_ok_and(|c| c.s1_enabled()) {
            return;
        }
        let max = self.s1cdmax(&ste) as u32;
        if (max == 0 && ssid != 0) || (max > 0 && ssid >> max != 0) {
            return;
        }
        let _ = self.get_cd_quiet(sid, ssid, &ste);
    }

    /// A store of the driver at `pa` completed (the harness calls this for
    /// each 64-bit store to its table memory). With eager caching, the SMMU
    /// may re-fetch the STE or CD that holds `pa` right now: if the update
    /// is half done, the half-done entry is what it caches.
    pub(crate) fn store_boundary(&mut self, pa: u64) {
        if !self.cfg.eager_config_cache || !self.cr0_has(CR0::SMMUEN) {
            return;
        }
        let sids: Vec<u32> = self.seen_sids.iter().copied().collect();
        for sid in sids {
            let Some(addr) = self.ste_addr_quiet(sid) else {
                continue;
            };
            if (addr..addr + Ste::BYTES as u64).contains(&pa) && self.chance(1, 2) {
                self.ste_cache.remove(&sid);
                let _ = self.get_ste_quiet(sid);
            }
        }
        let pairs: Vec<(u32, u32)> = self.seen_ssids.iter().copied().collect();
        let zeros: Vec<(u32, u32)> = self.seen_sids.iter().map(|s| (*s, 0)).collect();
        for (sid, ssid) in pairs.into_iter().chain(zeros) {
            let Some(ste) = self.get_ste_quiet(sid) else {
                continue;
            };
            let Some(addr) = self.cd_addr_direct(&ste, ssid) else {
                continue;
            };
            if (addr..addr + Cd::BYTES as u64).contains(&pa) && self.chance(1, 2) {
                self.cd_cache.remove(&(sid, ssid));
                self.prefetch_cd(sid, ssid);
            }
        }
    }

    /// Where CD `ssid` of a valid stage-1 STE is, when that is a PA the
    /// model can name without walking stage 2 (nested streams: `None`).
    fn cd_addr_direct(&mut self, ste: &Ste, ssid: u32) -> Option<u64> {
        if !self.ste_is_legal(ste) {
            return None;
        }
        let config = ste.config().ok()?;
        if !config.s1_enabled() || config.s2_enabled() {
            return None;
        }
        let base = ste.s1_context_ptr();
        if self.s1cdmax(ste) == 0 {
            return (ssid == 0).then_some(base);
        }
        match ste.s1fmt().ok().and_then(S1Fmt::leaf_bits) {
            None => Some(base + ssid as u64 * Cd::BYTES as u64),
            Some(leaf_bits) => {
                let l1_addr = base + (ssid as u64 >> leaf_bits) * smmuv3::L1CdDesc::BYTES as u64;
                let l1: smmuv3::L1CdDesc = self.mem.read_obj(l1_addr).ok()?;
                let idx = ssid as u64 & ((1u64 << leaf_bits) - 1);
                l1.v().then(|| l1.l2ptr() + idx * Cd::BYTES as u64)
            }
        }
    }
}
