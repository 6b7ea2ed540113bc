//! `cargo xtask bench --linux`: Linux's own SMMUv3 driver as a peer, on the
//! same QEMU machine with the same clock (issue 14).
//!
//! Debian's arm64 kernel (bookworm-backports, `ARM_SMMU_V3=y`, VFIO type1;
//! no iommufd in that build) boots an initramfs whose PID 1 is the
//! project's own `qemu/linux-peer/init.c`. It hands QEMU's edu device to
//! vfio-pci and measures, with CNTVCT under `-icount shift=0,sleep=off`
//! (one tick = one guest instruction), the VFIO calls that do the same work
//! as the project's bench: map 256 KiB (64 pages) in one call, unmap it in
//! one call, attach (GROUP_SET_CONTAINER + SET_IOMMU), and 512 pages. Each
//! figure is the minimum over 24 iterations, like the project's side.
//!
//! What it needs, all under `target/linux-peer/` except the tools: the
//! kernel package (`apt-get download`, ~100 MB, unpacked with `dpkg-deb -x`
//! and deleted once the kernel image and the VFIO modules are taken out of
//! it: ~40 MB stay), and a cross C compiler for the static init. As root on
//! Debian it installs them itself, printing each step; otherwise it stops
//! with the exact commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::prereq;
use crate::qemu::{self, euid, Outcome};
use crate::ws::{run_status, Workspace};

/// The kernel the reference figures (issue 14) were taken with.
pub const KVER: &str = "6.12.95+deb12-arm64";
const CC: &str = "aarch64-linux-gnu-gcc";
/// The cross C library's copy of the kernel's VFIO header (from
/// linux-libc-dev-arm64-cross, which libc6-dev-arm64-cross pulls in).
const VFIO_H: &str = "/usr/aarch64-linux-gnu/include/linux/vfio.h";
const TOOL_PACKAGES: [&str; 3] = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "xz-utils"];
/// The modules the init loads; their dependencies come from modules.dep.
const TOP_MODULES: [&str; 2] = ["vfio_iommu_type1", "vfio-pci"];
/// Boot + module load + 24 rounds of everything take ~10 s of host time;
/// the slack is for a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The QEMU flags of the reference measurement (the project's own bench
/// boots `-M virt,virtualization=on,iommu=smmuv3,gic-version=3 -cpu max`
/// too). `-no-reboot` only makes a failed boot (panic=-1) end QEMU at once.
pub fn qemu_args(dir: &Path) -> Vec<String> {
    let s = |x: &str| x.to_string();
    vec![
        s("-M"),
        s("virt,virtualization=on,iommu=smmuv3,gic-version=3"),
        s("-cpu"),
        s("max"),
        s("-smp"),
        s("1"),
        s("-m"),
        s("1G"),
        s("-nographic"),
        s("-nic"),
        s("none"),
        s("-no-reboot"),
        s("-icount"),
        s(qemu::ICOUNT_BENCH),
        s("-device"),
        s("edu"),
        s("-kernel"),
        dir.join("Image").display().to_string(),
        s("-initrd"),
        dir.join("initramfs.cpio").display().to_string(),
        s("-append"),
        // nokaslr: the profile boot's addresses are those of the symbols
        // the measuring boot printed.
        s("console=ttyAMA0 quiet iommu.strict=1 rdinit=/init panic=-1 nokaslr"),
    ]
}

/// One measured figure of the peer.
pub struct Figure {
    pub name: String,
    pub value: u64,
}

/// The peer's figures and how long each part took.
pub struct PeerRun {
    pub figures: Vec<Figure>,
    pub prepare: Duration,
    pub boot: Duration,
    pub profile: Duration,
}

fn have_tools() -> bool {
    Command::new(CC)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(VFIO_H).exists()
        && Command::new("xz")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn is_debian_root() -> bool {
    Path::new("/etc/debian_version").exists() && euid() == 0
}

/// The commands to run by hand when we may not.
fn manual(what: &str) -> String {
    let pkgs = TOOL_PACKAGES.join(" ");
    format!(
        "{what}.\nOn Debian, as root (or with sudo):\n  \
         dpkg --add-architecture arm64\n  \
         apt-get update\n  \
         DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {pkgs}\n  \
         (cd target/linux-peer && apt-get download linux-image-{KVER}-unsigned:arm64)\n\
         (the kernel package comes from bookworm-backports; see `cargo xtask bench` for that source)"
    )
}

fn step(cmd: &mut Command, what: &str) -> Result<(), String> {
    println!("+ {}", qemu::show(cmd));
    run_status(cmd, what)
}

fn ensure_tools() -> Result<(), String> {
    if have_tools() {
        return Ok(());
    }
    if !is_debian_root() {
        return Err(manual(&format!(
            "the cross compiler `{CC}` (with the arm64 C library and its {VFIO_H}) or xz is missing"
        )));
    }
    step(Command::new("apt-get").arg("update"), "apt-get update")?;
    step(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(TOOL_PACKAGES),
        "apt-get install (cross compiler)",
    )?;
    if have_tools() {
        Ok(())
    } else {
        Err(format!(
            "after installing {TOOL_PACKAGES:?}: still no {CC} / {VFIO_H} / xz"
        ))
    }
}

/// The downloaded kernel package in `dir`, if any.
fn find_deb(dir: &Path) -> Option<PathBuf> {
    let prefix = format!("linux-image-{KVER}-unsigned_");
    std::fs::read_dir(dir).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        let n = p.file_name()?.to_str()?.to_string();
        (n.starts_with(&prefix) && n.ends_with("_arm64.deb")).then_some(p)
    })
}

fn download_kernel(dir: &Path) -> Result<PathBuf, String> {
    if let Some(d) = find_deb(dir) {
        return Ok(d);
    }
    if !is_debian_root() {
        return Err(manual(&format!(
            "the kernel package linux-image-{KVER}-unsigned (arm64) is not in {}",
            dir.display()
        )));
    }
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .map_err(|e| format!("dpkg: {e}"))?;
    let mut need_update = false;
    if !String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|l| l.trim() == "arm64")
    {
        // apt only knows other architectures' packages once dpkg lists
        // them; nothing arm64 is installed, only downloaded.
        step(
            Command::new("dpkg").args(["--add-architecture", "arm64"]),
            "dpkg --add-architecture arm64",
        )?;
        need_update = true;
    }
    if !prereq::has_backports_source() {
        println!("+ write {}", prereq::BACKPORTS_FILE);
        std::fs::write(prereq::BACKPORTS_FILE, prereq::BACKPORTS_SOURCE)
            .map_err(|e| format!("cannot write {}: {e}", prereq::BACKPORTS_FILE))?;
        need_update = true;
    }
    if need_update {
        step(Command::new("apt-get").arg("update"), "apt-get update")?;
    }
    step(
        Command::new("apt-get")
            .current_dir(dir)
            .arg("download")
            .arg(format!("linux-image-{KVER}-unsigned:arm64")),
        "apt-get download (kernel)",
    )?;
    find_deb(dir).ok_or_else(|| format!("apt-get download left no package in {}", dir.display()))
}

/// A module's name as the kernel compares them (`-` and `_` are equal).
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` list of a module's `.modinfo` (a plain `.ko`'s bytes).
pub fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(norm)
        .collect()
}

/// The load order (dependencies first) of `top`, given each module's
/// dependencies.
pub fn load_order(
    top: &[&str],
    depends: &mut dyn FnMut(&str) -> Result<Vec<String>, String>,
) -> Result<Vec<String>, String> {
    fn visit(
        m: &str,
        depends: &mut dyn FnMut(&str) -> Result<Vec<String>, String>,
        out: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 32 {
            return Err(format!("module dependency loop at {m}"));
        }
        if out.iter().any(|o| o == m) {
            return Ok(());
        }
        for d in depends(m)? {
            visit(&d, depends, out, depth + 1)?;
        }
        out.push(m.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    for t in top {
        visit(&norm(t), depends, &mut out, 0)?;
    }
    Ok(out)
}

/// Every module file under `dir`, by module name.
fn module_files(dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            module_files(&p, out);
        } else if let Some(f) = p.file_name().and_then(|f| f.to_str()) {
            if let Some((stem, _)) = f.split_once(".ko") {
                out.insert(norm(stem), p.clone());
            }
        }
    }
}

/// Kernel image and modules under `dir` (Image, mods/*.ko, mods/order),
/// taken out of the package once.
fn prepare_kernel(dir: &Path) -> Result<(), String> {
    let mods = dir.join("mods");
    if dir.join("Image").exists() && mods.join("order").exists() {
        return Ok(());
    }
    let deb = download_kernel(dir)?;
    let kroot = dir.join("kroot");
    let _ = std::fs::remove_dir_all(&kroot);
    step(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&kroot),
        "dpkg-deb -x",
    )?;
    let boot = kroot.join("boot");
    let config = std::fs::read_to_string(boot.join(format!("config-{KVER}")))
        .map_err(|e| format!("kernel package: no config: {e}"))?;
    for want in ["CONFIG_ARM_SMMU_V3=y", "CONFIG_VFIO_IOMMU_TYPE1=m"] {
        if !config.lines().any(|l| l == want) {
            return Err(format!("kernel {KVER}: config lacks {want}"));
        }
    }
    // (The package's System.map is a placeholder: symbols come from the
    // guest's /proc/kallsyms.)
    // A new kernel image: the cached symbols are stale.
    let _ = std::fs::remove_file(dir.join("kallsyms"));
    for (from, to) in [
        (format!("vmlinuz-{KVER}"), "Image".to_string()),
        (format!("config-{KVER}"), "config".to_string()),
    ] {
        std::fs::copy(boot.join(&from), dir.join(&to)).map_err(|e| format!("copy {from}: {e}"))?;
    }
    // The package has no modules.dep (depmod makes it when installing):
    // the dependencies come from each module's own `depends=`.
    let mut files = BTreeMap::new();
    module_files(
        &kroot.join(format!("lib/modules/{KVER}/kernel")),
        &mut files,
    );
    let _ = std::fs::remove_dir_all(&mods);
    std::fs::create_dir_all(&mods).map_err(|e| format!("{}: {e}", mods.display()))?;
    let mut unpack = |name: &str| -> Result<Vec<String>, String> {
        let src = files
            .get(name)
            .ok_or_else(|| format!("kernel {KVER} has no module {name}"))?;
        let plain = mods.join(format!("{name}.ko"));
        if src.to_string_lossy().ends_with(".ko.xz") {
            let out =
                std::fs::File::create(&plain).map_err(|e| format!("{}: {e}", plain.display()))?;
            run_status(Command::new("xz").arg("-dc").arg(src).stdout(out), "xz -dc")?;
        } else if src.to_string_lossy().ends_with(".ko") {
            std::fs::copy(src, &plain).map_err(|e| format!("{}: {e}", src.display()))?;
        } else {
            return Err(format!("{}: compression not handled", src.display()));
        }
        let bytes = std::fs::read(&plain).map_err(|e| format!("{}: {e}", plain.display()))?;
        Ok(modinfo_depends(&bytes))
    };
    let names: Vec<String> = load_order(&TOP_MODULES, &mut unpack)?
        .into_iter()
        .map(|m| m + ".ko")
        .collect();
    std::fs::write(mods.join("order"), names.join("\n") + "\n")
        .map_err(|e| format!("mods/order: {e}"))?;
    println!("linux-peer: modules {}", names.join(" "));
    // Only the image, the modules and the symbols are needed from here on.
    std::fs::remove_dir_all(&kroot).map_err(|e| format!("rm {}: {e}", kroot.display()))?;
    std::fs::remove_file(&deb).map_err(|e| format!("rm {}: {e}", deb.display()))?;
    Ok(())
}

/// A `newc` cpio archive (what the kernel unpacks as its initramfs).
/// Entries: (path, mode, contents); directories have mode 0o040xxx.
pub fn cpio_newc(entries: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    fn pad4(o: &mut Vec<u8>) {
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
    }
    let mut o = Vec::new();
    let mut put = |ino: u32, name: &str, mode: u32, data: &[u8]| {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize, check
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        o.extend_from_slice(b"070701");
        for f in fields {
            o.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        o.extend_from_slice(name.as_bytes());
        o.push(0);
        pad4(&mut o);
        o.extend_from_slice(data);
        pad4(&mut o);
    };
    for (i, (name, mode, data)) in entries.iter().enumerate() {
        put(i as u32 + 1, name, *mode, data);
    }
    put(0, "TRAILER!!!", 0, &[]);
    o
}

fn build_initramfs(ws: &Workspace, dir: &Path) -> Result<(), String> {
    let src = ws.root.join("qemu/linux-peer/init.c");
    let init = dir.join("init");
    step(
        Command::new(CC)
            .args(["-O2", "-static", "-Wall", "-Werror", "-o"])
            .arg(&init)
            .arg(&src),
        "compile qemu/linux-peer/init.c",
    )?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut entries = vec![
        ("init".to_string(), 0o100755, read(&init)?),
        ("dev".into(), 0o040755, vec![]),
        ("proc".into(), 0o040755, vec![]),
        ("sys".into(), 0o040755, vec![]),
        ("mods".into(), 0o040755, vec![]),
    ];
    let order =
        std::fs::read_to_string(dir.join("mods/order")).map_err(|e| format!("mods/order: {e}"))?;
    entries.push(("mods/order".into(), 0o100644, order.clone().into_bytes()));
    for m in order.lines().filter(|l| !l.is_empty()) {
        entries.push((
            format!("mods/{m}"),
            0o100644,
            read(&dir.join("mods").join(m))?,
        ));
    }
    let out = dir.join("initramfs.cpio");
    std::fs::write(&out, cpio_newc(&entries)).map_err(|e| format!("{}: {e}", out.display()))
}

/// Prepares everything (installing or downloading what is missing) and
/// boots the peer once with `qemu_binary`.
pub fn run(ws: &Workspace, qemu_binary: &str) -> Result<PeerRun, String> {
    let start = Instant::now();
    let dir = ws.target.join("linux-peer");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    ensure_tools()?;
    prepare_kernel(&dir)?;
    build_initramfs(ws, &dir)?;
    let prepare = start.elapsed();

    // The kernel's text symbols, printed once after the measurements of
    // a plain boot (fast there: under the plugin every instruction is a
    // callback) and kept until the kernel image changes.
    let ksyms = dir.join("kallsyms");
    let have_syms = ksyms.exists();
    let mut args = qemu_args(&dir);
    if !have_syms {
        args.last_mut()
            .expect("qemu_args ends with -append's value")
            .push_str(" peer.kallsyms");
    }
    let mut cmd = Command::new(qemu_binary);
    cmd.args(args);
    let boot_start = Instant::now();
    let r = boot(cmd, "run")?;
    let boot = boot_start.elapsed();
    if !have_syms {
        let lines: Vec<&str> = r
            .console
            .iter()
            .filter(|l| l.contains("KSYM "))
            .map(|l| l.as_str())
            .collect();
        std::fs::write(&ksyms, lines.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", ksyms.display()))?;
    }
    let mut figures = Vec::new();
    for l in &r.console {
        if let Some((n, v, _)) = qemu::bench_marker(l) {
            if let Ok(value) = v.parse::<u64>() {
                figures.push(Figure {
                    name: n.to_string(),
                    value,
                });
            }
        }
    }
    let profile_start = Instant::now();
    figures.extend(profile(ws, &dir, qemu_binary)?);
    Ok(PeerRun {
        figures,
        prepare,
        boot,
        profile: profile_start.elapsed(),
    })
}

/// Boots the peer; Err unless the init finished (`PEER-DONE`) and QEMU
/// exited cleanly.
fn boot(cmd: Command, what: &str) -> Result<qemu::Run, String> {
    println!("linux-peer: {}", qemu::show(&cmd));
    let r = qemu::run_watch(cmd, Some(TIMEOUT), false, &mut |l| {
        (l.contains("PEER-FAIL") || l.contains("Kernel panic")).then(|| l.to_string())
    })?;
    if r.outcome != Outcome::Exited(0) || !r.console.iter().any(|l| l.contains("PEER-DONE")) {
        let tail: Vec<String> = r.tail(25).iter().map(|l| format!("  {l}")).collect();
        return Err(format!(
            "linux peer {what} {} without finishing:\n{}",
            r.outcome,
            tail.join("\n")
        ));
    }
    Ok(r)
}

/// Boots the peer once more under `xtask/profile/insnprof.c` (with
/// `nokaslr`, so the kernel's addresses are those of the cached symbol
/// list) and splits each marked operation into [`Part`]s: figures
/// `linux_<op>_driver` (SMMUv3 driver + io-pgtable, the iova_to_phys
/// walks excluded), `linux_<op>_driver_core` (with the IOMMU core) and
/// `linux_<op>_profiled` (everything in the phase, to check against the
/// CNTVCT figure). The per-function listing goes to
/// `target/linux-peer/profile.txt`.
fn profile(ws: &Workspace, dir: &Path, qemu_binary: &str) -> Result<Vec<Figure>, String> {
    let so = dir.join("insnprof.so");
    step(
        Command::new("cc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(ws.root.join("xtask/profile/insnprof.c")),
        "compile xtask/profile/insnprof.c",
    )?;
    let ksyms = dir.join("kallsyms");
    let out = dir.join("profile.out");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(qemu_binary);
    cmd.args(qemu_args(dir))
        .arg("-plugin")
        .arg(format!("{},out={}", so.display(), out.display()));
    boot(cmd, "profile run")?;
    let syms = text_symbols(
        &std::fs::read_to_string(&ksyms).map_err(|e| format!("{}: {e}", ksyms.display()))?,
    );
    if syms.len() < 1000 {
        return Err(format!(
            "{}: only {} kernel symbols (kallsyms hidden?)",
            ksyms.display(),
            syms.len()
        ));
    }
    let prof = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let phases = attribute(&prof, &syms);
    let mut figures = Vec::new();
    let mut text = String::from(
        "# Linux peer: instructions per function in the last (warm) iteration of each\n\
         # operation (self counts; xtask/profile/insnprof.c, cargo xtask bench --linux)\n",
    );
    for (k, op) in PHASES {
        let Some(b) = phases.get(&k) else {
            return Err(format!("profile: phase {k} ({op}) has no instructions"));
        };
        let part = |p: Part| b.parts.get(&p).copied().unwrap_or(0);
        let driver = part(Part::Driver);
        for (name, value) in [
            (format!("linux_{op}_driver"), driver),
            (format!("linux_{op}_driver_core"), driver + part(Part::Core)),
            (format!("linux_{op}_profiled"), b.total),
        ] {
            figures.push(Figure { name, value });
        }
        use std::fmt::Write as _;
        let _ = writeln!(text, "\n## {op}: {} instructions", b.total);
        for (p, n) in &b.parts {
            let _ = writeln!(text, "  {p:?}: {n}");
        }
        let mut f: Vec<(&String, &u64)> = b.functions.iter().collect();
        f.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, n) in f.iter().take(40) {
            let _ = writeln!(text, "  {n:>8}  {name}  [{:?}]", b.kinds[*name]);
        }
    }
    let listing = dir.join("profile.txt");
    std::fs::write(&listing, text).map_err(|e| format!("{}: {e}", listing.display()))?;
    println!("linux-peer: per-function profile in {}", listing.display());
    Ok(figures)
}

/// Profile phases the init marks (`hint #0x71`..`#0x75`) around the last
/// (warm) iteration of each operation, and the name of its figures.
pub const PHASES: [(u32, &str); 5] = [
    (1, "map64"),
    (2, "unmap64"),
    (3, "attach"),
    (4, "map512"),
    (5, "unmap512"),
];

/// Which part of Linux a kernel function belongs to, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// drivers/iommu/arm/arm-smmu-v3 and io-pgtable(-arm).
    Driver,
    /// The IOMMU core (iommu.c, dma-iommu.c).
    Core,
    /// `*iova_to_phys*` (core, driver and io-pgtable): the walks VFIO does
    /// before unmapping to find the pages to unpin, not unmap work.
    Lookup,
    /// Everything else in the kernel image (system call entry, VFIO's
    /// pinning through mm, scheduling, interrupts).
    Kernel,
    /// Loaded modules (VFIO itself): not in System.map.
    Module,
    /// The init's own user-space instructions.
    User,
}

pub fn part_of(name: &str) -> Part {
    const DRIVER: [&str; 7] = [
        "arm_smmu_",
        "__arm_smmu_",
        "arm_lpae_",
        "__arm_lpae_",
        "io_pgtable_",
        "__io_pgtable_",
        "iopte_",
    ];
    if name.contains("iova_to_phys") {
        Part::Lookup
    } else if DRIVER.iter().any(|p| name.starts_with(p)) {
        Part::Driver
    } else if name.starts_with("iommu_") || name.starts_with("__iommu_") {
        Part::Core
    } else {
        Part::Kernel
    }
}

/// The init's `KSYM <addr> <name>` lines (kernel text symbols), sorted.
pub fn text_symbols(lines: &str) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = lines
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip_while(|w| *w != "KSYM").skip(1);
            let a = u64::from_str_radix(w.next()?, 16).ok()?;
            Some((a, w.next()?.to_string()))
        })
        .collect();
    v.sort();
    v
}

/// One phase's instructions: per part, and per kernel function.
#[derive(Default)]
pub struct Breakdown {
    pub total: u64,
    pub parts: BTreeMap<Part, u64>,
    pub functions: BTreeMap<String, u64>,
    pub kinds: BTreeMap<String, Part>,
}

/// insnprof output ("<phase> <vaddr hex> <count>" lines) → per phase.
/// Kernel text runs from `_stext` to `_etext`; other kernel addresses are
/// modules (VFIO), lower ones user space.
pub fn attribute(profile: &str, syms: &[(u64, String)]) -> BTreeMap<u32, Breakdown> {
    let find = |n: &str| syms.iter().find(|(_, s)| s == n).map(|(a, _)| *a);
    let (text, etext) = (find("_stext").unwrap_or(0), find("_etext").unwrap_or(0));
    let mut out: BTreeMap<u32, Breakdown> = BTreeMap::new();
    for l in profile.lines() {
        let mut w = l.split_whitespace();
        let (Some(p), Some(a), Some(n)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let (Ok(p), Ok(a), Ok(n)) = (
            p.parse::<u32>(),
            u64::from_str_radix(a, 16),
            n.parse::<u64>(),
        ) else {
            continue;
        };
        let b = out.entry(p).or_default();
        b.total += n;
        let (part, func) = if a >= text && a < etext {
            let i = syms.partition_point(|(s, _)| *s <= a);
            let name = if i == 0 { "?" } else { syms[i - 1].1.as_str() };
            (part_of(name), name.to_string())
        } else if a >= 0xffff_0000_0000_0000 {
            (Part::Module, "(modules: VFIO)".to_string())
        } else {
            (Part::User, "(user: init)".to_string())
        };
        *b.parts.entry(part).or_default() += n;
        *b.functions.entry(func.clone()).or_default() += n;
        b.kinds.insert(func, part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_order_puts_dependencies_first() {
        let deps: BTreeMap<&str, &str> = [
            ("vfio", "irqbypass"),
            ("vfio_iommu_type1", "vfio,irqbypass"),
            ("irqbypass", ""),
            ("vfio_pci", "vfio-pci-core,vfio"),
            ("vfio_pci_core", "vfio"),
            ("a", "b"),
            ("b", "a"),
        ]
        .into_iter()
        .collect();
        let mut seen = Vec::new();
        let mut dep = |m: &str| {
            seen.push(m.to_string());
            let ko = format!(
                "\0name={m}\0depends={}\0",
                deps.get(m).ok_or("no such module")?
            );
            Ok(modinfo_depends(ko.as_bytes()))
        };
        let o = load_order(&TOP_MODULES, &mut dep).unwrap();
        assert_eq!(
            o,
            [
                "irqbypass",
                "vfio",
                "vfio_iommu_type1",
                "vfio_pci_core",
                "vfio_pci"
            ]
        );
        assert!(load_order(&["nope"], &mut dep).is_err());
        assert!(load_order(&["a"], &mut dep).is_err());
        assert_eq!(modinfo_depends(b"\0depends=\0"), Vec::<String>::new());
        assert_eq!(modinfo_depends(b"no modinfo"), Vec::<String>::new());
    }

    #[test]
    fn manual_steps_name_the_packages() {
        let m = manual("no cross compiler");
        assert!(m.starts_with("no cross compiler.\n"), "{m}");
        assert!(m.contains("dpkg --add-architecture arm64"));
        assert!(m.contains(
            "apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross xz-utils"
        ));
        assert!(m.contains("apt-get download linux-image-6.12.95+deb12-arm64-unsigned:arm64"));
    }

    #[test]
    fn profile_attribution() {
        let syms = text_symbols(
            "KSYM ffff800080010000 _stext\n\
             KSYM ffff800080010000 el0t_64_sync\n\
             KSYM ffff800080020000 arm_lpae_map_pages\n\
             KSYM ffff800080020100 iommu_map\n\
             KSYM ffff800080020200 arm_lpae_iova_to_phys\n\
             KSYM ffff800080030000 _etext\n",
        );
        let prof = "1 ffff800080010004 5\n\
                    1 ffff800080020010 7\n\
                    1 ffff800080020010 1\n\
                    1 ffff800080020104 3\n\
                    1 ffff800080020204 4\n\
                    1 ffff800000001000 6\n\
                    1 400000 2\n\
                    2 ffff800080020010 9\n";
        let b = attribute(prof, &syms);
        let p1 = &b[&1];
        assert_eq!(p1.total, 28);
        let part = |p| p1.parts.get(&p).copied().unwrap_or(0);
        assert_eq!(
            [
                part(Part::Driver),
                part(Part::Core),
                part(Part::Lookup),
                part(Part::Kernel),
                part(Part::Module),
                part(Part::User)
            ],
            [8, 3, 4, 5, 6, 2]
        );
        assert_eq!(p1.functions["arm_lpae_map_pages"], 8);
        assert_eq!(b[&2].total, 9);
    }

    #[test]
    fn cpio_layout() {
        let a = cpio_newc(&[("init".into(), 0o100755, b"abc".to_vec())]);
        // header (110) + "init\0" (5) padded to 116, data 3 padded to 120,
        // then the trailer: 110 + 11 ("TRAILER!!!\0") padded to 124.
        assert_eq!(a.len(), 120 + 124);
        assert!(a.starts_with(b"070701"));
        assert_eq!(&a[6 + 8..6 + 16], b"000081ed");
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(&a[116..119], b"abc");
        assert_eq!(&a[120..126], b"070701");
        assert_eq!(&a[230..241], b"TRAILER!!!\0");
    }
}
