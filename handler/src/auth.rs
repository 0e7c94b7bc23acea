//! HTTP Basic auth on `/sdapi/*`, like A1111's `--api-auth`.

use base64::Engine;
use subtle::ConstantTimeEq;

/// Outcome of checking an `Authorization` header against the configured credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    /// No or unparsable header: A1111 (HTTPBasic) says "Not authenticated".
    Missing,
    /// Wrong user or password: "Incorrect username or password".
    Wrong,
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

pub fn check(header: Option<&str>, credentials: &[(String, String)]) -> AuthOutcome {
    if credentials.is_empty() {
        return AuthOutcome::Allowed;
    }
    let Some(h) = header else { return AuthOutcome::Missing };
    let Some((scheme, value)) = h.trim().split_once(' ') else { return AuthOutcome::Missing };
    if !scheme.eq_ignore_ascii_case("basic") {
        return AuthOutcome::Missing;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value.trim()) else {
        return AuthOutcome::Missing;
    };
    let Ok(text) = String::from_utf8(decoded) else { return AuthOutcome::Missing };
    let Some((user, pass)) = text.split_once(':') else { return AuthOutcome::Missing };
    // Compare against every pair without short-circuiting, so timing does not reveal which matched.
    let mut ok = false;
    for (u, p) in credentials {
        ok |= ct_eq(user, u) & ct_eq(pass, p);
    }
    if ok { AuthOutcome::Allowed } else { AuthOutcome::Wrong }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s))
    }

    #[test]
    fn checks_like_httpbasic() {
        let creds = vec![("u".to_string(), "p".to_string())];
        assert_eq!(check(None, &creds), AuthOutcome::Missing);
        assert_eq!(check(Some("Bearer x"), &creds), AuthOutcome::Missing);
        assert_eq!(check(Some(&basic("u:x")), &creds), AuthOutcome::Wrong);
        assert_eq!(check(Some(&basic("u:p")), &creds), AuthOutcome::Allowed);
        assert_eq!(check(None, &[]), AuthOutcome::Allowed);
    }
}
