//! Runner of the generations_* case: a server panicked and restarted 130
//! times (twice past the 64 generations the old 16-bit `TaskId` held) gets a
//! new, distinct id each time, and a send to its first incarnation's id is
//! refused with the dead code of the current generation every time —
//! including after 64 and 128 restarts, where the old id used to match the
//! new incarnation again.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod cases {
    use test_support::{case, echo::*, ensure, finish, Outcome};
    use userlib::*;

    /// Restarts of the server. More than 2 × 64: both old wrap points.
    const RESTARTS: u32 = 130;

    fn ping(id: TaskId) -> u32 {
        let mut r = [0u8; 4];
        sys_send(id, ECHO, b"ping", &mut r, &[]).0
    }

    fn restarted_130_times() -> Outcome {
        let first = sys_lookup_slot("test-echo").ok_or("no echo slot")?;
        ensure(
            first.generation() == Generation(0),
            "echo did not start in generation 0",
        )?;
        ensure(
            ping(first) == 0,
            "server does not answer before the first crash",
        )?;
        let mut cur = first;
        for n in 1..=RESTARTS {
            let (rc, _) = sys_send(cur, PANIC, &[], &mut [], &[]);
            let g = is_dead_code(rc).ok_or("no dead code after the server panicked")?;
            ensure(g == Generation(n), "dead code does not carry generation n")?;
            let fresh = sys_refresh_task_id(cur);
            ensure(
                fresh == cur.with_generation(g),
                "refresh gives the wrong id",
            )?;
            // Ids only grow: every incarnation's id is distinct.
            ensure(fresh.0 > cur.0, "the new id is not above the previous one")?;
            // The first incarnation's id (and the previous one's) is
            // refused with the current generation, never served.
            ensure(
                is_dead_code(ping(first)) == Some(g),
                "the first id is not refused",
            )?;
            ensure(
                is_dead_code(ping(cur)) == Some(g),
                "the previous id is not refused",
            )?;
            // Past 64 restarts: the id of the incarnation the old 6-bit
            // generation made this one alias (generation n mod 64; for a
            // multiple of 64 that is `first`, checked above).
            let wrapped = TaskId::new(first.index(), Generation(n % 64));
            if n >= 64 && n % 64 != 0 {
                ensure(
                    is_dead_code(ping(wrapped)) == Some(g),
                    "a low-bits id is not refused",
                )?;
            }
            ensure(ping(fresh) == 0, "the restarted server does not answer")?;
            cur = fresh;
        }
        log!(
            "echo restarted {} times: first id {:#x}, now {:#x} (generation {})",
            RESTARTS,
            first.0,
            cur.0,
            cur.generation().0
        );
        ensure(
            sys_lookup_slot("test-echo") == Some(cur),
            "lookup does not give the last generation",
        )
    }

    pub fn run() -> ! {
        let ok = case(
            "generations_restart_130_times_ids_distinct_stale_refused",
            restarted_130_times,
        );
        finish(ok)
    }
}

userlib::task_main!(cases::run);
