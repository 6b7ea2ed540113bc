//! Ownership through the kernel-stamped sender id: a second VM asks the
//! real iommu-server for everything of the first VM's — its stream, its
//! domain, its memory, its PASID context — over the generated interface.
//! Every request is refused and changes nothing: no command, no STE store,
//! the owner's STE words and DMA exactly as before.

use harness::smmu::{
    guest_cd, guest_cmd, guest_ipa, ram_pa, rw, BusEvent, IommuRig, Steps, Vm, GUEST_VA, IOVA,
    SID_A, SID_B,
};
use iommu_server_api::{CdTableFormat, DomainId, NestedSte, StreamId, SubstreamDefault};
use pasid_alloc_api::{Pasid, PasidGen, PasidHandle};
use smmuv3::Command;
use smmuv3_model::{DmaError, SmmuConfig};
use std::sync::{Arc, Mutex};
use userlib::{sys_lookup_slot, sys_post, sys_recv_notification, sys_shutdown};

/// The owner's domain: the first one the server creates (slot 0,
/// generation 1). The intruder is handed it, as if it had guessed.
const OWNERS: DomainId = DomainId(0x1_0100);

#[test]
fn harness_iommu_second_vm_refused_on_first_vms_objects_nothing_changes() {
    let steps = Steps::new();
    let owner_view: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, view) = (steps.clone(), owner_view.clone());
    let mut rig = IommuRig::new(SmmuConfig::new())
        .max_pasid_bits(0)
        // Higher priority: it waits until the owner has set up and posts.
        .vm("intruder", 3, &[SID_B], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            sys_recv_notification(1);
            let mine = s.run(b, "create its own", || c.create_s2_domain(false));
            let mine = mine.unwrap_or(DomainId(0));
            let theirs = StreamId(SID_A);
            let pasid0 = PasidHandle {
                pasid: Pasid(0),
                generation: PasidGen(0),
            };
            let cd = guest_cd(guest_ipa(10), 1);
            s.record(b, "attach their stream", || c.attach(theirs, mine));
            s.record(b, "replace their stream", || c.replace(theirs, mine));
            s.record(b, "detach their stream", || c.detach(theirs));
            s.record(b, "bind their stream", || c.bind(theirs, pasid0, cd, false));
            s.record(b, "unbind their stream", || {
                c.unbind(theirs, Pasid(0), false)
            });
            s.record(b, "users of their stream", || {
                c.bind_users(theirs, Pasid(0))
            });
            s.record(b, "vsid of their stream", || c.set_vsid(theirs, 0x99));
            s.record(b, "map their domain", || {
                c.map(OWNERS, IOVA + 0x10_0000, vm.ram.page(1), 0x1000, rw())
            });
            s.record(b, "unmap their domain", || c.unmap(OWNERS, IOVA, 0x1000));
            s.record(b, "unmap_deferred their domain", || {
                c.unmap_deferred(OWNERS, IOVA, 0x1000)
            });
            s.record(b, "flush their domain", || c.flush(OWNERS));
            s.record(b, "destroy their domain", || c.destroy_domain(OWNERS));
            s.record(b, "attach their domain", || {
                c.attach(StreamId(SID_B), OWNERS)
            });
            s.record(b, "nest on their domain", || {
                let vste = NestedSte {
                    cd_table_ipa: guest_ipa(40),
                    s1cdmax: 0,
                    s1fmt: CdTableFormat::Linear,
                    s1dss: SubstreamDefault::Terminate,
                };
                c.create_nested_domain(OWNERS, vste, false)
            });
            let tlbi = [guest_cmd(Command::tlbi_nh_all(0))];
            s.record(b, "invalidate their domain", || c.invalidate(OWNERS, &tlbi));
            let cfgi = [guest_cmd(Command::cfgi_cd(SID_A, 0, true))];
            s.record(b, "invalidate their stream", || c.invalidate(mine, &cfgi));
            // Its own domain, pointed at the owner's RAM: the kernel says
            // that memory is not the intruder's.
            s.record(b, "map their memory", || {
                c.map(mine, IOVA, ram_pa(1) + 0x1000, 0x1000, rw())
            });
            s.record(b, "map the server's tables", || {
                c.map(mine, IOVA, harness::smmu::TABLES_PA, 0x1000, rw())
            });
            s.record(b, "its own memory", || {
                c.map(mine, IOVA, vm.ram.page(1), 0x1000, rw())
            });
        })
        .vm("vm", 4, &[SID_A], move |vm: Vm| {
            let c = &vm.iommu;
            let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.map(d, guest_ipa(0), vm.ram.pa, 0x4_0000, rw());
            let _ = c.map(d, IOVA, vm.ram.page(50), 0x1000, rw());
            let _ = c.attach(StreamId(SID_A), d);
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            let pasid0 = PasidHandle {
                pasid: Pasid(0),
                generation: PasidGen(0),
            };
            let _ = c.bind(StreamId(SID_A), pasid0, guest_cd(guest_ipa(10), 3), false);
            let look = |v: &Vm| {
                format!(
                    "ste {:x?} dma {:?} users {:?}",
                    v.bus.ste(SID_A).map(|s| s.words()),
                    v.dma.write(SID_A, None, GUEST_VA + 8, b"own"),
                    v.iommu.bind_users(StreamId(SID_A), Pasid(0)),
                )
            };
            view.lock().unwrap().push(look(&vm));
            // The intruder runs now (it has the higher priority).
            if let Some(intruder) = sys_lookup_slot("intruder") {
                sys_post(intruder, 1);
            }
            view.lock().unwrap().push(look(&vm));
            sys_shutdown(0);
        })
        .slot("vm", "intruder");
    let bus = rig.bus();
    let r = rig.harness(12).run();
    r.expect_shutdown(0);

    let not_permitted = |label: &str| {
        let st = steps.get(label);
        assert!(
            st.result.starts_with("Err(NotPermitted)"),
            "{label}: {}",
            st.result
        );
    };
    for label in [
        "attach their stream",
        "replace their stream",
        "detach their stream",
        "bind their stream",
        "unbind their stream",
        "users of their stream",
        "vsid of their stream",
        "map their domain",
        "unmap their domain",
        "unmap_deferred their domain",
        "flush their domain",
        "destroy their domain",
        "attach their domain",
        "nest on their domain",
        "invalidate their domain",
        "map their memory",
        "map the server's tables",
    ] {
        not_permitted(label);
    }
    // Its own vIOMMU, naming the owner's stream in a guest CFGI_CD: the
    // vSID does not translate, the batch stops before it.
    assert_eq!(
        steps.get("invalidate their stream").result,
        "Ok(InvalidateOutcome { done: 0, status: Rejected })"
    );
    // Nothing reached the SMMU while the intruder ran.
    for st in steps.all() {
        let touched: Vec<&BusEvent> = st
            .events
            .iter()
            .filter(|e| !matches!(e, BusEvent::Dma { .. }))
            .collect();
        assert!(touched.is_empty(), "{}: {:?}", st.label, st.notes());
    }
    // Its own memory it may map (the refusals were about ownership).
    assert_eq!(steps.get("its own memory").result, "Ok(())");

    // The owner sees exactly what it saw before.
    let view = owner_view.lock().unwrap().clone();
    assert_eq!(view.len(), 2);
    assert_eq!(view[0], view[1]);
    assert!(
        view[0].contains(&format!(
            "dma {:?}",
            Ok::<u64, DmaError>(ram_pa(1) + 0x14008)
        )),
        "{}",
        view[0]
    );
    assert!(view[0].contains("users Ok(1)"), "{}", view[0]);
    assert!(bus.smmu.access_errors().is_empty());
}
