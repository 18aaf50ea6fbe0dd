//! `certgate cert ...`: the openssl commands of the seed, made readable.
//!
//! `inspect` describes every certificate in PEM or DER files; `convert` moves certificates
//! and keys between PEM and DER, writing keys 0600.

use crate::tls::identity::{lowercase_hex, pem_block, pem_encode, presented_names, sha256};
use crate::tls::summary::{self, CertSummary};
use crate::tls::verify::{ChainVerifier, PeerRole};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use x509_parser::prelude::*;

/// Why `cert inspect` or `cert convert` could not do its work, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CertToolError {
    #[error(transparent)]
    Load(#[from] crate::tls::load::LoadError),
    #[error("{}: certificate #{index} does not parse: {reason}", path.display())]
    Unparsable {
        path: PathBuf,
        /// From 1.
        index: usize,
        reason: x509_parser::nom::Err<X509Error>,
    },
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{} holds {count} certificates, and a DER file holds one: convert them one at a time or keep PEM", path.display())]
    SeveralForDer { path: PathBuf, count: usize },
    #[error("{} holds neither a certificate nor a private key", path.display())]
    NeitherCertificateNorKey { path: PathBuf },
    #[error("refusing to write a private key into {}: {problem}", path.display())]
    ExposedKeyFile {
        path: PathBuf,
        problem: crate::tls::load::LoadError,
    },
}

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl WriteError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
        move |source| WriteError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One certificate described for a person (and, as JSON, for scripts).
#[derive(Debug, serde::Serialize)]
pub struct CertificateReport {
    pub file: String,
    /// Position in the file, from 1.
    pub index: usize,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
    pub sans: Vec<String>,
    pub key: String,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub ca: Option<bool>,
    pub path_length: Option<u32>,
    pub sha256: String,
    pub spki_sha256: String,
}

fn describe_key(cert: &X509Certificate<'_>) -> String {
    use x509_parser::oid_registry as oids;
    let spki = cert.public_key();
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == oids::OID_SIG_ED25519 {
        return "Ed25519".into();
    }
    if *algorithm == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(oid) if oid == oids::OID_EC_P256 => "ECDSA P-256".into(),
            Some(oid) if oid == oids::OID_NIST_EC_P384 => "ECDSA P-384".into(),
            Some(oid) if oid == oids::OID_NIST_EC_P521 => "ECDSA P-521".into(),
            Some(oid) => format!("ECDSA curve {oid}"),
            None => "ECDSA (unknown curve)".into(),
        };
    }
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("RSA {} bits", rsa.key_size()),
        _ => format!("algorithm {algorithm}"),
    }
}

/// The purposes an extended key usage extension lists, by their OpenSSL names.
fn usage_names(eku: &ExtendedKeyUsage<'_>) -> Vec<String> {
    [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// Describes every certificate of a file (PEM bundle or DER).
pub fn inspect(path: &Path) -> Result<Vec<CertificateReport>, CertToolError> {
    let certs = crate::tls::load::certificates(path)?;
    let now = summary::now();
    let mut reports = Vec::new();
    for (index, der) in certs.iter().enumerate() {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|reason| CertToolError::Unparsable {
                path: path.to_path_buf(),
                index: index + 1,
                reason,
            })?;
        let mut key_usage = Vec::new();
        if let Ok(Some(usage)) = cert.key_usage() {
            let u = usage.value;
            for (set, name) in [
                (u.digital_signature(), "digitalSignature"),
                (u.non_repudiation(), "nonRepudiation"),
                (u.key_encipherment(), "keyEncipherment"),
                (u.data_encipherment(), "dataEncipherment"),
                (u.key_agreement(), "keyAgreement"),
                (u.key_cert_sign(), "keyCertSign"),
                (u.crl_sign(), "cRLSign"),
            ] {
                if set {
                    key_usage.push(name.to_string());
                }
            }
        }
        let extended_key_usage = match cert.extended_key_usage() {
            Ok(Some(eku)) => usage_names(eku.value),
            _ => Vec::new(),
        };
        let (ca, path_length) = match cert.basic_constraints() {
            Ok(Some(bc)) => (Some(bc.value.ca), bc.value.path_len_constraint),
            _ => (None, None),
        };
        let summary = CertSummary::of(&cert);
        reports.push(CertificateReport {
            file: path.display().to_string(),
            index: index + 1,
            not_before: summary.not_before_text(),
            not_after: summary.not_after_text(),
            days_left: summary.days_left(now),
            spki_sha256: lowercase_hex(&summary.spki_sha256),
            subject: summary.subject,
            issuer: summary.issuer,
            serial: summary.serial,
            sans: presented_names(der)
                .into_iter()
                .filter(|n| !n.starts_with("CN:"))
                .collect(),
            key: describe_key(&cert),
            key_usage,
            extended_key_usage,
            ca,
            path_length,
            sha256: lowercase_hex(&sha256(der)),
        });
    }
    Ok(reports)
}

impl std::fmt::Display for CertificateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let validity = if self.days_left < 0 {
            format!("EXPIRED {} days ago", -self.days_left)
        } else {
            format!("{} days left", self.days_left)
        };
        let list = |items: &[String]| {
            if items.is_empty() {
                "(none)".to_string()
            } else {
                items.join(", ")
            }
        };
        writeln!(f, "{} #{}", self.file, self.index)?;
        writeln!(f, "  subject      {}", self.subject)?;
        writeln!(f, "  issuer       {}", self.issuer)?;
        writeln!(f, "  serial       {}", self.serial)?;
        writeln!(
            f,
            "  valid        {} to {} ({validity})",
            self.not_before, self.not_after
        )?;
        writeln!(f, "  names        {}", list(&self.sans))?;
        writeln!(f, "  key          {}", self.key)?;
        writeln!(f, "  key usage    {}", list(&self.key_usage))?;
        writeln!(f, "  ext. usage   {}", list(&self.extended_key_usage))?;
        let ca = match (self.ca, self.path_length) {
            (Some(true), Some(n)) => format!("CA, at most {n} intermediate(s) below"),
            (Some(true), None) => "CA".into(),
            _ => "not a CA".into(),
        };
        writeln!(f, "  constraints  {ca}")?;
        writeln!(f, "  sha256       {}", self.sha256)?;
        write!(
            f,
            "  spki sha256  {} (for --allow-pin-sha256)",
            self.spki_sha256
        )
    }
}

/// The output encoding of `cert convert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Pem,
    Der,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Pem => "PEM",
            Encoding::Der => "DER",
        }
    }
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Converts certificates or a key between PEM and DER. `to` defaults to the other encoding.
/// Keys are written 0600, and never into an existing file others can read.
pub fn convert(input: &Path, output: &Path, to: Option<Encoding>) -> Result<String, CertToolError> {
    let bytes = std::fs::read(input).map_err(|source| CertToolError::Unreadable {
        path: input.to_path_buf(),
        source,
    })?;
    let from = if is_pem(&bytes) {
        Encoding::Pem
    } else {
        Encoding::Der
    };
    let to = to.unwrap_or(match from {
        Encoding::Pem => Encoding::Der,
        Encoding::Der => Encoding::Pem,
    });
    let certs: Vec<CertificateDer<'static>> = match from {
        Encoding::Pem => CertificateDer::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .collect(),
        Encoding::Der if X509Certificate::from_der(&bytes).is_ok() => {
            vec![CertificateDer::from(bytes.clone())]
        }
        Encoding::Der => Vec::new(),
    };
    if !certs.is_empty() {
        let out: Vec<u8> = match to {
            Encoding::Pem => certs
                .iter()
                .map(|c| pem_encode(c))
                .collect::<String>()
                .into_bytes(),
            Encoding::Der if certs.len() == 1 => certs[0].to_vec(),
            Encoding::Der => {
                return Err(CertToolError::SeveralForDer {
                    path: input.to_path_buf(),
                    count: certs.len(),
                })
            }
        };
        std::fs::write(output, out).map_err(WriteError::at(output))?;
        return Ok(format!(
            "wrote {} certificate(s) to {} as {}",
            certs.len(),
            output.display(),
            to.name()
        ));
    }
    let key = match from {
        Encoding::Pem => PrivateKeyDer::from_pem_slice(&bytes).ok(),
        Encoding::Der => PrivateKeyDer::try_from(bytes.clone()).ok(),
    }
    .ok_or_else(|| CertToolError::NeitherCertificateNorKey {
        path: input.to_path_buf(),
    })?;
    if let Err(problem) = crate::tls::load::key_permissions(output) {
        if output.exists() {
            return Err(CertToolError::ExposedKeyFile {
                path: output.to_path_buf(),
                problem,
            });
        }
    }
    let out: Vec<u8> = match to {
        Encoding::Der => key.secret_der().to_vec(),
        Encoding::Pem => {
            let label = match &key {
                PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
                PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
                _ => "PRIVATE KEY",
            };
            pem_block(label, key.secret_der()).into_bytes()
        }
    };
    write_private(output, &out)?;
    Ok(format!(
        "wrote the private key to {} as {}, mode 0600",
        output.display(),
        to.name()
    ))
}

/// Writes a file readable by its owner only, from its creation on.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), WriteError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(WriteError::at(path))?;
    // An existing file keeps its mode on open: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| file.write_all(contents))
        .map_err(WriteError::at(path))
}

/// What `cert check` looks at.
pub struct CheckRequest<'a> {
    pub cert: &'a Path,
    /// A key file or a `pkcs11:` URI.
    pub key: Option<&'a str>,
    /// The module a token key whose URI names none is opened with (`--pkcs11-module`).
    pub pkcs11_module: Option<&'a Path>,
    pub ca: Option<&'a Path>,
    /// "server" or "client".
    pub role: Option<&'a str>,
    pub name: Option<&'a str>,
    pub warn_days: i64,
    pub verify_depth: u32,
}

/// How one check came out; the process exit code is the worst of them (0, 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok = 0,
    Warning = 1,
    Failure = 2,
}

/// One line of `cert check`'s report.
pub struct CheckLine {
    pub verdict: Verdict,
    pub check: &'static str,
    pub words: String,
}

/// A report, a line per finding (`cert check`, `probe`); the exit code is the worst verdict.
#[derive(Default)]
pub struct Report {
    pub lines: Vec<CheckLine>,
}

impl Report {
    pub(crate) fn push(&mut self, verdict: Verdict, check: &'static str, words: impl Into<String>) {
        self.lines.push(CheckLine {
            verdict,
            check,
            words: words.into(),
        });
    }

    pub fn worst(&self) -> Verdict {
        self.lines
            .iter()
            .map(|l| l.verdict)
            .max()
            .unwrap_or(Verdict::Ok)
    }
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warning => "WARN",
            Verdict::Failure => "FAIL",
        };
        write!(f, "{tag}  {:<12} {}", self.check, self.words)
    }
}

fn usage_name(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Client => "clientAuth",
        PeerRole::Server => "serverAuth",
    }
}

fn role_name(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Client => "client",
        PeerRole::Server => "server",
    }
}

fn allows(eku: &ExtendedKeyUsage<'_>, role: PeerRole) -> bool {
    match role {
        PeerRole::Client => eku.client_auth,
        PeerRole::Server => eku.server_auth,
    }
}

/// Without `--role`: the roles a certificate's extended key usage claims, and the usage
/// line that says which were checked. No extension, or anyExtendedKeyUsage, allows either
/// role; the server role is checked then, as the one a name and a chain matter most for.
fn claimed_roles(eku: Option<&ExtendedKeyUsage<'_>>) -> (Verdict, String, Vec<PeerRole>) {
    let Some(eku) = eku.filter(|eku| !eku.any) else {
        let what = match eku {
            Some(_) => "its extended key usage is anyExtendedKeyUsage",
            None => "it has no extended key usage",
        };
        return (
            Verdict::Ok,
            format!("no --role given and {what}, so it may serve either role: checked as a TLS server certificate (serverAuth); give --role client to check it as a client's"),
            vec![PeerRole::Server],
        );
    };
    let listed = usage_names(eku).join(", ");
    match (eku.server_auth, eku.client_auth) {
        (true, true) => (
            Verdict::Ok,
            format!("no --role given; its extended key usage ({listed}) allows serverAuth and clientAuth, so it is checked as both a TLS server and a TLS client certificate"),
            vec![PeerRole::Server, PeerRole::Client],
        ),
        (server, _) => {
            let role = if server { PeerRole::Server } else { PeerRole::Client };
            if !allows(eku, role) {
                return (
                    Verdict::Failure,
                    format!("its extended key usage ({listed}) allows neither serverAuth nor clientAuth: it cannot be used for TLS; issue one with serverAuth or clientAuth"),
                    vec![PeerRole::Server],
                );
            }
            (
                Verdict::Ok,
                format!(
                    "no --role given; its extended key usage ({listed}) allows {} only, so it is checked as a TLS {} certificate",
                    usage_name(role),
                    role_name(role)
                ),
                vec![role],
            )
        }
    }
}

/// Runs every check that the given files allow, in plain words.
pub fn check(request: &CheckRequest<'_>) -> Vec<CheckLine> {
    let mut report = Report::default();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let chain = match crate::tls::load::certificates(request.cert) {
        Ok(chain) => chain,
        Err(error) => {
            report.push(Verdict::Failure, "certificate", error.to_string());
            return report.lines;
        }
    };
    let Ok((_, leaf)) = X509Certificate::from_der(&chain[0]) else {
        report.push(
            Verdict::Failure,
            "certificate",
            format!(
                "{}: the first certificate does not parse",
                request.cert.display()
            ),
        );
        return report.lines;
    };
    let summary = CertSummary::of(&leaf);
    report.push(
        Verdict::Ok,
        "certificate",
        format!("\"{}\", {}", summary.subject, describe_key(&leaf)),
    );
    check_validity(&mut report, &summary, request.warn_days);
    if let Some(key) = request.key {
        check_key(
            &mut report,
            request.cert,
            key,
            request.pkcs11_module,
            &provider,
        );
    }
    let eku = match leaf.extended_key_usage() {
        Ok(Some(eku)) => Some(eku.value),
        _ => None,
    };
    let roles = check_usage(&mut report, eku, request.role);
    if let Some(ca) = request.ca {
        check_chain(
            &mut report,
            &chain,
            ca,
            request.verify_depth,
            &roles,
            &provider,
        );
    }
    if let Some(name) = request.name {
        check_name(&mut report, &chain[0], name);
    }
    report.lines
}

/// Validity now, and the warning window.
fn check_validity(report: &mut Report, summary: &CertSummary, warn_days: i64) {
    let now = summary::now();
    let days_left = summary.days_left(now);
    let (verdict, words) = if now < summary.not_before {
        (
            Verdict::Failure,
            format!("not valid yet: it starts {}", summary.not_before_text()),
        )
    } else if now > summary.not_after {
        (
            Verdict::Failure,
            format!(
                "expired {} ({} days ago): renew it",
                summary.not_after_text(),
                -days_left
            ),
        )
    } else if days_left < warn_days {
        (
            Verdict::Warning,
            format!(
                "expires in {days_left} days ({}), within the {warn_days}-day warning window: renew it soon",
                summary.not_after_text()
            ),
        )
    } else {
        (
            Verdict::Ok,
            format!(
                "valid for {days_left} more days (until {})",
                summary.not_after_text()
            ),
        )
    };
    report.push(verdict, "validity", words);
}

/// The key: matches the certificate, and only its owner can read it.
fn check_key(
    report: &mut Report,
    cert: &Path,
    key: &str,
    default_module: Option<&Path>,
    provider: &rustls::crypto::CryptoProvider,
) {
    use crate::tls::load;
    let source = match load::key_source(key, default_module) {
        Ok(source) => source,
        Err(error) => return report.push(Verdict::Failure, "key", error.to_string()),
    };
    match load::certified_key_from(cert, &source, provider) {
        Ok(_) => report.push(
            Verdict::Ok,
            "key",
            format!("{source} matches the certificate"),
        ),
        Err(error) => report.push(Verdict::Failure, "key", error.to_string()),
    }
    // A key in a token has no file permissions to check.
    let Some(path) = source.file() else {
        return;
    };
    match load::key_permissions(path) {
        Ok(()) => report.push(
            Verdict::Ok,
            "permissions",
            format!("{} is readable by its owner only", path.display()),
        ),
        Err(error) => report.push(Verdict::Warning, "permissions", error.to_string()),
    }
}

/// Usage for the role: the one asked for, or without --role each one the certificate's
/// extended key usage claims (a client certificate is not a broken server certificate).
/// Returns the roles checked, for the chain.
fn check_usage(
    report: &mut Report,
    eku: Option<&ExtendedKeyUsage<'_>>,
    role: Option<&str>,
) -> Vec<PeerRole> {
    let Some(role) = role else {
        let (verdict, words, roles) = claimed_roles(eku);
        report.push(verdict, "usage", words);
        return roles;
    };
    let role = if role == "client" {
        PeerRole::Client
    } else {
        PeerRole::Server
    };
    let wanted = usage_name(role);
    match eku {
        Some(eku) if eku.any || allows(eku, role) => report.push(
            Verdict::Ok,
            "usage",
            format!("its extended key usage allows {wanted}"),
        ),
        Some(_) => report.push(Verdict::Failure, "usage", format!("its extended key usage does not allow {wanted}: it cannot be used as a TLS {} certificate; issue one with {wanted}", role_name(role))),
        None => report.push(
            Verdict::Ok,
            "usage",
            format!("no extended key usage, so {wanted} is allowed"),
        ),
    }
    vec![role]
}

/// The chain, to the CA, within the depth, for each role checked.
fn check_chain(
    report: &mut Report,
    chain: &[CertificateDer<'static>],
    ca: &Path,
    verify_depth: u32,
    roles: &[PeerRole],
    provider: &rustls::crypto::CryptoProvider,
) {
    let roots = crate::tls::load::certificates(ca).map_err(|e| e.to_string());
    let verified = roles.iter().try_for_each(|role| {
        let roots = roots.as_ref().map_err(Clone::clone)?;
        ChainVerifier::new(roots, verify_depth, *role, None, provider)
            .map_err(|e| e.to_string())?
            .verify(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
            .map_err(|rejection| rejection.to_string())
    });
    match verified {
        Ok(()) => report.push(
            Verdict::Ok,
            "chain",
            format!(
                "verifies to {} within depth {verify_depth}, for {}",
                ca.display(),
                roles
                    .iter()
                    .map(|role| usage_name(*role))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ),
        Err(reason) => report.push(Verdict::Failure, "chain", reason),
    }
}

/// The name clients will connect to.
fn check_name(report: &mut Report, leaf: &CertificateDer<'_>, name: &str) {
    let covered = rustls::pki_types::ServerName::try_from(name)
        .ok()
        .zip(webpki::EndEntityCert::try_from(leaf).ok())
        .is_some_and(|(server_name, cert)| {
            cert.verify_is_valid_for_subject_name(&server_name).is_ok()
        });
    if covered {
        report.push(Verdict::Ok, "name", format!("covers \"{name}\""));
    } else {
        report.push(
            Verdict::Failure,
            "name",
            format!(
                "does not cover \"{name}\"; it presents [{}]",
                presented_names(leaf).join(", ")
            ),
        );
    }
}
