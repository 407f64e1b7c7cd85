//! The orders channel on loopback: certificates from `gatewan pki`, mutual TLS, identities
//! checked against certificates, strangers refused.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use gatewan_control::channel::http::{Answer, Call, Client, Handler};
use gatewan_control::channel::{pki, Identity, MemberRole, TlsFiles, TlsSetup};
use hyper::{Method, StatusCode};

fn files(dir: &std::path::Path, ca: &std::path::Path, id: &Identity) -> TlsFiles {
    let (cert, key) = pki::issue(ca, id, dir, 30).unwrap();
    TlsFiles {
        ca: ca.join(pki::CA_CERT),
        cert,
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_names_the_peer_and_refuses_strangers() {
    let tmp = std::env::temp_dir().join(format!("gatewan-channel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (ca, other_ca) = (tmp.join("ca"), tmp.join("other-ca"));
    pki::init(&ca, 30).unwrap();
    pki::init(&other_ca, 30).unwrap();
    // Made twice, the CA refuses to overwrite itself.
    assert!(pki::init(&ca, 30).is_err());

    let gw = Identity::new(MemberRole::Gateway, "gw-a1").unwrap();
    let ctl = Identity::new(MemberRole::Controller, "ctl-a").unwrap();
    let server_tls = TlsSetup::load(&files(&tmp, &ca, &gw), gw.clone()).unwrap();
    // A certificate is only good for the identity it was issued to.
    let ctl_files = files(&tmp, &ca, &ctl);
    let wrong = Identity::new(MemberRole::Controller, "ctl-b").unwrap();
    assert!(TlsSetup::load(&ctl_files, wrong).is_err());
    let client = Client::new(
        TlsSetup::load(&ctl_files, ctl.clone()).unwrap(),
        Duration::from_secs(5),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler: Handler = Arc::new(|call: Call| {
        Box::pin(async move {
            Answer::json(
                StatusCode::OK,
                &serde_json::json!({ "peer": call.peer.to_string(), "len": call.body.len() }),
            )
        })
    });
    let server = tokio::spawn(async move {
        gatewan_control::channel::http::serve(listener, &server_tls, handler).await
    });

    let body = client
        .call(addr, &gw, Method::PUT, "/v1/x", vec![b'x'; 300_000])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["peer"], "ctl-a.controller");
    assert_eq!(v["len"], 300_000);

    // The server must be who the client asked for.
    let not_gw = Identity::new(MemberRole::Gateway, "gw-b1").unwrap();
    assert!(client
        .call(addr, &not_gw, Method::GET, "/v1/x", Vec::new())
        .await
        .is_err());

    // A member of another deployment (another CA) is refused in the handshake.
    let stranger = Identity::new(MemberRole::Controller, "ctl-a").unwrap();
    let stranger_files = files(&tmp.join("s"), &other_ca, &stranger);
    let stranger = Client::new(
        TlsSetup::load(&stranger_files, stranger).unwrap(),
        Duration::from_secs(5),
    );
    assert!(stranger
        .call(addr, &gw, Method::GET, "/v1/x", Vec::new())
        .await
        .is_err());

    // A client without any certificate gets no HTTP at all.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates({
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(ca.join(pki::CA_CERT)).unwrap())
            .unwrap();
        roots
    })
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(gw.dns_name()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await;
    // TLS 1.3 lets the client finish first; the server's refusal arrives on the first read.
    if let Ok(mut s) = tls {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            !matches!(n, Ok(Ok(k)) if k > 0),
            "a client without a certificate was answered"
        );
    }
    server.abort();
    let _ = std::fs::remove_dir_all(&tmp);
}
