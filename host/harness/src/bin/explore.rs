//! `explore <target> [--preemptions K] [--depth N] [--max M] [--jitter]`:
//! every schedule of one target within the bound.
//! `explore --random N [--jobs J] [--seed S] [--target T] [--out DIR] [--seconds L]`:
//! N seeded schedules spread over the targets (or one), results as JSON
//! in DIR (default target/explore).
//! `explore --replay <target>:<choices>`: one schedule, its trace tail.
//! `explore --list`. Exit 0 when nothing broke, 1 on a violation, 2 on
//! bad usage.

use harness::explore::{exhaust, find, replay, sweep, Bound, Summary, Target, TARGETS};
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ExitCode {
    eprintln!(
        "usage: explore <target> [--preemptions K] [--depth N] [--max M] [--jitter]\n       explore --random N [--jobs J] [--seed S] [--target T] [--out DIR] [--seconds L]\n       explore --replay <target>:<choices>   |   explore --list"
    );
    ExitCode::from(2)
}

fn print(t: &Target, what: &str, s: &Summary) {
    println!(
        "{}: {what}: {} schedules{}, {} distinct end states, {} violating, {} steps, {:.1} s ({:.0} steps/s, {:.1} schedules/s)",
        t.name,
        s.schedules,
        if s.exhausted { " (exhausted)" } else { "" },
        s.distinct_end_states,
        s.violating_schedules,
        s.steps,
        s.elapsed.as_secs_f64(),
        s.steps_per_s(),
        s.schedules_per_s()
    );
    for f in &s.violations {
        println!("  VIOLATION {}\n    replay: {}", f.what, f.replay);
    }
}

fn json(t: &Target, mode: &str, s: &Summary) -> String {
    let esc = |x: &str| x.replace('\\', "\\\\").replace('"', "\\\"");
    let v: Vec<String> = s
        .violations
        .iter()
        .map(|f| {
            format!(
                "{{\"replay\":\"{}\",\"what\":\"{}\"}}",
                esc(&f.replay),
                esc(&f.what)
            )
        })
        .collect();
    format!(
        "{{\"target\":\"{}\",\"mode\":\"{}\",\"schedules\":{},\"exhausted\":{},\"distinct_end_states\":{},\"violating_schedules\":{},\"steps\":{},\"seconds\":{:.3},\"steps_per_s\":{:.0},\"schedules_per_s\":{:.2},\"violations\":[{}]}}\n",
        t.name,
        mode,
        s.schedules,
        s.exhausted,
        s.distinct_end_states,
        s.violating_schedules,
        s.steps,
        s.elapsed.as_secs_f64(),
        s.steps_per_s(),
        s.schedules_per_s(),
        v.join(",")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let mut target = None;
    let mut random = None;
    let mut seed = 0u64;
    let mut out = "target/explore".to_string();
    let mut seconds = None;
    let mut bound: Option<(Option<u32>, Option<usize>)> = None;
    let mut max = u64::MAX;
    let mut jitter = false;
    let mut jobs = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    while let Some(a) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "--list" => {
                for t in TARGETS {
                    println!(
                        "{:<22} K={} N={}  {}",
                        t.name, t.bound.0, t.bound.1, t.about
                    );
                }
                return ExitCode::SUCCESS;
            }
            "--replay" => {
                let Some(s) = it.next() else { return usage() };
                return match replay(s) {
                    Ok((t, v)) => {
                        println!("{}", v.report.trace.tail_text(80));
                        println!(
                            "{}: {:?} after {} steps; end state {:016x}; {}",
                            t.name,
                            v.report.outcome,
                            v.report.steps,
                            v.end_state,
                            v.violation.as_deref().unwrap_or("no violation")
                        );
                        if v.violation.is_some() {
                            ExitCode::from(1)
                        } else {
                            ExitCode::SUCCESS
                        }
                    }
                    Err(e) => {
                        eprintln!("explore: {e}");
                        ExitCode::from(2)
                    }
                };
            }
            "--random" => match num() {
                Some(n) => random = Some(n),
                None => return usage(),
            },
            "--seed" => match num() {
                Some(n) => seed = n,
                None => return usage(),
            },
            "--seconds" => match num() {
                Some(n) => seconds = Some(Duration::from_secs(n)),
                None => return usage(),
            },
            "--max" => match num() {
                Some(n) => max = n,
                None => return usage(),
            },
            "--preemptions" => match num() {
                Some(n) => bound.get_or_insert((None, None)).0 = Some(n as u32),
                None => return usage(),
            },
            "--depth" => match num() {
                Some(n) => bound.get_or_insert((None, None)).1 = Some(n as usize),
                None => return usage(),
            },
            "--jitter" => jitter = true,
            "--jobs" => match num() {
                Some(n) if n > 0 => jobs = n,
                _ => return usage(),
            },
            "--out" => match it.next() {
                Some(d) => out = d.clone(),
                None => return usage(),
            },
            "--target" => match it.next() {
                Some(t) => target = Some(t.clone()),
                None => return usage(),
            },
            s if !s.starts_with("--") && target.is_none() => target = Some(s.to_string()),
            _ => return usage(),
        }
    }
    let targets: Vec<&Target> = match &target {
        Some(n) => match find(n) {
            Some(t) => vec![t],
            None => {
                eprintln!("explore: no target {n:?} (explore --list)");
                return usage();
            }
        },
        None if random.is_some() => TARGETS.iter().collect(),
        None => return usage(),
    };
    let mut bad = false;
    if let Some(n) = random {
        if let Err(e) = std::fs::create_dir_all(&out) {
            eprintln!("explore: cannot create {out}: {e}");
            return ExitCode::from(2);
        }
        let per = n.div_ceil(targets.len() as u64);
        let limit = seconds.map(|l| l / targets.len() as u32);
        let mut total = Summary::default();
        let wall = std::time::Instant::now();
        for t in &targets {
            // Split the seeds over `jobs` threads (machines share nothing
            // but the process): one machine's tasks are coroutines on one
            // worker thread, so a second machine uses the second core.
            let chunk = per.div_ceil(jobs);
            let parts: Vec<Summary> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..jobs)
                    .map(|j| {
                        let first = seed + j * chunk;
                        let n = chunk.min(per.saturating_sub(j * chunk));
                        sc.spawn(move || sweep(t, first, n, limit))
                    })
                    .collect();
                hs.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            let mut s = Summary::default();
            for p in parts {
                s.schedules += p.schedules;
                s.steps += p.steps;
                s.elapsed = s.elapsed.max(p.elapsed);
                s.violating_schedules += p.violating_schedules;
                s.violations.extend(p.violations);
                s.end_states.extend(p.end_states);
            }
            s.distinct_end_states = s.end_states.len() as u64;
            print(t, "random", &s);
            let path = format!("{out}/random-{}.json", t.name);
            if let Err(e) = std::fs::write(&path, json(t, "random", &s)) {
                eprintln!("explore: cannot write {path}: {e}");
            }
            bad |= s.violating_schedules > 0;
            total.schedules += s.schedules;
            total.steps += s.steps;
        }
        total.elapsed = wall.elapsed();
        println!(
            "all: {} schedules, {} steps, {:.1} s ({:.0} steps/s, {:.1} schedules/s with {} jobs; 10^6 schedules ≈ {:.0} min)",
            total.schedules,
            total.steps,
            total.elapsed.as_secs_f64(),
            total.steps_per_s(),
            total.schedules_per_s(),
            jobs,
            1e6 / total.schedules_per_s().max(1e-9) / 60.0
        );
    } else {
        let t = targets[0];
        let (k, d) = bound.unwrap_or((None, None));
        let b = Bound {
            preemptions: k.unwrap_or(t.bound.0),
            depth: d.unwrap_or(t.bound.1),
            jitter,
            max_schedules: max,
        };
        let s = exhaust(t, &b);
        print(
            t,
            &format!("exhaustive K={} N={}", b.preemptions, b.depth),
            &s,
        );
        let _ = std::fs::create_dir_all(&out);
        let path = format!("{out}/exhaust-{}.json", t.name);
        if let Err(e) = std::fs::write(
            &path,
            json(
                t,
                &format!("exhaustive K={} N={}", b.preemptions, b.depth),
                &s,
            ),
        ) {
            eprintln!("explore: cannot write {path}: {e}");
        }
        bad |= s.violating_schedules > 0;
    }
    if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
