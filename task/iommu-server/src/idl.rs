//! The generated interface (`idl/iommu-server.idol.ron`, crate
//! `iommu-server-api`) served by [`IommuServer`]: [`IdlServer`] implements
//! the generated `IommuServer` trait, and the receive loop hands every
//! message numbered below [`crate::wire::op::BASE`] (and every
//! notification) to the generated `dispatch`.
//!
//! What the interface has and the server maps:
//! - `attach` refuses an attached stream (Busy, use `replace`); `replace`
//!   is the server's one-STE-update replace;
//! - `bind` takes a `PasidHandle`: PASID 0 (the stream's own context) is
//!   the stream owner's; any other PASID is checked with pasid-alloc's
//!   `owner_of` (owner and generation) — without a pasid-alloc task slot
//!   the bind is refused (NotPermitted, fail closed);
//! - `CdConfig.tcr` is TCR_EL1-style; T0SZ, TG0, IPS are used, IRGN0 /
//!   ORGN0 / SH0 must be write-back inner-shareable (the server's walk
//!   attributes), EPD0 must be 0, EPD1 must be 1, any other bit refuses;
//! - errors without an interface equivalent: `Reserved` (EADDRINUSE, the
//!   MSI window) becomes `Invalid`, `HardwareError` (EIO) `TimedOut`.
//!
//! What the interface does not reach yet (prq-server does not exist):
//! the drain of `unbind`, the fault routing of `bind(fault_capable)` and
//! the INVALID answers owed after `replace` of a fault-capable domain
//! (the server's `AttachResult::fault_duty`).

use crate::cmdq::Waiter;
use crate::dma::DmaMemory;
use crate::error::Error;
use crate::pages::PAGE_SIZE;
use crate::pgtable::Prot;
use crate::server::{
    DomainId, GuestContext, IommuServer, UnmapMode, MAX_INVALIDATION, MAX_MAP_PAGES,
};
use iommu_server_api as api;
use pasid_alloc_api::{PasidAllocClient, PasidHandle, PasidOwner};
use smmuv3::{AddrSize, Command, Mmio, Tg0};
use userlib::TaskId;

/// The interface's view of a server error.
pub fn api_error(e: Error) -> api::IommuError {
    match e {
        Error::NotFound => api::IommuError::NotFound,
        Error::NotPermitted => api::IommuError::NotPermitted,
        Error::Invalid | Error::Reserved => api::IommuError::Invalid,
        Error::Busy => api::IommuError::Busy,
        Error::NoSpace => api::IommuError::NoSpace,
        Error::Unsupported => api::IommuError::Unsupported,
        Error::AlreadyExists => api::IommuError::AlreadyExists,
        Error::Timeout | Error::HardwareError => api::IommuError::TimedOut,
    }
}

/// TCR_EL1 fields `CdConfig.tcr` may carry.
pub mod tcr {
    pub const T0SZ_MASK: u64 = 0x3f;
    pub const EPD0: u64 = 1 << 7;
    pub const IRGN0_SHIFT: u32 = 8;
    pub const ORGN0_SHIFT: u32 = 10;
    pub const SH0_SHIFT: u32 = 12;
    pub const TG0_SHIFT: u32 = 14;
    pub const EPD1: u64 = 1 << 23;
    pub const IPS_SHIFT: u32 = 32;
    /// Every bit a CdConfig.tcr may set.
    pub const ALLOWED: u64 = T0SZ_MASK
        | EPD0
        | 3 << IRGN0_SHIFT
        | 3 << ORGN0_SHIFT
        | 3 << SH0_SHIFT
        | 3 << TG0_SHIFT
        | EPD1
        | 7 << IPS_SHIFT;

    /// The TCR of a 4 KiB-granule, write-back inner-shareable context of
    /// `64 - t0sz` VA bits and an `ips` (encoding) IPA size.
    pub const fn value(t0sz: u8, ips: u8) -> u64 {
        (t0sz as u64 & T0SZ_MASK)
            | 1 << IRGN0_SHIFT
            | 1 << ORGN0_SHIFT
            | 3 << SH0_SHIFT
            | EPD1
            | (ips as u64 & 7) << IPS_SHIFT
    }
}

/// A guest context from the interface's CdConfig.
pub fn guest_context(cd: &api::CdConfig, record_faults: bool) -> Result<GuestContext, Error> {
    let t = cd.tcr;
    if t & !tcr::ALLOWED != 0 || t & tcr::EPD0 != 0 || t & tcr::EPD1 == 0 {
        return Err(Error::Invalid);
    }
    let field = |shift: u32| (t >> shift) & 3;
    if field(tcr::IRGN0_SHIFT) != 1 || field(tcr::ORGN0_SHIFT) != 1 || field(tcr::SH0_SHIFT) != 3 {
        return Err(Error::Invalid);
    }
    Ok(GuestContext {
        ttb0: cd.ttb0,
        mair: cd.mair,
        asid: cd.asid,
        t0sz: (t & tcr::T0SZ_MASK) as u8,
        tg0: Tg0::from_raw(field(tcr::TG0_SHIFT)).map_err(|_| Error::Invalid)?,
        ips: AddrSize::from_raw((t >> tcr::IPS_SHIFT) & 7).map_err(|_| Error::Invalid)?,
        record_faults,
    })
}

/// The generated trait on a borrowed server (the server itself stays
/// where `main` built it).
pub struct IdlServer<'a, M: Mmio, D: DmaMemory, W: Waiter> {
    pub server: &'a mut IommuServer<M, D, W>,
    /// Interrupt notification bits this task owns (GERROR, event queue):
    /// serviced and re-enabled in `handle_notification`.
    pub irq_bits: u32,
}

impl<M: Mmio, D: DmaMemory, W: Waiter> IdlServer<'_, M, D, W> {
    /// Checks that `caller` holds `pasid` in its generation (pasid-alloc).
    fn check_pasid(&self, caller: TaskId, pasid: PasidHandle) -> Result<(), Error> {
        if pasid.pasid.0 == 0 {
            return Ok(());
        }
        let Some(alloc) = userlib::sys_lookup_slot("pasid-alloc") else {
            return Err(Error::NotPermitted);
        };
        match PasidAllocClient::new(alloc).owner_of(pasid.pasid) {
            Ok(PasidOwner::Allocated { owner, generation })
                if owner == caller && generation == pasid.generation =>
            {
                Ok(())
            }
            Ok(_) => Err(Error::NotPermitted),
            Err(_) => Err(Error::NotPermitted),
        }
    }
}

fn pages_of(len: u64) -> Result<u32, api::IommuError> {
    if len == 0
        || !len.is_multiple_of(PAGE_SIZE as u64)
        || len / PAGE_SIZE as u64 > MAX_MAP_PAGES as u64
    {
        return Err(api::IommuError::Invalid);
    }
    Ok((len / PAGE_SIZE as u64) as u32)
}

impl<M: Mmio, D: DmaMemory, W: Waiter> api::IommuServer for IdlServer<'_, M, D, W> {
    fn notification_mask(&self) -> u32 {
        self.irq_bits
    }

    fn handle_notification(&mut self, bits: u32) {
        let g = self.server.service_interrupts();
        if g != 0 {
            userlib::log!("iommu-server: GERROR {:#x} reported and acknowledged", g);
        }
        userlib::sys_irq_control(bits & self.irq_bits, true);
    }

    fn check_caller(&mut self, caller: TaskId, allowed: &'static [api::IommuCaller]) -> bool {
        allowed.iter().any(|a| match a {
            // A VM is a task the static map assigns streams to.
            api::IommuCaller::VmmFrontend => self.server.is_vm(caller),
            api::IommuCaller::Supervisor => self.server.is_supervisor(caller),
        })
    }

    fn hw_info(&mut self, _caller: TaskId) -> Result<api::IommuCaps, api::IommuError> {
        let f = self.server.features();
        Ok(api::IommuCaps {
            ssid_bits: self.server.pasid_bits() as u8,
            pri: f.pri,
            stall: f.stall,
            ats: f.ats,
            nesting: f.nested(),
            max_batch: MAX_INVALIDATION as u16,
        })
    }

    fn create_s2_domain(
        &mut self,
        caller: TaskId,
        fault_capable: bool,
    ) -> Result<api::DomainId, api::IommuError> {
        self.server
            .alloc_s2_domain(caller, fault_capable)
            .map(|d| api::DomainId(d.0))
            .map_err(api_error)
    }

    fn destroy_domain(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
    ) -> Result<(), api::IommuError> {
        self.server
            .destroy_domain(caller, DomainId(domain.0))
            .map_err(api_error)
    }

    fn map(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        pa: u64,
        len: u64,
        perms: api::MapPerms,
    ) -> Result<(), api::IommuError> {
        let pages = pages_of(len)?;
        let prot = Prot::from_bits(perms.bits() as u32).ok_or(api::IommuError::Invalid)?;
        self.server
            .map(caller, DomainId(domain.0), iova, pa, pages, prot)
            .map_err(api_error)
    }

    fn unmap(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        len: u64,
    ) -> Result<u64, api::IommuError> {
        let pages = pages_of(len)?;
        self.server
            .unmap(caller, DomainId(domain.0), iova, pages, UnmapMode::Strict)
            .map(|n| n as u64 * PAGE_SIZE as u64)
            .map_err(api_error)
    }

    fn attach(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        domain: api::DomainId,
    ) -> Result<(), api::IommuError> {
        if self
            .server
            .attached(caller, sid.0)
            .map_err(api_error)?
            .is_some()
        {
            return Err(api::IommuError::Busy);
        }
        self.server
            .attach(caller, sid.0, DomainId(domain.0))
            .map(|_| ())
            .map_err(api_error)
    }

    fn replace(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        domain: api::DomainId,
    ) -> Result<(), api::IommuError> {
        if self
            .server
            .attached(caller, sid.0)
            .map_err(api_error)?
            .is_none()
        {
            return Err(api::IommuError::NotFound);
        }
        let r = self
            .server
            .attach(caller, sid.0, DomainId(domain.0))
            .map_err(api_error)?;
        if let Some(duty) = r.fault_duty {
            // prq-server would answer the old domain's pending groups of
            // this stream INVALID here; it does not exist yet.
            userlib::log!(
                "iommu-server: replace of fault-capable domain {:#x} on stream {:#x}: its pending faults are owed INVALID",
                duty.domain.0,
                duty.sid
            );
        }
        Ok(())
    }

    fn detach(&mut self, caller: TaskId, sid: api::StreamId) -> Result<(), api::IommuError> {
        self.server
            .detach(caller, sid.0)
            .map(|_| ())
            .map_err(api_error)
    }

    fn bind(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: PasidHandle,
        cd: api::CdConfig,
        fault_capable: bool,
    ) -> Result<u32, api::IommuError> {
        // The stream check comes first (a foreign stream is NotPermitted
        // whatever the PASID), then the PASID's owner.
        self.server.attached(caller, sid.0).map_err(api_error)?;
        let ctx = guest_context(&cd, fault_capable).map_err(api_error)?;
        self.check_pasid(caller, pasid).map_err(api_error)?;
        self.server
            .bind(caller, sid.0, pasid.pasid.0, ctx)
            .map(|u| u as u32)
            .map_err(api_error)
    }

    fn unbind(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: pasid_alloc_api::Pasid,
        _uses_stop_marker: bool,
    ) -> Result<api::UnbindOutcome, api::IommuError> {
        match self.server.unbind(caller, sid.0, pasid.0) {
            Ok(0) => Ok(api::UnbindOutcome::Drained),
            Ok(_) => Ok(api::UnbindOutcome::StillBound),
            Err(Error::NotFound) => Ok(api::UnbindOutcome::NotBound),
            Err(e) => Err(api_error(e)),
        }
    }

    fn invalidate(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        cmds: idl_runtime::Leased<idl_runtime::Read, api::SmmuCmd>,
    ) -> Result<api::InvalidateOutcome, api::IommuError> {
        // The vIOMMU (S2 domain) itself: a bad one refuses the whole call.
        self.server
            .check_viommu(caller, DomainId(domain.0))
            .map_err(api_error)?;
        let mut out = [Command::zeroed(); MAX_INVALIDATION];
        let n = cmds.len().min(MAX_INVALIDATION);
        for (i, c) in out.iter_mut().take(n).enumerate() {
            let w = cmds.read(i).map_err(|_| api::IommuError::Invalid)?;
            *c = Command::from_words(w.words);
        }
        let (done, r) = self
            .server
            .invalidate(caller, DomainId(domain.0), &out[..n]);
        let status = match r {
            Ok(()) => api::InvalidateStatus::Complete,
            Err(Error::Timeout) => return Err(api::IommuError::TimedOut),
            Err(Error::HardwareError) => match self.server.last_command_fault() {
                Some(f) if f.err == smmuv3::CmdqError::AtcInvSync => {
                    api::InvalidateStatus::AtcTimeout
                }
                _ => api::InvalidateStatus::CommandError,
            },
            Err(_) => api::InvalidateStatus::Rejected,
        };
        Ok(api::InvalidateOutcome { done, status })
    }

    fn owner_died(
        &mut self,
        caller: TaskId,
        vm: TaskId,
    ) -> Result<api::ReclaimCounts, api::IommuError> {
        let idx = u16::try_from(vm.index()).map_err(|_| api::IommuError::Invalid)?;
        self.server
            .reclaim(caller, idx)
            .map(|r| api::ReclaimCounts {
                streams: r.streams,
                binds: r.binds,
                domains: r.domains,
            })
            .map_err(api_error)
    }
}
