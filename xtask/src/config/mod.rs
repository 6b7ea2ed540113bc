//! `app.toml` and `boards/<board>.toml`: parsing, and every check the build
//! makes before anything is compiled.
//!
//! Parsing is serde with `deny_unknown_fields`, so a misspelt key is an error
//! that names it. Validation then turns the raw files into an [`App`]: task
//! indices fixed by declaration order, task slots resolved to indices,
//! regions given their virtual addresses, interrupts resolved to INTIDs.
//! Every error names the file and the field (`app.toml: tasks.foo.mmio: …`).
//!
//! Where each part lives: this file (layout constants, loading and parsing,
//! small helpers), `app_toml` (the app file's serde types), `board` (the
//! board file's serde types and the board-only checks), `model` (the
//! validated [`App`]), `validate` (the app checked against its board),
//! `vms` (`vm` tables), `devices` (`[[devices]]`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use abi::layout;
use indexmap::IndexMap;
use serde::Deserialize;

mod app_toml;
mod board;
mod devices;
mod model;
mod validate;
mod vms;

pub use app_toml::*;
pub use board::*;
pub use model::*;

use board::validate_board;
use devices::{same_vm, validate_devices};
use validate::validate;
use vms::validate_vms;

/// 4 KiB: the granule of every mapping.
pub const PAGE: u64 = 0x1000;
/// 2 MiB: one level-2 entry; each region after data starts on one.
pub const SLOT: u64 = 0x20_0000;
/// Highest priority number (lowest priority).
pub const LOWEST_PRIORITY: i64 = 15;

pub const TASK_TEXT: u64 = layout::TASK_TEXT as u64;
pub const TASK_DATA: u64 = layout::TASK_DATA as u64;
pub const TASK_REGIONS: u64 = layout::TASK_REGIONS as u64;
pub const TASK_END: u64 = layout::TASK_END as u64;
pub const MAX_IMAGE: u64 = layout::MAX_IMAGE as u64;

/// Reads and validates an app file; its board is `<workspace>/boards/<board>.toml`.
/// `display` is how the app file is named in messages.
pub fn load(app_path: &Path, display: &str, boards_dir: &Path) -> Result<App, String> {
    load_for_board(app_path, display, boards_dir, None)
}

/// [`load`], with the app's `board` replaced by `board` when given
/// (`cargo xtask dist --board`). The image is then named
/// `<app>-<board>`, so it is built beside the app's own.
pub fn load_for_board(
    app_path: &Path,
    display: &str,
    boards_dir: &Path,
    board: Option<&str>,
) -> Result<App, String> {
    let src = std::fs::read_to_string(app_path)
        .map_err(|e| format!("{display}: cannot read {}: {e}", app_path.display()))?;
    parse_for_board(display, &src, board, |board| {
        let path = boards_dir.join(format!("{board}.toml"));
        let shown = format!("boards/{board}.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some((shown, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{shown}: cannot read {}: {e}", path.display())),
        }
    })
}

/// Parses and validates app text. `board_source(name)` returns the board
/// file's display name and text, `None` when there is no such board.
pub fn parse(
    file: &str,
    src: &str,
    board_source: impl FnOnce(&str) -> Result<Option<(String, String)>, String>,
) -> Result<App, String> {
    parse_for_board(file, src, None, board_source)
}

/// [`parse`], with the app's `board` replaced by `board` when given; the
/// image is then named `<app>-<board>`.
pub fn parse_for_board(
    file: &str,
    src: &str,
    board: Option<&str>,
    board_source: impl FnOnce(&str) -> Result<Option<(String, String)>, String>,
) -> Result<App, String> {
    let mut raw: AppToml = toml::from_str(src).map_err(|e| toml_error(file, e))?;
    if let Some(b) = board {
        raw.name = format!("{}-{b}", raw.name);
        raw.board = b.to_string();
    }
    check_name(file, "name", &raw.name)?;
    check_name(file, "board", &raw.board)?;
    let Some((board_file, board_src)) = board_source(&raw.board)? else {
        return Err(format!(
            "{file}: board: unknown board \"{}\" (no file boards/{}.toml)",
            raw.board, raw.board
        ));
    };
    let board: BoardToml = toml::from_str(&board_src).map_err(|e| toml_error(&board_file, e))?;
    validate_board(&board_file, &raw.board, &board)?;
    validate(file, raw, board, board_file)
}

fn toml_error(file: &str, e: toml::de::Error) -> String {
    format!("{file}: {}", e.to_string().trim_end())
}

/// Names that end up in file names and generated code.
fn check_name(file: &str, field: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{file}: {field}: \"{name}\" is not a valid name (use letters, digits, '-' and '_')"
        ))
    }
}

fn range_str(base: u64, size: u64) -> String {
    format!("{:#x}..{:#x}", base, base.saturating_add(size))
}

/// Parses "9.2" or "10.0.2" into a comparable triple.
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}
/// Human-readable region attributes ("READ|WRITE|DMA").
pub fn attr_names(attributes: u32) -> String {
    let mut s = String::new();
    for (bit, name) in [
        (abi::REGION_READ, "READ"),
        (abi::REGION_WRITE, "WRITE"),
        (abi::REGION_EXECUTE, "EXECUTE"),
        (abi::REGION_DEVICE, "DEVICE"),
        (abi::REGION_DMA, "DMA"),
        (abi::REGION_UNCACHED, "UNCACHED"),
    ] {
        if attributes & bit != 0 {
            if !s.is_empty() {
                s.push('|');
            }
            s.push_str(name);
        }
    }
    if s.is_empty() {
        let _ = write!(s, "{attributes:#x}");
    }
    s
}

#[cfg(test)]
mod tests;
