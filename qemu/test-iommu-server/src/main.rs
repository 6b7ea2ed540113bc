//! The iommu-server of the `smmu_*` QEMU test image (qemu/apps/smmu.toml:
//! `[tasks.iommu-server] crate = "test-iommu-server"`): the production
//! start-up (`iommu_server::startup::run_image`), plus, before serving, one
//! deliberately illegal command to prove on QEMU's SMMU that the command
//! queue recovers from CERROR_ILL (`smmu_cmdq_illegal_command_recovered`
//! checks the counters). The production task (task/iommu-server) never
//! does this: on real hardware it raises a global error.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use iommu_server::app_config::{STREAMS, TASK_NAMES};
    use iommu_server::startup;

    pub fn run() -> ! {
        startup::run_image(STREAMS, TASK_NAMES, |s| startup::prove_command_recovery(s))
    }
}

userlib::task_main!(image::run);
