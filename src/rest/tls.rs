//! HTTPS: the openssl acceptor `[server.tls]` describes, and
//! `Strict-Transport-Security` on every response served over it.
//!
//! The acceptor speaks TLS 1.2 and 1.3 only. TLS 1.2 offers forward-secret AEAD
//! suites alone (ECDHE with AES-GCM or ChaCha20-Poly1305), in the server's order
//! of preference; TLS 1.3 keeps OpenSSL's default suites (all AEAD). Compression
//! and renegotiation are off. With `ca_file`, a client certificate signed by one
//! of its CAs is required: without one the handshake fails.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, STRICT_TRANSPORT_SECURITY};
use actix_web::middleware::Next;
use actix_web::Error;
use anyhow::Context as _;
use openssl::pkey::PKey;
use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslMethod, SslOptions, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509Name, X509};

use crate::config::TlsSettings;

/// TLS 1.2 suites: ECDHE key exchange, AEAD ciphers, strongest first.
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
     ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
     ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";

/// One year, the value HSTS preload lists ask for.
const HSTS: &str = "max-age=31536000";

/// The acceptor for `tls` (its files read now; every error names the key at fault).
pub fn acceptor(tls: &TlsSettings) -> anyhow::Result<SslAcceptorBuilder> {
    let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
        anyhow::bail!("server.tls: cert_file and key_file are required");
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .context("TLS: OpenSSL could not create a server context")?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_cipher_list(TLS12_CIPHERS)?;
    b.set_options(
        SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::NO_COMPRESSION
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::NO_TLSV1
            | SslOptions::NO_TLSV1_1,
    );
    let pem = std::fs::read(cert)
        .with_context(|| format!("server.tls.cert_file: cannot read {}", cert.display()))?;
    let mut chain = X509::stack_from_pem(&pem)
        .ok()
        .filter(|c| !c.is_empty())
        .with_context(|| {
            format!(
                "server.tls.cert_file: {} holds no PEM certificate",
                cert.display()
            )
        })?
        .into_iter();
    if let Some(leaf) = chain.next() {
        b.set_certificate(&leaf)?;
    }
    for intermediate in chain {
        b.add_extra_chain_cert(intermediate)?;
    }
    let pem = std::fs::read(key)
        .with_context(|| format!("server.tls.key_file: cannot read {}", key.display()))?;
    let pkey = PKey::private_key_from_pem(&pem).ok().with_context(|| {
        format!(
            "server.tls.key_file: {} holds no PEM private key",
            key.display()
        )
    })?;
    let mismatch = || {
        format!(
            "server.tls.key_file: {} is not the key of the certificate in {}",
            key.display(),
            cert.display()
        )
    };
    b.set_private_key(&pkey).ok().with_context(mismatch)?;
    b.check_private_key().ok().with_context(mismatch)?;
    if let Some(ca) = &tls.ca_file {
        let bad_ca = || {
            format!(
                "server.tls.ca_file: {} holds no PEM CA certificate",
                ca.display()
            )
        };
        b.set_ca_file(ca).with_context(bad_ca)?;
        // The CAs named in the CertificateRequest, so clients pick the right certificate.
        b.set_client_ca_list(X509Name::load_client_ca_file(ca).with_context(bad_ca)?);
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        // Sessions resumed under client verification need a context id.
        b.set_session_id_context(b"fhirbridge")?;
    }
    Ok(b)
}

/// `Strict-Transport-Security` on every response to a request that came over
/// TLS (and never over plain HTTP, where it would be meaningless).
pub async fn hsts(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let secure = req.app_config().secure();
    let mut res = super::cors::respond(req, next).await?;
    if secure {
        res.headers_mut()
            .insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    Ok(res)
}
