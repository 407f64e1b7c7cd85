//! Interface names as the kernel accepts them, checked before they reach a syscall.

use std::ffi::CString;

use thiserror::Error;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_LEN: usize = 15;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IfNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    #[error("interface name {0:?} contains '/', whitespace or a NUL byte")]
    BadChar(String),
    #[error("no interface named {0:?} in this network namespace")]
    NotFound(String),
}

/// Checks `name` against the kernel's rules (dev_valid_name).
pub fn validate(name: &str) -> Result<(), IfNameError> {
    if name.is_empty() {
        return Err(IfNameError::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(IfNameError::TooLong(name.into()));
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':')
    {
        return Err(IfNameError::BadChar(name.into()));
    }
    Ok(())
}

/// Resolves an interface name to its index in the calling thread's network namespace.
pub fn index(name: &str) -> Result<u32, IfNameError> {
    validate(name)?;
    let c_name = CString::new(name).map_err(|_| IfNameError::BadChar(name.into()))?;
    // SAFETY: c_name is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        Err(IfNameError::NotFound(name.into()))
    } else {
        Ok(index)
    }
}

/// The interface that holds `addr` in the calling thread's network namespace (what the AF_XDP
/// backend attaches to for a configured VTEP or transit address).
pub fn by_address(addr: std::net::IpAddr) -> Option<String> {
    let mut head: *mut libc::ifaddrs = core::ptr::null_mut();
    // SAFETY: getifaddrs writes a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
        let here = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    Some(std::net::IpAddr::from(
                        u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let a = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    Some(std::net::IpAddr::from(a.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if here == Some(addr) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = name.to_str().ok().map(str::to_owned);
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The hardware address of an interface (SIOCGIFHWADDR).
pub fn mac(name: &str) -> Result<[u8; 6], IfNameError> {
    validate(name)?;
    // SAFETY: a plain datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(IfNameError::NotFound(name.into()));
    }
    // SAFETY: ifreq is plain old data.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq with a NUL-terminated name.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(IfNameError::NotFound(name.into()));
    }
    // SAFETY: the ioctl succeeded, so the union holds the hardware address.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut out = [0u8; 6];
    for (o, d) in out.iter_mut().zip(data.iter()) {
        *o = *d as u8;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_by_address_and_has_a_zero_mac() {
        assert_eq!(
            by_address("127.0.0.1".parse().unwrap()).as_deref(),
            Some("lo")
        );
        assert_eq!(by_address("192.0.2.254".parse().unwrap()), None);
        assert_eq!(mac("lo"), Ok([0; 6]));
        assert!(mac("nosuchif0").is_err());
    }

    #[test]
    fn rejects_what_the_kernel_rejects() {
        assert_eq!(validate(""), Err(IfNameError::Empty));
        assert!(matches!(
            validate("a-very-long-ifname"),
            Err(IfNameError::TooLong(_))
        ));
        assert!(matches!(validate("eth\x000"), Err(IfNameError::BadChar(_))));
        assert!(matches!(validate("a/b"), Err(IfNameError::BadChar(_))));
        assert!(matches!(validate(".."), Err(IfNameError::BadChar(_))));
        assert_eq!(validate("veth0"), Ok(()));
        assert_eq!(validate("fifteen-chars-x"), Ok(()));
    }

    #[test]
    fn loopback_resolves_and_missing_names_are_errors() {
        assert!(index("lo").is_ok());
        assert_eq!(
            index("nosuchif0"),
            Err(IfNameError::NotFound("nosuchif0".into()))
        );
        assert!(matches!(index("bad\0name"), Err(IfNameError::BadChar(_))));
    }
}
