//! An HTTPS upstream with a private CA: trusted through `upstream.ca_file`,
//! spoken to in HTTP/2 when it offers h2 through ALPN, refused without the CA.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{MockUpstream, Tether, chat_body, client, mock_upstream};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA (as a PEM file) and a TLS acceptor for `localhost` signed by it.
fn private_ca() -> (tempfile::NamedTempFile, tokio_rustls::TlsAcceptor) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();

    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.pem().as_bytes()).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server_cert.der().clone(), ca.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca_file, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_is_reached_over_http2() {
    let (ca_file, acceptor) = private_ca();
    let mock = MockUpstream::start_with_tls(Some(acceptor)).await;
    let upstream = format!("https://localhost:{}", mock.addr.port());
    let ca_path = ca_file.path().to_str().unwrap().to_string();
    let tether = Tether::start_with(&upstream, |s| s.upstream.ca_file = ca_path).await;

    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "4")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for i in 0..4 {
        assert!(
            text.contains(&mock_upstream::token(i)),
            "chunk {i} streamed over TLS: {text}"
        );
    }
    assert!(text.ends_with("data: [DONE]\n\n"));
    let seen = mock.last_request();
    assert_eq!(
        seen.version,
        http::Version::HTTP_2,
        "h2 was negotiated through ALPN"
    );
    assert_eq!(
        seen.uri.authority().map(|a| a.as_str()),
        Some(&*format!("localhost:{}", mock.addr.port()))
    );

    // The pooled connection is reused: a second request works the same.
    let again = client()
        .post(tether.url("/v1/chat/completions"))
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_502() {
    let (_ca_file, acceptor) = private_ca();
    let mock = MockUpstream::start_with_tls(Some(acceptor)).await;
    let tether = Tether::start(&format!("https://localhost:{}", mock.addr.port())).await;
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.to_lowercase().contains("certificate"),
        "the message says why: {message}"
    );
}
