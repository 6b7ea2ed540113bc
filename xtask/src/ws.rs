//! The workspace: where things are, and running cargo/rustup in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target every task is built for.
pub const TARGET: &str = "aarch64-unknown-none";
/// The kernel's target: the soft-float variant, so the kernel provably never
/// touches FP/SIMD registers and can switch task FP state lazily (see
/// docs/kernel.md). Same ISA and memory model; only the float ABI differs,
/// and the kernel and tasks are separate binaries.
pub const KERNEL_TARGET: &str = "aarch64-unknown-none-softfloat";

#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root (the folder with the top-level Cargo.toml).
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub target: PathBuf,
}

impl Workspace {
    pub fn locate() -> Workspace {
        // `cargo run` sets CARGO_MANIFEST_DIR for the program too; the
        // compile-time value covers running the binary directly.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .filter(|p| p.join("src/ws.rs").exists())
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| manifest.clone());
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    // Cargo resolves a relative CARGO_TARGET_DIR against the
                    // current directory.
                    std::env::current_dir().map(|d| d.join(&dir)).unwrap_or(dir)
                }
            }
            _ => root.join("target"),
        };
        Workspace { root, target }
    }

    /// `cargo` as the one running us (same toolchain), in the workspace root.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(cargo);
        c.current_dir(&self.root);
        c
    }

    /// Where release builds for [`TARGET`] land.
    pub fn release_dir(&self) -> PathBuf {
        self.target.join(TARGET).join("release")
    }

    /// Where the kernel's release build lands.
    pub fn kernel_release_dir(&self) -> PathBuf {
        self.target.join(KERNEL_TARGET).join("release")
    }

    pub fn dist_dir(&self, app_name: &str) -> PathBuf {
        self.target.join("dist").join(app_name)
    }

    pub fn boards_dir(&self) -> PathBuf {
        self.root.join("boards")
    }

    /// Test and benchmark images: the demo image `app.toml` (its `[expect]`
    /// names the demo scenario, so `cargo xtask test` boots exactly what
    /// `cargo xtask run` boots), then `qemu/apps/*.toml`, sorted.
    pub fn test_apps(&self) -> Result<Vec<PathBuf>, String> {
        let mut apps = vec![self.root.join("app.toml")];
        apps.retain(|p| p.exists());
        apps.extend(self.test_app_files()?);
        Ok(apps)
    }

    fn test_app_files(&self) -> Result<Vec<PathBuf>, String> {
        let dir = self.root.join("qemu/apps");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        };
        let mut apps: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        apps.sort();
        Ok(apps)
    }

    /// How to name a file to the user: relative to the root when inside it.
    pub fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Resolves an app file argument: as given (relative to the current
    /// directory), else relative to the workspace root.
    pub fn app_path(&self, arg: &Path) -> PathBuf {
        if arg.is_absolute() || arg.exists() {
            arg.to_path_buf()
        } else {
            self.root.join(arg)
        }
    }

    /// Every workspace member: (package name, folder).
    pub fn members(&self) -> Result<Vec<(String, PathBuf)>, String> {
        let manifest = self.root.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
        let doc: toml::Table = toml::from_str(&text).map_err(|e| format!("Cargo.toml: {e}"))?;
        let members = doc
            .get("workspace")
            .and_then(|w| w.get("members"))
            .and_then(|m| m.as_array())
            .ok_or("Cargo.toml: workspace.members: missing")?;
        let mut dirs = Vec::new();
        for m in members {
            let m = m
                .as_str()
                .ok_or("Cargo.toml: workspace.members: not a string")?;
            match m.strip_suffix("/*") {
                // One-level globs ("task/*").
                Some(prefix) => {
                    if let Ok(entries) = std::fs::read_dir(self.root.join(prefix)) {
                        let mut found: Vec<PathBuf> = entries
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.join("Cargo.toml").exists())
                            .collect();
                        found.sort();
                        dirs.extend(found);
                    }
                }
                None => dirs.push(self.root.join(m)),
            }
        }
        let mut out = Vec::new();
        for dir in dirs {
            let path = dir.join("Cargo.toml");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let doc: toml::Table =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", self.show(&path)))?;
            let name = doc
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("{}: package.name: missing", self.show(&path)))?;
            out.push((name.to_string(), dir));
        }
        Ok(out)
    }

    /// Package names of the workspace members that have a `src/lib.rs`: the
    /// host-testable crates (the kernel binary and the tasks' binaries only
    /// build for the target; their libraries build anywhere).
    pub fn host_test_packages(&self) -> Result<Vec<String>, String> {
        Ok(self
            .members()?
            .into_iter()
            .filter(|(_, dir)| dir.join("src/lib.rs").exists())
            .map(|(name, _)| name)
            .collect())
    }

    /// `rustup target add aarch64-unknown-none` unless it is already there
    /// (rustup does not add a target listed in rust-toolchain.toml to a
    /// toolchain that is already installed). Silent when nothing is to do.
    pub fn ensure_target(&self) -> Result<(), String> {
        for t in [TARGET, KERNEL_TARGET] {
            self.ensure_one_target(t)?;
        }
        Ok(())
    }

    fn ensure_one_target(&self, target: &str) -> Result<(), String> {
        let listed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(&self.root)
            .stderr(Stdio::null())
            .output();
        match listed {
            Ok(out) if out.status.success() => {
                if String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.trim() == target)
                {
                    return Ok(());
                }
            }
            // No rustup: the toolchain is managed some other way; the build
            // will say so if the target is missing.
            Err(_) => return Ok(()),
            Ok(_) => {}
        }
        println!("+ rustup target add {target}");
        let status = Command::new("rustup")
            .args(["target", "add", target])
            .current_dir(&self.root)
            .status()
            .map_err(|e| format!("cannot run rustup: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`rustup target add {target}` failed ({status})"))
        }
    }
}

/// Runs a command to completion with inherited output; an error names it.
pub fn run_status(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Writes a file only when its contents change, so cargo's change tracking
/// (mtime-based) does not rebuild the kernel for an identical table.
pub fn write_if_changed(path: &Path, contents: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
