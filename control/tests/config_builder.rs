//! The test bed's typed configurations (`gatewan_testbed::config`) are what gatewan's own
//! parsers accept: every key written, optional ones included, parses (the parsers refuse
//! unknown keys), so the lab, the bench and the tests cannot drift from them.

use std::path::{Path, PathBuf};

use gatewan_control::bgp::config::Config as BgpConfig;
use gatewan_control::controller::daemon::config::ControllerConfig;
use gatewan_control::gateway::config::GatewayConfig;
use gatewan_testbed::config::{self, ToYaml as _};

const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PEER_KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn tls(dir: &Path) -> config::Tls {
    config::Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("m.pem"),
        key: dir.join("m.key"),
    }
}

fn member(dir: &Path) -> config::Member {
    config::Member {
        bind: "172.16.9.1:7946".into(),
        seeds: vec!["172.16.1.1:7946".into()],
        keys: vec!["5K9OtfOm8BAqBgJYX7mMxw==".into()],
        rpc_auth: Some("secret".into()),
        state_dir: dir.join("state"),
        profile: Some("local".into()),
    }
}

/// A gateway with every section and optional key the builder has.
fn gateway(dir: &Path) -> config::Gateway {
    config::Gateway {
        name: "a1".into(),
        datacenter: "dc-a".into(),
        private_key: KEY.into(),
        control_socket: dir.join("a1.sock"),
        probe: Some(config::Probe {
            interval: "100ms".into(),
            window: Some(100),
            timeout: Some("1s".into()),
        }),
        transits: vec![
            config::Transit {
                name: "lumen".into(),
                listen: "172.16.1.1:51820".into(),
                capacity: Some("1Gbps".into()),
            },
            config::Transit {
                name: "telstra".into(),
                listen: "172.16.1.1:51821".into(),
                capacity: None,
            },
        ],
        tunnels: vec![config::Tunnel {
            name: "wan0".into(),
            transit: "lumen".into(),
            peer: "b1".into(),
            peer_datacenter: "dc-b".into(),
            peer_transit: Some("cogent".into()),
            peer_public_key: PEER_KEY.into(),
            preshared_key: Some(PEER_KEY.into()),
            peer_endpoint: Some("172.16.2.1:51820".into()),
            address_v4: Some("10.255.0.0/31".into()),
            peer_address_v4: Some("10.255.0.1".into()),
            address_v6: Some("fd00:255::/127".into()),
            peer_address_v6: Some("fd00:255::1".into()),
            echo_port: Some(7055),
            peer_echo_port: Some(7056),
            networks: vec!["10.20.0.0/16".into()],
        }],
        mesh: Some(config::GatewayMesh {
            id: 1,
            bind: vec![config::Bind {
                transit: "lumen".into(),
                address: "172.16.1.1:7946".into(),
            }],
            seeds: vec!["172.16.2.1:7946".into()],
            keys: vec!["5K9OtfOm8BAqBgJYX7mMxw==".into()],
            rpc_auth: Some("secret".into()),
            state_dir: dir.join("a1-state"),
            profile: Some("local".into()),
            failed_grace: Some("12s".into()),
            pools: config::Pools::lab(),
            echo_port: Some(7055),
        }),
        fabric: Some(config::Fabric {
            vtep: "10.1.1.1".into(),
            router_mac: "02:00:0a:00:00:01".into(),
            vni: 100,
            local_routes: vec![config::LocalRoute {
                prefix: "10.10.0.0/16".into(),
                vtep: "10.1.0.2".into(),
                router_mac: "02:00:0a:00:01:02".into(),
            }],
        }),
        dataplane: Some(config::Dataplane {
            backend: "socket".into(),
            workers: Some(1),
            gso: Some(true),
            busy_poll: Some(false),
        }),
        api: Some(config::Api {
            listen: "172.16.1.1:7443".into(),
            tls: tls(dir),
            repair_hold: Some("20s".into()),
        }),
    }
}

#[test]
fn a_built_gateway_configuration_parses() {
    let dir = PathBuf::from("/nonexistent");
    let g = gateway(&dir);
    let parsed = GatewayConfig::parse(&g.to_yaml(), Path::new("a1.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{}", g.to_yaml()));
    assert_eq!(parsed.name, "a1");
    assert_eq!(parsed.transits.len(), 2);
    assert_eq!(parsed.tunnels.len(), 1);
    assert_eq!(parsed.transits[0].capacity_bps, Some(1_000_000_000));
    assert!(parsed.mesh.is_some() && parsed.api.is_some());
    assert_eq!(parsed.fabric.map(|f| f.local_routes.len()), Some(1));

    // The smallest: no optional section at all.
    let bare = config::Gateway {
        probe: None,
        tunnels: Vec::new(),
        mesh: None,
        fabric: None,
        dataplane: None,
        api: None,
        ..g
    };
    GatewayConfig::parse(&bare.to_yaml(), Path::new("a1.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{}", bare.to_yaml()));
}

#[test]
fn a_built_controller_configuration_parses() {
    let dir = std::env::temp_dir().join(format!("gatewan-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "pairs:\n  default: { capacity: { demand: { margin_pct: 50, min: 10M } } }\n",
    )
    .expect("policy");
    let c = config::Controller {
        name: "ctl-a".into(),
        policy,
        control_socket: dir.join("ctl-a.sock"),
        deadline: Some("900ms".into()),
        snapshot_dir: Some(dir.join("cycles")),
        keep_snapshots: Some(20),
        mesh: member(&dir),
        api: tls(&dir),
    };
    let path = dir.join("ctl-a.yaml");
    c.write(&path, "config_builder.rs").expect("write");
    let parsed = ControllerConfig::load(&path);
    let _ = std::fs::remove_dir_all(&dir);
    let parsed = parsed.unwrap_or_else(|e| panic!("{e}\n{}", c.to_yaml()));
    assert_eq!(parsed.name, "ctl-a");
}

#[test]
fn a_built_bgpctl_configuration_and_frr_leaf_parse() {
    let dir = PathBuf::from("/nonexistent");
    let b = config::Bgpctl {
        local_as: 65100,
        router_id: "10.1.9.1".into(),
        listen: None,
        control_socket: dir.join("bgp.sock"),
        hold_time: Some(9),
        connect_retry: Some(0.5),
        connect_retry_max: Some(2.0),
        peers: vec![config::Peer {
            address: "10.1.9.2".into(),
            remote_as: 65001,
            passive: false,
        }],
        import: Some(config::Import {
            route_targets: vec!["*:100".into()],
        }),
        export: Some(config::Export {
            vni: 100,
            route_targets: vec!["65001:100".into()],
            ..Default::default()
        }),
        sdwan: Some(config::Sdwan {
            name: "bgp-dc-a".into(),
            datacenter: "dc-a".into(),
            refresh: Some("2s".into()),
            mesh: member(&dir),
            api: config::Api {
                listen: "172.16.61.1:7443".into(),
                tls: tls(&dir),
                repair_hold: None,
            },
        }),
    };
    let parsed = BgpConfig::parse(&b.to_yaml()).unwrap_or_else(|e| panic!("{e}\n{}", b.to_yaml()));
    assert_eq!(parsed.local_as, 65100);
    assert_eq!(parsed.peers.len(), 1);
    assert!(parsed.sdwan.is_some());

    let leaf = config::FrrLeaf {
        hostname: "leaf-a".into(),
        asn: 65001,
        router_id: "10.1.0.2".into(),
        vni: 100,
        neighbors: vec![("10.1.9.1".into(), 65100)],
        networks: vec!["10.10.0.0/16".into()],
    };
    let bgpd = leaf.bgpd_conf();
    for line in [
        "router bgp 65001",
        " neighbor 10.1.9.1 remote-as 65100",
        "  network 10.10.0.0/16",
        "  neighbor 10.1.9.1 activate",
        "  advertise-all-vni",
    ] {
        assert!(bgpd.lines().any(|l| l == line), "{line:?} not in\n{bgpd}");
    }
    assert!(leaf.zebra_conf().contains(" vni 100\n"));
}
