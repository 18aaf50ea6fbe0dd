//! TLS session tickets issued as OpenSSL issues them: none in a resumed TLS 1.2 handshake.
//!
//! rustls answers every TLS 1.2 resumption by ticket with a new ticket. An OpenSSL client
//! takes that as replacing the session it resumed, which it marks not resumable; nginx as
//! proxy B (`proxy_ssl_session_reuse on`) holds on to the session saved after the last full
//! handshake, so its next ClientHello offered no session and only every other connection
//! resumed. OpenSSL as a server lets the client keep its ticket; here a resumed TLS 1.2
//! handshake gets an empty ticket, which RFC 5077 (section 3.3) allows once the extension was
//! acknowledged, and which OpenSSL and rustls clients read as "keep the ticket you have".
//!
//! rustls gives a ticketer no connection, only the session's encoding. A TLS 1.2 resumption
//! decrypts the client's ticket and, in the same call on the same thread, encrypts the new
//! one for the same session (same SNI, suite and master secret); a full handshake's session
//! has a new master secret. So the decrypted session's key is remembered per thread and a
//! ticket for that same session is not issued. Should rustls change its encoding, the key is
//! not found and tickets are issued as before: resumption then works as it did, never less.

use rustls::server::ProducesTickets;
use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

thread_local! {
    /// The key of the TLS 1.2 session whose ticket this thread decrypted last, taken by the
    /// next encryption on the thread.
    static RESUMED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// A ticketer that issues no new ticket in a resumed TLS 1.2 handshake.
#[derive(Debug)]
pub struct KeepResumedTickets {
    inner: Arc<dyn ProducesTickets>,
    /// Keyed per process, so the remembered value says nothing about the secret.
    hasher: std::collections::hash_map::RandomState,
}

impl KeepResumedTickets {
    pub fn wrap(inner: Arc<dyn ProducesTickets>) -> Arc<dyn ProducesTickets> {
        Arc::new(KeepResumedTickets {
            inner,
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    /// What identifies a TLS 1.2 session in rustls' encoding of it (0.23,
    /// `ServerSessionValue`): SNI, version, cipher suite and master secret, hashed; None for
    /// TLS 1.3 sessions and anything not laid out so.
    fn session_key(&self, plain: &[u8]) -> Option<u64> {
        let mut at = match plain.first()? {
            0 => 1,
            1 => 2 + usize::from(*plain.get(1)?),
            _ => return None,
        };
        if plain.get(at..at + 2)? != [0x03, 0x03] {
            return None;
        }
        at += 4; // version, cipher suite
        if *plain.get(at)? != 48 {
            return None;
        }
        let identity = plain.get(..at + 1 + 48)?;
        let mut hasher = self.hasher.build_hasher();
        hasher.write(identity);
        Some(hasher.finish())
    }
}

impl ProducesTickets for KeepResumedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let resumed = RESUMED.with(Cell::take);
        if resumed.is_some() && resumed == self.session_key(plain) {
            // An empty ticket: the client keeps the one it resumed with.
            return None;
        }
        self.inner.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher)?;
        RESUMED.with(|resumed| resumed.set(self.session_key(&plain)));
        Some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sni: Option<&str>, version: [u8; 2], secret: u8) -> Vec<u8> {
        let mut plain = Vec::new();
        match sni {
            Some(name) => {
                plain.push(1);
                plain.push(name.len() as u8);
                plain.extend_from_slice(name.as_bytes());
            }
            None => plain.push(0),
        }
        plain.extend_from_slice(&version);
        plain.extend_from_slice(&[0xc0, 0x2c]);
        plain.push(48);
        plain.extend_from_slice(&[secret; 48]);
        plain.extend_from_slice(&[0, 0, 0, 0]); // ems, no chain, no alpn, ...
        plain
    }

    fn ticketer() -> KeepResumedTickets {
        KeepResumedTickets {
            inner: rustls::crypto::aws_lc_rs::Ticketer::new().unwrap(),
            hasher: Default::default(),
        }
    }

    #[test]
    fn a_resumed_tls12_session_gets_no_new_ticket() {
        let tickets = ticketer();
        let plain = session(Some("localhost"), [3, 3], 7);
        let ticket = tickets.encrypt(&plain).unwrap();
        assert_eq!(tickets.decrypt(&ticket).unwrap(), plain);
        assert_eq!(tickets.encrypt(&plain), None);
        // Only once: the next full handshake of the same thread gets its ticket.
        assert!(tickets.encrypt(&plain).is_some());
    }

    #[test]
    fn other_sessions_and_tls13_get_tickets() {
        let tickets = ticketer();
        let ticket = tickets.encrypt(&session(None, [3, 3], 7)).unwrap();
        tickets.decrypt(&ticket).unwrap();
        assert!(tickets.encrypt(&session(None, [3, 3], 8)).is_some());

        let tls13 = session(None, [3, 4], 7);
        let ticket = tickets.encrypt(&tls13).unwrap();
        tickets.decrypt(&ticket).unwrap();
        assert!(tickets.encrypt(&tls13).is_some());
    }
}
