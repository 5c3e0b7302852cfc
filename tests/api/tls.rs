//! TLS, mTLS, HSTS and CORS (`[server.tls]`, `[server.cors]`): a CA, a server
//! certificate and client certificates minted here with openssl (nothing on
//! disk but a temporary directory), the real server, real TLS handshakes and
//! real HTTP. The refusals are checked against a control: the same client
//! completes a handshake with a permissive OpenSSL server, so a refusal is the
//! server's doing and not the client's inability.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fhirbridge::config::{CorsSettings, TlsSettings};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVersion};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use crate::helpers::{free_port, ServerProcess, TestApp};

const HSTS: &str = "max-age=31536000";

// ---------------------------------------------------------------------------
// Certificates

#[derive(Clone)]
struct Issued {
    cert: X509,
    key: PKey<Private>,
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn builder(cn: &str, key: &PKey<Private>, issuer: Option<&Issued>) -> X509Builder {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b
}

fn ca(cn: &str) -> Issued {
    let key = ec_key();
    let mut b = builder(cn, &key, None);
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(ski).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Issued {
        cert: b.build(),
        key,
    }
}

/// A leaf certificate signed by `ca`: a server's (RSA, so suites without
/// forward secrecy are possible at all; 127.0.0.1 and localhost) or a
/// client's (P-256).
fn leaf(ca: &Issued, cn: &str, server: bool) -> Issued {
    let key = if server {
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
    } else {
        ec_key()
    };
    let mut b = builder(cn, &key, Some(ca));
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut eku = ExtendedKeyUsage::new();
    if server {
        eku.server_auth();
    } else {
        eku.client_auth();
    }
    b.append_extension(eku.build().unwrap()).unwrap();
    if server {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(Some(&ca.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(aki).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    Issued {
        cert: b.build(),
        key,
    }
}

/// Two CAs; the server's certificate and `client` are from `ca`, `stranger`
/// from `other_ca`. The server's PEM files live in `dir`.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issued,
    server: Issued,
    client: Issued,
    stranger: Issued,
}

impl Pki {
    fn new() -> Pki {
        let other_ca = ca("another CA");
        let ca = ca("fhirbridge test CA");
        let server = leaf(&ca, "127.0.0.1", true);
        let client = leaf(&ca, "gp-system-a", false);
        let stranger = leaf(&other_ca, "gp-system-a", false);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.cert.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("server.key"),
            server.key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        Pki {
            dir,
            ca,
            server,
            client,
            stranger,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls(&self, mtls: bool) -> TlsSettings {
        TlsSettings {
            cert_file: Some(self.path("server.pem")),
            key_file: Some(self.path("server.key")),
            ca_file: mtls.then(|| self.path("ca.pem")),
        }
    }
}

// ---------------------------------------------------------------------------
// Clients

/// What a raw client offers.
#[derive(Default, Clone)]
struct Offer {
    min: Option<SslVersion>,
    max: Option<SslVersion>,
    /// TLS 1.2 cipher list.
    ciphers: Option<&'static str>,
    cert: Option<Issued>,
}

/// A client trusting `ca` (and checking the server's name), offering `offer`.
fn connector(ca: &X509, offer: &Offer) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.cert_store_mut().add_cert(ca.clone()).unwrap();
    if offer.min.is_some() {
        b.set_min_proto_version(offer.min).unwrap();
    }
    if offer.max.is_some() {
        b.set_max_proto_version(offer.max).unwrap();
    }
    if let Some(c) = offer.ciphers {
        b.set_cipher_list(c).unwrap();
    }
    if let Some(c) = &offer.cert {
        b.set_certificate(&c.cert).unwrap();
        b.set_private_key(&c.key).unwrap();
    }
    b.build()
}

/// The answer to one raw HTTPS request.
#[derive(Debug)]
struct Answer {
    /// The response head and body as received.
    text: String,
    version: String,
    cipher: String,
}

impl Answer {
    fn status(&self) -> u16 {
        self.text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// `GET path` over a fresh TLS connection to 127.0.0.1:`port` (blocking; run on
/// the blocking pool). `Err` when the handshake fails or no HTTP response comes.
fn raw_get(conn: &SslConnector, port: u16, path: &str) -> Result<Answer, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = conn
        .connect("127.0.0.1", tcp)
        .map_err(|e| format!("handshake: {e}"))?;
    let version = s.ssl().version_str().to_owned();
    let cipher = s
        .ssl()
        .current_cipher()
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    // Under TLS 1.3 the server checks a client certificate after the client
    // has finished its handshake: a refusal arrives as an alert on the first read.
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    if out.is_empty() {
        return Err(format!("no response: {read:?}"));
    }
    Ok(Answer {
        text: String::from_utf8_lossy(&out).into_owned(),
        version,
        cipher,
    })
}

async fn get_raw(conn: SslConnector, port: u16, path: &'static str) -> Result<Answer, String> {
    actix_rt::task::spawn_blocking(move || raw_get(&conn, port, path))
        .await
        .unwrap()
}

/// A permissive OpenSSL server (TLS 1.0 up, every cipher, security level 0)
/// answering one request on a thread: the control that shows a client's
/// offer can be accepted at all.
fn permissive_server(server: &Issued) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut b = SslAcceptor::mozilla_intermediate(SslMethod::tls_server()).unwrap();
    b.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
    b.set_cipher_list("ALL:@SECLEVEL=0").unwrap();
    b.set_certificate(&server.cert).unwrap();
    b.set_private_key(&server.key).unwrap();
    let acceptor = b.build();
    std::thread::spawn(move || {
        if let Ok((tcp, _)) = listener.accept() {
            if let Ok(mut s) = acceptor.accept(tcp) {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = s.shutdown();
            }
        }
    });
    port
}

fn port_of(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// `app` (started with `[server.tls]`) spoken to over HTTPS by an awc client
/// trusting the test CA (and presenting `cert`).
fn over_tls(mut app: TestApp, pki: &Pki, cert: Option<Issued>) -> TestApp {
    let conn = connector(
        &pki.ca.cert,
        &Offer {
            cert,
            ..Offer::default()
        },
    );
    app.base = app.base.replacen("http://", "https://", 1);
    app.client = awc::Client::builder()
        .connector(awc::Connector::new().openssl(conn))
        .timeout(Duration::from_secs(60))
        .finish();
    app
}

fn cors(origins: &[&str], credentials: bool) -> CorsSettings {
    CorsSettings {
        allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
        allow_credentials: credentials,
        ..CorsSettings::default()
    }
}

// ---------------------------------------------------------------------------
// TLS

#[actix_rt::test]
async fn https_serves_the_api_with_hsts_on_every_response() {
    let pki = Pki::new();
    let tls = pki.tls(false);
    let app = TestApp::sqlite_with(|s| {
        s.server.tls = Some(tls);
        s.server.cors = cors(&["https://app.example"], false);
    })
    .await;
    let port = port_of(&app);
    let app = over_tls(app, &pki, None);
    assert!(app.base.starts_with("https://127.0.0.1:"), "{}", app.base);

    let r = app.get("/fhir/metadata").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["resourceType"], "CapabilityStatement");
    assert_eq!(r.header("strict-transport-security").as_deref(), Some(HSTS));
    // URLs derived from the request say https.
    let created = app
        .post(
            "/fhir/Patient",
            &serde_json::json!({"resourceType": "Patient", "active": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let location = created.header("location").unwrap();
    assert!(
        location.starts_with(&format!("https://127.0.0.1:{port}/fhir/Patient/")),
        "{location}"
    );
    // Errors, non-FHIR endpoints and preflights (answered outside the FHIR
    // middleware) carry it too.
    let r = app.get("/fhir/Patient/no-such-id").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("strict-transport-security").as_deref(), Some(HSTS));
    let r = app.get("/health/live").await;
    assert_eq!(r.header("strict-transport-security").as_deref(), Some(HSTS));
    let r = app
        .request(
            "OPTIONS",
            "/fhir/Patient",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("strict-transport-security").as_deref(), Some(HSTS));

    // TLS 1.3 by default; a TLS 1.2 client gets an ECDHE AEAD suite, the
    // server's choice among those offered (AES-256 before AES-128).
    let a = get_raw(
        connector(&pki.ca.cert, &Offer::default()),
        port,
        "/fhir/metadata",
    )
    .await
    .unwrap();
    assert_eq!((a.status(), a.version.as_str()), (200, "TLSv1.3"), "{a:?}");
    assert_eq!(a.header("strict-transport-security").as_deref(), Some(HSTS));
    let tls12 = Offer {
        max: Some(SslVersion::TLS1_2),
        ciphers: Some("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"),
        ..Offer::default()
    };
    let a = get_raw(connector(&pki.ca.cert, &tls12), port, "/fhir/metadata")
        .await
        .unwrap();
    assert_eq!(a.status(), 200, "{a:?}");
    assert_eq!(a.version, "TLSv1.2");
    assert_eq!(a.cipher, "ECDHE-RSA-AES256-GCM-SHA384");
}

#[actix_rt::test]
async fn old_protocols_and_weak_ciphers_are_refused_at_the_handshake() {
    let pki = Pki::new();
    let tls = pki.tls(false);
    let app = TestApp::sqlite_with(|s| s.server.tls = Some(tls)).await;
    let port = port_of(&app);
    let refused = [
        (
            "TLS 1.1",
            Offer {
                min: Some(SslVersion::TLS1_1),
                max: Some(SslVersion::TLS1_1),
                ciphers: Some("ALL:@SECLEVEL=0"),
                ..Offer::default()
            },
        ),
        (
            "TLS 1.0",
            Offer {
                min: Some(SslVersion::TLS1),
                max: Some(SslVersion::TLS1),
                ciphers: Some("ALL:@SECLEVEL=0"),
                ..Offer::default()
            },
        ),
        (
            "TLS 1.2 with CBC only",
            Offer {
                max: Some(SslVersion::TLS1_2),
                ciphers: Some("ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384"),
                ..Offer::default()
            },
        ),
        (
            "TLS 1.2 without forward secrecy",
            Offer {
                max: Some(SslVersion::TLS1_2),
                ciphers: Some("AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0"),
                ..Offer::default()
            },
        ),
    ];
    for (what, offer) in refused {
        // Control: this client completes a handshake where it is allowed.
        let control = permissive_server(&pki.server);
        let ok = get_raw(connector(&pki.ca.cert, &offer), control, "/").await;
        assert_eq!(
            ok.as_ref().map(Answer::status),
            Ok(200),
            "{what}: the control handshake failed, so the test proves nothing"
        );
        let r = get_raw(connector(&pki.ca.cert, &offer), port, "/fhir/metadata").await;
        match r {
            Err(e) => assert!(e.starts_with("handshake"), "{what}: {e}"),
            Ok(a) => panic!("{what} was accepted: {} {}", a.version, a.cipher),
        }
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = actix_rt::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(!plain.starts_with(b"HTTP/"), "{plain:?}");
}

#[actix_rt::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let pki = Pki::new();
    let tls = pki.tls(true);
    let app = TestApp::sqlite_with(|s| s.server.tls = Some(tls)).await;
    let port = port_of(&app);
    for max in [None, Some(SslVersion::TLS1_2)] {
        let with = |cert: Option<&Issued>| {
            connector(
                &pki.ca.cert,
                &Offer {
                    max,
                    cert: cert.cloned(),
                    ..Offer::default()
                },
            )
        };
        let a = get_raw(with(Some(&pki.client)), port, "/fhir/metadata").await;
        let a = a.unwrap_or_else(|e| panic!("{max:?}: a client of the CA was refused: {e}"));
        assert_eq!(a.status(), 200, "{a:?}");
        assert_eq!(a.header("strict-transport-security").as_deref(), Some(HSTS));
        for (what, cert) in [
            ("no certificate", None),
            ("a certificate from another CA", Some(&pki.stranger)),
        ] {
            let r = get_raw(with(cert), port, "/fhir/metadata").await;
            assert!(r.is_err(), "{max:?}: {what} was served: {r:?}");
        }
    }
    // A plain awc client with the certificate works end to end.
    let app = over_tls(app, &pki, Some(pki.client.clone()));
    let r = app.get("/fhir/metadata").await;
    assert_eq!(r.status, 200);
}

#[actix_rt::test]
async fn plain_http_responses_carry_no_hsts() {
    let app = TestApp::sqlite().await;
    for path in ["/fhir/metadata", "/fhir/Patient/nope", "/health/live"] {
        let r = app.get(path).await;
        assert!(r.status < 500, "{path}");
        assert_eq!(r.header("strict-transport-security"), None, "{path}");
    }
}

/// The real binary with `--tls-cert`/`--tls-key`: serves HTTPS and logs an
/// `https://` base URL.
#[actix_rt::test]
async fn the_binary_serves_https_from_the_command_line_flags() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[validation]\nenabled = false\n").unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .args(["--database", "sqlite::memory:"])
        .arg("--tls-cert")
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server.key"))
        .env("RUST_LOG", "info")
        .env_remove("FHIRBRIDGE_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = ServerProcess {
        child,
        base: format!("https://127.0.0.1:{port}"),
    };
    let conn = connector(&pki.ca.cert, &Offer::default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("serve exited ({status}): {}", read(&log));
        }
        if let Ok(a) = get_raw(conn.clone(), port, "/health/ready").await {
            break a;
        }
        assert!(Instant::now() < deadline, "not ready: {}", read(&log));
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(
        answer.header("strict-transport-security").as_deref(),
        Some(HSTS)
    );
    let text = read(&log);
    assert!(
        text.contains(&format!("FHIR base URL https://127.0.0.1:{port}/fhir")),
        "{text}"
    );
    drop(server);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn bad_tls_and_cors_settings_are_reported_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[server.cors]\nallowed_origins = [\"*\", \"https://app.example/\"]\n\
         allow_credentials = true\n[validation]\nenabled = false\n",
    )
    .unwrap();
    let missing = dir.path().join("no-such.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--database", "sqlite::memory:"])
        .arg("--tls-cert")
        .arg(&missing)
        .env_remove("FHIRBRIDGE_CONFIG")
        .env_remove("FHIRBRIDGE_TLS_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "invalid settings (4 problems)",
        "server.cors.allowed_origins: \"*\" cannot be combined with allow_credentials",
        "server.cors.allowed_origins: 'https://app.example/' is not an origin",
        "server.tls.key_file is required with server.tls.cert_file",
        &format!("server.tls.cert_file: {}", missing.display()),
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }

    // A certificate that is not one, and a key that does not match, stop the start.
    let pki = Pki::new();
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "[validation]\nenabled = false\n").unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, ec_key().private_key_to_pem_pkcs8().unwrap()).unwrap();
    for (cert, key, needle) in [
        (
            garbage.clone(),
            pki.path("server.key"),
            "server.tls.cert_file: ",
        ),
        (
            pki.path("server.pem"),
            other_key.clone(),
            "is not the key of the certificate",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--config")
            .arg(&ok)
            .args(["--database", "sqlite::memory:"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env_remove("FHIRBRIDGE_CONFIG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{needle}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
}

// ---------------------------------------------------------------------------
// CORS

const APP: &str = "https://app.example";

async fn preflight(app: &TestApp, origin: &str) -> crate::helpers::Resp {
    app.request(
        "OPTIONS",
        "/fhir/Patient",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        None,
    )
    .await
}

fn acao(r: &crate::helpers::Resp) -> Option<String> {
    r.header("access-control-allow-origin")
}

fn has_no_cors_headers(r: &crate::helpers::Resp) -> bool {
    r.headers
        .keys()
        .all(|k| !k.as_str().starts_with("access-control-"))
}

fn varies_on_origin(r: &crate::helpers::Resp) -> bool {
    r.headers
        .get_all("vary")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin"))
}

#[actix_rt::test]
async fn cors_preflight_from_an_allowed_origin_is_answered_without_authentication() {
    let app = TestApp::sqlite_with(|s| {
        s.server.cors = cors(&[APP, "http://localhost:3000"], true);
        s.server.cors.max_age_secs = 120;
        // Preflights carry no credentials: they are answered before auth.
        s.auth.mode = Some(fhirbridge::auth::AuthMode::Required);
    })
    .await;
    let r = preflight(&app, APP).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(acao(&r).as_deref(), Some(APP));
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let methods = r.header("access-control-allow-methods").unwrap();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        assert!(methods.split(", ").any(|x| x == m), "{m} in {methods}");
    }
    let headers = r.header("access-control-allow-headers").unwrap();
    for h in [
        "Authorization",
        "Content-Type",
        "Accept",
        "If-Match",
        "If-None-Exist",
        "If-None-Match",
        "If-Modified-Since",
        "Prefer",
        "X-Request-ID",
    ] {
        assert!(headers.split(", ").any(|x| x == h), "{h} in {headers}");
    }
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("120"));
    assert!(varies_on_origin(&r));
    assert!(r.body.is_empty());
    // The other configured origin is echoed, not the first one.
    let r = preflight(&app, "http://localhost:3000").await;
    assert_eq!(r.status, 204);
    assert_eq!(acao(&r).as_deref(), Some("http://localhost:3000"));
    // The actual request without a token is refused by authentication, and
    // the app can read why (CORS headers on the 401, WWW-Authenticate exposed).
    let r = app.get_with("/fhir/Patient", &[("Origin", APP)]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(acao(&r).as_deref(), Some(APP));
    assert!(r.header("www-authenticate").is_some());
    assert!(r
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("WWW-Authenticate")));
}

#[actix_rt::test]
async fn cors_preflight_from_another_origin_is_forbidden_without_cors_headers() {
    let app = TestApp::sqlite_with(|s| s.server.cors = cors(&[APP], false)).await;
    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
        "https://app.example:8443",
        "null",
    ] {
        let r = preflight(&app, origin).await;
        assert_eq!(r.status, 403, "{origin}: {}", r.text());
        assert!(has_no_cors_headers(&r), "{origin}: {:?}", r.headers);
        let issues = r.issues();
        assert_eq!(issues[0]["code"], "forbidden", "{origin}");
    }
    // An OPTIONS that is not a preflight is the API's (405), not CORS's.
    let r = app
        .request("OPTIONS", "/fhir/Patient", &[("Origin", APP)], None)
        .await;
    assert_eq!(r.status, 405);
}

#[actix_rt::test]
async fn cors_actual_requests_get_allow_and_expose_headers_for_allowed_origins_only() {
    let app = TestApp::sqlite_with(|s| s.server.cors = cors(&[APP], false)).await;
    let r = app.get_with("/fhir/metadata", &[("Origin", APP)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(acao(&r).as_deref(), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let expose = r.header("access-control-expose-headers").unwrap();
    for h in [
        "Location",
        "ETag",
        "Last-Modified",
        "Content-Location",
        "X-Request-ID",
        "WWW-Authenticate",
    ] {
        assert!(expose.split(", ").any(|x| x == h), "{h} in {expose}");
    }
    assert!(varies_on_origin(&r));
    // A create and an error are readable by the app too (Location, the OperationOutcome).
    let created = app
        .send_json(
            "POST",
            "/fhir/Patient",
            &serde_json::json!({"resourceType": "Patient", "active": true}),
            &[("Origin", APP)],
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(acao(&created).as_deref(), Some(APP));
    assert!(created.header("location").is_some());
    let r = app.get_with("/fhir/Patient/nope", &[("Origin", APP)]).await;
    assert_eq!(r.status, 404);
    assert_eq!(acao(&r).as_deref(), Some(APP));
    // Another origin, or none: no CORS headers (but the response still varies on Origin).
    for headers in [&[("Origin", "https://evil.example")][..], &[]] {
        let r = app.get_with("/fhir/metadata", headers).await;
        assert_eq!(r.status, 200);
        assert!(has_no_cors_headers(&r), "{headers:?}: {:?}", r.headers);
        assert!(varies_on_origin(&r));
    }
}

#[actix_rt::test]
async fn cors_wildcard_answers_star_and_no_origins_means_no_cors() {
    let app = TestApp::sqlite_with(|s| s.server.cors = cors(&["*"], false)).await;
    let r = preflight(&app, "https://anyone.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(acao(&r).as_deref(), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let r = app
        .get_with("/fhir/metadata", &[("Origin", "https://anyone.example")])
        .await;
    assert_eq!(acao(&r).as_deref(), Some("*"));

    // Nothing configured (the default): no CORS at all, the preflight is the
    // API's own 405.
    let app = TestApp::sqlite().await;
    let r = preflight(&app, APP).await;
    assert_eq!(r.status, 405);
    assert!(has_no_cors_headers(&r), "{:?}", r.headers);
    let r = app.get_with("/fhir/metadata", &[("Origin", APP)]).await;
    assert!(has_no_cors_headers(&r), "{:?}", r.headers);
    assert!(!varies_on_origin(&r));
}

#[test]
fn the_readme_tls_and_cors_example_is_valid_settings() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### HTTPS, mTLS and CORS")
        .nth(1)
        .expect("README section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let mut s: fhirbridge::config::Settings = toml::from_str(block).unwrap();
    let tls = s.server.tls.take().expect("[server.tls]");
    assert!(tls.cert_file.is_some() && tls.key_file.is_some() && tls.ca_file.is_some());
    assert_eq!(s.server.cors.allowed_origins.len(), 2);
    // Valid but for the files, which do not exist here.
    assert_eq!(s.problems(), Vec::<String>::new());
}
