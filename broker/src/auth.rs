//! Authentication: the SASL mechanisms we offer (PLAIN, AMQPLAIN) and the user check.
//!
//! Every login goes through [`authenticate`], which parses the mechanism's response and asks
//! the user database (`crate::access`) to check the password and the loopback rule.

use std::net::IpAddr;

use amq_protocol::types::FieldTable;

use crate::access::AccessControl;
use crate::field_value::string_field;

/// The mechanisms offered in `connection.start`, space separated as the spec wants.
pub(crate) const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// Why a login failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// The client picked a mechanism we do not offer (503 COMMAND_INVALID).
    #[error("unknown authentication mechanism '{0}'")]
    UnknownMechanism(String),
    /// The response could not be parsed for the mechanism (403 ACCESS_REFUSED).
    #[error("malformed {0} response")]
    Malformed(&'static str),
    /// Wrong user or password (403 ACCESS_REFUSED).
    #[error("Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.")]
    Refused {
        /// The mechanism used.
        mechanism: String,
    },
}

/// Checks a `connection.start-ok` response and returns the authenticated user name.
pub(crate) fn authenticate(
    mechanism: &str,
    response: &[u8],
    users: &AccessControl,
    peer: IpAddr,
) -> Result<String, AuthError> {
    let (user, password) = match mechanism {
        // PLAIN (RFC 4616): authzid NUL authcid NUL password.
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let (_authz, user, pass) = match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(u), Some(p)) => (a, u, p),
                _ => return Err(AuthError::Malformed("PLAIN")),
            };
            (
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            )
        }
        // AMQPLAIN: a field table without its length prefix, holding LOGIN and PASSWORD.
        "AMQPLAIN" => amqplain(response).ok_or(AuthError::Malformed("AMQPLAIN"))?,
        other => return Err(AuthError::UnknownMechanism(other.to_owned())),
    };
    if users.check_login(&user, &password, peer) {
        Ok(user)
    } else {
        Err(AuthError::Refused {
            mechanism: mechanism.to_owned(),
        })
    }
}

/// Parses an AMQPLAIN response: the table's entries without the 4-byte length prefix.
fn amqplain(response: &[u8]) -> Option<(String, String)> {
    // The parser recurses per nested table: a login may not nest deeper than any other table.
    crate::frame::check_table_entries(response).ok()?;
    let mut framed = Vec::with_capacity(response.len() + 4);
    framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
    framed.extend_from_slice(response);
    let (_, table): (_, FieldTable) =
        amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    Some((
        string_field(&table, "LOGIN")?,
        string_field(&table, "PASSWORD")?,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::access::AccessOptions;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn auth(mechanism: &str, response: &[u8]) -> Result<String, AuthError> {
        let users = AccessControl::load(None, AccessOptions::default()).unwrap();
        authenticate(mechanism, response, &users, LOCAL)
    }

    #[test]
    fn plain_accepts_guest_and_refuses_others() {
        assert_eq!(auth("PLAIN", b"\0guest\0guest").unwrap(), "guest");
        assert!(matches!(
            auth("PLAIN", b"\0guest\0nope"),
            Err(AuthError::Refused { .. })
        ));
        assert_eq!(
            auth("PLAIN", b"garbage"),
            Err(AuthError::Malformed("PLAIN"))
        );
        assert!(matches!(
            auth("EXTERNAL", b""),
            Err(AuthError::UnknownMechanism(_))
        ));
    }

    /// An AMQPLAIN response as pika sends it: the table entries "LOGIN" S "guest",
    /// "PASSWORD" S "guest", without the table's size.
    fn amqplain_guest() -> Vec<u8> {
        let mut r = Vec::new();
        for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
            r.push(k.len() as u8);
            r.extend_from_slice(k.as_bytes());
            r.push(b'S');
            r.extend_from_slice(&(v.len() as u32).to_be_bytes());
            r.extend_from_slice(v.as_bytes());
        }
        r
    }

    #[test]
    fn amqplain_reads_login_and_password() {
        // "LOGIN" S "guest", "PASSWORD" S "guest", as pika sends it.
        let r = amqplain_guest();
        assert_eq!(auth("AMQPLAIN", &r).unwrap(), "guest");
    }

    #[test]
    fn a_deeply_nested_amqplain_response_is_malformed_not_a_stack_overflow() {
        // "LOGIN" S "guest", "PASSWORD" S "guest", then "n" holding tables 100,000 deep.
        let mut r = amqplain_guest();
        let mut inner = vec![0u8, 0, 0, 0];
        for _ in 0..100_000 {
            let mut t = ((inner.len() + 3) as u32).to_be_bytes().to_vec();
            t.extend_from_slice(&[1, b'n', b'F']);
            t.extend_from_slice(&inner);
            inner = t;
        }
        r.extend_from_slice(&[1, b'n', b'F']);
        r.extend_from_slice(&inner);
        assert_eq!(auth("AMQPLAIN", &r), Err(AuthError::Malformed("AMQPLAIN")));
    }
}
