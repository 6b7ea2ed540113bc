//! Validation of an app against its board: turns the raw files into an
//! [`App`] (tasks, slots, regions, interrupts, streams, VMs, devices),
//! every error naming the file and the field.

use super::*;

pub(super) fn validate(
    file: &str,
    raw: AppToml,
    board: BoardToml,
    board_file: String,
) -> Result<App, String> {
    if raw.kernel.stack_size == 0 || !raw.kernel.stack_size.is_multiple_of(16) {
        return Err(format!(
            "{file}: kernel.stack-size: {} must be a non-zero multiple of 16",
            raw.kernel.stack_size
        ));
    }
    if raw.tasks.is_empty() {
        return Err(format!("{file}: tasks: the image has no tasks"));
    }
    if raw.tasks.len() > abi::MAX_TASKS {
        return Err(format!(
            "{file}: tasks: {} tasks, at most {} are allowed",
            raw.tasks.len(),
            abi::MAX_TASKS
        ));
    }

    // Capabilities first: the supervisor must be known before interrupts
    // are checked against its fault bit.
    let mut supervisor: Option<&str> = None;
    for (index, (name, t)) in raw.tasks.iter().enumerate() {
        let field = format!("tasks.{name}.caps");
        let mut seen = Vec::new();
        for c in &t.caps {
            let Some(cap) = Cap::parse(c) else {
                return Err(format!(
                    "{file}: {field}: unknown capability \"{c}\" (known: \"task-control\", \"shutdown\")"
                ));
            };
            if seen.contains(&cap) {
                return Err(format!("{file}: {field}: \"{c}\" is listed twice"));
            }
            seen.push(cap);
            if cap == Cap::TaskControl {
                if let Some(first) = supervisor {
                    return Err(format!(
                        "{file}: {field}: \"task-control\" is already given to task \"{first}\" (there is exactly one supervisor)"
                    ));
                }
                if index != 0 {
                    return Err(format!(
                        "{file}: {field}: the task with \"task-control\" (the supervisor) must be declared first (task index 0)"
                    ));
                }
                supervisor = Some(name);
            }
        }
    }
    let Some(supervisor_name) = supervisor else {
        return Err(format!(
            "{file}: tasks: no task has the \"task-control\" capability (the supervisor, declared first)"
        ));
    };
    // The supervisor outranks every task (so it runs as soon as a fault is
    // reported) and never sends: a send could block it on a server that it
    // is the one to restart.
    let sup = &raw.tasks[0];
    if sup.priority != 0 {
        return Err(format!(
            "{file}: tasks.{supervisor_name}.priority: the supervisor must have priority 0 (the highest), not {}",
            sup.priority
        ));
    }
    if !sup.task_slots.is_empty() {
        return Err(format!(
            "{file}: tasks.{supervisor_name}.task-slots: the supervisor must have no task-slots (it acts through task control and never sends)"
        ));
    }

    let devices = validate_devices(file, &raw, &board, &board_file)?;

    let mut tasks = Vec::new();
    let mut mmio_owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut irq_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (index, (name, t)) in raw.tasks.iter().enumerate() {
        let at = |field: &str| format!("{file}: tasks.{name}{field}");
        check_name(file, &format!("tasks.{name}"), name)?;
        let crate_name = t.crate_name.clone().unwrap_or_else(|| name.clone());
        check_name(file, &format!("tasks.{name}.crate"), &crate_name)?;
        if !(0..=LOWEST_PRIORITY).contains(&t.priority) {
            return Err(format!(
                "{}: {} is out of range (0 = highest ..= {LOWEST_PRIORITY})",
                at(".priority"),
                t.priority
            ));
        }
        if t.stack_size == 0 || !t.stack_size.is_multiple_of(16) || t.stack_size > MAX_IMAGE {
            return Err(format!(
                "{}: {} must be a non-zero multiple of 16, at most {MAX_IMAGE:#x}",
                at(".stack-size"),
                t.stack_size
            ));
        }

        let mut regions = Vec::new();
        let mut region_names: BTreeSet<&str> = BTreeSet::new();
        for p in &t.mmio {
            let Some(r) = board.peripherals.get(p) else {
                return Err(format!(
                    "{}: unknown peripheral \"{p}\" (not in {board_file})",
                    at(".mmio")
                ));
            };
            if let Some(a) = &r.aliases {
                if !t.mmio.contains(a) {
                    return Err(format!(
                        "{}: peripheral \"{p}\" aliases \"{a}\" on this board ({board_file}): only a task that maps \"{a}\" may map it; use a register window (`registers`)",
                        at(".mmio")
                    ));
                }
            }
            if let Some(owner) = mmio_owner.insert(p, name) {
                return Err(format!(
                    "{}: peripheral \"{p}\" is already given to task \"{owner}\"",
                    at(".mmio")
                ));
            }
            region_names.insert(p);
            regions.push(Region {
                name: p.clone(),
                va: 0,
                size: r.size,
                attributes: abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DEVICE,
                backing: Backing::Mmio {
                    peripheral: p.clone(),
                    base: r.base,
                },
            });
        }
        for (i, m) in t.memory.iter().enumerate() {
            let field = at(&format!(".memory[{i}]"));
            check_name(file, &format!("tasks.{name}.memory[{i}].name"), &m.name)?;
            if m.name == "text" || m.name == "data" {
                return Err(format!(
                    "{field}.name: \"{}\" is reserved for the task's own image",
                    m.name
                ));
            }
            if !region_names.insert(&m.name) {
                return Err(format!(
                    "{field}.name: region \"{}\" is defined twice in this task",
                    m.name
                ));
            }
            if m.size == 0 {
                return Err(format!("{field}.size: must not be zero"));
            }
            if !m.size.is_multiple_of(PAGE) {
                return Err(format!(
                    "{field}.size: {:#x} is not a multiple of 4 KiB",
                    m.size
                ));
            }
            let mut attributes = abi::REGION_READ | abi::REGION_WRITE;
            if m.dma {
                attributes |= abi::REGION_DMA;
            }
            if m.cache == Cache::Nc {
                attributes |= abi::REGION_UNCACHED;
            }
            regions.push(Region {
                name: m.name.clone(),
                va: 0,
                size: m.size,
                attributes,
                backing: Backing::Memory,
            });
        }
        // The BAR windows of its assigned PCI functions (exactly those
        // pages; nobody else maps them).
        for d in devices.iter().filter(|d| d.owner == index) {
            for (b, &(base, size)) in d.bars.iter().enumerate() {
                if size == 0 {
                    continue;
                }
                let name = d.bar_region(b);
                if regions.iter().any(|r| r.name == name) {
                    return Err(format!(
                        "{}: region \"{name}\" is defined twice in this task",
                        at("")
                    ));
                }
                regions.push(Region {
                    name,
                    va: 0,
                    size,
                    attributes: abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DEVICE,
                    backing: Backing::Mmio {
                        peripheral: board
                            .pci
                            .as_ref()
                            .map(|p| p.bar_window.clone())
                            .unwrap_or_default(),
                        base,
                    },
                });
            }
        }
        // Virtual addresses: each region at the next 2 MiB boundary.
        let mut cursor = TASK_REGIONS;
        for (i, r) in regions.iter_mut().enumerate() {
            let va = cursor.div_ceil(SLOT) * SLOT;
            let end = va.saturating_add(r.size);
            if end > TASK_END {
                let field = if i < t.mmio.len() {
                    ".mmio".to_string()
                } else if i < t.mmio.len() + t.memory.len() {
                    format!(".memory[{}]", i - t.mmio.len())
                } else {
                    " (a device BAR)".to_string()
                };
                return Err(format!(
                    "{}: region \"{}\" would end at {end:#x}, past the task window's end {TASK_END:#x}",
                    at(&field),
                    r.name
                ));
            }
            r.va = va;
            cursor = end;
        }

        let is_supervisor = Some(name.as_str()) == supervisor;
        let mut irqs: Vec<TaskIrq> = Vec::new();
        for (irq_name, &bits) in &t.interrupts {
            let field = at(&format!(".interrupts.{irq_name}"));
            let Some(irq) = board.interrupts.get(irq_name) else {
                return Err(format!(
                    "{}: unknown interrupt \"{irq_name}\" (not in {board_file})",
                    at(".interrupts")
                ));
            };
            if let Some(owner) = irq_owner.insert(irq_name, name) {
                return Err(format!(
                    "{}: interrupt \"{irq_name}\" is already owned by task \"{owner}\"",
                    at(".interrupts")
                ));
            }
            if bits == 0 {
                return Err(format!("{field}: notification bits must not be 0"));
            }
            if is_supervisor && bits & abi::SUPERVISOR_FAULT_BIT != 0 {
                return Err(format!(
                    "{field}: bit 0 is reserved on the supervisor for fault notifications"
                ));
            }
            if let Some(other) = irqs.iter().find(|o| o.notification & bits != 0) {
                return Err(format!(
                    "{field}: bits {:#x} are also used by interrupt \"{}\"",
                    other.notification & bits,
                    other.name
                ));
            }
            irqs.push(TaskIrq {
                name: irq_name.clone(),
                intid: irq.intid,
                notification: bits,
                edge: irq.trigger == Trigger::Edge,
            });
        }

        let mut windows: Vec<RegWindow> = Vec::new();
        if t.registers.len() > MAX_REG_WINDOWS {
            return Err(format!(
                "{}: {} windows, at most {MAX_REG_WINDOWS}",
                at(".registers"),
                t.registers.len()
            ));
        }
        for (i, w) in t.registers.iter().enumerate() {
            let field = at(&format!(".registers[{i}]"));
            check_name(file, &format!("tasks.{name}.registers[{i}].name"), &w.name)?;
            if windows.iter().any(|o| o.name == w.name) {
                return Err(format!("{field}.name: \"{}\" is defined twice", w.name));
            }
            let Some(p) = board.peripherals.get(&w.peripheral) else {
                return Err(format!(
                    "{field}.peripheral: unknown peripheral \"{}\" (not in {board_file})",
                    w.peripheral
                ));
            };
            let Some(set) = p.register_set.as_deref().and_then(register_set) else {
                return Err(format!(
                    "{field}.peripheral: \"{}\" has no register-set in {board_file}",
                    w.peripheral
                ));
            };
            if w.regs.is_empty() || w.regs.len() > MAX_WINDOW_REGS {
                return Err(format!(
                    "{field}.regs: {} registers (1..={MAX_WINDOW_REGS})",
                    w.regs.len()
                ));
            }
            let mut regs: Vec<(String, u32)> = Vec::new();
            for r in &w.regs {
                let Some(&(_, off)) = set.iter().find(|(n, _)| n == r) else {
                    let known: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "{field}.regs: \"{r}\" is not a register of \"{}\" (known: {})",
                        w.peripheral,
                        known.join(", ")
                    ));
                };
                if regs.iter().any(|(n, _)| n == r) {
                    return Err(format!("{field}.regs: \"{r}\" is listed twice"));
                }
                regs.push((r.clone(), off));
            }
            windows.push(RegWindow {
                name: w.name.clone(),
                peripheral: w.peripheral.clone(),
                base: p.base,
                regs,
            });
        }

        tasks.push(Task {
            index,
            name: name.clone(),
            crate_name,
            priority: t.priority as u8,
            stack_size: t.stack_size,
            start: t.start,
            slots: Vec::new(),
            posts: Vec::new(),
            windows,
            caps: Cap::ALL
                .into_iter()
                .filter(|c| t.caps.iter().any(|n| n == c.name()))
                .collect(),
            regions,
            irqs,
        });
    }

    // Task slots: only to known, strictly higher-priority tasks.
    for (index, (name, t)) in raw.tasks.iter().enumerate() {
        let field = format!("{file}: tasks.{name}.task-slots");
        let mut slots = Vec::new();
        for s in &t.task_slots {
            if s == name {
                return Err(format!("{field}: a task cannot have a slot to itself"));
            }
            let Some(target) = raw.tasks.get_index_of(s) else {
                return Err(format!("{field}: unknown task \"{s}\""));
            };
            if slots.contains(&target) {
                return Err(format!("{field}: \"{s}\" is listed twice"));
            }
            let (mine, theirs) = (tasks[index].priority, tasks[target].priority);
            if theirs >= mine {
                return Err(format!(
                    "{field}: \"{s}\" has priority {theirs}, not strictly higher than this task's {mine} (a task may only send to smaller priority numbers)"
                ));
            }
            slots.push(target);
        }
        tasks[index].slots = slots;

        // Post-only peers: any priority (a server notifies the tasks that
        // call it); never a send capability.
        let field = format!("{file}: tasks.{name}.posts");
        let mut posts = Vec::new();
        for s in &t.posts {
            if s == name {
                return Err(format!("{field}: a task cannot post to itself"));
            }
            let Some(target) = raw.tasks.get_index_of(s) else {
                return Err(format!("{field}: unknown task \"{s}\""));
            };
            if posts.contains(&target) {
                return Err(format!("{field}: \"{s}\" is listed twice"));
            }
            if tasks[index].slots.contains(&target) {
                return Err(format!(
                    "{field}: \"{s}\" is also in task-slots (a slot already grants post)"
                ));
            }
            posts.push(target);
        }
        tasks[index].posts = posts;
    }

    // A peripheral behind a register window is reached through the kernel
    // only: no task may also map it.
    for t in &tasks {
        for w in &t.windows {
            if let Some(owner) = mmio_owner.get(w.peripheral.as_str()) {
                return Err(format!(
                    "{file}: tasks.{}.registers: peripheral \"{}\" is mapped by task \"{owner}\" (a register window's peripheral must not be mapped)",
                    t.name, w.peripheral
                ));
            }
        }
    }

    let mut streams = Vec::new();
    let mut sids: BTreeSet<u32> = BTreeSet::new();
    for (i, s) in raw.streams.iter().enumerate() {
        if !sids.insert(s.sid) {
            return Err(format!(
                "{file}: streams[{i}].sid: stream {:#x} is assigned twice",
                s.sid
            ));
        }
        let Some(vm) = raw.tasks.get_index_of(&s.vm) else {
            return Err(format!(
                "{file}: streams[{i}].vm: unknown task \"{}\"",
                s.vm
            ));
        };
        streams.push(Stream {
            sid: s.sid,
            vm,
            vsid: s.vsid,
        });
    }
    // A function and its stream belong to the same VM: the stream is
    // derived from the device table when `[[streams]]` does not name it,
    // and checked when it does.
    for (i, d) in devices.iter().enumerate() {
        match streams.iter().find(|s| s.sid == d.sid) {
            None => streams.push(Stream {
                sid: d.sid,
                vm: d.owner,
                vsid: None,
            }),
            Some(s) if same_vm(&raw, s.vm, d.owner) => {}
            Some(s) => {
                return Err(format!(
                    "{file}: devices[{i}].owner: \"{}\" owns function {}, but its stream {:#x} is assigned to \"{}\" in [[streams]] (a function and its stream have the same VM)",
                    raw.tasks.get_index(d.owner).map(|(n, _)| n.as_str()).unwrap_or("?"),
                    raw.devices[i].function,
                    d.sid,
                    raw.tasks.get_index(s.vm).map(|(n, _)| n.as_str()).unwrap_or("?"),
                ));
            }
        }
    }
    // The ECAM belongs to pci-server alone and the BAR window to nobody
    // (each assigned BAR is mapped into its owner): a task holding either
    // could re-program or reach every function on the bus.
    let pci_ecam = match &board.pci {
        None => None,
        Some(pci) => {
            let holders: Vec<&Task> = tasks
                .iter()
                .filter(|t| {
                    t.regions.iter().any(|r| {
                        matches!(&r.backing, Backing::Mmio { .. }) && r.name == pci.config_space()
                    })
                })
                .collect();
            match holders.as_slice() {
                [] if !devices.is_empty() => {
                    return Err(format!(
                        "{file}: devices: no task runs pci-server with mmio = [\"{}\"] to own the configuration space",
                        pci.config_space()
                    ))
                }
                [] => {}
                [t] if t.crate_name == "pci-server" => {}
                [t, ..] => {
                    return Err(format!(
                        "{file}: tasks.{}.mmio: \"{}\" (the configuration space) belongs to pci-server only (docs/devices.md)",
                        t.name,
                        pci.config_space()
                    ))
                }
            }
            if let Some(owner) = mmio_owner.get(pci.bar_window.as_str()) {
                return Err(format!(
                    "{file}: tasks.{owner}.mmio: \"{}\" (the whole BAR window) may not be mapped: each owner gets its functions' BARs through [[devices]] (docs/devices.md)",
                    pci.bar_window
                ));
            }
            (!devices.is_empty()).then(|| pci.config_space().to_string())
        }
    };

    // Coherency is a board fact the SMMU's driver cannot learn safely by
    // itself (IDR0.COHACC describes the SMMU, not the integration):
    // refuse to build an SMMU-driving app on a board that does not say.
    let drives_smmu = raw
        .tasks
        .values()
        .any(|t| t.mmio.iter().any(|m| m == "smmu-page0"));
    let smmu_coherent = match (drives_smmu, board.smmu_coherent) {
        (false, _) => false,
        (true, Some(c)) => c && !raw.smmu.force_non_coherent,
        (true, None) => {
            return Err(format!(
                "{board_file}: smmu-coherent: not stated, and {file} drives the SMMU: say `smmu-coherent = true` if the SMMU's table walks and queue accesses snoop the CPU caches (the firmware's dma-coherent), else false (docs/porting.md)"
            ))
        }
    };

    let vms = validate_vms(file, &raw, &mut tasks, &streams, &board)?;

    let pasids = match raw.pasids {
        None => (0, 0),
        Some(p) => {
            let Some(alloc) = tasks
                .iter()
                .find(|t| t.name == "pasid-alloc" || t.crate_name == "pasid-alloc")
            else {
                return Err(format!(
                    "{file}: pasids: no task runs pasid-alloc to serve the PASID space"
                ));
            };
            if p.bits > MAX_PASID_BITS {
                return Err(format!(
                    "{file}: pasids.bits: {} is above {MAX_PASID_BITS} (PASIDs are 20 bits)",
                    p.bits
                ));
            }
            let smmu_user = raw
                .tasks
                .values()
                .any(|t| t.mmio.iter().any(|m| m == "smmu-page0"));
            if smmu_user && p.bits > board.smmu_ssid_bits {
                return Err(format!(
                    "{file}: pasids.bits: {} is above the SMMU's SSIDSIZE ({} in {board_file}: smmu-ssid-bits)",
                    p.bits, board.smmu_ssid_bits
                ));
            }
            // The table (8 bytes per PASID: pasid_alloc::BYTES_PER_PASID)
            // lives on the task's stack.
            let need = (8u64 << p.bits) + 4096;
            if alloc.stack_size < need {
                return Err(format!(
                    "{file}: tasks.{}.stack-size: {} cannot hold the 2^{} PASID table ({need} bytes needed)",
                    alloc.name, alloc.stack_size, p.bits
                ));
            }
            (p.bits, p.quota)
        }
    };

    let mut cases: Vec<String> = Vec::new();
    for (i, c) in raw.expect.cases.iter().enumerate() {
        if c.is_empty() || c.chars().any(char::is_whitespace) {
            return Err(format!(
                "{file}: expect.cases[{i}]: \"{c}\" is not a valid case name (non-empty, no spaces)"
            ));
        }
        if cases.contains(c) {
            return Err(format!(
                "{file}: expect.cases[{i}]: \"{c}\" is listed twice"
            ));
        }
        cases.push(c.clone());
    }

    Ok(App {
        name: raw.name,
        file: file.to_string(),
        board,
        board_file,
        kernel_stack_size: raw.kernel.stack_size,
        tasks,
        streams,
        vms,
        devices,
        pci_ecam,
        cases,
        bench: raw.expect.bench,
        boot_flat: raw.expect.boot_flat,
        pasids,
        smmu_coherent,
        smmu_forced_non_coherent: raw.smmu.force_non_coherent,
    })
}
