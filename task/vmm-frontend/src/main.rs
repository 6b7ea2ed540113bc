//! The vmm-frontend task: one binary, one instance per VM. It finds its own
//! VM in the app's `VMS` (the entry whose guest it may post), builds the
//! frontend from `VMS`, `STREAMS` and `VSIDS` and serves its guest. All
//! logic is in the library, which the host harness runs unchanged.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use userlib::log;
    use vmm_frontend::app_config::{STREAMS, TASK_NAMES, VMS, VSIDS};
    use vmm_frontend::{own_vm, peers, serve, vm_streams, Config, Frontend, MAX_STREAMS};

    pub fn run() -> ! {
        let (Some(vm), Some(peers)) = (own_vm(VMS, TASK_NAMES), peers()) else {
            // No VM of this task in the app (or no iommu-server slot):
            // serve nothing; the guest's calls block on a task that never
            // receives, which the build's checks make unreachable.
            log!("vmm-frontend: no VM entry or no iommu-server slot: not serving");
            loop {
                userlib::sys_recv_notification(0);
            }
        };
        let &(frontend, guest, ram_pa, ram_size, depth) = vm;
        let mut streams = [(0u32, 0u32); MAX_STREAMS];
        let n = vm_streams(frontend, STREAMS, VSIDS, &mut streams);
        let cfg = Config {
            guest,
            ram_pa,
            ram_size,
            ram_ipa: vmm_frontend::IMAGE_RAM_IPA,
            event_depth: depth,
            streams: &streams[..n],
            caching_mode: true,
        };
        log!(
            "vmm-frontend: VM of guest task {}: RAM PA {:#x} + {:#x} at IPA {:#x}, {} streams, vEVENTQ {}",
            guest,
            ram_pa,
            ram_size,
            cfg.ram_ipa,
            n,
            depth
        );
        let mut fe = Frontend::new(&cfg, peers);
        serve(&mut fe)
    }
}

userlib::task_main!(image::run);
