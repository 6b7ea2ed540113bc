//! Trace decoding: requests, replies, commands and bus events as text.

use super::*;
use crate::trace::{Decoder, LeaseSummary};
use idl_runtime::{decode_fixed_reply, decode_postcard_reply, Fixed, IdlError};
use iommu_server_api::{self as api, IommuError, IommuOp};
use pasid_alloc_api::{PasidAllocError, PasidAllocOp, PasidHandle, PasidOwner, PasidUsage};
use smmuv3::{CommandKind, Ste, SyncCs};
use smmuv3_model::{CmdOutcome, DmaError, LoggedCommand};
use std::fmt::{Debug, Write as _};
use userlib::LeaseInfo;

/// `Debug` text made short for traces: numbers of 10 and more in hex,
/// newtypes of one number unwrapped (`DomainId(0x101)` → `0x101`).
pub fn compact(debug: &str) -> String {
    let hexed = hexify(debug);
    unwrap_newtypes(&hexed)
}

fn hexify(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let starts_number = b[i].is_ascii_digit()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'));
        if starts_number {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let ident_follows = j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'_');
            match s[i..j].parse::<u64>() {
                Ok(v) if v >= 10 && !ident_follows => {
                    let _ = write!(out, "{v:#x}");
                }
                _ => out.push_str(&s[i..j]),
            }
            i = j;
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn unwrap_newtypes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('(') {
        let head = &rest[..open];
        let name_start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |k| k + 1);
        let name = &head[name_start..];
        let after = &rest[open + 1..];
        let inner_end = after.find(')');
        let simple = inner_end.filter(|&e| {
            let inner = &after[..e];
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == 'x')
                && inner.starts_with(|c: char| c.is_ascii_digit())
        });
        match simple {
            Some(e)
                if name.starts_with(|c: char| c.is_ascii_uppercase())
                    && !["Ok", "Err", "Some"].contains(&name) =>
            {
                out.push_str(&head[..name_start]);
                out.push_str(&after[..e]);
                rest = &after[e + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The first top-level item of `Variant(A, B)` / `Name { .. }` text, with
/// the wrapper names dropped: `Map(MapArgs { domain: .. })` → `domain: ..`.
pub(crate) fn args_of(debug: &str) -> String {
    let inner = match (debug.find('('), debug.strip_suffix(')')) {
        (Some(open), Some(body)) if open < body.len() => &body[open + 1..],
        _ => "",
    };
    // First top-level item.
    let mut depth = 0i32;
    let mut end = inner.len();
    for (k, c) in inner.char_indices() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                end = k;
                break;
            }
            _ => {}
        }
    }
    let first = inner[..end].trim();
    match (first.find(" { "), first.strip_suffix(" }")) {
        (Some(open), Some(body)) if open < body.len() => body[open + 3..].to_string(),
        _ if first.chars().all(|c| c.is_ascii_alphanumeric()) => String::new(),
        _ => first.to_string(),
    }
}

pub(crate) fn lease_infos(leases: &[LeaseSummary]) -> Vec<LeaseInfo> {
    leases
        .iter()
        .map(|l| LeaseInfo {
            attributes: l.attributes,
            len: l.len as usize,
        })
        .collect()
}

pub(crate) fn fixed_reply<T: Fixed + Debug, E: IdlError + Debug>(
    code: u32,
    bytes: &[u8],
) -> String {
    compact(&reply_text(decode_fixed_reply::<T, E>(code, bytes)))
}

/// `Ok`, `Ok(value)`, `Ok(field: .., field: ..)` for a struct, `Err(E)`.
fn reply_text<T: Debug, E: Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => {
            let t = format!("{v:?}");
            if t == "()" {
                return "Ok".to_string();
            }
            match (t.find(" { "), t.strip_suffix(" }")) {
                (Some(open), Some(body))
                    if open < body.len() && t[..open].chars().all(|c| c.is_alphanumeric()) =>
                {
                    format!("Ok({})", &body[open + 3..])
                }
                _ => format!("Ok({t})"),
            }
        }
        Err(e) => format!("Err({e:?})"),
    }
}

/// The iommu-server interface in traces: operation names, arguments
/// through the generated `dispatch_decode` (the same checks the server
/// applies, leases included), typed replies.
pub struct IommuDecoder;

impl Decoder for IommuDecoder {
    fn interface(&self) -> &str {
        "Iommu"
    }

    fn operation(&self, op: u16) -> Option<String> {
        IommuOp::from_u32(op as u32).map(|o| o.name().to_string())
    }

    fn request(&self, op: u16, bytes: &[u8]) -> Option<String> {
        self.request_leased(op, bytes, &[])
    }

    fn request_leased(&self, op: u16, bytes: &[u8], leases: &[LeaseSummary]) -> Option<String> {
        let r =
            iommu_server_api::dispatch_decode(op as u32, bytes, usize::MAX, &lease_infos(leases));
        match r {
            Ok(req) => Some(compact(&args_of(&format!("{req:?}")))),
            Err(reject) => Some(format!("malformed: {}", reject.what)),
        }
    }

    fn reply(&self, op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        type E = IommuError;
        Some(match IommuOp::from_u32(op as u32)? {
            IommuOp::HwInfo => fixed_reply::<api::IommuCaps, E>(code, bytes),
            IommuOp::CreateS2Domain | IommuOp::CreateS1Domain | IommuOp::CreateNestedDomain => {
                fixed_reply::<api::DomainId, E>(code, bytes)
            }
            IommuOp::Attach | IommuOp::Replace | IommuOp::Detach => {
                fixed_reply::<api::AttachOutcome, E>(code, bytes)
            }
            IommuOp::Unmap | IommuOp::UnmapDeferred => fixed_reply::<u64, E>(code, bytes),
            IommuOp::Bind | IommuOp::BindUsers => fixed_reply::<u32, E>(code, bytes),
            IommuOp::Unbind => fixed_reply::<api::UnbindOutcome, E>(code, bytes),
            IommuOp::Invalidate => fixed_reply::<api::InvalidateOutcome, E>(code, bytes),
            IommuOp::FetchEvents => fixed_reply::<api::EventsFetched, E>(code, bytes),
            IommuOp::Info => fixed_reply::<api::IommuInfo, E>(code, bytes),
            IommuOp::DestroyDomain | IommuOp::Map | IommuOp::Flush | IommuOp::SetVsid => {
                fixed_reply::<(), E>(code, bytes)
            }
            // An operation added to the interface after this decoder: its
            // reply shows as code and bytes until it is named here.
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }
}

/// The pasid-alloc interface in traces.
pub struct PasidAllocDecoder;

impl Decoder for PasidAllocDecoder {
    fn interface(&self) -> &str {
        "PasidAlloc"
    }

    fn operation(&self, op: u16) -> Option<String> {
        PasidAllocOp::from_u32(op as u32).map(|o| o.name().to_string())
    }

    fn request_leased(&self, op: u16, bytes: &[u8], leases: &[LeaseSummary]) -> Option<String> {
        let r =
            pasid_alloc_api::dispatch_decode(op as u32, bytes, usize::MAX, &lease_infos(leases));
        match r {
            Ok(req) => Some(compact(&args_of(&format!("{req:?}")))),
            Err(reject) => Some(format!("malformed: {}", reject.what)),
        }
    }

    fn reply(&self, op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        type E = PasidAllocError;
        Some(match PasidAllocOp::from_u32(op as u32)? {
            PasidAllocOp::Alloc => fixed_reply::<PasidHandle, E>(code, bytes),
            PasidAllocOp::OwnerOf => compact(&reply_text(decode_postcard_reply::<PasidOwner, E>(
                code, bytes,
            ))),
            PasidAllocOp::Usage => fixed_reply::<PasidUsage, E>(code, bytes),
            PasidAllocOp::NextDefunct => compact(&reply_text(decode_postcard_reply::<
                Option<PasidHandle>,
                E,
            >(code, bytes))),
            PasidAllocOp::OwnerDied => fixed_reply::<u32, E>(code, bytes),
            _ => fixed_reply::<(), E>(code, bytes),
        })
    }
}

/// A command as the architecture names it, with its operands.
pub fn describe_command(c: &LoggedCommand) -> String {
    let mut s = match c.kind {
        Ok(k) => describe_kind(&k),
        Err(_) => format!("opcode {:#04x} (reserved encoding)", c.raw.word(0) as u8),
    };
    match c.outcome {
        CmdOutcome::Done => {}
        CmdOutcome::Illegal => s.push_str(": illegal, CMDQ_ERR"),
        CmdOutcome::NoMatch => s.push_str(": matched nothing"),
        CmdOutcome::Unpredictable => s.push_str(": UNPREDICTABLE here, no effect"),
    }
    s
}

fn describe_kind(k: &CommandKind) -> String {
    let leaf = |l: bool| if l { " leaf" } else { "" };
    // A range TLBI (TG != 0) names its length; `leaf` is only ever given
    // a TLBI's scope.leaf, so the range rides along with it.
    let ranged = |sc: &smmuv3::TlbiScope| {
        let r = leaf(sc.leaf).to_string();
        if sc.tg == 0 {
            r
        } else {
            format!("{r} range {:#x}", sc.range().1)
        }
    };
    match *k {
        CommandKind::CfgiSte { sid, leaf: l } => format!("CFGI_STE sid {sid:#x}{}", leaf(l)),
        CommandKind::CfgiAll => "CFGI_ALL".to_string(),
        CommandKind::CfgiCd { sid, ssid, leaf: l } => {
            format!("CFGI_CD sid {sid:#x} ssid {ssid:#x}{}", leaf(l))
        }
        CommandKind::CfgiCdAll { sid } => format!("CFGI_CD_ALL sid {sid:#x}"),
        CommandKind::TlbiNhAll { vmid } => format!("TLBI_NH_ALL vmid {vmid}"),
        CommandKind::TlbiNhAsid { vmid, asid } => format!("TLBI_NH_ASID vmid {vmid} asid {asid}"),
        CommandKind::TlbiNhVa { vmid, asid, scope } => format!(
            "TLBI_NH_VA vmid {vmid} asid {asid} va {:#x}{}",
            scope.addr,
            ranged(&scope)
        ),
        CommandKind::TlbiNhVaa { vmid, scope } => format!(
            "TLBI_NH_VAA vmid {vmid} va {:#x}{}",
            scope.addr,
            ranged(&scope)
        ),
        CommandKind::TlbiS12Vmall { vmid } => format!("TLBI_S12_VMALL vmid {vmid}"),
        CommandKind::TlbiS2Ipa { vmid, scope } => format!(
            "TLBI_S2_IPA vmid {vmid} ipa {:#x}{}",
            scope.addr,
            ranged(&scope)
        ),
        CommandKind::TlbiNsnhAll => "TLBI_NSNH_ALL".to_string(),
        CommandKind::TlbiEl2All => "TLBI_EL2_ALL".to_string(),
        CommandKind::AtcInv {
            sid, ssid, size, ..
        } => match ssid {
            Some(p) => format!("ATC_INV sid {sid:#x} ssid {p:#x} size 2^{size}"),
            None => format!("ATC_INV sid {sid:#x} size 2^{size}"),
        },
        CommandKind::Sync { cs, .. } => match cs {
            SyncCs::Irq => "SYNC (CS=IRQ)".to_string(),
            SyncCs::Sev => "SYNC (CS=SEV)".to_string(),
            SyncCs::None => "SYNC".to_string(),
        },
        ref other => compact(&format!("{other:?}")),
    }
}

/// One bus event as a trace note.
pub fn describe_event(e: &BusEvent) -> String {
    match e {
        BusEvent::Command(c) => format!("cmd {}", describe_command(c)),
        BusEvent::SteWrite { sid, word, value } => {
            let mut s = format!("STE {sid:#x} word {word} = {value:#x}");
            if *word == 0 {
                let ste = Ste::from_words([*value, 0, 0, 0, 0, 0, 0, 0]);
                match (ste.v(), ste.config()) {
                    (false, _) => s.push_str(" (V=0)"),
                    (true, Ok(c)) => {
                        let _ = write!(s, " (V=1 {c:?})");
                    }
                    (true, Err(_)) => s.push_str(" (V=1 reserved Config)"),
                }
            }
            s
        }
        BusEvent::Dma {
            sid,
            ssid,
            iova,
            write,
            result,
        } => {
            let mut s = format!("DMA {} sid {sid:#x}", if *write { "write" } else { "read" });
            if let Some(p) = ssid {
                let _ = write!(s, " pasid {p:#x}");
            }
            let _ = write!(s, " iova {iova:#x} → ");
            match result {
                Ok(pa) => {
                    let _ = write!(s, "PA {pa:#x}");
                }
                Err(DmaError::Aborted) => s.push_str("aborted"),
                Err(DmaError::Fault { id, .. }) => s.push_str(id.name()),
                Err(e) => {
                    let _ = write!(s, "{e:?}");
                }
            }
            s
        }
    }
}
