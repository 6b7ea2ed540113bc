//! Generated code is reviewed, at a fraction of its size:
//!
//! - the sample interface (`idl/tests/sample/sample.idol.ron`, every type
//!   kind, encoding, lease access, an import, the caller forms) generates
//!   exactly `idl/golden/sample.rs` and `sample.tests.rs`: a change to the
//!   generator's output shows in their diff;
//! - every real interface (`idl/*.idol.ron`) generates, and its summary —
//!   per op its number, name, encoding, arguments and reply with their wire
//!   sizes, leases, retry and callers, plus a hash of its generated code —
//!   equals `idl/golden/interfaces.txt`: renumbering or a changed signature
//!   shows in that diff, and the hash says which interfaces' code a
//!   generator change touched. (Their `*-api` crates compile the code and run
//!   its `idl_*` tests.)
//!
//! After an intended change: `IDL_BLESS=1 cargo test -p idl --test idl_golden`,
//! then review the diff of `idl/golden/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use idl::model::{Model, Ty};
use idl::syntax::Encoding;

fn golden_dir() -> PathBuf {
    idl::interface_dir().join("golden")
}

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sample")
}

fn bless() -> bool {
    std::env::var_os("IDL_BLESS").is_some_and(|v| v == "1")
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  golden:    {x}\n  generated: {y}", i + 1);
        }
    }
    format!(
        "lengths differ: golden {} lines, generated {} lines",
        a.lines().count(),
        b.lines().count()
    )
}

/// Compares `text` with `idl/golden/<name>` (or writes it when blessing);
/// a difference is pushed to `failures`.
fn check(name: &str, text: &str, failures: &mut Vec<String>) {
    let path = golden_dir().join(name);
    if bless() {
        std::fs::create_dir_all(golden_dir()).expect("create idl/golden");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(golden) if golden == text => {}
        Ok(golden) => failures.push(format!(
            "{} differs from the generated text ({})",
            path.display(),
            first_difference(&golden, text)
        )),
        Err(e) => failures.push(format!("{}: {e}", path.display())),
    }
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "generated code changed:\n{}\n\nIf the change is intended, run `IDL_BLESS=1 cargo test -p idl --test idl_golden` \
         and review the diff of idl/golden/.",
        failures.join("\n")
    );
}

/// 64-bit FNV-1a: a stable fingerprint of generated code (no dependency).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn ty(t: &Ty) -> String {
    match t {
        Ty::Prim(p) => p.name().to_string(),
        Ty::Unit => "()".to_string(),
        Ty::TaskId => "TaskId".to_string(),
        Ty::Array(p, n) => format!("[{}; {n}]", p.name()),
        Ty::Option(t) => format!("Option<{}>", ty(t)),
        Ty::Named(k) => k.name.clone(),
    }
}

/// A type with its wire size when fixed (`T/8`), else `T/var`.
fn sized(m: &Model, t: &Ty) -> String {
    if m.is_fixed(t) {
        format!("{}/{}", ty(t), m.fixed_size(t))
    } else {
        format!("{}/var", ty(t))
    }
}

/// One interface's summary: a header with the generated code's size and
/// hash, then one line per op.
fn summary(dir: &Path, stem: &str) -> String {
    let m = Model::load(dir, stem).unwrap_or_else(|e| panic!("{e}"));
    let g = idl::generate(dir, stem).unwrap_or_else(|e| panic!("{e}"));
    let mut s = format!(
        "{stem}: {} ({} ops); api {} lines fnv {:016x}; tests {} lines fnv {:016x}\n",
        m.name,
        m.ops.len(),
        g.api.lines().count(),
        fnv(&g.api),
        g.tests.lines().count(),
        fnv(&g.tests),
    );
    for op in &m.ops {
        let enc = match op.encoding {
            Encoding::Zerocopy => "zerocopy",
            Encoding::Postcard => "postcard",
        };
        let args: Vec<String> = op
            .args
            .iter()
            .map(|a| format!("{}: {}", a.name, sized(&m, &a.ty)))
            .collect();
        let leases: Vec<String> = op
            .leases
            .iter()
            .map(|l| {
                format!(
                    "{} {:?} {}[{}..={}]",
                    l.name,
                    l.access,
                    ty(&l.ty),
                    l.min,
                    l.max
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "  {:2} {} {enc} ({}) leases [{}] -> {}{}; callers {}",
            op.number,
            op.name,
            args.join(", "),
            leases.join(", "),
            sized(&m, &op.reply),
            if op.idempotent { " idempotent" } else { "" },
            if op.callers.is_empty() {
                "any".to_string()
            } else {
                op.callers.join(" ")
            },
        );
    }
    s
}

#[test]
fn idl_golden_sample_generated_code_matches() {
    let g = idl::generate(&sample_dir(), "sample").unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    check("sample.rs", &g.api, &mut failures);
    check("sample.tests.rs", &g.tests, &mut failures);
    report(failures);
}

#[test]
fn idl_golden_interfaces_summary_matches() {
    let dir = idl::interface_dir();
    let stems = idl::stems(&dir).expect("list interface files");
    assert!(!stems.is_empty(), "no interface files in {}", dir.display());
    let text: String = stems.iter().map(|stem| summary(&dir, stem)).collect();
    let mut failures = Vec::new();
    check("interfaces.txt", &text, &mut failures);
    report(failures);
}

#[test]
fn idl_golden_has_no_stale_files() {
    let expected = ["interfaces.txt", "sample.rs", "sample.tests.rs"];
    let Ok(rd) = std::fs::read_dir(golden_dir()) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            expected.contains(&name.as_str()),
            "idl/golden/{name} is not a golden this test writes: remove it"
        );
    }
}
