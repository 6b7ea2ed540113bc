//! Checked, resolved form of an interface file and the files it imports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::syntax::{self, Access, Encoding};
use crate::Error;

/// Integer and boolean primitives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prim {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    Bool,
}

impl Prim {
    fn parse(s: &str) -> Option<Prim> {
        Some(match s {
            "u8" => Prim::U8,
            "u16" => Prim::U16,
            "u32" => Prim::U32,
            "u64" => Prim::U64,
            "i8" => Prim::I8,
            "i16" => Prim::I16,
            "i32" => Prim::I32,
            "i64" => Prim::I64,
            "bool" => Prim::Bool,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Prim::U8 => "u8",
            Prim::U16 => "u16",
            Prim::U32 => "u32",
            Prim::U64 => "u64",
            Prim::I8 => "i8",
            Prim::I16 => "i16",
            Prim::I32 => "i32",
            Prim::I64 => "i64",
            Prim::Bool => "bool",
        }
    }
    pub fn size(self) -> usize {
        match self {
            Prim::U8 | Prim::I8 | Prim::Bool => 1,
            Prim::U16 | Prim::I16 => 2,
            Prim::U32 | Prim::I32 => 4,
            Prim::U64 | Prim::I64 => 8,
        }
    }
    fn is_unsigned(self) -> bool {
        matches!(self, Prim::U8 | Prim::U16 | Prim::U32 | Prim::U64)
    }
}

/// Identity of a named type: the API crate that defines it and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeKey {
    pub krate: String,
    pub name: String,
}

/// A resolved type expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    Prim(Prim),
    Unit,
    TaskId,
    Array(Prim, usize),
    Option(Box<Ty>),
    Named(TypeKey),
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub doc: String,
}

/// A named value of an enum (its discriminant) or of a flag set (its bit).
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub value: u64,
    pub doc: String,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Newtype(Ty),
    Struct(Vec<Field>),
    Enum { repr: Prim, variants: Vec<Value> },
    Flags { repr: Prim, bits: Vec<Value> },
    Tagged(Vec<(String, Vec<Field>)>),
}

#[derive(Clone, Debug)]
pub struct TypeDef {
    pub key: TypeKey,
    pub doc: String,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub struct Lease {
    pub name: String,
    pub doc: String,
    pub access: Access,
    pub ty: Ty,
    pub min: usize,
    pub max: usize,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub name: String,
    pub number: u16,
    pub doc: String,
    pub args: Vec<Field>,
    pub leases: Vec<Lease>,
    pub reply: Ty,
    pub encoding: Encoding,
    pub idempotent: bool,
    pub callers: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ErrorVariant {
    pub name: String,
    pub code: u32,
    pub doc: String,
}

/// One interface, checked, with every type it can reach.
#[derive(Clone, Debug)]
pub struct Model {
    /// File stem, e.g. `iommu-server`.
    pub stem: String,
    /// Rust name of its API crate, e.g. `iommu_server_api`.
    pub krate: String,
    pub name: String,
    pub doc: String,
    pub errors: Vec<ErrorVariant>,
    /// Types defined by this file, in file order.
    pub local: Vec<TypeKey>,
    /// Every type reachable (this file's and imported ones).
    pub table: BTreeMap<TypeKey, TypeDef>,
    pub ops: Vec<Op>,
    /// Union of the ops' callers, in first-seen order.
    pub callers: Vec<String>,
    /// Files read (for `rerun-if-changed`).
    pub sources: Vec<PathBuf>,
}

/// Errors an interface may declare: (name, code, meaning). Codes are
/// Linux errno values, so they read like iommufd's.
pub const ERRNO_TABLE: &[(&str, u32, &str)] = &[
    ("NotPermitted", 1, "EPERM: the caller does not own the object (stream, PASID, domain, cookie) or may not do this"),
    ("NotFound", 2, "ENOENT: no such object (domain, bind, PASID, cookie, route)"),
    ("Io", 5, "EIO: the hardware refused a command (CMDQ_CONS.ERR, GERROR) or is unusable"),
    ("Again", 11, "EAGAIN: temporarily unable (a queue is full or a server this one depends on is restarting); try again"),
    ("NoMemory", 12, "ENOMEM: out of table or queue memory"),
    ("Busy", 16, "EBUSY: the object is in use (a domain with users, a stream already attached)"),
    ("AlreadyExists", 17, "EEXIST: the object already exists (mapping overlap, PASID already allocated)"),
    ("NoDevice", 19, "ENODEV: no such stream or device"),
    ("Invalid", 22, "EINVAL: an argument is out of range or inconsistent (alignment, unknown cookie)"),
    ("NoSpace", 28, "ENOSPC: a quota or an identifier space is exhausted"),
    ("Range", 34, "ERANGE: an address or length is outside the allowed window"),
    ("Overflow", 75, "EOVERFLOW: a value does not fit"),
    ("Unsupported", 95, "EOPNOTSUPP: the hardware or configuration does not support this"),
    ("AddrInUse", 98, "EADDRINUSE: the address range is reserved (the MSI window) or in use by the server"),
    ("TimedOut", 110, "ETIMEDOUT: the hardware did not complete in time (CMD_SYNC, ATC invalidation)"),
];

/// Code of the generated `ServerDied` variant: outside errno and outside the
/// kernel's reserved range, so it can cross one more hop unchanged.
pub const SERVER_DIED_CODE: u32 = 0x1_0000;
/// Code of the generated `Protocol` variant.
pub const PROTOCOL_CODE: u32 = 0x1_0001;

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv",
    "try", "typeof", "unsized", "virtual", "yield", "gen",
];

/// Names a type may not take (prelude items and built-ins).
const RESERVED_TYPES: &[&str] = &[
    "Option", "Result", "Some", "None", "Ok", "Err", "Self", "TaskId", "Cell", "Box", "Vec",
    "String",
];

pub fn api_crate(stem: &str) -> String {
    format!("{}_api", stem.replace('-', "_"))
}

fn is_snake(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some('a'..='z'))
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.ends_with('_')
        && !s.contains("__")
        && !KEYWORDS.contains(&s)
}

fn is_camel(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some('A'..='Z')) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_screaming(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some('A'..='Z'))
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_task_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some('a'..='z'))
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `create_s2_domain` → `CreateS2Domain`; `vmm-frontend` → `VmmFrontend`.
pub fn camel(s: &str) -> String {
    s.split(['_', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// `DomainId` → `domain_id`.
pub fn snake(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Types of one file, resolved in that file's scope.
struct Module {
    types: Vec<TypeDef>,
}

struct Loader {
    dir: PathBuf,
    modules: BTreeMap<String, Module>,
    loading: Vec<String>,
    sources: Vec<PathBuf>,
}

fn err(file: &str, msg: impl Into<String>) -> Error {
    Error(format!("{file}: {}", msg.into()))
}

fn read_interface(path: &Path) -> Result<syntax::Interface, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error(format!("{}: cannot read: {e}", path.display())))?;
    ron::de::from_str(&text).map_err(|e| Error(format!("{}: {e}", path.display())))
}

impl Loader {
    fn path(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.idol.ron"))
    }

    /// Loads `stem` and its imports; returns its parsed form.
    fn load(&mut self, stem: &str) -> Result<syntax::Interface, Error> {
        let file = format!("{stem}.idol.ron");
        if self.loading.iter().any(|s| s == stem) {
            return Err(err(
                &file,
                format!("import cycle: {} -> {stem}", self.loading.join(" -> ")),
            ));
        }
        let path = self.path(stem);
        let iface = read_interface(&path)?;
        if !self.sources.contains(&path) {
            self.sources.push(path);
        }
        if self.modules.contains_key(stem) {
            return Ok(iface);
        }
        self.loading.push(stem.to_string());
        for imp in &iface.imports {
            self.load(imp)?;
        }
        self.loading.pop();
        let scope = self.scope(stem, &iface)?;
        let krate = api_crate(stem);
        let mut types = Vec::new();
        for (name, def) in iface.types.iter() {
            types.push(resolve_typedef(&file, &krate, name, def, &scope)?);
        }
        self.modules.insert(stem.to_string(), Module { types });
        Ok(iface)
    }

    /// Names visible in `stem`: its own types and its direct imports' own.
    fn scope(
        &self,
        stem: &str,
        iface: &syntax::Interface,
    ) -> Result<BTreeMap<String, TypeKey>, Error> {
        let file = format!("{stem}.idol.ron");
        let krate = api_crate(stem);
        let mut scope = BTreeMap::new();
        for (name, _) in iface.types.iter() {
            if !is_camel(name) || RESERVED_TYPES.contains(&name) {
                return Err(err(
                    &file,
                    format!("type name `{name}` must be CamelCase and not a built-in name"),
                ));
            }
            scope.insert(
                name.to_string(),
                TypeKey {
                    krate: krate.clone(),
                    name: name.to_string(),
                },
            );
        }
        for imp in &iface.imports {
            let m = self
                .modules
                .get(imp)
                .ok_or_else(|| err(&file, format!("import `{imp}` not loaded")))?;
            for t in &m.types {
                if let Some(prev) = scope.insert(t.key.name.clone(), t.key.clone()) {
                    return Err(err(
                        &file,
                        format!(
                            "type `{}` from `{imp}` clashes with `{}::{}`",
                            t.key.name, prev.krate, prev.name
                        ),
                    ));
                }
            }
        }
        Ok(scope)
    }
}

fn parse_ty(file: &str, s: &str, scope: &BTreeMap<String, TypeKey>) -> Result<Ty, Error> {
    let parsed: syn::Type = syn::parse_str(s).map_err(|e| err(file, format!("type `{s}`: {e}")))?;
    ty_from_syn(file, s, &parsed, scope)
}

fn ty_from_syn(
    file: &str,
    s: &str,
    t: &syn::Type,
    scope: &BTreeMap<String, TypeKey>,
) -> Result<Ty, Error> {
    let bad = |why: &str| err(file, format!("type `{s}`: {why}"));
    match t {
        syn::Type::Tuple(t) if t.elems.is_empty() => Ok(Ty::Unit),
        syn::Type::Array(a) => {
            let elem = ty_from_syn(file, s, &a.elem, scope)?;
            let n = match &a.len {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(i),
                    ..
                }) => i.base10_parse::<usize>().map_err(|_| bad("array length"))?,
                _ => return Err(bad("array length must be a number")),
            };
            match elem {
                Ty::Prim(p) if p != Prim::Bool && (1..=32).contains(&n) => Ok(Ty::Array(p, n)),
                _ => Err(bad(
                    "arrays hold 1..=32 integers (use a lease or a struct for more)",
                )),
            }
        }
        syn::Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            let seg = &p.path.segments[0];
            let id = seg.ident.to_string();
            match &seg.arguments {
                syn::PathArguments::None => {
                    if let Some(prim) = Prim::parse(&id) {
                        Ok(Ty::Prim(prim))
                    } else if id == "TaskId" {
                        Ok(Ty::TaskId)
                    } else if let Some(k) = scope.get(&id) {
                        Ok(Ty::Named(k.clone()))
                    } else {
                        Err(bad(
                            "unknown type (define it under `types` or import its file)",
                        ))
                    }
                }
                syn::PathArguments::AngleBracketed(args)
                    if id == "Option" && args.args.len() == 1 =>
                {
                    match &args.args[0] {
                        syn::GenericArgument::Type(inner) => {
                            let inner = ty_from_syn(file, s, inner, scope)?;
                            match inner {
                                Ty::TaskId | Ty::Unit | Ty::Option(_) => {
                                    Err(bad("Option of TaskId, () or Option is not supported"))
                                }
                                t => Ok(Ty::Option(Box::new(t))),
                            }
                        }
                        _ => Err(bad("Option takes one type")),
                    }
                }
                _ => Err(bad("unsupported generic type")),
            }
        }
        _ => Err(bad("unsupported type syntax")),
    }
}

fn fields(
    file: &str,
    what: &str,
    map: &syntax::OrderedMap<syntax::FieldSpec>,
    scope: &BTreeMap<String, TypeKey>,
) -> Result<Vec<Field>, Error> {
    let mut out = Vec::new();
    for (name, spec) in map.iter() {
        if !is_snake(name) || name == "caller" {
            return Err(err(
                file,
                format!("{what}: field `{name}` must be snake_case, not a keyword or `caller`"),
            ));
        }
        let ty = parse_ty(file, spec.ty(), scope)?;
        if ty == Ty::Unit {
            return Err(err(file, format!("{what}: field `{name}` cannot be ()")));
        }
        out.push(Field {
            name: name.to_string(),
            ty,
            doc: spec.doc().to_string(),
        });
    }
    Ok(out)
}

fn repr_prim(file: &str, what: &str, repr: &str) -> Result<Prim, Error> {
    match Prim::parse(repr) {
        Some(p) if p.is_unsigned() => Ok(p),
        _ => Err(err(
            file,
            format!("{what}: repr must be u8, u16, u32 or u64"),
        )),
    }
}

fn resolve_typedef(
    file: &str,
    krate: &str,
    name: &str,
    def: &syntax::TypeDef,
    scope: &BTreeMap<String, TypeKey>,
) -> Result<TypeDef, Error> {
    let key = TypeKey {
        krate: krate.to_string(),
        name: name.to_string(),
    };
    let what = format!("type `{name}`");
    let (doc, kind) = match def {
        syntax::TypeDef::Newtype { doc, ty } => {
            let ty = parse_ty(file, ty, scope)?;
            if ty == Ty::Unit {
                return Err(err(file, format!("{what}: a newtype of () is pointless")));
            }
            (doc, Kind::Newtype(ty))
        }
        syntax::TypeDef::Struct { doc, fields: f } => {
            if f.is_empty() {
                return Err(err(file, format!("{what}: a struct needs fields")));
            }
            (doc, Kind::Struct(fields(file, &what, f, scope)?))
        }
        syntax::TypeDef::Enum {
            doc,
            repr,
            variants,
        } => {
            let repr = repr_prim(file, &what, repr)?;
            if variants.is_empty() {
                return Err(err(file, format!("{what}: an enum needs variants")));
            }
            let limit = if repr.size() == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * repr.size())) - 1
            };
            let mut out: Vec<Value> = Vec::new();
            for (v, spec) in variants.iter() {
                let value = &spec.value();
                if !is_camel(v) {
                    return Err(err(
                        file,
                        format!("{what}: variant `{v}` must be CamelCase"),
                    ));
                }
                if *value > limit {
                    return Err(err(
                        file,
                        format!("{what}: value of `{v}` does not fit {}", repr.name()),
                    ));
                }
                if out.iter().any(|x| x.value == *value) {
                    return Err(err(file, format!("{what}: value {value} used twice")));
                }
                out.push(Value {
                    name: v.to_string(),
                    value: *value,
                    doc: spec.doc().to_string(),
                });
            }
            (
                doc,
                Kind::Enum {
                    repr,
                    variants: out,
                },
            )
        }
        syntax::TypeDef::Flags { doc, repr, bits } => {
            let repr = repr_prim(file, &what, repr)?;
            if bits.is_empty() {
                return Err(err(file, format!("{what}: flags need bits")));
            }
            let mut out: Vec<Value> = Vec::new();
            for (b, spec) in bits.iter() {
                let bit = &spec.value();
                if !is_screaming(b) {
                    return Err(err(
                        file,
                        format!("{what}: bit `{b}` must be SCREAMING_SNAKE_CASE"),
                    ));
                }
                if *bit >= 8 * repr.size() as u64 {
                    return Err(err(
                        file,
                        format!("{what}: bit {bit} of `{b}` does not fit {}", repr.name()),
                    ));
                }
                if out.iter().any(|x| x.value == *bit) {
                    return Err(err(file, format!("{what}: bit {bit} used twice")));
                }
                out.push(Value {
                    name: b.to_string(),
                    value: *bit,
                    doc: spec.doc().to_string(),
                });
            }
            (doc, Kind::Flags { repr, bits: out })
        }
        syntax::TypeDef::Tagged { doc, variants } => {
            if variants.is_empty() || variants.len() > 127 {
                return Err(err(
                    file,
                    format!("{what}: a tagged enum needs 1..=127 variants"),
                ));
            }
            let mut out = Vec::new();
            for (v, f) in variants.iter() {
                if !is_camel(v) {
                    return Err(err(
                        file,
                        format!("{what}: variant `{v}` must be CamelCase"),
                    ));
                }
                out.push((
                    v.to_string(),
                    fields(file, &format!("{what}::{v}"), f, scope)?,
                ));
            }
            (doc, Kind::Tagged(out))
        }
    };
    Ok(TypeDef {
        key,
        doc: doc.clone(),
        kind,
    })
}

impl Model {
    /// Loads `<dir>/<stem>.idol.ron` with its imports and checks it.
    pub fn load(dir: &Path, stem: &str) -> Result<Model, Error> {
        let mut loader = Loader {
            dir: dir.to_path_buf(),
            modules: BTreeMap::new(),
            loading: Vec::new(),
            sources: Vec::new(),
        };
        let iface = loader.load(stem)?;
        let file = format!("{stem}.idol.ron");
        let krate = api_crate(stem);
        let scope = loader.scope(stem, &iface)?;
        let mut table = BTreeMap::new();
        for m in loader.modules.values() {
            for t in &m.types {
                table.insert(t.key.clone(), t.clone());
            }
        }
        let local: Vec<TypeKey> = loader.modules[stem]
            .types
            .iter()
            .map(|t| t.key.clone())
            .collect();
        check_cycles(&table)?;

        if !is_camel(&iface.name) {
            return Err(err(&file, "interface name must be CamelCase"));
        }
        let mut errors: Vec<ErrorVariant> = Vec::new();
        if iface.errors.is_empty() {
            return Err(err(&file, "declare at least one error"));
        }
        for e in &iface.errors {
            let Some((name, code, doc)) = ERRNO_TABLE.iter().find(|(n, _, _)| n == e) else {
                let known: Vec<&str> = ERRNO_TABLE.iter().map(|(n, _, _)| *n).collect();
                return Err(err(
                    &file,
                    format!("unknown error `{e}`; known: {}", known.join(", ")),
                ));
            };
            if errors.iter().any(|x| x.name == *name) {
                return Err(err(&file, format!("error `{e}` listed twice")));
            }
            errors.push(ErrorVariant {
                name: name.to_string(),
                code: *code,
                doc: doc.to_string(),
            });
        }

        if iface.ops.is_empty() || iface.ops.len() > u16::MAX as usize {
            return Err(err(&file, "an interface needs 1..=65535 operations"));
        }
        let mut ops = Vec::new();
        let mut callers: Vec<String> = Vec::new();
        for (i, (name, op)) in iface.ops.iter().enumerate() {
            let what = format!("operation `{name}`");
            if !is_snake(name) {
                return Err(err(
                    &file,
                    format!("{what}: name must be snake_case and not a keyword"),
                ));
            }
            let args = fields(&file, &what, &op.args, &scope)?;
            let mut leases = Vec::new();
            if op.leases.len() > 8 {
                return Err(err(&file, format!("{what}: at most 8 leases")));
            }
            for (lname, l) in op.leases.iter() {
                const TAKEN: &[&str] = &[
                    "args", "leases", "caller", "result", "server", "msg", "buf", "request",
                    "allowed",
                ];
                if !is_snake(lname)
                    || TAKEN.contains(&lname)
                    || args.iter().any(|a| a.name == lname)
                {
                    return Err(err(
                        &file,
                        format!(
                            "{what}: lease `{lname}` must be snake_case, unique and not one of {}",
                            TAKEN.join(", ")
                        ),
                    ));
                }
                let ty = parse_ty(&file, &l.ty, &scope)?;
                if !is_fixed(&table, &ty) || fixed_size(&table, &ty) == 0 {
                    return Err(err(
                        &file,
                        format!("{what}: lease `{lname}` entries must be fixed-size"),
                    ));
                }
                if l.max == 0 || l.min > l.max {
                    return Err(err(
                        &file,
                        format!("{what}: lease `{lname}` needs 1 <= max and min <= max"),
                    ));
                }
                leases.push(Lease {
                    name: lname.to_string(),
                    doc: l.doc.clone(),
                    access: l.access,
                    ty,
                    min: l.min,
                    max: l.max,
                });
            }
            let reply = parse_ty(&file, &op.reply, &scope)?;
            if op.encoding == Encoding::Zerocopy {
                for a in &args {
                    if !is_fixed(&table, &a.ty) {
                        return Err(err(
                            &file,
                            format!(
                                "{what}: argument `{}` is not fixed-size; use encoding: Postcard",
                                a.name
                            ),
                        ));
                    }
                }
                if !is_fixed(&table, &reply) {
                    return Err(err(
                        &file,
                        format!("{what}: reply is not fixed-size; use encoding: Postcard"),
                    ));
                }
            }
            for c in &op.callers {
                if !is_task_name(c) {
                    return Err(err(
                        &file,
                        format!("{what}: caller `{c}` is not a task name"),
                    ));
                }
                if !callers.contains(c) {
                    callers.push(c.clone());
                }
            }
            ops.push(Op {
                name: name.to_string(),
                number: (i + 1) as u16,
                doc: op.doc.clone(),
                args,
                leases,
                reply,
                encoding: op.encoding,
                idempotent: op.idempotent,
                callers: op.callers.clone(),
            });
        }

        let model = Model {
            stem: stem.to_string(),
            krate,
            name: iface.name.clone(),
            doc: iface.doc.clone(),
            errors,
            local,
            table,
            ops,
            callers,
            sources: loader.sources,
        };
        model.check_names()?;
        Ok(model)
    }

    fn check_names(&self) -> Result<(), Error> {
        let file = format!("{}.idol.ron", self.stem);
        let n = &self.name;
        let mut generated: Vec<String> = ["Client", "Server", "Error", "Op", "Request", "Caller"]
            .iter()
            .map(|s| format!("{n}{s}"))
            .collect();
        for op in &self.ops {
            generated.push(format!("{}Args", camel(&op.name)));
            generated.push(format!("{}ArgsWire", camel(&op.name)));
            generated.push(format!("{}Leases", camel(&op.name)));
        }
        for k in &self.local {
            generated.push(format!("{}Wire", k.name));
        }
        for name in self
            .table
            .keys()
            .filter(|k| k.krate == self.krate)
            .map(|k| &k.name)
        {
            if generated.contains(name) {
                return Err(err(
                    &file,
                    format!("type `{name}` clashes with a generated name"),
                ));
            }
        }
        Ok(())
    }

    pub fn def(&self, k: &TypeKey) -> &TypeDef {
        &self.table[k]
    }

    pub fn is_fixed(&self, t: &Ty) -> bool {
        is_fixed(&self.table, t)
    }

    pub fn fixed_size(&self, t: &Ty) -> usize {
        fixed_size(&self.table, t)
    }

    /// A byte range and value that no valid wire form of `t` has there:
    /// (offset, width, value) of the first bool, enum or flags field.
    pub fn invalid_tag(&self, t: &Ty) -> Option<(usize, usize, u64)> {
        match t {
            Ty::Prim(Prim::Bool) => Some((0, 1, 2)),
            Ty::Named(k) => match &self.table[k].kind {
                Kind::Newtype(t) => self.invalid_tag(t),
                Kind::Struct(fields) => self.invalid_tag_in(fields),
                Kind::Enum { repr, variants } => {
                    let limit = if repr.size() == 8 {
                        u64::MAX
                    } else {
                        (1u64 << (8 * repr.size())) - 1
                    };
                    (0..=limit.min(1 << 16))
                        .find(|v| !variants.iter().any(|x| x.value == *v))
                        .map(|v| (0, repr.size(), v))
                }
                Kind::Flags { repr, bits } => (0..(8 * repr.size()) as u64)
                    .find(|b| !bits.iter().any(|x| x.value == *b))
                    .map(|b| (0, repr.size(), 1u64 << b)),
                Kind::Tagged(_) => None,
            },
            _ => None,
        }
    }

    /// As [`Model::invalid_tag`], over a sequence of fields laid end to end.
    pub fn invalid_tag_in(&self, fields: &[Field]) -> Option<(usize, usize, u64)> {
        let mut offset = 0;
        for f in fields {
            if let Some((o, w, v)) = self.invalid_tag(&f.ty) {
                return Some((offset + o, w, v));
            }
            offset += self.fixed_size(&f.ty);
        }
        None
    }
}

fn is_fixed(table: &BTreeMap<TypeKey, TypeDef>, t: &Ty) -> bool {
    match t {
        Ty::Prim(_) | Ty::Unit | Ty::TaskId | Ty::Array(..) => true,
        Ty::Option(_) => false,
        Ty::Named(k) => match &table[k].kind {
            Kind::Newtype(t) => is_fixed(table, t),
            Kind::Struct(f) => f.iter().all(|f| is_fixed(table, &f.ty)),
            Kind::Enum { .. } | Kind::Flags { .. } => true,
            Kind::Tagged(_) => false,
        },
    }
}

fn fixed_size(table: &BTreeMap<TypeKey, TypeDef>, t: &Ty) -> usize {
    match t {
        Ty::Prim(p) => p.size(),
        Ty::Unit => 0,
        Ty::TaskId => 4,
        Ty::Array(p, n) => p.size() * n,
        Ty::Option(_) => 0,
        Ty::Named(k) => match &table[k].kind {
            Kind::Newtype(t) => fixed_size(table, t),
            Kind::Struct(f) => f.iter().map(|f| fixed_size(table, &f.ty)).sum(),
            Kind::Enum { repr, .. } | Kind::Flags { repr, .. } => repr.size(),
            Kind::Tagged(_) => 0,
        },
    }
}

fn check_cycles(table: &BTreeMap<TypeKey, TypeDef>) -> Result<(), Error> {
    fn visit(
        table: &BTreeMap<TypeKey, TypeDef>,
        k: &TypeKey,
        path: &mut Vec<TypeKey>,
    ) -> Result<(), Error> {
        if path.contains(k) {
            return Err(Error(format!("type `{}` contains itself", k.name)));
        }
        path.push(k.clone());
        for t in children(table, k) {
            visit(table, &t, path)?;
        }
        path.pop();
        Ok(())
    }
    for k in table.keys() {
        visit(table, k, &mut Vec::new())?;
    }
    Ok(())
}

/// Named types used directly by `k`'s definition.
fn children(table: &BTreeMap<TypeKey, TypeDef>, k: &TypeKey) -> Vec<TypeKey> {
    fn named(t: &Ty, out: &mut Vec<TypeKey>) {
        match t {
            Ty::Named(k) => out.push(k.clone()),
            Ty::Option(i) => named(i, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match &table[k].kind {
        Kind::Newtype(t) => named(t, &mut out),
        Kind::Struct(f) => f.iter().for_each(|f| named(&f.ty, &mut out)),
        Kind::Tagged(v) => v
            .iter()
            .flat_map(|(_, f)| f)
            .for_each(|f| named(&f.ty, &mut out)),
        Kind::Enum { .. } | Kind::Flags { .. } => {}
    }
    out
}
