//! DNS over TCP: each message is preceded by its 2-byte length (RFC 1035
//! 4.2.2, RFC 7766), and a message may be split across segments or several
//! messages share one. [`Streams`] follows each direction of each connection
//! in order and hands out whole messages.
//!
//! State is bounded: at most `max_streams` directions are followed (a new
//! one beyond that is refused and counted by the caller), and a stream holds
//! at most one incomplete message (at most 65,537 bytes) plus one segment.
//! A gap (a segment lost before capture) makes the stream unusable until it
//! closes, since message boundaries cannot be found again; what it would
//! have carried is counted as lost by the caller.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::packet::TcpHeader;

/// One direction of a TCP connection in one network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub netns: u32,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

struct Stream {
    /// Next expected sequence number.
    next: u32,
    buf: Vec<u8>,
    broken: bool,
    last_seen_ns: u64,
}

/// What feeding a segment produced besides messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Feed {
    /// The stream table was full: the segment was not followed.
    pub table_full: bool,
    /// The segment came after a gap: the stream is given up.
    pub gap: bool,
}

pub struct Streams {
    streams: HashMap<StreamKey, Stream>,
    max_streams: usize,
}

/// Largest DNS message plus its length prefix.
const MAX_MESSAGE: usize = 2 + 65_535;

impl Streams {
    pub fn new(max_streams: usize) -> Self {
        Self {
            streams: HashMap::new(),
            max_streams,
        }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Feeds one segment; calls `on_message` with every message completed.
    pub fn feed(
        &mut self,
        key: StreamKey,
        h: TcpHeader,
        payload: &[u8],
        now_ns: u64,
        mut on_message: impl FnMut(&[u8]),
    ) -> Feed {
        let mut out = Feed::default();
        if h.rst {
            self.streams.remove(&key);
            return out;
        }
        // The SYN takes one sequence number; data starts after it.
        let data_seq = if h.syn { h.seq.wrapping_add(1) } else { h.seq };
        if !self.streams.contains_key(&key) {
            if payload.is_empty() && !h.syn {
                return out;
            }
            if self.streams.len() >= self.max_streams {
                out.table_full = true;
                return out;
            }
            // Without the SYN, assume the first data seen starts a message
            // (a connection older than the agent); a parse error says if not.
            self.streams.insert(
                key,
                Stream {
                    next: data_seq,
                    buf: Vec::new(),
                    broken: false,
                    last_seen_ns: now_ns,
                },
            );
        }
        let Some(s) = self.streams.get_mut(&key) else {
            return out;
        };
        s.last_seen_ns = now_ns;
        if !payload.is_empty() && !s.broken {
            // Offset of this segment relative to what we expect next, with
            // sequence-number wrap-around.
            let delta = data_seq.wrapping_sub(s.next) as i32;
            if delta > 0 {
                s.broken = true;
                s.buf = Vec::new();
                out.gap = true;
            } else {
                let skip = delta.unsigned_abs() as usize;
                if skip < payload.len() {
                    let fresh = &payload[skip..];
                    s.buf.extend_from_slice(fresh);
                    s.next = s.next.wrapping_add(fresh.len() as u32);
                    let mut at = 0;
                    while s.buf.len() - at >= 2 {
                        let len = usize::from(u16::from_be_bytes([s.buf[at], s.buf[at + 1]]));
                        if s.buf.len() - at < 2 + len {
                            break;
                        }
                        on_message(&s.buf[at + 2..at + 2 + len]);
                        at += 2 + len;
                    }
                    s.buf.drain(..at);
                    debug_assert!(s.buf.len() < MAX_MESSAGE + payload.len());
                    if s.buf.capacity() > 4 * MAX_MESSAGE {
                        s.buf.shrink_to_fit();
                    }
                }
                // else: a retransmission of data already taken.
            }
        }
        if h.fin {
            self.streams.remove(&key);
        }
        out
    }

    /// Forgets streams idle since before `cutoff_ns`.
    pub fn expire(&mut self, cutoff_ns: u64) {
        self.streams.retain(|_, s| s.last_seen_ns >= cutoff_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey {
            netns: 1,
            src: "198.18.0.1:5000".parse().unwrap(),
            dst: "198.18.0.2:53".parse().unwrap(),
        }
    }
    fn h(seq: u32) -> TcpHeader {
        TcpHeader {
            seq,
            syn: false,
            fin: false,
            rst: false,
        }
    }

    #[test]
    fn reassembles_split_and_joined_messages() {
        let mut s = Streams::new(4);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let syn = TcpHeader {
            seq: u32::MAX,
            syn: true,
            fin: false,
            rst: false,
        };
        s.feed(key(), syn, &[], 0, |m| got.push(m.to_vec()));
        // Message "abc" split 1+4 bytes, then "de" and the first byte of "f".
        let stream = [0, 3, b'a', b'b', b'c', 0, 2, b'd', b'e', 0, 1, b'f'];
        s.feed(key(), h(0), &stream[..1], 0, |m| got.push(m.to_vec()));
        s.feed(key(), h(1), &stream[1..5], 0, |m| got.push(m.to_vec()));
        assert_eq!(got, vec![b"abc".to_vec()]);
        // A retransmission overlapping taken data adds nothing twice.
        s.feed(key(), h(3), &stream[3..11], 0, |m| got.push(m.to_vec()));
        assert_eq!(got, vec![b"abc".to_vec(), b"de".to_vec()]);
        s.feed(key(), h(11), &stream[11..], 0, |m| got.push(m.to_vec()));
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], b"f");
    }

    #[test]
    fn gap_breaks_stream_and_table_is_bounded() {
        let mut s = Streams::new(1);
        let f = s.feed(key(), h(100), &[0, 5, 1], 0, |_| panic!("incomplete"));
        assert_eq!(f, Feed::default());
        let f = s.feed(key(), h(200), &[1, 2], 0, |_| panic!("after a gap"));
        assert!(f.gap);
        let mut other = key();
        other.netns = 2;
        assert!(s.feed(other, h(0), &[0, 1, 1], 0, |_| {}).table_full);
        s.expire(1);
        assert!(s.is_empty());
    }
}
