//! Host tests of the table: every state change, every refusal changing
//! nothing, the least-recently-freed order, quotas, generations, and a
//! random-operation property against a plain model.

use crate::table::{Config, ConfigError, Entry, Notify, PasidTable, BYTES_PER_PASID, OWNER_WINDOW};
use pasid_alloc_api::{Pasid, PasidAllocError as E, PasidGen, PasidHandle, PasidOwner};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;
use userlib::{Generation, TaskId};

fn vm(i: usize) -> TaskId {
    TaskId::new(i, Generation(0))
}

fn h(p: u32, g: u32) -> PasidHandle {
    PasidHandle {
        pasid: Pasid(p),
        generation: PasidGen(g),
    }
}

fn table<'a>(storage: &'a mut Vec<Entry>, bits: u8, quota: u32, first: &[u32]) -> PasidTable<'a> {
    storage.resize(PasidTable::entries(bits), Entry::default());
    let cfg = Config { bits, quota, first };
    PasidTable::new(storage, &cfg).unwrap()
}

fn dump(t: &PasidTable<'_>) -> String {
    format!("{:?}", t.dump())
}

#[test]
fn eight_bytes_per_pasid() {
    // One 64-bit word: a union by state (table.rs, `Entry`).
    assert_eq!(BYTES_PER_PASID, 8);
}

#[test]
fn defunct_owner_is_the_exact_incarnation_across_restarts() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 4, 8, &[]);
    let g = |n| TaskId::new(3, Generation(n));
    let old = t.alloc(g(7)).unwrap();
    t.free(g(7), old).unwrap();
    // Newer incarnations whose low generation bits equal and neighbour 7's.
    for n in [8, OWNER_WINDOW + 6, OWNER_WINDOW + 7 - 1] {
        let h = t.alloc(g(n)).unwrap();
        assert!(matches!(
            t.owner_of(old.pasid.0),
            Ok(PasidOwner::Defunct { owner, .. }) if owner == g(7)
        ));
        assert!(matches!(
            t.owner_of(h.pasid.0),
            Ok(PasidOwner::Allocated { owner, .. }) if owner == g(n)
        ));
        t.check().unwrap();
    }
}

#[test]
fn a_newcomer_out_of_the_owner_window_waits_for_the_drain() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 4, 8, &[]);
    let g = |n| TaskId::new(3, Generation(n));
    let old = t.alloc(g(1)).unwrap();
    assert_eq!(t.owner_died(g(1)).0, 1);
    // Its low generation bits would read as the newcomer's: refused until
    // the old PASID is drained, and nothing changed.
    let before = dump(&t);
    assert_eq!(t.alloc(g(1 + OWNER_WINDOW)), Err(E::NoSpace));
    assert_eq!(dump(&t), before);
    assert!(matches!(
        t.owner_of(old.pasid.0),
        Ok(PasidOwner::Defunct { owner, .. }) if owner == g(1)
    ));
    // Within the window it may allocate at once.
    let near = TaskId::new(3, Generation(OWNER_WINDOW));
    t.alloc(near).unwrap();
    t.owner_died(near);
    while let Some(h) = t.next_defunct() {
        t.mark_drained(h).unwrap();
    }
    t.alloc(g(1 + OWNER_WINDOW)).unwrap();
    t.check().unwrap();
}

#[test]
fn config_refusals() {
    let mut s = vec![Entry::default(); 16];
    let c = |bits, first| Config {
        bits,
        quota: 1,
        first,
    };
    assert_eq!(
        PasidTable::new(&mut s, &c(21, &[])).err(),
        Some(ConfigError::TooWide)
    );
    assert_eq!(
        PasidTable::new(&mut s, &c(3, &[])).err(),
        Some(ConfigError::WrongStorage)
    );
    for bad in [&[0u32][..], &[16], &[3, 3]] {
        assert_eq!(
            PasidTable::new(&mut s, &c(4, bad)).err(),
            Some(ConfigError::BadFirst),
            "{bad:?}"
        );
    }
    let t = PasidTable::new(&mut s, &c(4, &[9, 2])).unwrap();
    assert_eq!(
        t.free_order().collect::<Vec<_>>(),
        [9, 2, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15]
    );
    t.check().unwrap();
}

#[test]
fn zero_bits_is_an_empty_space() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 0, 4, &[]);
    assert_eq!(t.alloc(vm(3)), Err(E::NoSpace));
    assert_eq!(t.owner_of(0), Err(E::Invalid));
    t.check().unwrap();
}

#[test]
fn life_of_a_pasid() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 2, 8, &[]);
    let a = t.alloc(vm(3)).unwrap();
    assert_eq!(a, h(1, 0));
    assert_eq!(
        t.owner_of(1),
        Ok(PasidOwner::Allocated {
            owner: vm(3),
            generation: PasidGen(0)
        })
    );
    assert_eq!(t.free(vm(3), a), Ok(Notify::IommuServer));
    assert_eq!(
        t.owner_of(1),
        Ok(PasidOwner::Defunct {
            owner: vm(3),
            generation: PasidGen(0)
        })
    );
    assert_eq!(t.usage(vm(3)).defunct, 1);
    assert_eq!(t.next_defunct(), Some(a));
    // Not handed out before the drain: 2 and 3 come first, then nothing.
    assert_eq!(t.alloc(vm(3)).unwrap().pasid.0, 2);
    assert_eq!(t.alloc(vm(3)).unwrap().pasid.0, 3);
    assert_eq!(t.alloc(vm(3)), Err(E::NoSpace));
    assert_eq!(t.mark_drained(a), Ok(()));
    assert_eq!(t.owner_of(1), Ok(PasidOwner::Free));
    assert_eq!(t.next_defunct(), None);
    assert_eq!(t.mark_drained(a), Err(E::NotFound), "twice");
    assert_eq!(t.alloc(vm(4)), Ok(h(1, 1)), "generation bumped");
    // The old handle is stale everywhere.
    assert_eq!(t.free(vm(3), a), Err(E::NotFound));
    t.check().unwrap();
}

#[test]
fn least_recently_freed_first() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 3, 8, &[]);
    let hs: Vec<_> = (0..7).map(|_| t.alloc(vm(3)).unwrap()).collect();
    for &k in &[4usize, 1, 6] {
        t.free(vm(3), hs[k]).unwrap();
    }
    while let Some(d) = t.next_defunct() {
        t.mark_drained(d).unwrap();
    }
    let got: Vec<u32> = (0..3).map(|_| t.alloc(vm(3)).unwrap().pasid.0).collect();
    assert_eq!(got, [hs[4].pasid.0, hs[1].pasid.0, hs[6].pasid.0]);
    t.check().unwrap();
}

#[test]
fn quota_counts_defunct_until_drained() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 4, 2, &[]);
    let a = t.alloc(vm(3)).unwrap();
    t.alloc(vm(3)).unwrap();
    assert_eq!(t.alloc(vm(3)), Err(E::NoSpace));
    assert!(t.alloc(vm(4)).is_ok(), "quotas are per VM");
    t.free(vm(3), a).unwrap();
    assert_eq!(t.alloc(vm(3)), Err(E::NoSpace), "defunct still counts");
    t.mark_drained(a).unwrap();
    assert!(t.alloc(vm(3)).is_ok());
    t.check().unwrap();
}

#[test]
fn refusals_change_nothing() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 4, 4, &[]);
    let a = t.alloc(vm(3)).unwrap();
    let b = t.alloc(vm(4)).unwrap();
    t.free(vm(4), b).unwrap();
    let before = dump(&t);
    assert_eq!(t.free(vm(4), a), Err(E::NotPermitted));
    assert_eq!(t.free(vm(3), h(0, 0)), Err(E::Invalid));
    assert_eq!(t.free(vm(3), h(16, 0)), Err(E::Invalid));
    assert_eq!(t.free(vm(3), h(a.pasid.0, 1)), Err(E::NotFound));
    assert_eq!(t.free(vm(4), b), Err(E::NotFound), "already defunct");
    assert_eq!(t.free(vm(3), h(9, 0)), Err(E::NotFound), "never allocated");
    assert_eq!(t.owner_of(0), Err(E::Invalid));
    assert_eq!(t.owner_of(1 << 20), Err(E::Invalid));
    assert_eq!(
        t.mark_drained(a),
        Err(E::NotFound),
        "allocated, not defunct"
    );
    assert_eq!(t.mark_drained(h(b.pasid.0, 1)), Err(E::NotFound));
    assert_eq!(t.mark_drained(h(0, 0)), Err(E::Invalid));
    // A restarted VM (new generation) owns nothing of the old one.
    let a2 = TaskId::new(3, Generation(1));
    assert_eq!(t.free(a2, a), Err(E::NotPermitted));
    assert_eq!(dump(&t), before);
    t.check().unwrap();
}

#[test]
fn mark_drained_only_the_oldest() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 3, 8, &[]);
    let a = t.alloc(vm(3)).unwrap();
    let b = t.alloc(vm(3)).unwrap();
    t.free(vm(3), a).unwrap();
    t.free(vm(3), b).unwrap();
    let before = dump(&t);
    assert_eq!(t.mark_drained(b), Err(E::Invalid));
    assert_eq!(dump(&t), before);
    assert_eq!(t.mark_drained(a), Ok(()));
    assert_eq!(t.mark_drained(b), Ok(()));
    t.check().unwrap();
}

/// A death nobody reported (iommu-server missed it in a death-log
/// overflow): the next `owner_died` of the same task — a later incarnation
/// — makes the older incarnation's PASIDs defunct too; other tasks' and
/// newer incarnations' PASIDs stay.
#[test]
fn owner_died_covers_every_older_incarnation() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 4, 8, &[]);
    let g = |n| TaskId::new(3, Generation(n));
    let old: Vec<_> = (0..2).map(|_| t.alloc(g(0)).unwrap()).collect();
    let mid = t.alloc(g(5)).unwrap();
    let new = t.alloc(g(9)).unwrap();
    let other = t.alloc(vm(4)).unwrap();
    // Incarnation 5 dies: it and 0 go, 9 (alive) stays.
    assert_eq!(t.owner_died(g(5)), (3, Notify::IommuServer));
    for h in old.iter().chain([&mid]) {
        assert!(matches!(
            t.owner_of(h.pasid.0),
            Ok(PasidOwner::Defunct { .. })
        ));
    }
    for h in [new, other] {
        assert!(matches!(
            t.owner_of(h.pasid.0),
            Ok(PasidOwner::Allocated { .. })
        ));
    }
    // Incarnation 9 still counts its own PASID against its quota.
    assert_eq!(t.usage(g(9)).allocated, 1);
    assert_eq!(t.owner_died(g(5)), (0, Notify::No), "idempotent");
    t.check().unwrap();
}

#[test]
fn owner_died_makes_its_pasids_defunct() {
    let mut s = Vec::new();
    let mut t = table(&mut s, 4, 8, &[]);
    let mine: Vec<_> = (0..3).map(|_| t.alloc(vm(3)).unwrap()).collect();
    let other = t.alloc(vm(4)).unwrap();
    t.free(vm(3), mine[1]).unwrap();
    assert_eq!(t.owner_died(vm(3)), (2, Notify::IommuServer));
    for m in &mine {
        assert!(matches!(
            t.owner_of(m.pasid.0),
            Ok(PasidOwner::Defunct { owner, .. }) if owner == vm(3)
        ));
    }
    assert!(matches!(
        t.owner_of(other.pasid.0),
        Ok(PasidOwner::Allocated { .. })
    ));
    assert_eq!(t.owner_died(vm(3)), (0, Notify::No), "idempotent");
    // The restarted VM allocates again, with a fresh quota, while the old
    // PASIDs are still draining; they are not handed out before the drain.
    let again = TaskId::new(3, Generation(1));
    let u = t.usage(again);
    assert_eq!((u.allocated, u.defunct), (0, 0));
    let n = t.alloc(again).unwrap();
    assert!(!mine.iter().any(|m| m.pasid == n.pasid));
    let order: Vec<u32> = t.defunct_order().collect();
    assert_eq!(order, [mine[1].pasid.0, mine[0].pasid.0, mine[2].pasid.0]);
    while let Some(d) = t.next_defunct() {
        t.mark_drained(d).unwrap();
    }
    assert_eq!(t.usage(again).allocated, 1);
    t.check().unwrap();
}

/// The operations of the property test.
#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Free(usize, usize),
    Drain,
    Died(usize),
    /// The VM restarts but pasid-alloc is not told (a death iommu-server
    /// missed): its PASIDs stay allocated to the old incarnation until a
    /// later `owner_died` of that task covers it.
    Lost(usize),
    Stale(usize, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (3..6usize).prop_map(Op::Alloc),
        (3..6usize, 0..16usize).prop_map(|(v, k)| Op::Free(v, k)),
        Just(Op::Drain),
        (3..6usize).prop_map(Op::Died),
        (3..6usize).prop_map(Op::Lost),
        (1..8usize, 0..3u32).prop_map(|(p, g)| Op::Stale(p, g)),
    ]
}

proptest! {
    /// Against a plain model (a VecDeque free list, a map of owners):
    /// every answer equal, the table consistent after every step, and no
    /// PASID handed out while defunct (I3).
    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        let mut s = Vec::new();
        let mut t = table(&mut s, 3, 3, &[]);
        let mut free: VecDeque<u32> = (1..8).collect();
        let mut gens = [0u32; 8];
        // pasid -> (owner, defunct)
        let mut held: BTreeMap<u32, (TaskId, bool)> = BTreeMap::new();
        let mut defunct: VecDeque<u32> = VecDeque::new();
        let mut incarnation = [0u32; 8];
        let mut handles: Vec<(TaskId, PasidHandle)> = Vec::new();
        for o in ops {
            match o {
                Op::Alloc(v) => {
                    let me = TaskId::new(v, Generation(incarnation[v]));
                    let mine = held.values().filter(|(o, _)| *o == me).count();
                    let want = if mine >= 3 { None } else { free.front().copied() };
                    match (t.alloc(me), want) {
                        (Ok(got), Some(p)) => {
                            prop_assert_eq!(got, h(p, gens[p as usize]));
                            free.pop_front();
                            held.insert(p, (me, false));
                            handles.push((me, got));
                        }
                        (Err(E::NoSpace), None) => {}
                        (r, w) => prop_assert!(false, "alloc {:?} want {:?}", r, w),
                    }
                }
                Op::Free(v, k) => {
                    let me = TaskId::new(v, Generation(incarnation[v]));
                    let Some(&(_, hd)) = handles.get(k) else { continue };
                    let p = hd.pasid.0;
                    let want = match held.get(&p) {
                        Some(&(o, false)) if gens[p as usize] == hd.generation.0 => {
                            if o == me { Ok(()) } else { Err(E::NotPermitted) }
                        }
                        _ => Err(E::NotFound),
                    };
                    let got = t.free(me, hd).map(|_| ());
                    prop_assert_eq!(got, want);
                    if got.is_ok() {
                        held.insert(p, (me, true));
                        defunct.push_back(p);
                    }
                }
                Op::Drain => {
                    prop_assert_eq!(t.next_defunct().map(|d| d.pasid.0), defunct.front().copied());
                    if let Some(d) = t.next_defunct() {
                        t.mark_drained(d).unwrap();
                        let p = defunct.pop_front().unwrap();
                        held.remove(&p);
                        gens[p as usize] += 1;
                        free.push_back(p);
                    }
                }
                Op::Died(v) => {
                    let me = TaskId::new(v, Generation(incarnation[v]));
                    // This incarnation and every older one of the task.
                    let mut mine: Vec<u32> = held
                        .iter()
                        .filter(|(_, (o, d))| {
                            o.index() == v && o.generation() <= me.generation() && !*d
                        })
                        .map(|(p, _)| *p)
                        .collect();
                    mine.sort();
                    let (n, _) = t.owner_died(me);
                    prop_assert_eq!(n as usize, mine.len());
                    for p in mine {
                        let o = held[&p].0;
                        held.insert(p, (o, true));
                        defunct.push_back(p);
                    }
                    incarnation[v] += 1;
                }
                Op::Lost(v) => incarnation[v] += 1,
                Op::Stale(p, g) => {
                    let got = t.mark_drained(h(p as u32, g));
                    let want = match held.get(&(p as u32)) {
                        Some(&(_, true)) if gens[p] == g => {
                            if defunct.front() == Some(&(p as u32)) { Ok(()) } else { Err(E::Invalid) }
                        }
                        _ => Err(E::NotFound),
                    };
                    prop_assert_eq!(got, want);
                    if got.is_ok() {
                        defunct.pop_front();
                        held.remove(&(p as u32));
                        gens[p] += 1;
                        free.push_back(p as u32);
                    }
                }
            }
            prop_assert_eq!(t.check(), Ok(()));
            let order: Vec<u32> = t.free_order().collect();
            prop_assert_eq!(order, free.iter().copied().collect::<Vec<_>>());
            for p in &defunct {
                prop_assert!(!t.free_order().any(|f| f == *p), "a defunct PASID is free");
            }
        }
    }
}
