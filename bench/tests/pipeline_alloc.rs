//! The forwarding path allocates nothing per packet in steady state: the workers' code
//! (`engine::Worker`) does fabric -> route -> WireGuard encrypt on one gateway, decrypt -> route
//! -> VXLAN on the other, loading route and session tables per packet, counted by a global
//! allocator that only counts on this test's thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use gatewan_dataplane::fixture::{self, BUF};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forwarding_allocates_nothing_per_packet() {
    let mut pair = fixture::pair().expect("an established pair");
    let template = fixture::vxlan_payload(1420);
    let mut buf = vec![0u8; BUF];
    let at = gatewan_dataplane::engine::HEADROOM;

    let mut run = |pair: &mut fixture::Pair, packets: usize| {
        for _ in 0..packets {
            let payload = fixture::receive(&mut buf, &template);
            let datagram =
                fixture::fabric_to_transit(pair, &mut buf, payload).expect("fabric -> transit");
            buf.copy_within(datagram.clone(), at);
            let out = fixture::transit_to_fabric(pair, &mut buf, at..at + datagram.len())
                .expect("transit -> fabric");
            // B's leaf gets the same IP packet, two hops older (one TTL per gateway).
            let (got, sent) = (&buf[out], &template[..]);
            assert_eq!(got.len(), sent.len());
            assert_eq!(got[22 + 8], sent[22 + 8] - 2, "TTL");
            assert!(
                got[22 + 20..] == sent[22 + 20..],
                "UDP header and payload intact"
            );
        }
    };
    run(&mut pair, 256); // warm up
    COUNTING.with(|c| c.set(true));
    run(&mut pair, 10_000);
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations while forwarding 10,000 packets"
    );
}
