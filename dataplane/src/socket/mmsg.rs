//! Batched UDP I/O: one `recvmmsg` fills a batch of buffers, one `sendmmsg` per output socket
//! sends what the batch produced, straight from the same buffers (packets are rewritten in
//! place, never copied). Runs of equal-size datagrams to one destination leave as a single
//! UDP GSO send (`UDP_SEGMENT`) where the kernel offers it.
//!
//! The `mmsghdr`/`iovec` arrays point into the batch's own buffers, so they are rebuilt just
//! before each call rather than kept (the batch may move between calls).

use core::ops::Range;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockAddr;

use crate::engine::{HEADROOM, TAILROOM};

/// Largest UDP payload received: a jumbo-free datagram of the tunnel and fabric MTUs.
pub const MAX_DATAGRAM: usize = 2048;
/// Bytes per buffer.
pub const STRIDE: usize = HEADROOM + MAX_DATAGRAM + TAILROOM;
/// Most segments one GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// ... and bytes (a GSO send is one UDP datagram to the stack until it is segmented).
const GSO_MAX_BYTES: usize = 65_000;

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
    unsafe { core::mem::zeroed() }
}

fn empty_iovecs(n: usize) -> Vec<libc::iovec> {
    vec![
        libc::iovec {
            iov_base: core::ptr::null_mut(),
            iov_len: 0,
        };
        n
    ]
}

fn empty_headers(n: usize) -> Vec<libc::mmsghdr> {
    // SAFETY: mmsghdr is plain old data; zero is a valid empty header.
    vec![unsafe { core::mem::zeroed() }; n]
}

/// A batch of receive buffers.
pub struct RxBatch {
    bufs: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` only ever point into this batch's own buffers and
// are rebuilt before each use; a batch is used by one thread at a time.
unsafe impl Send for RxBatch {}

impl RxBatch {
    pub fn new(batch: usize) -> Self {
        let batch = batch.max(1);
        Self {
            bufs: vec![0; batch * STRIDE],
            lens: vec![0; batch],
            addrs: vec![zeroed_storage(); batch],
            iovs: empty_iovecs(batch),
            hdrs: empty_headers(batch),
            count: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Receives up to a batch without blocking; returns how many (0 when nothing is waiting).
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let n = self.capacity();
        let base = self.bufs.as_mut_ptr();
        for i in 0..n {
            let (Some(iov), Some(hdr), Some(addr)) = (
                self.iovs.get_mut(i),
                self.hdrs.get_mut(i),
                self.addrs.get_mut(i),
            ) else {
                break;
            };
            // SAFETY: i * STRIDE + HEADROOM + MAX_DATAGRAM <= bufs.len() by construction.
            iov.iov_base = unsafe { base.add(i * STRIDE + HEADROOM) }.cast();
            iov.iov_len = MAX_DATAGRAM;
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = core::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = core::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: every header points at live buffers of this batch, sized as declared.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                core::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            self.count = 0;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.count = r as usize;
        for (len, hdr) in self.lens.iter_mut().zip(&self.hdrs).take(self.count) {
            // A datagram larger than the buffer is truncated (MSG_TRUNC); its length is then
            // capped and the pipeline's length checks refuse it.
            *len = (hdr.msg_len as usize).min(MAX_DATAGRAM);
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last receive: its whole buffer, where the payload lies in it, and
    /// where it came from.
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], Range<usize>, Option<SocketAddr>)> {
        if i >= self.count {
            return None;
        }
        let len = *self.lens.get(i)?;
        let from = self.addrs.get(i).and_then(socket_addr);
        let buf = self.bufs.get_mut(i * STRIDE..(i + 1) * STRIDE)?;
        Some((buf, HEADROOM..HEADROOM + len, from))
    }

    fn slice(&self, i: usize, range: &Range<usize>) -> Option<&[u8]> {
        self.bufs
            .get(i * STRIDE..(i + 1) * STRIDE)
            .and_then(|b| b.get(range.clone()))
    }
}

/// The address the kernel wrote into a `sockaddr_storage`.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is larger and
            // suitably aligned for it.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A batch's datagrams waiting to leave through one socket.
pub struct TxQueue {
    /// (buffer index in the receive batch, range in it, destination)
    entries: Vec<(usize, Range<usize>, SocketAddr)>,
    addrs: Vec<SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// One cmsg buffer per message, for UDP_SEGMENT.
    cmsgs: Vec<[u64; 4]>,
    gso: bool,
    /// Datagrams sent and failed, and GSO sends.
    pub sent: u64,
    pub failed: u64,
    pub gso_sends: u64,
}

// SAFETY: as for RxBatch, the raw pointers are rebuilt before each use.
unsafe impl Send for TxQueue {}

impl TxQueue {
    pub fn new(batch: usize, gso: bool) -> Self {
        let batch = batch.max(1);
        let any = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        Self {
            entries: Vec::with_capacity(batch),
            addrs: vec![any; batch],
            iovs: empty_iovecs(batch),
            hdrs: empty_headers(batch),
            cmsgs: vec![[0u64; 4]; batch],
            gso,
            sent: 0,
            failed: 0,
            gso_sends: 0,
        }
    }

    pub fn push(&mut self, buffer: usize, range: Range<usize>, to: SocketAddr) {
        if self.entries.len() < self.entries.capacity() {
            self.entries.push((buffer, range, to));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sends everything queued from `rx`'s buffers, then empties the queue.
    pub fn flush(&mut self, fd: BorrowedFd<'_>, rx: &RxBatch) {
        let mut msgs = 0usize;
        let mut i = 0usize;
        let total = self.entries.len();
        while i < total {
            let Some((_, first, to)) = self.entries.get(i).cloned() else {
                break;
            };
            // A run of equal-size datagrams to one destination (the last may be shorter)
            // leaves as one GSO send.
            let size = first.len();
            let mut run = 1;
            if self.gso {
                while i + run < total && run < GSO_MAX_SEGMENTS && (run + 1) * size <= GSO_MAX_BYTES
                {
                    match self.entries.get(i + run) {
                        Some((_, r, t)) if *t == to && r.len() <= size => {
                            run += 1;
                            if r.len() < size {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
            let (Some(hdr), Some(addr), Some(cmsg)) = (
                self.hdrs.get_mut(msgs),
                self.addrs.get_mut(msgs),
                self.cmsgs.get_mut(msgs),
            ) else {
                break;
            };
            *addr = SockAddr::from(to);
            // The iovecs of a run are consecutive: the message points at the first.
            for k in 0..run {
                let Some((b, r, _)) = self.entries.get(i + k) else {
                    break;
                };
                let data = rx.slice(*b, r).unwrap_or_default();
                if let Some(iov) = self.iovs.get_mut(i + k) {
                    iov.iov_base = data.as_ptr().cast_mut().cast();
                    iov.iov_len = data.len();
                }
            }
            hdr.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
            hdr.msg_hdr.msg_namelen = addr.len();
            hdr.msg_hdr.msg_iov = self.iovs.as_mut_ptr().wrapping_add(i);
            hdr.msg_hdr.msg_iovlen = run;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
            if run > 1 {
                let space = write_segment_cmsg(cmsg, size as u16);
                hdr.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
                hdr.msg_hdr.msg_controllen = space;
                self.gso_sends += 1;
            } else {
                hdr.msg_hdr.msg_control = core::ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
            }
            msgs += 1;
            i += run;
        }
        let mut done = 0usize;
        while done < msgs {
            // SAFETY: headers [done, msgs) point at live iovecs, addresses and cmsgs above,
            // whose data lives in `rx` for the duration of the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr().wrapping_add(done),
                    (msgs - done) as u32,
                    0,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the message that failed (unreachable peer, full buffer) and go on.
                self.failed += self.segments(done);
                done += 1;
                continue;
            }
            for k in done..done + r as usize {
                self.sent += self.segments(k);
            }
            done += r as usize;
        }
        self.entries.clear();
    }

    fn segments(&self, msg: usize) -> u64 {
        self.hdrs
            .get(msg)
            .map_or(0, |h| h.msg_hdr.msg_iovlen as u64)
    }
}

/// Writes a `UDP_SEGMENT` control message; returns its space.
fn write_segment_cmsg(buf: &mut [u64; 4], segment: u16) -> usize {
    // SAFETY: CMSG_SPACE of a u16 (24 bytes on Linux) fits the 32-byte, 8-aligned buffer;
    // the header and data are written within it.
    unsafe {
        let space = libc::CMSG_SPACE(core::mem::size_of::<u16>() as u32) as usize;
        let mut msg: libc::msghdr = core::mem::zeroed();
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return 0;
        }
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(core::mem::size_of::<u16>() as u32) as usize;
        core::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        space
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (a, b)
    }

    /// Sends `sizes` from `a` to `b` through a TxQueue and receives them through an RxBatch.
    fn round_trip(gso: bool, sizes: &[usize]) -> (Vec<Vec<u8>>, TxQueue) {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        // The datagrams to send live in a batch's buffers, as they do in the worker.
        let mut src = RxBatch::new(sizes.len());
        src.count = sizes.len();
        for (i, &n) in sizes.iter().enumerate() {
            src.lens[i] = n;
            let (buf, range, _) = src.get(i).unwrap();
            for (k, byte) in buf[range].iter_mut().enumerate() {
                *byte = (i * 7 + k) as u8;
            }
        }
        let mut q = TxQueue::new(sizes.len(), gso);
        for (i, &n) in sizes.iter().enumerate() {
            q.push(i, HEADROOM..HEADROOM + n, to);
        }
        q.flush(a.as_fd(), &src);
        let mut rx = RxBatch::new(64);
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = Vec::new();
        while got.len() < sizes.len() {
            // Wait for at least one, then drain without blocking.
            let mut probe = [0u8; 1];
            let _ = b.peek(&mut probe);
            let n = rx.recv(b.as_fd()).unwrap();
            for i in 0..n {
                let (buf, range, from) = rx.get(i).unwrap();
                assert_eq!(from, Some(a.local_addr().unwrap()));
                got.push(buf[range].to_vec());
            }
        }
        (got, q)
    }

    #[test]
    fn batches_send_and_receive_every_datagram_intact() {
        let sizes = [100, 1400, 1, 2000, 60];
        let (got, q) = round_trip(false, &sizes);
        assert_eq!(q.sent, 5);
        for (i, (d, &n)) in got.iter().zip(&sizes).enumerate() {
            assert_eq!(d.len(), n);
            assert!(d.iter().enumerate().all(|(k, b)| *b == (i * 7 + k) as u8));
        }
    }

    #[test]
    fn gso_runs_leave_as_one_send_and_arrive_as_separate_datagrams() {
        // Three runs: 4 x 1000 (+ a shorter tail of 300), then 2 x 500.
        let sizes = [1000, 1000, 1000, 1000, 300, 500, 500];
        let (got, q) = round_trip(true, &sizes);
        assert_eq!(q.sent, 7);
        assert_eq!(q.failed, 0);
        assert_eq!(q.gso_sends, 2);
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, sizes);
        for (i, d) in got.iter().enumerate() {
            assert!(
                d.iter().enumerate().all(|(k, b)| *b == (i * 7 + k) as u8),
                "{i}"
            );
        }
    }
}
