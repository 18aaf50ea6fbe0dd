//! `certgate pki init|issue`: a small local CA on disk for development and tests, like mkcert.
//!
//! Layout of a CA directory: `ca.crt` and `ca.key`, plus `intermediate.crt` and
//! `intermediate.key` when it was made with an intermediate, which then issues every leaf.
//! The directory is created 0700 and every key 0600 from the moment it exists.

use super::{Authority, AuthorityError, KeyType, LeafSpec, Usage};
use crate::certtool::{write_private, WriteError};
use crate::tls::summary::days_left;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The subject O of a development CA and of everything it issues.
const ORGANIZATION: &str = "certgate development PKI";
const ROOT: (&str, &str) = ("ca.crt", "ca.key");
const INTERMEDIATE: (&str, &str) = ("intermediate.crt", "intermediate.key");

/// "certgate development CA" and a random tag: clients match a CA by name first, so two
/// development CAs with one name would make every "wrong CA" look like a bad signature.
pub fn default_ca_name() -> String {
    let mut tag = [0u8; 4];
    if aws_lc_rs::rand::fill(&mut tag).is_err() {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u32;
        tag = (nanos ^ std::process::id()).to_be_bytes();
    }
    format!(
        "certgate development CA {}",
        crate::tls::identity::lowercase_hex(&tag)
    )
}

/// What `pki init` makes.
pub struct InitRequest<'a> {
    pub dir: &'a Path,
    pub common_name: &'a str,
    pub key_type: KeyType,
    pub days: i64,
    pub intermediate: bool,
}

/// What `pki issue` makes.
pub struct IssueRequest<'a> {
    pub ca_dir: &'a Path,
    pub name: &'a str,
    pub usage: Usage,
    /// Extra subject alternative names (DNS, IP or URI) besides NAME itself.
    pub sans: &'a [String],
    pub days: i64,
    pub key_type: KeyType,
    /// Directory to write NAME.crt and NAME.key into.
    pub out: &'a Path,
}

/// Why `pki init` or `pki issue` made nothing (or stopped), naming the file or value.
#[derive(Debug, thiserror::Error)]
pub enum PkiDirError {
    #[error("--days {0}: give a number of days from 1 to 36500")]
    Days(i64),
    #[error("{} already exists: refusing to overwrite it (remove it first, or pick another directory)", .0.display())]
    Exists(PathBuf),
    #[error("cannot create {}: {source}", path.display())]
    CannotCreate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the CA: {0}")]
    CannotMake(rcgen::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot read {}: {source} (is it a directory made by certgate pki init?)", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", dir.display())]
    Authority {
        dir: PathBuf,
        source: AuthorityError,
    },
    #[error("the CA certificate does not parse: {0}")]
    UnparsableCa(x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("--days {days} would outlive the issuing CA, which expires in {ca_days_left} days: pick fewer days or a new CA")]
    OutlivesCa { days: i64, ca_days_left: i64 },
    #[error("cannot issue \"{name}\": {source}")]
    CannotIssue { name: String, source: rcgen::Error },
}

/// Validity in days must be at least one and at most a hundred years.
fn check_days(days: i64) -> Result<(), PkiDirError> {
    if (1..=36_500).contains(&days) {
        Ok(())
    } else {
        Err(PkiDirError::Days(days))
    }
}

fn until(days: i64) -> String {
    let t = OffsetDateTime::now_utc() + Duration::days(days);
    format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
}

fn write_public(path: &Path, contents: &str) -> Result<(), WriteError> {
    std::fs::write(path, contents).map_err(|source| WriteError {
        path: path.to_path_buf(),
        source,
    })
}

/// Refuses to overwrite, so a second `init` can never replace a CA that issued certificates.
fn must_not_exist(paths: &[&PathBuf]) -> Result<(), PkiDirError> {
    match paths.iter().find(|p| p.exists()) {
        Some(existing) => Err(PkiDirError::Exists(existing.to_path_buf())),
        None => Ok(()),
    }
}

/// Creates a root CA (and an intermediate on request) in a new or empty directory.
pub fn init(request: &InitRequest<'_>) -> Result<Vec<String>, PkiDirError> {
    check_days(request.days)?;
    use std::os::unix::fs::DirBuilderExt;
    let dir = request.dir;
    let files = [ROOT, INTERMEDIATE].map(|(c, k)| (dir.join(c), dir.join(k)));
    must_not_exist(&files.iter().flat_map(|(c, k)| [c, k]).collect::<Vec<_>>())?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiDirError::CannotCreate {
            path: dir.to_path_buf(),
            source,
        })?;
    let error = PkiDirError::CannotMake;
    let root = Authority::root_for_days(
        ORGANIZATION,
        request.common_name,
        request.key_type,
        request.days,
    )
    .map_err(error)?;
    let mut made = vec![(
        &files[0],
        root.issued.clone(),
        request.common_name.to_string(),
    )];
    if request.intermediate {
        let name = format!("{} intermediate", request.common_name);
        let intermediate = root
            .intermediate_for_days(&name, request.key_type, request.days)
            .map_err(error)?;
        made.push((&files[1], intermediate.issued.clone(), name));
    }
    let mut lines = Vec::new();
    for ((cert, key), issued, name) in made {
        write_public(cert, &issued.cert_pem)?;
        write_private(key, issued.key_pem.as_bytes())?;
        lines.push(format!(
            "wrote {}: CA \"{name}\", {}, valid until {}",
            cert.display(),
            request.key_type.name(),
            until(request.days)
        ));
        lines.push(format!("wrote {} (mode 0600)", key.display()));
    }
    lines.push(format!(
        "trust it with --client-ca {0} (server mode) or --ca {0} (client mode); issue with: certgate pki issue --ca {1} NAME",
        files[0].0.display(),
        dir.display()
    ));
    Ok(lines)
}

fn read(path: &Path) -> Result<String, PkiDirError> {
    std::fs::read_to_string(path).map_err(|source| PkiDirError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// The authority that issues leaves in a CA directory, and the intermediate to ship with them.
fn issuing_authority(dir: &Path) -> Result<(Authority, Option<String>), PkiDirError> {
    let (cert, key) = if dir.join(INTERMEDIATE.0).exists() {
        INTERMEDIATE
    } else {
        ROOT
    };
    let (cert, key) = (dir.join(cert), dir.join(key));
    let authority = Authority::from_pem(&read(&cert)?, &read(&key)?).map_err(|source| {
        PkiDirError::Authority {
            dir: dir.to_path_buf(),
            source,
        }
    })?;
    let chain = (cert.file_name() == Some(INTERMEDIATE.0.as_ref()))
        .then(|| authority.issued.cert_pem.clone());
    Ok((authority, chain))
}

/// Whether NAME can also serve as a DNS name or IP address in the certificate.
fn usable_as_san(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*')))
}

/// A file name for NAME: anything but letters, digits, `.`, `-` and `_` becomes `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Issues a leaf certificate from a CA directory into `out`.
pub fn issue(request: &IssueRequest<'_>) -> Result<Vec<String>, PkiDirError> {
    check_days(request.days)?;
    let (authority, intermediate) = issuing_authority(request.ca_dir)?;
    let ca_not_after = x509_parser::parse_x509_certificate(&authority.issued.cert_der)
        .map(|(_, c)| c.validity().not_after.timestamp())
        .map_err(PkiDirError::UnparsableCa)?;
    let now = OffsetDateTime::now_utc();
    let not_after = now + Duration::days(request.days);
    if not_after.unix_timestamp() > ca_not_after {
        return Err(PkiDirError::OutlivesCa {
            days: request.days,
            ca_days_left: days_left(ca_not_after, now.unix_timestamp()),
        });
    }
    let mut names: Vec<String> = Vec::new();
    if usable_as_san(request.name) {
        names.push(request.name.to_string());
    }
    names.extend(request.sans.iter().cloned());
    let spec = LeafSpec::new(request.name, request.usage)
        .key_type(request.key_type)
        .validity(now - Duration::minutes(5), not_after);
    let spec = LeafSpec { names, ..spec };
    let leaf = authority
        .leaf(&spec)
        .map_err(|source| PkiDirError::CannotIssue {
            name: request.name.to_string(),
            source,
        })?;

    let stem = file_stem(request.name);
    let (cert_path, key_path) = (
        request.out.join(format!("{stem}.crt")),
        request.out.join(format!("{stem}.key")),
    );
    must_not_exist(&[&cert_path, &key_path])?;
    let chain = leaf.cert_pem.clone() + intermediate.as_deref().unwrap_or("");
    write_public(&cert_path, &chain)?;
    write_private(&key_path, leaf.key_pem.as_bytes())?;
    let purpose = match request.usage {
        Usage::Server => "server authentication",
        Usage::Client => "client authentication",
        Usage::Both => "server and client authentication",
    };
    let names = if spec.names.is_empty() {
        "no alternative names".to_string()
    } else {
        format!("names {}", spec.names.join(", "))
    };
    Ok(vec![
        format!(
            "wrote {}: \"{}\" for {purpose}, {names}, {}, valid until {}{}",
            cert_path.display(),
            request.name,
            request.key_type.name(),
            until(request.days),
            if intermediate.is_some() {
                ", followed by the intermediate"
            } else {
                ""
            }
        ),
        format!("wrote {} (mode 0600)", key_path.display()),
    ])
}
