//! Transmit ports: where the generator hands its packets. The generator core is generic over
//! [`TxPort`], so an AF_XDP transmitter plugs in beside the socket one: it reports
//! [`Encap::Frame`] (whole Ethernet frames) and one lane per queue.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use gatewan_dataplane::wire::{ethernet, ipv4, ipv6, udp};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::packet::Encap;

/// Largest batch one `send` takes (sendmmsg accepts up to UIO_MAXIOV = 1024).
pub const MAX_BATCH: usize = 1024;

/// A sender of generated packets, owned by one generator thread.
pub trait TxPort: Send {
    /// What the packets handed to [`TxPort::send`] start with.
    fn encap(&self) -> Encap;

    /// Independent paths this port sends on (sockets with distinct outer source ports, or
    /// queues). The generator spreads its flows over them by flow hash; each flow stays on one.
    fn lanes(&self) -> usize;

    /// Sends `pkts` on `lane`, in order. Returns how many were sent (a prefix of `pkts`); an
    /// error only when none was.
    fn send(&mut self, lane: usize, pkts: &[&[u8]]) -> io::Result<usize>;

    /// Bytes a packet of `len` bytes (as handed to `send`) occupies as an Ethernet frame,
    /// FCS, preamble and gap excluded.
    fn wire_len(&self, len: usize) -> usize;
}

/// Sends VXLAN over UDP sockets with sendmmsg: one socket per lane, each connected to the
/// gateway's VTEP and bound to its own source port, so flows hashed to different lanes have
/// different outer source ports, as a VTEP's do (RFC 7348 §5). The kernel cannot take a
/// per-datagram source port on one socket, hence several sockets.
pub struct UdpTx {
    sockets: Vec<UdpSocket>,
    outer_overhead: usize,
    msgs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
}

// SAFETY: the raw pointers in `msgs` and `iovs` are rewritten at the start of every `send`
// and only dereferenced by the kernel within that call; between calls they are dead values.
unsafe impl Send for UdpTx {}

impl UdpTx {
    /// Opens `sockets` sockets (at least 1) to `dst`. With a `bind` port of 0 the kernel picks
    /// each socket's source port; otherwise socket `i` binds `bind.port() + i`.
    pub fn open(
        dst: SocketAddr,
        bind: Option<SocketAddr>,
        sockets: usize,
        send_buffer: usize,
    ) -> io::Result<Self> {
        let n = sockets.max(1);
        let mut socks = Vec::with_capacity(n);
        for i in 0..n {
            let s = Socket::new(Domain::for_address(dst), Type::DGRAM, Some(Protocol::UDP))?;
            if send_buffer > 0 {
                s.set_send_buffer_size(send_buffer)?;
            }
            if let Some(mut b) = bind {
                if b.port() != 0 {
                    let port = u16::try_from(usize::from(b.port()) + i).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, "source ports beyond 65535")
                    })?;
                    b.set_port(port);
                }
                s.bind(&SockAddr::from(b))?;
            }
            // Connected: the kernel caches the route, and no address travels per datagram.
            s.connect(&SockAddr::from(dst))?;
            socks.push(UdpSocket::from(s));
        }
        let outer_ip = if dst.is_ipv4() {
            ipv4::MIN_HEADER_LEN
        } else {
            ipv6::HEADER_LEN
        };
        // SAFETY: mmsghdr and iovec are plain data; all-zero is a valid value of each.
        let msgs = (0..MAX_BATCH)
            .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
            .collect();
        let iovs = (0..MAX_BATCH)
            .map(|_| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            })
            .collect();
        Ok(Self {
            sockets: socks,
            outer_overhead: ethernet::HEADER_LEN + outer_ip + udp::HEADER_LEN,
            msgs,
            iovs,
        })
    }

    /// The local addresses of the lanes' sockets.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

impl TxPort for UdpTx {
    fn encap(&self) -> Encap {
        Encap::Vxlan
    }

    fn lanes(&self) -> usize {
        self.sockets.len()
    }

    fn send(&mut self, lane: usize, pkts: &[&[u8]]) -> io::Result<usize> {
        let Some(sock) = self.sockets.get(lane) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such lane"));
        };
        let n = pkts.len().min(MAX_BATCH);
        for ((p, iov), msg) in pkts
            .iter()
            .zip(self.iovs.iter_mut())
            .zip(self.msgs.iter_mut())
        {
            // sendmmsg never writes through iov_base; the cast only satisfies the C type.
            iov.iov_base = p.as_ptr() as *mut libc::c_void;
            iov.iov_len = p.len();
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        let fd = sock.as_raw_fd();
        let mut done = 0;
        while done < n {
            let rest = &mut self.msgs[done..n];
            // SAFETY: `rest` holds initialised mmsghdrs whose iovecs point into `pkts`, which
            // outlive this call; the socket is connected, so msg_name stays null.
            let r = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if done > 0 { Ok(done) } else { Err(e) };
            }
            done += r as usize;
        }
        Ok(done)
    }

    fn wire_len(&self, len: usize) -> usize {
        self.outer_overhead + len
    }
}
