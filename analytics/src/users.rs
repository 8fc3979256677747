//! The business users of the analytics server: who may sign in to the dashboard page and
//! connect over the Postgres protocol, with which role. Passwords are kept hashed, the way
//! SCRAM needs them (PBKDF2-HMAC-SHA256, 4096 rounds, a random salt per user): the same hash
//! checks a dashboard sign-in and answers a Postgres client's SCRAM-SHA-256 exchange, and
//! the password itself is never stored.
//!
//! Configuration (`analytics.users`), either as tables or, for environment variables, as
//! strings `"NAME ROLE HASH"`:
//!
//! ```toml
//! [[analytics.users]]
//! name = "alice"
//! role = "analyst"
//! password_hash = "pbkdf2-sha256.4096.6a1c...9f.0e77...21"
//! ```
//!
//! `shoplens-analytics hash-password` prints a hash for a password read from stdin.

use std::collections::HashMap;

use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, random_nonce};
use serde::{Deserialize, Deserializer, Serialize};
use shoplens_kit::identity::Role;

/// PBKDF2 rounds: what Postgres (and pgwire's SCRAM) use.
pub const ITERATIONS: usize = 4096;

/// The development user of the embedded default (`shoplens`, an admin): a server listening
/// beyond loopback refuses to start while a user has this password.
pub const DEV_USER: &str = "shoplens";
pub const DEV_PASSWORD: &str = "shoplens";

/// One user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// `viewer` (dashboard), `analyst` (also SQL and exports) or `admin` (also personal
    /// data, reconciliation).
    pub role: Role,
    /// `pbkdf2-sha256.ITERATIONS.SALT_HEX.HASH_HEX`; never logged.
    pub password_hash: String,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password_hash", &"***")
            .finish()
    }
}

/// A user given as a table or as the string `"NAME ROLE HASH"` (environment variables).
pub fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UserConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Table(UserConfig),
        Text(String),
    }
    Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|entry| match entry {
            Entry::Table(user) => Ok(user),
            Entry::Text(text) => {
                let parts: Vec<&str> = text.split_whitespace().collect();
                let [name, role, hash] = parts[..] else {
                    return Err(serde::de::Error::custom(
                        "a user as text is \"NAME ROLE HASH\"",
                    ));
                };
                let role = Role::parse(role).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown role `{role}` of user `{name}`"))
                })?;
                Ok(UserConfig {
                    name: name.to_owned(),
                    role,
                    password_hash: hash.to_owned(),
                })
            }
        })
        .collect()
}

/// The default users: the development admin, for the embedded default on loopback.
pub fn default_users() -> Vec<UserConfig> {
    vec![UserConfig {
        name: DEV_USER.into(),
        role: Role::Admin,
        password_hash: hash_with_salt(DEV_PASSWORD, b"shoplens-development-salt"),
    }]
}

/// A new hash of `password`, with a random salt.
pub fn hash(password: &str) -> String {
    hash_with_salt(password, random_nonce().as_bytes())
}

fn hash_with_salt(password: &str, salt: &[u8]) -> String {
    let salted = gen_salted_password(password, salt, ITERATIONS);
    format!(
        "pbkdf2-sha256.{ITERATIONS}.{}.{}",
        hex::encode(salt),
        hex::encode(salted)
    )
}

/// A parsed hash: the salt and the salted password.
#[derive(Clone, PartialEq, Eq)]
pub struct Hash {
    pub salt: Vec<u8>,
    pub salted: Vec<u8>,
}

impl Hash {
    pub fn parse(text: &str) -> Result<Hash, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let ["pbkdf2-sha256", rounds, salt, salted] = parts[..] else {
            return Err("expected pbkdf2-sha256.ROUNDS.SALT.HASH".into());
        };
        if rounds.parse::<usize>() != Ok(ITERATIONS) {
            return Err(format!("only {ITERATIONS} rounds are supported"));
        }
        let salt = hex::decode(salt).map_err(|_| "the salt is not hex".to_owned())?;
        let salted = hex::decode(salted).map_err(|_| "the hash is not hex".to_owned())?;
        if salt.is_empty() || salted.len() != 32 {
            return Err("the salt or the hash has the wrong length".into());
        }
        Ok(Hash { salt, salted })
    }

    /// Whether `password` is the one hashed (compared in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let candidate = gen_salted_password(password, &self.salt, ITERATIONS);
        candidate.len() == self.salted.len()
            && candidate
                .iter()
                .zip(&self.salted)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The users, by name.
#[derive(Clone, Default)]
pub struct Users {
    by_name: HashMap<String, (Role, Hash)>,
}

impl Users {
    /// The configured users; an unreadable hash is an error naming the user.
    pub fn new(users: &[UserConfig]) -> Result<Users, String> {
        let mut by_name = HashMap::new();
        for u in users {
            if !matches!(u.role, Role::Viewer | Role::Analyst | Role::Admin) {
                return Err(format!(
                    "analytics.users: `{}` has role `{}`; a user is a viewer, an analyst or an \
                     admin",
                    u.name, u.role
                ));
            }
            let hash = Hash::parse(&u.password_hash)
                .map_err(|e| format!("analytics.users: the password hash of `{}`: {e}", u.name))?;
            by_name.insert(u.name.clone(), (u.role, hash));
        }
        Ok(Users { by_name })
    }

    /// The role of `name` when `password` is theirs.
    pub fn sign_in(&self, name: &str, password: &str) -> Option<Role> {
        let (role, hash) = self.by_name.get(name)?;
        hash.verify(password).then_some(*role)
    }

    /// The role and hash of `name`.
    pub fn get(&self, name: &str) -> Option<&(Role, Hash)> {
        self.by_name.get(name)
    }

    /// The users whose password is the built-in development one.
    pub fn with_dev_password(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .by_name
            .iter()
            .filter(|(_, (_, h))| h.verify(DEV_PASSWORD))
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_their_password_only_and_never_show_it() {
        let h = hash("correct horse");
        assert!(!h.contains("correct"));
        let parsed = Hash::parse(&h).unwrap();
        assert!(parsed.verify("correct horse"));
        assert!(!parsed.verify("correct hors"));
        assert_ne!(hash("correct horse"), h, "a fresh salt each time");
        assert!(Hash::parse("plain-text").is_err());
        assert!(Hash::parse("pbkdf2-sha256.1000.00.00").is_err());
    }

    #[test]
    fn users_sign_in_with_their_role_and_the_dev_password_is_found() {
        let users = Users::new(&[
            UserConfig {
                name: "alice".into(),
                role: Role::Analyst,
                password_hash: hash("a-long-password"),
            },
            default_users().remove(0),
        ])
        .unwrap();
        assert_eq!(
            users.sign_in("alice", "a-long-password"),
            Some(Role::Analyst)
        );
        assert_eq!(users.sign_in("alice", "wrong"), None);
        assert_eq!(users.sign_in("mallory", "a-long-password"), None);
        assert_eq!(users.with_dev_password(), vec![DEV_USER]);
        let bad = UserConfig {
            name: "svc".into(),
            role: Role::Service,
            password_hash: hash("x"),
        };
        assert!(Users::new(&[bad]).is_err());
        let shown = format!("{:?}", default_users());
        assert!(!shown.contains("pbkdf2"), "{shown}");
    }

    #[test]
    fn users_read_as_tables_or_as_text() {
        #[derive(Deserialize)]
        struct C {
            #[serde(deserialize_with = "users")]
            users: Vec<UserConfig>,
        }
        let h = hash("pw");
        let c: C = serde_json::from_value(serde_json::json!({
            "users": [
                {"name": "a", "role": "viewer", "password_hash": h},
                format!("b admin {h}"),
            ]
        }))
        .unwrap();
        assert_eq!(c.users[0].role, Role::Viewer);
        assert_eq!(c.users[1].name, "b");
        assert_eq!(c.users[1].role, Role::Admin);
        assert!(serde_json::from_value::<C>(serde_json::json!({"users": ["b boss x"]})).is_err());
    }
}
