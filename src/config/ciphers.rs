//! OpenSSL cipher strings (`HIGH:!aNULL:!MD5`, as the seed writes them) -> rustls suites.
//!
//! As in OpenSSL, a cipher string governs the TLS 1.2 suites; TLS 1.3 suites all stay on
//! unless the string names some of them explicitly (a certgate convenience, since nginx needs
//! a separate directive for that). Keywords and names of suites that rustls does not implement
//! (RC4, CBC, DHE, ...) match nothing, exactly as a cipher OpenSSL lacks would.

use rustls::crypto::aws_lc_rs::cipher_suite as suites;
use rustls::{CipherSuite, SupportedCipherSuite};

/// Every suite certgate can offer, with the name OpenSSL (and so nginx's `$ssl_cipher`) uses.
pub const ALL_SUITES: &[(SupportedCipherSuite, &str)] = &[
    (suites::TLS13_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256"),
    (suites::TLS13_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384"),
    (
        suites::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_CHACHA20_POLY1305_SHA256",
    ),
    (
        suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
];

/// The OpenSSL name of a negotiated suite, for `$ssl_cipher`.
pub fn openssl_name(suite: CipherSuite) -> &'static str {
    ALL_SUITES
        .iter()
        .find(|(s, _)| s.suite() == suite)
        .map(|(_, name)| *name)
        .unwrap_or("UNKNOWN")
}

fn is_tls13(suite: &SupportedCipherSuite) -> bool {
    matches!(suite, SupportedCipherSuite::Tls13(_))
}

/// Does one OpenSSL keyword (or exact suite name) select this TLS 1.2 suite?
fn keyword_matches(keyword: &str, suite: SupportedCipherSuite, name: &str) -> bool {
    if keyword.eq_ignore_ascii_case(name) {
        return true;
    }
    let ecdsa = name.contains("ECDSA");
    let sha384 = name.ends_with("SHA384");
    match keyword {
        "ALL" | "DEFAULT" | "HIGH" | "TLSv1.2" | "ECDHE" | "EECDH" | "kECDHE" | "kEECDH"
        | "AEAD" => !is_tls13(&suite),
        "aECDSA" | "ECDSA" => ecdsa,
        "aRSA" => !ecdsa,
        "AES" | "AESGCM" => name.contains("AES"),
        "AES128" => name.contains("AES128"),
        "AES256" => name.contains("AES256"),
        "CHACHA20" => name.contains("CHACHA20"),
        "SHA256" => !sha384,
        "SHA384" => sha384,
        _ => false,
    }
}

/// The suites selected by a cipher string, or why it selects none.
#[derive(Debug)]
pub struct CipherSelection {
    pub suites: Vec<SupportedCipherSuite>,
    /// Words that are neither a keyword nor a suite name certgate knows (probably typos).
    pub unknown_words: Vec<String>,
}

const KNOWN_UNSUPPORTED: &[&str] = &[
    "aNULL",
    "eNULL",
    "NULL",
    "MD5",
    "SHA1",
    "SHA",
    "RC4",
    "DES",
    "3DES",
    "EXPORT",
    "EXP",
    "LOW",
    "MEDIUM",
    "PSK",
    "SRP",
    "DSS",
    "DH",
    "DHE",
    "EDH",
    "kDHE",
    "kEDH",
    "kRSA",
    "RSA",
    "ADH",
    "AECDH",
    "CAMELLIA",
    "ARIA",
    "SEED",
    "IDEA",
    "CBC",
    "COMPLEMENTOFDEFAULT",
    "COMPLEMENTOFALL",
    "SSLv3",
    "TLSv1",
    "TLSv1.0",
    "aPSK",
    "kPSK",
    "ECDHEPSK",
    "DHEPSK",
    "RSAPSK",
    "SHA1",
    "CCM",
    "CCM8",
    "AESCCM",
    "AESCCM8",
    "GOST",
    "aGOST",
    "kGOST",
];

/// Applies an OpenSSL cipher string to the suites certgate supports.
pub fn select(cipher_string: &str) -> CipherSelection {
    let mut chosen: Vec<(SupportedCipherSuite, &str)> = Vec::new();
    let mut banned: Vec<CipherSuite> = Vec::new();
    let mut named_tls13: Vec<SupportedCipherSuite> = Vec::new();
    let mut unknown_words = Vec::new();

    let terms = cipher_string
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty());
    for term in terms {
        if term.starts_with('@') {
            continue; // @STRENGTH, @SECLEVEL=n: ordering and policy knobs rustls has no use for.
        }
        let (operator, body) = match term.as_bytes()[0] {
            b'!' | b'-' | b'+' => (term.as_bytes()[0], &term[1..]),
            _ => (b' ', term),
        };
        let keywords: Vec<&str> = body.split('+').collect();
        for keyword in &keywords {
            let known = KNOWN_UNSUPPORTED.contains(keyword)
                || ALL_SUITES.iter().any(|(s, name)| {
                    keyword.eq_ignore_ascii_case(name) || keyword_matches(keyword, *s, name)
                });
            // Names of OpenSSL suites rustls lacks look like "DHE-RSA-AES256-SHA": not typos.
            if !known && !keyword.contains('-') {
                unknown_words.push(keyword.to_string());
            }
        }
        let matching: Vec<(SupportedCipherSuite, &str)> = ALL_SUITES
            .iter()
            .copied()
            .filter(|(suite, name)| {
                if is_tls13(suite) {
                    keywords.len() == 1 && keywords[0].eq_ignore_ascii_case(name)
                } else {
                    keywords.iter().all(|k| keyword_matches(k, *suite, name))
                }
            })
            .collect();
        match operator {
            b'!' => {
                banned.extend(matching.iter().map(|(s, _)| s.suite()));
                chosen.retain(|(s, _)| !banned.contains(&s.suite()));
            }
            b'-' => chosen.retain(|(s, _)| !matching.iter().any(|(m, _)| m.suite() == s.suite())),
            b'+' => {
                let (moved, kept): (Vec<_>, Vec<_>) = chosen
                    .into_iter()
                    .partition(|(s, _)| matching.iter().any(|(m, _)| m.suite() == s.suite()));
                chosen = kept.into_iter().chain(moved).collect();
            }
            _ => {
                for (suite, name) in matching {
                    if is_tls13(&suite) {
                        if !named_tls13.iter().any(|s| s.suite() == suite.suite()) {
                            named_tls13.push(suite);
                        }
                    } else if !banned.contains(&suite.suite())
                        && !chosen.iter().any(|(s, _)| s.suite() == suite.suite())
                    {
                        chosen.push((suite, name));
                    }
                }
            }
        }
    }

    let tls13: Vec<SupportedCipherSuite> = if named_tls13.is_empty() {
        ALL_SUITES
            .iter()
            .map(|(s, _)| *s)
            .filter(is_tls13)
            .collect()
    } else {
        named_tls13
    };
    CipherSelection {
        suites: tls13
            .into_iter()
            .chain(chosen.into_iter().map(|(s, _)| s))
            .collect(),
        unknown_words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls12_names(selection: &CipherSelection) -> Vec<&'static str> {
        selection
            .suites
            .iter()
            .filter(|s| !is_tls13(s))
            .map(|s| openssl_name(s.suite()))
            .collect()
    }

    #[test]
    fn seed_cipher_string_keeps_every_tls12_suite() {
        let selection = select("HIGH:!aNULL:!MD5");
        assert_eq!(tls12_names(&selection).len(), 6);
        assert_eq!(selection.suites.len(), 9);
        assert!(selection.unknown_words.is_empty());
    }

    #[test]
    fn exclusion_and_conjunction() {
        let selection = select("ECDHE+AESGCM:!aRSA:!AES256");
        assert_eq!(
            tls12_names(&selection),
            vec!["ECDHE-ECDSA-AES128-GCM-SHA256"]
        );
    }

    #[test]
    fn banned_suites_cannot_come_back() {
        let selection = select("!CHACHA20:ALL");
        assert!(tls12_names(&selection)
            .iter()
            .all(|n| !n.contains("CHACHA20")));
    }

    #[test]
    fn list_of_only_unsupported_suites_selects_no_tls12_suite() {
        let selection = select("DHE-RSA-AES256-SHA:RC4");
        assert!(tls12_names(&selection).is_empty());
        assert!(selection.unknown_words.is_empty());
    }

    #[test]
    fn typo_is_reported() {
        assert_eq!(select("HIHG").unknown_words, vec!["HIHG".to_string()]);
    }

    #[test]
    fn naming_a_tls13_suite_restricts_tls13() {
        let selection = select("TLS_AES_256_GCM_SHA384:HIGH");
        let tls13: Vec<_> = selection.suites.iter().filter(|s| is_tls13(s)).collect();
        assert_eq!(tls13.len(), 1);
    }
}
