//! G's ring-buffer records from their bytes.
//!
//! Three layouts share the `EVENTS` ring, told apart by the `u32` kind
//! each begins with: the 24-byte [`ConnectRec`] (CONNECT and ACCEPT), the
//! 104-byte [`CloseRec`] and the whole [`Event`] of the rare records. The kernel
//! writes every byte of each (the records of their own size are filled
//! field by field, the `Event`s are zeroed first), so reading one is a
//! copy once its length is checked.

use flowscope_common::{CloseRec, ConnectRec, Event, event_kind};
use thiserror::Error;

use super::Record;

/// Why bytes from the ring are not a record.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the layout the kind names.
    #[error("{layout} record needs {need} bytes, got {got}")]
    Short {
        layout: &'static str,
        need: usize,
        got: usize,
    },
    /// A kind none of G's programs writes.
    #[error("unknown record kind {kind} ({len} bytes)")]
    UnknownKind { kind: u32, len: usize },
}

/// One record, by the kind in its first four bytes.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let Some(&[a, b, c, d]) = bytes.first_chunk::<4>() else {
        return Err(DecodeError::Short {
            layout: "any",
            need: 4,
            got: bytes.len(),
        });
    };
    match u32::from_ne_bytes([a, b, c, d]) {
        event_kind::CONNECT_MIN => decode_connect(bytes).map(Record::Connect),
        event_kind::ACCEPT => read("ACCEPT", bytes).map(Record::Accept),
        event_kind::CLOSE_MIN => decode_close(bytes).map(Record::Close),
        event_kind::LISTEN
        | event_kind::LISTEN_CLOSE
        | event_kind::FAILED
        | event_kind::LATE
        | event_kind::RESET
        | event_kind::PROCESS => decode_event(bytes).map(Record::Event),
        kind => Err(DecodeError::UnknownKind {
            kind,
            len: bytes.len(),
        }),
    }
}

/// A CONNECT record (`event_kind::CONNECT_MIN`).
pub fn decode_connect(bytes: &[u8]) -> Result<ConnectRec, DecodeError> {
    read("CONNECT", bytes)
}

/// A CLOSE record (`event_kind::CLOSE_MIN`).
pub fn decode_close(bytes: &[u8]) -> Result<CloseRec, DecodeError> {
    read("CLOSE", bytes)
}

/// A rare record: LISTEN, LISTEN_CLOSE, FAILED, LATE, RESET or PROCESS.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    read("Event", bytes)
}

/// A `T` from the start of `bytes` (a longer record keeps its tail unread).
fn read<T: aya::Pod>(layout: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            layout,
            need,
            got: bytes.len(),
        });
    }
    // SAFETY: `T` is Pod (repr(C), integers and byte arrays only: any bytes
    // are a value); `need` bytes were checked; read_unaligned copes with the
    // ring's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}
