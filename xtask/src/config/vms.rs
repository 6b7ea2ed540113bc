//! `vm` tables: a VM is a vmm-frontend task and its guest (docs/vmm-frontend.md).

use super::*;

/// VMs (`vm` tables): each frontend runs the vmm-frontend crate and names
/// one guest, which exists, is no frontend itself, is nobody else's guest,
/// ranks strictly below its frontend and has a DMA region `ram` — the VM's
/// RAM, placed at the top of board RAM (2 MiB aligned, in declaration
/// order). The virtual StreamIDs of a VM's streams are unique within it.
pub(super) fn validate_vms(
    file: &str,
    raw: &AppToml,
    tasks: &mut [Task],
    streams: &[Stream],
    board: &BoardToml,
) -> Result<Vec<Vm>, String> {
    let mut vms: Vec<Vm> = Vec::new();
    let mut ram_top = board.ram.base + board.ram.size;
    for (index, (name, t)) in raw.tasks.iter().enumerate() {
        let at = format!("{file}: tasks.{name}");
        let runs_frontend = tasks[index].crate_name == VMM_FRONTEND_CRATE;
        let Some(vm) = &t.vm else {
            if runs_frontend {
                return Err(format!(
                    "{at}: runs {VMM_FRONTEND_CRATE} but has no `vm` table (vm = {{ guest = \"...\" }})"
                ));
            }
            continue;
        };
        if !runs_frontend {
            return Err(format!(
                "{at}.vm: only a task running crate \"{VMM_FRONTEND_CRATE}\" is a VM's frontend (this one runs \"{}\")",
                tasks[index].crate_name
            ));
        }
        if !(1..=MAX_EVENT_QUEUE_DEPTH).contains(&vm.event_queue_depth) {
            return Err(format!(
                "{at}.vm.event-queue-depth: {} is outside 1..={MAX_EVENT_QUEUE_DEPTH}",
                vm.event_queue_depth
            ));
        }
        let Some(guest) = raw.tasks.get_index_of(&vm.guest) else {
            return Err(format!("{at}.vm.guest: unknown task \"{}\"", vm.guest));
        };
        if guest == index {
            return Err(format!("{at}.vm.guest: a frontend cannot be its own guest"));
        }
        if raw.tasks[guest].vm.is_some() {
            return Err(format!(
                "{at}.vm.guest: \"{}\" is a VM's frontend itself",
                vm.guest
            ));
        }
        if let Some(other) = vms.iter().find(|v| v.guest == guest) {
            return Err(format!(
                "{at}.vm.guest: \"{}\" is already the guest of \"{}\" (one guest per frontend, one frontend per guest)",
                vm.guest, tasks[other.frontend].name
            ));
        }
        let (fp, gp) = (tasks[index].priority, tasks[guest].priority);
        if gp <= fp {
            return Err(format!(
                "{at}.vm.guest: \"{}\" has priority {gp}, not strictly lower than its frontend's {fp} (the guest sends to its frontend)",
                vm.guest
            ));
        }
        let Some(ram) = tasks[guest]
            .regions
            .iter_mut()
            .find(|r| r.name == VM_RAM_REGION && r.backing == Backing::Memory)
        else {
            return Err(format!(
                "{file}: tasks.{}.memory: the guest of \"{name}\" needs a memory region named \"{VM_RAM_REGION}\" (its RAM, dma = true)",
                vm.guest
            ));
        };
        if ram.attributes & abi::REGION_DMA == 0 {
            return Err(format!(
                "{file}: tasks.{}.memory: region \"{VM_RAM_REGION}\" must have dma = true (the VM's devices reach it)",
                vm.guest
            ));
        }
        // The carve-out: below the previous VM's, 2 MiB aligned, and no
        // lower than half of RAM (the kernel image, with every task's text,
        // data and memory, lives in the lower half; the kernel also refuses
        // at boot a task region overlapping its image).
        let base = (ram_top - ram.size.min(ram_top)) & !(SLOT - 1);
        let floor = board.ram.base + board.ram.size / 2;
        if ram.size > ram_top - board.ram.base || base < floor {
            return Err(format!(
                "{file}: tasks.{}.memory: VM RAM \"{VM_RAM_REGION}\" ({:#x} bytes) does not fit: VMs' RAM is carved from the upper half of board RAM ({})",
                vm.guest,
                ram.size,
                range_str(floor, board.ram.base + board.ram.size - floor)
            ));
        }
        ram.backing = Backing::VmRam { base };
        ram_top = base;
        vms.push(Vm {
            frontend: index,
            guest,
            ram_base: base,
            ram_size: ram.size,
            event_queue_depth: vm.event_queue_depth,
        });
    }
    for (i, s) in streams.iter().enumerate() {
        if s.vsid.is_some() && !vms.iter().any(|vm| vm.frontend == s.vm) {
            return Err(format!(
                "{file}: streams[{i}].vsid: stream {:#x} belongs to \"{}\", which is no VM's frontend (only a VM's streams have virtual StreamIDs)",
                s.sid, tasks[s.vm].name
            ));
        }
    }
    for vm in &vms {
        let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
        for (i, s) in streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.vm == vm.frontend)
        {
            let v = s.vsid.unwrap_or(s.sid);
            if let Some(prev) = seen.insert(v, s.sid) {
                return Err(format!(
                    "{file}: streams[{i}].vsid: virtual stream {v:#x} of VM \"{}\" is also stream {prev:#x}'s (virtual StreamIDs are unique per VM)",
                    tasks[vm.frontend].name
                ));
            }
        }
    }
    Ok(vms)
}
