//! gatewan's XDP steering program. It parses Ethernet (up to two VLAN tags), IPv4 or IPv6 and
//! UDP, and redirects packets whose (destination address, UDP port) is a steered endpoint
//! (VXLAN to a VTEP address, WireGuard to a transit endpoint) into the AF_XDP socket of the
//! receive queue. Everything else goes to the kernel. docs/afxdp.md has the rules.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use gatewan_ebpf_common::{
    slot, Counter, CounterKind, EndpointKey, SteerKind, COUNTER_SLOTS, MAX_ENDPOINTS, MAX_QUEUES,
};

#[map(name = "GW_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "GW_ENDPOINTS")]
static ENDPOINTS: HashMap<EndpointKey, u32> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "GW_XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const IPPROTO_UDP: u8 = 17;
/// IPv4 "more fragments" flag and fragment offset: any of these set means a fragment.
const IPV4_FRAG_MASK: u16 = 0x3fff;

enum Parsed {
    /// Not UDP over IP, or a kind of packet the kernel handles (fragments, IPv6 extension
    /// headers).
    Other,
    /// A header was cut short or inconsistent.
    Malformed,
    /// A UDP packet and where it is going.
    Udp(EndpointKey),
}

#[xdp]
pub fn gatewan_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let key = match parse(&ctx) {
        Parsed::Other => return pass(len),
        Parsed::Malformed => {
            // Passed, not dropped: the kernel validates again and counts what it rejects in
            // its own statistics, where an operator looks first.
            count(Counter::Malformed, len);
            return pass(len);
        }
        Parsed::Udp(key) => key,
    };
    // SAFETY: the value is a plain u32 copied out at once; a concurrent update can only make
    // it the old or the new kind.
    let kind = match unsafe { ENDPOINTS.get(&key) } {
        Some(value) => *value,
        None => return pass(len),
    };
    // The fallback action (the low bits of flags) is taken when no socket sits in the queue's
    // slot: the packet then reaches the kernel instead of vanishing.
    match XSKS.redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_PASS)) {
        Ok(action) => {
            count(Counter::Redirect, len);
            match SteerKind::from_u32(kind) {
                Some(kind) => count(Counter::from_kind(kind), len),
                None => {}
            }
            action
        }
        Err(_) => {
            count(Counter::NoSocket, len);
            pass(len)
        }
    }
}

#[inline(always)]
fn pass(len: u64) -> u32 {
    count(Counter::Pass, len);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn parse(ctx: &XdpContext) -> Parsed {
    let Some(mut ethertype) = be16(ctx, 12) else {
        return Parsed::Malformed;
    };
    let mut l3 = ETH_HLEN;
    // At most two tags (802.1ad outer, 802.1Q inner), unrolled for the verifier.
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = be16(ctx, l3 + 2) else {
            return Parsed::Malformed;
        };
        ethertype = inner;
        l3 += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let Some(inner) = be16(ctx, l3 + 2) else {
                return Parsed::Malformed;
            };
            ethertype = inner;
            l3 += VLAN_HLEN;
        }
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, l3),
        ETH_P_IPV6 => parse_ipv6(ctx, l3),
        _ => Parsed::Other,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(header) = ptr_at::<[u8; IPV4_MIN_HLEN]>(ctx, l3) else {
        return Parsed::Malformed;
    };
    // SAFETY: ptr_at checked that the 20 bytes lie inside the packet.
    let header = unsafe { &*header };
    if header[0] >> 4 != 4 {
        return Parsed::Malformed;
    }
    let ihl = usize::from(header[0] & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN {
        return Parsed::Malformed;
    }
    if u16::from_be_bytes([header[6], header[7]]) & IPV4_FRAG_MASK != 0 {
        return Parsed::Other;
    }
    if header[9] != IPPROTO_UDP {
        return Parsed::Other;
    }
    let dst = [header[16], header[17], header[18], header[19]];
    // ihl is at most 60, so the UDP offset stays bounded for the verifier.
    let Some(port_be) = udp_dst_port(ctx, l3 + ihl) else {
        return Parsed::Malformed;
    };
    let mut key = EndpointKey::ipv4(dst, 0);
    key.port_be = port_be;
    Parsed::Udp(key)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(header) = ptr_at::<[u8; IPV6_HLEN]>(ctx, l3) else {
        return Parsed::Malformed;
    };
    // SAFETY: ptr_at checked that the 40 bytes lie inside the packet.
    let header = unsafe { &*header };
    if header[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    // Extension headers (and everything but UDP) go to the kernel.
    if header[6] != IPPROTO_UDP {
        return Parsed::Other;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&header[24..40]);
    let Some(port_be) = udp_dst_port(ctx, l3 + IPV6_HLEN) else {
        return Parsed::Malformed;
    };
    let mut key = EndpointKey::ipv6(dst, 0);
    key.port_be = port_be;
    Parsed::Udp(key)
}

/// The UDP destination port exactly as on the wire, if the whole UDP header is present.
#[inline(always)]
fn udp_dst_port(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let header = ptr_at::<[u8; UDP_HLEN]>(ctx, offset)?;
    // SAFETY: ptr_at checked that the 8 bytes lie inside the packet.
    let header = unsafe { &*header };
    Some(u16::from_ne_bytes([header[2], header[3]]))
}

#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let bytes = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: ptr_at checked that both bytes lie inside the packet.
    let bytes = unsafe { *bytes };
    Some(u16::from_be_bytes(bytes))
}

/// A pointer to a `T` at `offset` into the packet, if all of it lies before the end. The
/// comparison against data_end is what lets the verifier accept the access.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn count(counter: Counter, len: u64) {
    for (kind, add) in [(CounterKind::Packets, 1), (CounterKind::Bytes, len)] {
        if let Some(ptr) = COUNTERS.get_ptr_mut(slot(counter, kind)) {
            // Per-CPU slot: no other CPU writes it, so a plain add is race-free.
            unsafe { *ptr += add };
        }
    }
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
