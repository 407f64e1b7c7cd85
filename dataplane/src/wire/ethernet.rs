//! Ethernet II frames with up to two VLAN tags (802.1Q, and 802.1ad outside it).

use super::field::{array_at, set_array, set_u16, slice, slice_mut, u16_at};
use super::{need, BufferTooSmall};
use crate::drop::DropReason;

/// EtherType values gatewan looks at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    pub const QINQ: u16 = 0x88a8;
}

pub const HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
/// More tags than this are not walked (EthUnsupported).
pub const MAX_VLAN_TAGS: usize = 2;

/// A MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
    /// Group bit set (multicast or broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    /// Unicast, not all zeros: a usable source or router MAC.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Self::ZERO
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC address string was not six `:`- or `-`-separated hex bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 70:5b:83:6b:72:a9")]
pub struct ParseMacError(pub String);

// Configurations and the control plane's JSON write MAC addresses as text.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// A zero-copy view of an Ethernet frame. `new_checked` walks the VLAN tags once and
/// remembers where the payload starts.
#[derive(Clone, Copy, Debug)]
pub struct Frame<T> {
    buffer: T,
    header_len: usize,
}

mod off {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const TYPE: usize = 12;
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Validates the header and up to [`MAX_VLAN_TAGS`] tags.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::EthTruncated);
        }
        let mut type_off = off::TYPE;
        let mut tags = 0;
        while matches!(u16_at(b, type_off), ethertype::VLAN | ethertype::QINQ) {
            if tags == MAX_VLAN_TAGS {
                return Err(DropReason::EthUnsupported);
            }
            tags += 1;
            type_off += VLAN_TAG_LEN;
            if b.len() < type_off + 2 {
                return Err(DropReason::EthTruncated);
            }
        }
        Ok(Self {
            buffer,
            header_len: type_off + 2,
        })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length including VLAN tags.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr(array_at(self.buffer.as_ref(), off::DST))
    }

    pub fn src(&self) -> MacAddr {
        MacAddr(array_at(self.buffer.as_ref(), off::SRC))
    }

    /// The EtherType of the payload (after any VLAN tags).
    pub fn ethertype(&self) -> u16 {
        u16_at(self.buffer.as_ref(), self.header_len - 2)
    }

    /// Number of VLAN tags.
    pub fn vlan_tags(&self) -> usize {
        (self.header_len - HEADER_LEN) / VLAN_TAG_LEN
    }

    /// The innermost VLAN tag's VLAN ID (12 bits), if tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        (self.header_len > HEADER_LEN)
            .then(|| u16_at(self.buffer.as_ref(), self.header_len - 4) & 0x0fff)
    }

    /// The outer VLAN ID of a double-tagged (802.1ad) frame.
    pub fn outer_vlan_id(&self) -> Option<u16> {
        (self.vlan_tags() == 2).then(|| u16_at(self.buffer.as_ref(), off::TYPE + 2) & 0x0fff)
    }

    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        slice(b, self.header_len, b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        set_array(self.buffer.as_mut(), off::DST, mac.0);
    }

    pub fn set_src(&mut self, mac: MacAddr) {
        set_array(self.buffer.as_mut(), off::SRC, mac.0);
    }

    pub fn set_ethertype(&mut self, t: u16) {
        let o = self.header_len - 2;
        set_u16(self.buffer.as_mut(), o, t);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len;
        let b = self.buffer.as_mut();
        let len = b.len();
        slice_mut(b, h, len)
    }
}

/// What an Ethernet header says, for building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// One 802.1Q tag (VLAN ID, priority 0) when set.
    pub vlan: Option<u16>,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Repr {
        Repr {
            dst: frame.dst(),
            src: frame.src(),
            vlan: frame.vlan_id(),
            ethertype: frame.ethertype(),
        }
    }

    pub const fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.header_len();
        need(buf.len(), len)?;
        set_array(buf, off::DST, self.dst.0);
        set_array(buf, off::SRC, self.src.0);
        match self.vlan {
            Some(vid) => {
                set_u16(buf, off::TYPE, ethertype::VLAN);
                set_u16(buf, off::TYPE + 2, vid & 0x0fff);
                set_u16(buf, off::TYPE + 4, self.ethertype);
            }
            None => set_u16(buf, off::TYPE, self.ethertype),
        }
        Ok(len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROUTER: MacAddr = MacAddr([0x70, 0x5b, 0x83, 0x6b, 0x72, 0xa9]);

    #[test]
    fn mac_parse_display() {
        let m: MacAddr = "70:5b:83:6b:72:a9".parse().unwrap();
        assert_eq!(m, ROUTER);
        assert_eq!(m.to_string(), "70:5b:83:6b:72:a9");
        assert_eq!("70-5B-83-6B-72-A9".parse::<MacAddr>().unwrap(), ROUTER);
        for bad in [
            "",
            "70:5b:83:6b:72",
            "70:5b:83:6b:72:a9:00",
            "70:5b:83:6b:72:zz",
            "705:b:83:6b:72:a9",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(ROUTER.is_unicast());
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!(!MacAddr::ZERO.is_unicast());
    }

    #[test]
    fn untagged_round_trip() {
        let mut buf = [0u8; 64];
        let repr = Repr {
            dst: ROUTER,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            vlan: None,
            ethertype: ethertype::IPV4,
        };
        assert_eq!(repr.emit(&mut buf).unwrap(), 14);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.payload().len(), 50);
        assert_eq!(Repr::parse(&f), repr);
    }

    #[test]
    fn vlan_round_trip_and_setters() {
        let mut buf = [0u8; 40];
        let repr = Repr {
            dst: ROUTER,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            vlan: Some(100),
            ethertype: ethertype::IPV6,
        };
        assert_eq!(repr.emit(&mut buf).unwrap(), 18);
        assert_eq!(&buf[12..18], &[0x81, 0x00, 0x00, 100, 0x86, 0xdd]);
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.vlan_tags(), 1);
        assert_eq!(f.outer_vlan_id(), None);
        assert_eq!(f.ethertype(), ethertype::IPV6);
        f.set_dst(MacAddr::BROADCAST);
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut()[0] = 0x45;
        assert_eq!(buf[18], 0x45);
        assert_eq!(&buf[0..6], &[0xff; 6]);
        assert_eq!(&buf[16..18], &[0x08, 0x00]);
    }

    #[test]
    fn qinq_and_too_many_tags() {
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.header_len(), 22);
        assert_eq!(f.outer_vlan_id(), Some(10));
        assert_eq!(f.vlan_id(), Some(20));
        assert_eq!(f.ethertype(), ethertype::IPV4);

        let mut three = vec![0u8; 12];
        three.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 8, 0]);
        assert_eq!(
            Frame::new_checked(&three[..]).unwrap_err(),
            DropReason::EthUnsupported
        );
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Frame::new_checked(&[0u8; 13][..]).unwrap_err(),
            DropReason::EthTruncated
        );
        let mut tagged = vec![0u8; 12];
        tagged.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(
            Frame::new_checked(&tagged[..]).unwrap_err(),
            DropReason::EthTruncated
        );
        let mut small = [0u8; 17];
        let repr = Repr {
            dst: ROUTER,
            src: ROUTER,
            vlan: Some(1),
            ethertype: ethertype::IPV4,
        };
        assert_eq!(
            repr.emit(&mut small).unwrap_err(),
            BufferTooSmall { need: 18, have: 17 }
        );
    }
}
