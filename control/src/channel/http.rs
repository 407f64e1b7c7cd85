//! HTTP/2 over the channel's TLS. The server authenticates every request twice over: the
//! TLS handshake verifies the client's certificate chain, and the `x-gatewan-identity`
//! header names who the client says it is, which its certificate must be valid for. Handlers
//! only see requests whose identity held. Bodies are JSON, bounded in size; every step has a
//! deadline, so a silent or slow peer costs a bounded time.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
pub use hyper::{Method, StatusCode};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::identity::Identity;
use super::tls::{peer_is, TlsSetup};

/// The header a client names itself in; its certificate must be valid for that name.
pub const IDENTITY_HEADER: &str = "x-gatewan-identity";
/// Largest request or response body: a 50-datacenter gateway order is about 200 KB.
pub const MAX_BODY: usize = 16 << 20;
/// Time for a TLS handshake on an accepted connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated request.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub peer: Identity,
    pub body: Bytes,
}

/// A handler's answer: a status and a JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Answer {
        match serde_json::to_vec(value) {
            Ok(body) => Answer { status, body },
            Err(e) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    pub fn error(status: StatusCode, message: &str) -> Answer {
        let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .unwrap_or_else(|_| b"{}".to_vec());
        Answer { status, body }
    }
}

pub type BoxAnswer = Pin<Box<dyn Future<Output = Answer> + Send>>;
pub type Handler = Arc<dyn Fn(Call) -> BoxAnswer + Send + Sync>;

/// Who the request says it is, if its certificate agrees.
fn authenticate(req: &Request<Incoming>, cert: Option<&CertificateDer<'_>>) -> Option<Identity> {
    let claimed: Identity = req
        .headers()
        .get(IDENTITY_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    peer_is(cert?, &claimed).then_some(claimed)
}

async fn answer(
    req: Request<Incoming>,
    cert: Option<Arc<CertificateDer<'static>>>,
    handler: Handler,
) -> Answer {
    let Some(peer) = authenticate(&req, cert.as_deref()) else {
        return Answer::error(
            StatusCode::UNAUTHORIZED,
            "the certificate is not valid for the identity named in x-gatewan-identity",
        );
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Answer::error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
    };
    handler(Call {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        peer,
        body,
    })
    .await
}

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: &TlsSetup, handler: Handler) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.server));
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "channel accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, handler) = (acceptor.clone(), Arc::clone(&handler));
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%from, error = %e, "channel TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(c.clone().into_owned()));
            let service = hyper::service::service_fn(move |req| {
                let (cert, handler) = (cert.clone(), Arc::clone(&handler));
                async move {
                    let a = answer(req, cert, handler).await;
                    let mut resp = Response::new(Full::new(Bytes::from(a.body)));
                    *resp.status_mut() = a.status;
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(64)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%from, error = %e, "channel connection");
            }
        });
    }
}

#[derive(Debug, Error)]
pub enum CallError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP/2 with {addr}: {message}")]
    Http { addr: SocketAddr, message: String },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: StatusCode,
        body: String,
    },
    #[error("{0} cannot be a server name")]
    Name(String),
}

/// A channel client: one identity, one deadline per call.
#[derive(Clone, Debug)]
pub struct Client {
    tls: TlsSetup,
    pub timeout: Duration,
}

impl Client {
    pub fn new(tls: TlsSetup, timeout: Duration) -> Client {
        Client { tls, timeout }
    }

    /// One request to `server` at `addr`; anything but 2xx is an error carrying the body.
    pub async fn call(
        &self,
        addr: SocketAddr,
        server: &Identity,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, CallError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.call_inner(addr, server, method, path, body))
            .await
            .unwrap_or(Err(CallError::Timeout { addr, timeout }))
    }

    async fn call_inner(
        &self,
        addr: SocketAddr,
        server: &Identity,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, CallError> {
        let dns = server.dns_name();
        let name = ServerName::try_from(dns.clone()).map_err(|_| CallError::Name(dns.clone()))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| CallError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(Arc::clone(&self.tls.client))
            .connect(name, tcp)
            .await
            .map_err(|source| CallError::Tls { addr, source })?;
        let http = |e: hyper::Error| CallError::Http {
            addr,
            message: e.to_string(),
        };
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(http)?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(format!("https://{dns}{path}"))
            .header(IDENTITY_HEADER, self.tls.identity.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Http {
                addr,
                message: e.to_string(),
            })?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| CallError::Http {
                addr,
                message: e.to_string(),
            })?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(CallError::Status {
                addr,
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(512).collect(),
            });
        }
        Ok(bytes)
    }
}
