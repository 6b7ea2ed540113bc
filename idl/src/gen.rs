//! Emits an API crate's code: types, errors, client stub, server trait,
//! `dispatch_decode` (pure) and `dispatch` / `run_server` (syscalls).

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::model::{
    camel, Field, Kind, Model, Op, Prim, Ty, TypeDef, PROTOCOL_CODE, SERVER_DIED_CODE,
};
use crate::syntax::{Access, Encoding};

pub fn ident(s: &str) -> Ident {
    Ident::new(s, Span::call_site())
}

/// `#[doc = ...]` lines for a doc string (empty: nothing).
pub fn doc(s: &str) -> TokenStream {
    let lines = s.trim().lines().flat_map(wrap).map(|l| {
        let l = if l.is_empty() { l } else { format!(" {l}") };
        quote!(#[doc = #l])
    });
    quote!(#(#lines)*)
}

/// Splits a doc line at word boundaries to at most 92 columns.
fn wrap(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in line.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > 92 {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    out.push(cur);
    out
}

fn prim(p: Prim) -> TokenStream {
    let i = ident(p.name());
    quote!(#i)
}

/// The Rust type for `t` as seen from the crate `m.krate`.
pub fn ty(m: &Model, t: &Ty) -> TokenStream {
    match t {
        Ty::Prim(p) => prim(*p),
        Ty::Unit => quote!(()),
        Ty::TaskId => quote!(TaskId),
        Ty::Array(p, n) => {
            let p = prim(*p);
            let n = Literal::usize_unsuffixed(*n);
            quote!([#p; #n])
        }
        Ty::Option(inner) => {
            let inner = ty(m, inner);
            quote!(Option<#inner>)
        }
        Ty::Named(k) => {
            let name = ident(&k.name);
            if k.krate == m.krate {
                quote!(#name)
            } else {
                let krate = ident(&k.krate);
                quote!(::#krate::#name)
            }
        }
    }
}

fn serde_attr(t: &Ty) -> TokenStream {
    if *t == Ty::TaskId {
        quote!(#[serde(with = "::idl_runtime::task_id_serde")])
    } else {
        quote!()
    }
}

fn postcard_max(m: &Model, t: &Ty) -> TokenStream {
    let t = ty(m, t);
    quote!(<#t as PostcardMax>::MAX_SIZE)
}

fn postcard_sum(m: &Model, fields: &[Field]) -> TokenStream {
    if fields.is_empty() {
        return quote!(0);
    }
    let parts = fields.iter().map(|f| postcard_max(m, &f.ty));
    quote!(#(#parts)+*)
}

const DERIVES: &str = "Copy, Clone, Debug, PartialEq, Eq, Hash";

/// The common derives, then `extra` in a second attribute (short lines).
fn derives(extra: &[&str]) -> TokenStream {
    let base: Vec<Ident> = DERIVES.split(", ").map(ident).collect();
    if extra.is_empty() {
        return quote!(#[derive(#(#base),*)]);
    }
    let extra: Vec<Ident> = extra.iter().map(|e| ident(e)).collect();
    quote! {
        #[derive(#(#base),*)]
        #[derive(#(#extra),*)]
    }
}

fn struct_fields(m: &Model, fields: &[Field], public: bool, serde: bool) -> Vec<TokenStream> {
    fields
        .iter()
        .map(|f| {
            let n = ident(&f.name);
            let t = ty(m, &f.ty);
            let attr = if serde { serde_attr(&f.ty) } else { quote!() };
            let d = doc(&f.doc);
            if public {
                quote!(#d #attr pub #n: #t)
            } else {
                quote!(#d #attr #n: #t)
            }
        })
        .collect()
}

/// `Fixed` for a struct with named fields (a type or an op's arguments).
fn fixed_struct(m: &Model, name: &Ident, fields: &[Field]) -> TokenStream {
    if fields.is_empty() {
        return quote! {
            impl Fixed for #name {
                type Wire = ();
                fn to_wire(&self) {}
                fn from_wire(_wire: &()) -> Option<Self> {
                    Some(#name {})
                }
            }
        };
    }
    let wire = format_ident!("{}Wire", name);
    let wire_doc = doc(&format!(
        "Wire form of [`{name}`]: little-endian, no padding."
    ));
    let wfields = fields.iter().map(|f| {
        let n = ident(&f.name);
        let t = ty(m, &f.ty);
        quote!(pub #n: WireOf<#t>)
    });
    let to = fields.iter().map(|f| {
        let n = ident(&f.name);
        quote!(#n: Fixed::to_wire(&self.#n))
    });
    let from = fields.iter().map(|f| {
        let n = ident(&f.name);
        quote!(#n: Fixed::from_wire(&wire.#n)?)
    });
    quote! {
        #wire_doc
        #[derive(Copy, Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
        #[repr(C)]
        pub struct #wire {
            #(#wfields,)*
        }

        impl Fixed for #name {
            type Wire = #wire;
            fn to_wire(&self) -> #wire {
                #wire { #(#to,)* }
            }
            fn from_wire(wire: &#wire) -> Option<Self> {
                Some(#name { #(#from,)* })
            }
        }
    }
}

fn type_def(m: &Model, def: &TypeDef) -> TokenStream {
    let name = ident(&def.key.name);
    let docs = doc(&def.doc);
    match &def.kind {
        Kind::Newtype(inner) => {
            let t = ty(m, inner);
            let attr = serde_attr(inner);
            let derive = match inner {
                Ty::Named(_) => derives(&["Serialize", "Deserialize"]),
                _ => derives(&["PartialOrd", "Ord", "Serialize", "Deserialize"]),
            };
            let fixed = if m.is_fixed(inner) {
                quote! {
                    impl Fixed for #name {
                        type Wire = WireOf<#t>;
                        fn to_wire(&self) -> Self::Wire {
                            Fixed::to_wire(&self.0)
                        }
                        fn from_wire(wire: &Self::Wire) -> Option<Self> {
                            Some(#name(Fixed::from_wire(wire)?))
                        }
                    }
                }
            } else {
                quote!()
            };
            let max = postcard_max(m, inner);
            quote! {
                #docs
                #derive
                pub struct #name(#attr pub #t);

                #fixed

                impl PostcardMax for #name {
                    const MAX_SIZE: usize = #max;
                }
            }
        }
        Kind::Struct(fields) => {
            let derive = derives(&["Serialize", "Deserialize"]);
            let fs = struct_fields(m, fields, true, true);
            let fixed = if m.is_fixed(&Ty::Named(def.key.clone())) {
                fixed_struct(m, &name, fields)
            } else {
                quote!()
            };
            let max = postcard_sum(m, fields);
            quote! {
                #docs
                #derive
                pub struct #name {
                    #(#fs,)*
                }

                #fixed

                impl PostcardMax for #name {
                    const MAX_SIZE: usize = #max;
                }
            }
        }
        Kind::Enum { repr, variants } => {
            let r = prim(*repr);
            let vs = variants.iter().map(|v| {
                let d = doc(&v.doc);
                let value = Literal::u64_unsuffixed(v.value);
                let v = ident(&v.name);
                quote!(#d #v = #value)
            });
            let all = variants.iter().map(|v| {
                let v = ident(&v.name);
                quote!(#name::#v)
            });
            let n = Literal::usize_unsuffixed(variants.len());
            let arms = variants.iter().map(|v| {
                let value = int_lit(*repr, v.value);
                let v = ident(&v.name);
                quote!(#value => Some(#name::#v))
            });
            let derive = derives(&[]);
            quote! {
                #docs
                #derive
                #[repr(#r)]
                pub enum #name {
                    #(#vs,)*
                }

                impl #name {
                    pub const ALL: [#name; #n] = [#(#all),*];
                }

                impl ::idl_runtime::Repr for #name {
                    type Int = #r;
                    fn to_repr(self) -> #r {
                        self as #r
                    }
                    fn from_repr(v: #r) -> Option<Self> {
                        match v {
                            #(#arms,)*
                            _ => None,
                        }
                    }
                }

                #[doc = " The integer value on the wire (both encodings); unknown values are refused."]
                impl Serialize for #name {
                    fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                        ::idl_runtime::serialize_repr(self, s)
                    }
                }

                impl<'de> Deserialize<'de> for #name {
                    fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        ::idl_runtime::deserialize_repr(d)
                    }
                }

                impl Fixed for #name {
                    type Wire = WireOf<#r>;
                    fn to_wire(&self) -> Self::Wire {
                        Fixed::to_wire(&(*self as #r))
                    }
                    fn from_wire(wire: &Self::Wire) -> Option<Self> {
                        <Self as ::idl_runtime::Repr>::from_repr(Fixed::from_wire(wire)?)
                    }
                }

                impl PostcardMax for #name {
                    const MAX_SIZE: usize = <#r as PostcardMax>::MAX_SIZE;
                }
            }
        }
        Kind::Flags { repr, bits } => {
            let r = prim(*repr);
            let consts = bits.iter().map(|b| {
                let d = doc(&b.doc);
                let bit = Literal::u64_unsuffixed(b.value);
                let b = ident(&b.name);
                quote!(#d pub const #b: #name = #name(1 << #bit);)
            });
            let mask: u64 = bits.iter().map(|b| 1u64 << b.value).sum();
            let mask = int_lit(*repr, mask);
            let derive = derives(&["Default"]);
            quote! {
                #docs
                #derive
                pub struct #name(#r);

                impl #name {
                    #(#consts)*
                    /// Every defined bit.
                    pub const ALL_BITS: #r = #mask;
                    pub const fn empty() -> Self {
                        #name(0)
                    }
                    pub const fn bits(self) -> #r {
                        self.0
                    }
                    /// `None` if `bits` has an undefined bit set.
                    pub const fn from_bits(bits: #r) -> Option<Self> {
                        if bits & !Self::ALL_BITS == 0 { Some(#name(bits)) } else { None }
                    }
                    pub const fn from_bits_truncate(bits: #r) -> Self {
                        #name(bits & Self::ALL_BITS)
                    }
                    pub const fn contains(self, other: Self) -> bool {
                        self.0 & other.0 == other.0
                    }
                    pub const fn union(self, other: Self) -> Self {
                        #name(self.0 | other.0)
                    }
                }

                impl ::core::ops::BitOr for #name {
                    type Output = Self;
                    fn bitor(self, other: Self) -> Self {
                        self.union(other)
                    }
                }

                impl ::idl_runtime::Repr for #name {
                    type Int = #r;
                    fn to_repr(self) -> #r {
                        self.0
                    }
                    fn from_repr(v: #r) -> Option<Self> {
                        Self::from_bits(v)
                    }
                }

                impl Serialize for #name {
                    fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                        ::idl_runtime::serialize_repr(self, s)
                    }
                }

                impl<'de> Deserialize<'de> for #name {
                    fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        ::idl_runtime::deserialize_repr(d)
                    }
                }

                impl Fixed for #name {
                    type Wire = WireOf<#r>;
                    fn to_wire(&self) -> Self::Wire {
                        Fixed::to_wire(&self.0)
                    }
                    fn from_wire(wire: &Self::Wire) -> Option<Self> {
                        Self::from_bits(Fixed::from_wire(wire)?)
                    }
                }

                impl PostcardMax for #name {
                    const MAX_SIZE: usize = <#r as PostcardMax>::MAX_SIZE;
                }
            }
        }
        Kind::Tagged(variants) => {
            let vs = variants.iter().map(|(v, fields)| {
                let v = ident(v);
                if fields.is_empty() {
                    quote!(#v)
                } else {
                    let fs = struct_fields(m, fields, false, true);
                    quote!(#v { #(#fs,)* })
                }
            });
            let sizes = variants.iter().map(|(_, f)| postcard_sum(m, f));
            let derive = derives(&["Serialize", "Deserialize"]);
            quote! {
                #docs
                #derive
                pub enum #name {
                    #(#vs,)*
                }

                impl PostcardMax for #name {
                    /// Variant index (one byte: fewer than 128 variants) plus the largest variant.
                    const MAX_SIZE: usize = 1 + ::idl_runtime::max_of(&[#(#sizes),*]);
                }
            }
        }
    }
}

/// Small codes in decimal (errno), generated ones in hex.
fn code_lit(code: u32) -> Literal {
    if code < 0x1_0000 {
        Literal::u32_unsuffixed(code)
    } else {
        format!("0x{:X}_{:04X}", code >> 16, code & 0xFFFF)
            .parse()
            .expect("hex literal")
    }
}

fn int_lit(p: Prim, v: u64) -> Literal {
    match p {
        Prim::U8 => Literal::u8_unsuffixed(v as u8),
        Prim::U16 => Literal::u16_unsuffixed(v as u16),
        Prim::U32 => Literal::u32_unsuffixed(v as u32),
        _ => Literal::u64_unsuffixed(v),
    }
}

pub struct Names {
    pub client: Ident,
    pub server: Ident,
    pub error: Ident,
    pub op: Ident,
    pub request: Ident,
    pub caller: Ident,
}

pub fn names(m: &Model) -> Names {
    let n = &m.name;
    Names {
        client: format_ident!("{n}Client"),
        server: format_ident!("{n}Server"),
        error: format_ident!("{n}Error"),
        op: format_ident!("{n}Op"),
        request: format_ident!("{n}Request"),
        caller: format_ident!("{n}Caller"),
    }
}

pub fn op_variant(op: &Op) -> Ident {
    ident(&camel(&op.name))
}

pub fn args_name(op: &Op) -> Ident {
    format_ident!("{}Args", camel(&op.name))
}

pub fn leases_name(op: &Op) -> Ident {
    format_ident!("{}Leases", camel(&op.name))
}

fn errors(m: &Model, n: &Names) -> TokenStream {
    let error = &n.error;
    let doc_text = format!(
        "Errors of the {} interface. Codes are errno values (iommufd's meanings); \
         `ServerDied` and `Protocol` are produced by the client stub.",
        m.name
    );
    let edoc = doc(&doc_text);
    let mut variants = Vec::new();
    let mut all = Vec::new();
    let mut arms = Vec::new();
    let mut names = Vec::new();
    let mut entries: Vec<(String, u32, String)> = m
        .errors
        .iter()
        .map(|e| (e.name.clone(), e.code, e.doc.clone()))
        .collect();
    entries.push((
        "ServerDied".into(),
        SERVER_DIED_CODE,
        "The server died or restarted before answering (the stub refreshed its task id; an \
         idempotent operation was retried once), or a server it depends on did: the request may \
         or may not have taken effect."
            .into(),
    ));
    entries.push((
        "Protocol".into(),
        PROTOCOL_CODE,
        "The request could not be encoded or the reply did not decode (unknown code, malformed \
         payload): a server or generator bug, never bad input from this client."
            .into(),
    ));
    for (name, code, d) in &entries {
        let v = ident(name);
        let d = doc(d);
        let c = code_lit(*code);
        variants.push(quote!(#d #v = #c));
        all.push(quote!(#error::#v));
        if name != "Protocol" {
            arms.push(quote!(#c => #error::#v));
        }
        names.push(quote!(#error::#v => #name));
    }
    let count = Literal::usize_unsuffixed(entries.len());
    let derive = derives(&[]);
    quote! {
        #edoc
        #derive
        #[repr(u32)]
        pub enum #error {
            #(#variants,)*
        }

        impl #error {
            pub const ALL: [#error; #count] = [#(#all),*];

            pub const fn name(self) -> &'static str {
                match self {
                    #(#names,)*
                }
            }
        }

        impl ::idl_runtime::IdlError for #error {
            const SERVER_DIED: Self = #error::ServerDied;
            const PROTOCOL: Self = #error::Protocol;
            fn code(self) -> u32 {
                self as u32
            }
            fn from_code(code: u32) -> Self {
                match code {
                    #(#arms,)*
                    _ => #error::Protocol,
                }
            }
        }
    }
}

fn callers(m: &Model, n: &Names) -> TokenStream {
    let caller = &n.caller;
    let d = doc(&format!(
        "Tasks named as allowed callers by the {} interface. The server maps task ids to these \
         in its `check_caller` hook.",
        m.name
    ));
    let vs: Vec<Ident> = m.callers.iter().map(|c| ident(&camel(c))).collect();
    let arms = m
        .callers
        .iter()
        .zip(&vs)
        .map(|(c, v)| quote!(#caller::#v => #c));
    let derive = derives(&[]);
    quote! {
        #d
        #derive
        pub enum #caller {
            #(#vs,)*
        }

        impl #caller {
            /// The task's name in app.toml.
            pub const fn task_name(self) -> &'static str {
                match self {
                    #(#arms,)*
                }
            }
        }
    }
}

fn args_size(op: &Op) -> TokenStream {
    let a = args_name(op);
    match op.encoding {
        Encoding::Zerocopy => quote!(::idl_runtime::wire_size::<#a>()),
        Encoding::Postcard => quote!(<#a as PostcardMax>::MAX_SIZE),
    }
}

fn reply_size(m: &Model, op: &Op) -> TokenStream {
    let r = ty(m, &op.reply);
    match op.encoding {
        Encoding::Zerocopy => quote!(::idl_runtime::wire_size::<#r>()),
        Encoding::Postcard => quote!(<#r as PostcardMax>::MAX_SIZE),
    }
}

fn op_enum(m: &Model, n: &Names) -> TokenStream {
    let (opn, caller) = (&n.op, &n.caller);
    let d = doc(&format!(
        "Operations of the {} interface; the value is the operation number on the wire.",
        m.name
    ));
    let vs = m.ops.iter().map(|op| {
        let v = op_variant(op);
        let num = Literal::u16_unsuffixed(op.number);
        let first = op.doc.lines().next().unwrap_or("");
        let d = doc(&format!("`{}`: {first}", op.name));
        quote!(#d #v = #num)
    });
    let all = m.ops.iter().map(|op| {
        let v = op_variant(op);
        quote!(#opn::#v)
    });
    let count = Literal::usize_unsuffixed(m.ops.len());
    let from = m.ops.iter().map(|op| {
        let v = op_variant(op);
        let num = Literal::u32_unsuffixed(op.number as u32);
        quote!(#num => Some(#opn::#v))
    });
    let arms = |f: &dyn Fn(&Op) -> TokenStream| {
        let arms = m.ops.iter().map(|op| {
            let v = op_variant(op);
            let val = f(op);
            quote!(#opn::#v => #val)
        });
        quote!(match self { #(#arms,)* })
    };
    let name_m = arms(&|op| {
        let s = &op.name;
        quote!(#s)
    });
    let idem_m = arms(&|op| {
        let b = op.idempotent;
        quote!(#b)
    });
    let callers_m = arms(&|op| {
        let cs = op.callers.iter().map(|c| {
            let v = ident(&camel(c));
            quote!(#caller::#v)
        });
        quote!(&[#(#cs),*])
    });
    let leases_m = arms(&|op| {
        let k = Literal::usize_unsuffixed(op.leases.len());
        quote!(#k)
    });
    let args_m = arms(&args_size);
    let reply_m = arms(&|op| reply_size(m, op));
    let recv = m.ops.iter().map(|op| {
        let v = op_variant(op);
        quote!(#opn::#v.args_max())
    });
    let reply = m.ops.iter().map(|op| {
        let v = op_variant(op);
        quote!(#opn::#v.reply_max())
    });
    let derive = derives(&[]);
    quote! {
        #d
        #derive
        #[repr(u16)]
        pub enum #opn {
            #(#vs,)*
        }

        impl #opn {
            pub const ALL: [#opn; #count] = [#(#all),*];

            /// Largest argument encoding of any operation: the server's receive buffer.
            pub const RECV_BUF_SIZE: usize = ::idl_runtime::max_of(&[#(#recv),*]);

            /// Largest reply payload of any operation.
            pub const REPLY_BUF_SIZE: usize = ::idl_runtime::max_of(&[#(#reply),*]);

            pub const fn from_u32(operation: u32) -> Option<Self> {
                match operation {
                    #(#from,)*
                    _ => None,
                }
            }

            pub const fn name(self) -> &'static str {
                #name_m
            }

            /// Safe to send again after the server died (the client retries once).
            pub const fn idempotent(self) -> bool {
                #idem_m
            }

            /// Tasks allowed to call (empty: any task with a task-slot for the server).
            pub const fn allowed_callers(self) -> &'static [#caller] {
                #callers_m
            }

            pub const fn lease_count(self) -> usize {
                #leases_m
            }

            /// Largest argument encoding, in bytes.
            pub const fn args_max(self) -> usize {
                #args_m
            }

            /// Largest reply payload, in bytes (the caller must be able to take it).
            pub const fn reply_max(self) -> usize {
                #reply_m
            }
        }

        const _: () = assert!(
            #opn::RECV_BUF_SIZE <= ::idl_runtime::MAX_MESSAGE && #opn::REPLY_BUF_SIZE <= ::idl_runtime::MAX_MESSAGE,
            "a message or reply exceeds the kernel's MAX_MESSAGE"
        );
    }
}

fn args_structs(m: &Model, n: &Names) -> TokenStream {
    let client = &n.client;
    let mut out = TokenStream::new();
    for op in &m.ops {
        let a = args_name(op);
        let d = doc(&format!(
            "Arguments of [`{client}::{}`] (operation {}, {:?}).",
            op.name, op.number, op.encoding
        ));
        let fs = struct_fields(m, &op.args, true, op.encoding == Encoding::Postcard);
        let (derive, imp) = match op.encoding {
            Encoding::Zerocopy => (derives(&[]), fixed_struct(m, &a, &op.args)),
            Encoding::Postcard => {
                let max = postcard_sum(m, &op.args);
                (
                    derives(&["Serialize", "Deserialize"]),
                    quote! {
                        impl PostcardMax for #a {
                            const MAX_SIZE: usize = #max;
                        }
                    },
                )
            }
        };
        out.extend(quote! {
            #d
            #derive
            pub struct #a {
                #(#fs,)*
            }

            #imp
        });
        if !op.leases.is_empty() {
            let l = leases_name(op);
            let d = doc(&format!(
                "Checked leases of [`{client}::{}`], in lease order.",
                op.name
            ));
            let fs = op.leases.iter().map(|l| {
                let n = ident(&l.name);
                quote!(pub #n: ::idl_runtime::LeaseSlot)
            });
            out.extend(quote! {
                #d
                #[derive(Copy, Clone, Debug, PartialEq, Eq)]
                pub struct #l {
                    #(#fs,)*
                }
            });
        }
    }
    out
}

fn request_enum(m: &Model, n: &Names) -> TokenStream {
    let (req, opn) = (&n.request, &n.op);
    let d = doc(&format!(
        "A decoded, checked request to the {} interface: what `dispatch_decode` returns.",
        m.name
    ));
    let vs = m.ops.iter().map(|op| {
        let v = op_variant(op);
        let a = args_name(op);
        if op.leases.is_empty() {
            quote!(#v(#a))
        } else {
            let l = leases_name(op);
            quote!(#v(#a, #l))
        }
    });
    let arms = m.ops.iter().map(|op| {
        let v = op_variant(op);
        quote!(#req::#v(..) => #opn::#v)
    });
    quote! {
        #d
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        pub enum #req {
            #(#vs,)*
        }

        impl #req {
            pub const fn op(&self) -> #opn {
                match self {
                    #(#arms,)*
                }
            }
        }
    }
}

fn access_tokens(a: Access) -> (TokenStream, TokenStream) {
    match a {
        Access::Read => (
            quote!(::idl_runtime::Access::Read),
            quote!(::idl_runtime::Read),
        ),
        Access::Write => (
            quote!(::idl_runtime::Access::Write),
            quote!(::idl_runtime::Write),
        ),
        Access::ReadWrite => (
            quote!(::idl_runtime::Access::ReadWrite),
            quote!(::idl_runtime::ReadWrite),
        ),
    }
}

fn dispatch_decode(m: &Model, n: &Names) -> TokenStream {
    let (req, opn) = (&n.request, &n.op);
    let arms = m.ops.iter().map(|op| {
        let v = op_variant(op);
        let decode = match op.encoding {
            Encoding::Zerocopy => quote!(::idl_runtime::decode_fixed(bytes)?),
            Encoding::Postcard => quote!(::idl_runtime::decode_postcard(bytes)?),
        };
        let count = Literal::usize_unsuffixed(op.leases.len());
        if op.leases.is_empty() {
            quote! {
                #opn::#v => {
                    let args = #decode;
                    ::idl_runtime::expect_leases(leases, 0)?;
                    #req::#v(args)
                }
            }
        } else {
            let l = leases_name(op);
            let checks = op.leases.iter().enumerate().map(|(i, l)| {
                let name = ident(&l.name);
                let t = ty(m, &l.ty);
                let (access, _) = access_tokens(l.access);
                let (min, max) = (Literal::usize_unsuffixed(l.min), Literal::usize_unsuffixed(l.max));
                let i = Literal::usize_unsuffixed(i);
                quote!(let #name = ::idl_runtime::check_lease::<#t>(leases, #i, #access, #min, #max)?;)
            });
            let names = op.leases.iter().map(|l| ident(&l.name));
            quote! {
                #opn::#v => {
                    let args = #decode;
                    ::idl_runtime::expect_leases(leases, #count)?;
                    #(#checks)*
                    #req::#v(args, #l { #(#names),* })
                }
            }
        }
    });
    let d = doc(&format!(
        "Decodes and checks one message to the {} interface without any system call: the \
         operation number, the argument bytes (exactly as received), the caller's reply capacity \
         and the leases as the kernel describes them. Never panics; every refusal says which \
         reply-fault the caller gets. This is also the interface's fuzzing entry point.",
        m.name
    ));
    quote! {
        #d
        pub fn dispatch_decode(
            operation: u32,
            bytes: &[u8],
            reply_capacity: usize,
            leases: &[::idl_runtime::LeaseInfo],
        ) -> Result<#req, ::idl_runtime::Reject> {
            let Some(op) = #opn::from_u32(operation) else {
                return Err(::idl_runtime::Reject::UNKNOWN_OPERATION);
            };
            let request = match op {
                #(#arms)*
            };
            ::idl_runtime::expect_reply_capacity(reply_capacity, op.reply_max())?;
            Ok(request)
        }
    }
}

fn method_sig_args(m: &Model, op: &Op) -> Vec<TokenStream> {
    op.args
        .iter()
        .map(|a| {
            let n = ident(&a.name);
            let t = ty(m, &a.ty);
            quote!(#n: #t)
        })
        .collect()
}

fn lease_doc(op: &Op) -> String {
    let mut s = String::new();
    for l in &op.leases {
        s.push_str(&format!(
            "\n\nLease `{}` ({:?}, {}..={} entries){}{}",
            l.name,
            l.access,
            l.min,
            l.max,
            if l.doc.is_empty() { "" } else { ": " },
            l.doc
        ));
    }
    s
}

fn op_doc(op: &Op) -> String {
    let mut s = op.doc.trim().to_string();
    s.push_str(&lease_doc(op));
    let callers = if op.callers.is_empty() {
        "any".to_string()
    } else {
        op.callers.join(", ")
    };
    s.push_str(&format!(
        "\n\nOperation {}; callers: {callers}{}.",
        op.number,
        if op.idempotent { "; idempotent" } else { "" }
    ));
    s
}

fn server_trait(m: &Model, n: &Names) -> TokenStream {
    let (server, error, caller) = (&n.server, &n.error, &n.caller);
    let methods = m.ops.iter().map(|op| {
        let name = ident(&op.name);
        let d = doc(&op_doc(op));
        let args = method_sig_args(m, op);
        let leases = op.leases.iter().map(|l| {
            let n = ident(&l.name);
            let t = ty(m, &l.ty);
            let (_, marker) = access_tokens(l.access);
            quote!(#n: Leased<#marker, #t>)
        });
        let r = ty(m, &op.reply);
        quote! {
            #d
            fn #name(&mut self, caller: TaskId, #(#args,)* #(#leases,)*) -> Result<#r, #error>;
        }
    });
    let d = doc(&format!(
        "What a server of the {} interface implements. `dispatch` has already checked the \
         message (size, contents, leases, reply capacity) and the caller (`check_caller`) \
         before calling a method; `caller` is the kernel-provided sender id, against which the \
         server checks object ownership.",
        m.name
    ));
    quote! {
        #d
        #[allow(clippy::too_many_arguments)]
        pub trait #server {
            /// Notification bits to accept along with messages.
            fn notification_mask(&self) -> u32;

            /// Notification bits (within the mask) that fired.
            fn handle_notification(&mut self, bits: u32);

            /// Is `caller` one of the `allowed` tasks? Asked before every operation that names
            /// its allowed callers; `false` faults the caller (access violation).
            fn check_caller(&mut self, caller: TaskId, allowed: &'static [#caller]) -> bool;

            #(#methods)*
        }
    }
}

fn dispatch(m: &Model, n: &Names) -> TokenStream {
    let (server, req, opn) = (&n.server, &n.request, &n.op);
    let arms = m.ops.iter().map(|op| {
        let v = op_variant(op);
        let name = ident(&op.name);
        let args = op.args.iter().map(|a| {
            let f = ident(&a.name);
            quote!(args.#f)
        });
        let lease_lets = op.leases.iter().map(|l| {
            let f = ident(&l.name);
            quote!(let #f = Leased::new(caller, leases.#f);)
        });
        let lease_names = op.leases.iter().map(|l| ident(&l.name));
        let call = quote!(server.#name(caller, #(#args,)* #(#lease_names,)*));
        let pat = match (op.args.is_empty(), op.leases.is_empty()) {
            (false, true) => quote!(#req::#v(args)),
            (false, false) => quote!(#req::#v(args, leases)),
            (true, true) => quote!(#req::#v(_)),
            (true, false) => quote!(#req::#v(_, leases)),
        };
        let reply = match op.encoding {
            Encoding::Zerocopy => quote!(::idl_runtime::reply_fixed(caller, result);),
            Encoding::Postcard => {
                let size = reply_size(m, op);
                quote!(::idl_runtime::reply_postcard(caller, result, &mut [0u8; #size]);)
            }
        };
        quote! {
            #pat => {
                #(#lease_lets)*
                let result = #call;
                #reply
            }
        }
    });
    let d = doc(&format!(
        "Handles one received message (or notification) for a {} server: decodes and checks it \
         (`dispatch_decode`), checks the caller, calls the server and replies. Malformed \
         messages and callers not allowed are answered with reply-fault.",
        m.name
    ));
    let rd = doc(&format!("Serves the {} interface forever.", m.name));
    quote! {
        #d
        pub fn dispatch<S: #server>(server: &mut S, msg: &::userlib::RecvMessage, buf: &[u8]) {
            if msg.is_notification() {
                server.handle_notification(msg.operation);
                return;
            }
            let Some(request) = ::idl_runtime::receive(msg, buf, dispatch_decode) else {
                return;
            };
            let caller = msg.sender;
            let allowed = request.op().allowed_callers();
            if !allowed.is_empty() && !server.check_caller(caller, allowed) {
                ::idl_runtime::reply_fault(caller, ::idl_runtime::Reject::NOT_ALLOWED);
                return;
            }
            match request {
                #(#arms)*
            }
        }

        #rd
        pub fn run_server<S: #server>(server: &mut S) -> ! {
            let mut buf = [0u8; #opn::RECV_BUF_SIZE];
            loop {
                let msg = ::userlib::sys_recv_open(&mut buf, server.notification_mask());
                dispatch(server, &msg, &buf);
            }
        }
    }
}

fn client(m: &Model, n: &Names) -> TokenStream {
    let (client, error, opn) = (&n.client, &n.error, &n.op);
    let methods = m.ops.iter().map(|op| {
        let name = ident(&op.name);
        let v = op_variant(op);
        let d = doc(&op_doc(op));
        let args = method_sig_args(m, op);
        let a = args_name(op);
        let fields = op.args.iter().map(|f| ident(&f.name));
        let lease_params = op.leases.iter().map(|l| {
            let n = ident(&l.name);
            let t = ty(m, &l.ty);
            match l.access {
                Access::Read => quote!(#n: &[WireOf<#t>]),
                Access::Write | Access::ReadWrite => quote!(#n: &mut [WireOf<#t>]),
            }
        });
        let lease_values = op.leases.iter().map(|l| {
            let n = ident(&l.name);
            match l.access {
                Access::Read => quote!(::idl_runtime::lease_read(#n)),
                Access::Write => quote!(::idl_runtime::lease_write(#n)),
                Access::ReadWrite => quote!(::idl_runtime::lease_read_write(#n)),
            }
        });
        let r = ty(m, &op.reply);
        let idem = op.idempotent;
        let call = match op.encoding {
            Encoding::Zerocopy => quote! {
                ::idl_runtime::call_fixed(&self.task, #opn::#v as u16, &args, &[#(#lease_values),*], #idem)
            },
            Encoding::Postcard => {
                let asize = args_size(op);
                let rsize = reply_size(m, op);
                quote! {
                    ::idl_runtime::call_postcard(
                        &self.task,
                        #opn::#v as u16,
                        &args,
                        &mut [0u8; #asize],
                        &mut [0u8; #rsize],
                        &[#(#lease_values),*],
                        #idem,
                    )
                }
            }
        };
        quote! {
            #d
            pub fn #name(&self, #(#args,)* #(#lease_params,)*) -> Result<#r, #error> {
                let args = #a { #(#fields),* };
                #call
            }
        }
    });
    let d = doc(&format!(
        "Client stub of the {} interface. On a dead code the stub refreshes the server's task id \
         and returns `{error}::ServerDied` (idempotent operations are first retried once).",
        m.name
    ));
    quote! {
        #d
        pub struct #client {
            task: ::core::cell::Cell<TaskId>,
        }

        #[allow(clippy::too_many_arguments)]
        impl #client {
            pub const fn new(task: TaskId) -> Self {
                #client { task: ::core::cell::Cell::new(task) }
            }

            /// The server's id as last known (refreshed after a death).
            pub fn task_id(&self) -> TaskId {
                self.task.get()
            }

            #(#methods)*
        }
    }
}

/// The API crate's generated code, formatted.
pub fn generate_api(m: &Model) -> String {
    let n = names(m);
    let types = m.local.iter().map(|k| type_def(m, m.def(k)));
    let errors = errors(m, &n);
    let callers = callers(m, &n);
    let op_enum = op_enum(m, &n);
    let args = args_structs(m, &n);
    let request = request_enum(m, &n);
    let decode = dispatch_decode(m, &n);
    let server = server_trait(m, &n);
    let dispatch = dispatch(m, &n);
    let client = client(m, &n);
    let file = quote! {
        #[allow(unused_imports)]
        use ::idl_runtime::{Fixed, Leased, PostcardMax, WireOf};
        use ::serde::{Deserialize, Serialize};
        use ::userlib::TaskId;
        #[allow(unused_imports)]
        use ::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

        #(#types)*
        #errors
        #callers
        #op_enum
        #args
        #request
        #decode
        #server
        #dispatch
        #client
    };
    crate::format(m, file, "api")
}
