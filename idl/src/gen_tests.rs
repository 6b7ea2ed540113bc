//! Emits an API crate's `idl_*` tests: proptest round trips of every type,
//! every operation's arguments (through `dispatch_decode`) and reply, every
//! error code; malformed messages per operation (length, unknown operation,
//! bad tag, leases, reply capacity); and a never-panics property of
//! `dispatch_decode` over arbitrary input.

use std::collections::BTreeSet;

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::gen::{args_name, ident, leases_name, names, op_variant, ty};
use crate::model::{snake, Field, Kind, Model, Op, Ty, TypeKey};
use crate::syntax::{Access, Encoding};

fn strategy_fn(m: &Model, k: &TypeKey) -> proc_macro2::Ident {
    if k.krate == m.krate {
        format_ident!("strategy_{}", snake(&k.name))
    } else {
        format_ident!("strategy_{}_{}", k.krate, snake(&k.name))
    }
}

fn strat(m: &Model, t: &Ty) -> TokenStream {
    match t {
        Ty::Prim(p) => {
            let p = ident(p.name());
            quote!(any::<#p>())
        }
        Ty::Unit => quote!(Just(())),
        Ty::TaskId => quote!(any::<u32>().prop_map(TaskId)),
        Ty::Array(p, n) => {
            let p = ident(p.name());
            let n = Literal::usize_unsuffixed(*n);
            quote!(any::<[#p; #n]>())
        }
        Ty::Option(inner) => {
            let s = strat(m, inner);
            quote!(::proptest::option::of(#s))
        }
        Ty::Named(k) => {
            let f = strategy_fn(m, k);
            quote!(#f())
        }
    }
}

/// Strategy building `ctor { fields }` (fields grouped by ten: proptest's
/// tuples stop at twelve).
fn fields_strat(m: &Model, fields: &[Field], ctor: TokenStream) -> TokenStream {
    if fields.is_empty() {
        return quote!(Just(#ctor {}));
    }
    let groups: Vec<&[Field]> = fields.chunks(10).collect();
    let strats = groups.iter().map(|g| {
        let s = g.iter().map(|f| strat(m, &f.ty));
        quote!((#(#s,)*))
    });
    let pats = groups.iter().map(|g| {
        let n = g.iter().map(|f| ident(&f.name));
        quote!((#(#n,)*))
    });
    let names = fields.iter().map(|f| ident(&f.name));
    if groups.len() == 1 {
        let s = strats.into_iter().next();
        let p = pats.into_iter().next();
        quote!(#s.prop_map(|#p| #ctor { #(#names),* }))
    } else {
        quote!((#(#strats,)*).prop_map(|(#(#pats,)*)| #ctor { #(#names),* }))
    }
}

/// Every named type reachable from this interface's own types and ops.
fn reachable(m: &Model) -> Vec<TypeKey> {
    fn add(m: &Model, t: &Ty, out: &mut BTreeSet<TypeKey>) {
        match t {
            Ty::Named(k) if out.insert(k.clone()) => {
                for f in fields_of(m, k) {
                    add(m, &f, out);
                }
            }
            Ty::Option(i) => add(m, i, out),
            _ => {}
        }
    }
    fn fields_of(m: &Model, k: &TypeKey) -> Vec<Ty> {
        match &m.def(k).kind {
            Kind::Newtype(t) => vec![t.clone()],
            Kind::Struct(f) => f.iter().map(|f| f.ty.clone()).collect(),
            Kind::Tagged(v) => v
                .iter()
                .flat_map(|(_, f)| f.iter().map(|f| f.ty.clone()))
                .collect(),
            _ => vec![],
        }
    }
    let mut out = BTreeSet::new();
    for k in &m.local {
        add(m, &Ty::Named(k.clone()), &mut out);
    }
    // Lease entry types are not needed: only local types (tested on their
    // own) and argument and reply types get strategies.
    for op in &m.ops {
        op.args.iter().for_each(|a| add(m, &a.ty, &mut out));
        add(m, &op.reply, &mut out);
    }
    // Local types first, in file order, then imported ones.
    let mut keys: Vec<TypeKey> = m.local.clone();
    keys.extend(out.into_iter().filter(|k| k.krate != m.krate));
    keys
}

fn type_strategy(m: &Model, k: &TypeKey) -> TokenStream {
    let f = strategy_fn(m, k);
    let t = ty(m, &Ty::Named(k.clone()));
    let body = match &m.def(k).kind {
        Kind::Newtype(inner) => {
            let s = strat(m, inner);
            quote!(#s.prop_map(#t))
        }
        Kind::Struct(fields) => fields_strat(m, fields, t.clone()),
        Kind::Enum { .. } => quote!(::proptest::sample::select(#t::ALL.to_vec())),
        Kind::Flags { repr, .. } => {
            let r = ident(repr.name());
            quote!(any::<#r>().prop_map(#t::from_bits_truncate))
        }
        Kind::Tagged(variants) => {
            let arms: Vec<TokenStream> = variants
                .iter()
                .map(|(v, fields)| {
                    let v = ident(v);
                    if fields.is_empty() {
                        quote!(Just(#t::#v))
                    } else {
                        fields_strat(m, fields, quote!(#t::#v))
                    }
                })
                .collect();
            if arms.len() == 1 {
                arms[0].clone()
            } else {
                quote!(prop_oneof![#(#arms),*])
            }
        }
    };
    quote! {
        fn #f() -> BoxedStrategy<#t> {
            #body.boxed()
        }
    }
}

fn args_strategy(m: &Model, op: &Op) -> TokenStream {
    let a = args_name(op);
    let f = format_ident!("strategy_{}_args", op.name);
    let body = fields_strat(m, &op.args, quote!(#a));
    quote! {
        fn #f() -> BoxedStrategy<#a> {
            #body.boxed()
        }
    }
}

fn access(a: Access) -> TokenStream {
    match a {
        Access::Read => quote!(::idl_runtime::Access::Read),
        Access::Write => quote!(::idl_runtime::Access::Write),
        Access::ReadWrite => quote!(::idl_runtime::Access::ReadWrite),
    }
}

/// The access a lease must *not* have to be refused.
fn wrong_access(a: Access) -> TokenStream {
    match a {
        Access::Read => quote!(::idl_runtime::Access::Write),
        Access::Write | Access::ReadWrite => quote!(::idl_runtime::Access::Read),
    }
}

fn encode(op: &Op) -> TokenStream {
    match op.encoding {
        Encoding::Zerocopy => quote!(fixed_bytes(&args)),
        Encoding::Postcard => quote!(postcard_bytes(&args)),
    }
}

fn good_leases(m: &Model, op: &Op) -> TokenStream {
    let ls = op.leases.iter().map(|l| {
        let t = ty(m, &l.ty);
        let a = access(l.access);
        let max = Literal::usize_unsuffixed(l.max);
        quote!(lease_info(#a, #max * ::idl_runtime::wire_size::<#t>()))
    });
    quote!(vec![#(#ls),*])
}

fn op_tests(m: &Model, op: &Op, iface: &str) -> TokenStream {
    let n = names(m);
    let (opn, req, error) = (&n.op, &n.request, &n.error);
    let v = op_variant(op);
    let sa = format_ident!("strategy_{}_args", op.name);
    let t = |what: &str| format_ident!("idl_{}_{}_{}", iface, op.name, what);
    let enc = encode(op);
    let leases = good_leases(m, op);
    let expected = if op.leases.is_empty() {
        quote!(#req::#v(args))
    } else {
        let l = leases_name(op);
        let slots = op.leases.iter().enumerate().map(|(i, l)| {
            let name = ident(&l.name);
            let i = Literal::usize_unsuffixed(i);
            quote!(#name: ::idl_runtime::LeaseSlot { index: #i, len: leases[#i].len })
        });
        quote!(#req::#v(args, #l { #(#slots),* }))
    };
    let mut out = TokenStream::new();

    let name = t("args_round_trip");
    out.extend(quote! {
        #[test]
        fn #name() {
            check(#sa(), |args| {
                let bytes = #enc;
                prop_assert!(bytes.len() <= #opn::#v.args_max());
                let leases = #leases;
                let got = dispatch_decode(#opn::#v as u32, &bytes, #opn::#v.reply_max(), &leases);
                prop_assert_eq!(got, Ok(#expected));
                Ok(())
            });
        }
    });

    let r = ty(m, &op.reply);
    let rs = strat(m, &op.reply);
    let (encode_reply, decode_reply) = match op.encoding {
        Encoding::Zerocopy => (quote!(encode_fixed_reply), quote!(decode_fixed_reply)),
        Encoding::Postcard => (quote!(encode_postcard_reply), quote!(decode_postcard_reply)),
    };
    let name = t("reply_round_trip");
    out.extend(quote! {
        #[test]
        fn #name() {
            check(#rs, |value| {
                let mut buf = [0u8; ::idl_runtime::MAX_MESSAGE];
                let result: Result<#r, #error> = Ok(value);
                let (code, len) = ::idl_runtime::#encode_reply(&result, &mut buf);
                prop_assert_eq!(code, 0);
                prop_assert!(len <= #opn::#v.reply_max());
                prop_assert_eq!(::idl_runtime::#decode_reply::<#r, #error>(code, &buf[..len]), result);
                Ok(())
            });
        }
    });

    let shorter = match op.encoding {
        Encoding::Zerocopy => quote! {
            if !bytes.is_empty() {
                let short = reason(dispatch_decode(#opn::#v as u32, &bytes[..bytes.len() - 1], cap, &leases));
                prop_assert_eq!(short, Some(ReplyFaultReason::BadMessageSize));
            }
        },
        Encoding::Postcard if !op.args.is_empty() => quote! {
            let empty = reason(dispatch_decode(#opn::#v as u32, &[], cap, &leases));
            prop_assert_eq!(empty, Some(ReplyFaultReason::BadMessageSize));
        },
        Encoding::Postcard => quote!(),
    };
    let name = t("rejects_wrong_length");
    out.extend(quote! {
        #[test]
        fn #name() {
            check(#sa(), |args| {
                let mut bytes = #enc;
                let leases = #leases;
                let cap = #opn::#v.reply_max();
                #shorter
                bytes.push(0);
                let long = reason(dispatch_decode(#opn::#v as u32, &bytes, cap, &leases));
                prop_assert_eq!(long, Some(ReplyFaultReason::BadMessageSize));
                Ok(())
            });
        }
    });

    if op.encoding == Encoding::Zerocopy {
        if let Some((offset, width, value)) = m.invalid_tag_in(&op.args) {
            let name = t("rejects_bad_tag");
            let value = Literal::u64_unsuffixed(value);
            let end = Literal::usize_unsuffixed(offset + width);
            let (offset, width) = (
                Literal::usize_unsuffixed(offset),
                Literal::usize_unsuffixed(width),
            );
            out.extend(quote! {
                #[test]
                fn #name() {
                    check(#sa(), |args| {
                        let mut bytes = #enc;
                        let bad: u64 = #value;
                        bytes[#offset..#end].copy_from_slice(&bad.to_le_bytes()[..#width]);
                        let leases = #leases;
                        let got = reason(dispatch_decode(#opn::#v as u32, &bytes, #opn::#v.reply_max(), &leases));
                        prop_assert_eq!(got, Some(ReplyFaultReason::BadMessageContents));
                        Ok(())
                    });
                }
            });
        }
    }

    // Leases: missing, extra, wrong access, too long, too short, misaligned.
    let mut cases = Vec::new();
    for (i, l) in op.leases.iter().enumerate() {
        let lt = ty(m, &l.ty);
        let wrong = wrong_access(l.access);
        let i = Literal::usize_unsuffixed(i);
        let len_of = |n: usize| {
            if n == 0 {
                quote!(0)
            } else {
                let n = Literal::usize_unsuffixed(n);
                quote!(#n * ::idl_runtime::wire_size::<#lt>())
            }
        };
        let mut variants = vec![quote!(lease_info(#wrong, leases[#i].len))];
        let too_many = len_of(l.max + 1);
        variants.push(quote!(lease_info(leases[#i].attributes_access(), #too_many)));
        if l.min > 0 {
            let too_few = len_of(l.min - 1);
            variants.push(quote!(lease_info(leases[#i].attributes_access(), #too_few)));
        }
        if m.fixed_size(&l.ty) > 1 {
            variants.push(quote!(lease_info(leases[#i].attributes_access(), leases[#i].len - 1)));
        }
        for bad in variants {
            cases.push(quote! {
                let mut bad_leases = leases.clone();
                bad_leases[#i] = #bad;
                let got = reason(dispatch_decode(#opn::#v as u32, &bytes, cap, &bad_leases));
                prop_assert_eq!(got, Some(ReplyFaultReason::BadLeases));
            });
        }
    }
    let missing = if op.leases.is_empty() {
        quote!()
    } else {
        quote! {
            let got = reason(dispatch_decode(#opn::#v as u32, &bytes, cap, &leases[..leases.len() - 1]));
            prop_assert_eq!(got, Some(ReplyFaultReason::BadLeases));
        }
    };
    let name = t("rejects_bad_leases");
    out.extend(quote! {
        #[test]
        fn #name() {
            check(#sa(), |args| {
                let bytes = #enc;
                let leases: Vec<::idl_runtime::LeaseInfo> = #leases;
                let cap = #opn::#v.reply_max();
                #missing
                let mut extra = leases.clone();
                extra.push(lease_info(::idl_runtime::Access::ReadWrite, 16));
                let got = reason(dispatch_decode(#opn::#v as u32, &bytes, cap, &extra));
                prop_assert_eq!(got, Some(ReplyFaultReason::BadLeases));
                #(#cases)*
                Ok(())
            });
        }
    });

    if op.reply != Ty::Unit {
        let name = t("rejects_small_reply_buffer");
        out.extend(quote! {
            #[test]
            fn #name() {
                check(#sa(), |args| {
                    let bytes = #enc;
                    let leases = #leases;
                    let cap = #opn::#v.reply_max() - 1;
                    let got = reason(dispatch_decode(#opn::#v as u32, &bytes, cap, &leases));
                    prop_assert_eq!(got, Some(ReplyFaultReason::ReplyBufferTooSmall));
                    Ok(())
                });
            }
        });
    }
    out
}

pub fn generate_tests(m: &Model) -> String {
    let n = names(m);
    let (opn, error) = (&n.op, &n.error);
    let krate = ident(&m.krate);
    let iface = snake(&m.name);
    let keys = reachable(m);
    let type_strategies = keys.iter().map(|k| type_strategy(m, k));
    let args_strategies = m.ops.iter().map(|op| args_strategy(m, op));

    let type_tests = m.local.iter().map(|k| {
        let f = strategy_fn(m, k);
        let name = format_ident!("idl_{}_type_{}_round_trip", iface, snake(&k.name));
        let fixed = if m.is_fixed(&Ty::Named(k.clone())) {
            quote!(assert_fixed_round_trip(&value);)
        } else {
            quote!()
        };
        quote! {
            #[test]
            fn #name() {
                check(#f(), |value| {
                    #fixed
                    assert_postcard_round_trip(&value);
                    Ok(())
                });
            }
        }
    });
    let op_tests = m.ops.iter().map(|op| op_tests(m, op, &iface));
    let count = Literal::u32_unsuffixed(m.ops.len() as u32);
    let errors_rt = format_ident!("idl_{}_errors_round_trip", iface);
    let any_code = format_ident!("idl_{}_error_from_any_code", iface);
    let never = format_ident!("idl_{}_dispatch_decode_never_panics", iface);
    let unknown = format_ident!("idl_{}_rejects_unknown_operation", iface);
    let table = format_ident!("idl_{}_op_table", iface);

    let access_helper = if m.ops.iter().any(|op| !op.leases.is_empty()) {
        quote! {
            /// Access of a lease as described (to rebuild it with another length).
            trait AttributesAccess {
                fn attributes_access(&self) -> ::idl_runtime::Access;
            }

            impl AttributesAccess for ::idl_runtime::LeaseInfo {
                fn attributes_access(&self) -> ::idl_runtime::Access {
                    let read = self.attributes & ::idl_runtime::LEASE_READ != 0;
                    let write = self.attributes & ::idl_runtime::LEASE_WRITE != 0;
                    match (read, write) {
                        (true, true) => ::idl_runtime::Access::ReadWrite,
                        (false, true) => ::idl_runtime::Access::Write,
                        _ => ::idl_runtime::Access::Read,
                    }
                }
            }
        }
    } else {
        quote!()
    };
    let file = quote! {
        use ::#krate::*;
        use ::idl_runtime::testing::*;
        use ::idl_runtime::{IdlError, ReplyFaultReason};
        use ::proptest::prelude::*;
        #[allow(unused_imports)]
        use ::userlib::TaskId;

        /// The reply-fault a rejected message gets (None: accepted).
        fn reason<T>(r: Result<T, ::idl_runtime::Reject>) -> Option<ReplyFaultReason> {
            r.err().map(|e| e.reason)
        }

        #access_helper

        #(#type_strategies)*
        #(#args_strategies)*

        /// Runs `test` on 48 cases of `strategy` (proptest, shrinking on failure).
        fn check<T: ::core::fmt::Debug>(
            strategy: impl Strategy<Value = T>,
            test: impl Fn(T) -> Result<(), TestCaseError>,
        ) {
            let mut runner = ::proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
            if let Err(e) = runner.run(&strategy, test) {
                panic!("{e}");
            }
        }

        #(#type_tests)*

        #(#op_tests)*

        #[test]
        fn #errors_rt() {
            check(::proptest::sample::select(#error::ALL.to_vec()), |e| {
                let mut buf = [0u8; 8];
                let (code, len) = ::idl_runtime::encode_fixed_reply::<(), #error>(&Err(e), &mut buf);
                prop_assert_ne!(code, 0);
                prop_assert!(::idl_runtime::is_dead_code(code).is_none());
                prop_assert_eq!(len, 0);
                prop_assert_eq!(#error::from_code(code), e);
                prop_assert_eq!(::idl_runtime::decode_fixed_reply::<(), #error>(code, &[]), Err(e));
                Ok(())
            });
        }

        #[test]
        fn #any_code() {
            check(any::<u32>(), |code| {
                let e = #error::from_code(code);
                prop_assert!(e.code() == code || e == #error::Protocol);
                Ok(())
            });
        }

        #[test]
        fn #never() {
            let lease = (0u32..4, 0usize..4096)
                .prop_map(|(attributes, len)| ::idl_runtime::LeaseInfo { attributes, len });
            let input = (
                0u32..#count + 3,
                ::proptest::collection::vec(any::<u8>(), 0..#opn::RECV_BUF_SIZE + 8),
                0usize..2048,
                ::proptest::collection::vec(lease, 0..9),
            );
            check(input, |(operation, bytes, capacity, leases)| {
                if let Ok(request) = dispatch_decode(operation, &bytes, capacity, &leases) {
                    prop_assert_eq!(request.op() as u32, operation);
                }
                Ok(())
            });
        }

        #[test]
        fn #unknown() {
            for operation in [0, #count + 1, 0xFFFF, u32::MAX] {
                let got = reason(dispatch_decode(operation, &[], ::idl_runtime::MAX_MESSAGE, &[]));
                assert_eq!(got, Some(ReplyFaultReason::UndefinedOperation), "operation {operation}");
            }
        }

        #[test]
        fn #table() {
            for op in #opn::ALL {
                assert_eq!(#opn::from_u32(op as u32), Some(op));
                assert!(op.args_max() <= #opn::RECV_BUF_SIZE);
                assert!(op.reply_max() <= #opn::REPLY_BUF_SIZE);
                assert!(!op.name().is_empty());
            }
        }
    };
    crate::format(m, file, "tests")
}
