//! `certgate probe HOST:PORT`: what `openssl s_client` is used for in the seed, made readable.
//!
//! The probe completes the handshake whatever it thinks of the server's certificate (as
//! s_client does), so that one run can report everything at once: the server's chain and
//! whether it verifies, what the server asks of clients, and whether our certificate was
//! accepted. When something fails, the last line is one sentence naming the cause and the
//! fix, built from what the handshake revealed (the CA names the server accepts, our own
//! certificate's issuer, validity and usage) rather than from the bare TLS alert.

pub use crate::certtool::Report;
use crate::certtool::Verdict;
use crate::config::{HostPort, KeySource};
use crate::proxy::refusal::{html_title, CertificateRefusal, PAGE_LIMIT};
use crate::tls::explain::{find_io_kind, find_rustls_error, tls_error};
use crate::tls::identity::{distinguished_name, lowercase_hex};
use crate::tls::summary::{self, CertSummary};
use crate::tls::verify::{
    handshake_signature_methods, ChainRejection, ChainVerifier, HandshakeSignatures, PeerRole,
    UpstreamCertPolicy,
};
use crate::tls::{client, load, protocol_name, version_names};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use x509_parser::prelude::*;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS 1.3 probe waits for the server's verdict on our certificate: a refusal
/// arrives as an alert, an acceptance as session tickets, both right after our Finished.
const VERDICT_WAIT: Duration = Duration::from_secs(2);

/// What to probe and with what.
pub struct ProbeRequest {
    /// `HOST:PORT`.
    pub target: String,
    pub cert: Option<PathBuf>,
    /// A key file or a `pkcs11:` URI.
    pub key: Option<String>,
    /// The module a token key whose URI names none is opened with (`--pkcs11-module`).
    pub pkcs11_module: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// The name to send (SNI) and to check the server's certificate against; default HOST.
    pub server_name: Option<String>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub verify_depth: u32,
    /// The request sent after the handshake, and its response reported; None sends none.
    /// Servers such as nginx judge a client certificate only when a request comes.
    pub http: Option<HttpProbe>,
}

/// A request for the probe to send: `HEAD /` by default, `GET PATH` with `--get`.
pub struct HttpProbe {
    pub method: hyper::Method,
    pub path: String,
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe {
            method: hyper::Method::HEAD,
            path: "/".into(),
        }
    }
}

/// Our own client certificate, as far as the diagnosis needs it.
struct OurCertificate {
    key: Arc<CertifiedKey>,
    /// The leaf's.
    summary: CertSummary,
    /// Issuer of each certificate we send, leaf first.
    issuers: Vec<String>,
    /// The extended key usages when the extension is present and lacks clientAuth.
    wrong_usage: Option<String>,
}

impl OurCertificate {
    fn load(
        cert: &std::path::Path,
        key: &KeySource,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Self, Diagnosis> {
        let key = load::certified_key_from(cert, key, provider).map_err(|e| e.to_string())?;
        let mut issuers = Vec::new();
        let mut leaf = None;
        for der in &key.cert {
            let (_, parsed) = X509Certificate::from_der(der)
                .map_err(|e| format!("{}: certificate does not parse: {e}", cert.display()))?;
            issuers.push(distinguished_name(parsed.issuer()));
            if leaf.is_none() {
                leaf = Some(parsed);
            }
        }
        let leaf = leaf.ok_or_else(|| format!("{}: no certificate", cert.display()))?;
        let wrong_usage = match leaf.extended_key_usage() {
            Ok(Some(eku)) if !eku.value.client_auth && !eku.value.any => {
                Some(if eku.value.server_auth {
                    "serverAuth only".to_string()
                } else {
                    "no clientAuth".to_string()
                })
            }
            _ => None,
        };
        Ok(OurCertificate {
            summary: CertSummary::of(&leaf),
            wrong_usage,
            issuers,
            key: key.clone(),
        })
    }

    /// Why a server would refuse this certificate, judged locally; None when nothing is
    /// visibly wrong with it.
    fn visible_problem(&self, accepted: &[String]) -> Option<String> {
        let now = summary::now();
        let leaf = &self.summary;
        if now > leaf.not_after {
            return Some(format!(
                "our certificate \"{}\" expired {}: renew it",
                leaf.subject,
                leaf.not_after_text()
            ));
        }
        if now < leaf.not_before {
            return Some(format!(
                "our certificate \"{}\" is not valid until {}: check the clocks, or wait",
                leaf.subject,
                leaf.not_before_text()
            ));
        }
        if let Some(usage) = &self.wrong_usage {
            return Some(format!(
                "our certificate \"{}\" is not for client authentication (extended key usage: {usage}): issue one with clientAuth",
                self.summary.subject
            ));
        }
        if self.issuer_unlisted(accepted) {
            let mut sentence = format!(
                "the server does not trust the issuer of our certificate (\"{}\"); it accepts certificates issued by: {}",
                self.issuers[0],
                quoted_list(accepted)
            );
            if self.issuers.len() == 1 {
                sentence.push_str(
                    "; if our issuer is an intermediate of one of those, append it to the --cert file",
                );
            } else {
                sentence.push_str("; get a certificate from one of those CAs");
            }
            return Some(sentence);
        }
        None
    }

    /// Whether the server lists the CA names it accepts and none of our chain's issuers is
    /// among them: it will refuse us, in the handshake or (nginx) at the first request.
    fn issuer_unlisted(&self, accepted: &[String]) -> bool {
        !accepted.is_empty() && !self.issuers.iter().any(|issuer| accepted.contains(issuer))
    }
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the handshake revealed, recorded by the verifier and the certificate resolver.
#[derive(Default)]
struct Observed {
    server_chain: Vec<CertificateDer<'static>>,
    /// None when no CA was given to verify against.
    server_verdict: Option<Result<(), ChainRejection>>,
    /// Some when the server asked for a client certificate: the CA names it listed.
    requested: Option<Vec<String>>,
}

/// Accepts any server certificate at the TLS level, after recording it and our verdict on it.
#[derive(Debug)]
struct RecordingVerifier {
    /// Client mode's own upstream policy; only `--ca` set, no rules.
    policy: UpstreamCertPolicy,
    observed: Arc<Mutex<ObservedCell>>,
}

/// `Observed` behind the Debug bound rustls puts on verifiers.
#[derive(Default)]
struct ObservedCell(Observed);

impl std::fmt::Debug for ObservedCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observed")
    }
}

impl RecordingVerifier {
    fn signatures(&self) -> HandshakeSignatures {
        self.policy.signatures()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.policy.chain.is_some().then(|| {
            self.policy
                .check(end_entity, intermediates, server_name, now)
        });
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        observed.0.server_chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        observed.0.server_verdict = verdict;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signature_methods!();
}

/// Records the server's certificate request and answers it with our certificate, if any.
#[derive(Debug)]
struct RecordingResolver {
    ours: Option<Arc<CertifiedKey>>,
    observed: Arc<Mutex<ObservedCell>>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(&self, hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let names = hints.iter().map(|der| ca_name(der)).collect();
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        observed.0.requested = Some(names);
        self.ours.clone()
    }

    fn has_certs(&self) -> bool {
        // Claiming a certificate even without one makes rustls ask `resolve`, which is how
        // we learn that the server requested one.
        true
    }
}

/// A CA name from a CertificateRequest, as DER of an X.500 Name.
fn ca_name(der: &[u8]) -> String {
    match X509Name::from_der(der) {
        Ok((_, name)) => distinguished_name(&name),
        Err(_) => format!("(unparsable name {})", lowercase_hex(der)),
    }
}

/// The host of `HOST:PORT` (`[v6]:PORT` too), to name; the target itself is what is dialed.
fn host_of(target: &str) -> Result<String, String> {
    HostPort::parse_with_port(target)
        .map(|target| target.host)
        // Which part to blame, for the words only.
        .ok_or_else(|| match target.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_err() => {
                format!("\"{target}\": \"{port}\" is not a port number")
            }
            _ => format!("\"{target}\": give HOST:PORT, for example localhost:443"),
        })
}

/// Runs the probe and reports what it found.
pub async fn probe(request: &ProbeRequest) -> Report {
    let mut report = Report::default();
    if let Err(sentence) = run(request, &mut report).await {
        report.push(Verdict::Failure, "diagnosis", sentence);
    }
    report
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// The sentence that ends a failed probe's report: the cause and the fix, in words for the
/// operator (the probe's product, not an error for a program to match on).
type Diagnosis = String;

/// The sections of a probe in order: connect, handshake, what it negotiated, what it
/// revealed, and the request, if any; an `Err` is the diagnosis that ends the report.
async fn run(request: &ProbeRequest, report: &mut Report) -> Result<(), Diagnosis> {
    let probe = Probe::new(request)?;
    let tcp = probe.connect(report).await?;
    let mut stream = probe.handshake(tcp, report).await?;
    let tls13 = report_negotiated(report, &stream);

    let seen = probe.take_observed();
    // In TLS 1.3 the server judges our certificate after our Finished, and nginx judges it
    // only when a request comes, in either version. With a request its answer tells the
    // verdict; without, wait briefly for an alert or tickets (reading ahead before a request
    // would eat the server's first HTTP/2 frames).
    let will_request = request.http.is_some() && !matches!(seen.server_verdict, Some(Err(_)));
    let refusal = if tls13 && !will_request {
        await_verdict(&mut stream).await
    } else {
        None
    };
    report_observed(report, &seen, probe.ours.as_ref());
    if let Some(error) = refusal {
        return Err(probe.handshake_failure(&error, &seen));
    }
    match request.http.as_ref().filter(|_| will_request) {
        Some(http) => probe.send(report, stream, http, &seen).await,
        None => {
            probe.report_unrequested(report, &stream, &seen, tls13);
            Ok(())
        }
    }
}

/// One probe's fixed parts: what it dials and names, our certificate, the TLS client, and
/// where the client's verifier and resolver record what the handshake reveals.
struct Probe<'a> {
    request: &'a ProbeRequest,
    /// The name sent (SNI), checked against the server's certificate, and sent as Host.
    name: String,
    server_name: ServerName<'static>,
    ours: Option<OurCertificate>,
    connector: tokio_rustls::TlsConnector,
    observed: Arc<Mutex<ObservedCell>>,
}

impl<'a> Probe<'a> {
    fn new(request: &'a ProbeRequest) -> Result<Probe<'a>, Diagnosis> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let host = host_of(&request.target)?;
        let name = request.server_name.clone().unwrap_or(host);
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| format!("\"{name}\" is not a valid server name"))?;

        let ours = match (&request.cert, &request.key) {
            (Some(cert), Some(key)) => {
                let key = load::key_source(key, request.pkcs11_module.as_deref())
                    .map_err(|e| e.to_string())?;
                Some(OurCertificate::load(cert, &key, &provider)?)
            }
            (None, None) => None,
            _ => return Err("--cert and --key go together: give both or neither".into()),
        };
        let chain = match &request.ca {
            Some(path) => {
                let cas = load::certificates(path).map_err(|e| e.to_string())?;
                Some(
                    ChainVerifier::new(
                        &cas,
                        request.verify_depth,
                        PeerRole::Server,
                        None,
                        &provider,
                    )
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                )
            }
            None => None,
        };

        let observed = Arc::new(Mutex::new(ObservedCell::default()));
        let verifier = Arc::new(RecordingVerifier {
            policy: UpstreamCertPolicy {
                chain,
                rules: Default::default(),
                algorithms: provider.signature_verification_algorithms,
            },
            observed: observed.clone(),
        });
        let resolver = Arc::new(RecordingResolver {
            ours: ours.as_ref().map(|o| o.key.clone()),
            observed: observed.clone(),
        });
        // With a request, HTTP/1.1, whose failures carry the TLS error that explains them
        // (h2 reports only "connection error"); without, offer h2 too, to show what the
        // server would pick.
        let config = client::config(
            provider,
            &request.versions,
            verifier,
            Some(resolver),
            request.http.is_none(),
            rustls::client::Resumption::disabled(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Probe {
            request,
            name,
            server_name,
            ours,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            observed,
        })
    }

    /// Dials the target, and says where it got.
    async fn connect(&self, report: &mut Report) -> Result<tokio::net::TcpStream, Diagnosis> {
        let tcp = dial(&self.request.target).await?;
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| self.request.target.clone());
        report.push(
            Verdict::Ok,
            "connect",
            format!("connected to {peer}, server name \"{}\"", self.name),
        );
        Ok(tcp)
    }

    /// The TLS handshake; when it fails, what it revealed and the sentence for why.
    async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        report: &mut Report,
    ) -> Result<TlsStream, Diagnosis> {
        let handshake = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await;
        let failure = match handshake {
            Ok(Ok(stream)) => return Ok(stream),
            Err(_) => None,
            Ok(Err(error)) => Some(error),
        };
        let seen = self.take_observed();
        report_observed(report, &seen, self.ours.as_ref());
        Err(match failure {
            None => format!(
                "the TLS handshake did not finish within {}s: is {} a TLS port?",
                HANDSHAKE_TIMEOUT.as_secs(),
                self.request.target
            ),
            Some(error) => self.handshake_failure(&error, &seen),
        })
    }

    /// What the verifier and the resolver recorded in the last handshake.
    fn take_observed(&self) -> Observed {
        std::mem::take(&mut self.observed.lock().unwrap_or_else(|e| e.into_inner()).0)
    }

    fn handshake_failure(
        &self,
        error: &(dyn std::error::Error + 'static),
        seen: &Observed,
    ) -> String {
        handshake_failure(error, seen, self.ours.as_ref(), self.request)
    }

    /// Without a request: what can be told of the server's verdict on our certificate, and
    /// a failure when the request was not sent because the server's certificate failed.
    fn report_unrequested(
        &self,
        report: &mut Report,
        stream: &TlsStream,
        seen: &Observed,
        tls13: bool,
    ) {
        if seen.requested.is_some() {
            let tickets = stream.get_ref().1.tls13_tickets_received();
            let words = match &self.ours {
                Some(_) if tls13 && tickets == 0 => {
                    "no refusal within 2s (the server sent no session ticket to confirm acceptance)"
                }
                Some(_) => "the handshake completed with our certificate (a server such as nginx judges it only at the first request, and none was sent)",
                None => "none sent, and the server completed the handshake without one (a server such as nginx refuses only at the first request, and none was sent)",
            };
            report.push(Verdict::Ok, "client cert", words);
        }
        if let Some(http) = &self.request.http {
            report.push(
                Verdict::Failure,
                "http",
                format!(
                    "{} {} not sent: the server's certificate did not verify",
                    http.method, http.path
                ),
            );
        }
    }

    /// Sends the request, reports the answer, and judges our certificate by it.
    async fn send(
        &self,
        report: &mut Report,
        stream: TlsStream,
        http: &HttpProbe,
        seen: &Observed,
    ) -> Result<(), Diagnosis> {
        let mut answer = exchange(stream, &http.method, &http.path, &self.name)
            .await
            .map_err(|error| self.request_failure(error, http, seen))?;
        report_answer(report, &http.method, &http.path, &answer);
        // nginx gives the reason of a 400 only in its page, which a HEAD does not get: ask
        // again with GET on a new connection (a refusal closes the first one).
        if http.method == hyper::Method::HEAD
            && answer.status == hyper::StatusCode::BAD_REQUEST
            && answer.body_len == 0
        {
            match self.get_again(http, seen).await {
                Ok(page) => {
                    report.push(
                        Verdict::Ok,
                        "http",
                        format!(
                            "asked again with GET {} to read why (a HEAD gets no page): {}",
                            http.path,
                            answer_summary(&page)
                        ),
                    );
                    answer = page;
                }
                Err(reason) => report.push(
                    Verdict::Warning,
                    "http",
                    format!(
                        "asked again with GET {} to read why, which failed: {reason}",
                        http.path
                    ),
                ),
            }
        }
        judge_answer(report, &answer, seen, self.ours.as_ref())
    }

    /// `GET PATH` on a new connection, for the page a HEAD did not get.
    async fn get_again(&self, http: &HttpProbe, seen: &Observed) -> Result<Answer, String> {
        let tcp = dial(&self.request.target).await?;
        let stream = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| "the second handshake did not finish in time".to_string())?
        .map_err(|e| format!("the second handshake failed: {e}"))?;
        exchange(stream, &hyper::Method::GET, &http.path, &self.name)
            .await
            .map_err(|error| self.request_failure(error, http, seen))
    }

    /// The sentence for a request that got no answer: a TLS refusal is diagnosed as one.
    fn request_failure(&self, error: GetError, http: &HttpProbe, seen: &Observed) -> String {
        match error {
            GetError::Failed(error) if find_rustls_error(&error).is_some() => {
                self.handshake_failure(&error, seen)
            }
            GetError::Failed(error) => format!("{} {} failed: {error}", http.method, http.path),
            GetError::Other(reason) => reason,
        }
    }
}

/// The line for what the handshake negotiated; true for TLS 1.3.
fn report_negotiated(report: &mut Report, stream: &TlsStream) -> bool {
    let connection = stream.get_ref().1;
    let version = connection.protocol_version();
    let suite = connection
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let group = connection
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "-".into());
    let alpn = connection
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "none".into());
    let version_name = version.map(protocol_name).unwrap_or("unknown");
    report.push(
        Verdict::Ok,
        "tls",
        format!("{version_name}, cipher {suite}, key exchange {group}, ALPN {alpn}"),
    );
    version == Some(rustls::ProtocolVersion::TLSv1_3)
}

/// The server's verdict on our certificate, read from its answer to the request.
fn judge_answer(
    report: &mut Report,
    answer: &Answer,
    seen: &Observed,
    ours: Option<&OurCertificate>,
) -> Result<(), Diagnosis> {
    match CertificateRefusal::recognise(answer.status, &answer.page) {
        Some(refusal) => {
            report.push(
                Verdict::Failure,
                "client cert",
                format!(
                    "refused after the handshake: the server answered 400 \"{}\"",
                    refusal.nginx_words()
                ),
            );
            return Err(http_refusal(refusal, seen, ours));
        }
        _ if seen.requested.is_none() => {}
        None if answer.status == hyper::StatusCode::BAD_REQUEST => {
            // The http line has warned already; say what it means for our certificate.
            report.push(
                Verdict::Warning,
                "client cert",
                "not known: the server answered 400 to the request, which is not a refusal of a certificate (nginx words those \"The SSL certificate error\" and \"No required SSL certificate was sent\")",
            );
        }
        None => {
            let words = match ours {
                Some(_) => "our certificate was accepted (the server answered the request)",
                None => "none sent, and the server answered the request without one",
            };
            report.push(Verdict::Ok, "client cert", words);
        }
    }
    Ok(())
}

/// Dials the target, with the sentence for each way that fails.
async fn dial(target: &str) -> Result<tokio::net::TcpStream, Diagnosis> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Err(_) => Err(format!(
            "no answer from {target} within {}s: a firewall drops the packets, or the host is down",
            CONNECT_TIMEOUT.as_secs()
        )),
        Ok(Err(error)) => Err(connect_failure(target, &error)),
        Ok(Ok(tcp)) => Ok(tcp),
    }
}

/// One sentence for nginx's refusal of our certificate, read from its 400 page.
fn http_refusal(
    refusal: CertificateRefusal,
    seen: &Observed,
    ours: Option<&OurCertificate>,
) -> String {
    let answered = format!(
        " (it answered 400 \"{}\" after the handshake)",
        refusal.nginx_words()
    );
    let names = seen.requested.as_deref().unwrap_or_default();
    match (refusal, ours) {
        (_, None) => no_certificate_sent(names, &answered),
        (CertificateRefusal::Invalid, Some(ours)) => match ours.visible_problem(names) {
            Some(problem) => format!("the server refused our certificate{answered}: {problem}"),
            None => format!(
                "the server refused our certificate \"{}\"{answered} although it is valid and its issuer's name is one the server accepts: the server's error log has the reason (\"client SSL certificate verify error\": a CRL, the chain depth, or another CA that carries the same name)",
                ours.summary.subject
            ),
        },
        (CertificateRefusal::Missing, Some(ours)) => {
            let why = match seen.requested {
                None => "it did not ask for one in the handshake (nginx asks in the server block of the name sent, so check --server-name)",
                Some(_) => "its error log has the reason",
            };
            format!(
                "the server says no client certificate was sent{answered}, though we had \"{}\": {why}",
                ours.summary.subject
            )
        }
    }
}

/// The sentence for a server that wants a client certificate when we sent none.
fn no_certificate_sent(names: &[String], how: &str) -> String {
    let from = if names.is_empty() {
        String::new()
    } else {
        format!(" issued by one of: {}", quoted_list(names))
    };
    format!(
        "the server requires a client certificate and we sent none{how}: pass --cert and --key with a certificate{from}"
    )
}

/// The error that ended a connection task, or else the request's own.
async fn connection_error(
    connection: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    request_error: hyper::Error,
) -> hyper::Error {
    match tokio::time::timeout(Duration::from_secs(1), connection).await {
        Ok(Ok(Err(error))) => error,
        _ => request_error,
    }
}

/// Why `--get` got no response.
enum GetError {
    Failed(hyper::Error),
    Other(String),
}

/// Reads briefly after a TLS 1.3 handshake: an alert means our certificate was refused.
async fn await_verdict(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Option<std::io::Error> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + VERDICT_WAIT;
    let mut buf = [0u8; 1024];
    while tokio::time::Instant::now() < deadline {
        // Tickets are processed inside the read; once one has come the server is content.
        if stream.get_ref().1.tls13_tickets_received() > 0 {
            return None;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => {
                return Some(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection right after the handshake",
                ))
            }
            Ok(Ok(_)) => return None,
            Ok(Err(error)) => return Some(error),
        }
    }
    None
}

/// Lines for the server's chain, its verification, and the server's certificate request.
fn report_observed(report: &mut Report, seen: &Observed, ours: Option<&OurCertificate>) {
    let now = summary::now();
    for (index, der) in seen.server_chain.iter().enumerate() {
        let Some(cert) = CertSummary::parse(der) else {
            report.push(
                Verdict::Warning,
                "server chain",
                format!("{index}: does not parse"),
            );
            continue;
        };
        report.push(
            Verdict::Ok,
            "server chain",
            format!(
                "{index}: \"{}\" issued by \"{}\", valid until {} ({} days left)",
                cert.subject,
                cert.issuer,
                cert.not_after_text(),
                cert.days_left(now)
            ),
        );
    }
    match &seen.server_verdict {
        _ if seen.server_chain.is_empty() => {}
        None => report.push(
            Verdict::Warning,
            "server cert",
            "not verified: give --ca FILE with the CA that should have issued it",
        ),
        Some(Ok(())) => report.push(
            Verdict::Ok,
            "server cert",
            "verified against --ca, and it covers the server name",
        ),
        Some(Err(rejection)) => report.push(
            Verdict::Failure,
            "server cert",
            format!("NOT trusted: {}", server_rejection_advice(rejection)),
        ),
    }
    match (&seen.requested, ours) {
        (None, _) if seen.server_chain.is_empty() => {}
        (None, Some(_)) => report.push(
            Verdict::Warning,
            "client cert",
            "the server did not ask for a client certificate, so ours was not sent",
        ),
        (None, None) => report.push(
            Verdict::Ok,
            "client cert",
            "the server did not ask for a client certificate",
        ),
        (Some(names), ours) => {
            let accepted = if names.is_empty() {
                "it lists no CA names".to_string()
            } else {
                format!("it accepts certificates issued by: {}", quoted_list(names))
            };
            let sent = match ours {
                Some(ours) => format!(
                    "sent \"{}\" (issued by \"{}\")",
                    ours.summary.subject, ours.issuers[0]
                ),
                None => "none sent (no --cert)".to_string(),
            };
            report.push(
                Verdict::Ok,
                "client cert",
                format!("requested; {accepted}; {sent}"),
            );
            if let Some(ours) = ours.filter(|ours| ours.issuer_unlisted(names)) {
                report.push(
                    Verdict::Warning,
                    "client cert",
                    format!(
                        "the issuer of our certificate (\"{}\") is not among the CA names the server accepts: expect a refusal",
                        ours.issuers[0]
                    ),
                );
            }
        }
    }
}

fn server_rejection_advice(rejection: &ChainRejection) -> String {
    match rejection {
        ChainRejection::NameMismatch { .. } => {
            format!("{rejection}; connect by a name it covers, or check another with --server-name")
        }
        ChainRejection::TooDeep { .. } => {
            format!("{rejection}; raise --verify-depth if this chain is expected")
        }
        _ => rejection.to_string(),
    }
}

fn connect_failure(target: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::ConnectionRefused => {
            format!("cannot connect to {target}: connection refused, nothing listens on that port")
        }
        K::TimedOut => format!("cannot connect to {target}: timed out"),
        _ if error.to_string().contains("lookup") || error.to_string().contains("resolve") => {
            format!("cannot resolve the host of {target}: {error}")
        }
        _ => format!("cannot connect to {target}: {error}"),
    }
}

/// One sentence naming the cause of a failed handshake (or of a refusal read after it).
fn handshake_failure(
    error: &(dyn std::error::Error + 'static),
    seen: &Observed,
    ours: Option<&OurCertificate>,
    request: &ProbeRequest,
) -> String {
    let Some(tls) = find_rustls_error(error) else {
        return match find_io_kind(error) {
            Some(std::io::ErrorKind::UnexpectedEof) | Some(std::io::ErrorKind::ConnectionReset) => {
                match (&seen.requested, ours) {
                    (Some(_), None) => "the server closed the connection after asking for a client certificate that we did not send: pass --cert and --key".into(),
                    (Some(names), Some(ours)) => ours.visible_problem(names).unwrap_or_else(|| {
                        "the server closed the connection after receiving our certificate, without saying why: its log has the reason".into()
                    }),
                    (None, _) => "the server closed the connection during the handshake without a TLS alert: it may not speak TLS on this port, or refuses our TLS versions; its log has the reason".into(),
                }
            }
            _ => format!("the connection failed: {error}"),
        };
    };
    let requested = seen.requested.as_deref();
    match tls {
        rustls::Error::AlertReceived(alert) => {
            let alert = *alert;
            let about_our_cert = matches!(
                alert,
                AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::UnknownCA
                    | AlertDescription::AccessDenied
                    | AlertDescription::DecryptError
            ) || (alert == AlertDescription::HandshakeFailure
                && requested.is_some());
            match (requested, ours) {
                (Some(names), None) if about_our_cert => no_certificate_sent(names, ""),
                (Some(names), Some(ours)) if about_our_cert => {
                    match ours.visible_problem(names) {
                        Some(problem) => format!("the server refused our certificate: {problem}"),
                        None if alert == AlertDescription::CertificateRevoked => format!(
                            "the server refused our certificate \"{}\" as revoked: get a new one",
                            ours.summary.subject
                        ),
                        None => format!(
                            "the server refused our certificate \"{}\" (alert {alert:?}) although it is valid and its issuer's name is one the server accepts: the server's log has the reason (an allow rule, a CRL, the chain depth, or another CA that carries the same name)",
                            ours.summary.subject
                        ),
                    }
                }
                _ if alert == AlertDescription::ProtocolVersion => {
                    format!(
                        "the server does not accept {}: try the other version, or none to let the two sides agree",
                        versions_text(&request.versions)
                    )
                }
                _ if alert == AlertDescription::HandshakeFailure => {
                    "the server refused the handshake (alert HandshakeFailure): no cipher suite, group or version in common; its log names which".into()
                }
                _ => tls_error(tls),
            }
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "{} did not answer with TLS: it is probably a plain-HTTP port (try curl http://{})",
            request.target, request.target
        ),
        rustls::Error::PeerIncompatible(_) => format!(
            "{}; we offered {}",
            tls_error(tls),
            versions_text(&request.versions)
        ),
        _ => tls_error(tls),
    }
}

fn versions_text(versions: &[&'static rustls::SupportedProtocolVersion]) -> String {
    version_names(versions).join(" and ")
}

/// A response to the probe's request: the head, and the start of the body.
struct Answer {
    status: hyper::StatusCode,
    headers: hyper::HeaderMap,
    /// The first `PAGE_LIMIT` bytes of the body, enough for nginx's error pages.
    page: bytes::Bytes,
    body_len: u64,
}

/// Sends `METHOD PATH` over the probed connection and reads the answer.
async fn exchange(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    method: &hyper::Method,
    path: &str,
    host: &str,
) -> Result<Answer, GetError> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    let io = TokioIo::new(stream);
    let request = hyper::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "certgate-probe")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| GetError::Other(format!("{method} {path}: {e}")))?;
    let exchange = async {
        // A refusal (a TLS alert) ends the connection task; the request may then fail only
        // with "canceled", so the connection's own error is the one worth reporting.
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        let connection = tokio::spawn(connection);
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => return Err(connection_error(connection, error).await),
        };
        let (parts, mut body) = response.into_parts();
        let (mut page, mut body_len) = (Vec::new(), 0u64);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                body_len += data.len() as u64;
                let room = PAGE_LIMIT.saturating_sub(page.len());
                page.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        Ok::<_, hyper::Error>(Answer {
            status: parts.status,
            headers: parts.headers,
            page: page.into(),
            body_len,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Err(_) => Err(GetError::Other(format!(
            "{method} {path}: no response within {}s",
            REQUEST_TIMEOUT.as_secs()
        ))),
        Ok(Err(error)) => Err(GetError::Failed(error)),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// "400 Bad Request (215 bytes of body, titled "...")".
fn answer_summary(answer: &Answer) -> String {
    let title = match html_title(&answer.page) {
        Some(title) => format!(", titled \"{}\"", title.escape_debug()),
        None => String::new(),
    };
    format!(
        "{} ({} bytes of body{title})",
        answer.status, answer.body_len
    )
}

/// The status line and headers of an answer; a 400 or a 5xx is a warning.
fn report_answer(report: &mut Report, method: &hyper::Method, path: &str, answer: &Answer) {
    let verdict =
        if answer.status.is_server_error() || answer.status == hyper::StatusCode::BAD_REQUEST {
            Verdict::Warning
        } else {
            Verdict::Ok
        };
    report.push(
        verdict,
        "http",
        format!("{method} {path} -> {}", answer_summary(answer)),
    );
    for (name, value) in &answer.headers {
        report.push(
            Verdict::Ok,
            "http",
            format!("  {name}: {}", String::from_utf8_lossy(value.as_bytes())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_names_its_host_and_must_have_a_port() {
        assert_eq!(host_of("localhost:8443").unwrap(), "localhost");
        assert_eq!(host_of("[::1]:8443").unwrap(), "::1");
        assert_eq!(
            host_of("localhost").unwrap_err(),
            "\"localhost\": give HOST:PORT, for example localhost:443"
        );
        assert_eq!(
            host_of("localhost:https").unwrap_err(),
            "\"localhost:https\": \"https\" is not a port number"
        );
    }
}
