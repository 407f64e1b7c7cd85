//! One UMEM frame lent to the packet code: the whole chunk plus the range holding the packet,
//! so a packet can grow into the headroom in front of it or shrink, in place.

use thiserror::Error;

use super::PortId;

/// A range that does not fit in the frame's chunk.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("packet range {offset}+{len} does not fit in a {capacity}-byte frame")]
pub struct FrameRangeError {
    pub offset: usize,
    pub len: usize,
    pub capacity: usize,
}

/// A packet in a UMEM chunk. `chunk()[offset()..][..len()]` is the packet; everything before
/// it is headroom the packet may grow into, everything after it tailroom.
pub struct Frame<'a> {
    chunk: &'a mut [u8],
    offset: usize,
    len: usize,
    rx_port: Option<PortId>,
}

impl<'a> Frame<'a> {
    /// `offset + len` must lie within `chunk` (checked by the caller, which got both from the
    /// kernel and validated them).
    pub(crate) fn new(
        chunk: &'a mut [u8],
        offset: usize,
        len: usize,
        rx_port: Option<PortId>,
    ) -> Self {
        debug_assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= chunk.len()));
        Frame {
            chunk,
            offset,
            len,
            rx_port,
        }
    }

    /// The port the frame was received on; `None` for a frame handed out by
    /// [`super::XskWorker::send`].
    pub fn rx_port(&self) -> Option<PortId> {
        self.rx_port
    }

    /// The packet.
    pub fn data(&self) -> &[u8] {
        // offset + len <= chunk.len() is an invariant of every constructor and setter.
        self.chunk
            .get(self.offset..self.offset + self.len)
            .unwrap_or_default()
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        self.chunk
            .get_mut(self.offset..self.offset + self.len)
            .unwrap_or_default()
    }

    /// Where the packet starts in the chunk (= the headroom in front of it).
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the packet.
    pub fn headroom(&self) -> usize {
        self.offset
    }

    /// Bytes free after the packet.
    pub fn tailroom(&self) -> usize {
        self.chunk.len() - self.offset - self.len
    }

    /// The whole chunk, headroom and tailroom included.
    pub fn chunk(&self) -> &[u8] {
        self.chunk
    }

    pub fn chunk_mut(&mut self) -> &mut [u8] {
        self.chunk
    }

    /// Sets the packet to `chunk()[offset..][..len]`; what is transmitted if the frame is sent.
    pub fn set_range(&mut self, offset: usize, len: usize) -> Result<(), FrameRangeError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.chunk.len() => {
                self.offset = offset;
                self.len = len;
                Ok(())
            }
            _ => Err(FrameRangeError {
                offset,
                len,
                capacity: self.chunk.len(),
            }),
        }
    }

    /// Grows the packet by `n` bytes at the front (into the headroom) and returns the new
    /// packet; the caller writes the new header into its first `n` bytes.
    pub fn push_front(&mut self, n: usize) -> Result<&mut [u8], FrameRangeError> {
        let offset = self.offset.checked_sub(n).ok_or(FrameRangeError {
            offset: 0,
            len: self.len.saturating_add(n),
            capacity: self.chunk.len(),
        })?;
        self.set_range(offset, self.len + n)?;
        Ok(self.data_mut())
    }

    /// Removes `n` bytes from the front of the packet (they become headroom).
    pub fn pull_front(&mut self, n: usize) -> Result<(), FrameRangeError> {
        if n > self.len {
            return Err(FrameRangeError {
                offset: self.offset.saturating_add(n),
                len: 0,
                capacity: self.chunk.len(),
            });
        }
        self.set_range(self.offset + n, self.len - n)
    }

    /// Sets the packet's length, keeping its start (grows into or shrinks from the tailroom).
    pub fn set_len(&mut self, len: usize) -> Result<(), FrameRangeError> {
        self.set_range(self.offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packet_moves_within_the_chunk_and_never_past_it() {
        let mut chunk = [0u8; 64];
        let mut frame = Frame::new(&mut chunk, 16, 8, None);
        frame.data_mut().copy_from_slice(b"payload!");
        assert_eq!((frame.headroom(), frame.tailroom()), (16, 40));

        let header = frame.push_front(4).expect("fits in the headroom");
        header[..4].copy_from_slice(b"HDR:");
        assert_eq!(frame.data(), b"HDR:payload!");
        assert_eq!(frame.offset(), 12);

        assert!(frame.push_front(13).is_err(), "only 12 bytes of headroom");
        assert_eq!(
            frame.data(),
            b"HDR:payload!",
            "a refused push changes nothing"
        );

        frame.pull_front(4).expect("pull");
        assert_eq!(frame.data(), b"payload!");
        assert!(frame.pull_front(9).is_err());

        frame.set_len(48).expect("up to the end of the chunk");
        assert_eq!(frame.tailroom(), 0);
        assert!(frame.set_len(49).is_err());
        assert!(frame.set_range(usize::MAX, 2).is_err(), "no overflow");
        frame.set_range(0, 64).expect("the whole chunk");
        assert_eq!(frame.data().len(), 64);
        assert_eq!(frame.chunk().len(), 64);
    }
}
