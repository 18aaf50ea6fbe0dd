//! TLS failures in plain words, for the one log line (or 502 body) per failure, and whose
//! failure each was: the peer's (a refusal, a bad certificate) or ours (a key that cannot
//! sign, see [`signing_failure`]).

use super::pkcs11::SigningFailed;
use super::verify::ChainRejection;
use rustls::{AlertDescription, CertificateError, Error, PeerIncompatible};
use std::error::Error as StdError;

/// Finds the rustls error inside an error chain (io::Error hides it in `get_ref`).
pub fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
    find_in_chain::<Error>(error)
}

/// The first error of type `T` in an error chain. io::Error's `source()` skips the error it
/// wraps, so that one is looked inside first.
pub fn find_in_chain<'a, T: StdError + 'static>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Our key failed to sign inside the handshake (a token that stopped answering, a key object
/// gone): our failure, not the peer's, whatever alert the peer was sent.
pub fn signing_failure(error: &Error) -> Option<&SigningFailed> {
    match error {
        Error::Other(other) => other.0.downcast_ref::<SigningFailed>(),
        _ => None,
    }
}

/// Finds the innermost io::Error kind in an error chain.
pub fn find_io_kind(error: &(dyn StdError + 'static)) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    let mut kind = None;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            kind = Some(io.kind());
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = e.source();
    }
    kind
}

/// A failed handshake, in words: what the peer did or what was wrong with its certificate.
pub fn tls_error(error: &Error) -> String {
    match error {
        Error::NoCertificatesPresented => {
            "no client certificate sent (this listener requires one)".into()
        }
        Error::InvalidCertificate(cert) => certificate_error(cert),
        Error::PeerIncompatible(incompatible) => match incompatible {
            PeerIncompatible::NoCipherSuitesInCommon => {
                "cipher mismatch: no cipher suite in common with the peer".into()
            }
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::ServerDoesNotSupportTls12Or13
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig => format!(
                "protocol version mismatch: the peer offers no TLS version this listener allows ({incompatible:?})"
            ),
            PeerIncompatible::NoSignatureSchemesInCommon
            | PeerIncompatible::NoCertificateRequestSignatureSchemesInCommon => {
                "no signature algorithm in common with the peer (key type mismatch)".into()
            }
            PeerIncompatible::NoKxGroupsInCommon => {
                "no key exchange group in common with the peer".into()
            }
            other => format!("peer is incompatible: {other:?}"),
        },
        Error::AlertReceived(alert) => alert_received(*alert),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            "not a TLS handshake (plain HTTP sent to a TLS port, or a broken peer)".into()
        }
        Error::Other(other) => match other.0.downcast_ref::<SigningFailed>() {
            Some(failed) => format!("our key failed to sign: {failed}"),
            None => format!("TLS error: {error}"),
        },
        // rustls would prefix "unexpected error".
        Error::General(reason) => reason.clone(),
        other => format!("TLS error: {other}"),
    }
}

fn alert_received(alert: AlertDescription) -> String {
    use AlertDescription as A;
    match alert {
        A::ProtocolVersion => {
            "protocol version mismatch: the peer refused every TLS version we offer (alert protocol_version)".into()
        }
        A::HandshakeFailure | A::InsufficientSecurity => format!(
            "the peer refused the handshake (alert {alert:?}): usually no common cipher suite or protocol version"
        ),
        A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied
        | A::CertificateRequired => format!(
            "the peer rejected our certificate (alert {alert:?}); check the peer's log for the reason"
        ),
        other => format!("the peer sent TLS alert {other:?}"),
    }
}

fn certificate_error(error: &CertificateError) -> String {
    use CertificateError as C;
    match error {
        C::ExpiredContext { time, not_after } => ChainRejection::Expired {
            not_after: *not_after,
            now: *time,
        }
        .to_string(),
        C::NotValidYetContext { time, not_before } => ChainRejection::NotYetValid {
            not_before: *not_before,
            now: *time,
        }
        .to_string(),
        C::Expired => "certificate expired".into(),
        C::NotValidYet => "certificate not yet valid".into(),
        C::UnknownIssuer => "unknown issuer".into(),
        C::Revoked => "certificate revoked".into(),
        C::BadSignature => "bad signature in the certificate chain".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => ChainRejection::NameMismatch {
            expected: expected.to_str().into_owned(),
            presented: presented.clone(),
        }
        .to_string(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "wrong key usage: the certificate's extended key usage does not fit its role".into()
        }
        C::Other(other) => match other.0.downcast_ref::<ChainRejection>() {
            Some(rejection) => rejection.to_string(),
            None => format!("certificate rejected: {other}"),
        },
        other => format!("certificate rejected: {other:?}"),
    }
}

/// A bounded label for a handshake failure, for metrics (the log line carries the detail).
pub fn reason_label(error: &Error) -> &'static str {
    use ChainRejection as R;
    match error {
        Error::NoCertificatesPresented => "no_certificate",
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::Other(other) => match other.0.downcast_ref::<ChainRejection>() {
                Some(R::UnknownIssuer { .. }) => "unknown_issuer",
                Some(R::TooDeep { .. }) => "chain_too_deep",
                Some(R::WrongUsage { .. }) => "wrong_usage",
                Some(R::NameMismatch { .. }) | Some(R::NoSubjectAltName { .. }) => "name_mismatch",
                Some(R::Revoked { .. }) => "revoked",
                Some(R::NoCrl { .. })
                | Some(R::CrlExpired { .. })
                | Some(R::CrlSignature { .. }) => "crl",
                // The chain reaches no root the listener accepts.
                Some(R::PartialChain { .. }) => "unknown_issuer",
                Some(R::UnsupportedKey { .. }) => "unsupported_key",
                Some(R::NotAllowed { .. }) => "not_allowed",
                _ => "bad_certificate",
            },
            _ => "bad_certificate",
        },
        Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon) => "cipher_mismatch",
        Error::PeerIncompatible(_) => "protocol_mismatch",
        Error::AlertReceived(_) => "alert_received",
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => "not_tls",
        Error::Other(_) if signing_failure(error).is_some() => "signing_failed",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_signing_failure_is_told_apart_from_a_peer_failure() {
        let ours = Error::Other(rustls::OtherError(std::sync::Arc::new(SigningFailed {
            reason: "pkcs11:object=k: the token was removed".into(),
        })));
        assert_eq!(reason_label(&ours), "signing_failed");
        assert!(signing_failure(&ours).is_some());
        assert!(tls_error(&ours).starts_with("our key failed to sign: pkcs11:object=k"));

        let theirs = Error::General("PKCS#11 signature failed".into());
        assert_eq!(reason_label(&theirs), "other");
        assert!(signing_failure(&theirs).is_none());
        let other = Error::Other(rustls::OtherError(std::sync::Arc::new(
            std::io::Error::other("not ours"),
        )));
        assert!(signing_failure(&other).is_none());
        assert_eq!(reason_label(&other), "other");
    }
}
