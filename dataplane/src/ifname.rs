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

#[cfg(test)]
mod tests {
    use super::*;

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
