//! A small ELF64 little-endian reader: the file header, program headers and
//! section headers — all the build needs to lay out a task image and to read
//! the kernel's `.text` size. Every offset is bounds-checked; bad input is an
//! error, never a panic.

use crate::config::{MAX_IMAGE, PAGE, TASK_DATA, TASK_REGIONS, TASK_TEXT};

pub const PT_LOAD: u32 = 1;
pub const EM_AARCH64: u16 = 183;
const SHF_EXECINSTR: u64 = 0x4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    /// `sh_link`: for a symbol table, the index of its string table.
    pub link: u32,
}

/// A symbol's value (its address) and size, from `.symtab`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    pub value: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Elf<'a> {
    pub data: &'a [u8],
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<ProgramHeader>,
    pub sections: Vec<Section>,
}

fn read<const N: usize>(d: &[u8], off: u64) -> Result<[u8; N], String> {
    let start = usize::try_from(off).map_err(|_| "offset out of range".to_string())?;
    d.get(start..start.checked_add(N).ok_or("offset overflow")?)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            format!(
                "truncated: {N} bytes at offset {off:#x} past the end ({:#x})",
                d.len()
            )
        })
}
fn u16_at(d: &[u8], off: u64) -> Result<u16, String> {
    read::<2>(d, off).map(u16::from_le_bytes)
}
fn u32_at(d: &[u8], off: u64) -> Result<u32, String> {
    read::<4>(d, off).map(u32::from_le_bytes)
}
fn u64_at(d: &[u8], off: u64) -> Result<u64, String> {
    read::<8>(d, off).map(u64::from_le_bytes)
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, String> {
        if data.get(0..4) != Some(b"\x7fELF".as_slice()) {
            return Err("not an ELF file (bad magic)".into());
        }
        if data.get(4) != Some(&2) {
            return Err("not a 64-bit ELF file".into());
        }
        if data.get(5) != Some(&1) {
            return Err("not a little-endian ELF file".into());
        }
        let machine = u16_at(data, 18)?;
        let entry = u64_at(data, 24)?;
        let phoff = u64_at(data, 32)?;
        let shoff = u64_at(data, 40)?;
        let phentsize = u16_at(data, 54)? as u64;
        let phnum = u16_at(data, 56)? as u64;
        let shentsize = u16_at(data, 58)? as u64;
        let mut shnum = u16_at(data, 60)? as u64;
        let mut shstrndx = u16_at(data, 62)? as u64;

        let mut segments = Vec::new();
        if phnum > 0 {
            if phentsize < 56 {
                return Err(format!("program header size {phentsize} is too small"));
            }
            for i in 0..phnum {
                let b = phoff.saturating_add(i.saturating_mul(phentsize));
                segments.push(ProgramHeader {
                    p_type: u32_at(data, b)?,
                    flags: u32_at(data, b.saturating_add(4))?,
                    offset: u64_at(data, b.saturating_add(8))?,
                    vaddr: u64_at(data, b.saturating_add(16))?,
                    paddr: u64_at(data, b.saturating_add(24))?,
                    filesz: u64_at(data, b.saturating_add(32))?,
                    memsz: u64_at(data, b.saturating_add(40))?,
                });
            }
        }

        let mut sections = Vec::new();
        if shoff != 0 {
            if shentsize < 64 {
                return Err(format!("section header size {shentsize} is too small"));
            }
            // Extended numbering: the real counts live in section 0.
            if shnum == 0 {
                shnum = u64_at(data, shoff.saturating_add(32))?;
            }
            if shstrndx == 0xffff {
                shstrndx = u32_at(data, shoff.saturating_add(40))? as u64;
            }
            if shnum > 0x10000 {
                return Err(format!("{shnum} sections is implausible"));
            }
            let mut raw = Vec::new();
            for i in 0..shnum {
                let b = shoff.saturating_add(i.saturating_mul(shentsize));
                raw.push((
                    u32_at(data, b)?,
                    Section {
                        name: String::new(),
                        sh_type: u32_at(data, b.saturating_add(4))?,
                        flags: u64_at(data, b.saturating_add(8))?,
                        addr: u64_at(data, b.saturating_add(16))?,
                        offset: u64_at(data, b.saturating_add(24))?,
                        size: u64_at(data, b.saturating_add(32))?,
                        link: u32_at(data, b.saturating_add(40))?,
                    },
                ));
            }
            let strtab = match raw.get(shstrndx as usize) {
                Some((_, s)) if shstrndx != 0 => Some(slice(data, s.offset, s.size)?),
                _ => None,
            };
            for (name_off, mut s) in raw {
                if let Some(tab) = strtab {
                    let start = (name_off as usize).min(tab.len());
                    let end = tab[start..]
                        .iter()
                        .position(|&c| c == 0)
                        .map_or(tab.len(), |n| start + n);
                    s.name = String::from_utf8_lossy(&tab[start..end]).into_owned();
                }
                sections.push(s);
            }
        }
        Ok(Elf {
            data,
            machine,
            entry,
            segments,
            sections,
        })
    }

    /// The symbol `name` of the symbol table (`.symtab`, SHT_SYMTAB):
    /// Ok(None) when the file has no such symbol (or no symbol table).
    pub fn symbol(&self, name: &str) -> Result<Option<Symbol>, String> {
        const SHT_SYMTAB: u32 = 2;
        const SYM_BYTES: u64 = 24;
        let Some(tab) = self.sections.iter().find(|s| s.sh_type == SHT_SYMTAB) else {
            return Ok(None);
        };
        let strtab = self
            .sections
            .get(tab.link as usize)
            .ok_or_else(|| format!("symbol table links to no section ({})", tab.link))?;
        let strings = slice(self.data, strtab.offset, strtab.size)?;
        let syms = slice(self.data, tab.offset, tab.size)?;
        for i in 0..tab.size / SYM_BYTES {
            let b = i * SYM_BYTES;
            let name_off = u32_at(syms, b)? as usize;
            let Some(rest) = strings.get(name_off..) else {
                continue;
            };
            let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
            if &rest[..end] == name.as_bytes() {
                return Ok(Some(Symbol {
                    value: u64_at(syms, b + 8)?,
                    size: u64_at(syms, b + 16)?,
                }));
            }
        }
        Ok(None)
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Size of `.text`, or of all executable sections when there is no
    /// section of that name.
    pub fn text_size(&self) -> u64 {
        match self.section(".text") {
            Some(s) => s.size,
            None => self
                .sections
                .iter()
                .filter(|s| s.flags & SHF_EXECINSTR != 0)
                .map(|s| s.size)
                .sum(),
        }
    }

    fn loads(&self) -> impl Iterator<Item = &ProgramHeader> {
        self.segments
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.memsz > 0)
    }
}

/// A flat, loadable image: the file bytes of every loadable segment at its
/// offset from the lowest load (physical) address, gaps zero-filled. What a
/// boot loader or flash tool copies to `load` and jumps to `entry`. Memory
/// past a segment's file size (`.bss`, stacks) is not in it: the kernel's
/// start-up zeroes `.bss` itself, so nothing depends on a loader doing so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatImage {
    pub load: u64,
    pub entry: u64,
    pub bytes: Vec<u8>,
}

/// Largest flat image accepted: a gap this large between segments is a
/// link-script mistake, not something to write out as zeros.
pub const FLAT_IMAGE_MAX: u64 = 64 << 20;

/// The flat image of `elf` (see [`FlatImage`]). Errors when there is no
/// loadable byte, when segments overlap, when the entry point lies outside
/// the loaded bytes, or when the image would exceed [`FLAT_IMAGE_MAX`].
pub fn flat_image(elf: &Elf) -> Result<FlatImage, String> {
    let mut segs: Vec<&ProgramHeader> = elf.loads().filter(|p| p.filesz > 0).collect();
    segs.sort_by_key(|p| p.paddr);
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return Err("no loadable bytes (no PT_LOAD segment with file contents)".into());
    };
    let load = first.paddr;
    let end = last
        .paddr
        .checked_add(last.filesz)
        .ok_or("a segment's end overflows")?;
    let size = end - load;
    if size > FLAT_IMAGE_MAX {
        return Err(format!(
            "the loadable bytes span {size:#x} bytes from {load:#x} (more than {FLAT_IMAGE_MAX:#x})"
        ));
    }
    let mut bytes = vec![0u8; size as usize];
    let mut covered = load;
    for p in &segs {
        if p.paddr < covered {
            return Err(format!(
                "segment at {:#x} overlaps the one before it (ends at {covered:#x})",
                p.paddr
            ));
        }
        let data = slice(elf.data, p.offset, p.filesz)?;
        let at = (p.paddr - load) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
        covered = p.paddr + p.filesz;
    }
    if !(load..end).contains(&elf.entry) {
        return Err(format!(
            "entry {:#x} is outside the loaded bytes [{load:#x}, {end:#x})",
            elf.entry
        ));
    }
    Ok(FlatImage {
        load,
        entry: elf.entry,
        bytes,
    })
}

fn slice(data: &[u8], offset: u64, size: u64) -> Result<&[u8], String> {
    let end = offset
        .checked_add(size)
        .ok_or_else(|| format!("range {offset:#x}+{size:#x} overflows"))?;
    usize::try_from(offset)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(a, b)| data.get(a..b))
        .ok_or_else(|| {
            format!(
                "range {offset:#x}..{end:#x} is past the end of the file ({:#x})",
                data.len()
            )
        })
}

/// A task ELF laid out for the kernel table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskImage {
    /// The flat image from `TASK_TEXT`, padded to a whole page.
    pub text: Vec<u8>,
    /// Size of the data region: `.data` + `.bss`, a whole number of pages.
    pub data_size: u64,
    /// Size of the stack region, a whole number of pages. The stack sits
    /// just below `TASK_DATA` and grows down towards the text, with at least
    /// one unmapped guard page in between: an overflow faults the task
    /// instead of overwriting its `.bss`.
    pub stack_size: u64,
    pub entry: u64,
    /// `TASK_DATA`: the top of the stack region.
    pub stack_top: u64,
}

fn page_up(v: u64) -> u64 {
    v.div_ceil(PAGE).saturating_mul(PAGE)
}

/// Lays out a task: every loadable segment whose load address is in
/// [`TASK_TEXT`, `TASK_DATA`) goes into the text image at its offset from
/// `TASK_TEXT` (this includes `.data`'s load image, which the task's start-up
/// copies); the data region spans from `TASK_DATA` to the highest virtual end
/// of the segments in [`TASK_DATA`, `TASK_REGIONS`); the stack region ends at
/// `TASK_DATA` and must leave a guard page above the text.
pub fn task_image(elf: &Elf, stack_size: u64) -> Result<TaskImage, String> {
    if elf.machine != EM_AARCH64 {
        return Err(format!("not an AArch64 ELF (e_machine {})", elf.machine));
    }
    let text_range = TASK_TEXT..TASK_DATA;
    let data_range = TASK_DATA..TASK_REGIONS;
    let mut text_end = 0u64;
    let mut data_end = 0u64;
    for p in elf.loads() {
        let in_text = text_range.contains(&p.paddr);
        let in_data = data_range.contains(&p.vaddr);
        if !in_text && !in_data {
            return Err(format!(
                "loadable segment at {:#x} (load address {:#x}) is outside the task layout",
                p.vaddr, p.paddr
            ));
        }
        if in_data {
            data_end = data_end.max((p.vaddr - TASK_DATA).saturating_add(p.memsz));
        }
        if in_text {
            // A segment that also runs from text (not just loads there) may
            // have zero-filled memory beyond its file image; a `.data` load
            // image is only its file bytes (its `.bss` lives in data).
            let len = if text_range.contains(&p.vaddr) {
                p.memsz.max(p.filesz)
            } else {
                p.filesz
            };
            if len > 0 {
                text_end = text_end.max((p.paddr - TASK_TEXT).saturating_add(len));
            }
        }
    }
    if text_end == 0 {
        return Err(
            "no loadable segment at the task text address (linked with task-link.x?)".into(),
        );
    }
    let text_size = page_up(text_end);
    if text_size > MAX_IMAGE {
        return Err(format!(
            "text image is {text_size:#x} bytes, more than the {MAX_IMAGE:#x} (2 MiB) allowed"
        ));
    }
    let data_size = page_up(data_end);
    if data_size > MAX_IMAGE {
        return Err(format!(
            "data region (.data + .bss) is {data_size:#x} bytes, more than the {MAX_IMAGE:#x} (2 MiB) allowed"
        ));
    }
    let stack = page_up(stack_size.max(1));
    if text_size.saturating_add(stack).saturating_add(PAGE) > TASK_DATA - TASK_TEXT {
        return Err(format!(
            "text ({text_size:#x}) + stack ({stack:#x}) + a guard page exceed the {:#x} bytes below the data",
            TASK_DATA - TASK_TEXT
        ));
    }
    let mut text = vec![0u8; text_size as usize];
    for p in elf
        .loads()
        .filter(|p| text_range.contains(&p.paddr) && p.filesz > 0)
    {
        let bytes = slice(elf.data, p.offset, p.filesz)?;
        let at = (p.paddr - TASK_TEXT) as usize;
        text.get_mut(at..at + bytes.len())
            .ok_or_else(|| {
                format!(
                    "segment at load address {:#x} is past the text image",
                    p.paddr
                )
            })?
            .copy_from_slice(bytes);
    }
    if !(TASK_TEXT..TASK_TEXT + text_end).contains(&elf.entry) {
        return Err(format!(
            "entry point {:#x} is not in the text image ({:#x}..{:#x})",
            elf.entry,
            TASK_TEXT,
            TASK_TEXT + text_end
        ));
    }
    Ok(TaskImage {
        text,
        data_size,
        stack_size: stack,
        entry: elf.entry,
        stack_top: TASK_DATA,
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds a minimal AArch64 ELF64: the given PT_LOAD segments
    /// (vaddr, paddr, bytes, memsz) and section headers for `.text` and
    /// `.shstrtab`.
    pub fn build(entry: u64, segs: &[(u64, u64, &[u8], u64)], text_size: u64) -> Vec<u8> {
        let phoff = 64u64;
        let mut data_off = phoff + 56 * segs.len() as u64;
        let mut out = vec![0u8; 64];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        let mut payload = Vec::new();
        for (vaddr, paddr, bytes, memsz) in segs {
            let mut ph = Vec::new();
            ph.extend_from_slice(&PT_LOAD.to_le_bytes());
            ph.extend_from_slice(&5u32.to_le_bytes());
            ph.extend_from_slice(&data_off.to_le_bytes());
            ph.extend_from_slice(&vaddr.to_le_bytes());
            ph.extend_from_slice(&paddr.to_le_bytes());
            ph.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            ph.extend_from_slice(&memsz.to_le_bytes());
            ph.extend_from_slice(&8u64.to_le_bytes());
            out.extend_from_slice(&ph);
            payload.extend_from_slice(bytes);
            data_off += bytes.len() as u64;
        }
        out.extend_from_slice(&payload);
        let strtab = b"\0.text\0.shstrtab\0";
        let str_off = out.len() as u64;
        out.extend_from_slice(strtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        let shdr = |name: u32, ty: u32, flags: u64, off: u64, size: u64| {
            let mut s = Vec::new();
            s.extend_from_slice(&name.to_le_bytes());
            s.extend_from_slice(&ty.to_le_bytes());
            s.extend_from_slice(&flags.to_le_bytes());
            s.extend_from_slice(&0u64.to_le_bytes());
            s.extend_from_slice(&off.to_le_bytes());
            s.extend_from_slice(&size.to_le_bytes());
            s.extend_from_slice(&[0u8; 24]);
            s
        };
        out.extend(shdr(0, 0, 0, 0, 0));
        out.extend(shdr(1, 1, 0x6, 0, text_size));
        out.extend(shdr(7, 3, 0, str_off, strtab.len() as u64));
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&3u16.to_le_bytes());
        out[62..64].copy_from_slice(&2u16.to_le_bytes());
        out
    }

    #[test]
    fn flat_image_places_segments_at_their_load_addresses_and_skips_bss() {
        let text = [0xAAu8; 0x10];
        let data = [0xBBu8; 4];
        // .text at 0x4020_0000, .data 0x100 further, with 0x1000 of .bss
        // after it: the flat image ends at .data's last file byte.
        let bytes = build(
            0x4020_0004,
            &[
                (0x4020_0000, 0x4020_0000, &text, 0x10),
                (0x4020_0100, 0x4020_0100, &data, 0x1000),
            ],
            0x10,
        );
        let flat = flat_image(&Elf::parse(&bytes).unwrap()).unwrap();
        assert_eq!((flat.load, flat.entry), (0x4020_0000, 0x4020_0004));
        assert_eq!(flat.bytes.len(), 0x104);
        assert_eq!(&flat.bytes[..0x10], &text);
        assert!(flat.bytes[0x10..0x100].iter().all(|&b| b == 0));
        assert_eq!(&flat.bytes[0x100..], &data);
    }

    #[test]
    fn flat_image_refuses_overlap_outside_entry_and_huge_gaps() {
        let a = [1u8; 0x20];
        let overlap = build(
            0x1000,
            &[(0x1000, 0x1000, &a, 0x20), (0x1010, 0x1010, &a, 0x20)],
            0x20,
        );
        assert!(flat_image(&Elf::parse(&overlap).unwrap())
            .unwrap_err()
            .contains("overlaps"));
        let outside = build(0x9000, &[(0x1000, 0x1000, &a, 0x20)], 0x20);
        assert!(flat_image(&Elf::parse(&outside).unwrap())
            .unwrap_err()
            .contains("entry"));
        let gap = build(
            0x1000,
            &[
                (0x1000, 0x1000, &a, 0x20),
                (0x1000 + (1 << 30), 0x1000 + (1 << 30), &a, 0x20),
            ],
            0x20,
        );
        assert!(flat_image(&Elf::parse(&gap).unwrap())
            .unwrap_err()
            .contains("span"));
        let empty = build(0x1000, &[(0x1000, 0x1000, &[], 0x20)], 0x20);
        assert!(flat_image(&Elf::parse(&empty).unwrap())
            .unwrap_err()
            .contains("no loadable"));
    }

    #[test]
    fn lays_out_a_task() {
        let code = [0xAAu8; 0x1234];
        let init = [0x55u8; 0x10];
        let elf = build(
            TASK_TEXT + 0x40,
            &[
                // .text + .rodata
                (TASK_TEXT, TASK_TEXT, &code, code.len() as u64),
                // .data runs in DATA, loads right after the text; .bss follows
                (TASK_DATA, TASK_TEXT + 0x1238, &init, 0x10 + 0x300),
                // a separate NOLOAD .bss whose load address lld puts in TEXT
                (TASK_DATA + 0x1000, TASK_TEXT + 0x2238, &[], 0x800),
            ],
            0x1200,
        );
        let e = Elf::parse(&elf).unwrap();
        assert_eq!(e.segments.len(), 3);
        assert_eq!(e.section(".text").map(|s| s.size), Some(0x1200));
        assert_eq!(e.text_size(), 0x1200);
        let t = task_image(&e, 0x1000).unwrap();
        assert_eq!(t.text.len(), 0x2000);
        assert!(t.text[..0x1234].iter().all(|&b| b == 0xAA));
        assert_eq!(&t.text[0x1234..0x1238], &[0, 0, 0, 0]);
        assert!(t.text[0x1238..0x1248].iter().all(|&b| b == 0x55));
        assert!(t.text[0x1248..].iter().all(|&b| b == 0));
        // .data/.bss end at +0x1800 → 0x2000; the 4 KiB stack is its own
        // region ending at TASK_DATA.
        assert_eq!(t.data_size, 0x2000);
        assert_eq!(t.stack_size, 0x1000);
        assert_eq!(t.stack_top, TASK_DATA);
        assert_eq!(t.entry, TASK_TEXT + 0x40);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Elf::parse(b"hello").unwrap_err(),
            "not an ELF file (bad magic)"
        );
        let good = build(TASK_TEXT, &[(TASK_TEXT, TASK_TEXT, &[1, 2, 3, 4], 4)], 4);
        for cut in [10, 40, 64, 100, 122] {
            // Truncated files are errors, whatever is cut.
            let r = Elf::parse(&good[..cut]).and_then(|e| task_image(&e, 16).map(|_| ()));
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut wrong = good.clone();
        wrong[4] = 1;
        assert_eq!(Elf::parse(&wrong).unwrap_err(), "not a 64-bit ELF file");
        let mut x86 = good.clone();
        x86[18] = 62;
        let e = Elf::parse(&x86).unwrap();
        assert_eq!(
            task_image(&e, 16).unwrap_err(),
            "not an AArch64 ELF (e_machine 62)"
        );
    }

    #[test]
    fn never_panics_on_damaged_files() {
        let good = build(
            TASK_TEXT + 4,
            &[
                (TASK_TEXT, TASK_TEXT, &[7; 64], 64),
                (TASK_DATA, TASK_TEXT + 64, &[9; 16], 32),
            ],
            64,
        );
        for cut in 0..good.len() {
            let _ = Elf::parse(&good[..cut]).map(|e| (task_image(&e, 64), e.text_size()));
        }
        // Flip bytes with a fixed pseudo-random sequence.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut bad = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % bad.len();
                bad[at] = (x >> 32) as u8;
            }
            let _ = Elf::parse(&bad).map(|e| (task_image(&e, 64), e.text_size()));
        }
    }

    #[test]
    fn rejects_bad_layouts() {
        let far = build(0x4000_0000, &[(0x4000_0000, 0x4000_0000, &[0; 4], 4)], 4);
        let e = Elf::parse(&far).unwrap();
        assert_eq!(
            task_image(&e, 16).unwrap_err(),
            "loadable segment at 0x40000000 (load address 0x40000000) is outside the task layout"
        );
        let big = build(
            TASK_TEXT,
            &[(TASK_TEXT, TASK_TEXT, &[0; 4], MAX_IMAGE + 1)],
            4,
        );
        let e = Elf::parse(&big).unwrap();
        assert_eq!(
            task_image(&e, 16).unwrap_err(),
            "text image is 0x201000 bytes, more than the 0x200000 (2 MiB) allowed"
        );
        let ok = build(TASK_TEXT, &[(TASK_TEXT, TASK_TEXT, &[0; 4], 4)], 4);
        let e = Elf::parse(&ok).unwrap();
        // A stack that leaves no guard page between it and the text.
        assert!(task_image(&e, MAX_IMAGE - 0x1000)
            .unwrap_err()
            .contains("+ a guard page exceed"));
        assert!(task_image(&e, MAX_IMAGE - 0x2000).is_ok());
        let bad_entry = build(TASK_DATA, &[(TASK_TEXT, TASK_TEXT, &[0; 4], 4)], 4);
        let e = Elf::parse(&bad_entry).unwrap();
        assert!(task_image(&e, 16)
            .unwrap_err()
            .starts_with("entry point 0x2000200000"));
    }
}
