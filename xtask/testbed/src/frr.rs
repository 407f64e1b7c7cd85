//! FRR (Debian's `frr`: zebra and bgpd) in a namespace of a test bed: a datacenter leaf for
//! the tests and the lab. Each instance gets its own run directory (`-N pathspace`, owned by
//! the frr user, removed on drop) and its configuration files in the test bed's directory;
//! the daemons are helper processes of the test bed, stopped with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Netns, Result, Testbed, TestbedError};

/// Where Debian installs FRR's daemons.
pub const FRR_DIR: &str = "/usr/lib/frr";

/// One FRR instance.
pub struct Frr {
    netns: Netns,
    pathspace: String,
    run_dir: PathBuf,
}

impl Drop for Frr {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn chown_frr(path: &Path) -> Result<()> {
    let out = std::process::Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(path)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Other(format!(
            "chown frr {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Frr {
    /// Starts zebra with `zebra_conf`, then, once it answers, bgpd with `bgpd_conf`.
    pub fn start(
        tb: &mut Testbed,
        netns: &Netns,
        zebra_conf: &str,
        bgpd_conf: &str,
    ) -> Result<Frr> {
        for d in ["zebra", "bgpd"] {
            if !Path::new(FRR_DIR).join(d).exists() {
                return Err(TestbedError::Other(format!(
                    "FRR's {d} is not in {FRR_DIR} (run `cargo xtask setup`)"
                )));
            }
        }
        let pathspace = format!("{}{}", netns.name(), tb.run_id());
        let run_dir = PathBuf::from("/var/run/frr").join(&pathspace);
        std::fs::create_dir_all(&run_dir)?;
        chown_frr(&run_dir)?;
        let dir = tb.dir().join(format!("frr-{}", netns.name()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("zebra.conf"), zebra_conf)?;
        std::fs::write(dir.join("bgpd.conf"), bgpd_conf)?;
        chown_frr(&dir)?;
        let frr = Frr {
            netns: netns.clone(),
            pathspace,
            run_dir,
        };
        frr.spawn(tb, "zebra", &dir)?;
        frr.wait_vtysh("show version", "FRRouting", Duration::from_secs(30))?;
        frr.spawn(tb, "bgpd", &dir)?;
        frr.wait_vtysh("show bgp summary", "BGP", Duration::from_secs(30))?;
        Ok(frr)
    }

    fn spawn(&self, tb: &mut Testbed, daemon: &str, dir: &Path) -> Result<()> {
        let conf = dir.join(format!("{daemon}.conf")).display().to_string();
        let program = format!("{FRR_DIR}/{daemon}");
        // Through `env`: the test bed names log files after the program.
        tb.spawn(
            &self.netns,
            "env",
            [
                program.as_str(),
                "-N",
                &self.pathspace,
                "-f",
                &conf,
                "-u",
                "frr",
                "-g",
                "frr",
                "--log",
                "stdout",
            ],
        )?;
        Ok(())
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// `vtysh -c CMD`'s output (empty when vtysh fails).
    pub fn vtysh(&self, cmd: &str) -> String {
        self.netns
            .output("vtysh", ["-N", &self.pathspace, "-c", cmd])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Runs configuration commands (`configure terminal` first).
    pub fn configure(&self, lines: &[&str]) -> String {
        let mut args = vec!["-N", self.pathspace.as_str(), "-c", "configure terminal"];
        for l in lines {
            args.extend(["-c", l]);
        }
        self.netns
            .output("vtysh", args)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Waits until `vtysh -c CMD` shows `want`.
    pub fn wait_vtysh(&self, cmd: &str, want: &str, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = self.vtysh(cmd);
            if out.contains(want) {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(TestbedError::Other(format!(
                    "`{cmd}` did not show {want:?} within {limit:?}; last: {out}"
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// An EVPN leaf's L3VNI devices in `leaf`: a bridge `br<vni>` as the SVI, whose MAC is the
/// router MAC (`svi_mac`), with a VXLAN device `vxlan<vni>` from `vtep` in it (`vxlan_mac`),
/// both at `mtu` and up, and `blackhole` routed nowhere so bgpd can announce it. Checksums
/// are computed in software: gateways forward these frames from userspace, and over veth
/// nothing would complete an offloaded one.
pub fn add_l3vni(
    leaf: &Netns,
    vni: u32,
    vtep: &str,
    svi_mac: &str,
    vxlan_mac: &str,
    mtu: u32,
    blackhole: &str,
) -> Result<()> {
    let (br, vx) = (format!("br{vni}"), format!("vxlan{vni}"));
    let ip = |args: &[&str]| leaf.ip(args).map(drop);
    ip(&["link", "add", &br, "type", "bridge"])?;
    ip(&["link", "set", &br, "address", svi_mac])?;
    leaf.add_vxlan(&vx, vni, vtep, vxlan_mac, Some(mtu))?;
    ip(&["link", "set", &vx, "master", &br])?;
    ip(&["link", "set", &br, "mtu", &mtu.to_string(), "up"])?;
    for dev in [&vx, &br] {
        leaf.exec("ethtool", ["-K", dev.as_str(), "tx", "off"])?;
    }
    ip(&["route", "add", "blackhole", blackhole])
}
