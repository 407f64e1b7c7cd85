//! gatewan's network-namespace test bed.
//!
//! Every network test (and `cargo xtask lab`) builds its topology here: network namespaces,
//! veth pairs (multi-queue when asked), addresses, routes and helper processes running inside
//! the namespaces. Names are unique per test run, so tests running at once never collide, and
//! everything is torn down when the [`Testbed`] is dropped, which includes unwinding from a
//! failed assertion. Helper processes also die with the test process if it is killed outright
//! (`PR_SET_PDEATHSIG`), and namespaces left behind by a killed run are reaped by the next one.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

pub mod config;
pub mod flows;
pub mod frr;
pub mod impair;
pub mod lab;
mod wireguard_go;
pub use wireguard_go::{pubkey, WgKeys, WgPeer, WireguardGo};

/// Every namespace this crate creates starts with this, followed by the creating PID.
pub const NETNS_PREFIX: &str = "gwtb-";
const NETNS_DIR: &str = "/var/run/netns";

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Error)]
pub enum TestbedError {
    #[error("{0}")]
    Unmet(#[from] Unmet),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` could not start")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("entering network namespace {name}")]
    Setns {
        name: String,
        source: std::io::Error,
    },
    #[error("test bed I/O")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

/// A requirement a test has of the machine it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Root (CAP_NET_ADMIN, CAP_SYS_ADMIN for namespaces, CAP_BPF for XDP).
    Root,
    /// A program on PATH, e.g. a Debian peer such as `gobgpd` or `serf`.
    Tool(&'static str),
}

/// A requirement that is not met, with the reason.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("this test needs {need}, which this machine lacks; `cargo xtask test` skips such tests with the reason where they cannot run")]
pub struct Unmet {
    pub need: String,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Root => f.write_str("root (network namespaces, veth, XDP)"),
            Need::Tool(tool) => write!(f, "`{tool}` on PATH (run `cargo xtask setup`)"),
        }
    }
}

impl Need {
    /// Whether this machine meets the need.
    pub fn check(self) -> Result<(), Unmet> {
        let met = match self {
            // SAFETY: geteuid has no preconditions.
            Need::Root => (unsafe { libc::geteuid() }) == 0,
            Need::Tool(tool) => on_path(tool),
        };
        if met {
            Ok(())
        } else {
            Err(Unmet {
                need: self.to_string(),
            })
        }
    }
}

/// Panics with the reason when a need is unmet: a test that cannot run must fail loudly, never
/// pass silently. `cargo xtask test` does not start such tests and reports them as skipped.
pub fn require(needs: &[Need]) {
    for need in needs {
        if let Err(unmet) = need.check() {
            panic!("{unmet}");
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// One test's topology. Dropping it stops its processes and deletes its namespaces (and with
/// them every veth inside) and its scratch directory.
pub struct Testbed {
    run: String,
    namespaces: Vec<Netns>,
    children: Vec<Spawned>,
    next_if: u32,
    dir: PathBuf,
}

/// A network namespace of a test bed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

/// One end of a veth pair, inside its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub netns: Netns,
    pub name: String,
}

/// A helper process started inside a namespace.
pub struct Spawned {
    child: Child,
    label: String,
    log: PathBuf,
}

/// Identifies a helper process of a [`Testbed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId(pub u32);

impl Testbed {
    /// A new, empty test bed. Needs root; reaps namespaces left by test runs that were killed.
    pub fn new() -> Result<Self> {
        Need::Root.check()?;
        Need::Tool("ip").check()?;
        reap_stale_namespaces();
        let pid = std::process::id();
        let seq = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let run = format!("{pid:x}{seq:x}");
        let dir = std::env::temp_dir().join(format!("{NETNS_PREFIX}{run}"));
        fs::create_dir_all(&dir)?;
        Ok(Testbed {
            run,
            namespaces: Vec::new(),
            children: Vec::new(),
            next_if: 0,
            dir,
        })
    }

    /// The unique id of this test bed, part of every name it makes.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// A scratch directory for configuration files, sockets and logs, removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a namespace (loopback up) named after `role` and this run.
    pub fn add_netns(&mut self, role: &str) -> Result<Netns> {
        let name = format!("{NETNS_PREFIX}{}-{}-{role}", std::process::id(), self.run);
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Netns { name };
        self.namespaces.push(netns.clone());
        netns.ip(["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// An interface name unique to this run (15 bytes at most). Use it for anything that lands
    /// in a shared place, such as wireguard-go's /var/run/wireguard/<ifname>.sock.
    pub fn unique_ifname(&mut self, tag: char) -> String {
        self.next_if += 1;
        format!("g{}{tag}{:x}", self.run, self.next_if)
    }

    /// A veth pair between `a` and `b`, both ends up, with `queues` rx and tx queues each.
    pub fn add_veth(&mut self, a: &Netns, b: &Netns, queues: u32) -> Result<(Link, Link)> {
        let (name_a, name_b) = (self.unique_ifname('a'), self.unique_ifname('b'));
        let queues = queues.max(1).to_string();
        run_checked(Command::new("ip").args([
            "link",
            "add",
            &name_a,
            "netns",
            &a.name,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            &name_b,
            "netns",
            &b.name,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
        ]))?;
        let link_a = Link {
            netns: a.clone(),
            name: name_a,
        };
        let link_b = Link {
            netns: b.clone(),
            name: name_b,
        };
        link_a.up()?;
        link_b.up()?;
        Ok((link_a, link_b))
    }

    /// Starts `program args...` inside `netns`, output to a log file in [`Testbed::dir`].
    pub fn spawn<I, S>(&mut self, netns: &Netns, program: &str, args: I) -> Result<ProcessId>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let base = Path::new(program)
            .file_name()
            .map_or(program.into(), |b| b.to_string_lossy());
        let label = format!("{}-{base}", self.children.len());
        let log = self.dir.join(format!("{label}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns.name, program]).args(args);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| TestbedError::Spawn {
            command: program.into(),
            source,
        })?;
        let id = ProcessId(child.id());
        self.children.push(Spawned { child, label, log });
        Ok(id)
    }

    /// [`Testbed::spawn`], then waits (30 s at most) for `ready` to exist, such as the
    /// program's control socket; an error with its log if it exits or never gets there.
    pub fn spawn_until_exists(
        &mut self,
        netns: &Netns,
        program: &str,
        args: &[&str],
        ready: &Path,
    ) -> Result<ProcessId> {
        let process = self.spawn(netns, program, args)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if !self.is_running(process) || std::time::Instant::now() > deadline {
                return Err(TestbedError::Command {
                    command: format!("{program} {}", args.join(" ")),
                    status: "did not come up".into(),
                    stderr: self.log(process),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(process)
    }

    /// Whether a helper process is still running.
    pub fn is_running(&mut self, id: ProcessId) -> bool {
        self.children
            .iter_mut()
            .find(|s| s.child.id() == id.0)
            .is_some_and(|s| matches!(s.child.try_wait(), Ok(None)))
    }

    /// Stops a helper process (SIGTERM, then SIGKILL after `grace`) and reaps it.
    pub fn stop(&mut self, id: ProcessId, grace: Duration) {
        if let Some(pos) = self.children.iter().position(|s| s.child.id() == id.0) {
            let mut spawned = self.children.remove(pos);
            stop_child(&mut spawned.child, grace);
        }
    }

    /// Kills a helper process at once with SIGKILL, as a crash would.
    pub fn kill(&mut self, id: ProcessId) {
        self.stop(id, Duration::ZERO);
    }

    /// What a helper process has written so far.
    pub fn log(&self, id: ProcessId) -> String {
        self.children
            .iter()
            .find(|s| s.child.id() == id.0)
            .and_then(|s| fs::read_to_string(&s.log).ok())
            .unwrap_or_default()
    }

    /// Names of the namespaces this test bed made, for tests of the test bed itself.
    pub fn netns_names(&self) -> Vec<String> {
        self.namespaces.iter().map(|n| n.name.clone()).collect()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let failing = thread::panicking();
        for spawned in &mut self.children {
            stop_child(&mut spawned.child, Duration::from_secs(2));
            if failing {
                // The helper's own words are usually what explains a failed test.
                let log = fs::read_to_string(&spawned.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!("--- {} (last lines) ---", spawned.label);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for netns in &self.namespaces {
            if let Err(e) = run_checked(Command::new("ip").args(["netns", "del", &netns.name])) {
                eprintln!("test bed: could not delete {}: {e}", netns.name);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if !grace.is_zero() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <netns> args...`.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs a command inside the namespace to completion; its stdout, or an error with stderr.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_checked(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
        )
    }

    /// Like [`Netns::exec`] but returns the whole output whatever the exit status.
    pub fn output<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .map_err(|source| TestbedError::Spawn {
                command: program.into(),
                source,
            })
    }

    /// Sets a sysctl inside the namespace, e.g. `net.ipv4.ip_forward`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", ["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// A kernel VXLAN device as a leaf or a gateway in front of a tunnel has one: `name` with
    /// `vni`, local VTEP `local`, UDP 4789, no learning (remote VTEPs come from
    /// [`Netns::vxlan_remote`], as an EVPN RT5 route installs them), MAC `mac`, up.
    pub fn add_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: &str,
        mac: &str,
        mtu: Option<u32>,
    ) -> Result<()> {
        let vni = vni.to_string();
        self.ip([
            "link",
            "add",
            name,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            local,
            "dstport",
            "4789",
            "nolearning",
        ])?;
        let mtu = mtu.map(|m| m.to_string());
        let mut set = vec!["link", "set", name, "address", mac];
        if let Some(mtu) = &mtu {
            set.extend(["mtu", mtu.as_str()]);
        }
        set.push("up");
        self.ip(set).map(drop)
    }

    /// A remote VTEP behind VXLAN device `dev`: the router MAC `mac` of the VTEP at `vtep` as a
    /// permanent neighbour, and the forwarding entry sending that MAC to it.
    pub fn vxlan_remote(&self, dev: &str, vtep: &str, mac: &str) -> Result<()> {
        self.ip([
            "neigh",
            "add",
            vtep,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        self.exec("bridge", ["fdb", "append", mac, "dev", dev, "dst", vtep])
            .map(drop)
    }

    /// Adds a route, e.g. `route("10.2.0.0/16", "via 10.0.0.2")`.
    pub fn route(&self, prefix: &str, how: &str) -> Result<()> {
        let mut args = vec!["route", "add", prefix];
        args.extend(how.split_whitespace());
        self.ip(args).map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace: sockets and netlink handles it
    /// creates belong to the namespace (and stay there when moved to another thread).
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        thread::scope(|scope| {
            let handle = scope.spawn(|| -> Result<R> {
                self.enter_current_thread()?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into this namespace for good. Use on a thread you own.
    pub fn enter_current_thread(&self) -> Result<()> {
        let setns_err = |source| TestbedError::Setns {
            name: self.name.clone(),
            source,
        };
        let file = File::open(Path::new(NETNS_DIR).join(&self.name)).map_err(setns_err)?;
        // SAFETY: setns on a valid namespace fd only changes the calling thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(setns_err(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Whether the namespace still exists.
    pub fn exists(&self) -> bool {
        netns_exists(&self.name)
    }
}

/// Whether a named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

impl Link {
    pub fn up(&self) -> Result<()> {
        self.netns.ip(["link", "set", &self.name, "up"]).map(drop)
    }

    /// Adds an address such as `10.0.0.1/30` or `fd00::1/64` (IPv6 without duplicate detection).
    pub fn add_addr(&self, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", &self.name];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.netns.ip(args).map(drop)
    }

    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        self.netns
            .ip(["link", "set", &self.name, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> Result<String> {
        let path = format!("/sys/class/net/{}/address", self.name);
        Ok(self.netns.exec("cat", [path])?.trim().to_owned())
    }

    /// A permanent neighbour entry, so no ARP or ND crosses the link for `addr`.
    pub fn add_neighbor(&self, addr: &str, mac: &str) -> Result<()> {
        self.netns
            .ip([
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                &self.name,
                "nud",
                "permanent",
            ])
            .map(drop)
    }
}

pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| TestbedError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TestbedError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Deletes namespaces whose creating process (the PID in their name) no longer exists: what a
/// test run killed by SIGKILL leaves behind. How many it deleted.
pub fn reap_stale_namespaces() -> usize {
    let mut reaped = 0;
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && Command::new("ip")
                .args(["netns", "del", &name])
                .output()
                .is_ok_and(|o| o.status.success())
        {
            reaped += 1;
        }
    }
    reaped
}
