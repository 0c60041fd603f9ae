//! The tick clock against the kernel's own account of both clocks
//! (needs root: it creates the flow object's maps and runs a program).
//!
//! `/proc/timer_list` prints the monotonic time when it starts (`now at N
//! nsecs`) and, per tick device, the `jiffies` it reads a little later.
//! The agent cannot use that file (container runtimes mask it), but a test
//! on the host can check the agent's anchor with it: the tick the anchor
//! gives for the file's `now` is the file's `jiffies`, or one before it
//! when a tick passed between the two prints.

use flowscope_receiver::clock;
use flowscope_receiver::loader::FLOWS_OBJECT;

/// (`now at` ns, the first `jiffies:` line) of a `/proc/timer_list` text.
fn timer_list_clocks(text: &str) -> Option<(u64, u64)> {
    let now = text.lines().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .parse()
            .ok()
    })?;
    let jiffies = text
        .lines()
        .find_map(|l| l.strip_prefix("jiffies: ")?.trim().parse().ok())?;
    Some((now, jiffies))
}

#[test]
fn timer_list_excerpt_parses() {
    // Recorded on the test VM (kernel 6.18, HZ 250), lines 1-3 and 78-87;
    // the per-CPU `.last_jiffies` field is not the tick device's line.
    let excerpt = "Timer List Version: v0.10\n\
                   HRTIMER_MAX_CLOCK_BASES: 8\n\
                   now at 41363103315572 nsecs\n\
                   \n\
                   \x20 .idle_jiffies   : 4305232960\n\
                   \x20 .last_jiffies   : 4305233009\n\
                   \x20 .next_timer     : 41363100000000\n\
                   \x20 .idle_expires   : 41363100000000 nsecs\n\
                   jiffies: 4305233009\n";
    assert_eq!(
        timer_list_clocks(excerpt),
        Some((41_363_103_315_572, 4_305_233_009))
    );
    assert_eq!(timer_list_clocks("now at x nsecs\njiffies: 1\n"), None);
    assert_eq!(timer_list_clocks("now at 5 nsecs\n"), None);
}

/// Both clocks as `/proc/timer_list` prints them now.
fn read_timer_list() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/timer_list").expect("reading /proc/timer_list");
    timer_list_clocks(&text).expect("now and jiffies in /proc/timer_list")
}

#[test]
fn the_stamped_anchor_agrees_with_proc_timer_list() {
    let mut ebpf = aya::EbpfLoader::new()
        .load(FLOWS_OBJECT)
        .expect("creating the flow object's maps (needs root)");
    let tick_clock = clock::measure(&mut ebpf).expect("measuring the tick clock");
    // Right after the stamp (the anchor), and again half a second or more
    // later (HZ: at HZ 250 a wrong rate of 300 would be 25 ticks off).
    let first = read_timer_list();
    let mut second = read_timer_list();
    while second.0 < first.0 + 500_000_000 {
        // Time itself is what is waited for; each read costs a walk of
        // every CPU's timers, so not in a tight loop.
        std::thread::sleep(std::time::Duration::from_millis(100));
        second = read_timer_list();
    }
    for (now_ns, jiffies) in [first, second] {
        let predicted = tick_clock.tick(now_ns);
        assert!(
            predicted == jiffies || predicted + 1 == jiffies,
            "HZ {}: the anchor puts {now_ns} ns at tick {predicted}; /proc/timer_list read tick {jiffies} right after",
            tick_clock.hz()
        );
    }
}
