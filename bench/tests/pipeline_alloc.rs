//! The forwarding path allocates nothing per packet in steady state: fabric -> route ->
//! WireGuard encrypt on one gateway, decrypt -> route -> VXLAN on the other, with a route-table
//! load per batch, counted by a global allocator that only counts on this test's thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use gatewan_dataplane::fixture::{self, BUF};
use gatewan_dataplane::route::RouteHandle;

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
    // The workers' view of the tables, swapped in RCU-style; loaded once per batch below.
    let handle = RouteHandle::new(fixture::tables_a());
    let mut reader = handle.reader();
    let template = fixture::vxlan_payload(1420);
    let mut payload = template.clone();
    let (mut tx, mut out) = (vec![0u8; BUF], vec![0u8; BUF]);

    let mut run = |pair: &mut fixture::Pair, packets: usize| {
        for batch in 0..packets / 32 {
            let tables = reader.load();
            assert!(
                tables.remote("10.2.0.9".parse().expect("ip")).is_some(),
                "batch {batch}"
            );
            for _ in 0..32 {
                payload.copy_from_slice(&template);
                let n = fixture::fabric_to_transit(pair, &mut payload, &mut tx)
                    .expect("fabric -> transit");
                let m = fixture::transit_to_fabric(pair, &mut tx[..n], &mut out)
                    .expect("transit -> fabric");
                assert_eq!(m, template.len(), "the same packet came out on B's side");
            }
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
