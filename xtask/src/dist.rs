//! `dist`: from an app file to a bootable `image.elf`:
//!
//! 1. validate the app and its board;
//! 2. build every task crate in one cargo invocation;
//! 3. lay out each task ELF (text image, data size, entry);
//! 4. generate `kernel_config.rs`;
//! 5. build the kernel with `KERNEL_CONFIG` pointing at it;
//! 6. copy the image, write its flat form `image.bin` (loadable bytes from
//!    the load address: what a flash tool or boot loader copies) and
//!    `manifest.toml` (which states the load address and entry).
//!
//! `test` and `bench` call [`dist`] once per app file.

use std::path::{Path, PathBuf};

use crate::config::{self, App};
use crate::elf::{self, Elf};
use crate::gen;
use crate::manifest;
use crate::ws::{run_status, write_if_changed, Workspace, KERNEL_TARGET, TARGET};

/// A task after its ELF was laid out.
#[derive(Debug, Clone)]
pub struct BuiltTask {
    pub elf: PathBuf,
    /// `tasks/<task>.text.bin` (absolute).
    pub text_file: PathBuf,
    /// Index of the first task whose text image is byte-identical to this
    /// one's (this task's own index if none is): instances of one crate
    /// share a single copy of their text in the image. Text is mapped
    /// read-only and executable and never written (a task's `.data` load
    /// image is copied into its own data region at start-up), so sharing
    /// the physical pages is sound.
    pub text_owner: usize,
    pub text_size: u64,
    pub data_size: u64,
    pub stack_size: u64,
    pub entry: u64,
    pub stack_top: u64,
    /// The task's trace ring (`TRACE_RING` in its ELF, docs/tracing.md):
    /// its virtual address, inside the data region, and its size. `None`
    /// for a task that does not link `trace` (no ring to print).
    pub trace_ring: Option<(u64, u64)>,
}

/// What `dist` produced.
#[derive(Debug, Clone)]
pub struct Dist {
    pub app: App,
    /// `target/dist/<app>/`.
    pub dir: PathBuf,
    pub image: PathBuf,
    pub manifest: PathBuf,
    pub kernel_config: PathBuf,
    pub tasks: Vec<BuiltTask>,
    pub kernel_text_size: u64,
    pub image_size: u64,
    /// `image.bin`: the flat image (loadable bytes only).
    pub image_bin: PathBuf,
    pub image_bin_size: u64,
    pub load_address: u64,
    pub entry: u64,
}

/// Loads and validates an app file (and its board).
pub fn load_app(ws: &Workspace, app_path: &Path) -> Result<App, String> {
    config::load(app_path, &ws.show(app_path), &ws.boards_dir())
}

/// The app `cargo xtask dist --board <name>` builds when no `--app` is
/// given: the board-portable SMMU bring-up image.
pub const BRINGUP_APP: &str = "boards/apps/bringup.toml";

/// Builds the image described by `app_path`.
pub fn dist(ws: &Workspace, app_path: &Path) -> Result<Dist, String> {
    let app = load_app(ws, app_path)?;
    dist_app(ws, app)
}

/// Builds the image described by `app_path` for board `board` instead of
/// the app's own (`boards/<board>.toml`); it is named `<app>-<board>`.
pub fn dist_for_board(ws: &Workspace, app_path: &Path, board: &str) -> Result<Dist, String> {
    let app = config::load_for_board(app_path, &ws.show(app_path), &ws.boards_dir(), Some(board))?;
    dist_app(ws, app)
}

/// Builds the image of a loaded, validated app.
pub fn dist_app(ws: &Workspace, app: App) -> Result<Dist, String> {
    ws.ensure_target()?;
    let dir = ws.dist_dir(&app.name);
    std::fs::create_dir_all(dir.join("tasks"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    // All task crates in one invocation (one feature resolution, one lock).
    let mut crates: Vec<&str> = Vec::new();
    for t in &app.tasks {
        if !crates.contains(&t.crate_name.as_str()) {
            crates.push(&t.crate_name);
        }
    }
    let packages: Vec<String> = ws.members()?.into_iter().map(|(n, _)| n).collect();
    for t in &app.tasks {
        if !packages.contains(&t.crate_name) {
            let field = if t.crate_name == t.name { "" } else { ".crate" };
            return Err(format!(
                "{}: tasks.{}{field}: no workspace package named \"{}\" (add it to the members in Cargo.toml)",
                app.file, t.name, t.crate_name
            ));
        }
    }
    // Static facts of the app for the tasks that need them (the stream -> VM
    // map of `[[streams]]`, the task names by index): a Rust file a task's
    // build script includes. Every task build gets the variable; only
    // crates whose build.rs reads it rebuild.
    let app_config_rs = dir.join("app_config.rs");
    write_if_changed(&app_config_rs, app_config_source(&app).as_bytes())?;

    let mut cmd = ws.cargo();
    cmd.env("APP_CONFIG_RS", &app_config_rs);
    cmd.args(["build", "--release", "--target", TARGET]);
    for c in &crates {
        cmd.args(["-p", c]);
    }
    run_status(
        &mut cmd,
        &format!(
            "building the tasks of {} (cargo build -p {})",
            app.file,
            crates.join(" -p ")
        ),
    )?;

    let mut tasks: Vec<BuiltTask> = Vec::new();
    let mut texts: Vec<Vec<u8>> = Vec::new();
    for t in &app.tasks {
        let elf_path = ws.release_dir().join(&t.crate_name);
        let at = |e: String| {
            format!(
                "{}: tasks.{}: {}: {e}",
                app.file,
                t.name,
                ws.show(&elf_path)
            )
        };
        let bytes = std::fs::read(&elf_path).map_err(|e| at(format!("cannot read: {e}")))?;
        let parsed = Elf::parse(&bytes).map_err(at)?;
        let image = elf::task_image(&parsed, t.stack_size).map_err(at)?;
        let trace_ring = trace_ring(&parsed, image.data_size).map_err(at)?;
        let text_file = dir.join("tasks").join(format!("{}.text.bin", t.name));
        write_if_changed(&text_file, &image.text)?;
        let text_owner = texts
            .iter()
            .position(|x| *x == image.text)
            .unwrap_or(texts.len());
        tasks.push(BuiltTask {
            elf: elf_path,
            text_file,
            text_owner,
            text_size: image.text.len() as u64,
            data_size: image.data_size,
            stack_size: image.stack_size,
            entry: image.entry,
            stack_top: image.stack_top,
            trace_ring,
        });
        texts.push(image.text);
    }

    let kernel_config = dir.join("kernel_config.rs");
    let source = gen::kernel_config(&app, &tasks)?;
    write_if_changed(&kernel_config, source.as_bytes())?;
    // The link address and RAM (kernel.x INCLUDEs it from this directory).
    write_if_changed(
        &dir.join("kernel_memory.x"),
        gen::kernel_memory(&app).as_bytes(),
    )?;

    let mut cmd = ws.cargo();
    cmd.args([
        "build",
        "--release",
        "--target",
        KERNEL_TARGET,
        "-p",
        "kern",
        "--bin",
        "kernel",
    ])
    .env("KERNEL_CONFIG", &kernel_config);
    run_status(&mut cmd, &format!("building the kernel for {}", app.file))?;

    let built_kernel = ws.kernel_release_dir().join("kernel");
    let image = dir.join("image.elf");
    std::fs::copy(&built_kernel, &image).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            built_kernel.display(),
            image.display()
        )
    })?;
    let image_bytes =
        std::fs::read(&image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let kernel_elf = Elf::parse(&image_bytes).map_err(|e| format!("{}: {e}", ws.show(&image)))?;
    let kernel_text_size = kernel_elf.text_size();
    let image_size = image_bytes.len() as u64;
    // The flashable form: loadable bytes only, from the load address.
    let flat = elf::flat_image(&kernel_elf).map_err(|e| format!("{}: {e}", ws.show(&image)))?;
    let image_bin = dir.join("image.bin");
    write_if_changed(&image_bin, &flat.bytes)?;

    let manifest = dir.join("manifest.toml");
    let text = manifest::render(
        &app,
        &tasks,
        kernel_text_size,
        image_size,
        &flat,
        gen::page_table_pages(&app, &tasks),
    );
    write_if_changed(&manifest, text.as_bytes())?;

    Ok(Dist {
        app,
        dir,
        image,
        manifest,
        kernel_config,
        tasks,
        kernel_text_size,
        image_size,
        image_bin,
        image_bin_size: flat.bytes.len() as u64,
        load_address: flat.load,
        entry: flat.entry,
    })
}

/// The trace ring of a linked task: `TRACE_RING`'s address and size, which
/// must lie in the task's data region (`data_size` bytes from `TASK_DATA`),
/// the only place the kernel reads it from.
pub fn trace_ring(elf: &Elf, data_size: u64) -> Result<Option<(u64, u64)>, String> {
    let Some(sym) = elf.symbol("TRACE_RING")? else {
        return Ok(None);
    };
    let data = config::TASK_DATA..config::TASK_DATA + data_size;
    let end = sym.value.checked_add(sym.size);
    if sym.size == 0 || !data.contains(&sym.value) || end.is_none_or(|e| e > data.end) {
        return Err(format!(
            "TRACE_RING ({:#x}, {} bytes) is not inside the data region {:#x}..{:#x}",
            sym.value, sym.size, data.start, data.end
        ));
    }
    Ok(Some((sym.value, sym.size)))
}

/// `pub const STREAMS: &[(u32, u16)]`: (StreamID, task index of its VM), and
/// `pub const TASK_NAMES: &[&str]`: task names by index (a server checks
/// its callers by name: the kernel stamps every message with the index).
pub fn app_config_source(app: &App) -> String {
    let mut s = String::from(
        "// Generated by `cargo xtask dist` from the app's [[streams]] and [tasks].\n\
         // (StreamID, VM task index):\n\
         pub const STREAMS: &[(u32, u16)] = &[",
    );
    for (i, st) in app.streams.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("({:#x}, {})", st.sid, st.vm));
    }
    s.push_str("];\n// Task names by index:\npub const TASK_NAMES: &[&str] = &[");
    for (i, t) in app.tasks.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{:?}", t.name));
    }
    s.push_str("];\n");
    // The supervisor's death watchers: every task its `posts` name (it
    // posts nobody else), so a frontend of any name is told of deaths.
    s.push_str("// Death watchers (the supervisor's posts), by name:\npub const DEATH_WATCHERS: &[&str] = &[");
    let watchers: Vec<String> = app.tasks.first().map_or(Vec::new(), |sup| {
        sup.posts
            .iter()
            .map(|&i| format!("{:?}", app.tasks[i].name))
            .collect()
    });
    s.push_str(&watchers.join(", "));
    s.push_str("];\n");
    // VMs (app.toml `vm` tables): a frontend serves its guest's virtual
    // SMMU; the guest's `ram` region is the VM's RAM.
    s.push_str(
        "// (frontend task index, guest task index, guest RAM physical base, RAM bytes,\n\
         //  virtual event queue depth):\n\
         pub const VMS: &[(u16, u16, u64, u64, u16)] = &[",
    );
    for (i, v) in app.vms.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!(
            "({}, {}, {:#x}, {:#x}, {})",
            v.frontend, v.guest, v.ram_base, v.ram_size, v.event_queue_depth
        ));
    }
    s.push_str("];\n// (physical StreamID, virtual StreamID) where [[streams]] gives a vsid:\npub const VSIDS: &[(u32, u32)] = &[");
    let mut first = true;
    for st in &app.streams {
        if let Some(v) = st.vsid {
            if !first {
                s.push_str(", ");
            }
            first = false;
            s.push_str(&format!("({:#x}, {:#x})", st.sid, v));
        }
    }
    s.push_str("];\n");
    // pasid-alloc's space (app.toml `[pasids]`; 0 bits without it).
    s.push_str(&format!(
        "pub const PASID_BITS: u8 = {};\npub const PASID_QUOTA: u32 = {};\n",
        app.pasids.0, app.pasids.1
    ));
    // The SMMU's coherency (board `smmu-coherent`, `[smmu]` override):
    // iommu-server and prq-server clean / invalidate when false.
    s.push_str(&format!(
        "pub const SMMU_COHERENT: bool = {};\n",
        app.smmu_coherent
    ));
    // pci-server's device table (app.toml `[[devices]]`): (routing id,
    // owner task index, StreamID, vendor | device << 16, BARs (base, size)).
    s.push_str(
        "// (bdf, owner task index, StreamID, id, [(BAR base, BAR size); 6]):\n\
         pub type PciDevice = (u16, u16, u32, u32, [(u32, u32); 6]);\n\
         pub const PCI_DEVICES: &[PciDevice] = &[",
    );
    for (i, d) in app.devices.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let bars: Vec<String> = d
            .bars
            .iter()
            .map(|(b, z)| format!("({b:#x}, {z:#x})"))
            .collect();
        s.push_str(&format!(
            "({:#x}, {}, {:#x}, {:#x}, [{}])",
            d.bdf,
            d.owner,
            d.sid,
            d.id,
            bars.join(", ")
        ));
    }
    s.push_str(&format!(
        "];\npub const PCI_ECAM: &str = {:?};\n",
        app.pci_ecam.as_deref().unwrap_or("")
    ));
    s
}
