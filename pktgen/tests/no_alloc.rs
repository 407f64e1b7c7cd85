//! The per-packet work of both sides allocates nothing: restamping a packet on the generator,
//! and validating, accounting and recording latency on the sink. A counting global allocator
//! watches the loop, on the test's own thread only (the harness's threads allocate when they
//! please).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use gatewan_pktgen::flows::FlowState;
use gatewan_pktgen::validate::{check_vxlan, Expect};
use gatewan_pktgen::{Encap, InnerProto, PacketBuilder, TrafficSpec};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised: reading it from the allocator never allocates.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if WATCHED.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn per_packet_paths_do_not_allocate() {
    for (v6, proto) in [(false, InnerProto::Udp), (true, InnerProto::Tcp)] {
        let (s, d) = if v6 {
            ("fd00:1::/64", "fd00:2::/64")
        } else {
            ("10.1.0.0/16", "10.2.0.0/16")
        };
        let spec = TrafficSpec {
            src_prefix: s.parse().expect("prefix"),
            dst_prefix: d.parse().expect("prefix"),
            flows: 4,
            size: 1420,
            proto,
            ..TrafficSpec::default()
        };
        let builder = PacketBuilder::new(spec.clone(), Encap::Vxlan).expect("builder");
        let mut packets: Vec<_> = (0..4).map(|f| builder.build(f)).collect();
        let mut flows = vec![FlowState::default(); 4];
        let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("histogram");
        let expect = Expect {
            vni: Some(spec.vni),
            inner_dst_mac: Some(spec.router_mac),
            flows: 4,
        };
        let before = ALLOCS.load(Ordering::Relaxed);
        WATCHED.with(|w| w.set(true));
        let mut valid = 0u64;
        for seq in 0..10_000u64 {
            for p in &mut packets {
                p.stamp(seq, 1_000 + seq);
                if let Ok(v) = check_vxlan(p.bytes(), &expect) {
                    if let Some(f) = flows.get_mut(v.header.flow as usize) {
                        f.record(v.header.seq);
                        f.record_latency(5 + seq);
                        hist.saturating_record(5 + seq);
                        valid += 1;
                    }
                }
            }
        }
        WATCHED.with(|w| w.set(false));
        let after = ALLOCS.load(Ordering::Relaxed);
        assert_eq!(valid, 40_000, "every restamped packet validates");
        assert_eq!(after - before, 0, "allocations on the per-packet path");
    }
}
