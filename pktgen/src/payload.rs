//! The fixed header at the start of every generated packet's payload.
//!
//! ```text
//!  0               4               8                              16                              24
//! | magic "GWPG"  | flow id (u32) | per-flow sequence (u64)       | send time, CLOCK_MONOTONIC ns |
//! ```
//! All fields are big-endian. Every field starts at an even offset, so a field's 16-bit words
//! add straight into the upper-layer checksum (the generator updates it per packet that way).
//! The rest of the payload is a fixed filler pattern.

/// "GWPG": gatewan packet generator.
pub const MAGIC: u32 = u32::from_be_bytes(*b"GWPG");
/// Length of the payload header.
pub const LEN: usize = 24;

/// Offsets inside the payload header.
pub mod off {
    pub const MAGIC: usize = 0;
    pub const FLOW: usize = 4;
    pub const SEQ: usize = 8;
    pub const TIMESTAMP: usize = 16;
}

/// What the payload header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadHeader {
    pub flow: u32,
    pub seq: u64,
    /// Send time in CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
}

/// Why a payload header could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than [`LEN`].
    Short,
    /// The magic is not [`MAGIC`].
    BadMagic,
}

impl PayloadHeader {
    /// Writes the header at the start of `buf`; false when `buf` is shorter than [`LEN`].
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(h) = buf.first_chunk_mut::<LEN>() else {
            return false;
        };
        h[off::MAGIC..off::FLOW].copy_from_slice(&MAGIC.to_be_bytes());
        h[off::FLOW..off::SEQ].copy_from_slice(&self.flow.to_be_bytes());
        h[off::SEQ..off::TIMESTAMP].copy_from_slice(&self.seq.to_be_bytes());
        h[off::TIMESTAMP..LEN].copy_from_slice(&self.timestamp_ns.to_be_bytes());
        true
    }

    /// Reads the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, PayloadError> {
        let h = buf.first_chunk::<LEN>().ok_or(PayloadError::Short)?;
        let (magic, rest) = h.split_first_chunk::<4>().ok_or(PayloadError::Short)?;
        let (flow, rest) = rest.split_first_chunk::<4>().ok_or(PayloadError::Short)?;
        let (seq, rest) = rest.split_first_chunk::<8>().ok_or(PayloadError::Short)?;
        let ts = rest.first_chunk::<8>().ok_or(PayloadError::Short)?;
        if u32::from_be_bytes(*magic) != MAGIC {
            return Err(PayloadError::BadMagic);
        }
        Ok(Self {
            flow: u32::from_be_bytes(*flow),
            seq: u64::from_be_bytes(*seq),
            timestamp_ns: u64::from_be_bytes(*ts),
        })
    }
}

/// The filler byte at `index` of the payload (after the header): a fixed pattern, so a dump of
/// a generated packet is recognisable and no payload is left uninitialised.
pub fn filler(index: usize) -> u8 {
    (index as u8) ^ 0x5a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let h = PayloadHeader {
            flow: 7,
            seq: 0x0102_0304_0506_0708,
            timestamp_ns: 42,
        };
        let mut buf = [0u8; 30];
        assert!(h.emit(&mut buf));
        assert_eq!(&buf[..4], b"GWPG");
        assert_eq!(&buf[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(PayloadHeader::parse(&buf), Ok(h));
        assert_eq!(PayloadHeader::parse(&buf[..23]), Err(PayloadError::Short));
        buf[0] = b'X';
        assert_eq!(PayloadHeader::parse(&buf), Err(PayloadError::BadMagic));
        assert!(!h.emit(&mut [0u8; 23]));
    }
}
