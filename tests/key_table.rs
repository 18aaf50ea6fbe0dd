//! The key table (src/config/keys.rs) against what users see: the flags of `certgate server`
//! and `certgate client`, and docs/configuration.md.

mod support;

use certgate::config::keys::{self, Flag, Modes};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use support::*;

/// Flags of every serving command that set no listener key.
const PROCESS_FLAGS: &[&str] = &[
    "help",
    "shutdown-timeout",
    "workers",
    "admin",
    "admin-host",
    "access-log",
    "access-log-file",
    "log-file",
    "log-level",
    "pkcs11-module",
];

/// The long flags `certgate MODE --help` lists, one per option line (not those named in the
/// descriptions).
fn help_flags(mode: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args([mode, "--help"])
        .output()
        .expect("run certgate");
    assert!(output.status.success(), "certgate {mode} --help failed");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            let start = line.find("--")? + 2;
            let name: String = line[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Some(name)
        })
        .collect()
}

fn check_mode(mode: &str, table: Modes) {
    let flags = help_flags(mode);
    assert!(
        flags.contains("listen"),
        "no option lines parsed: {flags:?}"
    );
    let rows: Vec<_> = keys::KEYS
        .iter()
        .filter(|k| k.modes == table || k.modes == Modes::Both)
        .collect();
    for row in &rows {
        match row.flag {
            Flag::Named(name) => assert!(
                flags.contains(name),
                "the key table gives '{}' the flag --{name}, but `certgate {mode} --help` has no such flag: add it to the clap structs and FlagSpec in src/main.rs",
                row.key
            ),
            Flag::Absent(why) => assert!(!why.is_empty(), "'{}' has no flag and no reason", row.key),
        }
    }
    for flag in &flags {
        assert!(
            PROCESS_FLAGS.contains(&flag.as_str())
                || rows.iter().any(|row| row.flag_name() == Some(flag.as_str())),
            "`certgate {mode} --help` lists --{flag}, which no row of src/config/keys.rs for {mode} mode names"
        );
    }
}

#[test]
fn every_server_key_has_its_flag() {
    check_mode("server", Modes::Server);
}

#[test]
fn every_client_key_has_its_flag() {
    check_mode("client", Modes::Client);
}

#[test]
fn configuration_reference_is_generated_from_the_key_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let generated = keys::reference_markdown();
    if std::env::var_os("CERTGATE_WRITE_DOCS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/configuration.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/configuration.md differs from what src/config/keys.rs generates; regenerate it with\n    CERTGATE_WRITE_DOCS=1 cargo test --test key_table"
    );
}

#[test]
fn the_reference_names_every_key() {
    let generated = keys::reference_markdown();
    for row in keys::KEYS.iter().chain(keys::ROUTE_KEYS) {
        assert!(
            generated.contains(&format!("| `{}` |", row.key)),
            "{}",
            row.key
        );
    }
}

/// The flags added with the key table set their keys: `--no-default-headers` (in both modes,
/// as each adds X-Real-IP) leaves the backend without one, and `--no-verify-upstream` is warned about under its flag's name.
#[tokio::test]
async fn negated_flags_reach_their_keys() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let (_server_a, proxy_b) = start_chain(&files, &[], &[]).await;
    let answer = http_get(proxy_b.addr(), "/", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        !echoed_header(&answer.body, "x-real-ip").is_empty(),
        "{}",
        answer.body
    );

    let (_server_a, proxy_b) = start_chain(
        &files,
        &["--no-default-headers"],
        &["--no-default-headers", "--no-verify-upstream"],
    )
    .await;
    let answer = http_get(proxy_b.addr(), "/", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        echoed_header(&answer.body, "x-real-ip").is_empty(),
        "{}",
        answer.body
    );
    proxy_b.wait_for_log(&["--no-verify-upstream: the upstream's certificate is not verified"]);
}
