//! Who may connect: the configured users (`analytics.users`), by SCRAM-SHA-256 (what
//! Postgres itself uses by default, and what every current client speaks). The stored hash
//! is the SCRAM salted password (`crate::users`), so the password never crosses the wire and
//! is never stored. An unknown user gets the same challenge as a real one (a decoy
//! verifier), so a probe cannot tell users apart.

use std::fmt::Debug;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, random_nonce};
use datafusion_postgres::pgwire::api::auth::{AuthSource, LoginInfo, Password};
use datafusion_postgres::pgwire::error::PgWireResult;

use crate::users::{ITERATIONS, Users};

/// The users' SCRAM verifiers.
pub struct ScramVerifier {
    users: Users,
    /// A random password's verifier, for every unknown user name.
    decoy_salt: Vec<u8>,
    decoy: Vec<u8>,
}

impl ScramVerifier {
    pub fn new(users: Users) -> ScramVerifier {
        let decoy_salt = random_nonce().into_bytes();
        ScramVerifier {
            decoy: gen_salted_password(&random_nonce(), &decoy_salt, ITERATIONS),
            decoy_salt,
            users,
        }
    }
}

impl Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("users", &self.users.names())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthSource for ScramVerifier {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // The comparison of the client's proof with this verifier is pgwire's; the proof is
        // bound to a fresh nonce, so its timing tells nothing reusable.
        Ok(match login.user().and_then(|name| self.users.get(name)) {
            Some((_, hash)) => Password::new(Some(hash.salt.clone()), hash.salted.clone()),
            None => Password::new(Some(self.decoy_salt.clone()), self.decoy.clone()),
        })
    }
}
