//! TCP MD5 signatures (RFC 2385) for BGP sessions, through Linux's TCP_MD5SIG socket option.
//! The key is set on the connecting socket before `connect` and, per peer, on the listening
//! socket, so the kernel signs and checks every segment of that peer's connections.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// Longest key Linux accepts (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` of linux/tcp.h (libc does not define it).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

/// Sets (or, with an empty key, removes) the MD5 key for connections with `peer` on `socket`.
/// `v6_socket`: the socket is IPv6, so an IPv4 peer is written as its IPv4-mapped address.
pub fn set_key(
    socket: &impl AsRawFd,
    peer: IpAddr,
    v6_socket: bool,
    key: &[u8],
) -> std::io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("TCP MD5 key longer than {MAX_KEY_LEN} bytes"),
        ));
    }
    let peer = match (peer, v6_socket) {
        (IpAddr::V4(a), true) => IpAddr::V6(a.to_ipv6_mapped()),
        (a, _) => a,
    };
    // SAFETY: sockaddr_storage and the rest are plain data for which all zeroes is valid.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let storage = std::ptr::addr_of_mut!(sig.addr);
    match SocketAddr::new(peer, 0) {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { storage.cast::<libc::sockaddr_in>().write(sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { storage.cast::<libc::sockaddr_in6>().write(sin6) };
        }
    }
    sig.keylen = u16::try_from(key.len()).unwrap_or(0);
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: a valid socket fd and a fully initialised struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::addr_of!(sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn struct_matches_the_kernel_layout_and_keys_are_accepted() {
        // linux/tcp.h: 128 + 1 + 1 + 2 + 4 + 80.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_key(&s, "127.0.0.1".parse().unwrap(), false, b"s3cret").unwrap();
        let s6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(s6) = s6 {
            set_key(&s6, "127.0.0.1".parse().unwrap(), true, b"s3cret").unwrap();
        }
        assert!(set_key(&s, "127.0.0.1".parse().unwrap(), false, &[0; 81]).is_err());
    }

    #[test]
    fn signed_connections_work_when_both_ends_have_the_key() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        set_key(&l, "127.0.0.1".parse().unwrap(), false, b"k").unwrap();
        let sock = connect_with_key(addr, Some(b"k"));
        assert!(sock.is_ok(), "{sock:?}");
    }

    /// Connects with a std socket made through libc, keyed before connect.
    fn connect_with_key(addr: SocketAddr, key: Option<&[u8]>) -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            if let Some(k) = key {
                set_key(&s, addr.ip(), false, k)?;
            }
            tokio::time::timeout(std::time::Duration::from_secs(5), s.connect(addr))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
                .map(drop)
        })
    }
}
