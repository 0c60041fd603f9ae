//! DNS messages: the parts flowscope needs, taken from a wire-format message.
//!
//! Parsing is done by `simple-dns` (see docs/dns.md for why). Before handing
//! it the bytes, [`parse`] checks the section counts against the message
//! length: every question takes at least 5 bytes and every record at least
//! 11, so a header claiming 65,535 records in a 40-byte message is rejected
//! before the parser reserves room for them. `simple-dns` itself rejects
//! compression pointers that do not point strictly backwards and names
//! longer than 255 bytes, which bounds pointer loops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use simple_dns::rdata::RData;
use thiserror::Error;

/// Why a message was not parsed. All of these count as
/// `flowscope.events.lost{flowscope.source=dns, flowscope.reason=parse_error}`.
#[derive(Debug, Error, PartialEq)]
pub enum MessageError {
    #[error("DNS message of {0} bytes is shorter than its 12-byte header")]
    Short(usize),
    #[error(
        "DNS message of {len} bytes cannot hold the {questions} questions and {records} records its header announces"
    )]
    Counts {
        len: usize,
        questions: u16,
        records: u32,
    },
    #[error("DNS query without a question")]
    NoQuestion,
    #[error("malformed DNS message")]
    Malformed(#[source] simple_dns::SimpleDnsError),
}

/// The question of a message: lower-case name without the final dot, and
/// the query type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Question {
    pub name: Arc<str>,
    pub qtype: u16,
}

/// An answer record flowscope uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerData {
    Addr(IpAddr),
    Cname(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Owner name, lower case.
    pub name: String,
    pub ttl: u32,
    pub data: AnswerData,
}

/// A parsed DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    /// The header's 4-bit RCODE.
    pub rcode: u8,
    pub question: Question,
    /// A, AAAA and CNAME records of the answer section (responses only).
    pub answers: Vec<Answer>,
}

const HEADER_LEN: usize = 12;
const MIN_QUESTION_LEN: usize = 5;
const MIN_RECORD_LEN: usize = 11;
/// Most answer records kept from one response.
const MAX_ANSWERS: usize = 64;

/// Parses a DNS message (UDP payload, or a TCP message without its length
/// prefix). Never panics on any input.
pub fn parse(bytes: &[u8]) -> Result<Message, MessageError> {
    if bytes.len() < HEADER_LEN {
        return Err(MessageError::Short(bytes.len()));
    }
    let count = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    let questions = count(4);
    let records = u32::from(count(6)) + u32::from(count(8)) + u32::from(count(10));
    let need = usize::from(questions) * MIN_QUESTION_LEN + records as usize * MIN_RECORD_LEN;
    if need > bytes.len() - HEADER_LEN {
        return Err(MessageError::Counts {
            len: bytes.len(),
            questions,
            records,
        });
    }
    if questions == 0 {
        return Err(MessageError::NoQuestion);
    }
    let id = count(0);
    let response = bytes[2] & 0x80 != 0;
    let rcode = bytes[3] & 0x0f;
    let packet = simple_dns::Packet::parse(bytes).map_err(MessageError::Malformed)?;
    let q = packet.questions.first().ok_or(MessageError::NoQuestion)?;
    let question = Question {
        name: Arc::from(lower_name(&q.qname)),
        qtype: u16::from(q.qtype),
    };
    let mut answers = Vec::new();
    if response {
        for rr in packet.answers.iter().take(MAX_ANSWERS) {
            let data = match &rr.rdata {
                RData::A(a) => AnswerData::Addr(IpAddr::V4(Ipv4Addr::from(a.address))),
                RData::AAAA(a) => AnswerData::Addr(IpAddr::V6(Ipv6Addr::from(a.address))),
                RData::CNAME(c) => AnswerData::Cname(lower_name(&c.0)),
                _ => continue,
            };
            answers.push(Answer {
                name: lower_name(&rr.name),
                ttl: rr.ttl,
                data,
            });
        }
    }
    Ok(Message {
        id,
        response,
        rcode,
        question,
        answers,
    })
}

fn lower_name(name: &simple_dns::Name<'_>) -> String {
    let mut s = name.to_string();
    s.make_ascii_lowercase();
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// `flowscope.dns.response.code` for an RCODE (RFC 1035, 2136 and the IANA registry's
/// mnemonics).
pub fn rcode_name(rcode: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "NOERROR",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "YXDOMAIN",
        "YXRRSET",
        "NXRRSET",
        "NOTAUTH",
        "NOTZONE",
        "DSOTYPENI",
        "RCODE12",
        "RCODE13",
        "RCODE14",
        "RCODE15",
    ];
    NAMES[usize::from(rcode & 0x0f)]
}

/// `error.type` of a lookup answered with `rcode`: None for NOERROR (not a
/// failure), the code's name for the named error codes, `_OTHER` (the
/// registry's fallback) for the unassigned ones.
pub fn rcode_error(rcode: u8) -> Option<&'static str> {
    match rcode & 0x0f {
        0 => None,
        1..=11 => Some(rcode_name(rcode)),
        _ => Some(flowscope_model::names::attr::ERROR_OTHER),
    }
}

/// `flowscope.dns.question.type` for a query type: the IANA mnemonic for the common
/// ones, else `TYPE<n>` (RFC 3597's notation).
pub fn qtype_name(qtype: u16) -> std::borrow::Cow<'static, str> {
    let s = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        257 => "CAA",
        n => return std::borrow::Cow::Owned(format!("TYPE{n}")),
    };
    std::borrow::Cow::Borrowed(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` with type `qtype` and id `id`, in wire format.
    pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b[0..2].copy_from_slice(&id.to_be_bytes());
        b[2] = 0x01; // RD
        b[5] = 1; // QDCOUNT
        for label in name.split('.').filter(|l| !l.is_empty()) {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b
    }

    #[test]
    fn parses_a_query() {
        let m = parse(&query(0x1234, "Www.Example.COM", 28)).unwrap();
        assert_eq!(m.id, 0x1234);
        assert!(!m.response);
        assert_eq!(&*m.question.name, "www.example.com");
        assert_eq!(m.question.qtype, 28);
    }

    #[test]
    fn rejects_counts_the_message_cannot_hold() {
        let mut q = query(1, "a.b", 1);
        q[6] = 0xff;
        q[7] = 0xff;
        assert!(matches!(parse(&q), Err(MessageError::Counts { .. })));
        assert_eq!(parse(&q[..5]), Err(MessageError::Short(5)));
    }

    #[test]
    fn names() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(999), "TYPE999");
    }
}
