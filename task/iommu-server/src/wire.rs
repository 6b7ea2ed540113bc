//! The iommu-server's messages: operation numbers, fixed little-endian
//! request/reply layouts, the server-side [`dispatch`] and a client.
//!
//! Interim: `idl/iommu-server.idol.ron` and the generated
//! `task/iommu-server-api` crate are the intended single source of these
//! messages. Until that crate exists this module is the one encoder, used
//! by both sides (the test tasks depend on this library for [`Client`]).
//!
//! Reply code 0 = success with the operation's payload; otherwise the code
//! is an [`Error`]. A message of the wrong size or an unknown operation is
//! a client bug: the kernel faults the client (`sys_reply_fault`).

use crate::cmdq::Waiter;
use crate::dma::DmaMemory;
use crate::error::Error;
use crate::pgtable::Prot;
use crate::server::{
    AttachResult, DomainId, GuestContext, IommuServer, NestedConfig, PageResponse, UnmapMode,
    MAX_INVALIDATION, MAX_RESPONSES,
};
use crate::update::UpdateKind;
use smmuv3::{AddrSize, Command, Event, Mmio, PriResponse, ResumeAction, S1Dss, S1Fmt, Tg0};
use userlib::TaskId;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Operation numbers. They start at [`op::BASE`], above the operations
/// of the IDL interface (`idl/iommu-server.idol.ron`, numbered from 1), so
/// one receive loop serves both.
pub mod op {
    pub const BASE: u16 = 0x100;
    pub const INFO: u16 = BASE + 1;
    pub const ALLOC_S2: u16 = BASE + 2;
    pub const ALLOC_S1: u16 = BASE + 3;
    pub const ALLOC_NESTED: u16 = BASE + 4;
    pub const DESTROY: u16 = BASE + 5;
    pub const ATTACH: u16 = BASE + 6;
    pub const DETACH: u16 = BASE + 7;
    pub const MAP: u16 = BASE + 8;
    pub const UNMAP: u16 = BASE + 9;
    pub const FLUSH: u16 = BASE + 10;
    pub const BIND: u16 = BASE + 11;
    pub const UNBIND: u16 = BASE + 12;
    pub const SET_VSID: u16 = BASE + 13;
    pub const INVALIDATE: u16 = BASE + 14;
    pub const PAGE_RESPONSE: u16 = BASE + 15;
    pub const FETCH_EVENTS: u16 = BASE + 16;
    pub const RECLAIM: u16 = BASE + 17;
    pub const BIND_USERS: u16 = BASE + 18;
}

/// Guest invalidation commands per INVALIDATE message.
pub const MAX_INV_PER_MSG: usize = 32;
/// Largest request (an invalidation batch) and reply (an event batch).
pub const MAX_REQUEST: usize = 8 + 16 * MAX_INV_PER_MSG;
/// Event records per FETCH_EVENTS reply.
pub const MAX_FETCH: usize = 16;
pub const MAX_REPLY: usize = 8 + 32 * MAX_FETCH;

macro_rules! wire {
    ($(#[$m:meta])* pub struct $n:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
        #[repr(C)]
        pub struct $n { $($(#[$fm])* pub $f: $t),* }
    };
}

wire!(
    /// ALLOC_S2, ALLOC_S1: bit 0 = fault-capable.
    pub struct AllocReq {
        pub flags: U32,
    }
);
wire!(
    /// ALLOC_NESTED.
    pub struct AllocNestedReq {
        pub parent: U32,
        pub flags: U32,
        pub cd_table_ipa: U64,
        pub s1cdmax: u8,
        /// STE.S1Fmt encoding.
        pub s1fmt: u8,
        /// STE.S1DSS encoding.
        pub s1dss: u8,
        pub pad: u8,
    }
);
wire!(
    /// DESTROY, FLUSH.
    pub struct DomainReq {
        pub domain: U32,
    }
);
wire!(
    /// ATTACH.
    pub struct AttachReq {
        pub sid: U32,
        pub domain: U32,
    }
);
wire!(
    /// DETACH.
    pub struct SidReq {
        pub sid: U32,
    }
);
wire!(
    /// ATTACH / DETACH reply.
    pub struct AttachReply {
        /// The old domain (0: none).
        pub old: U32,
        /// 0 no change, 1 hitless, 2 break-before-make.
        pub update: u8,
        /// 1: `duty_domain`'s pending faults of `duty_sid` must be answered.
        pub fault_duty: u8,
        pub pad: [u8; 2],
        pub duty_domain: U32,
        pub duty_sid: U32,
    }
);
wire!(
    /// MAP.
    pub struct MapReq {
        pub domain: U32,
        /// Bit 0 read, bit 1 write.
        pub prot: U32,
        pub iova: U64,
        pub pa: U64,
        pub pages: U32,
        pub pad: U32,
    }
);
wire!(
    /// UNMAP: mode 0 strict, 1 deferred.
    pub struct UnmapReq {
        pub domain: U32,
        pub mode: U32,
        pub iova: U64,
        pub pages: U32,
        pub pad: U32,
    }
);
wire!(
    /// BIND.
    pub struct BindReq {
        pub sid: U32,
        pub pasid: U32,
        pub ttb0: U64,
        pub mair: U64,
        pub asid: U16,
        pub t0sz: u8,
        /// CD.TG0 encoding.
        pub tg0: u8,
        /// CD.IPS encoding.
        pub ips: u8,
        /// Bit 0: record faults (CD.R).
        pub flags: u8,
        pub pad: [u8; 2],
    }
);
wire!(
    /// UNBIND, BIND_USERS.
    pub struct PasidReq {
        pub sid: U32,
        pub pasid: U32,
    }
);
wire!(
    /// SET_VSID.
    pub struct VsidReq {
        pub sid: U32,
        pub vsid: U32,
    }
);
wire!(
    /// INVALIDATE: followed by `count` commands of 16 bytes.
    pub struct InvalidateHdr {
        pub domain: U32,
        pub count: U32,
    }
);
wire!(
    /// INVALIDATE reply (always code 0): how many were done, and the error
    /// code that stopped the batch (0: none).
    pub struct InvalidateReply {
        pub done: U32,
        pub error: U32,
    }
);
wire!(
    /// PAGE_RESPONSE entry: kind 0 = PRI_RESP (tag = PRGI, code = Resp),
    /// 1 = RESUME (tag = STAG, code = Action).
    pub struct PageRespEntry {
        pub kind: u8,
        pub code: u8,
        /// Bit 0: SSID valid.
        pub ssv: u8,
        pub pad: u8,
        pub sid: U32,
        pub ssid: U32,
        pub tag: U16,
        pub pad2: U16,
    }
);
wire!(
    /// PAGE_RESPONSE header, followed by `count` entries.
    pub struct PageRespHdr {
        pub count: U32,
    }
);
wire!(
    /// FETCH_EVENTS.
    pub struct FetchReq {
        pub max: U32,
    }
);
wire!(
    /// FETCH_EVENTS reply header, followed by `count` 32-byte records.
    pub struct FetchHdr {
        pub count: U32,
        pub lost: U32,
    }
);
wire!(
    /// RECLAIM.
    pub struct ReclaimReq {
        pub vm: U32,
    }
);
wire!(
    /// A u32 result (domain ids, counts, users).
    pub struct U32Reply {
        pub value: U32,
    }
);
wire!(
    /// INFO reply.
    pub struct InfoReply {
        pub idr0: U32,
        pub idr1: U32,
        pub idr3: U32,
        pub idr5: U32,
        pub gbpa: U32,
        pub cr0: U32,
        pub strtab_cfg: U32,
        pub pages_total: U32,
        pub pages_free: U32,
        pub commands: U32,
        pub syncs: U32,
        pub cmd_recovered: U32,
        pub gerrors_seen: U32,
        pub events_read: U32,
        pub domains: U16,
        pub contexts: U16,
        pub last_refused_opcode: u8,
        pub last_refused_err: u8,
        pub pad: [u8; 2],
    }
);

/// What the receive loop does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reply code 0 with the first `n` bytes of the reply buffer.
    Reply(usize),
    /// Reply with the error's code, no payload.
    Error(Error),
    /// Fault the client: unknown operation or malformed message.
    Malformed,
}

fn put<T: IntoBytes + Immutable>(reply: &mut [u8], v: &T) -> Outcome {
    let b = v.as_bytes();
    match reply.get_mut(..b.len()) {
        Some(dst) => {
            dst.copy_from_slice(b);
            Outcome::Reply(b.len())
        }
        None => Outcome::Malformed,
    }
}

fn get<T: FromBytes>(msg: &[u8]) -> Option<T> {
    T::read_from_bytes(msg).ok()
}

fn attach_reply(r: &AttachResult) -> AttachReply {
    AttachReply {
        old: r.old.map(|d| d.0).unwrap_or(0).into(),
        update: match r.update {
            UpdateKind::NoChange => 0,
            UpdateKind::Hitless => 1,
            UpdateKind::Breaking => 2,
        },
        fault_duty: r.fault_duty.is_some() as u8,
        pad: [0; 2],
        duty_domain: r.fault_duty.map(|d| d.domain.0).unwrap_or(0).into(),
        duty_sid: r.fault_duty.map(|d| d.sid).unwrap_or(0).into(),
    }
}

fn nested_cfg(r: &AllocNestedReq) -> Option<NestedConfig> {
    Some(NestedConfig {
        cd_table_ipa: r.cd_table_ipa.get(),
        s1cdmax: r.s1cdmax,
        s1fmt: S1Fmt::from_raw(r.s1fmt as u64).ok()?,
        s1dss: S1Dss::from_raw(r.s1dss as u64).ok()?,
    })
}

fn guest_ctx(r: &BindReq) -> Option<GuestContext> {
    Some(GuestContext {
        ttb0: r.ttb0.get(),
        mair: r.mair.get(),
        asid: r.asid.get(),
        t0sz: r.t0sz,
        tg0: Tg0::from_raw(r.tg0 as u64).ok()?,
        ips: AddrSize::from_raw(r.ips as u64).ok()?,
        record_faults: r.flags & 1 != 0,
    })
}

fn page_response(e: &PageRespEntry) -> Option<PageResponse> {
    Some(match e.kind {
        0 => PageResponse::Pri {
            sid: e.sid.get(),
            ssid: (e.ssv & 1 != 0).then(|| e.ssid.get()),
            prgi: e.tag.get(),
            resp: PriResponse::from_raw(e.code as u64).ok()?,
        },
        1 => PageResponse::Resume {
            sid: e.sid.get(),
            stag: e.tag.get(),
            action: ResumeAction::from_raw(e.code as u64).ok()?,
        },
        _ => return None,
    })
}

/// Decodes and serves one request from `sender`.
pub fn dispatch<M: Mmio, D: DmaMemory, W: Waiter>(
    s: &mut IommuServer<M, D, W>,
    sender: TaskId,
    operation: u16,
    msg: &[u8],
    reply: &mut [u8],
) -> Outcome {
    macro_rules! req {
        ($t:ty) => {
            match get::<$t>(msg) {
                Some(r) => r,
                None => return Outcome::Malformed,
            }
        };
    }
    macro_rules! answer {
        ($e:expr, |$v:ident| $ok:expr) => {
            match $e {
                Ok($v) => put(reply, &$ok),
                Err(e) => Outcome::Error(e),
            }
        };
    }
    let id = |v: U32| DomainId(v.get());
    match operation {
        op::INFO => {
            if !msg.is_empty() {
                return Outcome::Malformed;
            }
            let i = s.info();
            put(
                reply,
                &InfoReply {
                    idr0: i.idr0.into(),
                    idr1: i.idr1.into(),
                    idr3: i.idr3.into(),
                    idr5: i.idr5.into(),
                    gbpa: i.gbpa.into(),
                    cr0: i.cr0.into(),
                    strtab_cfg: i.strtab_cfg.into(),
                    pages_total: i.pages_total.into(),
                    pages_free: i.pages_free.into(),
                    commands: i.commands.into(),
                    syncs: i.syncs.into(),
                    cmd_recovered: i.cmd_recovered.into(),
                    gerrors_seen: i.gerrors_seen.into(),
                    events_read: i.events_read.into(),
                    domains: i.domains.into(),
                    contexts: i.contexts.into(),
                    last_refused_opcode: i.last_refused_opcode,
                    last_refused_err: i.last_refused_err,
                    pad: [0; 2],
                },
            )
        }
        op::ALLOC_S2 | op::ALLOC_S1 => {
            let r = req!(AllocReq);
            let fault = r.flags.get() & 1 != 0;
            let d = if operation == op::ALLOC_S2 {
                s.alloc_s2_domain(sender, fault)
            } else {
                s.alloc_s1_domain(sender, fault)
            };
            answer!(d, |d| U32Reply { value: d.0.into() })
        }
        op::ALLOC_NESTED => {
            let r = req!(AllocNestedReq);
            let Some(cfg) = nested_cfg(&r) else {
                return Outcome::Error(Error::Invalid);
            };
            answer!(
                s.alloc_nested_domain(sender, id(r.parent), cfg, r.flags.get() & 1 != 0),
                |d| U32Reply { value: d.0.into() }
            )
        }
        op::DESTROY => {
            let r = req!(DomainReq);
            answer!(s.destroy_domain(sender, id(r.domain)), |_v| {
                U32Reply::default()
            })
        }
        op::FLUSH => {
            let r = req!(DomainReq);
            answer!(s.flush(sender, id(r.domain)), |_v| U32Reply::default())
        }
        op::ATTACH => {
            let r = req!(AttachReq);
            answer!(s.attach(sender, r.sid.get(), id(r.domain)), |a| {
                attach_reply(&a)
            })
        }
        op::DETACH => {
            let r = req!(SidReq);
            answer!(s.detach(sender, r.sid.get()), |a| attach_reply(&a))
        }
        op::MAP => {
            let r = req!(MapReq);
            let Some(prot) = Prot::from_bits(r.prot.get()) else {
                return Outcome::Error(Error::Invalid);
            };
            answer!(
                s.map(
                    sender,
                    id(r.domain),
                    r.iova.get(),
                    r.pa.get(),
                    r.pages.get(),
                    prot
                ),
                |_v| U32Reply::default()
            )
        }
        op::UNMAP => {
            let r = req!(UnmapReq);
            let mode = match r.mode.get() {
                0 => UnmapMode::Strict,
                1 => UnmapMode::Deferred,
                _ => return Outcome::Error(Error::Invalid),
            };
            answer!(
                s.unmap(sender, id(r.domain), r.iova.get(), r.pages.get(), mode),
                |n| U32Reply { value: n.into() }
            )
        }
        op::BIND => {
            let r = req!(BindReq);
            let Some(ctx) = guest_ctx(&r) else {
                return Outcome::Error(Error::Invalid);
            };
            // PASIDs other than 0 are pasid-alloc's to hand out: this
            // message cannot prove the caller holds one (the IDL `bind`
            // carries a PasidHandle the server checks with pasid-alloc).
            // PASID 0, the stream's own context, is the stream owner's.
            if r.pasid.get() != 0 && s.features().ssid_bits > 0 {
                return Outcome::Error(Error::NotPermitted);
            }
            answer!(s.bind(sender, r.sid.get(), r.pasid.get(), ctx), |u| {
                U32Reply {
                    value: (u as u32).into(),
                }
            })
        }
        op::UNBIND => {
            let r = req!(PasidReq);
            answer!(s.unbind(sender, r.sid.get(), r.pasid.get()), |u| U32Reply {
                value: (u as u32).into()
            })
        }
        op::BIND_USERS => {
            let r = req!(PasidReq);
            answer!(s.bind_users(sender, r.sid.get(), r.pasid.get()), |u| {
                U32Reply {
                    value: (u as u32).into(),
                }
            })
        }
        op::SET_VSID => {
            let r = req!(VsidReq);
            answer!(s.set_vsid(sender, r.sid.get(), r.vsid.get()), |_v| {
                U32Reply::default()
            })
        }
        op::INVALIDATE => {
            let (Some(h), Some(rest)) = (msg.get(..8).and_then(get::<InvalidateHdr>), msg.get(8..))
            else {
                return Outcome::Malformed;
            };
            let count = h.count.get() as usize;
            if count > MAX_INV_PER_MSG || rest.len() != count * 16 {
                return Outcome::Malformed;
            }
            let mut cmds = [Command::zeroed(); MAX_INVALIDATION];
            for (i, c) in rest.chunks_exact(16).enumerate() {
                let w = |k: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&c[k * 8..k * 8 + 8]);
                    u64::from_le_bytes(b)
                };
                cmds[i] = Command::from_words([w(0), w(1)]);
            }
            let (done, r) = s.invalidate(sender, id(h.domain), &cmds[..count]);
            put(
                reply,
                &InvalidateReply {
                    done: done.into(),
                    error: r.err().map(|e| e.code()).unwrap_or(0).into(),
                },
            )
        }
        op::PAGE_RESPONSE => {
            let (Some(h), Some(rest)) = (msg.get(..4).and_then(get::<PageRespHdr>), msg.get(4..))
            else {
                return Outcome::Malformed;
            };
            let count = h.count.get() as usize;
            if count > MAX_RESPONSES || rest.len() != count * 16 {
                return Outcome::Malformed;
            }
            let mut out = [PageResponse::Resume {
                sid: 0,
                stag: 0,
                action: ResumeAction::Term,
            }; MAX_RESPONSES];
            for (i, c) in rest.chunks_exact(16).enumerate() {
                match get::<PageRespEntry>(c).as_ref().and_then(page_response) {
                    Some(p) => out[i] = p,
                    None => return Outcome::Error(Error::Invalid),
                }
            }
            answer!(s.page_response(sender, &out[..count]), |n| U32Reply {
                value: n.into()
            })
        }
        op::FETCH_EVENTS => {
            let r = req!(FetchReq);
            let max = (r.max.get() as usize).min(MAX_FETCH);
            let mut ev = [Event::zeroed(); MAX_FETCH];
            let (n, lost) = s.fetch_events(sender, &mut ev[..max]);
            let hdr = FetchHdr {
                count: (n as u32).into(),
                lost: lost.into(),
            };
            let total = 8 + 32 * n;
            if reply.len() < total {
                return Outcome::Malformed;
            }
            reply[..8].copy_from_slice(hdr.as_bytes());
            for (i, e) in ev[..n].iter().enumerate() {
                reply[8 + 32 * i..8 + 32 * (i + 1)].copy_from_slice(e.as_bytes());
            }
            Outcome::Reply(total)
        }
        op::RECLAIM => {
            let r = req!(ReclaimReq);
            let Ok(vm) = u16::try_from(r.vm.get()) else {
                return Outcome::Error(Error::Invalid);
            };
            answer!(s.reclaim(sender, vm), |n| U32Reply {
                value: (n.streams + n.binds + n.domains).into()
            })
        }
        _ => Outcome::Malformed,
    }
}

/// A client of the iommu-server (interim, see the module comment).
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub server: TaskId,
}

/// Flags of ALLOC_*.
pub const FAULT_CAPABLE: u32 = 1;

impl Client {
    pub fn new(server: TaskId) -> Self {
        Self { server }
    }

    fn call(&self, op: u16, msg: &[u8], reply: &mut [u8]) -> Result<usize, Error> {
        let (code, n) = userlib::sys_send(self.server, op, msg, reply, &[]);
        match code {
            0 => Ok(n),
            c => Err(Error::from_code(c).unwrap_or(Error::HardwareError)),
        }
    }

    fn call_t<R: FromBytes + IntoBytes + Default>(&self, op: u16, msg: &[u8]) -> Result<R, Error> {
        let mut r = R::default();
        let n = self.call(op, msg, r.as_mut_bytes())?;
        if n != core::mem::size_of::<R>() {
            return Err(Error::HardwareError);
        }
        Ok(r)
    }

    pub fn info(&self) -> Result<InfoReply, Error> {
        self.call_t(op::INFO, &[])
    }

    pub fn alloc_s2(&self, flags: u32) -> Result<DomainId, Error> {
        let r: U32Reply = self.call_t(
            op::ALLOC_S2,
            AllocReq {
                flags: flags.into(),
            }
            .as_bytes(),
        )?;
        Ok(DomainId(r.value.get()))
    }

    pub fn alloc_s1(&self, flags: u32) -> Result<DomainId, Error> {
        let r: U32Reply = self.call_t(
            op::ALLOC_S1,
            AllocReq {
                flags: flags.into(),
            }
            .as_bytes(),
        )?;
        Ok(DomainId(r.value.get()))
    }

    pub fn alloc_nested(
        &self,
        parent: DomainId,
        cfg: NestedConfig,
        flags: u32,
    ) -> Result<DomainId, Error> {
        let m = AllocNestedReq {
            parent: parent.0.into(),
            flags: flags.into(),
            cd_table_ipa: cfg.cd_table_ipa.into(),
            s1cdmax: cfg.s1cdmax,
            s1fmt: cfg.s1fmt.raw() as u8,
            s1dss: cfg.s1dss.raw() as u8,
            pad: 0,
        };
        let r: U32Reply = self.call_t(op::ALLOC_NESTED, m.as_bytes())?;
        Ok(DomainId(r.value.get()))
    }

    pub fn destroy(&self, d: DomainId) -> Result<(), Error> {
        self.call_t::<U32Reply>(op::DESTROY, DomainReq { domain: d.0.into() }.as_bytes())
            .map(|_| ())
    }

    pub fn flush(&self, d: DomainId) -> Result<(), Error> {
        self.call_t::<U32Reply>(op::FLUSH, DomainReq { domain: d.0.into() }.as_bytes())
            .map(|_| ())
    }

    pub fn attach(&self, sid: u32, d: DomainId) -> Result<AttachReply, Error> {
        self.call_t(
            op::ATTACH,
            AttachReq {
                sid: sid.into(),
                domain: d.0.into(),
            }
            .as_bytes(),
        )
    }

    pub fn detach(&self, sid: u32) -> Result<AttachReply, Error> {
        self.call_t(op::DETACH, SidReq { sid: sid.into() }.as_bytes())
    }

    pub fn map(
        &self,
        d: DomainId,
        iova: u64,
        pa: u64,
        pages: u32,
        prot: Prot,
    ) -> Result<(), Error> {
        let m = MapReq {
            domain: d.0.into(),
            prot: prot.bits().into(),
            iova: iova.into(),
            pa: pa.into(),
            pages: pages.into(),
            pad: 0.into(),
        };
        self.call_t::<U32Reply>(op::MAP, m.as_bytes()).map(|_| ())
    }

    pub fn unmap(&self, d: DomainId, iova: u64, pages: u32, mode: UnmapMode) -> Result<u32, Error> {
        let m = UnmapReq {
            domain: d.0.into(),
            mode: if mode == UnmapMode::Deferred { 1u32 } else { 0 }.into(),
            iova: iova.into(),
            pages: pages.into(),
            pad: 0.into(),
        };
        Ok(self
            .call_t::<U32Reply>(op::UNMAP, m.as_bytes())?
            .value
            .get())
    }

    pub fn bind(&self, sid: u32, pasid: u32, c: &GuestContext) -> Result<u32, Error> {
        let m = BindReq {
            sid: sid.into(),
            pasid: pasid.into(),
            ttb0: c.ttb0.into(),
            mair: c.mair.into(),
            asid: c.asid.into(),
            t0sz: c.t0sz,
            tg0: c.tg0.raw() as u8,
            ips: c.ips.raw() as u8,
            flags: c.record_faults as u8,
            pad: [0; 2],
        };
        Ok(self.call_t::<U32Reply>(op::BIND, m.as_bytes())?.value.get())
    }

    pub fn unbind(&self, sid: u32, pasid: u32) -> Result<u32, Error> {
        let m = PasidReq {
            sid: sid.into(),
            pasid: pasid.into(),
        };
        Ok(self
            .call_t::<U32Reply>(op::UNBIND, m.as_bytes())?
            .value
            .get())
    }

    pub fn bind_users(&self, sid: u32, pasid: u32) -> Result<u32, Error> {
        let m = PasidReq {
            sid: sid.into(),
            pasid: pasid.into(),
        };
        Ok(self
            .call_t::<U32Reply>(op::BIND_USERS, m.as_bytes())?
            .value
            .get())
    }

    pub fn set_vsid(&self, sid: u32, vsid: u32) -> Result<(), Error> {
        let m = VsidReq {
            sid: sid.into(),
            vsid: vsid.into(),
        };
        self.call_t::<U32Reply>(op::SET_VSID, m.as_bytes())
            .map(|_| ())
    }

    /// Returns (commands done, error that stopped the batch).
    pub fn invalidate(
        &self,
        viommu: DomainId,
        cmds: &[Command],
    ) -> Result<(u32, Option<Error>), Error> {
        if cmds.len() > MAX_INV_PER_MSG {
            return Err(Error::Invalid);
        }
        let mut m = [0u8; MAX_REQUEST];
        let h = InvalidateHdr {
            domain: viommu.0.into(),
            count: (cmds.len() as u32).into(),
        };
        m[..8].copy_from_slice(h.as_bytes());
        for (i, c) in cmds.iter().enumerate() {
            m[8 + 16 * i..8 + 16 * (i + 1)].copy_from_slice(c.as_bytes());
        }
        let r: InvalidateReply = self.call_t(op::INVALIDATE, &m[..8 + 16 * cmds.len()])?;
        Ok((r.done.get(), Error::from_code(r.error.get())))
    }

    /// Fetches up to `out.len()` (≤ [`MAX_FETCH`]) event records of the
    /// caller's streams; returns (count, lost).
    pub fn fetch_events(&self, out: &mut [Event]) -> Result<(usize, u32), Error> {
        let max = out.len().min(MAX_FETCH);
        let mut r = [0u8; MAX_REPLY];
        let n = self.call(
            op::FETCH_EVENTS,
            FetchReq {
                max: (max as u32).into(),
            }
            .as_bytes(),
            &mut r,
        )?;
        let h =
            get::<FetchHdr>(r.get(..8).ok_or(Error::HardwareError)?).ok_or(Error::HardwareError)?;
        let count = (h.count.get() as usize).min(max);
        if n < 8 + 32 * count {
            return Err(Error::HardwareError);
        }
        for (i, o) in out.iter_mut().take(count).enumerate() {
            *o = Event::read_from_bytes(&r[8 + 32 * i..8 + 32 * (i + 1)])
                .map_err(|_| Error::HardwareError)?;
        }
        Ok((count, h.lost.get()))
    }

    pub fn page_response(&self, resps: &[PageRespEntry]) -> Result<u32, Error> {
        if resps.len() > MAX_RESPONSES {
            return Err(Error::Invalid);
        }
        let mut m = [0u8; 4 + 16 * MAX_RESPONSES];
        m[..4].copy_from_slice(
            PageRespHdr {
                count: (resps.len() as u32).into(),
            }
            .as_bytes(),
        );
        for (i, e) in resps.iter().enumerate() {
            m[4 + 16 * i..4 + 16 * (i + 1)].copy_from_slice(e.as_bytes());
        }
        Ok(self
            .call_t::<U32Reply>(op::PAGE_RESPONSE, &m[..4 + 16 * resps.len()])?
            .value
            .get())
    }

    pub fn reclaim(&self, vm: u16) -> Result<u32, Error> {
        Ok(self
            .call_t::<U32Reply>(
                op::RECLAIM,
                ReclaimReq {
                    vm: (vm as u32).into(),
                }
                .as_bytes(),
            )?
            .value
            .get())
    }
}

// Layout checks: these sizes are the protocol.
const _: () = {
    assert!(core::mem::size_of::<AllocNestedReq>() == 20);
    assert!(core::mem::size_of::<AttachReply>() == 16);
    assert!(core::mem::size_of::<MapReq>() == 32);
    assert!(core::mem::size_of::<BindReq>() == 32);
    assert!(core::mem::size_of::<PageRespEntry>() == 16);
    assert!(core::mem::size_of::<InfoReply>() == 64);
    assert!(MAX_REQUEST <= userlib::abi::MAX_MESSAGE);
    assert!(MAX_REPLY <= userlib::abi::MAX_MESSAGE);
};
