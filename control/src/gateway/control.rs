//! The gateway's local control endpoint: a unix stream socket (path from `control_socket` in
//! gateway.yaml). One JSON request line in, one JSON response line out, then the connection
//! closes. `gatewan status` is its client; anything that speaks JSON over a unix socket can
//! use it too (`echo '{"request":"status"}' | socat - UNIX-CONNECT:/run/gatewan/gateway.sock`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::status::TunnelStatus;

/// Longest request line accepted; anything longer is an error, not a memory sink.
const MAX_REQUEST: usize = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Start a new handshake on a tunnel now (a forced rekey).
    Rekey {
        tunnel: String,
    },
    /// The controller's order in force, its epoch and age, and local repair.
    Orders,
}

/// The forwarding side of a running gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// `afxdp` or `socket`.
    pub backend: String,
    /// Forwarding worker threads.
    pub workers: usize,
    /// Why AF_XDP is not used, when the configuration allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub afxdp_unavailable: Option<String>,
    /// Datagrams each worker received (with AF_XDP, the last one is the socket worker that
    /// forwards what still reaches the kernel).
    #[serde(default)]
    pub worker_rx_packets: Vec<u64>,
    /// The mesh, when the gateway is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<Box<super::mesh_tunnels::MeshStatus>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status {
        gateway: String,
        datacenter: String,
        tunnels: Vec<TunnelStatus>,
        /// Gateway-wide counters: what was dropped before any tunnel claimed it (unknown peer,
        /// bad MAC, wrong VNI, unknown prefix, ...) by reason, and the forwarding totals
        /// (`forwarded_from_fabric`, `icmp_too_big_sent`).
        #[serde(default)]
        drops: std::collections::BTreeMap<String, u64>,
        /// How the gateway forwards: backend and workers.
        #[serde(default)]
        dataplane: DataplaneStatus,
    },
    Orders {
        orders: super::orders::OrderStatus,
        /// The fabric's routes in force: static, or from bgpctl.
        #[serde(default)]
        local_routes: super::local_routes::LocalRoutesStatus,
    },
    /// The request was carried out.
    Done,
    Error {
        message: String,
    },
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {path}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket I/O")]
    Io(#[from] std::io::Error),
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the gateway's answer is not valid: {0}")]
    BadResponse(String),
    #[error("the gateway refused: {0}")]
    Refused(String),
}

/// An answer of a control endpoint (the gateway's, the controller's): it can carry an
/// error.
pub trait ControlAnswer: Serialize + serde::de::DeserializeOwned + Send {
    fn error(message: String) -> Self;
    fn as_error(&self) -> Option<&str>;
}

/// Implements [`ControlAnswer`] for a response enum with an `Error { message }` variant.
macro_rules! control_answer {
    ($response:ident) => {
        impl $crate::gateway::control::ControlAnswer for $response {
            fn error(message: String) -> Self {
                $response::Error { message }
            }

            fn as_error(&self) -> Option<&str> {
                match self {
                    $response::Error { message } => Some(message),
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use control_answer;

control_answer!(Response);

/// Answers each request with what `handler`'s future gives, until the task is dropped.
pub async fn serve<Q, R, F, Fut>(path: &Path, handler: F) -> Result<(), ControlError>
where
    Q: serde::de::DeserializeOwned + Send,
    R: ControlAnswer,
    F: Fn(Q) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send,
{
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    let handler = Arc::new(handler);
    loop {
        let (stream, _) = listener.accept().await?;
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &*handler).await {
                tracing::debug!(error = %e, "control connection");
            }
        });
    }
}

async fn answer<Q, R, F, Fut>(stream: UnixStream, handler: &F) -> Result<(), ControlError>
where
    Q: serde::de::DeserializeOwned,
    R: ControlAnswer,
    F: Fn(Q) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .map_err(|_| ControlError::Timeout(Duration::from_secs(5)))??;
    let response = match serde_json::from_str::<Q>(line.trim()) {
        Ok(request) => handler(request).await,
        Err(e) => R::error(format!("bad request: {e}")),
    };
    let mut out =
        serde_json::to_vec(&response).map_err(|e| ControlError::BadResponse(e.to_string()))?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await?;
    Ok(())
}

/// Sends one request to the gateway at `path` and returns its response, within 10 s.
pub async fn request<Q: Serialize, R: ControlAnswer>(
    path: &Path,
    request: &Q,
) -> Result<R, ControlError> {
    request_within(path, request, Duration::from_secs(10)).await
}

/// [`request`] for an answer that may take up to `wait` (one that waits for a cycle).
pub async fn request_within<Q: Serialize, R: ControlAnswer>(
    path: &Path,
    request: &Q,
    wait: Duration,
) -> Result<R, ControlError> {
    let exchange = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, mut write) = stream.into_split();
        let mut line =
            serde_json::to_vec(request).map_err(|e| ControlError::BadResponse(e.to_string()))?;
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await?;
        let response: R = serde_json::from_str(answer.trim())
            .map_err(|e| ControlError::BadResponse(e.to_string()))?;
        match response.as_error() {
            Some(message) => Err(ControlError::Refused(message.to_owned())),
            None => Ok(response),
        }
    };
    tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| ControlError::Timeout(wait))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_round_trip_and_bad_requests() {
        let path =
            std::env::temp_dir().join(format!("gatewan-control-{}.sock", std::process::id()));
        let server_path = path.clone();
        let server = tokio::spawn(async move {
            serve(&server_path, |_: Request| {
                std::future::ready(Response::Status {
                    gateway: "gw-a1".into(),
                    datacenter: "dc-a".into(),
                    tunnels: vec![],
                    drops: Default::default(),
                    dataplane: Default::default(),
                })
            })
            .await
        });
        // Wait for the socket to appear (bounded, not a timing assertion).
        for _ in 0..200 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let response: Response = request(&path, &Request::Status).await.expect("status");
        assert_eq!(
            response,
            Response::Status {
                gateway: "gw-a1".into(),
                datacenter: "dc-a".into(),
                dataplane: Default::default(),
                tunnels: vec![],
                drops: Default::default(),
            }
        );

        let mut raw = UnixStream::connect(&path).await.expect("connect");
        raw.write_all(b"{\"request\":\"reboot\"}\n")
            .await
            .expect("write");
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.expect("read");
        assert!(answer.contains("bad request"), "{answer}");

        // An endless line is cut off, not buffered forever: the server answers (or resets the
        // connection, having closed with unread input) and keeps serving.
        let mut raw = UnixStream::connect(&path).await.expect("connect");
        let _ = raw.write_all(&vec![b'x'; MAX_REQUEST * 4]).await;
        let mut answer = String::new();
        if raw.read_to_string(&mut answer).await.is_ok() {
            assert!(answer.contains("bad request"), "{answer}");
        }
        assert!(
            request::<_, Response>(&path, &Request::Status)
                .await
                .is_ok(),
            "the server survived"
        );

        server.abort();
        let _ = std::fs::remove_file(&path);
        let err = request::<_, Response>(&path, &Request::Status)
            .await
            .expect_err("no gateway");
        assert!(matches!(err, ControlError::Connect { .. }), "{err}");
    }
}
