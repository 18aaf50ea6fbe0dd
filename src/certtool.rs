//! `certgate cert ...`: the openssl commands of the seed, made readable.
//!
//! `inspect` describes every certificate in PEM or DER files; `convert` moves certificates
//! and keys between PEM and DER, writing keys 0600.

use crate::tls::identity::{
    distinguished_name, lowercase_hex, pem_block, pem_encode, presented_names,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use x509_parser::prelude::*;

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

fn time_text(time: &ASN1Time) -> String {
    let t = time.to_datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
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

fn sha256_hex(bytes: &[u8]) -> String {
    lowercase_hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Describes every certificate of a file (PEM bundle or DER).
pub fn inspect(path: &Path) -> Result<Vec<CertificateReport>, String> {
    let certs = crate::tls::load::certificates(path).map_err(|e| e.to_string())?;
    let now = rustls::pki_types::UnixTime::now().as_secs() as i64;
    let mut reports = Vec::new();
    for (index, der) in certs.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
            format!(
                "{}: certificate #{} does not parse: {e}",
                path.display(),
                index + 1
            )
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
        let mut extended_key_usage = Vec::new();
        if let Ok(Some(eku)) = cert.extended_key_usage() {
            let e = eku.value;
            for (set, name) in [
                (e.any, "any"),
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
            ] {
                if set {
                    extended_key_usage.push(name.to_string());
                }
            }
        }
        let (ca, path_length) = match cert.basic_constraints() {
            Ok(Some(bc)) => (Some(bc.value.ca), bc.value.path_len_constraint),
            _ => (None, None),
        };
        let not_after = cert.validity().not_after.timestamp();
        reports.push(CertificateReport {
            file: path.display().to_string(),
            index: index + 1,
            subject: distinguished_name(cert.subject()),
            issuer: distinguished_name(cert.issuer()),
            serial: crate::tls::identity::serial_hex(cert.raw_serial()),
            not_before: time_text(&cert.validity().not_before),
            not_after: time_text(&cert.validity().not_after),
            days_left: (not_after - now).div_euclid(86_400),
            sans: presented_names(der)
                .into_iter()
                .filter(|n| !n.starts_with("CN:"))
                .collect(),
            key: describe_key(&cert),
            key_usage,
            extended_key_usage,
            ca,
            path_length,
            sha256: sha256_hex(der),
            spki_sha256: sha256_hex(cert.public_key().raw),
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

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Converts certificates or a key between PEM and DER. `to` defaults to the other encoding.
/// Keys are written 0600, and never into an existing file others can read.
pub fn convert(input: &Path, output: &Path, to: Option<Encoding>) -> Result<String, String> {
    let bytes =
        std::fs::read(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
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
            Encoding::Pem => certs.iter().map(|c| pem_encode(c)).collect::<String>().into_bytes(),
            Encoding::Der if certs.len() == 1 => certs[0].to_vec(),
            Encoding::Der => {
                return Err(format!(
                    "{} holds {} certificates, and a DER file holds one: convert them one at a time or keep PEM",
                    input.display(),
                    certs.len()
                ))
            }
        };
        std::fs::write(output, out)
            .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
        return Ok(format!(
            "wrote {} certificate(s) to {} as {to:?}",
            certs.len(),
            output.display()
        ));
    }
    let key = match from {
        Encoding::Pem => PrivateKeyDer::from_pem_slice(&bytes).ok(),
        Encoding::Der => PrivateKeyDer::try_from(bytes.clone()).ok(),
    }
    .ok_or_else(|| {
        format!(
            "{} holds neither a certificate nor a private key",
            input.display()
        )
    })?;
    if let Err(problem) = crate::tls::load::key_permissions(output) {
        if output.exists() {
            return Err(format!(
                "refusing to write a private key into {}: {problem}",
                output.display()
            ));
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
        "wrote the private key to {} as {to:?}, mode 0600",
        output.display()
    ))
}

/// Writes a file readable by its owner only, from its creation on.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // An existing file keeps its mode on open: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| file.write_all(contents))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
