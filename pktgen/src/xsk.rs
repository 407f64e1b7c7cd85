//! The AF_XDP transmit port: whole Ethernet frames written into a UMEM and put on one queue's
//! TX ring, with no socket layer and no route lookup per packet. It reuses the dataplane's
//! AF_XDP layer (`gatewan_dataplane::afxdp`), transmit only: the interface needs no XDP
//! program for this (one is only needed to receive).

use std::io;
use std::net::IpAddr;

use gatewan_dataplane::afxdp::{Action, AfXdpError, PortId, XskConfig, XskWorker};
use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_dataplane::{ifname, neigh};

use crate::packet::{Encap, OuterSpec};
use crate::tx::TxPort;

/// Why an AF_XDP port cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum XskTxError {
    #[error("AF_XDP on {interface} queue {queue}")]
    Socket {
        interface: String,
        queue: u32,
        #[source]
        source: AfXdpError,
    },
    #[error("the MAC address of {interface}")]
    Mac {
        interface: String,
        #[source]
        source: ifname::IfNameError,
    },
    #[error("no next hop MAC for {dst} on {interface} in the kernel's tables; give --dst-mac")]
    NoNextHop { interface: String, dst: IpAddr },
}

/// One queue of one interface, owned by one generator thread.
pub struct XskTx {
    xsk: XskWorker,
    port: PortId,
    outer: OuterSpec,
}

impl XskTx {
    /// Opens queue `queue` of `interface` for frames with these outer headers.
    pub fn open(interface: &str, queue: u32, outer: OuterSpec) -> Result<Self, XskTxError> {
        let socket = |source| XskTxError::Socket {
            interface: interface.to_owned(),
            queue,
            source,
        };
        let config = XskConfig {
            ring_size: 2048,
            // The fill ring takes one ring's worth (this port receives nothing); the rest is
            // for frames in flight on the TX ring.
            frames: 4096,
            ..XskConfig::default()
        };
        let mut xsk = XskWorker::new(config).map_err(socket)?;
        let port = xsk.add_port(interface, queue).map_err(socket)?;
        Ok(Self { xsk, port, outer })
    }

    /// The outer headers for frames from `interface`'s address `src` to the VTEP at `dst`:
    /// the source MAC is the interface's, the destination MAC `dst_mac` or else the one the
    /// kernel's route and neighbour tables give for `dst` from `src` out of that interface.
    pub fn outer(
        interface: &str,
        src: IpAddr,
        dst: std::net::SocketAddr,
        dst_mac: Option<MacAddr>,
    ) -> Result<OuterSpec, XskTxError> {
        let src_mac = ifname::mac(interface).map_err(|source| XskTxError::Mac {
            interface: interface.to_owned(),
            source,
        })?;
        let dst_mac = match dst_mac {
            Some(mac) => mac,
            None => neigh::resolve(&[neigh::Question {
                interface,
                src: Some(src),
                dst: dst.ip(),
            }])
            .first()
            .map(|(_, mac)| *mac)
            .ok_or_else(|| XskTxError::NoNextHop {
                interface: interface.to_owned(),
                dst: dst.ip(),
            })?,
        };
        Ok(OuterSpec {
            src_mac: MacAddr(src_mac),
            dst_mac,
            src_ip: src,
            dst_ip: dst.ip(),
            dst_port: dst.port(),
        })
    }
}

impl TxPort for XskTx {
    fn encap(&self) -> Encap {
        Encap::Frame(self.outer)
    }

    fn lanes(&self) -> usize {
        1
    }

    fn send(&mut self, lane: usize, pkts: &[&[u8]]) -> io::Result<usize> {
        if lane != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such lane"));
        }
        self.xsk.reap_completed();
        let port = self.port;
        let mut sent = 0;
        for p in pkts {
            let mut fits = true;
            let taken = self.xsk.send(|frame| {
                if frame.set_len(p.len()).is_err() {
                    fits = false;
                    return Action::Drop;
                }
                frame.data_mut().copy_from_slice(p);
                Action::Transmit(port)
            });
            if !taken {
                // Every frame is in flight: send what is staged, the next call reaps.
                break;
            }
            if !fits {
                if sent == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a frame larger than the UMEM's frames",
                    ));
                }
                break;
            }
            sent += 1;
        }
        self.xsk.flush();
        Ok(sent)
    }

    fn wire_len(&self, len: usize) -> usize {
        len
    }
}
