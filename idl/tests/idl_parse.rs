//! Every interface file parses and checks; the checker refuses what the
//! generated code could not carry.

use std::path::PathBuf;

use idl::model::{Kind, Ty};
use idl::syntax::Encoding;
use idl::Model;

#[test]
fn idl_parse_every_interface_file() {
    let dir = idl::interface_dir();
    let stems = idl::stems(&dir).unwrap();
    assert_eq!(
        stems,
        [
            "iommu-server",
            "pasid-alloc",
            "pci-server",
            "prq-server",
            "supervisor",
            "vmm-frontend"
        ]
    );
    for stem in &stems {
        let m = Model::load(&dir, stem).unwrap_or_else(|e| panic!("{e}"));
        assert!(!m.ops.is_empty(), "{stem}: no operations");
        for (i, op) in m.ops.iter().enumerate() {
            assert_eq!(
                op.number as usize,
                i + 1,
                "{stem}: operations are numbered in file order"
            );
            assert!(!op.doc.is_empty(), "{stem}::{}: undocumented", op.name);
            assert!(op.leases.len() <= 8);
            if op.encoding == Encoding::Zerocopy {
                assert!(op.args.iter().all(|a| m.is_fixed(&a.ty)) && m.is_fixed(&op.reply));
            }
        }
        for k in &m.local {
            assert!(
                !m.def(k).doc.is_empty(),
                "{stem}: type {} undocumented",
                k.name
            );
        }
        assert!(idl::generate(&dir, stem).is_ok());
    }
}

#[test]
fn idl_parse_imports_resolve_to_their_crates() {
    let m = Model::load(&idl::interface_dir(), "iommu-server").unwrap();
    let bind = m.ops.iter().find(|o| o.name == "bind").unwrap();
    let pasid = bind.args.iter().find(|a| a.name == "pasid").unwrap();
    match &pasid.ty {
        Ty::Named(k) => assert_eq!(
            (k.krate.as_str(), k.name.as_str()),
            ("pasid_alloc_api", "PasidHandle")
        ),
        t => panic!("unexpected {t:?}"),
    }
    // Transitive types are known (for sizes) though not nameable directly.
    assert!(m.table.keys().any(|k| k.name == "Pasid"));
    assert!(matches!(m.def(&m.local[0]).kind, Kind::Newtype(_)));
}

#[test]
fn idl_parse_wire_sizes_and_bad_tag_offsets() {
    let m = Model::load(&idl::interface_dir(), "iommu-server").unwrap();
    let map = m.ops.iter().find(|o| o.name == "map").unwrap();
    // domain u32, iova/pa/len u64, perms u8.
    assert_eq!(
        map.args.iter().map(|a| m.fixed_size(&a.ty)).sum::<usize>(),
        4 + 8 * 3 + 1
    );
    // The first field that can be invalid is `perms`: bit 4 is undefined.
    assert_eq!(m.invalid_tag_in(&map.args), Some((28, 1, 1 << 4)));
    let unbind = m.ops.iter().find(|o| o.name == "unbind").unwrap();
    assert_eq!(m.invalid_tag_in(&unbind.args), Some((8, 1, 2)));
}

/// A scratch folder with the given interface files.
fn scratch(files: &[(&str, &str)]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "idl-parse-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (stem, text) in files {
        std::fs::write(dir.join(format!("{stem}.idol.ron")), text).unwrap();
    }
    dir
}

fn error_of(text: &str) -> String {
    let dir = scratch(&[("t", text)]);
    let e = Model::load(&dir, "t").expect_err("should be refused").0;
    let _ = std::fs::remove_dir_all(&dir);
    e
}

fn iface(types: &str, ops: &str) -> String {
    format!("Interface(name: \"T\", errors: [\"Invalid\"], types: {{ {types} }}, ops: {{ {ops} }})")
}

#[test]
fn idl_parse_refuses_bad_interfaces() {
    let cases: &[(String, &str)] = &[
        (iface("", r#""x": (args: { "a": "Nope" })"#), "unknown type"),
        (
            iface(
                r#""O": Tagged(variants: { "A": {} })"#,
                r#""x": (args: { "a": "O" })"#,
            ),
            "not fixed-size",
        ),
        (
            iface("", r#""x": (reply: "Option<u32>")"#),
            "not fixed-size",
        ),
        (
            iface("", r#""x": (args: { "a": "[bool; 2]" })"#),
            "arrays hold",
        ),
        (
            iface("", r#""x": (args: { "a": "[u8; 33]" })"#),
            "arrays hold",
        ),
        (
            iface(
                r#""E": Enum(repr: "u8", variants: { "A": 256 })"#,
                r#""x": ()"#,
            ),
            "does not fit",
        ),
        (
            iface(
                r#""E": Enum(repr: "u8", variants: { "A": 1, "B": 1 })"#,
                r#""x": ()"#,
            ),
            "used twice",
        ),
        (
            iface(r#""F": Flags(repr: "u8", bits: { "A": 8 })"#, r#""x": ()"#),
            "does not fit",
        ),
        (
            iface(r#""S": Struct(fields: { "s": "S" })"#, r#""x": ()"#),
            "contains itself",
        ),
        (
            iface(r#""XArgs": Newtype(ty: "u8")"#, r#""x": ()"#),
            "clashes with a generated name",
        ),
        (
            iface(r#""Result": Newtype(ty: "u8")"#, r#""x": ()"#),
            "CamelCase",
        ),
        (iface("", r#""Bad": ()"#), "snake_case"),
        (iface("", r#""x": (args: { "caller": "u8" })"#), "caller"),
        (
            iface("", r#""x": (leases: { "args": (access: Read, max: 4) })"#),
            "lease `args`",
        ),
        (
            iface("", r#""x": (leases: { "l": (access: Read, max: 0) })"#),
            "max",
        ),
        (
            iface(
                "",
                r#""x": (leases: { "l": (access: Read, ty: "()", max: 1) })"#,
            ),
            "fixed-size",
        ),
        (iface("", r#""x": (callers: ["Not A Task"])"#), "task name"),
        (iface("", r#""x": (), "x": ()"#), "duplicate key"),
        (iface("", r#""x": (unknown_field: 1)"#), "unknown_field"),
        (
            "Interface(name: \"T\", errors: [\"ENOENT\"], ops: { \"x\": () })".to_string(),
            "unknown error",
        ),
        (
            "Interface(name: \"T\", imports: [\"t\"], errors: [\"Invalid\"], ops: { \"x\": () })"
                .to_string(),
            "cycle",
        ),
    ];
    for (text, needle) in cases {
        let e = error_of(text);
        assert!(
            e.contains(needle),
            "error for {text}\n  was: {e}\n  expected to mention: {needle}"
        );
    }
}

#[test]
fn idl_parse_accepts_a_minimal_interface() {
    let dir = scratch(&[("t", &iface("", r#""ping": (idempotent: true)"#))]);
    let g = idl::generate(&dir, "t").unwrap();
    assert!(g.api.contains("pub struct TClient"));
    assert!(g.api.contains("pub fn dispatch_decode("));
    assert!(g.tests.contains("fn idl_t_ping_args_round_trip()"));
    let _ = std::fs::remove_dir_all(&dir);
}
