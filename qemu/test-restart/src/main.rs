//! Runner of the restart_* cases: a server that panics is restarted with a
//! new generation, its client gets the dead code and recovers; a task that
//! crashes on every start is restarted with a growing hold-off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod cases {
    use test_support::{case, echo::*, ensure, finish, Outcome, TIMER_BIT};
    use userlib::*;

    fn ping(id: TaskId) -> u32 {
        let mut r = [0u8; 4];
        sys_send(id, ECHO, b"ping", &mut r, &[]).0
    }

    fn dead_code_and_recover() -> Outcome {
        let echo = sys_lookup_slot("test-echo").ok_or("no echo slot")?;
        ensure(ping(echo) == 0, "server does not answer before the crash")?;
        let (rc, _) = sys_send(echo, PANIC, &[], &mut [], &[]);
        let g = is_dead_code(rc).ok_or("no dead code after the server panicked")?;
        ensure(
            Some(g) == echo.generation().next(),
            "dead code carries the wrong generation",
        )?;
        // The stale id keeps getting the dead code, without blocking.
        ensure(is_dead_code(ping(echo)) == Some(g), "stale id not refused")?;
        let fresh = sys_refresh_task_id(echo);
        ensure(
            fresh == echo.with_generation(g),
            "refresh gives the wrong id",
        )?;
        ensure(ping(fresh) == 0, "restarted server does not answer")?;
        ensure(
            sys_lookup_slot("test-echo") == Some(fresh),
            "lookup does not give the new generation",
        )
    }

    /// The server reply-faults the peer (the kernel stops it) and then
    /// replies to it anyway: the reply is dropped, the server is not
    /// faulted, and the peer comes back with a new generation.
    fn reply_to_dead_dropped() -> Outcome {
        let echo = sys_lookup_slot("test-echo").ok_or("no echo slot")?;
        let peer = sys_lookup_slot("test-peer").ok_or("no peer slot")?;
        ensure(sys_post(peer, 2) == 0, "post to peer failed")?;
        // The peer outranks us: by now it has sent, been faulted, and the
        // server has replied into the void. Give the supervisor its turn.
        sleep_for(5, TIMER_BIT);
        ensure(
            Some(sys_refresh_task_id(peer).generation()) == peer.generation().next(),
            "the refused peer was not faulted and restarted",
        )?;
        ensure(
            sys_refresh_task_id(echo) == echo,
            "the server was faulted for replying to a dead caller",
        )?;
        ensure(ping(echo) == 0, "the server stopped serving")
    }

    fn throttled() -> Outcome {
        let crash = sys_lookup_slot("test-crashloop").ok_or("no crashloop slot")?;
        // Sample the crashing task's generation every 50 ms for 2 s. Without
        // a hold-off it would restart thousands of times; with the doubling
        // hold-off only a handful.
        let mut prev = sys_refresh_task_id(crash).generation().0;
        let mut total = 0u32;
        let mut late = 0u32;
        let mut worst = 0u32;
        for i in 0..40 {
            sleep_for(50, TIMER_BIT);
            let g = sys_refresh_task_id(crash).generation().0;
            let d = g - prev;
            prev = g;
            total += d;
            worst = worst.max(d);
            if i >= 20 {
                late += d;
            }
        }
        log!(
            "crash-looping task: {} restarts in 2 s, {} in the last second, at most {} per 50 ms",
            total,
            late,
            worst
        );
        ensure(worst <= 3, "restarted more than 3 times within 50 ms")?;
        ensure(late <= 2, "hold-off is not growing")?;
        ensure(
            total >= 1,
            "the crashing task is no longer restarted at all",
        )
    }

    pub fn run() -> ! {
        let mut ok = true;
        ok &= case("restart_dead_code_and_recover", dead_code_and_recover);
        ok &= case(
            "restart_reply_to_dead_caller_dropped",
            reply_to_dead_dropped,
        );
        ok &= case("restart_throttled", throttled);
        finish(ok)
    }
}

userlib::task_main!(cases::run);
