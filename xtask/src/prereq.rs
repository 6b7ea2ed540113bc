//! Prerequisites: a QEMU new enough for the board (nested SMMUv3 needs 9.2;
//! Debian bookworm ships 7.2). As root on Debian we install it from
//! bookworm-backports ourselves, printing each step; otherwise we stop and
//! print the exact commands.

use std::path::Path;
use std::process::Command;

use crate::config::{parse_version, Qemu};
use crate::qemu::euid;
use crate::ws::run_status;

pub const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
pub const BACKPORTS_SOURCE: &str = "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// `<binary> --version` → "10.0.2" (None when it cannot run or says nothing useful).
pub fn qemu_version(binary: &str) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    version_from(&String::from_utf8_lossy(&out.stdout))
}

/// Finds the version in "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2…)".
fn version_from(text: &str) -> Option<String> {
    let rest = &text[text.find("version ")? + "version ".len()..];
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    parse_version(&v).map(|_| v)
}

/// Why the installed QEMU does not do, or None when it does.
fn problem(q: &Qemu) -> Option<String> {
    let min = parse_version(&q.min_version)?;
    match qemu_version(&q.binary) {
        None => Some(format!(
            "`{}` is not installed (need ≥ {})",
            q.binary, q.min_version
        )),
        Some(v) if parse_version(&v).is_some_and(|have| have < min) => Some(format!(
            "`{}` is version {v}, need ≥ {} (nested SMMUv3 translation)",
            q.binary, q.min_version
        )),
        Some(_) => None,
    }
}

fn os_release_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Whether any apt source already names bookworm-backports.
pub fn has_backports_source() -> bool {
    let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources")),
        );
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm-backports"))
        })
    })
}

/// The commands to run by hand (`sudo` = "sudo " or "").
fn steps(sudo: &str, bookworm: bool, need_source: bool) -> Vec<String> {
    let mut s = Vec::new();
    if bookworm && need_source {
        let lines: Vec<String> = BACKPORTS_SOURCE.lines().map(|l| format!("'{l}'")).collect();
        s.push(format!(
            "printf '%s\\n' {} | {sudo}tee {BACKPORTS_FILE}",
            lines.join(" ")
        ));
    }
    s.push(format!("{sudo}apt-get update"));
    s.push(format!(
        "{sudo}DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}qemu-system-arm",
        if bookworm {
            "-t bookworm-backports "
        } else {
            ""
        }
    ));
    s
}

/// The message when we cannot install QEMU ourselves.
fn manual_instructions(
    why: &str,
    min: &str,
    sudo: &str,
    bookworm: bool,
    need_source: bool,
) -> String {
    let cmds: Vec<String> = steps(sudo, bookworm, need_source)
        .into_iter()
        .map(|c| format!("  {c}"))
        .collect();
    format!(
        "{why}.\nInstall QEMU ≥ {min} (on Debian bookworm, from bookworm-backports) with:\n{}",
        cmds.join("\n")
    )
}

/// Makes sure the board's QEMU is there and new enough.
pub fn ensure_qemu(q: &Qemu) -> Result<(), String> {
    let Some(why) = problem(q) else {
        return Ok(());
    };
    let debian = Path::new("/etc/debian_version").exists();
    let codename = os_release_codename();
    let bookworm = codename.as_deref() == Some("bookworm") || codename.is_none();
    let need_source = !has_backports_source();
    if !(debian && euid() == 0) {
        let sudo = if euid() == 0 { "" } else { "sudo " };
        return Err(manual_instructions(
            &why,
            &q.min_version,
            sudo,
            bookworm,
            need_source,
        ));
    }
    println!("prereq: {why}; installing QEMU from Debian");
    if bookworm && need_source {
        println!("+ write {BACKPORTS_FILE}");
        std::fs::write(BACKPORTS_FILE, BACKPORTS_SOURCE)
            .map_err(|e| format!("cannot write {BACKPORTS_FILE}: {e}"))?;
    }
    let started = std::time::Instant::now();
    println!("+ apt-get update");
    run_status(Command::new("apt-get").arg("update"), "apt-get update")?;
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Only what qemu-system-aarch64 needs: its recommended packages
        // (GUI, GStreamer, Mesa, firmware: ~150 more on a fresh machine)
        // are never used by a -nographic run that loads its own image.
        .args(["install", "-y", "--no-install-recommends"]);
    if bookworm {
        install.args(["-t", "bookworm-backports"]);
    }
    install.arg("qemu-system-arm");
    println!(
        "+ DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}qemu-system-arm",
        if bookworm {
            "-t bookworm-backports "
        } else {
            ""
        }
    );
    run_status(&mut install, "apt-get install qemu-system-arm")?;
    match problem(q) {
        None => {
            println!(
                "prereq: {} {} installed in {:.1} s",
                q.binary,
                qemu_version(&q.binary).unwrap_or_default(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Some(still) => Err(format!("after installing: {still}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions() {
        assert_eq!(
            version_from("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"),
            Some("10.0.2".into())
        );
        assert_eq!(
            version_from("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)"),
            Some("7.2.15".into())
        );
        assert_eq!(version_from("garbage"), None);
    }

    #[test]
    fn missing_binary_is_a_problem() {
        let q = Qemu {
            binary: "/nonexistent/qemu-system-aarch64".into(),
            min_version: "9.2".into(),
            machine: "virt".into(),
            cpu: "max".into(),
            memory: "256M".into(),
            args: vec![],
        };
        assert_eq!(
            problem(&q).as_deref(),
            Some("`/nonexistent/qemu-system-aarch64` is not installed (need ≥ 9.2)")
        );
    }

    #[test]
    fn manual_message() {
        assert_eq!(
            manual_instructions("`qemu-system-aarch64` is not installed (need ≥ 9.2)", "9.2", "sudo ", true, false),
            "`qemu-system-aarch64` is not installed (need ≥ 9.2).\n\
             Install QEMU ≥ 9.2 (on Debian bookworm, from bookworm-backports) with:\n  \
             sudo apt-get update\n  \
             sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-arm"
        );
    }

    #[test]
    fn step_lists() {
        let s = steps("sudo ", true, true);
        assert_eq!(s.len(), 3);
        assert!(s[0].contains("'Suites: bookworm-backports'"), "{}", s[0]);
        assert!(s[0].ends_with(&format!("| sudo tee {BACKPORTS_FILE}")));
        assert_eq!(
            s[2],
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-arm"
        );
        assert_eq!(steps("", true, false), ["apt-get update", "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-arm"]);
    }
}
