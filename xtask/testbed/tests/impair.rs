//! The impairment component on a real path: `a -- (impaired) -- router -- b`, each property
//! measured with ping or iperf3 and changed live on the same link.

use std::time::Duration;

use gatewan_testbed::impair::{ImpairedLink, Impairment};
use gatewan_testbed::{require, Need, Netns, Testbed};

struct Path {
    _tb: Testbed,
    a: Netns,
    b: Netns,
    link: ImpairedLink,
}

fn path() -> Path {
    require(&[
        Need::Root,
        Need::Tool("nft"),
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ethtool"),
    ]);
    let mut tb = Testbed::new().expect("test bed");
    let (a, router, b) = (
        tb.add_netns("a").expect("a"),
        tb.add_netns("router").expect("router"),
        tb.add_netns("b").expect("b"),
    );
    router
        .sysctl("net.ipv4.ip_forward", "1")
        .expect("forwarding");
    let link = ImpairedLink::build(&mut tb, &a, &router).expect("impaired link");
    link.inner.add_addr("10.77.1.1/24").expect("a address");
    link.edge.add_addr("10.77.1.2/24").expect("edge address");
    let (r_b, b_r) = tb.add_veth(&router, &b, 1).expect("router to b");
    r_b.add_addr("10.77.2.2/24").expect("router address");
    b_r.add_addr("10.77.2.1/24").expect("b address");
    a.route("10.77.2.0/24", "via 10.77.1.2").expect("a route");
    b.route("10.77.1.0/24", "via 10.77.2.2").expect("b route");
    Path {
        _tb: tb,
        a,
        b,
        link,
    }
}

/// `ping` from a to b: (loss %, min and average RTT in ms).
fn ping(p: &Path, count: u32, interval: &str) -> (f64, f64, f64) {
    let out =
        p.a.output(
            "ping",
            [
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                "10.77.2.1",
            ],
        )
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let loss = text
        .split(',')
        .find(|s| s.contains("packet loss"))
        .and_then(|s| s.trim().split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no loss in {text}"));
    let rtt: Vec<f64> = text
        .lines()
        .find(|l| l.starts_with("rtt"))
        .and_then(|l| l.split('=').nth(1))
        .map(|v| {
            v.trim()
                .trim_end_matches(" ms")
                .split('/')
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        loss,
        rtt.first().copied().unwrap_or(f64::NAN),
        rtt.get(1).copied().unwrap_or(f64::NAN),
    )
}

#[test]
fn blackhole_loss_latency_and_rate_cap_change_live_on_one_link() {
    let p = path();
    let (loss, _, clean_avg) = ping(&p, 20, "0.02");
    println!("clean: {loss}% loss, {clean_avg:.2} ms average round trip");
    assert_eq!(loss, 0.0);

    p.link
        .set(&Impairment {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(5),
            ..Impairment::default()
        })
        .expect("latency");
    let (loss, min, avg) = ping(&p, 20, "0.05");
    println!(
        "+40 ms ±5 ms each way: {loss}% loss, round trip min {min:.1} ms, average {avg:.1} ms"
    );
    assert_eq!(loss, 0.0);
    assert!(min >= 70.0, "min {min}");
    assert!(avg <= 90.0 + 20.0 + clean_avg, "avg {avg}");
    let (to_edge, to_inner) = p.link.carried();
    assert!(to_edge >= 20 && to_inner >= 20, "{to_edge} {to_inner}");

    p.link
        .set(&Impairment {
            loss_pct: 30.0,
            ..Impairment::default()
        })
        .expect("loss");
    let (loss, _, _) = ping(&p, 300, "0.005");
    // Each way 30%: a round trip survives with 0.7 x 0.7 = 49%.
    println!("30% loss each way: {loss}% of the pings lost (51% expected)");
    assert!((38.0..=64.0).contains(&loss), "{loss}");

    p.link
        .set(&Impairment {
            blackhole: true,
            ..Impairment::default()
        })
        .expect("blackhole");
    let (loss, _, _) = ping(&p, 5, "0.05");
    println!("blackholed: {loss}% lost");
    assert_eq!(loss, 100.0);
    p.link.set(&Impairment::default()).expect("clean");
    let (loss, _, _) = ping(&p, 10, "0.02");
    assert_eq!(loss, 0.0, "clean again after the blackhole");
    println!("clean again: {loss}% lost");

    p.link
        .set(&Impairment {
            rate_mbit: Some(20),
            ..Impairment::default()
        })
        .expect("rate");
    let mut tb_server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            p.b.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            "10.77.2.1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(300));
    let out =
        p.a.exec(
            "timeout",
            [
                "15",
                "iperf3",
                "-c",
                "10.77.2.1",
                "-u",
                "-b",
                "60M",
                "-t",
                "2",
                "-J",
            ],
        )
        .expect("iperf3");
    let _ = tb_server.wait();
    // UDP: the end summary's rate is what was sent; the server's loss report says what
    // got through.
    let field = |name: &str| {
        out.rsplit(&format!("\"{name}\":"))
            .next()
            .and_then(|s| s.split([',', '\n', '}']).next())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let received = field("packets") - field("lost_packets");
    let bps = received * 1448.0 * 8.0 / 2.0;
    println!(
        "capped at 20 Mbit/s: 60 Mbit/s of UDP sent, {:.1} Mbit/s received ({}% lost)",
        bps / 1e6,
        field("lost_percent")
    );
    assert!((14e6..=22e6).contains(&bps), "{bps}: {}", p.link.qdiscs());
}
