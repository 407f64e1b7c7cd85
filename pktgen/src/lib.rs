//! gatewan's traffic generator and sink. See docs/pktgen.md.
//!
//! The generator sends fabric traffic as a datacenter leaf would: VXLAN to the gateway's VTEP,
//! inner Ethernet to its router MAC, inner IPv4/IPv6 UDP or TCP-shaped flows, every payload
//! starting with a [`payload::PayloadHeader`] (flow, sequence, send time). The sink plays the
//! far leaf: it validates what comes out of the far gateway and measures loss, reordering,
//! duplicates and latency per flow.

pub mod clock;
pub mod flows;
pub mod gen;
pub mod packet;
pub mod payload;
pub mod rate;
pub mod sink;
pub mod spec;
pub mod tcp;
pub mod tx;
pub mod validate;
pub mod xsk;

pub use clock::{CpuTime, CpuUsage};
pub use gen::{GenConfig, GenError, GenReport, Generator, Limits};
pub use packet::{Encap, FlowPacket, OuterSpec, PacketBuilder};
pub use sink::{Sink, SinkConfig, SinkError, SinkHandle, SinkMode, SinkReport};
pub use spec::{InnerProto, TrafficSpec};
pub use tx::{TxPort, UdpTx};
pub use validate::{Expect, Invalid};
pub use xsk::{XskTx, XskTxError};
