//! Private keys that never leave a PKCS#11 token (an HSM; SoftHSM in the tests).
//!
//! A key is named by an RFC 7512 URI (`pkcs11:token=web;object=server-key?module-path=...&
//! pin-source=file:/etc/certgate/pin`) wherever a key file is accepted. Signing runs on the
//! token through `cryptoki`: ECDSA P-256/P-384 (the token's raw r||s becomes the DER that TLS
//! wants) and RSA PKCS#1 v1.5 and PSS (TLS 1.3 allows only PSS for RSA). Handshakes sign in
//! parallel on a pool of sessions; a session the token stops honouring is dropped and a new
//! one opened (and logged in) on the next signature, so the key recovers when the token does.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use rustls::pki_types::CertificateDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The environment variable that may hold the token PIN.
pub const PIN_ENV: &str = "CERTGATE_PKCS11_PIN";

/// Sessions kept open for reuse; more are opened under load and closed after use.
const POOL_SIZE: usize = 8;

pub use crate::config::key_uri::{digest_pins, is_uri, redacted, KeyUri, KeyUriError};

/// A warning for a key URI whose PIN others can read (`pin-value=`), if it has one.
pub fn pin_warning(uri: &KeyUri) -> Option<String> {
    uri.pin().ok()?.1
}

/// Why a token key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Uri(#[from] KeyUriError),
    #[error("{name}: no PKCS#11 module: add module-path=/path/to/module.so to the URI or pass --pkcs11-module")]
    NoModule { name: String },
    /// The module, the token or the key refused; the text names which and why.
    #[error("{0}")]
    Refused(String),
    #[error("the certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("{name}: the key on the token does not belong to the certificate (its public key is another)")]
    NotTheCertificatesKey { name: String },
}

/// Reading a PIN is I/O, so it lives here rather than with the URI's text.
impl KeyUri {
    /// The PIN: `pin-value`, `pin-source=file:PATH`, or the environment. Also returns a
    /// warning when the PIN was given where other users can read it.
    fn pin(&self) -> Result<(String, Option<String>), String> {
        if let Some(pin) = &self.pin_value {
            return Ok((
                pin.clone(),
                Some(format!(
                    "{}: the PIN is in the URI (pin-value), where other users may see it in the process list or the config; use pin-source=file:PATH or {PIN_ENV}",
                    self.describe()
                )),
            ));
        }
        if let Some(source) = &self.pin_source {
            let path = source.strip_prefix("file:").unwrap_or(source);
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("{}: cannot read the PIN file {path}: {e}", self.describe())
            })?;
            return Ok((text.trim_end_matches(['\n', '\r']).to_string(), None));
        }
        match std::env::var(PIN_ENV) {
            Ok(pin) => Ok((pin, None)),
            Err(_) => Err(format!(
                "{}: no PIN: add pin-source=file:PATH to the URI or set {PIN_ENV}",
                self.describe()
            )),
        }
    }
}

/// One loaded module per path: C_Initialize may run once per process.
fn module(path: &Path) -> Result<Pkcs11, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(module) = modules.get(path) {
        return Ok(module.clone());
    }
    let module = Pkcs11::new(path)
        .map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", path.display()))?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(format!(
                "cannot initialise the PKCS#11 module {}: {e}",
                path.display()
            ))
        }
    }
    modules.insert(path.to_path_buf(), module.clone());
    Ok(module)
}

/// Which token a URI means: by label and/or slot id.
struct TokenSelector {
    label: Option<String>,
    slot_id: Option<u64>,
    module_path: PathBuf,
}

impl TokenSelector {
    fn find(&self, module: &Pkcs11, name: &str) -> Result<Slot, String> {
        let slots = module
            .get_slots_with_token()
            .map_err(|e| ck("cannot list the slots", name, e))?;
        slots
            .into_iter()
            .find(|slot| {
                let by_id = self.slot_id.is_none_or(|id| slot.id() == id);
                let by_label = match &self.label {
                    None => true,
                    Some(label) => module
                        .get_token_info(*slot)
                        .is_ok_and(|info| info.label().trim_end() == label),
                };
                by_id && by_label
            })
            .ok_or_else(|| {
                format!(
                    "{name}: no such token in {} (list them with pkcs11-tool --module {} --list-slots)",
                    self.module_path.display(),
                    self.module_path.display()
                )
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    EcdsaP256,
    EcdsaP384,
    Rsa,
}

const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// A private key on a token, usable by rustls.
#[derive(Debug)]
pub struct TokenKey {
    inner: Arc<Inner>,
}

struct Inner {
    module: Pkcs11,
    /// Where the token was last found; looked up again when it stops answering.
    slot: Mutex<Slot>,
    selector: TokenSelector,
    pin: cryptoki::types::AuthPin,
    /// What finds the key in a new session.
    template: Vec<Attribute>,
    kind: Kind,
    name: String,
    sessions: Mutex<Vec<(Session, ObjectHandle)>>,
    /// Set when the token refused the PIN: no more login attempts until a reload.
    pin_refused: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.name)
    }
}

fn ck(what: &str, name: &str, error: CkError) -> String {
    let reason = match &error {
        CkError::Pkcs11(RvError::PinIncorrect, _) => "wrong PIN".to_string(),
        CkError::Pkcs11(RvError::PinLocked, _) => "the PIN is locked".to_string(),
        CkError::Pkcs11(RvError::TokenNotPresent, _) => "the token is not present".to_string(),
        CkError::Pkcs11(RvError::DeviceRemoved, _) => "the token was removed".to_string(),
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        other => other.to_string(),
    };
    format!("{name}: {what}: {reason}")
}

/// Login refusals that trying again would only make worse (a token locks its PIN after a
/// few wrong attempts).
fn pin_refused(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired | RvError::PinInvalid,
            _
        )
    )
}

/// Errors after which a session is of no further use.
fn session_is_broken(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::GeneralError,
            _
        )
    )
}

impl Inner {
    /// A logged-in session and the key's handle in it.
    fn open_session(&self) -> Result<(Session, ObjectHandle), String> {
        if self.pin_refused.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(format!(
                "{}: the token refused the PIN earlier; not trying again (so as not to lock it): fix the PIN and reload",
                self.name
            ));
        }
        let slot = *self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let session = self
            .module
            .open_ro_session(slot)
            .map_err(|e| ck("cannot open a session", &self.name, e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                if pin_refused(&e) {
                    self.pin_refused
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(ck("cannot log in", &self.name, e));
            }
        }
        let handles = session
            .find_objects(&self.template)
            .map_err(|e| ck("cannot search the token", &self.name, e))?;
        match handles.as_slice() {
            [handle] => Ok((session, *handle)),
            [] => Err(format!(
                "{}: no such private key on the token (check object= and id= with pkcs11-tool --list-objects)",
                self.name
            )),
            _ => Err(format!(
                "{}: {} private keys match; add id= to the URI to pick one",
                self.name,
                handles.len()
            )),
        }
    }

    /// A new session (finding the token again if it moved or came back) and a signature.
    fn sign_on_fresh_session(
        &self,
        mechanism: &Mechanism<'_>,
        data: &[u8],
    ) -> Result<(Session, ObjectHandle, Vec<u8>), String> {
        let (session, handle) = match self.open_session() {
            Ok(pair) => pair,
            Err(first) => match self.selector.find(&self.module, &self.name) {
                Ok(slot) => {
                    *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = slot;
                    self.open_session()?
                }
                Err(_) => return Err(first),
            },
        };
        let signature = session
            .sign(mechanism, handle, data)
            .map_err(|e| ck("signing failed", &self.name, e))?;
        Ok((session, handle, signature))
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, String> {
        let (mechanism, data) = mechanism(scheme, message)?;
        let pooled = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let (session, handle, signature) = match pooled {
            Some((session, handle)) => match session.sign(&mechanism, handle, &data) {
                Ok(signature) => (session, handle, signature),
                Err(error) if !session_is_broken(&error) => {
                    return Err(ck("signing failed", &self.name, error))
                }
                Err(_) => {
                    // The token restarted or dropped us: every pooled session is suspect.
                    self.sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                    self.sign_on_fresh_session(&mechanism, &data)?
                }
            },
            None => self.sign_on_fresh_session(&mechanism, &data)?,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() < POOL_SIZE {
            sessions.push((session, handle));
        }
        drop(sessions);
        match self.kind {
            Kind::EcdsaP256 | Kind::EcdsaP384 => ecdsa_der(&signature),
            Kind::Rsa => Ok(signature),
        }
    }
}

fn digest(algorithm: &'static aws_lc_rs::digest::Algorithm, message: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(algorithm, message)
        .as_ref()
        .to_vec()
}

fn pss(hash: MechanismType, mgf: PkcsMgfType, salt: u64) -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: hash,
        mgf,
        s_len: salt.into(),
    }
}

/// The token mechanism for a TLS signature scheme, and the bytes it signs.
fn mechanism(
    scheme: SignatureScheme,
    message: &[u8],
) -> Result<(Mechanism<'static>, Vec<u8>), String> {
    use aws_lc_rs::digest::{SHA256, SHA384};
    use SignatureScheme as S;
    Ok(match scheme {
        // The token signs a digest with raw ECDSA.
        S::ECDSA_NISTP256_SHA256 => (Mechanism::Ecdsa, digest(&SHA256, message)),
        S::ECDSA_NISTP384_SHA384 => (Mechanism::Ecdsa, digest(&SHA384, message)),
        S::RSA_PSS_SHA256 => (
            Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32)),
            message.to_vec(),
        ),
        S::RSA_PSS_SHA384 => (
            Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48)),
            message.to_vec(),
        ),
        S::RSA_PSS_SHA512 => (
            Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64)),
            message.to_vec(),
        ),
        S::RSA_PKCS1_SHA256 => (Mechanism::Sha256RsaPkcs, message.to_vec()),
        S::RSA_PKCS1_SHA384 => (Mechanism::Sha384RsaPkcs, message.to_vec()),
        S::RSA_PKCS1_SHA512 => (Mechanism::Sha512RsaPkcs, message.to_vec()),
        other => return Err(format!("signature scheme {other:?} is not supported")),
    })
}

/// PKCS#11 ECDSA signatures are r||s; TLS carries SEQUENCE { INTEGER r, INTEGER s }.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return Err(format!(
            "the token returned a {}-byte ECDSA signature",
            raw.len()
        ));
    }
    let integer = |half: &[u8]| {
        let trimmed = match half.iter().position(|b| *b != 0) {
            Some(first) => &half[first..],
            None => &half[half.len() - 1..],
        };
        let mut out = vec![0x02];
        let pad = trimmed[0] & 0x80 != 0;
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else {
        out.extend([0x81, body.len() as u8]);
    }
    out.extend(body);
    Ok(out)
}

impl TokenKey {
    /// Opens the key a URI names, logging in with its PIN.
    /// The module is the URI's `module-path` or the default the config gave it.
    pub fn open(uri: &KeyUri) -> Result<TokenKey, TokenError> {
        let name = uri.describe();
        let module_path = uri
            .module_path
            .clone()
            .ok_or_else(|| TokenError::NoModule { name: name.clone() })?;
        let module = module(&module_path).map_err(TokenError::Refused)?;
        let (pin, _) = uri.pin().map_err(TokenError::Refused)?;
        let selector = TokenSelector {
            label: uri.token.clone(),
            slot_id: uri.slot_id,
            module_path,
        };
        let slot = selector.find(&module, &name).map_err(TokenError::Refused)?;
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(object) = &uri.object {
            template.push(Attribute::Label(object.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let mut inner = Inner {
            module,
            slot: Mutex::new(slot),
            selector,
            pin: cryptoki::types::AuthPin::new(pin.into()),
            template,
            kind: Kind::Rsa,
            name,
            sessions: Mutex::new(Vec::new()),
            pin_refused: Default::default(),
        };
        let (session, handle) = inner.open_session().map_err(TokenError::Refused)?;
        inner.kind = key_kind(&session, handle, &inner.name).map_err(TokenError::Refused)?;
        inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((session, handle));
        Ok(TokenKey {
            inner: Arc::new(inner),
        })
    }

    /// Signs a test message on the token and verifies it with the certificate's public key:
    /// the only proof that the token's key is the certificate's.
    pub fn check_matches(&self, cert: &CertificateDer<'_>) -> Result<(), TokenError> {
        let scheme = match self.inner.kind {
            Kind::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            Kind::EcdsaP384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            Kind::Rsa => SignatureScheme::RSA_PSS_SHA256,
        };
        let message = b"certgate: does this token key belong to the certificate?";
        let signature = self
            .inner
            .sign(scheme, message)
            .map_err(TokenError::Refused)?;
        let algorithms = rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .map(|(_, algorithms)| *algorithms)
            .unwrap_or_default();
        let end_entity = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| TokenError::BadCertificate(format!("{e:?}")))?;
        if algorithms.iter().any(|alg| {
            end_entity
                .verify_signature(*alg, message, &signature)
                .is_ok()
        }) {
            Ok(())
        } else {
            Err(TokenError::NotTheCertificatesKey {
                name: self.inner.name.clone(),
            })
        }
    }
}

fn key_kind(session: &Session, handle: ObjectHandle, name: &str) -> Result<Kind, String> {
    let attributes = session
        .get_attributes(handle, &[AttributeType::KeyType, AttributeType::EcParams])
        .map_err(|e| ck("cannot read the key's attributes", name, e))?;
    let mut key_type = None;
    let mut params = None;
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    match key_type {
        Some(KeyType::RSA) => Ok(Kind::Rsa),
        Some(KeyType::EC) => match params.as_deref() {
            Some(OID_P256) => Ok(Kind::EcdsaP256),
            Some(OID_P384) => Ok(Kind::EcdsaP384),
            _ => Err(format!(
                "{name}: only the P-256 and P-384 curves are supported"
            )),
        },
        other => Err(format!(
            "{name}: key type {other:?} is not supported (use an EC P-256/P-384 or RSA key)"
        )),
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        use SignatureScheme as S;
        let preference: &[SignatureScheme] = match self.inner.kind {
            Kind::EcdsaP256 => &[S::ECDSA_NISTP256_SHA256],
            Kind::EcdsaP384 => &[S::ECDSA_NISTP384_SHA384],
            Kind::Rsa => &[
                S::RSA_PSS_SHA256,
                S::RSA_PSS_SHA384,
                S::RSA_PSS_SHA512,
                S::RSA_PKCS1_SHA256,
                S::RSA_PKCS1_SHA384,
                S::RSA_PKCS1_SHA512,
            ],
        };
        let scheme = preference.iter().find(|s| offered.contains(s))?;
        Some(Box::new(TokenSigner {
            key: self.inner.clone(),
            scheme: *scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.inner.kind {
            Kind::EcdsaP256 | Kind::EcdsaP384 => SignatureAlgorithm::ECDSA,
            Kind::Rsa => SignatureAlgorithm::RSA,
        }
    }
}

/// Our key in the token could not sign: our failure, not the peer's (see
/// `explain::signing_failure`), carried through rustls as `Error::Other`.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct SigningFailed {
    /// What the token said, naming the key (its URI without the PIN).
    pub reason: String,
}

#[derive(Debug)]
struct TokenSigner {
    key: Arc<Inner>,
    scheme: SignatureScheme,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // rustls signs inside the handshake, on a runtime worker; a token call may block for
        // a while, so the worker hands its other tasks over while it waits.
        let sign = || self.key.sign(self.scheme, message);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(sign)
            }
            _ => sign(),
        };
        // The handshake's failure log line carries the reason, and says it is ours.
        result.map_err(|reason| {
            rustls::Error::Other(rustls::OtherError(Arc::new(SigningFailed { reason })))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        // r has its high bit set (needs a 0x00 pad), s has a leading zero (trimmed).
        let mut raw = vec![0x80; 32];
        raw.extend([0x00, 0x01]);
        raw.extend(vec![0x02; 30]);
        let der = ecdsa_der(&raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 2 + 31, 0x02, 33]);
        assert_eq!(der[4], 0x00);
        assert_eq!(&der[4 + 33..4 + 33 + 3], &[0x02, 31, 0x01]);
    }
}
