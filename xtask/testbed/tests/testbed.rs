//! Tests of the test bed itself. Names starting with `netns_` need root (see xtask's test
//! command, which skips them with the reason where they cannot run).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gatewan_testbed::{netns_exists, require, Need, Testbed};

const MARKER_ENV: &str = "GATEWAN_TESTBED_MARKER";

fn two_hosts(tb: &mut Testbed, queues: u32) -> (gatewan_testbed::Link, gatewan_testbed::Link) {
    let a = tb.add_netns("a").expect("netns a");
    let b = tb.add_netns("b").expect("netns b");
    let (la, lb) = tb.add_veth(&a, &b, queues).expect("veth");
    la.add_addr("10.99.0.1/30").expect("addr a");
    lb.add_addr("10.99.0.2/30").expect("addr b");
    (la, lb)
}

#[test]
fn netns_veth_carries_traffic_and_has_the_queues_asked_for() {
    require(&[Need::Root]);
    let mut tb = Testbed::new().expect("test bed");
    let (la, lb) = two_hosts(&mut tb, 2);
    la.netns
        .exec("ping", ["-c", "1", "-W", "5", "10.99.0.2"])
        .expect("ping across the veth");
    let queues = lb
        .netns
        .exec("ls", [format!("/sys/class/net/{}/queues", lb.name)])
        .expect("queues");
    assert!(
        queues.contains("rx-1") && queues.contains("tx-1"),
        "two queues expected, got {queues}"
    );
}

#[test]
fn netns_drop_stops_processes_and_deletes_namespaces() {
    require(&[Need::Root]);
    let mut tb = Testbed::new().expect("test bed");
    let a = tb.add_netns("a").expect("netns");
    let pid = tb.spawn(&a, "sleep", ["600"]).expect("spawn");
    assert!(tb.is_running(pid));
    let names = tb.netns_names();
    let dir = tb.dir().to_owned();
    drop(tb);
    assert!(
        !Path::new(&format!("/proc/{}", pid.0)).exists(),
        "helper process survived"
    );
    assert!(
        names.iter().all(|n| !netns_exists(n)),
        "namespace survived: {names:?}"
    );
    assert!(!dir.exists(), "scratch directory survived");
}

/// Runs [`netns_failing_test_helper`] as a real, failing test in a child process, then checks
/// that what it built is gone.
#[test]
fn netns_teardown_after_a_failing_test() {
    require(&[Need::Root]);
    let marker = std::env::temp_dir().join(format!("gwtb-marker-{}", std::process::id()));
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            "--exact",
            "netns_failing_test_helper",
            "--ignored",
            "--nocapture",
        ])
        .env(MARKER_ENV, &marker)
        .output()
        .expect("run the failing helper test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the helper test was meant to fail");
    assert!(
        stderr.contains("deliberate failure"),
        "the helper failed for another reason: {stderr}"
    );
    let written = std::fs::read_to_string(&marker).expect("helper wrote its marker");
    let _ = std::fs::remove_file(&marker);
    let mut lines = written.lines();
    let pid = lines.next().expect("pid line");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "helper process {pid} survived the failed test"
    );
    let names: Vec<&str> = lines.collect();
    assert_eq!(names.len(), 2);
    for name in names {
        assert!(
            !netns_exists(name),
            "namespace {name} survived the failed test"
        );
    }
}

#[test]
#[ignore = "helper of netns_teardown_after_a_failing_test, fails on purpose"]
fn netns_failing_test_helper() {
    let Some(marker) = std::env::var_os(MARKER_ENV) else {
        return;
    };
    let mut tb = Testbed::new().expect("test bed");
    let (la, _lb) = two_hosts(&mut tb, 1);
    let pid = tb.spawn(&la.netns, "sleep", ["600"]).expect("spawn");
    let mut written = format!("{}\n", pid.0);
    for name in tb.netns_names() {
        written.push_str(&name);
        written.push('\n');
    }
    std::fs::write(marker, written).expect("write marker");
    panic!("deliberate failure, the test bed must still clean up");
}

#[test]
fn netns_test_beds_running_at_once_do_not_collide() {
    require(&[Need::Root]);
    // Same roles, same addresses, same interface tags, at the same time.
    let run = || {
        let mut tb = Testbed::new().expect("test bed");
        let (la, lb) = two_hosts(&mut tb, 1);
        la.netns
            .exec("ping", ["-c", "3", "-i", "0.05", "-W", "5", "10.99.0.2"])
            .expect("ping");
        (tb.netns_names(), la.name, lb.name, tb.unique_ifname('w'))
    };
    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(run);
        let two = s.spawn(run);
        (one.join().expect("first"), two.join().expect("second"))
    });
    for name in one
        .0
        .iter()
        .chain(&one.1.split(' ').map(String::from).collect::<Vec<_>>())
    {
        assert!(!two.0.contains(name), "namespace {name} used twice");
    }
    assert_ne!(one.1, two.1);
    assert_ne!(one.2, two.2);
    assert_ne!(
        one.3, two.3,
        "unique interface names (wireguard-go sockets) collided"
    );
    assert!(one.3.len() <= 15 && one.1.len() <= 15);
}

#[test]
fn netns_spawned_process_runs_inside_the_namespace() {
    require(&[Need::Root]);
    let mut tb = Testbed::new().expect("test bed");
    let (la, lb) = two_hosts(&mut tb, 1);
    let listener = tb
        .spawn(&lb.netns, "sh", ["-c", "ip -br addr; sleep 600"])
        .expect("spawn");
    let seen = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            tb.log(listener)
        })
        .find(|log| log.contains("10.99.0.2"));
    assert!(
        seen.is_some(),
        "the helper did not see its namespace's address: {}",
        tb.log(listener)
    );
    // And a thread entered into the namespace sees the same interfaces.
    // (sysfs follows the mount, not the thread, so ask the kernel by name.)
    let name = std::ffi::CString::new(la.name.clone()).expect("no NUL");
    // SAFETY: a valid C string for the duration of the call.
    let index = la
        .netns
        .run(move || unsafe { libc::if_nametoindex(name.as_ptr()) })
        .expect("run");
    assert_ne!(
        index, 0,
        "the entered thread does not see the namespace's veth"
    );
    // SAFETY: as above.
    let outside = unsafe {
        libc::if_nametoindex(
            std::ffi::CString::new(la.name.clone())
                .expect("no NUL")
                .as_ptr(),
        )
    };
    assert_eq!(outside, 0, "the veth leaked into the test's own namespace");
    tb.kill(listener);
    assert!(!tb.is_running(listener));
}

#[test]
fn unmet_needs_are_reported_with_the_reason() {
    let unmet = Need::Tool("gatewan-no-such-tool")
        .check()
        .expect_err("not on PATH");
    assert!(unmet.to_string().contains("gatewan-no-such-tool"));
    assert!(Need::Tool("sh").check().is_ok());
    let caught = std::panic::catch_unwind(|| require(&[Need::Tool("gatewan-no-such-tool")]));
    assert!(
        caught.is_err(),
        "require must fail loudly, never pass silently"
    );
}

/// The wireguard-go harness itself: two Debian peers reach each other through their tunnel.
#[test]
fn wggo_two_wireguard_go_peers_ping_through_their_tunnel() {
    require(&[Need::Root, Need::Tool("wireguard-go"), Need::Tool("wg")]);
    let mut tb = Testbed::new().expect("test bed");
    let (la, lb) = two_hosts(&mut tb, 1);
    let a = tb
        .add_wireguard_go(&la.netns, 51820, &["10.77.0.0/31", "fd77::/127"])
        .expect("wg a");
    let b = tb
        .add_wireguard_go(&lb.netns, 51821, &["10.77.0.1/31", "fd77::1/127"])
        .expect("wg b");
    assert_ne!(a.ifname, b.ifname, "distinct control sockets");
    let allowed_a = ["10.77.0.0/32", "fd77::/128"];
    let allowed_b = ["10.77.0.1/32", "fd77::1/128"];
    a.set_peer(&gatewan_testbed::WgPeer {
        public_key: &b.keys.public,
        endpoint: Some("10.99.0.2:51821".parse().expect("addr")),
        allowed_ips: &allowed_b,
        ..Default::default()
    })
    .expect("peer b");
    b.set_peer(&gatewan_testbed::WgPeer {
        public_key: &a.keys.public,
        allowed_ips: &allowed_a,
        ..Default::default()
    })
    .expect("peer a");
    la.netns
        .exec("ping", ["-c", "2", "-W", "5", "10.77.0.1"])
        .expect("ping v4 through wireguard-go");
    la.netns
        .exec("ping", ["-c", "2", "-W", "5", "fd77::1"])
        .expect("ping v6 through wireguard-go");
    assert!(a.latest_handshake(&b.keys.public).expect("dump") > 0);
    assert!(b.latest_handshake(&a.keys.public).expect("dump") > 0);
    let socket = format!("/var/run/wireguard/{}.sock", a.ifname);
    assert!(std::path::Path::new(&socket).exists());
    drop(tb);
    assert!(
        !std::path::Path::new(&socket).exists(),
        "wireguard-go's socket outlived the test bed"
    );
}
