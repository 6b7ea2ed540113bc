//! The kernel binary: the kernel library plus the static configuration that
//! `cargo xtask dist` generated from app.toml (`KERNEL_CONFIG`).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use core::mem::MaybeUninit;
    use kern::arch::Page;
    use kern::config::*;
    use kern::task::Task;

    include!(env!("KERNEL_CONFIG"));

    static mut TASK_TABLE: MaybeUninit<[Task; TASKS.len()]> = MaybeUninit::uninit();
    static mut PAGE_TABLES: [Page; PAGE_TABLE_PAGES] = [const { Page::ZERO }; PAGE_TABLE_PAGES];

    /// The kernel's stack (app.toml `[kernel] stack-size`). kernel.x places
    /// `.kstack` last and defines `__kernel_stack_top` at its end.
    #[link_section = ".kstack"]
    #[used]
    static mut KERNEL_STACK: PageAligned<[u8; KERNEL_STACK_SIZE]> =
        PageAligned([0; KERNEL_STACK_SIZE]);

    #[no_mangle]
    extern "C" fn kernel_entry() -> ! {
        // SAFETY: called once by the boot code before anything else runs;
        // these statics are handed to the kernel and never touched here
        // again.
        unsafe {
            let table = &mut *core::ptr::addr_of_mut!(TASK_TABLE);
            let p = table.as_mut_ptr() as *mut Task;
            for (i, d) in TASKS.iter().enumerate() {
                p.add(i).write(Task::new(d));
            }
            let tasks = table.assume_init_mut();
            let pages = &mut *core::ptr::addr_of_mut!(PAGE_TABLES);
            kern::arch::start(
                Config {
                    board: &BOARD,
                    tasks: &TASKS,
                    irqs: &IRQS,
                    trace_rings: &TRACE_RINGS,
                },
                tasks,
                pages,
            )
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        kern::arch::kernel_panic()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "the kernel runs only on aarch64-unknown-none: build the image with `cargo xtask dist`"
    );
    std::process::exit(2);
}
