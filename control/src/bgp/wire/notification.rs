//! NOTIFICATION messages (RFC 4271 section 4.5) and the error codes bgpctl sends.

use std::fmt;

use super::{encode_message, MessageType, Reader, HEADER_LEN};

/// Error codes (RFC 4271 section 4.5, RFC 7313).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Message Header Error subcodes.
pub mod header_subcode {
    pub const NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_LENGTH: u8 = 2;
    pub const BAD_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271, RFC 5492).
pub mod open_subcode {
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 section 6.3).
pub mod update_subcode {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const MISSING_WELL_KNOWN: u8 = 3;
    pub const ATTRIBUTE_FLAGS: u8 = 4;
    pub const ATTRIBUTE_LENGTH: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608).
pub mod fsm_subcode {
    pub const UNSPECIFIED: u8 = 0;
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486, RFC 8538).
pub mod cease_subcode {
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
}

/// A NOTIFICATION: error code, subcode and data. Sending one closes the session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    pub fn with_data(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Self {
            code,
            subcode,
            data,
        }
    }

    /// Cease / Administrative Shutdown with an RFC 9003 shutdown communication.
    pub fn shutdown(message: &str) -> Self {
        let mut text = message.as_bytes();
        // RFC 9003 allows 255 octets; cut on a character boundary.
        let mut cut = text.len().min(255);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
        let mut data = Vec::with_capacity(text.len() + 1);
        data.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
        data.extend_from_slice(text);
        Self::with_data(code::CEASE, cease_subcode::ADMINISTRATIVE_SHUTDOWN, data)
    }

    /// Decodes a NOTIFICATION body. Never fails: a body shorter than two octets cannot be
    /// reported back (the session closes anyway), so the missing octets read as 0.
    pub fn decode(body: &[u8]) -> Self {
        let mut r = Reader::new(body);
        let code = r.u8().unwrap_or(0);
        let subcode = r.u8().unwrap_or(0);
        Self::with_data(code, subcode, r.rest().to_vec())
    }

    /// The whole message, header included. Data that would not fit is cut.
    pub fn encode(&self) -> Vec<u8> {
        let room = super::MAX_MESSAGE_LEN - HEADER_LEN - 2;
        let data = &self.data[..self.data.len().min(room)];
        let mut body = Vec::with_capacity(2 + data.len());
        body.push(self.code);
        body.push(self.subcode);
        body.extend_from_slice(data);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        let _ = encode_message(MessageType::Notification, &body, &mut out);
        out
    }

    /// The RFC 9003 shutdown communication, if this is a Cease with one.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != code::CEASE
            || !matches!(
                self.subcode,
                cease_subcode::ADMINISTRATIVE_SHUTDOWN | cease_subcode::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let mut r = Reader::new(&self.data);
        let len = r.u8()?;
        let text = r.take(usize::from(len))?;
        std::str::from_utf8(text).ok().map(str::to_owned)
    }

    /// A short name for the code and subcode, for logs and `gatewan routes`.
    pub fn describe(&self) -> String {
        let code_name = match self.code {
            code::MESSAGE_HEADER => "message header error",
            code::OPEN_MESSAGE => "OPEN message error",
            code::UPDATE_MESSAGE => "UPDATE message error",
            code::HOLD_TIMER_EXPIRED => "hold timer expired",
            code::FSM => "finite state machine error",
            code::CEASE => "cease",
            code::ROUTE_REFRESH => "ROUTE-REFRESH message error",
            _ => "unknown error code",
        };
        let sub = match (self.code, self.subcode) {
            (code::MESSAGE_HEADER, 1) => "connection not synchronized",
            (code::MESSAGE_HEADER, 2) => "bad message length",
            (code::MESSAGE_HEADER, 3) => "bad message type",
            (code::OPEN_MESSAGE, 1) => "unsupported version number",
            (code::OPEN_MESSAGE, 2) => "bad peer AS",
            (code::OPEN_MESSAGE, 3) => "bad BGP identifier",
            (code::OPEN_MESSAGE, 4) => "unsupported optional parameter",
            (code::OPEN_MESSAGE, 6) => "unacceptable hold time",
            (code::OPEN_MESSAGE, 7) => "unsupported capability",
            (code::UPDATE_MESSAGE, 1) => "malformed attribute list",
            (code::UPDATE_MESSAGE, 2) => "unrecognized well-known attribute",
            (code::UPDATE_MESSAGE, 3) => "missing well-known attribute",
            (code::UPDATE_MESSAGE, 4) => "attribute flags error",
            (code::UPDATE_MESSAGE, 5) => "attribute length error",
            (code::UPDATE_MESSAGE, 6) => "invalid ORIGIN attribute",
            (code::UPDATE_MESSAGE, 8) => "invalid NEXT_HOP attribute",
            (code::UPDATE_MESSAGE, 9) => "optional attribute error",
            (code::UPDATE_MESSAGE, 10) => "invalid network field",
            (code::UPDATE_MESSAGE, 11) => "malformed AS_PATH",
            (code::FSM, 1) => "unexpected message in OpenSent",
            (code::FSM, 2) => "unexpected message in OpenConfirm",
            (code::FSM, 3) => "unexpected message in Established",
            (code::CEASE, 1) => "maximum number of prefixes reached",
            (code::CEASE, 2) => "administrative shutdown",
            (code::CEASE, 3) => "peer de-configured",
            (code::CEASE, 4) => "administrative reset",
            (code::CEASE, 5) => "connection rejected",
            (code::CEASE, 6) => "other configuration change",
            (code::CEASE, 7) => "connection collision resolution",
            (code::CEASE, 8) => "out of resources",
            (code::CEASE, 9) => "hard reset",
            _ => "",
        };
        let mut s = format!("{code_name} ({}/{})", self.code, self.subcode);
        if !sub.is_empty() {
            s = format!("{code_name}: {sub} ({}/{})", self.code, self.subcode);
        }
        if let Some(msg) = self.shutdown_message() {
            s.push_str(&format!(": {msg:?}"));
        }
        s
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bgp::wire::MessageView;

    #[test]
    fn round_trips_and_describes() {
        let n = Notification::with_data(
            code::UPDATE_MESSAGE,
            update_subcode::MALFORMED_AS_PATH,
            vec![1, 2],
        );
        let bytes = n.encode();
        let (view, _) = MessageView::parse(&bytes).unwrap().unwrap();
        assert_eq!(view.kind, MessageType::Notification);
        assert_eq!(Notification::decode(view.body), n);
        assert_eq!(
            n.describe(),
            "UPDATE message error: malformed AS_PATH (3/11)"
        );
    }

    #[test]
    fn shutdown_communication_round_trips() {
        let n = Notification::shutdown("maintenance: rack 4");
        assert_eq!(n.shutdown_message().as_deref(), Some("maintenance: rack 4"));
        let long = "é".repeat(200);
        let n = Notification::shutdown(&long);
        assert!(n.data.len() <= 256);
        assert!(n.shutdown_message().is_some());
        // Truncated data decodes to no message, not a panic.
        let bad = Notification::with_data(code::CEASE, 2, vec![10, b'a']);
        assert_eq!(bad.shutdown_message(), None);
        assert_eq!(Notification::decode(&[6]), Notification::new(6, 0));
    }
}
