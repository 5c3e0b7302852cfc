//! The HTTP client of one supplier: awc on its own thread (an actix System),
//! reached through a channel, so its futures are `Send` (the job runner's
//! outbox deliveries run on tokio tasks) and a slow supplier occupies only
//! its own thread, never the server's workers or another supplier's client.
//!
//! Every request is bounded: a total deadline (headers *and* body, so a
//! dripping body is cut off), a body size limit, and no redirects (a 3xx is
//! returned to the adapter, which treats it as a bad response).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A response as received (the whole body, within the limit).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no response came back. Messages never hold credentials or bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer in time, or no connection: the supplier is unavailable.
    Unavailable(String),
    /// An answer that cannot be used (too large, broken transfer).
    Bad(String),
}

/// TLS material for mutual TLS and a private CA.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub ca_file: Option<std::path::PathBuf>,
}

struct Job {
    req: Request,
    reply: oneshot::Sender<Result<Response, Failure>>,
}

/// A handle to one supplier's client thread (cheap to clone).
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Job>,
    timeout: Duration,
}

impl Client {
    /// Starts the client thread. `timeout` bounds each whole exchange,
    /// `max_body` each response body.
    pub fn start(
        name: &str,
        timeout: Duration,
        max_body: usize,
        tls: Tls,
    ) -> anyhow::Result<Client> {
        let connector = connector(&tls)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name(format!("supplier-{name}"))
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let client = awc::Client::builder()
                        .timeout(timeout)
                        .disable_redirects()
                        .max_http_version(awc::http::Version::HTTP_11)
                        .connector(awc::Connector::new().openssl(connector).timeout(timeout))
                        .finish();
                    while let Some(job) = rx.recv().await {
                        let client = client.clone();
                        actix_rt::spawn(async move {
                            // Headers in time but a body that drips: a bad answer, not
                            // an unavailable supplier.
                            let headed = std::cell::Cell::new(false);
                            let work = exchange(&client, job.req, max_body, &headed);
                            let out =
                                tokio::time::timeout(timeout, work)
                                    .await
                                    .unwrap_or_else(|_| {
                                        Err(if headed.get() {
                                            Failure::Bad(format!(
                                                "the answer's body did not arrive within {} ms",
                                                timeout.as_millis()
                                            ))
                                        } else {
                                            Failure::Unavailable(format!(
                                                "no answer within {} ms",
                                                timeout.as_millis()
                                            ))
                                        })
                                    });
                            let _ = job.reply.send(out);
                        });
                    }
                });
            })?;
        Ok(Client { tx, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `req` and waits for the answer (or the deadline).
    pub async fn send(&self, req: Request) -> Result<Response, Failure> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { req, reply })
            .map_err(|_| Failure::Unavailable("the supplier client has stopped".into()))?;
        // The thread enforces the deadline; this bound only guards a lost reply.
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(r)) => r,
            _ => Err(Failure::Unavailable(
                "the supplier client did not answer".into(),
            )),
        }
    }
}

fn connector(tls: &Tls) -> anyhow::Result<openssl::ssl::SslConnector> {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVersion};
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    if let Some(ca) = &tls.ca_file {
        b.set_ca_file(ca)?;
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        b.set_certificate_chain_file(cert)?;
        b.set_private_key_file(key, SslFiletype::PEM)?;
        b.check_private_key()?;
    }
    b.set_alpn_protos(b"\x08http/1.1")?;
    Ok(b.build())
}

async fn exchange(
    client: &awc::Client,
    req: Request,
    max_body: usize,
    headed: &std::cell::Cell<bool>,
) -> Result<Response, Failure> {
    let method = awc::http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| Failure::Bad("bad method".into()))?;
    let mut r = client.request(method, &req.url);
    for (k, v) in &req.headers {
        r = r.insert_header((k.as_str(), v.as_str()));
    }
    let sent = match req.body {
        Some(b) => r.send_body(b).await,
        None => r.send().await,
    };
    let mut resp = sent.map_err(|e| {
        use awc::error::SendRequestError as E;
        match e {
            E::Timeout => Failure::Unavailable("timed out".into()),
            E::Connect(_) => Failure::Unavailable("connection failed".into()),
            E::Send(_) | E::Response(_) | E::H2(_) => {
                Failure::Unavailable("connection broken".into())
            }
            _ => Failure::Bad("the request could not be sent".into()),
        }
    })?;
    headed.set(true);
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = resp.body().limit(max_body).await.map_err(|e| match e {
        awc::error::PayloadError::Overflow => {
            Failure::Bad(format!("response body larger than {max_body} bytes"))
        }
        _ => Failure::Bad("response body broken".into()),
    })?;
    Ok(Response {
        status,
        headers,
        body: body.to_vec(),
    })
}
