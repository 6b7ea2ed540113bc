//! The pasid-alloc task: a table of `2^PASID_BITS` words on its stack
//! (sized at build time from app.toml's `[pasids]`), the app's roles, then
//! the library's receive loop. All logic is in the library, which the host
//! harness runs unchanged.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use pasid_alloc::app_config::{PASID_BITS, PASID_QUOTA, STREAMS, TASK_NAMES};
    use pasid_alloc::{serve, Config, Entry, PasidTable, Roles};
    use userlib::log;

    const N: usize = PasidTable::entries(PASID_BITS);

    pub fn run() -> ! {
        let mut storage = [Entry::default(); N];
        let cfg = Config {
            bits: PASID_BITS,
            quota: PASID_QUOTA,
            first: &[],
        };
        let roles = Roles::from_app(STREAMS, TASK_NAMES);
        match PasidTable::new(&mut storage, &cfg) {
            Ok(mut table) => {
                log!(
                    "pasid-alloc: {} PASIDs (bits {}, PASID 0 reserved), quota {} per VM",
                    table.space() - 1,
                    PASID_BITS,
                    PASID_QUOTA
                );
                serve(&mut table, roles)
            }
            Err(e) => {
                // app.toml's check makes this unreachable; never serve a
                // table that is not the configured one.
                log!("pasid-alloc: bad configuration: {:?}", e);
                userlib::sys_panic(b"pasid-alloc: bad configuration")
            }
        }
    }
}

userlib::task_main!(image::run);
