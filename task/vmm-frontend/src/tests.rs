//! The frontend's pure checks and rewrites (no server involved): the
//! invalidation validation table, and faults and events in guest names.
//! The whole task, with the real servers, is tested in the harness
//! (host/harness/tests/harness_vmm.rs).

use super::*;
use api::InvalidateRefusal as R;
use smmuv3::{EventId, Opcode};
use userlib::Generation;

const PSID: u32 = 0x10;
const VSID: u32 = 1;
const PSID2: u32 = 0x11;
const VSID2: u32 = 2;

fn fe() -> Frontend {
    let t = |i| TaskId::new(i, Generation(0));
    let mut f = Frontend::new(
        &Config {
            guest: 6,
            ram_pa: 0x8000_0000,
            ram_size: 0x10_0000,
            ram_ipa: 0x1000_0000,
            event_depth: 2,
            streams: &[(PSID, VSID), (PSID2, VSID2)],
            caching_mode: true,
        },
        Peers {
            iommu: t(3),
            pasids: Some(t(2)),
            prq: Some(t(1)),
            supervisor: Some(t(0)),
        },
    );
    f.caps = Some(iapi::IommuCaps {
        ssid_bits: 20,
        pri: true,
        stall: true,
        ats: true,
        nesting: true,
        max_batch: 64,
    });
    // Guest PASID 1 is host PASID 9.
    f.pasids[0] = Some(PasidMap {
        guest: 1,
        host: PasidHandle {
            pasid: aapi::Pasid(9),
            generation: aapi::PasidGen(0),
        },
    });
    f.set_mode(
        0,
        Mode::Binds {
            fault_capable: true,
            cd_max_bits: 4,
        },
    );
    f.set_mode(
        1,
        Mode::GuestTable {
            fault_capable: false,
            cd_max_bits: 2,
            cd_table_ipa: 0x1000_0000,
            domain: iapi::DomainId(7),
        },
    );
    f
}

#[test]
fn vmm_validation_table() {
    let f = fe();
    let ok = |c: Command| f.check_command(c.words());
    // Allowed: VMID zeroed (iommu-server forces the VM's), stream kept
    // virtual (iommu-server translates it), SSID to the host PASID.
    assert_eq!(
        ok(Command::tlbi_nh_asid(0x55, 3)).map(|c| c.decode()),
        Ok(Ok(CommandKind::TlbiNhAsid { vmid: 0, asid: 3 }))
    );
    assert_eq!(
        ok(Command::tlbi_nh_all(9)).map(|c| c.decode()),
        Ok(Ok(CommandKind::TlbiNhAll { vmid: 0 }))
    );
    assert_eq!(
        ok(Command::cfgi_cd(VSID, 1, true)).map(|c| c.decode()),
        Ok(Ok(CommandKind::CfgiCd {
            sid: VSID,
            ssid: 9,
            leaf: true
        }))
    );
    // A guest-owned CD table: the SSID is the guest's own index.
    assert_eq!(
        ok(Command::cfgi_cd(VSID2, 3, false)).map(|c| c.decode()),
        Ok(Ok(CommandKind::CfgiCd {
            sid: VSID2,
            ssid: 3,
            leaf: false
        }))
    );
    assert!(matches!(
        ok(Command::atc_inv(VSID, Some(1), 0, 52, false)).map(|c| c.decode()),
        Ok(Ok(CommandKind::AtcInv {
            sid: VSID,
            ssid: Some(9),
            ..
        }))
    ));
    // Refused, each with its reason.
    assert_eq!(ok(Command::cfgi_cd(PSID, 1, true)).err(), Some(R::Stream));
    assert_eq!(ok(Command::cfgi_cd_all(3)).err(), Some(R::Stream));
    assert_eq!(ok(Command::cfgi_cd(VSID, 2, true)).err(), Some(R::Pasid));
    assert_eq!(ok(Command::cfgi_cd(VSID2, 4, true)).err(), Some(R::Pasid));
    assert_eq!(
        ok(Command::atc_inv(VSID, Some(5), 0, 0, false)).err(),
        Some(R::Pasid)
    );
    for c in [
        Command::cfgi_ste(PSID, true),
        Command::tlbi_s12_vmall(1),
        Command::tlbi_el2_all(),
        Command::tlbi_nsnh_all(),
        Command::sync(smmuv3::SyncCs::None),
        Command::resume(PSID, 1, smmuv3::ResumeAction::Retry),
    ] {
        assert_eq!(ok(c).err(), Some(R::Opcode), "{:?}", c.decode());
    }
    // A PRI_RESP / RESUME is the host's (prq-server's answers), never a guest's.
    let mut w = Command::cfgi_cd(VSID, 0, true).words();
    w[0] = (w[0] & !0xff) | Opcode::PriResp.raw();
    assert_eq!(f.check_command(w).err(), Some(R::Opcode));
    // An opcode the architecture does not define.
    assert_eq!(f.check_command([0x7f, 0]).err(), Some(R::Opcode));
    // SSec set: a Secure stream is never the VM's.
    let mut w = Command::cfgi_cd(VSID, 1, true).words();
    w[0] |= 1 << 10;
    assert_eq!(f.check_command(w).err(), Some(R::Field));
    // Without ATS, ATC_INV is not offered.
    let mut f2 = fe();
    f2.caps = f2.caps.map(|c| iapi::IommuCaps { ats: false, ..c });
    assert_eq!(
        f2.check_command(Command::atc_inv(VSID, None, 0, 0, false).words())
            .err(),
        Some(R::Unsupported)
    );
}

#[test]
fn vmm_fault_in_guest_names() {
    let f = fe();
    let rec = papi::FaultRecord {
        cookie: papi::Cookie(0x77),
        sid: iapi::StreamId(PSID),
        pasid: aapi::Pasid(9),
        kind: papi::FaultKind::PageRequest,
        group: 3,
        addr: 0x4000,
        perm: papi::FaultPerm::READ,
        flags: papi::FaultFlags::PASID_VALID | papi::FaultFlags::LAST_PAGE,
    };
    let g = f.guest_fault(&rec).unwrap();
    assert_eq!(g.vsid, api::VirtStreamId(VSID));
    assert_eq!(g.pasid, api::GuestPasid(1));
    assert_eq!(g.cookie, papi::Cookie(0x77));
    // A host PASID the guest does not hold is never shown.
    let other = papi::FaultRecord {
        pasid: aapi::Pasid(10),
        ..rec
    };
    assert!(f.guest_fault(&other).is_none());
    // Not this VM's stream: nothing.
    let foreign = papi::FaultRecord {
        sid: iapi::StreamId(0x99),
        ..rec
    };
    assert!(f.guest_fault(&foreign).is_none());
}

#[test]
fn vmm_event_in_guest_names() {
    let f = fe();
    let mut e = Event::new(EventId::FTranslation, PSID, Some(9));
    e.set_input_addr(0x40_0000);
    let v = f.guest_event(PSID, e.words()).unwrap();
    let back = Event::from_words(v.words);
    assert_eq!(back.sid(), VSID);
    assert_eq!(back.substream(), Some(1));
    assert_eq!(back.input_addr(), 0x40_0000);
    // A host PASID the guest does not hold: SubstreamID dropped.
    let e = Event::new(EventId::FTranslation, PSID, Some(10));
    let back = Event::from_words(f.guest_event(PSID, e.words()).unwrap().words);
    assert_eq!(back.substream(), None);
    assert_eq!(back.ssid(), 0);
    // A fetch abort's physical FetchAddr is not shown.
    let mut e = Event::new(EventId::FCdFetch, PSID2, None);
    e.set_fetch_addr(0x8000_1000);
    let back = Event::from_words(f.guest_event(PSID2, e.words()).unwrap().words);
    assert_eq!(back.fetch_addr(), 0);
    assert_eq!(back.sid(), VSID2);
    assert!(f.guest_event(0x99, e.words()).is_none());
}

/// Any 16 bytes a guest sends as a command, and any event record, are
/// either refused with a reason or rewritten — never a panic, and an
/// accepted command is always one of the allowed kinds.
#[test]
fn vmm_any_guest_command_or_event_is_checked_without_panic() {
    let f = fe();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..200_000u32 {
        // Mostly valid opcodes with random fields, sometimes anything.
        let mut w = [next(), next()];
        if i % 4 != 0 {
            let ops = [0x03, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x40, 0x41, 0x46];
            w[0] = (w[0] & !0xff) | ops[(i as usize / 4) % ops.len()];
        }
        if let Ok(c) = f.check_command(w) {
            assert!(
                matches!(
                    c.decode(),
                    Ok(CommandKind::TlbiNhAll { vmid: 0 }
                        | CommandKind::TlbiNhAsid { vmid: 0, .. }
                        | CommandKind::TlbiNhVa { vmid: 0, .. }
                        | CommandKind::TlbiNhVaa { vmid: 0, .. }
                        | CommandKind::CfgiCd { .. }
                        | CommandKind::CfgiCdAll { .. }
                        | CommandKind::AtcInv { .. })
                ),
                "{w:x?} -> {:?}",
                c.decode()
            );
        }
        let e = [next(), next(), next(), next()];
        let sid = if i % 2 == 0 {
            PSID
        } else {
            (e[0] >> 32) as u32
        };
        if let Some(v) = f.guest_event(sid, e) {
            assert!(v.vsid == VSID || v.vsid == VSID2);
        }
    }
}
