//! gatewan's XDP program. For now it counts every packet and passes it to the kernel; steering
//! VXLAN and WireGuard to AF_XDP sockets builds on these counters.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use gatewan_ebpf_common::{counter_slot, CounterKind, Verdict, COUNTER_SLOTS};

#[map(name = "GW_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[xdp]
pub fn gatewan_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    count(Verdict::Pass, len);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(verdict: Verdict, len: u64) {
    for (kind, add) in [(CounterKind::Packets, 1), (CounterKind::Bytes, len)] {
        if let Some(slot) = COUNTERS.get_ptr_mut(counter_slot(verdict, kind)) {
            // Per-CPU slot: no other CPU writes it, so a plain add is race-free.
            unsafe { *slot += add };
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
