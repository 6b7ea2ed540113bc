//! The safe update of a live 64-byte STE or CD (PROTOCOL-FACTS: if only
//! one 64-bit word's *used* bits change, write it in place; otherwise make
//! the entry invalid, write the other words, then word 0 — with a
//! CFGI + SYNC after each step).
//!
//! The algorithm is Linux's `arm_smmu_write_entry`: first every bit the
//! current configuration ignores is set to its target value (invisible to
//! the SMMU), then, if a single word's used bits still differ, that
//! "critical" word is written in one 64-bit store (hitless), and finally
//! bits the target ignores are tidied. Two or more words: break before
//! make (V = 0, words 1..7, word 0).

use crate::error::Result;
use smmuv3::{Cd, Ste};

/// Words per STE / CD.
pub const WORDS: usize = 8;

/// What an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// The entry already held the target.
    NoChange,
    /// Hitless: every intermediate state was the old or the new
    /// configuration.
    Hitless,
    /// Break-before-make: the entry was invalid for a moment
    /// (transactions in that window are terminated with C_BAD_STE /
    /// C_BAD_CD, never bypassed).
    Breaking,
}

/// Access to one entry in DMA memory plus its invalidation.
pub trait EntryWriter {
    fn read(&self, i: usize) -> u64;
    fn write(&mut self, i: usize, v: u64);
    /// The bits the SMMU uses in an entry holding `e`.
    fn used(&self, e: &[u64; WORDS]) -> [u64; WORDS];
    /// Makes the writes visible and invalidates the SMMU's cached copy
    /// (CFGI_STE / CFGI_CD + CMD_SYNC).
    fn sync(&mut self) -> Result<()>;
    /// Used bits that may take their target value while the rest of the
    /// entry is still the current one (either mix is a safe
    /// configuration): they are written with the unused bits, first, and do
    /// not count towards the critical word. None by default.
    fn update_safe(&self, _cur: &[u64; WORDS], _target: &[u64; WORDS]) -> [u64; WORDS] {
        [0; WORDS]
    }
}

/// Update-safe bits of an STE: S1STALLD when both the current and the
/// target entry translate at stage 1. Either mix is safe: the old context
/// with stalls disabled terminates a fault it would have stalled (the old
/// domain's groups are being answered INVALID by the replace anyway), and
/// the new context with stalls still allowed is a stall prq-server
/// terminates at once for a domain that is not fault-capable. Without this,
/// replacing a fault-capable stage-1 domain by one that is not (or back)
/// changes two words (S1ContextPtr and S1STALLD) and would break before
/// make.
pub fn ste_update_safe(cur: &[u64; WORDS], target: &[u64; WORDS]) -> [u64; WORDS] {
    let mut safe = [0u64; WORDS];
    let s1 = |e: &[u64; WORDS]| {
        Ste::from_words(*e).used_bits()[Ste::S1STALLD.word] & Ste::S1STALLD.mask() != 0
    };
    if s1(cur) && s1(target) {
        safe[Ste::S1STALLD.word] = Ste::S1STALLD.mask();
    }
    safe
}

fn set_words(
    w: &mut impl EntryWriter,
    new: &[u64; WORDS],
    start: usize,
    len: usize,
) -> Result<bool> {
    let mut changed = false;
    for (i, v) in new.iter().enumerate().skip(start).take(len) {
        if w.read(i) != *v {
            w.write(i, *v);
            changed = true;
        }
    }
    if changed {
        w.sync()?;
    }
    Ok(changed)
}

/// Bit mask of the words whose used bits must change after every unused
/// bit has been updated; fills `unused_update`.
pub fn qword_diff(
    cur: &[u64; WORDS],
    cur_used: &[u64; WORDS],
    target: &[u64; WORDS],
    target_used: &[u64; WORDS],
    unused_update: &mut [u64; WORDS],
) -> u8 {
    let mut diff = 0u8;
    for i in 0..WORDS {
        unused_update[i] = (cur[i] & cur_used[i]) | (target[i] & !cur_used[i]);
        if (unused_update[i] & target_used[i]) != target[i] {
            diff |= 1 << i;
        }
    }
    diff
}

/// Moves the entry to `target` in the safe order. `target` must not set
/// bits its own configuration does not use (the builders in this crate
/// never do; a debug assertion checks).
pub fn write_entry(w: &mut impl EntryWriter, target: &[u64; WORDS]) -> Result<UpdateKind> {
    let cur: [u64; WORDS] = core::array::from_fn(|i| w.read(i));
    let mut cur_used = w.used(&cur);
    let safe = w.update_safe(&cur, target);
    for (u, s) in cur_used.iter_mut().zip(safe) {
        *u &= !s;
    }
    let target_used = w.used(target);
    debug_assert!(
        (0..WORDS).all(|i| target[i] & !target_used[i] == 0),
        "target entry sets unused bits"
    );
    let mut unused_update = [0u64; WORDS];
    let diff = qword_diff(&cur, &cur_used, target, &target_used, &mut unused_update);
    if diff.count_ones() == 1 {
        let critical = diff.trailing_zeros() as usize;
        // The critical word is written whole in the next step.
        unused_update[critical] = cur[critical];
        set_words(w, &unused_update, 0, WORDS)?;
        set_words(w, target, critical, 1)?;
        set_words(w, target, 0, WORDS)?;
        Ok(UpdateKind::Hitless)
    } else if diff != 0 {
        unused_update[0] = 0;
        set_words(w, &unused_update, 0, 1)?;
        set_words(w, target, 1, WORDS - 1)?;
        set_words(w, target, 0, 1)?;
        Ok(UpdateKind::Breaking)
    } else if set_words(w, target, 0, WORDS)? {
        // Only bits nobody uses changed.
        Ok(UpdateKind::NoChange)
    } else {
        Ok(UpdateKind::NoChange)
    }
}

/// Used bits of an STE (the architecture's, from `lib/smmuv3`).
pub fn ste_used(e: &[u64; WORDS]) -> [u64; WORDS] {
    Ste::from_words(*e).used_bits()
}

/// Used bits of a CD: only V while invalid; otherwise words 0, 1, 3, 4
/// entirely and word 2 (TTB1) unless EPD1.
pub fn cd_used(e: &[u64; WORDS]) -> [u64; WORDS] {
    let cd = Cd::from_words(*e);
    let mut used = [0u64; WORDS];
    used[Cd::V.word] = Cd::V.mask();
    if !cd.v() {
        return used;
    }
    used[0] = u64::MAX;
    used[1] = u64::MAX;
    if !cd.epd1() {
        used[2] = u64::MAX;
    }
    used[3] = u64::MAX;
    used[4] = u64::MAX;
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use smmuv3::{Cacheability, S1Dss, S1Fmt, Shareability, StreamConfig, Strw};
    use std::vec::Vec;

    /// An entry in a vector; every sync records the entry as the SMMU
    /// would see it.
    struct Rec {
        e: [u64; 8],
        used: fn(&[u64; 8]) -> [u64; 8],
        seen: Vec<[u64; 8]>,
    }

    impl EntryWriter for Rec {
        fn read(&self, i: usize) -> u64 {
            self.e[i]
        }
        fn write(&mut self, i: usize, v: u64) {
            self.e[i] = v;
        }
        fn used(&self, e: &[u64; 8]) -> [u64; 8] {
            (self.used)(e)
        }
        fn sync(&mut self) -> Result<()> {
            self.seen.push(self.e);
            Ok(())
        }
    }

    fn s2(vmid: u16, ttb: u64) -> Ste {
        let mut s = Ste::zeroed();
        s.set_v(true)
            .set_config(StreamConfig::S2Trans)
            .set_s2vmid(vmid)
            .set_s2t0sz(25)
            .set_s2sl0(1)
            .set_s2aa64(true)
            .set_s2ttb(ttb);
        s
    }

    fn nested(vmid: u16, ttb: u64, ctx: u64) -> Ste {
        let mut s = s2(vmid, ttb);
        s.set_config(StreamConfig::Nested)
            .set_s1fmt(S1Fmt::Linear)
            .set_s1_context_ptr(ctx)
            .set_s1dss(S1Dss::Terminate)
            .set_s1cir(Cacheability::WriteBackAlloc)
            .set_s1cor(Cacheability::WriteBackAlloc)
            .set_s1csh(Shareability::InnerShareable)
            .set_strw(Strw::El1);
        s
    }

    fn abort() -> Ste {
        let mut s = Ste::zeroed();
        s.set_v(true).set_config(StreamConfig::Abort);
        s
    }

    fn run(from: &Ste, to: &Ste) -> (UpdateKind, Vec<[u64; 8]>) {
        let mut r = Rec {
            e: from.words(),
            used: ste_used,
            seen: Vec::new(),
        };
        let k = write_entry(&mut r, &to.words()).unwrap();
        assert_eq!(r.e, to.words());
        (k, r.seen)
    }

    /// Every state the SMMU could observe is the old or the new
    /// configuration (compared on the bits that configuration uses).
    fn each_state_old_or_new(from: &Ste, to: &Ste, seen: &[[u64; 8]]) -> bool {
        let same = |a: &[u64; 8], b: &[u64; 8]| {
            let u = ste_used(b);
            (0..8).all(|i| a[i] & u[i] == b[i] & u[i]) && ste_used(a) == u
        };
        seen.iter()
            .all(|s| same(s, &from.words()) || same(s, &to.words()))
    }

    #[test]
    fn s2_to_nested_on_the_same_s2_is_hitless() {
        let a = s2(3, 0x4000_0000);
        let b = nested(3, 0x4000_0000, 0x7f_c000_0000);
        let (k, seen) = run(&a, &b);
        assert_eq!(k, UpdateKind::Hitless);
        assert!(each_state_old_or_new(&a, &b, &seen), "{seen:x?}");
        let (k, seen) = run(&b, &a);
        assert_eq!(k, UpdateKind::Hitless);
        assert!(each_state_old_or_new(&b, &a, &seen));
    }

    #[test]
    fn abort_and_back_are_one_word() {
        let a = s2(3, 0x4000_0000);
        let (k, seen) = run(&abort(), &a);
        assert_eq!(k, UpdateKind::Hitless);
        assert!(each_state_old_or_new(&abort(), &a, &seen));
        assert_eq!(run(&a, &abort()).0, UpdateKind::Hitless);
    }

    #[test]
    fn s2_to_other_s2_breaks_before_make() {
        let a = s2(3, 0x4000_0000);
        let b = s2(4, 0x4001_0000);
        let (k, seen) = run(&a, &b);
        assert_eq!(k, UpdateKind::Breaking);
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0][0] & 1, 0, "V cleared first");
        assert_eq!(
            seen[1][0] & 1,
            0,
            "still invalid while the other words change"
        );
        assert_eq!(seen[2], b.words());
    }

    #[test]
    fn context_pointer_change_is_hitless() {
        let a = nested(3, 0x4000_0000, 0x1000);
        let b = nested(3, 0x4000_0000, 0x2000);
        let (k, seen) = run(&a, &b);
        assert_eq!(k, UpdateKind::Hitless);
        assert_eq!(seen.len(), 1, "one word, one sync");
        assert_eq!(run(&b, &b).0, UpdateKind::NoChange);
    }

    #[test]
    fn cd_install_and_clear() {
        let mut cd = Cd::zeroed();
        cd.set_v(true)
            .set_asid(7)
            .set_ttb0(0x1000)
            .set_epd1(true)
            .set_mair(0xff);
        let mut r = Rec {
            e: [0; 8],
            used: cd_used,
            seen: Vec::new(),
        };
        assert_eq!(
            write_entry(&mut r, &cd.words()).unwrap(),
            UpdateKind::Hitless
        );
        assert_eq!(r.seen.len(), 2, "other words while invalid, then word 0");
        assert_eq!(r.seen[0][0], 0);
        r.seen.clear();
        assert_eq!(write_entry(&mut r, &[0; 8]).unwrap(), UpdateKind::Hitless);
        assert_eq!(r.seen[0][0], 0, "V cleared before the rest is wiped");
        assert_eq!(r.e, [0; 8]);
        // Changing ASID and TTB0 of a live CD: break before make.
        let mut r = Rec {
            e: cd.words(),
            used: cd_used,
            seen: Vec::new(),
        };
        let mut cd2 = cd;
        cd2.set_asid(8).set_ttb0(0x2000);
        assert_eq!(
            write_entry(&mut r, &cd2.words()).unwrap(),
            UpdateKind::Breaking
        );
    }
}
