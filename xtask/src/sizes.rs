//! `sizes`: per-task and kernel sizes, from the image's manifest.

use crate::manifest::Manifest;

pub fn print(m: &Manifest) {
    println!(
        "image {:?} (board {}, from {}): image.elf {} bytes, kernel .text {} bytes, kernel stack {} bytes, {} page-table pages",
        m.name, m.board, m.app, m.image_size, m.kernel_text_size, m.kernel_stack_size, m.page_table_pages
    );
    println!(
        "image.bin {} bytes: load at {:#x}, entry {:#x} (flat, loadable bytes only)",
        m.image_bin_size, m.load_address, m.entry
    );
    println!(
        "{:>3}  {:<20} {:>4} {:>10} {:>10} {:>10} {:>12}",
        "#", "task", "prio", "text", "data", "stack", "other regions"
    );
    let (mut text, mut data, mut other) = (0, 0, 0);
    for t in &m.tasks {
        // Regions backed by the kernel image beyond text and data (DMA
        // buffers etc.) cost RAM too; MMIO costs nothing.
        let extra: u64 = t
            .regions
            .iter()
            .skip(2)
            .filter(|r| r.source == "static")
            .map(|r| r.size)
            .sum();
        println!(
            "{:>3}  {:<20} {:>4} {:>10} {:>10} {:>10} {:>12}",
            t.index, t.name, t.priority, t.text_size, t.data_size, t.stack_size, extra
        );
        text += t.text_size;
        data += t.data_size;
        other += extra;
    }
    println!(
        "     {:<20} {:>4} {:>10} {:>10} {:>10} {:>12}",
        "total", "", text, data, "", other
    );
}
