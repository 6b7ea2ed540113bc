//! Boards: every board file builds an image (the `board::<name>` cases of
//! `cargo xtask test`), and the proof that a board's facts reach the image
//! only through the board file (the unit test
//! `generated_config_differs_only_where_the_board_says`, docs/porting.md
//! "Board independence").

use std::path::Path;

use crate::config::App;
use crate::dist::{self, BuiltTask, BRINGUP_APP};
use crate::runner::Counts;
use crate::ws::Workspace;

/// The name of the test case that builds `board`'s image.
pub fn case_name(board: &str) -> String {
    format!("board::{board}")
}

/// The board names: `boards/*.toml`, sorted.
pub fn board_names(ws: &Workspace) -> Result<Vec<String>, String> {
    let dir = ws.boards_dir();
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// Builds the bring-up app (`boards/apps/bringup.toml`) for `board` and
/// checks the flat image: it starts at the board's load address, is entered
/// there (`_start` is the first byte of .text), and fits in the board's
/// RAM above it. Returns a one-line summary.
pub fn build_board_image(ws: &Workspace, board: &str) -> Result<String, String> {
    let d = dist::dist_for_board(ws, &ws.root.join(BRINGUP_APP), board)?;
    let b = &d.app.board;
    if d.load_address != b.load_address {
        return Err(format!(
            "image.bin loads at {:#x}, the board's load-address is {:#x}",
            d.load_address, b.load_address
        ));
    }
    if d.entry != b.load_address {
        return Err(format!(
            "entry {:#x} is not the load address {:#x} (a boot loader jumps to the first byte)",
            d.entry, b.load_address
        ));
    }
    let room = b.ram.base + b.ram.size - b.load_address;
    if d.image_bin_size == 0 || d.image_bin_size > room {
        return Err(format!(
            "image.bin is {} bytes, RAM above the load address is {room:#x}",
            d.image_bin_size
        ));
    }
    Ok(format!(
        "{} ({} bytes, load and entry {:#x})",
        ws.show(&d.image_bin),
        d.image_bin_size,
        d.load_address
    ))
}

/// The `board::<name>` cases selected by `filter`.
pub fn list(ws: &Workspace, filter: Option<&str>) -> Result<Vec<String>, String> {
    Ok(board_names(ws)?
        .iter()
        .map(|b| case_name(b))
        .filter(|n| filter.is_none_or(|f| n.contains(f)))
        .collect())
}

/// Runs the selected `board::<name>` cases.
pub fn run(ws: &Workspace, filter: Option<&str>) -> Result<Counts, String> {
    let mut counts = Counts::default();
    for board in board_names(ws)? {
        let name = case_name(&board);
        if !filter.is_none_or(|f| name.contains(f)) {
            continue;
        }
        match build_board_image(ws, &board) {
            Ok(summary) => {
                println!("{name} ... ok: {summary}");
                counts.passed += 1;
            }
            Err(e) => {
                println!("{name} ... FAILED ({e})");
                counts.failed += 1;
            }
        }
    }
    Ok(counts)
}

/// Everything the build generates for an image from its app and board: the
/// kernel's table, the tasks' `app_config.rs` and the linker's memory map.
/// The kernel and task binaries are built from these and from source that
/// names no board (docs/porting.md): two boards' images differ only where
/// these files do.
pub fn generated(app: &App, built: &[BuiltTask]) -> Result<String, String> {
    Ok(format!(
        "{}\n{}\n{}",
        crate::gen::kernel_config(app, built)?,
        dist::app_config_source(app),
        crate::gen::kernel_memory(app)
    ))
}

/// Splits generated text into tokens: identifiers (with their digits),
/// numbers (decimal or 0x hex), and single other characters; whitespace
/// dropped.
pub fn tokens(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            // An identifier (with its digits) or a number (with its 0x
            // prefix and hex digits).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            i = (i + 1).min(b.len());
        } else {
            // One character, however many bytes it takes.
            i += s[i..].chars().next().map_or(1, char::len_utf8);
        }
        out.push(&s[start..i]);
    }
    out
}

/// The value of a number token, if it is one.
pub fn number(t: &str) -> Option<u64> {
    let t = t.replace('_', "");
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Compares two generated texts token by token. Every token pair that
/// differs must be numbers accepted by `explained(a, b)`; returns the
/// differing pairs, or the first unexplained difference with its context.
pub fn differences(
    a: &str,
    b: &str,
    explained: impl Fn(u64, u64) -> bool,
) -> Result<Vec<(u64, u64)>, String> {
    let (ta, tb) = (tokens(a), tokens(b));
    if ta.len() != tb.len() {
        return Err(format!(
            "the generated files differ in shape: {} tokens against {}",
            ta.len(),
            tb.len()
        ));
    }
    let mut out = Vec::new();
    for (i, (x, y)) in ta.iter().zip(&tb).enumerate() {
        if x == y {
            continue;
        }
        let context = ta[i.saturating_sub(8)..(i + 4).min(ta.len())].join(" ");
        match (number(x), number(y)) {
            (Some(p), Some(q)) if explained(p, q) => out.push((p, q)),
            _ => {
                return Err(format!(
                    "token {i}: {x} became {y}, which the board change does not explain (… {context} …)"
                ))
            }
        }
    }
    Ok(out)
}

/// Reads `boards/<name>.toml` from the workspace's source tree (unit tests
/// run in xtask/).
pub fn board_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../boards")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::PathBuf;

    /// Where the variant board moves every address, and how far it moves
    /// every interrupt: 32 GiB keeps every 2 MiB / 4 KiB alignment; +4
    /// keeps every INTID distinct, in its class and below 1020.
    const DELTA: u64 = 0x8_0000_0000;
    const IRQ_DELTA: u64 = 4;

    /// `qemu-virt` with every address (`base`, `load-address`, the GIC's
    /// frames) moved by DELTA and every INTID by IRQ_DELTA: the board file
    /// a port to a different memory map would write.
    fn moved(text: &str) -> String {
        fn walk(v: &mut toml::Value) {
            match v {
                toml::Value::Table(t) => {
                    for (k, x) in t.iter_mut() {
                        match (k.as_str(), &mut *x) {
                            (
                                "base" | "load-address" | "distributor" | "redistributor",
                                toml::Value::Integer(n),
                            ) => *n += DELTA as i64,
                            ("intid", toml::Value::Integer(n)) => *n += IRQ_DELTA as i64,
                            _ => walk(x),
                        }
                    }
                }
                toml::Value::Array(a) => a.iter_mut().for_each(walk),
                _ => {}
            }
        }
        let mut v: toml::Value = toml::from_str(text).unwrap();
        walk(&mut v);
        toml::to_string(&v).unwrap()
    }

    fn bringup_for(board_name: &str, board: &str) -> App {
        let app_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(BRINGUP_APP);
        let src = std::fs::read_to_string(&app_path).unwrap();
        config::parse_for_board("bringup.toml", &src, Some(board_name), |n| {
            assert_eq!(n, board_name);
            Ok(Some((format!("boards/{n}.toml"), board.to_string())))
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stand-in task layouts: identical for both boards, as the task
    /// binaries are (their only board input is app_config.rs, compared
    /// here).
    fn built(app: &App) -> Vec<BuiltTask> {
        app.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| BuiltTask {
                elf: PathBuf::from(format!("/d/{}", t.crate_name)),
                text_file: PathBuf::from(format!("/d/tasks/{}.text.bin", t.name)),
                text_owner: i,
                text_size: 0x2000,
                data_size: 0x1000,
                stack_size: t.stack_size,
                entry: 0x10_0008,
                stack_top: 0x20_0000,
                // A task-virtual address: the same on every board.
                trace_ring: Some((crate::config::TASK_DATA + 0x40, 0x300)),
            })
            .collect()
    }

    /// The board-independence proof (docs/porting.md): the same app built
    /// for qemu-virt and for qemu-virt moved elsewhere generates the same
    /// files except for numbers, and every number that differs is a board
    /// address (or an address inside board RAM) moved by exactly DELTA, or
    /// a board INTID moved by exactly IRQ_DELTA. And each board fact the
    /// kernel and tasks use does show up among the differences, so the
    /// check cannot pass by comparing files that ignore the board.
    #[test]
    fn generated_config_differs_only_where_the_board_says() {
        let virt_text = board_text("qemu-virt");
        let a = bringup_for("qemu-virt", &virt_text);
        let b = bringup_for("qemu-virt", &moved(&virt_text));
        assert_eq!(b.board.load_address, a.board.load_address + DELTA);
        let (ga, gb) = (
            generated(&a, &built(&a)).unwrap(),
            generated(&b, &built(&b)).unwrap(),
        );
        let ba = &a.board;
        let mut addresses = vec![
            ba.console.base,
            ba.gic.distributor,
            ba.gic.redistributor,
            ba.load_address,
        ];
        addresses.extend(ba.kernel_devices.iter().map(|r| r.base));
        addresses.extend(ba.peripherals.values().map(|p| p.base));
        let intids: Vec<u64> = ba
            .interrupts
            .values()
            .map(|i| u64::from(i.intid))
            .chain([u64::from(ba.timer.intid)])
            .collect();
        let in_ram = |x: u64| (ba.ram.base..ba.ram.base + ba.ram.size).contains(&x);
        let diffs = differences(&ga, &gb, |p, q| {
            (q == p + DELTA && (addresses.contains(&p) || in_ram(p)))
                || (q == p + IRQ_DELTA && intids.contains(&p))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let moved_from: Vec<u64> = diffs.iter().map(|d| d.0).collect();
        let used = [
            ("console.base", ba.console.base),
            ("gic.distributor", ba.gic.distributor),
            ("gic.redistributor", ba.gic.redistributor),
            ("load-address", ba.load_address),
            ("ram.base", ba.ram.base),
            ("smmu-page0", ba.peripherals["smmu-page0"].base),
            ("smmu-page1", ba.peripherals["smmu-page1"].base),
            ("timer.intid", u64::from(ba.timer.intid)),
            ("smmu-eventq", u64::from(ba.interrupts["smmu-eventq"].intid)),
            ("smmu-gerror", u64::from(ba.interrupts["smmu-gerror"].intid)),
        ];
        for (what, v) in used {
            assert!(
                moved_from.contains(&v),
                "{what} ({v:#x}) does not reach the generated files"
            );
        }
    }

    /// The comparison itself fails on a difference the board does not
    /// explain (a value computed, or hard-coded, outside the board file).
    #[test]
    fn differences_reject_an_unexplained_change() {
        let a = "BASE: 0x9000000, SIZE: 0x1000, \"qemu\"";
        let b = "BASE: 0x809000000, SIZE: 0x2000, \"qemu\"";
        let e = differences(a, b, |p, q| q == p + DELTA).unwrap_err();
        assert!(e.contains("0x1000 became 0x2000"), "{e}");
        assert_eq!(
            differences(a, a, |_, _| false).unwrap(),
            Vec::<(u64, u64)>::new()
        );
        let e = differences(a, "BASE: 0x9000000, SIZE: 0x1000, \"virt\"", |_, _| true).unwrap_err();
        assert!(e.contains("\"qemu\" became \"virt\""), "{e}");
    }

    /// The i.MX95 board file parses, its facts are the ones docs/porting.md
    /// and the board comments cite, and the bring-up app validates on it.
    #[test]
    fn imx95_board_facts() {
        let app = bringup_for("imx95", &board_text("imx95"));
        let b = &app.board;
        assert_eq!(b.console.kind, config::ConsoleKind::Lpuart);
        assert_eq!(b.console.base, 0x4438_0000);
        assert!(!b.semihosting);
        assert!(b.qemu.is_none());
        assert_eq!(
            (b.gic.distributor, b.gic.redistributor),
            (0x4800_0000, 0x4806_0000)
        );
        assert_eq!(b.timer.intid, 26);
        assert_eq!(b.peripherals["smmu-page0"].base, 0x490d_0000);
        assert_eq!(b.peripherals["smmu-page1"].base, 0x490e_0000);
        assert!(b.peripherals["smmu-page1"].aliases.is_none());
        // SPI n is INTID n + 32: eventq 325, gerror 328, priq 334, cmdq-sync 326.
        for (name, spi) in [
            ("smmu-eventq", 325),
            ("smmu-gerror", 328),
            ("smmu-priq", 334),
            ("smmu-cmd-sync", 326),
        ] {
            assert_eq!(b.interrupts[name].intid, spi + 32, "{name}");
            assert_eq!(b.interrupts[name].trigger, config::Trigger::Edge, "{name}");
        }
        assert_eq!(b.smmu_coherent, Some(false));
        assert!(!app.smmu_coherent);
        let pci = b.pci.as_ref().unwrap();
        assert_eq!(pci.host_bridge, config::HostBridge::Designware);
        // iommu-map: RID 0 -> 0x10, RIDs 0x100..0x107 -> 0x11..0x17, mask 0x1ff.
        assert_eq!(pci.stream_id(0x000), Some(0x10));
        assert_eq!(pci.stream_id(0x100), Some(0x11));
        assert_eq!(pci.stream_id(0x106), Some(0x17));
        assert_eq!(pci.stream_id(0x107), None);
        assert_eq!(
            pci.stream_id(0x300),
            Some(0x11),
            "mask 0x1ff drops bus bit 9"
        );
        assert!(crate::gen::kernel_memory(&app).contains("ORIGIN = 0x90400000, LENGTH = 0xfc00000"));
    }

    /// An app with PCIe functions refuses the i.MX95: its root complex is
    /// not driven, and the build says so instead of producing an image
    /// that cannot reach the device.
    #[test]
    fn imx95_refuses_pci_devices() {
        let app_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(BRINGUP_APP);
        let src = std::fs::read_to_string(&app_path).unwrap()
            + "[tasks.pci-server]\npriority = 1\nstack-size = 8192\n\
               task-slots = [\"supervisor\"]\nmmio = [\"pcie0-config\"]\n\
               [[devices]]\nfunction = \"01:00.0\"\nowner = \"idle\"\nbars = [0x10_0000]\n";
        let e = config::parse_for_board("bringup.toml", &src, Some("imx95"), |_| {
            Ok(Some(("boards/imx95.toml".into(), board_text("imx95"))))
        })
        .unwrap_err();
        assert!(
            e.contains("host-bridge = \"designware\"") && e.contains("not driven"),
            "{e}"
        );
    }

    /// qemu-virt's generated memory map is the one kernel.x had built in.
    #[test]
    fn qemu_virt_memory_map_unchanged() {
        let app = bringup_for("qemu-virt", &board_text("qemu-virt"));
        assert!(crate::gen::kernel_memory(&app).contains("ORIGIN = 0x40200000, LENGTH = 0xfe00000"));
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;
    use crate::config;

    /// Non-test lines of every `.rs` file under `dir` (a file's lines from
    /// its first `#[cfg(test)]` on are its unit tests; `tests.rs` files and
    /// `tests/` folders are tests), with their place.
    fn non_test_lines(dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests" && n != "target") {
                    non_test_lines(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if line.trim_start().starts_with("#[cfg(test)]") {
                        break;
                    }
                    out.push((format!("{}:{}", p.display(), i + 1), line.to_string()));
                }
            }
        }
    }

    /// Numbers that equal a board address by coincidence: (file, value,
    /// what it is).
    const ALLOWED: &[(&str, u64, &str)] = &[(
        "task/iommu-server/src/server/objects.rs",
        0x0800_0000,
        "the MSI window's IOVA (Linux's MSI_IOVA_BASE), an address in every domain's I/O space, not the GIC's",
    )];

    /// The other half of board independence: no board address appears as
    /// a literal in the kernel's, the tasks' or the libraries' own source
    /// (unit tests and the QEMU test tasks under qemu/ excepted: they run
    /// on qemu-virt by design). Every address of both boards is looked
    /// for, in any spelling (decimal, hex, with or without `_`).
    #[test]
    fn no_board_address_in_kernel_or_task_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut lines = Vec::new();
        for dir in ["sys", "task", "lib"] {
            non_test_lines(&root.join(dir), &mut lines);
        }
        assert!(lines.len() > 1000, "scanned {} lines", lines.len());
        for board in ["qemu-virt", "imx95"] {
            let app = {
                let src = std::fs::read_to_string(root.join(BRINGUP_APP)).unwrap();
                config::parse_for_board("bringup.toml", &src, Some(board), |n| {
                    Ok(Some((format!("boards/{n}.toml"), board_text(n))))
                })
                .unwrap()
            };
            let b = &app.board;
            let mut addresses = vec![
                b.console.base,
                b.gic.distributor,
                b.gic.redistributor,
                b.load_address,
            ];
            addresses.extend(b.peripherals.values().map(|p| p.base));
            for (place, line) in &lines {
                let code = line.split("//").next().unwrap_or("");
                for t in tokens(code) {
                    if let Some(v) = number(t) {
                        let allowed = ALLOWED
                            .iter()
                            .any(|(file, value, _why)| place.contains(file) && *value == v);
                        assert!(
                            allowed || !addresses.contains(&v),
                            "{place}: {t} is a {board} board address: take it from the board file\n{line}"
                        );
                    }
                }
            }
        }
    }
}
