//! `flowscope-floor [btf|tracepoint] [--no-udp] [--no-drops]`: attaches the
//! floor programs (see `flowscope_receiver::floor`) and keeps them attached
//! until killed; `--no-drops` leaves out the drop program's hook (for an
//! agent run with `drops.enabled: false`). Used by
//! `scripts/bench-load.sh --floor`; not part of the agent.

fn main() {
    let mut hooks = flowscope_receiver::loader::Hooks::BtfTracepoints;
    let mut udp = true;
    let mut drops = true;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "btf" => hooks = flowscope_receiver::loader::Hooks::BtfTracepoints,
            "tracepoint" => hooks = flowscope_receiver::loader::Hooks::Tracepoints,
            "--no-udp" => udp = false,
            "--no-drops" => drops = false,
            other => {
                eprintln!(
                    "flowscope-floor: unknown argument {other} (usage: flowscope-floor [btf|tracepoint] [--no-udp] [--no-drops])"
                );
                std::process::exit(2);
            }
        }
    }
    let _ebpf = match flowscope_receiver::floor::load(hooks, udp, drops) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let mut msg = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cur = c.source();
            }
            eprintln!("flowscope-floor: {msg}");
            std::process::exit(1);
        }
    };
    println!("attached {hooks:?}");
    // The programs detach when this process exits (their links' fds close).
    loop {
        std::thread::park();
    }
}
