//! The `certgate` command: argument parsing, logging, exit codes. Everything else is in the
//! library.

use anyhow::Context;
use certgate::access_log::AccessLogChoice;
use certgate::config::{keys, Config, Format, ListenerSpec, Origin, SpecValue};
use certgate::metrics::Telemetry;
use certgate::process::{stop_signal, ProcessSettings};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "certgate",
    version,
    about = "A mutual-TLS proxy: terminate or originate mTLS in front of plain-HTTP services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Seconds that open requests get to finish after SIGTERM or SIGINT.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    shutdown_timeout: u64,
    /// Admin listener (health, status, metrics, reload), e.g. 127.0.0.1:9901; off by default.
    #[arg(long, global = true, value_name = "ADDR")]
    admin: Option<String>,
    /// A name the admin listener also answers to in Host, e.g. its Kubernetes service name
    /// (repeatable; NAME or NAME:PORT). Its own address and loopback names always work.
    #[arg(long, global = true, value_name = "NAME")]
    admin_host: Vec<String>,
    /// Access log, one line per request: json or combined (nginx's format); off by default.
    #[arg(long, global = true, value_name = "FORMAT")]
    access_log: Option<String>,
    /// Write the access log to this file (appending) instead of stdout.
    #[arg(long, global = true, value_name = "FILE")]
    access_log_file: Option<PathBuf>,
    /// Write the error log to this file (appending) instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Error log level: error, warn, info (default) or debug; RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
    /// PKCS#11 module for key URIs (pkcs11:...) that name no module-path.
    #[arg(long, global = true, value_name = "FILE")]
    pkcs11_module: Option<PathBuf>,
    /// Serving threads, each with its own listening sockets and upstream pools (default: one
    /// per CPU this process may use; nginx's worker_processes in an nginx config).
    #[arg(long, global = true, value_name = "N", value_parser = worker_count)]
    workers: Option<usize>,
}

/// `--workers`: from 1 to [`certgate::config::MAX_WORKERS`].
fn worker_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=certgate::config::MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of threads from 1 to {}",
            certgate::config::MAX_WORKERS
        )),
    }
}

// Parsed once at start-up; boxing variants would only make the code noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Server mode (the seed's server A): accept TLS with client certificates, forward plain HTTP.
    Server(ServerArgs),
    /// Client mode (the seed's proxy B): accept plain HTTP locally, forward over mTLS.
    Client(ClientArgs),
    /// Run every listener of a config file: TOML ([[listener]] tables) or nginx syntax.
    Run {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// Its syntax: toml or nginx (default: told from the content).
        #[arg(long)]
        format: Option<String>,
    },
    /// Validate a config file and every file it names, without binding ports (like nginx -t).
    Check {
        /// The config file to check.
        #[arg(long)]
        config: PathBuf,
        /// Its syntax: toml or nginx (default: told from the content).
        #[arg(long)]
        format: Option<String>,
    },
    /// Print the native TOML config equivalent to an nginx config, comments included.
    ConvertNginx {
        /// The nginx config file (includes are followed).
        file: PathBuf,
    },
    /// Certificate tools: inspect, check, convert.
    #[command(subcommand)]
    Cert(CertCommand),
    /// A small local CA for development and tests: init, issue.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Connect to a TLS server and report the handshake in plain words (like openssl s_client).
    Probe(ProbeArgs),
    /// Run the seed topology on this machine with a throwaway PKI.
    Demo {
        /// Send one request through the chain, print what the backend received, and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Describe every certificate in PEM or DER files: names, validity, key, usages, fingerprints.
    Inspect {
        /// Certificate files (PEM bundles or DER).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Check a certificate (and key, CA, role, name) in plain words; exit 0 good, 1 warning, 2 failure.
    Check {
        /// The certificate, optionally followed by its intermediates.
        #[arg(long)]
        cert: PathBuf,
        /// Its private key: must match and be readable by its owner only.
        #[arg(long)]
        key: Option<String>,
        /// CA bundle the chain must verify to.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// What the certificate is for: server or client (checks its extended key usage).
        #[arg(long)]
        role: Option<String>,
        /// A host name the certificate must cover.
        #[arg(long)]
        name: Option<String>,
        /// Warn when fewer days than this are left (default 30).
        #[arg(long, default_value_t = 30)]
        warn_days: i64,
        /// Most intermediate CAs allowed in the chain, as --verify-depth (default 1).
        #[arg(long, default_value_t = 1)]
        verify_depth: u32,
    },
    /// Convert certificates or a private key between PEM and DER (keys are written 0600).
    Convert {
        /// Input file; its format is detected.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
        /// Output format: pem or der (default: the other one).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA (root, and an intermediate on request) in a new directory; keys 0600.
    Init {
        /// Directory to create the CA in.
        dir: PathBuf,
        /// The CA's common name (default: "certgate development CA" and a random tag, so two
        /// development CAs never share a name).
        #[arg(long)]
        name: Option<String>,
        /// Key type: ecdsa-p256, ecdsa-p384, rsa-2048 or ed25519.
        #[arg(long, default_value = "ecdsa-p256")]
        key_type: String,
        /// Validity of the CA in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// Also create an intermediate CA, which then issues every certificate.
        #[arg(long)]
        intermediate: bool,
    },
    /// Issue a certificate and key (NAME.crt, NAME.key) from a CA directory.
    Issue {
        /// The CA directory made by `pki init`.
        #[arg(long)]
        ca: PathBuf,
        /// Common name; also a DNS or IP name of the certificate when it looks like one.
        name: String,
        /// For servers only (serverAuth); default is both server and client.
        #[arg(long, conflicts_with = "client")]
        server: bool,
        /// For clients only (clientAuth); default is both server and client.
        #[arg(long)]
        client: bool,
        /// More subject alternative names: DNS names, IP addresses or URIs (spiffe://...).
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Key type: ecdsa-p256, ecdsa-p384, rsa-2048 or ed25519.
        #[arg(long, default_value = "ecdsa-p256")]
        key_type: String,
        /// Directory to write NAME.crt and NAME.key into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct ProbeArgs {
    /// The server to probe.
    #[arg(value_name = "HOST:PORT")]
    target: String,
    /// Our client certificate (chain), sent if the server asks for one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<String>,
    /// CA bundle to verify the server's certificate against.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Name to send (SNI) and to check the server's certificate against (default: HOST).
    #[arg(long)]
    server_name: Option<String>,
    /// Offer TLS 1.2 only.
    #[arg(long = "tls1.2", conflicts_with = "tls13")]
    tls12: bool,
    /// Offer TLS 1.3 only.
    #[arg(long = "tls1.3")]
    tls13: bool,
    /// Most intermediate CAs allowed in the server's chain (default 1, as nginx).
    #[arg(long, default_value_t = 1)]
    verify_depth: u32,
    /// After the handshake, send GET PATH rather than HEAD / and print the answer.
    #[arg(long, value_name = "PATH", conflicts_with = "no_request")]
    get: Option<String>,
    /// Send no request after the handshake (servers such as nginx judge our certificate only at the first request).
    #[arg(long)]
    no_request: bool,
}

#[derive(Args)]
struct ServerArgs {
    /// Address to accept TLS on, e.g. 0.0.0.0:443.
    #[arg(long)]
    listen: String,
    /// Plain-HTTP backend: http://HOST:PORT, HOST:PORT or unix:/PATH.
    #[arg(long)]
    upstream: String,
    /// Server certificate chain (PEM or DER), leaf first.
    #[arg(long)]
    cert: String,
    /// Private key of the server certificate (PKCS#8, PKCS#1 or SEC1; PEM or DER).
    #[arg(long)]
    key: String,
    /// CA bundle client certificates must chain to (PEM or DER).
    #[arg(long)]
    client_ca: Option<String>,
    /// Client certificates: required (default), optional, optional_no_ca or off.
    #[arg(long)]
    verify_client: Option<String>,
    /// Identity header format: escaped-pem (default), rfc9440, xfcc, traefik; repeatable.
    #[arg(long, value_name = "FORMAT")]
    client_cert_format: Vec<String>,
    /// x-forwarded-client-cert handling: sanitize, set (default with xfcc) or append.
    #[arg(long)]
    xfcc_mode: Option<String>,
    /// Peer whose inbound XFCC is kept in append mode, as KIND:VALUE (cn:edge, uri:spiffe://...); repeatable.
    #[arg(long, value_name = "KIND:VALUE")]
    xfcc_trusted: Vec<String>,
    /// Proxy in front of this one whose inbound identity headers (X-SSL-*, X-Client-Cert, ...)
    /// are kept, as KIND:VALUE (cn:proxy-b, uri:spiffe://..., pin-sha256:...); repeatable.
    #[arg(
        long = "trusted-forwarder",
        visible_alias = "trusted-forwarders",
        value_name = "KIND:VALUE"
    )]
    trusted_forwarders: Vec<String>,
    /// Admit clients whose subject CN is this; repeatable (any allow rule admits).
    #[arg(long, value_name = "CN")]
    allow_cn: Vec<String>,
    /// Admit clients whose subject O is this; repeatable.
    #[arg(long, value_name = "O")]
    allow_o: Vec<String>,
    /// Admit clients whose subject OU is this; repeatable.
    #[arg(long, value_name = "OU")]
    allow_ou: Vec<String>,
    /// Admit clients with this DNS SAN (*.domain for one label); repeatable.
    #[arg(long, value_name = "NAME")]
    allow_dns: Vec<String>,
    /// Admit clients with this URI SAN (SPIFFE: * one segment, ** the rest); repeatable.
    #[arg(long, value_name = "URI")]
    allow_uri: Vec<String>,
    /// Admit clients whose certificate or public key (SPKI) has this SHA-256 (hex or base64); repeatable.
    #[arg(long, value_name = "SHA256")]
    allow_pin_sha256: Vec<String>,
    /// DER OCSP response to staple to the server certificate.
    #[arg(long, value_name = "FILE")]
    ocsp_response: Option<String>,
    /// strict: answer 400 to paths a backend may read differently (;, \, %5C, %2F, %2561)
    /// and forward the normalised path; off (the default without routes): forward as sent.
    #[arg(long, value_name = "strict|off")]
    path_normalization: Option<String>,
    /// Do not issue TLS session tickets to clients (nginx's ssl_session_tickets off).
    #[arg(long)]
    no_session_tickets: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct ClientArgs {
    /// Local address to accept plain HTTP on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: String,
    /// TLS upstream: https://HOST[:PORT] or HOST:PORT.
    #[arg(long)]
    upstream: String,
    /// Client certificate, optionally followed by its intermediates (PEM or DER).
    #[arg(long)]
    cert: Option<String>,
    /// Private key of the client certificate (PKCS#8, PKCS#1 or SEC1; PEM or DER).
    #[arg(long)]
    key: Option<String>,
    /// CA bundle the upstream's certificate must chain to.
    #[arg(long, required_unless_present = "no_verify_upstream")]
    ca: Option<String>,
    /// Name for SNI and for checking the upstream certificate (default: the upstream host).
    #[arg(long)]
    server_name: Option<String>,
    /// Require this subject CN in the upstream's certificate; repeatable (any verify rule admits).
    #[arg(long, value_name = "CN")]
    verify_cn: Vec<String>,
    /// Require this subject O in the upstream's certificate; repeatable.
    #[arg(long, value_name = "O")]
    verify_o: Vec<String>,
    /// Require this subject OU in the upstream's certificate; repeatable.
    #[arg(long, value_name = "OU")]
    verify_ou: Vec<String>,
    /// Require this DNS SAN (*.domain for one label) in the upstream's certificate; repeatable.
    #[arg(long, value_name = "NAME")]
    verify_dns: Vec<String>,
    /// Require this URI SAN (SPIFFE: * one segment, ** the rest) in the upstream's certificate; repeatable.
    #[arg(long, value_name = "URI")]
    verify_uri: Vec<String>,
    /// Require this SHA-256 of the upstream's certificate or public key (hex or base64); repeatable.
    #[arg(long, value_name = "SHA256")]
    verify_pin_sha256: Vec<String>,
    /// Match the upstream's name against its certificate's CN when it has no DNS
    /// subjectAltName (legacy certificates; nginx does, RFC 6125 does not).
    #[arg(long)]
    verify_name_in_cn: bool,
    /// Do not resume TLS sessions on new upstream connections.
    #[arg(long)]
    no_session_reuse: bool,
    /// Do not offer HTTP/2 to the upstream.
    #[arg(long)]
    no_http2: bool,
    /// Do not verify the upstream's certificate (warned about; for nginx parity only).
    #[arg(long)]
    no_verify_upstream: bool,
    /// Do not send the server name (SNI) in the upstream handshake.
    #[arg(long)]
    no_send_sni: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct CommonArgs {
    /// Name used in logs (default: MODE-1).
    #[arg(long)]
    name: Option<String>,
    /// Maximum number of intermediate CAs in the peer's chain, as nginx's ssl_verify_depth (default 1).
    #[arg(long)]
    verify_depth: Option<i64>,
    /// false: the peer's chain must end at a self-signed root of the CA bundle, as in nginx
    /// (OpenSSL); true (the default): any CA of the bundle, an intermediate too, may end it.
    #[arg(long, value_name = "true|false")]
    partial_chain: Option<bool>,
    /// Lowest TLS version: TLSv1.2 (default) or TLSv1.3.
    #[arg(long)]
    min_tls_version: Option<String>,
    /// Highest TLS version: TLSv1.2 or TLSv1.3 (default).
    #[arg(long)]
    max_tls_version: Option<String>,
    /// Cipher suites in OpenSSL syntax, e.g. HIGH:!aNULL:!MD5.
    #[arg(long)]
    ciphers: Option<String>,
    /// Header rule "NAME VALUE" with nginx variables; repeatable; empty values remove the header.
    #[arg(long = "set-header", value_name = "NAME VALUE")]
    set_header: Vec<String>,
    /// Refuse to start when a private key is readable by group or others.
    #[arg(long)]
    strict_key_permissions: bool,
    /// Certificate revocation list (PEM or DER) for verifying the peer; repeatable.
    #[arg(long, value_name = "FILE")]
    crl: Vec<String>,
    /// When a CRL is past its nextUpdate: refuse (default) or allow.
    #[arg(long)]
    crl_expired: Option<String>,
    /// Forward client headers with '_' in their names (dropped by default, as nginx does).
    #[arg(long)]
    underscores_in_headers: bool,
    /// How long a new connection may take to send its first request's headers (default 60s).
    #[arg(long, value_name = "DURATION")]
    client_header_timeout: Option<String>,
    /// Close an HTTP/1.1 connection idle this long between requests (default 75s; 0: no keep-alive).
    #[arg(long, value_name = "DURATION")]
    keepalive_timeout: Option<String>,
    /// Send GOAWAY on an HTTP/2 connection without open streams for this long (default: keepalive-timeout).
    #[arg(long, value_name = "DURATION")]
    http2_idle_timeout: Option<String>,
    /// Ping HTTP/2 clients this often and close the connection when one does not answer (default off).
    #[arg(long, value_name = "DURATION")]
    http2_ping_interval: Option<String>,
    /// Largest request head (request line and headers), e.g. 32k (the default) or 64k.
    #[arg(long, value_name = "SIZE")]
    max_header_size: Option<String>,
    /// Most connections open at once to each upstream, as nginx's max_conns (default 1024; 0: no limit).
    #[arg(long, value_name = "CONNECTIONS")]
    upstream_max_connections: Option<i64>,
    /// How long a request waits for a free upstream connection at that limit before a 503 (default 10s).
    #[arg(long, value_name = "DURATION")]
    upstream_queue_timeout: Option<String>,
    /// Time to connect to the upstream, TLS handshake included (default 10s).
    #[arg(long, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// Time until the upstream's response headers (default 60s).
    #[arg(long, value_name = "DURATION")]
    response_timeout: Option<String>,
    /// Largest request body, e.g. 10m; larger ones get 413 (default: no limit).
    #[arg(long, value_name = "SIZE")]
    max_body_size: Option<String>,
    /// Add no X-Forwarded-For, X-Real-IP, X-Client-Verify, ... of certgate's own (as nginx).
    #[arg(long)]
    no_default_headers: bool,
}

/// Builds a spec from flags: the same keys and validation as a config file.
struct FlagSpec(ListenerSpec);

impl FlagSpec {
    /// A spec for `certgate MODE`: the subcommand gives the mode.
    fn new(mode: &str) -> anyhow::Result<FlagSpec> {
        let mut spec = ListenerSpec::default();
        spec.set(
            "mode",
            Origin::Flag(format!("certgate {mode}")),
            SpecValue::Text(mode.into()),
        )?;
        Ok(FlagSpec(spec))
    }

    /// Records `key` as its flag (named by the key table) gave it.
    fn set(&mut self, key: &str, value: SpecValue) -> anyhow::Result<()> {
        let flag =
            keys::flag_of(key).with_context(|| format!("the key table gives '{key}' no flag"))?;
        self.0.set(key, Origin::Flag(format!("--{flag}")), value)?;
        Ok(())
    }

    fn text(&mut self, key: &str, value: Option<String>) -> anyhow::Result<()> {
        match value {
            Some(value) => self.set(key, SpecValue::Text(value)),
            None => Ok(()),
        }
    }

    fn list(&mut self, key: &str, values: Vec<String>) -> anyhow::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.set(key, SpecValue::List(values))
    }

    fn integer(&mut self, key: &str, value: Option<i64>) -> anyhow::Result<()> {
        match value {
            Some(value) => self.set(key, SpecValue::Integer(value)),
            None => Ok(()),
        }
    }

    fn bool(&mut self, key: &str, value: bool) -> anyhow::Result<()> {
        self.set(key, SpecValue::Bool(value))
    }

    /// A `--no-KEY` flag: sets the key to false when given, leaves the default otherwise.
    fn off(&mut self, key: &str, given: bool) -> anyhow::Result<()> {
        if given {
            self.bool(key, false)?;
        }
        Ok(())
    }

    fn common(&mut self, common: CommonArgs) -> anyhow::Result<()> {
        self.text("name", common.name)?;
        self.text("connect_timeout", common.connect_timeout)?;
        self.text("response_timeout", common.response_timeout)?;
        self.text("max_body_size", common.max_body_size)?;
        self.off("default_headers", common.no_default_headers)?;
        self.integer("verify_depth", common.verify_depth)?;
        if let Some(partial_chain) = common.partial_chain {
            self.bool("partial_chain", partial_chain)?;
        }
        self.text("min_tls_version", common.min_tls_version)?;
        self.text("max_tls_version", common.max_tls_version)?;
        self.text("ciphers", common.ciphers)?;
        self.list("crl", common.crl)?;
        self.text("crl_expired", common.crl_expired)?;
        self.integer("upstream_max_connections", common.upstream_max_connections)?;
        self.text("upstream_queue_timeout", common.upstream_queue_timeout)?;
        self.bool("strict_key_permissions", common.strict_key_permissions)?;
        self.bool("underscores_in_headers", common.underscores_in_headers)?;
        self.text("client_header_timeout", common.client_header_timeout)?;
        self.text("keepalive_timeout", common.keepalive_timeout)?;
        self.text("http2_idle_timeout", common.http2_idle_timeout)?;
        self.text("http2_ping_interval", common.http2_ping_interval)?;
        self.text("max_header_size", common.max_header_size)?;
        if !common.set_header.is_empty() {
            let rules = common
                .set_header
                .iter()
                .map(|rule| {
                    let (name, value) = rule
                        .trim()
                        .split_once(char::is_whitespace)
                        .unwrap_or((rule.trim(), ""));
                    (name.to_string(), value.trim().to_string())
                })
                .collect();
            self.set("set_header", SpecValue::Headers(rules))?;
        }
        Ok(())
    }
}

fn server_config(args: ServerArgs) -> anyhow::Result<Config> {
    let mut spec = FlagSpec::new("server")?;
    spec.text("listen", Some(args.listen))?;
    spec.text("upstream", Some(args.upstream))?;
    spec.text("cert", Some(args.cert))?;
    spec.text("key", Some(args.key))?;
    spec.text("client_ca", args.client_ca)?;
    spec.text("verify_client", args.verify_client)?;
    spec.list("client_cert_format", args.client_cert_format)?;
    spec.text("xfcc_mode", args.xfcc_mode)?;
    spec.list("xfcc_trusted", args.xfcc_trusted)?;
    spec.list("trusted_forwarders", args.trusted_forwarders)?;
    spec.list("allow_cn", args.allow_cn)?;
    spec.list("allow_o", args.allow_o)?;
    spec.list("allow_ou", args.allow_ou)?;
    spec.list("allow_dns", args.allow_dns)?;
    spec.list("allow_uri", args.allow_uri)?;
    spec.list("allow_pin_sha256", args.allow_pin_sha256)?;
    spec.text("ocsp_response", args.ocsp_response)?;
    spec.text("path_normalization", args.path_normalization)?;
    spec.off("session_tickets", args.no_session_tickets)?;
    spec.common(args.common)?;
    Ok(Config::from_specs(vec![spec.0])?)
}

fn client_config(args: ClientArgs) -> anyhow::Result<Config> {
    let mut spec = FlagSpec::new("client")?;
    spec.text("listen", Some(args.listen))?;
    spec.text("upstream", Some(args.upstream))?;
    spec.text("cert", args.cert)?;
    spec.text("key", args.key)?;
    spec.text("ca", args.ca)?;
    spec.text("server_name", args.server_name)?;
    spec.list("verify_cn", args.verify_cn)?;
    spec.list("verify_o", args.verify_o)?;
    spec.list("verify_ou", args.verify_ou)?;
    spec.list("verify_dns", args.verify_dns)?;
    spec.list("verify_uri", args.verify_uri)?;
    spec.list("verify_pin_sha256", args.verify_pin_sha256)?;
    spec.bool("verify_name_in_cn", args.verify_name_in_cn)?;
    spec.bool("session_reuse", !args.no_session_reuse)?;
    spec.bool("http2", !args.no_http2)?;
    spec.off("verify_upstream", args.no_verify_upstream)?;
    spec.off("send_sni", args.no_send_sni)?;
    spec.common(args.common)?;
    Ok(Config::from_specs(vec![spec.0])?)
}

fn cert_command(command: CertCommand, module: Option<&std::path::Path>) -> anyhow::Result<()> {
    use certgate::certtool;
    match command {
        CertCommand::Inspect { files, json } => {
            let mut reports = Vec::new();
            for file in &files {
                reports.extend(certtool::inspect(file).map_err(anyhow::Error::msg)?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                let text: Vec<String> = reports.iter().map(|r| r.to_string()).collect();
                println!("{}", text.join("\n\n"));
            }
            Ok(())
        }
        CertCommand::Check {
            cert,
            key,
            ca,
            role,
            name,
            warn_days,
            verify_depth,
        } => {
            if let Some(role) = role.as_deref() {
                anyhow::ensure!(
                    role == "server" || role == "client",
                    "--role: unknown role \"{role}\": use server or client"
                );
            }
            let lines = certtool::check(&certtool::CheckRequest {
                cert: &cert,
                key: key.as_deref(),
                pkcs11_module: module,
                ca: ca.as_deref(),
                role: role.as_deref(),
                name: name.as_deref(),
                warn_days,
                verify_depth,
            });
            for line in &lines {
                println!("{line}");
            }
            let worst = lines
                .iter()
                .map(|l| l.verdict)
                .max()
                .unwrap_or(certtool::Verdict::Ok);
            std::process::exit(worst as i32);
        }
        CertCommand::Convert { input, output, to } => {
            let to = match to.as_deref() {
                None => None,
                Some("pem") => Some(certtool::Encoding::Pem),
                Some("der") => Some(certtool::Encoding::Der),
                Some(other) => anyhow::bail!("--to: unknown format \"{other}\": use pem or der"),
            };
            println!(
                "{}",
                certtool::convert(&input, &output, to).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
    }
}

fn config_format(name: Option<&str>) -> anyhow::Result<Option<Format>> {
    match name {
        None => Ok(None),
        Some("toml") => Ok(Some(Format::Toml)),
        Some("nginx") => Ok(Some(Format::Nginx)),
        Some(other) => anyhow::bail!("--format: unknown format \"{other}\": use toml or nginx"),
    }
}

fn key_type(name: &str) -> anyhow::Result<certgate::pki::KeyType> {
    certgate::pki::KeyType::parse(name).ok_or_else(|| {
        anyhow::anyhow!(
            "--key-type: unknown key type \"{name}\": use ecdsa-p256, ecdsa-p384, rsa-2048 or ed25519"
        )
    })
}

fn pki_command(command: PkiCommand) -> anyhow::Result<()> {
    use certgate::pki::{dir, Usage};
    let lines = match command {
        PkiCommand::Init {
            dir: path,
            name,
            key_type: key,
            days,
            intermediate,
        } => dir::init(&dir::InitRequest {
            dir: &path,
            common_name: &name.unwrap_or_else(dir::default_ca_name),
            key_type: key_type(&key)?,
            days,
            intermediate,
        }),
        PkiCommand::Issue {
            ca,
            name,
            server,
            client,
            sans,
            days,
            key_type: key,
            out,
        } => dir::issue(&dir::IssueRequest {
            ca_dir: &ca,
            name: &name,
            usage: match (server, client) {
                (true, _) => Usage::Server,
                (_, true) => Usage::Client,
                _ => Usage::Both,
            },
            sans: &sans,
            days,
            key_type: key_type(&key)?,
            out: &out,
        }),
    }
    .map_err(anyhow::Error::msg)?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

async fn probe_command(args: ProbeArgs, module: Option<&std::path::Path>) -> anyhow::Result<()> {
    let versions = match (args.tls12, args.tls13) {
        (true, _) => vec![&rustls::version::TLS12],
        (_, true) => vec![&rustls::version::TLS13],
        _ => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let report = certgate::probe::probe(&certgate::probe::ProbeRequest {
        target: args.target,
        cert: args.cert,
        key: args.key,
        pkcs11_module: module.map(std::path::Path::to_path_buf),
        ca: args.ca,
        server_name: args.server_name,
        versions,
        verify_depth: args.verify_depth,
        http: match (args.no_request, args.get) {
            (true, _) => None,
            (false, Some(path)) => Some(certgate::probe::HttpProbe {
                method: hyper::Method::GET,
                path,
            }),
            (false, None) => Some(Default::default()),
        },
    })
    .await;
    for line in &report.lines {
        println!("{line}");
    }
    std::process::exit(report.worst() as i32);
}

fn init_logging(level: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => {
            anyhow::ensure!(
                ["error", "warn", "info", "debug", "trace"].contains(&level),
                "--log-level: unknown level \"{level}\": use error, warn, info or debug"
            );
            tracing_subscriber::EnvFilter::new(level)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .fmt_fields(certgate::logging::escaped_fields());
    match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("--log-file: cannot open {}", path.display()))?;
            builder
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init();
        }
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
    Ok(())
}

async fn main_inner(command: Command, process: ProcessSettings) -> anyhow::Result<()> {
    let module = process.pkcs11_module.as_deref();
    match command {
        Command::Server(args) => {
            let config = server_config(args)?.with_default_pkcs11_module(module);
            Ok(certgate::run(config, None, &process).await?)
        }
        Command::Client(args) => {
            let config = client_config(args)?.with_default_pkcs11_module(module);
            Ok(certgate::run(config, None, &process).await?)
        }
        Command::Run {
            config: path,
            format,
        } => {
            let format = config_format(format.as_deref())?;
            let config =
                certgate::config::load_file(&path, format)?.with_default_pkcs11_module(module);
            Ok(certgate::run(config, Some((&path, format)), &process).await?)
        }
        Command::ConvertNginx { file } => {
            let translation = certgate::config::nginx::translate_file(&file)?;
            print!("{}", certgate::config::nginx::to_toml(&translation));
            Ok(())
        }
        Command::Check {
            config: path,
            format,
        } => {
            let config = certgate::config::load_file(&path, config_format(format.as_deref())?)?
                .with_default_pkcs11_module(module);
            let (_, warnings) = certgate::prepare(&config, &Telemetry::new())?;
            for warning in &warnings {
                println!("warning: {warning}");
            }
            println!(
                "{}: configuration is valid ({} listener{})",
                path.display(),
                config.listeners.len(),
                if config.listeners.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Demo { once } => certgate::demo::run(once, stop_signal())
            .await
            .context("demo failed"),
        Command::Cert(command) => cert_command(command, module),
        Command::Probe(args) => probe_command(args, module).await,
        Command::Pki(command) => pki_command(command),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_logging(&cli.log_level, cli.log_file.as_deref()) {
        eprintln!("certgate: {error:#}");
        return ExitCode::FAILURE;
    }
    let access_log =
        match AccessLogChoice::from_flags(cli.access_log.as_deref(), cli.access_log_file) {
            Ok(choice) => choice,
            Err(error) => {
                eprintln!("certgate: {error}");
                return ExitCode::FAILURE;
            }
        };
    // The main thread's runtime: signals, the admin listener, reloads and the commands that
    // serve nothing. Listeners serve on their own worker threads (src/workers.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("certgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let process = ProcessSettings {
        drain_timeout: Duration::from_secs(cli.shutdown_timeout),
        admin: cli.admin,
        admin_hosts: cli.admin_host,
        access_log,
        pkcs11_module: cli.pkcs11_module,
        workers: cli.workers,
    };
    match runtime.block_on(main_inner(cli.command, process)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("certgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
