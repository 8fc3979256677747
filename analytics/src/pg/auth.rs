//! Who may connect: SCRAM-SHA-256 (what Postgres itself uses by default, and what every
//! current client speaks) for the configured user. The password never crosses the wire and
//! is never logged; an unknown user gets the same challenge as the real one (a decoy
//! verifier), so a probe cannot tell users apart.

use std::fmt::Debug;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, random_nonce};
use datafusion_postgres::pgwire::api::auth::{AuthSource, LoginInfo, Password};
use datafusion_postgres::pgwire::error::PgWireResult;

/// The SCRAM verifier of the configured user, computed once: SCRAM needs the salted password,
/// and computing it takes 4096 PBKDF2 rounds.
pub struct ScramVerifier {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    /// The verifier of a random password, for every other user name.
    decoy: Vec<u8>,
}

impl ScramVerifier {
    pub fn new(user: &str, password: &str) -> ScramVerifier {
        let iterations = datafusion_postgres::pgwire::api::auth::sasl::scram::SCRAM_ITERATIONS;
        let salt = random_nonce().into_bytes();
        ScramVerifier {
            user: user.to_owned(),
            salted: gen_salted_password(password, &salt, iterations),
            decoy: gen_salted_password(&random_nonce(), &salt, iterations),
            salt,
        }
    }
}

impl Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthSource for ScramVerifier {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // The comparison of the client's proof with this verifier is pgwire's; the proof is
        // bound to a fresh nonce, so its timing tells nothing reusable.
        let salted = if login.user() == Some(self.user.as_str()) {
            &self.salted
        } else {
            &self.decoy
        };
        Ok(Password::new(Some(self.salt.clone()), salted.clone()))
    }
}
