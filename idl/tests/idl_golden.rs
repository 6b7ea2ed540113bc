//! Generated code is reviewed: each interface's output must equal its copy
//! in `idl/golden/`. After an intended change, regenerate the copies with
//! `IDL_BLESS=1 cargo test -p idl --test idl_golden` and review the diff.

use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    idl::interface_dir().join("golden")
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

#[test]
fn idl_golden_generated_code_matches() {
    let dir = idl::interface_dir();
    let bless = std::env::var_os("IDL_BLESS").is_some_and(|v| v == "1");
    let stems = idl::stems(&dir).expect("list interface files");
    assert!(!stems.is_empty(), "no interface files in {}", dir.display());
    let mut failures = Vec::new();
    for stem in &stems {
        let g = idl::generate(&dir, stem).unwrap_or_else(|e| panic!("{e}"));
        for (suffix, text) in [("rs", &g.api), ("tests.rs", &g.tests)] {
            let path = golden_dir().join(format!("{stem}.{suffix}"));
            if bless {
                std::fs::create_dir_all(golden_dir()).expect("create idl/golden");
                std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(golden) if golden == *text => {}
                Ok(golden) => failures.push(format!(
                    "{} differs from the generated code ({})",
                    path.display(),
                    first_difference(&golden, text)
                )),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "generated code changed:\n{}\n\nIf the change is intended, run `IDL_BLESS=1 cargo test -p idl --test idl_golden` \
         and review the diff of idl/golden/.",
        failures.join("\n")
    );
}

#[test]
fn idl_golden_has_no_stale_files() {
    let stems = idl::stems(&idl::interface_dir()).expect("list interface files");
    let Ok(rd) = std::fs::read_dir(golden_dir()) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".tests.rs").trim_end_matches(".rs");
        assert!(
            stems.iter().any(|s| s == stem),
            "idl/golden/{name} has no interface file: remove it"
        );
    }
}
