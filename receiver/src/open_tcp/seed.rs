//! Owners of what was open before the agent: read once, with the baseline
//! walk, and given to the record join ([`TcpJoin::seed_listener`],
//! [`TcpJoin::seed_owner`]).
//!
//! The records name a connection by its CONNECT (a client) or by the
//! LISTEN of the socket that accepted it (a server). A listener that
//! called listen() before the agent started (a server started at boot, or
//! the agent restarted or upgraded) sent no LISTEN record, nor did a client
//! that connected before; without this, every such connection would close
//! with no process and no role.
//!
//! ## From a socket to its process
//!
//! The baseline walk's records carry each socket's inode (`OpenTcp::ino`,
//! `sk->sk_socket->file->f_inode->i_ino`), listeners included. A process
//! holding a socket has a descriptor whose `/proc/PID/fd` link reads
//! `socket:[INODE]`; one pass over every process's descriptors
//! ([`crate::process::socket_holders`], shared with the DNS owner search)
//! maps each inode to a process. Socket inodes are numbered host-wide, so
//! the one pass serves every network namespace the walk read.
//!
//! - A socket held by several processes (a server that forked after
//!   listen() or accept(), a descriptor passed over a UNIX socket) goes to
//!   the lowest pid holding it: for a pre-forking server, the parent that
//!   made the socket, as its LISTEN record would have named it.
//! - The name is `/proc/PID/comm`, what `bpf_get_current_comm()` gives, so
//!   it is the name a PROCESS record of that process carries.
//! - A socket whose process cannot be found (no file holds it: accepted
//!   but not yet accept()ed, or its process exited meanwhile, or `/proc`
//!   is not readable) is not seeded: it stays as without this (unnamed, and
//!   counted as such when it closes). An unreadable `/proc` entry is
//!   expected (a process that exits during the pass) and not an error.
//!
//! ## Client or server
//!
//! Listeners first, then each connection: a connection is a server's when
//! a listener of its namespace would have accepted it, that is one on its
//! local port with its local address or a wildcard
//! ([`TcpJoin::is_listening`], the matching of
//! [`crate::tcp_join::ListenKey`]); otherwise it is a client's. Two cases
//! the rule gets wrong: an accepted connection whose listener has closed
//! since (taken for a client), and a client bound to a listener's port
//! with `SO_REUSEADDR` or `SO_REUSEPORT` (taken for a server).
//!
//! ## What it does not change
//!
//! Its open time stays unknown (0) and no open is counted (the baseline
//! took its counters as they were); a client keeps its SYN in its sent
//! bytes, as its baseline did, so what is counted from the baseline on is
//! exact.

use std::path::Path;

use flowscope_common::role;
use hashbrown::HashMap;

use super::walk::listen_key;
use super::{OpenSocket, OpenTcpSnapshot};
use crate::process;
use crate::tcp_join::{ListenKey, TcpJoin};

/// A socket found with its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    sk: u64,
    local: ListenKey,
    tgid: u32,
    comm: [u8; 16],
}

/// The owners found for one baseline walk, until the join is there to
/// take them ([`Seeds::seed`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seeds {
    listeners: Vec<Held>,
    sockets: Vec<Held>,
    /// Sockets (listeners and connections) whose process was not found.
    unowned: usize,
}

/// What [`Seeds::seed`] gave the join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub listeners: usize,
    pub clients: usize,
    pub servers: usize,
    /// Sockets left unnamed: their process was not found.
    pub unowned: usize,
}

impl Seeds {
    /// The owners of the sockets of `snap`, from one pass over
    /// `proc_root` (`/proc`).
    pub fn find(snap: &OpenTcpSnapshot, proc_root: &Path) -> Seeds {
        let holders = process::socket_holders(proc_root);
        let mut names = HashMap::new();
        Self::from_holders(snap, &holders, |pid| {
            *names
                .entry(pid)
                .or_insert_with(|| process::read_comm(proc_root, pid))
        })
    }

    /// As [`Seeds::find`], with the inode -> pid map and the names given.
    fn from_holders(
        snap: &OpenTcpSnapshot,
        holders: &std::collections::HashMap<u64, u32>,
        mut comm: impl FnMut(u32) -> Option<[u8; 16]>,
    ) -> Seeds {
        let mut seeds = Seeds::default();
        let mut held = |s: &OpenSocket| -> Option<Held> {
            let tgid = *holders.get(&u64::from(s.ino)).filter(|_| s.ino != 0)?;
            Some(Held {
                sk: s.sk,
                local: listen_key(s),
                tgid,
                comm: comm(tgid)?,
            })
        };
        for s in &snap.listeners {
            match held(s) {
                Some(h) => seeds.listeners.push(h),
                None => seeds.unowned += 1,
            }
        }
        for s in &snap.sockets {
            match held(s) {
                Some(h) => seeds.sockets.push(h),
                None => seeds.unowned += 1,
            }
        }
        seeds
    }

    /// Gives the owners to `join`, before it takes its first record:
    /// listeners first, then each connection with its role (see the
    /// module's documentation).
    pub fn seed(self, join: &mut TcpJoin) -> Seeded {
        let mut done = Seeded {
            listeners: self.listeners.len(),
            unowned: self.unowned,
            ..Seeded::default()
        };
        for l in self.listeners {
            join.seed_listener(l.local, l.sk, l.tgid, l.comm);
        }
        for s in self.sockets {
            let role = if join.is_listening(s.local) {
                done.servers += 1;
                role::SERVER
            } else {
                done.clients += 1;
                role::CLIENT
            };
            join.seed_owner(s.sk, role, s.tgid, s.comm);
        }
        done
    }
}

#[cfg(test)]
mod tests;
