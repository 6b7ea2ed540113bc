//! The interface file format, as read from RON. See `idl/README.md` for the
//! schema with examples; `model` checks and resolves what is read here.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A map that keeps the order of the file (operation numbers, field order
/// and variant order come from it) and refuses duplicate keys.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map with string keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    if out.iter().any(|(x, _)| *x == k) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

/// A field: `"name": "type"`, or with a doc comment
/// `"name": (ty: "type", doc: "...")`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum FieldSpec {
    Plain(String),
    Doc { ty: String, doc: String },
}

impl FieldSpec {
    pub fn ty(&self) -> &str {
        match self {
            FieldSpec::Plain(t) | FieldSpec::Doc { ty: t, .. } => t,
        }
    }
    pub fn doc(&self) -> &str {
        match self {
            FieldSpec::Plain(_) => "",
            FieldSpec::Doc { doc, .. } => doc,
        }
    }
}

/// An enum value or flag bit: `"Name": 3`, or with a doc comment
/// `"Name": (value: 3, doc: "...")`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum ValueSpec {
    Plain(u64),
    Doc { value: u64, doc: String },
}

impl ValueSpec {
    pub fn value(&self) -> u64 {
        match self {
            ValueSpec::Plain(v) | ValueSpec::Doc { value: v, .. } => *v,
        }
    }
    pub fn doc(&self) -> &str {
        match self {
            ValueSpec::Plain(_) => "",
            ValueSpec::Doc { doc, .. } => doc,
        }
    }
}

/// One interface file: `Interface(...)`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// CamelCase; names the generated items (`<name>Client`, `<name>Server`,
    /// `<name>Error`, `<name>Op`, `<name>Request`, `<name>Caller`).
    pub name: String,
    #[serde(default)]
    pub doc: String,
    /// Other interface files (by stem, e.g. `"pasid-alloc"`) whose types
    /// this one uses; the generated code names them through that file's API
    /// crate (`pasid_alloc_api::Pasid`).
    #[serde(default)]
    pub imports: Vec<String>,
    /// Error variants, by name, from the built-in errno table.
    pub errors: Vec<String>,
    #[serde(default)]
    pub types: OrderedMap<TypeDef>,
    /// Operations, numbered 1, 2, ... in file order.
    pub ops: OrderedMap<Operation>,
}

/// A type defined by an interface file.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum TypeDef {
    /// `pub struct Name(pub ty);`
    Newtype {
        #[serde(default)]
        doc: String,
        ty: String,
    },
    /// `pub struct Name { fields }`, fields in file order.
    Struct {
        #[serde(default)]
        doc: String,
        fields: OrderedMap<FieldSpec>,
    },
    /// A fieldless enum with explicit values; `repr` is an unsigned integer
    /// type. On the wire (both encodings) it is that integer; unknown values
    /// are refused.
    Enum {
        #[serde(default)]
        doc: String,
        repr: String,
        variants: OrderedMap<ValueSpec>,
    },
    /// A set of named bits (bit numbers) in an unsigned integer; undefined
    /// bits are refused on decode.
    Flags {
        #[serde(default)]
        doc: String,
        repr: String,
        bits: OrderedMap<ValueSpec>,
    },
    /// An enum whose variants carry fields (postcard only): variant → fields.
    Tagged {
        #[serde(default)]
        doc: String,
        variants: OrderedMap<OrderedMap<FieldSpec>>,
    },
}

/// One operation.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub doc: String,
    /// Arguments in order: name → type.
    #[serde(default)]
    pub args: OrderedMap<FieldSpec>,
    /// Leases in order (lease index = position).
    #[serde(default)]
    pub leases: OrderedMap<LeaseDef>,
    /// The `Ok` type of the reply; `"()"` when omitted. The `Err` type is the
    /// interface's error enum.
    #[serde(default = "unit")]
    pub reply: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Safe to send again after the server died: the client retries once.
    #[serde(default)]
    pub idempotent: bool,
    /// Task names allowed to call (empty: any task with a task-slot for the
    /// server). Checked at run time by the server's `check_caller` hook.
    #[serde(default)]
    pub callers: Vec<String>,
}

fn unit() -> String {
    "()".to_string()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum Encoding {
    /// Fixed-size little-endian structs (zerocopy); args and reply must be
    /// fixed-size types.
    #[default]
    Zerocopy,
    /// postcard, for enums with data and `Option`s.
    Postcard,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// A lease: a buffer of `ty` entries (fixed-size; `u8` for raw bytes) the
/// client lends, of `min..=max` entries.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseDef {
    #[serde(default)]
    pub doc: String,
    pub access: Access,
    #[serde(default = "byte")]
    pub ty: String,
    #[serde(default)]
    pub min: usize,
    pub max: usize,
}

fn byte() -> String {
    "u8".to_string()
}
