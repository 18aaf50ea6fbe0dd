//! The one table of settings: every key a listener (or a route) accepts, with its flag, the
//! modes it applies to, whether it names a file, its nginx directives, its default and what it
//! does. The parser's list of known keys, the paths resolved against the config file, the
//! "is for client mode" refusals and docs/configuration.md all come from here; tests check the
//! command-line flags against it. Adding a setting is one row here plus the code that uses it.

/// Which listeners a key applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modes {
    Server,
    Client,
    Both,
    /// A key of a `[[listener.route]]` table.
    Route,
}

/// How a key is given on the command line.
///
/// The convention: a flag is the key with `-` for `_`. Settings that take a value take it as
/// the flag's argument (`--connect-timeout 5s`); repeatable ones repeat the flag. Booleans that
/// default to false are switches (`--strict-key-permissions`); booleans that default to true
/// are turned off with `--no-KEY` (`--no-http2`). `--partial-chain true|false` takes its value
/// because it predates the convention and is documented so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// The flag's name, without the leading `--`.
    Named(&'static str),
    /// No flag, and why not.
    Absent(&'static str),
}

/// Where an nginx directive may be written, which says what the translation does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NginxLevel {
    /// `ssl_*` of a server that terminates TLS: http and server blocks; without effect (and
    /// warned about) in a server that listens without ssl.
    Ssl,
    /// `proxy_ssl_*`, the upstream's TLS: http, server and location blocks; without effect
    /// (and warned about) when proxy_pass is http://.
    ProxySsl,
    /// The rest of the upstream side: http, server and location blocks, applied per server
    /// (every location must agree with location /).
    Proxy,
    /// The downstream connection: http and server blocks, either mode.
    Connection,
}

/// How the translation turns a directive's arguments into its key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NginxValue {
    /// The first argument, as text (paths, durations, sizes, names).
    Text,
    Number,
    OnOff,
    /// A protocol list (`ssl_protocols`), setting min_tls_version and max_tls_version.
    Protocols,
    /// Read by its own code in nginx/translate.rs (it checks pairs, or writes defaults).
    Own,
    /// Accepted and read for nothing.
    Ignored,
}

/// One nginx directive that sets a key.
#[derive(Clone, Copy, Debug)]
pub struct NginxDirective {
    pub name: &'static str,
    pub level: NginxLevel,
    pub value: NginxValue,
    /// nginx's default, written out by the translation where it differs from certgate's.
    pub default: Option<&'static str>,
}

const fn directive(name: &'static str, level: NginxLevel, value: NginxValue) -> NginxDirective {
    NginxDirective {
        name,
        level,
        value,
        default: None,
    }
}

impl NginxDirective {
    const fn default(mut self, default: &'static str) -> NginxDirective {
        self.default = Some(default);
        self
    }
}

/// One setting.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Its name in TOML (and in errors).
    pub key: &'static str,
    pub flag: Flag,
    pub modes: Modes,
    /// Its text values are file paths, resolved against the config file's directory.
    pub path: bool,
    /// The nginx directives that translate to it, as Markdown (empty: none).
    pub nginx: &'static str,
    /// Those of them that are settings (not the structure: listen, location, proxy_pass),
    /// which the translation reads from this table.
    pub directives: &'static [NginxDirective],
    /// What applies when it is not set, in words.
    pub default: &'static str,
    /// What it does, in one line.
    pub doc: &'static str,
    /// Appended to "'KEY' is for MODE mode" when it is set in the other mode.
    pub elsewhere: &'static str,
}

const fn key(key: &'static str, flag: &'static str, modes: Modes) -> Key {
    Key {
        key,
        flag: Flag::Named(flag),
        modes,
        path: false,
        nginx: "",
        directives: &[],
        default: "",
        doc: "",
        elsewhere: "",
    }
}

impl Key {
    const fn path(mut self) -> Key {
        self.path = true;
        self
    }
    const fn nginx(mut self, nginx: &'static str) -> Key {
        self.nginx = nginx;
        self
    }
    const fn directives(mut self, directives: &'static [NginxDirective]) -> Key {
        self.directives = directives;
        self
    }
    const fn default(mut self, default: &'static str) -> Key {
        self.default = default;
        self
    }
    const fn doc(mut self, doc: &'static str) -> Key {
        self.doc = doc;
        self
    }
    const fn elsewhere(mut self, elsewhere: &'static str) -> Key {
        self.elsewhere = elsewhere;
        self
    }
    const fn no_flag(mut self, why: &'static str) -> Key {
        self.flag = Flag::Absent(why);
        self
    }

    /// The flag's name, if the key has one.
    pub fn flag_name(&self) -> Option<&'static str> {
        match self.flag {
            Flag::Named(name) => Some(name),
            Flag::Absent(_) => None,
        }
    }

    /// Whether a listener of this mode takes the key.
    pub fn applies_to(&self, mode: super::Mode) -> bool {
        matches!(
            (self.modes, mode),
            (Modes::Both, _)
                | (Modes::Server, super::Mode::Server)
                | (Modes::Client, super::Mode::Client)
        )
    }
}

use Modes::{Both, Client, Route, Server};
use NginxLevel::{Connection, Proxy, ProxySsl, Ssl};
use NginxValue::{Ignored, Number, OnOff, Own, Protocols, Text};

const IDENTITIES: &str = " (client mode forwards to a server that checks identities)";
const UPSTREAM_RULE: &str =
    " (it checks the upstream's certificate); server mode admits clients with allow_*";
const ROUTES_ONLY: &str = "routes are [[listener.route]] tables: config files only";

/// Every key a listener accepts.
pub static KEYS: &[Key] = &[
    key("name", "name", Both)
        .default("MODE-N (server-1, client-2, ...)")
        .doc("Name used in logs, metrics and status."),
    key("mode", "", Both)
        .no_flag("the subcommand is the mode: `certgate server`, `certgate client`")
        .nginx("`listen` (with `ssl`: server mode, without: client mode)")
        .default("(required)")
        .doc("server: mTLS in, plain HTTP out; client: plain HTTP in, mTLS out."),
    key("listen", "listen", Both)
        .nginx("`listen`")
        .default("(required)")
        .doc("Address to accept connections on, e.g. 0.0.0.0:8443."),
    key("upstream", "upstream", Both)
        .nginx("`proxy_pass`")
        .default("(required)")
        .doc("Where to forward: server mode http://HOST:PORT, HOST:PORT or unix:/PATH; client mode https://HOST[:PORT]."),
    key("cert", "cert", Both)
        .path()
        .nginx("`ssl_certificate`, `proxy_ssl_certificate`")
        .directives(&[directive("ssl_certificate", Ssl, Own), directive("proxy_ssl_certificate", ProxySsl, Own)])
        .default("(required in server mode; none in client mode)")
        .doc("Own certificate chain (PEM or DER), leaf first."),
    key("key", "key", Both)
        .path()
        .nginx("`ssl_certificate_key`, `proxy_ssl_certificate_key`")
        .directives(&[directive("ssl_certificate_key", Ssl, Own), directive("proxy_ssl_certificate_key", ProxySsl, Own)])
        .default("(required with cert)")
        .doc("Private key of cert (PKCS#8, PKCS#1 or SEC1; PEM or DER), or a pkcs11: URI."),
    key("client_ca", "client-ca", Server)
        .path()
        .nginx("`ssl_client_certificate`, `ssl_trusted_certificate`")
        .directives(&[directive("ssl_client_certificate", Ssl, Own), directive("ssl_trusted_certificate", Ssl, Own)])
        .default("(required unless verify_client = \"off\")")
        .doc("CA bundle client certificates must chain to.")
        .elsewhere("; client mode verifies the upstream with 'ca'"),
    key("verify_client", "verify-client", Server)
        .nginx("`ssl_verify_client`")
        .directives(&[directive("ssl_verify_client", Ssl, Own)])
        .default("required")
        .doc("Client certificates: required, optional, optional_no_ca or off."),
    key("ca", "ca", Client)
        .path()
        .nginx("`proxy_ssl_trusted_certificate`")
        .directives(&[directive("proxy_ssl_trusted_certificate", ProxySsl, Own)])
        .default("(required unless verify_upstream = false)")
        .doc("CA bundle the upstream's certificate must chain to (not the system roots).")
        .elsewhere("; server mode verifies clients with 'client_ca'"),
    key("server_name", "server-name", Client)
        .nginx("`proxy_ssl_name`")
        .directives(&[directive("proxy_ssl_name", ProxySsl, Text)])
        .default("the upstream's host")
        .doc("Name sent as SNI and checked against the upstream's certificate."),
    key("verify_depth", "verify-depth", Both)
        .nginx("`ssl_verify_depth`, `proxy_ssl_verify_depth`")
        .directives(&[directive("ssl_verify_depth", Ssl, Number), directive("proxy_ssl_verify_depth", ProxySsl, Number)])
        .default("1")
        .doc("Most intermediate CAs in the peer's chain (0 to 100)."),
    key("partial_chain", "partial-chain", Both)
        .default("true")
        .doc("true: any CA of the bundle may end the peer's chain; false: only a self-signed root (nginx, OpenSSL). The flag takes true|false."),
    key("verify_name_in_cn", "verify-name-in-cn", Client)
        .default("false")
        .doc("Match server_name against the CN of an upstream certificate without a DNS SAN (legacy; nginx does).")
        .elsewhere(" (it matches the upstream's name)"),
    key("min_tls_version", "min-tls-version", Both)
        .nginx("`ssl_protocols`, `proxy_ssl_protocols`")
        .directives(&[directive("ssl_protocols", Ssl, Protocols), directive("proxy_ssl_protocols", ProxySsl, Protocols)])
        .default("TLSv1.2")
        .doc("Lowest TLS version: TLSv1.2 or TLSv1.3."),
    key("max_tls_version", "max-tls-version", Both)
        .nginx("`ssl_protocols`, `proxy_ssl_protocols`")
        .directives(&[directive("ssl_protocols", Ssl, Protocols), directive("proxy_ssl_protocols", ProxySsl, Protocols)])
        .default("TLSv1.3")
        .doc("Highest TLS version: TLSv1.2 or TLSv1.3."),
    key("ciphers", "ciphers", Both)
        .nginx("`ssl_ciphers`, `proxy_ssl_ciphers`")
        .directives(&[directive("ssl_ciphers", Ssl, Text), directive("proxy_ssl_ciphers", ProxySsl, Text)])
        .default("every suite certgate implements")
        .doc("Cipher suites in OpenSSL syntax, e.g. HIGH:!aNULL:!MD5."),
    key("strict_key_permissions", "strict-key-permissions", Both)
        .default("false")
        .doc("Refuse to start when a private key is readable by group or others (else a warning)."),
    key("session_reuse", "no-session-reuse", Client)
        .nginx("`proxy_ssl_session_reuse`")
        .directives(&[directive("proxy_ssl_session_reuse", ProxySsl, OnOff)])
        .default("true")
        .doc("Resume TLS sessions on new upstream connections."),
    key("http2", "no-http2", Client)
        .nginx("`proxy_http_version` (accepted: nginx configs get false)")
        .directives(&[directive("proxy_http_version", Proxy, Ignored)])
        .default("true")
        .doc("Offer HTTP/2 to the upstream through ALPN (nginx configs get false: nginx speaks HTTP/1 upstream).")
        .elsewhere(" (server mode offers HTTP/2 through ALPN)"),
    key("verify_upstream", "no-verify-upstream", Client)
        .nginx("`proxy_ssl_verify`")
        .directives(&[directive("proxy_ssl_verify", ProxySsl, Own)])
        .default("true")
        .doc("Verify the upstream's certificate; false is warned about (for nginx parity only)."),
    key("send_sni", "no-send-sni", Client)
        .nginx("`proxy_ssl_server_name`")
        .directives(&[directive("proxy_ssl_server_name", ProxySsl, Own)])
        .default("true")
        .doc("Send server_name as SNI in the upstream handshake."),
    key("default_headers", "no-default-headers", Both)
        .default("true")
        .doc("Add X-Forwarded-For, X-Real-IP, X-Client-Verify and the like (nginx configs get false: nginx adds none)."),
    key("connect_timeout", "connect-timeout", Both)
        .nginx("`proxy_connect_timeout`")
        .directives(&[directive("proxy_connect_timeout", Proxy, Text).default("60s")])
        .default("10s")
        .doc("Time to connect to the upstream, TLS handshake included."),
    key("response_timeout", "response-timeout", Both)
        .nginx("`proxy_read_timeout`")
        .directives(&[directive("proxy_read_timeout", Proxy, Text)])
        .default("60s")
        .doc("Time until the upstream's response headers."),
    key("max_body_size", "max-body-size", Both)
        .nginx("`client_max_body_size`")
        .directives(&[directive("client_max_body_size", Proxy, Text).default("1m")])
        .default("no limit")
        .doc("Largest request body, e.g. 10m; larger ones get 413 (0: no limit)."),
    key("upstream_max_connections", "upstream-max-connections", Both)
        .nginx("`server ... max_conns=N` in an `upstream` block")
        .default("1024")
        .doc("Most connections open at once to each upstream (0: no limit)."),
    key("upstream_queue_timeout", "upstream-queue-timeout", Both)
        .default("10s")
        .doc("How long a request waits for a free upstream connection at that limit before a 503."),
    key("session_tickets", "no-session-tickets", Server)
        .nginx("`ssl_session_tickets`")
        .directives(&[directive("ssl_session_tickets", Ssl, OnOff)])
        .default("true")
        .doc("Issue TLS session tickets to clients."),
    key("underscores_in_headers", "underscores-in-headers", Both)
        .nginx("`underscores_in_headers`")
        .directives(&[directive("underscores_in_headers", Connection, OnOff)])
        .default("false")
        .doc("Forward client headers with '_' in their names (identity spellings never pass)."),
    key("client_header_timeout", "client-header-timeout", Both)
        .nginx("`client_header_timeout`")
        .directives(&[directive("client_header_timeout", Connection, Text)])
        .default("60s")
        .doc("How long a new connection may take to send its first request's headers."),
    key("keepalive_timeout", "keepalive-timeout", Both)
        .nginx("`keepalive_timeout`")
        .directives(&[directive("keepalive_timeout", Connection, Text)])
        .default("75s")
        .doc("Close an HTTP/1.1 connection idle this long between requests (0: no keep-alive)."),
    key("http2_idle_timeout", "http2-idle-timeout", Both)
        .nginx("`http2_idle_timeout`")
        .directives(&[directive("http2_idle_timeout", Connection, Text)])
        .default("keepalive_timeout")
        .doc("Send GOAWAY on an HTTP/2 connection without open streams for this long."),
    key("http2_ping_interval", "http2-ping-interval", Both)
        .default("off")
        .doc("Ping HTTP/2 clients this often and close the connection when one does not answer."),
    key("max_header_size", "max-header-size", Both)
        .nginx("`large_client_header_buffers`")
        .directives(&[directive("large_client_header_buffers", Connection, Own)])
        .default("32k")
        .doc("Largest request head: request line and headers (HTTP/1.1) or header list (HTTP/2)."),
    key("set_header", "set-header", Both)
        .nginx("`proxy_set_header`")
        .default("none")
        .doc("Header rules NAME VALUE with nginx variables, in order; an empty value removes the header."),
    key("client_cert_format", "client-cert-format", Server)
        .default("escaped-pem")
        .doc("Identity header formats: escaped-pem, rfc9440, xfcc, traefik.")
        .elsewhere(IDENTITIES),
    key("xfcc_mode", "xfcc-mode", Server)
        .default("set with xfcc, else sanitize")
        .doc("x-forwarded-client-cert handling: sanitize, set or append.")
        .elsewhere(IDENTITIES),
    key("xfcc_trusted", "xfcc-trusted", Server)
        .default("none")
        .doc("Peers (KIND:VALUE) whose inbound x-forwarded-client-cert is kept in append mode.")
        .elsewhere(IDENTITIES),
    key("trusted_forwarders", "trusted-forwarder", Server)
        .default("none")
        .doc("Proxies (KIND:VALUE) whose inbound identity headers are kept; the flag repeats as --trusted-forwarder.")
        .elsewhere(IDENTITIES),
    key("allow_cn", "allow-cn", Server)
        .default("any verified client")
        .doc("Admit clients whose subject CN is one of these.")
        .elsewhere(IDENTITIES),
    key("allow_o", "allow-o", Server)
        .default("any verified client")
        .doc("Admit clients whose subject O is one of these.")
        .elsewhere(IDENTITIES),
    key("allow_ou", "allow-ou", Server)
        .default("any verified client")
        .doc("Admit clients whose subject OU is one of these.")
        .elsewhere(IDENTITIES),
    key("allow_dns", "allow-dns", Server)
        .default("any verified client")
        .doc("Admit clients with one of these DNS SANs (*.domain for one label).")
        .elsewhere(IDENTITIES),
    key("allow_uri", "allow-uri", Server)
        .default("any verified client")
        .doc("Admit clients with one of these URI SANs (SPIFFE: * one segment, ** the rest).")
        .elsewhere(IDENTITIES),
    key("allow_pin_sha256", "allow-pin-sha256", Server)
        .default("any verified client")
        .doc("Admit clients whose certificate or public key (SPKI) has one of these SHA-256s (hex or base64).")
        .elsewhere(IDENTITIES),
    key("verify_cn", "verify-cn", Client)
        .default("any certificate for server_name")
        .doc("Require one of these subject CNs in the upstream's certificate.")
        .elsewhere(UPSTREAM_RULE),
    key("verify_o", "verify-o", Client)
        .default("any certificate for server_name")
        .doc("Require one of these subject Os in the upstream's certificate.")
        .elsewhere(UPSTREAM_RULE),
    key("verify_ou", "verify-ou", Client)
        .default("any certificate for server_name")
        .doc("Require one of these subject OUs in the upstream's certificate.")
        .elsewhere(UPSTREAM_RULE),
    key("verify_dns", "verify-dns", Client)
        .default("any certificate for server_name")
        .doc("Require one of these DNS SANs (*.domain for one label) in the upstream's certificate.")
        .elsewhere(UPSTREAM_RULE),
    key("verify_uri", "verify-uri", Client)
        .default("any certificate for server_name")
        .doc("Require one of these URI SANs (SPIFFE patterns) in the upstream's certificate.")
        .elsewhere(UPSTREAM_RULE),
    key("verify_pin_sha256", "verify-pin-sha256", Client)
        .default("any certificate for server_name")
        .doc("Require one of these SHA-256s of the upstream's certificate or public key.")
        .elsewhere(UPSTREAM_RULE),
    key("route", "", Server)
        .no_flag(ROUTES_ONLY)
        .nginx("`location`")
        .default("none")
        .doc("Per-path routes, each with the route keys below.")
        .elsewhere(IDENTITIES),
    key("route_match", "", Server)
        .no_flag("it only chooses how routes match, and routes are config files only")
        .default("segment")
        .doc("segment: /a/b takes /a/b and /a/b/..., not /a/bc; prefix: string prefix (nginx).")
        .elsewhere(IDENTITIES),
    key("path_normalization", "path-normalization", Server)
        .default("strict when a route has allow rules, else off")
        .doc("strict: 400 for paths a backend may read differently (;, \\, %5C, %2F, %2561) and forward the normalised path; off: forward as sent.")
        .elsewhere(IDENTITIES),
    key("crl", "crl", Both)
        .path()
        .nginx("`ssl_crl`, `proxy_ssl_crl`")
        .directives(&[directive("ssl_crl", Ssl, Text), directive("proxy_ssl_crl", ProxySsl, Text)])
        .default("none")
        .doc("Certificate revocation lists (PEM or DER) for verifying the peer."),
    key("crl_expired", "crl-expired", Both)
        .default("refuse")
        .doc("When a CRL is past its nextUpdate: refuse or allow."),
    key("ocsp_response", "ocsp-response", Server)
        .path()
        .default("none")
        .doc("DER OCSP response to staple to the server certificate (as nginx's ssl_stapling_file, which nginx configs do not translate yet).")
        .elsewhere(IDENTITIES),
];

/// Every key a route (`[[listener.route]]`) accepts.
pub static ROUTE_KEYS: &[Key] = &[
    key("path", "", Route)
        .no_flag(ROUTES_ONLY)
        .nginx("`location`")
        .default("(required)")
        .doc("The path prefix the route takes (see route_match)."),
    key("upstream", "", Route)
        .no_flag(ROUTES_ONLY)
        .nginx("`proxy_pass`")
        .default("the listener's upstream")
        .doc("Where this route forwards (http://HOST:PORT, HOST:PORT or unix:/PATH)."),
    key("return_code", "", Route)
        .no_flag(ROUTES_ONLY)
        .nginx("`return`")
        .default("none: forward")
        .doc("Answer with this status instead of forwarding."),
    key("return_text", "", Route)
        .no_flag(ROUTES_ONLY)
        .nginx("`return`")
        .default("empty")
        .doc("The body of that answer; for 3xx, the Location."),
    key("allow_cn", "", Route)
        .no_flag(ROUTES_ONLY)
        .default("the listener's rules")
        .doc("Admit clients whose subject CN is one of these, on this route."),
    key("allow_o", "", Route)
        .no_flag(ROUTES_ONLY)
        .default("the listener's rules")
        .doc("Admit clients whose subject O is one of these, on this route."),
    key("allow_ou", "", Route)
        .no_flag(ROUTES_ONLY)
        .default("the listener's rules")
        .doc("Admit clients whose subject OU is one of these, on this route."),
    key("allow_dns", "", Route)
        .no_flag(ROUTES_ONLY)
        .default("the listener's rules")
        .doc("Admit clients with one of these DNS SANs, on this route."),
    key("allow_uri", "", Route)
        .no_flag(ROUTES_ONLY)
        .default("the listener's rules")
        .doc("Admit clients with one of these URI SANs, on this route."),
    key("allow_pin_sha256", "", Route)
        .no_flag(ROUTES_ONLY)
        .default("the listener's rules")
        .doc("Admit clients with one of these certificate or SPKI SHA-256s, on this route."),
];

/// The flag of a listener key (`connect_timeout` -> `connect-timeout`), if it has one.
pub fn flag_of(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|k| k.key == key)?.flag_name()
}

/// Every nginx directive the table names, with its key; a directive that sets two keys
/// (`ssl_protocols`) comes once, with the first.
pub fn nginx_directives() -> impl Iterator<Item = (&'static Key, &'static NginxDirective)> {
    let all = || {
        KEYS.iter()
            .flat_map(|k| k.directives.iter().map(move |d| (k, d)))
    };
    all().enumerate().filter_map(move |(i, (key, d))| {
        all()
            .take(i)
            .all(|(_, earlier)| earlier.name != d.name)
            .then_some((key, d))
    })
}

/// The table's row for an nginx directive, if it is a setting.
pub fn nginx_directive(name: &str) -> Option<&'static NginxDirective> {
    KEYS.iter()
        .flat_map(|k| k.directives)
        .find(|d| d.name == name)
}

/// Whether `key`'s text values are file paths (resolved against the config file's directory).
pub fn is_path(key: &str) -> bool {
    KEYS.iter().any(|k| k.key == key && k.path)
}

/// docs/configuration.md, as the table says it.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from src/config/keys.rs; do not edit. Regenerate with:\n     \
         CERTGATE_WRITE_DOCS=1 cargo test --test key_table -->\n\n\
         Every listener setting, as a TOML key of a `[[listener]]` table, as a flag of\n\
         `certgate server` or `certgate client` (the key with `-` for `_`; booleans that default\n\
         to true are turned off with `--no-KEY`; `--partial-chain` takes true or false), and as the\n\
         nginx directives `certgate run` translates to it. Relative paths in a config file are\n\
         relative to that file. A key set in the mode it is not for is refused.\n\n\
         ## Listener keys\n\n",
    );
    table(&mut out, KEYS);
    out.push_str(
        "\n## Route keys\n\n\
         Keys of a `[[listener.route]]` table (server mode only).\n\n",
    );
    table(&mut out, ROUTE_KEYS);
    out
}

fn table(out: &mut String, keys: &[Key]) {
    out.push_str("| key | flag | modes | nginx | default | what it does |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for k in keys {
        let flag = match k.flag {
            Flag::Named(name) => format!("`--{name}`"),
            Flag::Absent(why) => format!("none: {why}"),
        };
        let modes = match k.modes {
            Server => "server",
            Client => "client",
            Both => "server, client",
            Route => "route",
        };
        let nginx = if k.nginx.is_empty() { "—" } else { k.nginx };
        let path = if k.path { " (a file path)" } else { "" };
        out.push_str(&format!(
            "| `{}` | {flag} | {modes} | {nginx} | {} | {}{path} |\n",
            k.key,
            cell(k.default),
            cell(k.doc),
        ));
    }
}

/// Escapes what a Markdown table cell cannot hold as is.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_complete_and_named_once() {
        for table in [KEYS, ROUTE_KEYS] {
            for (i, k) in table.iter().enumerate() {
                assert!(!k.doc.is_empty() && !k.default.is_empty(), "{}", k.key);
                assert!(
                    table[i + 1..].iter().all(|o| o.key != k.key),
                    "{} twice",
                    k.key
                );
                if let Flag::Named(name) = k.flag {
                    let plain = k.key.replace('_', "-");
                    assert!(
                        name == plain
                            || name == format!("no-{plain}")
                            || (k.key == "trusted_forwarders" && name == "trusted-forwarder"),
                        "flag --{name} of '{}' breaks the naming convention",
                        k.key
                    );
                }
            }
        }
    }

    /// The nginx column (the docs) names every directive the translation reads for a key.
    #[test]
    fn every_directive_read_is_in_the_nginx_column() {
        for k in KEYS {
            for d in k.directives {
                assert!(
                    k.nginx.contains(&format!("`{}`", d.name)),
                    "'{}' reads {} without naming it in its nginx column",
                    k.key,
                    d.name
                );
            }
        }
    }

    /// The nginx column names directives the translation knows (settings through this
    /// table, the structure in translate.rs), so the reference cannot promise one that
    /// `certgate run` ignores.
    #[test]
    fn every_nginx_directive_named_is_translated() {
        let translate = include_str!("nginx/translate.rs");
        for k in KEYS.iter().chain(ROUTE_KEYS) {
            for (i, word) in k.nginx.split('`').enumerate() {
                let directive = i % 2 == 1
                    && word
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
                if directive {
                    assert!(
                        nginx_directive(word).is_some() || translate.contains(&format!("\"{word}\"")),
                        "'{}' names the nginx directive {word}, which src/config/nginx/translate.rs does not read",
                        k.key
                    );
                }
            }
        }
    }
}
