//! `flowscope-floor [btf|tracepoint] [--no-udp]`: attaches the floor
//! programs (see `flowscope_receiver::floor`) and keeps them attached until
//! killed. Used by `scripts/bench-load.sh --floor`; not part of the agent.

fn main() {
    let mut hooks = flowscope_receiver::loader::Hooks::BtfTracepoints;
    let mut udp = true;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "btf" => hooks = flowscope_receiver::loader::Hooks::BtfTracepoints,
            "tracepoint" => hooks = flowscope_receiver::loader::Hooks::Tracepoints,
            "--no-udp" => udp = false,
            other => {
                eprintln!(
                    "flowscope-floor: unknown argument {other} (usage: flowscope-floor [btf|tracepoint] [--no-udp])"
                );
                std::process::exit(2);
            }
        }
    }
    let _ebpf = match flowscope_receiver::floor::load(hooks, udp) {
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
