//! The iommu-server task: the library's image start-up
//! (`iommu_server::startup::run_image`: find the regions, probe and
//! initialise the SMMU fail closed, serve) with nothing run before serving.
//! All logic is in the library, which the host harness runs unchanged.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use iommu_server::app_config::{STREAMS, TASK_NAMES};

    pub fn run() -> ! {
        // Production issues no command to test the SMMU: an illegal one
        // would raise a global error on real hardware at every boot. The
        // test image's server (qemu/test-iommu-server) proves recovery.
        iommu_server::startup::run_image(STREAMS, TASK_NAMES, |_| {})
    }
}

userlib::task_main!(image::run);
