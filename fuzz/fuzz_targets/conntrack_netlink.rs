//! Feeds arbitrary bytes to the conntrack netlink parser as one datagram
//! of the kernel's answer (a dump or an event). Any panic is a bug; every
//! message that cannot be parsed must be counted, never crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../receiver/src/conntrack/netlink.rs"]
mod netlink;

// The parser's entry types live beside the NAT table it fills.
#[allow(dead_code)]
#[path = "../../receiver/src/conntrack/table.rs"]
mod table;

fuzz_target!(
    init: {
        // The parser catches the netlink crate's own panics on malformed
        // attributes (see parse_datagram) and counts the message as bad; so
        // a panic there is not a crash, while any other still aborts
        // (libfuzzer-sys aborts on a panic that reaches it).
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_netlink_crate = info
                .location()
                .is_some_and(|l| l.file().contains("netlink-packet-"));
            if !in_netlink_crate {
                abort_hook(info);
            }
        }));
    },
    |data: &[u8]| {
    let mut events = 0u64;
    if let Ok(bad) = netlink::parse_datagram(data, |_| events += 1) {
        // Each message is either an event or counted as bad: never more
        // than the 16-byte headers the datagram can hold.
        assert!(events + bad <= (data.len() / 16) as u64 + 1);
    }
    }
);
