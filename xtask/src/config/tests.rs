use super::*;

const BOARD: &str = include_str!("../../../boards/qemu-virt.toml");

fn check(app: &str) -> Result<App, String> {
    parse("app.toml", app, |name| {
        Ok((name == "qemu-virt").then(|| ("boards/qemu-virt.toml".to_string(), BOARD.to_string())))
    })
}

fn check_board(board: &str) -> Result<App, String> {
    let app = "name = \"t\"\nboard = \"qemu-virt\"\n[tasks.sup]\npriority = 0\nstack-size = 1024\ncaps = [\"task-control\"]\n";
    parse("app.toml", app, |_| {
        Ok(Some((
            "boards/qemu-virt.toml".to_string(),
            board.to_string(),
        )))
    })
}

/// A minimal valid app with `extra` appended (more tasks or fields).
fn app(extra: &str) -> String {
    format!(
        "name = \"t\"\nboard = \"qemu-virt\"\n\
         [tasks.sup]\npriority = 0\nstack-size = 1024\ncaps = [\"task-control\", \"shutdown\"]\n\
         {extra}"
    )
}

fn err(src: &str) -> String {
    match check(src) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e,
    }
}

#[test]
fn the_demo_app_is_valid() {
    let a = check(include_str!("../../../app.toml")).unwrap();
    assert_eq!(a.name, "demo");
    let names: Vec<_> = a.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "supervisor",
            "prq-server",
            "iommu-server",
            "vmm-frontend-a",
            "vmm-frontend-b",
            "guest-a",
            "guest-b",
            "idle",
            "pasid-alloc",
            "pci-server"
        ]
    );
    // prq-server: above iommu-server and the VMs' frontends, posts to
    // them, sends only to the supervisor (its death log); page 1 only
    // through its register window.
    let prq = &a.tasks[1];
    assert!(prq.priority < a.tasks[2].priority && prq.priority < a.tasks[3].priority);
    assert_eq!(prq.slots, vec![0]);
    assert_eq!(prq.posts, vec![2, 3, 4]);
    assert!(prq.regions.iter().all(|r| r.name != "smmu-page1"));
    assert_eq!(prq.windows[0].name, "smmu-queues");
    assert_eq!(prq.windows[0].regs.len(), 4);
    assert_eq!(
        a.tasks[2].slots,
        vec![1, 8, 0],
        "iommu-server asks prq-server, pasid-alloc and the supervisor (death log)"
    );
    // The supervisor: no task-slots, posts the death watchers
    // (iommu-server, prq-server, pci-server, the frontends).
    assert!(a.tasks[0].slots.is_empty());
    assert_eq!(a.tasks[0].posts, vec![2, 1, 9, 3, 4]);
    // Two VMs: frontend (crate vmm-frontend) + guest (guest-agent);
    // each guest drives one edu (BAR0 mapped into it only, its stream
    // the frontend's, vSID 1 in both VMs) and its RAM is carved from
    // the top of board RAM.
    for (k, (fe, guest, bdf, bar, ram)) in [
        (3, 5, 0x10u16, 0x1000_0000u64, 0x4fe0_0000u64),
        (4, 6, 0x18, 0x1010_0000, 0x4fc0_0000),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(a.tasks[fe].crate_name, "vmm-frontend");
        assert_eq!(a.tasks[fe].slots, vec![2, 1, 8, 0]);
        assert_eq!(a.tasks[fe].posts, vec![guest]);
        assert_eq!(a.tasks[guest].crate_name, "guest-agent");
        assert_eq!(a.tasks[guest].slots, vec![fe, 9]);
        let d = &a.devices[k];
        assert_eq!((d.bdf, d.owner, d.sid), (bdf, guest, u32::from(bdf)));
        assert_eq!(d.bars[0], (bar, 0x10_0000));
        let r = a.tasks[guest]
            .regions
            .iter()
            .find(|r| r.name == d.bar_region(0))
            .unwrap();
        assert_eq!(
            r.backing,
            Backing::Mmio {
                peripheral: "pcie-mmio32".into(),
                base: bar
            }
        );
        let v = a.vms.iter().find(|v| v.frontend == fe).unwrap();
        assert_eq!((v.guest, v.ram_base, v.ram_size), (guest, ram, 0x10_0000));
        let st = a
            .streams
            .iter()
            .find(|st| st.sid == u32::from(bdf))
            .unwrap();
        assert_eq!((st.vm, st.vsid), (fe, Some(1)));
    }
    assert!(a
        .tasks
        .iter()
        .all(|t| t.regions.iter().all(|r| r.name != "pcie-mmio32")));
    assert_eq!(a.pci_ecam.as_deref(), Some("pcie-ecam"));
    assert_eq!(a.tasks[9].regions[0].name, "pcie-ecam");
    // pasid-alloc: above iommu-server, posts to it only.
    assert_eq!(a.tasks[8].priority, 1);
    assert!(a.tasks[8].slots.is_empty());
    assert_eq!(a.tasks[8].posts, vec![2]);
    assert_eq!(a.pasids, (0, 8), "QEMU: SSIDSIZE 0");
    let iommu = &a.tasks[2];
    assert_eq!(iommu.regions.len(), 2);
    assert_eq!(iommu.regions[0].name, "smmu-page0");
    assert_eq!(iommu.regions[0].va, TASK_REGIONS);
    assert_eq!(
        iommu.regions[0].backing,
        Backing::Mmio {
            peripheral: "smmu-page0".into(),
            base: 0x0905_0000
        }
    );
    assert_eq!(
        iommu.regions[0].attributes,
        abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DEVICE
    );
    assert_eq!(iommu.regions[1].va, TASK_REGIONS + SLOT);
    assert_eq!(iommu.regions[1].size, 0x40000);
    assert_eq!(
        iommu.regions[1].attributes,
        abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA
    );
    assert_eq!(iommu.irqs.len(), 2);
    assert_eq!((iommu.irqs[0].intid, iommu.irqs[0].notification), (108, 2));
    assert!(iommu.irqs[0].edge);
    assert_eq!(a.tasks[0].caps, vec![Cap::TaskControl, Cap::Shutdown]);
    assert_eq!(a.tasks[7].priority, 15);
    assert_eq!(a.kernel_stack_size, 16384);
}

#[test]
fn pasids_checked() {
    let alloc = "[tasks.pasid-alloc]\npriority = 1\nstack-size = 16384\n";
    let smmu = "[tasks.iommu]\npriority = 2\nstack-size = 1024\nmmio = [\"smmu-page0\"]\n";
    let e = err(&app("[pasids]\nbits = 4\nquota = 2\n"));
    assert_eq!(
        e,
        "app.toml: pasids: no task runs pasid-alloc to serve the PASID space"
    );
    let e = err(&app(&format!("{alloc}[pasids]\nbits = 21\nquota = 2\n")));
    assert!(e.contains("pasids.bits: 21 is above 20"), "{e}");
    // Without an SMMU user, the board's SSIDSIZE does not bound it
    // (the benchmark image); with one, it does (QEMU: 0).
    let a = check(&app(&format!("{alloc}[pasids]\nbits = 8\nquota = 2\n"))).unwrap();
    assert_eq!(a.pasids, (8, 2));
    let e = err(&app(&format!(
        "{alloc}{smmu}[pasids]\nbits = 1\nquota = 2\n"
    )));
    assert!(e.contains("above the SMMU's SSIDSIZE (0 in"), "{e}");
    let e = err(&app(&format!("{alloc}[pasids]\nbits = 12\nquota = 2\n")));
    assert!(e.contains("cannot hold the 2^12 PASID table"), "{e}");
}

#[test]
fn declaration_order_is_task_order() {
    let a = check(&app(
        "[tasks.zeta]\npriority = 3\nstack-size = 1024\n\
         [tasks.alpha]\npriority = 2\nstack-size = 1024\ntask-slots = [\"sup\"]\n\
         [tasks.mid]\npriority = 5\nstack-size = 1024\ntask-slots = [\"zeta\", \"alpha\"]\n",
    ))
    .unwrap();
    let names: Vec<_> = a.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["sup", "zeta", "alpha", "mid"]);
    assert_eq!(a.tasks[3].slots, vec![1, 2]);
}

#[test]
fn crate_name_and_memory_attributes() {
    let a = check(&app(
        "[tasks.x]\ncrate = \"x-impl\"\npriority = 3\nstack-size = 1024\nstart = false\n\
         memory = [{ name = \"a\", size = 0x1000, cache = \"nc\" }, { name = \"b\", size = 0x200000 }, { name = \"c\", size = 0x1000 }]\n\
         [[streams]]\nsid = 0x10\nvm = \"x\"\n\
         [expect]\ncases = [\"one\", \"two\"]\nbench = true\n",
    ))
    .unwrap();
    let x = &a.tasks[1];
    assert_eq!(x.crate_name, "x-impl");
    assert!(!x.start);
    assert_eq!(
        x.regions[0].attributes,
        abi::REGION_READ | abi::REGION_WRITE | abi::REGION_UNCACHED
    );
    // A 2 MiB region fills its slot; the next one starts at the next.
    let vas: Vec<_> = x.regions.iter().map(|r| r.va).collect();
    assert_eq!(
        vas,
        [TASK_REGIONS, TASK_REGIONS + SLOT, TASK_REGIONS + 2 * SLOT]
    );
    assert_eq!(a.streams[0].sid, 0x10);
    assert_eq!(a.streams[0].vm, 1);
    assert_eq!(a.cases, ["one", "two"]);
    assert!(a.bench);
}

#[test]
fn unknown_field_is_named() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nslots = []\n",
    ));
    assert!(e.starts_with("app.toml: TOML parse error"), "{e}");
    assert!(e.contains("unknown field `slots`"), "{e}");
    let e = err(&app("colour = 1\n"));
    assert!(e.contains("unknown field `colour`"), "{e}");
}

#[test]
fn unknown_board() {
    let e = err("name = \"t\"\nboard = \"nope\"\n[tasks.a]\npriority = 0\nstack-size = 1024\n");
    assert_eq!(
        e,
        "app.toml: board: unknown board \"nope\" (no file boards/nope.toml)"
    );
}

#[test]
fn unknown_slot() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ntask-slots = [\"bar\"]\n",
    ));
    assert_eq!(e, "app.toml: tasks.x.task-slots: unknown task \"bar\"");
}

#[test]
fn supervisor_with_task_slots_is_refused() {
    let e = err(
        "name = \"t\"\nboard = \"qemu-virt\"\n\
         [tasks.sup]\npriority = 0\nstack-size = 1024\ncaps = [\"task-control\"]\ntask-slots = [\"x\"]\n\
         [tasks.x]\npriority = 0\nstack-size = 1024\n",
    );
    assert_eq!(
        e,
        "app.toml: tasks.sup.task-slots: the supervisor must have no task-slots (it acts through task control and never sends)"
    );
}

#[test]
fn supervisor_with_nonzero_priority_is_refused() {
    let e = err("name = \"t\"\nboard = \"qemu-virt\"\n\
         [tasks.sup]\npriority = 1\nstack-size = 1024\ncaps = [\"task-control\"]\n");
    assert_eq!(
        e,
        "app.toml: tasks.sup.priority: the supervisor must have priority 0 (the highest), not 1"
    );
}

#[test]
fn slot_to_equal_priority() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\n[tasks.y]\npriority = 3\nstack-size = 1024\ntask-slots = [\"x\"]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.y.task-slots: \"x\" has priority 3, not strictly higher than this task's 3 (a task may only send to smaller priority numbers)"
    );
}

#[test]
fn slot_to_lower_priority() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ntask-slots = [\"y\"]\n[tasks.y]\npriority = 4\nstack-size = 1024\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.task-slots: \"y\" has priority 4, not strictly higher than this task's 3 (a task may only send to smaller priority numbers)"
    );
}

#[test]
fn posts_to_lower_priority_are_post_only() {
    let a = check(&app(
        "[tasks.x]\npriority = 1\nstack-size = 1024\nposts = [\"y\"]\n[tasks.y]\npriority = 4\nstack-size = 1024\ntask-slots = [\"x\"]\n",
    ))
    .unwrap();
    // A post grants no slot (send): the kernel table keeps them apart.
    assert_eq!(a.tasks[1].posts, vec![2]);
    assert!(a.tasks[1].slots.is_empty());
    assert_eq!(a.tasks[2].slots, vec![1]);
}

#[test]
fn posts_checked() {
    let t = |posts: &str| {
        err(&app(&format!(
            "[tasks.x]\npriority = 1\nstack-size = 1024\ntask-slots = [\"sup2\"]\nposts = [{posts}]\n[tasks.y]\npriority = 4\nstack-size = 1024\n[tasks.sup2]\npriority = 0\nstack-size = 1024\n"
        )))
    };
    assert_eq!(t("\"z\""), "app.toml: tasks.x.posts: unknown task \"z\"");
    assert_eq!(
        t("\"x\""),
        "app.toml: tasks.x.posts: a task cannot post to itself"
    );
    assert_eq!(
        t("\"y\", \"y\""),
        "app.toml: tasks.x.posts: \"y\" is listed twice"
    );
    assert_eq!(
        t("\"sup2\""),
        "app.toml: tasks.x.posts: \"sup2\" is also in task-slots (a slot already grants post)"
    );
}

#[test]
fn aliased_page_is_not_mappable_alone() {
    let e = err(&app(
        "[tasks.x]\npriority = 1\nstack-size = 1024\nmmio = [\"smmu-page1\"]\n",
    ));
    assert!(
        e.starts_with("app.toml: tasks.x.mmio: peripheral \"smmu-page1\" aliases \"smmu-page0\""),
        "{e}"
    );
    // With page 0 it gives nothing more: allowed (the SMMU drivers of
    // the differential test).
    check(&app(
        "[tasks.x]\npriority = 1\nstack-size = 1024\nmmio = [\"smmu-page0\", \"smmu-page1\"]\n",
    ))
    .unwrap();
}

#[test]
fn register_window_offsets_come_from_smmuv3() {
    let a = check(&app(
        "[tasks.x]\npriority = 1\nstack-size = 1024\nregisters = [{ name = \"q\", peripheral = \"smmu-page1\", regs = [\"PRIQ_CONS\", \"EVENTQ_PROD\"] }]\n",
    ))
    .unwrap();
    let w = &a.tasks[1].windows[0];
    assert_eq!(w.base, 0x0906_0000);
    use smmuv3::regs::offset as o;
    assert_eq!(
        w.regs,
        vec![
            ("PRIQ_CONS".to_string(), (o::PRIQ_CONS - o::PAGE1) as u32),
            (
                "EVENTQ_PROD".to_string(),
                (o::EVENTQ_PROD - o::PAGE1) as u32
            )
        ]
    );
    assert_eq!(w.regs[0].1, 0xcc);
}

#[test]
fn register_window_checked() {
    let t = |w: &str, more: &str| {
        err(&app(&format!(
            "[tasks.x]\npriority = 1\nstack-size = 1024\nregisters = [{w}]\n{more}"
        )))
    };
    // Page-0 registers are not in page 1's set: CR0, STRTAB_BASE.
    for r in ["CR0", "STRTAB_BASE", "CMDQ_PROD"] {
        let e = t(
            &format!("{{ name = \"q\", peripheral = \"smmu-page1\", regs = [\"{r}\"] }}"),
            "",
        );
        assert!(
            e.starts_with(&format!(
                "app.toml: tasks.x.registers[0].regs: \"{r}\" is not a register of \"smmu-page1\""
            )),
            "{e}"
        );
    }
    assert_eq!(
        t("{ name = \"q\", peripheral = \"smmu-page0\", regs = [\"CR0\"] }", ""),
        "app.toml: tasks.x.registers[0].peripheral: \"smmu-page0\" has no register-set in boards/qemu-virt.toml"
    );
    assert_eq!(
        t(
            "{ name = \"q\", peripheral = \"smmu-page1\", regs = [\"PRIQ_CONS\", \"PRIQ_CONS\"] }",
            ""
        ),
        "app.toml: tasks.x.registers[0].regs: \"PRIQ_CONS\" is listed twice"
    );
    assert_eq!(
        t("{ name = \"q\", peripheral = \"nope\", regs = [\"PRIQ_CONS\"] }", ""),
        "app.toml: tasks.x.registers[0].peripheral: unknown peripheral \"nope\" (not in boards/qemu-virt.toml)"
    );
    // A window's peripheral must not also be mapped.
    let e = t(
        "{ name = \"q\", peripheral = \"smmu-page1\", regs = [\"PRIQ_CONS\"] }",
        "[tasks.y]\npriority = 2\nstack-size = 1024\nmmio = [\"smmu-page0\", \"smmu-page1\"]\n",
    );
    assert!(
        e.contains("a register window's peripheral must not be mapped"),
        "{e}"
    );
}

#[test]
fn slot_to_itself() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ntask-slots = [\"x\"]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.task-slots: a task cannot have a slot to itself"
    );
}

#[test]
fn unknown_peripheral() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nmmio = [\"uart9\"]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.mmio: unknown peripheral \"uart9\" (not in boards/qemu-virt.toml)"
    );
}

#[test]
fn peripheral_given_twice() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nmmio = [\"smmu-page0\"]\n\
         [tasks.y]\npriority = 4\nstack-size = 1024\nmmio = [\"smmu-page0\"]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.y.mmio: peripheral \"smmu-page0\" is already given to task \"x\""
    );
}

#[test]
fn overlapping_board_peripherals() {
    let board = BOARD.replace("base = 0x0906_0000", "base = 0x0905_8000");
    let e = check_board(&board).unwrap_err();
    assert_eq!(
        e,
        "boards/qemu-virt.toml: peripherals.smmu-page1: 0x9058000..0x9068000 overlaps peripherals.smmu-page0 (0x9050000..0x9060000)"
    );
}

#[test]
fn smmu_coherency_is_a_board_fact() {
    let smmu = "[tasks.iommu]\npriority = 2\nstack-size = 1024\nmmio = [\"smmu-page0\"]\n";
    // QEMU's board says coherent.
    let a = check(&app(smmu)).unwrap();
    assert!(a.smmu_coherent && !a.smmu_forced_non_coherent);
    // An app may force the non-coherent mode (the QEMU proof).
    let a = check(&app(&format!("{smmu}[smmu]\nforce-non-coherent = true\n"))).unwrap();
    assert!(!a.smmu_coherent && a.smmu_forced_non_coherent);
    let src = dist_source(&a);
    assert!(
        src.contains("pub const SMMU_COHERENT: bool = false;"),
        "{src}"
    );
    // A board that does not say: an SMMU-driving app refuses to build;
    // an app without the SMMU does not care.
    let board = BOARD.replace("smmu-coherent = true", "");
    let parse_with = |app_src: &str| {
        parse("app.toml", app_src, |_| {
            Ok(Some(("boards/qemu-virt.toml".to_string(), board.clone())))
        })
    };
    let e = parse_with(&app(smmu)).unwrap_err();
    assert!(
        e.starts_with(
            "boards/qemu-virt.toml: smmu-coherent: not stated, and app.toml drives the SMMU"
        ),
        "{e}"
    );
    assert!(!parse_with(&app("")).unwrap().smmu_coherent);
}

/// The non-coherent test apps are their originals with another name
/// and `[smmu] force-non-coherent = true`: no drift.
#[test]
fn noncoherent_apps_mirror_their_originals() {
    let pairs = [
        (
            include_str!("../../../qemu/apps/smmu.toml"),
            include_str!("../../../qemu/apps/smmu-noncoherent.toml"),
            "test-smmu",
        ),
        (
            include_str!("../../../app.toml"),
            include_str!("../../../qemu/apps/demo-noncoherent.toml"),
            "demo",
        ),
        (
            include_str!("../../../qemu/apps/bench-smmu.toml"),
            include_str!("../../../qemu/apps/bench-smmu-noncoherent.toml"),
            "bench-smmu",
        ),
    ];
    // Both without their opening comment block.
    let body = |t: &str| -> String {
        t.lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    for (orig, mirror, name) in pairs {
        let want = body(orig).replacen(
            &format!("name = \"{name}\"\n"),
            &format!("name = \"{name}-noncoherent\"\n"),
            1,
        ) + "\n[smmu]\nforce-non-coherent = true\n";
        assert_eq!(
            body(mirror),
            want,
            "{name}: regenerate its -noncoherent mirror"
        );
        let a = check(mirror).unwrap();
        assert!(!a.smmu_coherent && a.smmu_forced_non_coherent, "{name}");
    }
}

fn dist_source(a: &App) -> String {
    crate::dist::app_config_source(a)
}

#[test]
fn board_unknown_field() {
    let board = BOARD.replace("cpu = \"max\"", "cpu = \"max\"\nsmp = 2");
    let e = check_board(&board).unwrap_err();
    assert!(
        e.starts_with("boards/qemu-virt.toml: TOML parse error"),
        "{e}"
    );
    assert!(e.contains("unknown field `smp`"), "{e}");
}

#[test]
fn unknown_interrupt() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ninterrupts = { \"uart0\" = 2 }\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.interrupts: unknown interrupt \"uart0\" (not in boards/qemu-virt.toml)"
    );
}

#[test]
fn interrupt_owned_twice() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ninterrupts = { \"smmu-gerror\" = 2 }\n\
         [tasks.y]\npriority = 4\nstack-size = 1024\ninterrupts = { \"smmu-gerror\" = 2 }\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.y.interrupts: interrupt \"smmu-gerror\" is already owned by task \"x\""
    );
}

#[test]
fn interrupt_bits_zero() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ninterrupts = { \"smmu-gerror\" = 0 }\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.interrupts.smmu-gerror: notification bits must not be 0"
    );
}

#[test]
fn interrupt_on_supervisor_fault_bit() {
    let src = "name = \"t\"\nboard = \"qemu-virt\"\n[tasks.sup]\npriority = 0\nstack-size = 1024\n\
               caps = [\"task-control\"]\ninterrupts = { \"smmu-gerror\" = 0x3 }\n";
    assert_eq!(
        err(src),
        "app.toml: tasks.sup.interrupts.smmu-gerror: bit 0 is reserved on the supervisor for fault notifications"
    );
    // Bit 0 is free on any other task.
    check(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ninterrupts = { \"smmu-gerror\" = 1 }\n",
    ))
    .unwrap();
}

#[test]
fn interrupts_sharing_a_bit() {
    let e = err(&app("[tasks.x]\npriority = 3\nstack-size = 1024\n\
         interrupts = { \"smmu-gerror\" = 0x6, \"smmu-eventq\" = 0x4 }\n"));
    assert_eq!(
        e,
        "app.toml: tasks.x.interrupts.smmu-eventq: bits 0x4 are also used by interrupt \"smmu-gerror\""
    );
}

#[test]
fn memory_size_not_page_multiple() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nmemory = [{ name = \"m\", size = 0x1800 }]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.memory[0].size: 0x1800 is not a multiple of 4 KiB"
    );
}

#[test]
fn memory_size_zero() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nmemory = [{ name = \"m\", size = 0 }]\n",
    ));
    assert_eq!(e, "app.toml: tasks.x.memory[0].size: must not be zero");
}

#[test]
fn memory_bad_cache() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nmemory = [{ name = \"m\", size = 0x1000, cache = \"wt\" }]\n",
    ));
    assert!(e.contains("unknown variant `wt`"), "{e}");
}

#[test]
fn region_name_duplicated() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nmmio = [\"pcie-ecam\"]\n\
         memory = [{ name = \"pcie-ecam\", size = 0x1000 }]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.memory[0].name: region \"pcie-ecam\" is defined twice in this task"
    );
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\n\
         memory = [{ name = \"m\", size = 0x1000 }, { name = \"m\", size = 0x1000 }]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.memory[1].name: region \"m\" is defined twice in this task"
    );
}

#[test]
fn region_named_text_or_data() {
    for n in ["text", "data"] {
        let e = err(&app(&format!(
            "[tasks.x]\npriority = 3\nstack-size = 1024\nmemory = [{{ name = \"{n}\", size = 0x1000 }}]\n"
        )));
        assert_eq!(
            e,
            format!(
                "app.toml: tasks.x.memory[0].name: \"{n}\" is reserved for the task's own image"
            )
        );
    }
}

#[test]
fn unknown_cap() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ncaps = [\"root\"]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.caps: unknown capability \"root\" (known: \"task-control\", \"shutdown\")"
    );
}

#[test]
fn no_supervisor() {
    let e =
        err("name = \"t\"\nboard = \"qemu-virt\"\n[tasks.a]\npriority = 0\nstack-size = 1024\n");
    assert_eq!(
        e,
        "app.toml: tasks: no task has the \"task-control\" capability (the supervisor, declared first)"
    );
}

#[test]
fn two_supervisors() {
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\ncaps = [\"task-control\"]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.caps: \"task-control\" is already given to task \"sup\" (there is exactly one supervisor)"
    );
}

#[test]
fn supervisor_not_first() {
    let e = err(
        "name = \"t\"\nboard = \"qemu-virt\"\n[tasks.a]\npriority = 1\nstack-size = 1024\n\
         [tasks.sup]\npriority = 0\nstack-size = 1024\ncaps = [\"task-control\"]\n",
    );
    assert_eq!(
        e,
        "app.toml: tasks.sup.caps: the task with \"task-control\" (the supervisor) must be declared first (task index 0)"
    );
}

#[test]
fn priority_out_of_range() {
    for p in ["16", "-1"] {
        let e = err(&app(&format!(
            "[tasks.x]\npriority = {p}\nstack-size = 1024\n"
        )));
        assert_eq!(
            e,
            format!("app.toml: tasks.x.priority: {p} is out of range (0 = highest ..= 15)")
        );
    }
}

/// Two VMs: frontends a and b (crate vmm-frontend), guests ga and gb
/// with a `ram` DMA region each; `extra` is appended.
fn two_vms(extra: &str) -> String {
    app(&format!(
        "[tasks.a]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\n\
         vm = {{ guest = \"ga\", event-queue-depth = 2 }}\n\
         [tasks.b]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\n\
         vm = {{ guest = \"gb\" }}\n\
         [tasks.ga]\npriority = 5\nstack-size = 1024\ntask-slots = [\"a\"]\n\
         memory = [{{ name = \"ram\", size = 0x100000, dma = true }}]\n\
         [tasks.gb]\npriority = 5\nstack-size = 1024\ntask-slots = [\"b\"]\n\
         memory = [{{ name = \"ram\", size = 0x300000, dma = true }}]\n\
         {extra}"
    ))
}

/// A pci-server owning the ECAM, two VMs, then `extra`.
fn pci_app(extra: &str) -> String {
    app(&format!(
        "[tasks.pci]\ncrate = \"pci-server\"\npriority = 1\nstack-size = 1024\nmmio = [\"pcie-ecam\"]\n\
         [tasks.a]\npriority = 3\nstack-size = 1024\n\
         [tasks.b]\npriority = 3\nstack-size = 1024\n{extra}"
    ))
}

#[test]
fn vms_get_ram_at_the_top_and_their_constants() {
    let a = check(&two_vms(
        "[[streams]]\nsid = 0x10\nvm = \"a\"\nvsid = 0x1\n\
         [[streams]]\nsid = 0x18\nvm = \"b\"\nvsid = 0x1\n\
         [[streams]]\nsid = 0x20\nvm = \"b\"\n",
    ))
    .unwrap();
    assert_eq!(a.vms.len(), 2);
    let (va, vb) = (&a.vms[0], &a.vms[1]);
    assert_eq!((va.frontend, va.guest, va.event_queue_depth), (1, 3, 2));
    assert_eq!((vb.frontend, vb.guest, vb.event_queue_depth), (2, 4, 16));
    // RAM 0x4000_0000 + 256 MiB: a's 1 MiB in the top 2 MiB block, b's
    // 3 MiB below it, 2 MiB aligned.
    assert_eq!((va.ram_base, va.ram_size), (0x4fe0_0000, 0x10_0000));
    assert_eq!((vb.ram_base, vb.ram_size), (0x4fa0_0000, 0x30_0000));
    let ram = a.tasks[3].regions.iter().find(|r| r.name == "ram").unwrap();
    assert_eq!(ram.backing, Backing::VmRam { base: 0x4fe0_0000 });
    let src = crate::dist::app_config_source(&a);
    assert!(
        src.contains("pub const VMS: &[(u16, u16, u64, u64, u16)] = &[(1, 3, 0x4fe00000, 0x100000, 2), (2, 4, 0x4fa00000, 0x300000, 16)];"),
        "{src}"
    );
    assert!(
        src.contains("pub const VSIDS: &[(u32, u32)] = &[(0x10, 0x1), (0x18, 0x1)];"),
        "{src}"
    );
    // No VMs: empty tables.
    let plain = check(&app("")).unwrap();
    let src = crate::dist::app_config_source(&plain);
    assert!(src.contains("pub const VMS: &[(u16, u16, u64, u64, u16)] = &[];"));
    assert!(src.contains("pub const VSIDS: &[(u32, u32)] = &[];"));
}

#[test]
fn vm_guest_unknown_or_self() {
    let e = err(&app(
        "[tasks.a]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\nvm = { guest = \"nobody\" }\n",
    ));
    assert_eq!(e, "app.toml: tasks.a.vm.guest: unknown task \"nobody\"");
    let e = err(&app(
        "[tasks.a]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\nvm = { guest = \"a\" }\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.a.vm.guest: a frontend cannot be its own guest"
    );
}

#[test]
fn vm_frontend_crate_and_table_go_together() {
    let e = err(&app(
        "[tasks.a]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\n",
    ));
    assert!(
        e.starts_with("app.toml: tasks.a: runs vmm-frontend but has no `vm` table"),
        "{e}"
    );
    let e = err(&app(
        "[tasks.a]\npriority = 3\nstack-size = 1024\nvm = { guest = \"sup\" }\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.a.vm: only a task running crate \"vmm-frontend\" is a VM's frontend (this one runs \"a\")"
    );
}

#[test]
fn vm_guest_needs_dma_ram() {
    let fe = "[tasks.a]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\nvm = { guest = \"g\" }\n";
    let e = err(&app(&format!(
        "{fe}[tasks.g]\npriority = 5\nstack-size = 1024\nmemory = [{{ name = \"mem\", size = 0x1000, dma = true }}]\n"
    )));
    assert_eq!(
        e,
        "app.toml: tasks.g.memory: the guest of \"a\" needs a memory region named \"ram\" (its RAM, dma = true)"
    );
    let e = err(&app(&format!(
        "{fe}[tasks.g]\npriority = 5\nstack-size = 1024\nmemory = [{{ name = \"ram\", size = 0x1000 }}]\n"
    )));
    assert_eq!(
        e,
        "app.toml: tasks.g.memory: region \"ram\" must have dma = true (the VM's devices reach it)"
    );
    let e = err(&app(&format!(
        "{fe}[tasks.g]\npriority = 5\nstack-size = 1024\nmemory = [{{ name = \"ram\", size = 0x8200000, dma = true }}]\n"
    )));
    assert!(
        e.contains("does not fit: VMs' RAM is carved from the upper half of board RAM"),
        "{e}"
    );
}

#[test]
fn vm_guest_ranks_below_its_frontend() {
    let e = err(&app(
        "[tasks.a]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\nvm = { guest = \"g\" }\n\
         [tasks.g]\npriority = 3\nstack-size = 1024\nmemory = [{ name = \"ram\", size = 0x1000, dma = true }]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.a.vm.guest: \"g\" has priority 3, not strictly lower than its frontend's 3 (the guest sends to its frontend)"
    );
}

#[test]
fn vm_one_guest_per_frontend() {
    let e = err(&app(
        "[tasks.a]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\nvm = { guest = \"g\" }\n\
         [tasks.b]\ncrate = \"vmm-frontend\"\npriority = 3\nstack-size = 1024\nvm = { guest = \"g\" }\n\
         [tasks.g]\npriority = 5\nstack-size = 1024\nmemory = [{ name = \"ram\", size = 0x1000, dma = true }]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.b.vm.guest: \"g\" is already the guest of \"a\" (one guest per frontend, one frontend per guest)"
    );
    let e = err(&two_vms("").replace("guest = \"gb\"", "guest = \"a\""));
    assert_eq!(
        e,
        "app.toml: tasks.b.vm.guest: \"a\" is a VM's frontend itself"
    );
}

#[test]
fn vm_event_queue_depth_bounded() {
    let e = err(&two_vms("").replace("event-queue-depth = 2", "event-queue-depth = 0"));
    assert_eq!(
        e,
        "app.toml: tasks.a.vm.event-queue-depth: 0 is outside 1..=64"
    );
}

#[test]
fn vsids_unique_per_vm_and_only_on_vms() {
    let e = err(&two_vms(
        "[[streams]]\nsid = 0x10\nvm = \"a\"\nvsid = 0x18\n[[streams]]\nsid = 0x18\nvm = \"a\"\n",
    ));
    assert_eq!(
        e,
        "app.toml: streams[1].vsid: virtual stream 0x18 of VM \"a\" is also stream 0x10's (virtual StreamIDs are unique per VM)"
    );
    // The same vSID in two VMs is fine (checked above); on a task that
    // is no frontend it is refused.
    let e = err(&two_vms("[[streams]]\nsid = 0x10\nvm = \"ga\"\nvsid = 1\n"));
    assert_eq!(
        e,
        "app.toml: streams[0].vsid: stream 0x10 belongs to \"ga\", which is no VM's frontend (only a VM's streams have virtual StreamIDs)"
    );
}

#[test]
fn devices_place_bars_map_them_into_the_owner_and_derive_streams() {
    let a = check(&pci_app(
        "[[devices]]\nfunction = \"00:02.0\"\nowner = \"a\"\nid = \"1234:11e8\"\nbars = [0x10_0000]\n\
         [[devices]]\nfunction = \"00:03.0\"\nowner = \"b\"\nbars = [0x1000, 0, 0x10_0000]\n",
    ))
    .unwrap();
    assert_eq!(a.devices[0].id, 0x11e8_1234);
    assert_eq!(a.devices[0].bars[0], (0x1000_0000, 0x10_0000));
    // Natural alignment: b's 4 KiB BAR0 follows, its 1 MiB BAR2 is
    // aligned up.
    assert_eq!(a.devices[1].bars[0], (0x1010_0000, 0x1000));
    assert_eq!(a.devices[1].bars[2], (0x1020_0000, 0x10_0000));
    let names =
        |t: usize| -> Vec<String> { a.tasks[t].regions.iter().map(|r| r.name.clone()).collect() };
    assert_eq!(names(2), ["pci-00-02-0-bar0"]);
    assert_eq!(names(3), ["pci-00-03-0-bar0", "pci-00-03-0-bar2"]);
    // Streams derived: the function's requester id, the owner's VM.
    let s: Vec<(u32, usize)> = a.streams.iter().map(|s| (s.sid, s.vm)).collect();
    assert_eq!(s, [(0x10, 2), (0x18, 3)]);
}

#[test]
fn devices_checked() {
    let dev = |f: &str| format!("[[devices]]\n{f}\n");
    let e = |x: &str| err(&pci_app(x));
    assert!(e(&dev("function = \"0:2.0\"\nowner = \"a\"")).contains("is not a function"));
    assert!(e(&dev("function = \"00:20.0\"\nowner = \"a\"")).contains("is not a function"));
    assert!(e(&dev("function = \"00:02.8\"\nowner = \"a\"")).contains("is not a function"));
    assert!(e(&dev("function = \"01:02.0\"\nowner = \"a\"")).contains("outside the ECAM window"));
    assert!(e(&dev("function = \"00:02.0\"\nowner = \"z\"")).contains("unknown task \"z\""));
    assert!(e(&dev("function = \"00:02.0\"\nowner = \"a\"\nid = \"1234\"")).contains("vvvv:dddd"));
    assert!(e(&dev(
        "function = \"00:02.0\"\nowner = \"a\"\nbars = [0x800]"
    ))
    .contains("power of two"));
    assert!(e(&dev(
        "function = \"00:02.0\"\nowner = \"a\"\nbars = [0x200_0000]"
    ))
    .contains("does not fit"));
    assert!(e(&dev(
        "function = \"00:02.0\"\nowner = \"a\"\nbars = [0, 0, 0, 0, 0, 0, 0x1000]"
    ))
    .contains("at most 6"));
    let twice = format!(
        "{}{}",
        dev("function = \"00:02.0\"\nowner = \"a\""),
        dev("function = \"00:02.0\"\nowner = \"b\"")
    );
    assert!(e(&twice).contains("assigned twice"));
    // A function and its stream have the same VM.
    let x = e(&format!(
        "{}[[streams]]\nsid = 0x10\nvm = \"b\"\n",
        dev("function = \"00:02.0\"\nowner = \"a\"")
    ));
    assert!(x.contains("its stream 0x10 is assigned to \"b\""), "{x}");
    // Nobody else maps the ECAM or the whole BAR window.
    let x = err(&app(
        "[tasks.a]\npriority = 3\nstack-size = 1024\nmmio = [\"pcie-ecam\"]\n\
         [[devices]]\nfunction = \"00:02.0\"\nowner = \"a\"\n",
    ));
    assert!(x.contains("belongs to pci-server"), "{x}");
    let x = err(&app(
        "[tasks.a]\npriority = 3\nstack-size = 1024\n[[devices]]\nfunction = \"00:02.0\"\nowner = \"a\"\n",
    ));
    assert!(x.contains("no task runs pci-server"), "{x}");
    let x = e(&format!(
        "[tasks.c]\npriority = 3\nstack-size = 1024\nmmio = [\"pcie-mmio32\"]\n{}",
        dev("function = \"00:02.0\"\nowner = \"a\"")
    ));
    assert!(x.contains("the whole BAR window"), "{x}");
}

#[test]
fn a_guests_device_matches_its_frontends_stream() {
    let a = check(&app(
        "[tasks.pci]\ncrate = \"pci-server\"\npriority = 1\nstack-size = 1024\nmmio = [\"pcie-ecam\"]\n\
         [tasks.vmm-frontend-x]\npriority = 3\nstack-size = 1024\n\
         [tasks.guest-x]\npriority = 4\nstack-size = 1024\n\
         [[devices]]\nfunction = \"00:02.0\"\nowner = \"guest-x\"\n\
         [[streams]]\nsid = 0x10\nvm = \"vmm-frontend-x\"\n",
    ))
    .unwrap();
    assert_eq!(a.streams.len(), 1);
    assert_eq!(a.streams[0].vm, 2);
}

#[test]
fn stream_sid_duplicated() {
    let e = err(&app(
        "[tasks.vm]\npriority = 3\nstack-size = 1024\n\
         [[streams]]\nsid = 0x10\nvm = \"vm\"\n[[streams]]\nsid = 0x10\nvm = \"sup\"\n",
    ));
    assert_eq!(e, "app.toml: streams[1].sid: stream 0x10 is assigned twice");
}

#[test]
fn stream_vm_unknown() {
    let e = err(&app("[[streams]]\nsid = 8\nvm = \"guest\"\n"));
    assert_eq!(e, "app.toml: streams[0].vm: unknown task \"guest\"");
}

#[test]
fn too_many_tasks() {
    let mut extra = String::new();
    for i in 0..abi::MAX_TASKS {
        extra += &format!("[tasks.t{i}]\npriority = 1\nstack-size = 1024\n");
    }
    assert_eq!(
        err(&app(&extra)),
        "app.toml: tasks: 65 tasks, at most 64 are allowed"
    );
}

#[test]
fn va_window_overflow() {
    // The window after TASK_REGIONS is 1020 MiB; a 1 GiB region cannot fit.
    let e = err(&app(
        "[tasks.x]\npriority = 3\nstack-size = 1024\nmemory = [{ name = \"big\", size = 0x4000_0000 }]\n",
    ));
    assert_eq!(
        e,
        "app.toml: tasks.x.memory[0]: region \"big\" would end at 0x2040400000, past the task window's end 0x2040000000"
    );
}

#[test]
fn stack_size_checked() {
    let e = err(&app("[tasks.x]\npriority = 3\nstack-size = 0\n"));
    assert_eq!(
        e,
        "app.toml: tasks.x.stack-size: 0 must be a non-zero multiple of 16, at most 0x200000"
    );
}

#[test]
fn bad_task_name() {
    let e = err(&app("[tasks.\"a b\"]\npriority = 3\nstack-size = 1024\n"));
    assert_eq!(
        e,
        "app.toml: tasks.a b: \"a b\" is not a valid name (use letters, digits, '-' and '_')"
    );
}

#[test]
fn versions() {
    assert_eq!(parse_version("9.2"), Some((9, 2, 0)));
    assert_eq!(parse_version("10.0.2"), Some((10, 0, 2)));
    assert!(parse_version("10.0.2") > parse_version("9.2"));
    assert_eq!(parse_version("x"), None);
    assert_eq!(parse_version("1.2.3.4"), None);
}

#[test]
fn death_watchers_are_the_supervisors_posts_by_name() {
    // The demo: the supervisor posts iommu-server, prq-server, pci-server
    // and both frontends; the generated list names exactly those, in that
    // order.
    let a = check(include_str!("../../../app.toml")).unwrap();
    let src = dist_source(&a);
    assert!(
        src.contains("pub const DEATH_WATCHERS: &[&str] = &[\"iommu-server\", \"prq-server\", \"pci-server\", \"vmm-frontend-a\", \"vmm-frontend-b\"];"),
        "{src}"
    );
    // A frontend of any name is a watcher when the supervisor may post it.
    let renamed = include_str!("../../../app.toml").replace("vmm-frontend-a", "vm0-viommu");
    let a = check(&renamed).unwrap();
    assert!(dist_source(&a).contains("\"vm0-viommu\""));
}

#[test]
fn load_address_is_checked() {
    for (from, to) in [
        ("load-address = 0x4020_0000", "load-address = 0x4021_0000"),
        ("load-address = 0x4020_0000", "load-address = 0x3fe0_0000"),
        ("load-address = 0x4020_0000", "load-address = 0x5000_0000"),
    ] {
        let e = check_board(&BOARD.replace(from, to)).unwrap_err();
        assert!(
            e.starts_with("boards/qemu-virt.toml: load-address: ")
                && e.ends_with("must be 2 MiB aligned and inside ram (0x40000000..0x50000000)"),
            "{to}: {e}"
        );
    }
    let e = check_board(&BOARD.replace("load-address = 0x4020_0000\n", "")).unwrap_err();
    assert!(e.contains("missing field `load-address`"), "{e}");
}

#[test]
fn console_is_checked() {
    let a = check_board(BOARD).unwrap();
    assert_eq!(a.board.console.kind, ConsoleKind::Pl011);
    assert!(a.board.semihosting);
    let e = check_board(&BOARD.replace(
        "base = 0x0900_0000 }    # PL011",
        "base = 0x0a00_0000 }    # PL011",
    ))
    .unwrap_err();
    assert_eq!(
        e,
        "boards/qemu-virt.toml: console.base: 0xa000000 lies in no kernel-devices range (the kernel maps its console there)"
    );
    let e = check_board(&BOARD.replace("kind = \"pl011\"", "kind = \"16550\"")).unwrap_err();
    assert!(e.contains("unknown variant `16550`"), "{e}");
    // The old key is gone, not silently ignored.
    let e = check_board(&BOARD.replace("console = {", "uart = {")).unwrap_err();
    assert!(e.contains("unknown field `uart`"), "{e}");
}

#[test]
fn pci_host_bridge_and_iommu_map_are_checked() {
    let e = check_board(&BOARD.replace("host-bridge = \"ecam\"", "host-bridge = \"designware\""))
        .unwrap_err();
    assert_eq!(
        e,
        "boards/qemu-virt.toml: pci.config: required with host-bridge = \"designware\""
    );
    let map = "bar-window = \"pcie-mmio32\"\niommu-map = [{ rid-base = 0x0, sid-base = 0x10, length = 0x10 }, { rid-base = 0x8, sid-base = 0x40, length = 1 }]\n";
    let e = check_board(&BOARD.replace("bar-window = \"pcie-mmio32\"\n", map)).unwrap_err();
    assert_eq!(
        e,
        "boards/qemu-virt.toml: pci.iommu-map[1]: RIDs overlap pci.iommu-map[0]"
    );
    // A map moves the devices' StreamIDs: the demo's edu 00:02.0 (RID 0x10)
    // becomes StreamID 0x110 under a +0x100 map.
    let map = "bar-window = \"pcie-mmio32\"\niommu-map = [{ rid-base = 0x0, sid-base = 0x100, length = 0x100 }]\n";
    let board = BOARD.replace("bar-window = \"pcie-mmio32\"\n", map);
    let a = parse("app.toml", include_str!("../../../app.toml"), |_| {
        Ok(Some(("boards/qemu-virt.toml".to_string(), board.clone())))
    })
    .unwrap();
    let sids: Vec<(u16, u32)> = a.devices.iter().map(|d| (d.bdf, d.sid)).collect();
    assert_eq!(sids, [(0x10, 0x110), (0x18, 0x118)]);
    // A RID the map does not cover has no StreamID: refused.
    let map = "bar-window = \"pcie-mmio32\"\niommu-map = [{ rid-base = 0x0, sid-base = 0x100, length = 0x11 }]\n";
    let board = BOARD.replace("bar-window = \"pcie-mmio32\"\n", map);
    let e = parse("app.toml", include_str!("../../../app.toml"), |_| {
        Ok(Some(("boards/qemu-virt.toml".to_string(), board.clone())))
    })
    .unwrap_err();
    assert_eq!(
        e,
        "app.toml: devices[1].function: function 00:03.0 (RID 0x0018) has no StreamID in boards/qemu-virt.toml's pci.iommu-map"
    );
}

#[test]
fn a_board_without_qemu_cannot_run() {
    let start = BOARD.find("[qemu]").unwrap();
    let a = check_board(&BOARD[..start]).unwrap();
    let e = a.board.qemu().unwrap_err();
    assert_eq!(
        e,
        "board qemu-virt has no [qemu]: its image runs on hardware only (load image.bin at 0x40200000, docs/porting.md)"
    );
}

#[test]
fn kernel_devices_share_one_gib_apart_from_ram() {
    let e = check_board(&BOARD.replace(
        "{ base = 0x0900_0000, size = 0x0020_0000 },",
        "{ base = 0x0900_0000, size = 0x0020_0000 },\n    { base = 0x4800_0000, size = 0x0020_0000 },",
    ))
    .unwrap_err();
    assert_eq!(
        e,
        "boards/qemu-virt.toml: kernel-devices[2]: 0x48000000..0x48200000: all kernel devices must lie in one GiB, below 0x2000000000 and apart from RAM's (the kernel maps them with one 1 GiB table)"
    );
    let e = check_board(&BOARD.replace(
        "ram = { base = 0x4000_0000, size = 0x1000_0000 }",
        "ram = { base = 0x3800_0000, size = 0x1000_0000 }",
    ))
    .unwrap_err();
    assert!(
        e.starts_with("boards/qemu-virt.toml: ram: 0x38000000..0x48000000 must lie within one GiB"),
        "{e}"
    );
}
