//! One certificate in brief: the names, serial, validity and key pin that `/status`,
//! `cert inspect`, `cert check`, the probe and the identity headers all start from, so that
//! each is read from the certificate the same way and days are counted by one rule.

use super::identity::{distinguished_name, serial_hex, sha256};
use super::verify::format_unix;
use x509_parser::prelude::*;

/// A certificate's subject, issuer, serial, validity and key pin.
#[derive(Clone, Debug)]
pub struct CertSummary {
    /// RFC 2253, as OpenSSL (and nginx) print it.
    pub subject: String,
    pub issuer: String,
    /// Uppercase hex, as OpenSSL prints it.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the SubjectPublicKeyInfo: the pin `allow_pin_sha256` takes.
    pub spki_sha256: [u8; 32],
}

impl CertSummary {
    pub fn of(cert: &X509Certificate<'_>) -> CertSummary {
        CertSummary {
            subject: distinguished_name(cert.subject()),
            issuer: distinguished_name(cert.issuer()),
            serial: serial_hex(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            spki_sha256: sha256(cert.public_key().raw),
        }
    }

    /// The summary of a DER certificate; None when it does not parse.
    pub fn parse(der: &[u8]) -> Option<CertSummary> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(CertSummary::of(&cert))
    }

    /// Whole days until notAfter, negative once it has passed.
    pub fn days_left(&self, now: i64) -> i64 {
        days_left(self.not_after, now)
    }

    /// `2026-01-31 12:00:00 UTC`.
    pub fn not_before_text(&self) -> String {
        format_unix(self.not_before)
    }

    pub fn not_after_text(&self) -> String {
        format_unix(self.not_after)
    }
}

/// Whole days from `now` to `not_after` (Unix seconds), rounded down: a certificate that
/// expires in 23 hours has 0 days left, one that expired an hour ago -1.
pub fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(86_400)
}

/// The current time in Unix seconds, as validity is compared.
pub fn now() -> i64 {
    rustls::pki_types::UnixTime::now().as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::days_left;

    #[test]
    fn days_left_rounds_down() {
        assert_eq!(days_left(86_400 * 2 - 1, 0), 1);
        assert_eq!(days_left(86_400, 0), 1);
        assert_eq!(days_left(-1, 0), -1);
    }
}
