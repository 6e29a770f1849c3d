//! Who may connect: the startup handshake of each connection. The database must be `keymart`
//! (else SQLSTATE 3D000); with users configured, SCRAM-SHA-256 (RFC 5802/7677) against a
//! verifier — StoredKey and ServerKey, as PostgreSQL keeps them — so a verifier copied from
//! `pg_authid` works as well as a password from the environment. A wrong password is 28P01.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use ring::{digest, hmac, rand::SecureRandom};
use tokio::sync::Mutex;

use super::cancel::Cancels;
use crate::config::ServeUser;
use crate::error::{Error, Result};

pub const DATABASE: &str = "keymart";
const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations for verifiers keymart derives from a password (PostgreSQL's default).
const ITERATIONS: u32 = 4096;

/// What SCRAM needs to check a user's proof without the password.
#[derive(Clone)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(…)")
    }
}

impl Verifier {
    fn from_password(password: &str) -> Verifier {
        let mut salt = vec![0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut salt).expect("the system's random source");
        let salted = gen_salted_password(password, &salt, ITERATIONS as usize);
        Verifier {
            iterations: ITERATIONS,
            salt,
            stored_key: stored_key(&salted),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this verifier was made from (HTTP Basic).
    fn admits(&self, password: &str) -> bool {
        let salted = gen_salted_password(password, &self.salt, self.iterations as usize);
        same(&stored_key(&salted), &self.stored_key)
    }

    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), PostgreSQL's format.
    fn parse(text: &str) -> std::result::Result<Verifier, String> {
        let bad = || "not a SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> verifier".to_string();
        let rest = text.trim().strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| B64.decode(s).map_err(|_| bad());
        let verifier = Verifier {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: decode(salt)?,
            stored_key: decode(stored_key)?,
            server_key: decode(server_key)?,
        };
        if verifier.iterations == 0 || verifier.stored_key.len() != 32 || verifier.server_key.len() != 32 {
            return Err(bad());
        }
        Ok(verifier)
    }
}

/// The configured users, by name.
#[derive(Debug, Default)]
pub struct Users(HashMap<String, Verifier>);

impl Users {
    /// Every user's verifier; a problem (an unset variable, a malformed verifier, both or neither
    /// of `password` and `scram`) is a configuration error naming the user, never the secret.
    pub fn from_settings(users: &[ServeUser]) -> Result<Users> {
        let mut found = HashMap::new();
        let mut problems = Vec::new();
        for user in users {
            let verifier = match (user.password(), &user.scram) {
                (Some(Ok(password)), None) if !password.is_empty() => Ok(Verifier::from_password(&password)),
                (Some(Ok(_)), None) => Err("password is empty".to_string()),
                (Some(Err(e)), None) => Err(e),
                (None, Some(scram)) => Verifier::parse(scram),
                _ => Err("give exactly one of `password` and `scram`".to_string()),
            };
            match verifier {
                Ok(v) => {
                    if found.insert(user.name.clone(), v).is_some() {
                        problems.push(format!("serve.users: `{}` is listed twice", user.name));
                    }
                }
                Err(e) if e.starts_with("serve.users") => problems.push(e),
                Err(e) => problems.push(format!("serve.users `{}`: {e}", user.name)),
            }
        }
        if problems.is_empty() { Ok(Users(found)) } else { Err(Error::Usage(problems.join("\n"))) }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A user's name and password as HTTP Basic sends them; an unknown user costs the same
    /// derivation as a wrong password.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        match self.0.get(user) {
            Some(verifier) => verifier.admits(password),
            None => {
                let _ = gen_salted_password(password, user.as_bytes(), ITERATIONS as usize);
                false
            }
        }
    }
}

/// SCRAM's StoredKey: H(HMAC(SaltedPassword, "Client Key")).
fn stored_key(salted: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, &hmac_sha256(salted, b"Client Key")).as_ref().to_vec()
}

/// Equal keys, compared in full whatever differs first, so the time taken says nothing about them.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref().to_vec()
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message)))
}

enum Handshake {
    Started,
    /// Server-first sent: what the client-final must prove.
    ServerFirstSent {
        user: String,
        verifier: Option<Verifier>,
        auth_prefix: String,
        nonce: String,
        gs2: String,
    },
}

/// One connection's startup: a handler per connection (it holds the SCRAM exchange's state).
pub struct Startup {
    users: Arc<Users>,
    cancels: Arc<Cancels>,
    state: Mutex<Handshake>,
}

impl Startup {
    pub fn new(users: Arc<Users>, cancels: Arc<Cancels>) -> Startup {
        Startup { users, cancels, state: Mutex::new(Handshake::Started) }
    }

    async fn accept<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(&*client);
        client.set_pid_and_secret_key(pid, secret.clone());
        // Registered for cancel requests, until the session ends.
        let (requests, registered) = self.cancels.register(pid, secret.to_bytes());
        client.session_extensions().insert(requests);
        client.session_extensions().insert(registered);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.server_version = "16.6".into();
        finish_authentication(client, &parameters).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
                // PostgreSQL's default database is the user's name.
                let database = client.metadata().get(METADATA_DATABASE).cloned().unwrap_or_else(|| user.clone());
                if database != DATABASE {
                    return Err(fatal(
                        "3D000",
                        format!("database \"{database}\" does not exist (keymart serve has one: \"{DATABASE}\")"),
                    ));
                }
                if self.users.is_empty() {
                    return self.accept(client).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![MECHANISM.into()]))).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let mut state = self.state.lock().await;
                if matches!(*state, Handshake::Started) {
                    let initial = message.into_sasl_initial_response()?;
                    if initial.auth_method != MECHANISM {
                        return Err(fatal("28000", format!("unsupported SASL mechanism {}", initial.auth_method)));
                    }
                    let data = initial.data.as_deref().unwrap_or_default();
                    let client_first = std::str::from_utf8(data).map_err(|_| protocol("client-first"))?;
                    let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
                    let (next, server_first) = server_first(&self.users, user, client_first)?;
                    client
                        .send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(
                            server_first.into_bytes().into(),
                        )))
                        .await?;
                    *state = next;
                } else {
                    let response = message.into_sasl_response()?;
                    let client_final = std::str::from_utf8(&response.data).map_err(|_| protocol("client-final"))?;
                    let server_final = verify(&state, client_final)?;
                    client
                        .send(PgWireBackendMessage::Authentication(Authentication::SASLFinal(
                            server_final.into_bytes().into(),
                        )))
                        .await?;
                    *state = Handshake::Started;
                    drop(state);
                    self.accept(client).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn protocol(what: &str) -> PgWireError {
    fatal("08P01", format!("malformed SCRAM {what} message"))
}

/// Answer the client-first message (`n,,n=…,r=<nonce>`) with the salt, iterations and nonce. An
/// unknown user gets a made-up salt and fails at the proof, like a wrong password.
fn server_first(users: &Users, user: String, client_first: &str) -> PgWireResult<(Handshake, String)> {
    let gs2_end = client_first.match_indices(',').nth(1).map(|(i, _)| i).ok_or_else(|| protocol("client-first"))?;
    let (gs2, bare) = (&client_first[..=gs2_end], &client_first[gs2_end + 1..]);
    if gs2.starts_with('p') {
        return Err(fatal("28000", "channel binding is not offered by keymart serve".into()));
    }
    let client_nonce = bare
        .split(',')
        .find_map(|part| part.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| protocol("client-first"))?;
    let mut server_nonce = [0u8; 18];
    ring::rand::SystemRandom::new().fill(&mut server_nonce).map_err(|_| protocol("client-first"))?;
    let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
    let verifier = users.0.get(&user).cloned();
    let (salt, iterations) = match &verifier {
        Some(v) => (v.salt.clone(), v.iterations),
        None => (digest::digest(&digest::SHA256, user.as_bytes()).as_ref()[..16].to_vec(), ITERATIONS),
    };
    let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
    let auth_prefix = format!("{bare},{server_first}");
    Ok((Handshake::ServerFirstSent { user, verifier, auth_prefix, nonce, gs2: gs2.to_string() }, server_first))
}

/// Check the client-final message's proof; the server-final message when it holds.
fn verify(state: &Handshake, client_final: &str) -> PgWireResult<String> {
    let Handshake::ServerFirstSent { user, verifier, auth_prefix, nonce, gs2 } = state else {
        return Err(protocol("client-final"));
    };
    let (without_proof, proof) = client_final.rsplit_once(",p=").ok_or_else(|| protocol("client-final"))?;
    let field = |name: &str| without_proof.split(',').find_map(|p| p.strip_prefix(name));
    let wrong = || fatal("28P01", format!("password authentication failed for user \"{user}\""));
    if field("r=") != Some(nonce.as_str()) || field("c=") != Some(B64.encode(gs2).as_str()) {
        return Err(protocol("client-final"));
    }
    let Some(verifier) = verifier else { return Err(wrong()) };
    let proof = B64.decode(proof).map_err(|_| protocol("client-final"))?;
    let auth_message = format!("{auth_prefix},{without_proof}");
    let client_signature = hmac_sha256(&verifier.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Err(wrong());
    }
    let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    if !same(stored_key.as_ref(), &verifier.stored_key) {
        return Err(wrong());
    }
    let server_signature = hmac_sha256(&verifier.server_key, auth_message.as_bytes());
    Ok(format!("v={}", B64.encode(server_signature)))
}

/// The user and password of an `Authorization: Basic …` value (HTTP, and Flight's handshake),
/// its base64 padded or not (Go's Flight client sends it unpadded).
pub fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let encoded = authorization.strip_prefix("Basic ")?;
    let text = String::from_utf8(LENIENT.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// [`Users::check_password`] off the runtime: key derivation is slow on purpose.
pub async fn password_is_valid(users: &Arc<Users>, user: &str, password: &str) -> bool {
    let (users, user, password) = (users.clone(), user.to_string(), password.to_string());
    tokio::task::spawn_blocking(move || users.check_password(&user, &password)).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SCRAM exchange computed from the client's side (RFC 5802) against keymart's checks.
    fn client_proof(password: &str, salt: &[u8], iterations: u32, auth_message: &str) -> String {
        let salted = gen_salted_password(password, salt, iterations as usize);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let signature = hmac_sha256(stored_key.as_ref(), auth_message.as_bytes());
        B64.encode(client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect::<Vec<u8>>())
    }

    fn exchange(users: &Users, user: &str, password: &str) -> PgWireResult<String> {
        let (state, server_first) = server_first(users, user.into(), "n,,n=,r=abc").unwrap();
        let salt = B64.decode(server_first.split(",s=").nth(1).unwrap().split(',').next().unwrap()).unwrap();
        let iterations: u32 = server_first.rsplit("i=").next().unwrap().parse().unwrap();
        let nonce = server_first.strip_prefix("r=").unwrap().split(',').next().unwrap();
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("n=,r=abc,{server_first},{without_proof}");
        let proof = client_proof(password, &salt, iterations, &auth_message);
        verify(&state, &format!("{without_proof},p={proof}"))
    }

    fn code(result: PgWireResult<String>) -> String {
        match result {
            Err(PgWireError::UserError(info)) => info.code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn basic_credentials_are_read_with_or_without_base64_padding() {
        // "analyst:s3rve-pw": 16 bytes, so padded base64 ends in "==".
        let expected = Some(("analyst".to_string(), "s3rve-pw".to_string()));
        assert_eq!(basic_credentials("Basic YW5hbHlzdDpzM3J2ZS1wdw=="), expected);
        assert_eq!(basic_credentials("Basic YW5hbHlzdDpzM3J2ZS1wdw"), expected);
        for malformed in ["Bearer YW5hbHlzdDpzM3J2ZS1wdw==", "Basic !!!", "Basic YW5hbHlzdA=="] {
            assert_eq!(basic_credentials(malformed), None, "{malformed}");
        }
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_or_an_unknown_user_is_28p01() {
        let users = Users(HashMap::from([("ana".to_string(), Verifier::from_password("pencil"))]));
        assert!(exchange(&users, "ana", "pencil").unwrap().starts_with("v="));
        assert_eq!(code(exchange(&users, "ana", "pen")), "28P01");
        assert_eq!(code(exchange(&users, "bob", "pencil")), "28P01");
    }

    #[test]
    fn http_basic_passwords_are_checked_against_the_verifier() {
        let users = Users(HashMap::from([("ana".to_string(), Verifier::from_password("pencil"))]));
        assert!(users.check_password("ana", "pencil"));
        assert!(!users.check_password("ana", "pen"));
        assert!(!users.check_password("bob", "pencil"));
    }

    #[test]
    fn a_postgresql_verifier_is_accepted() {
        // What PostgreSQL 16 stores for password 'pencil' with this salt and 4096 iterations.
        let salt = b"0123456789abcdef";
        let salted = gen_salted_password("pencil", salt, 4096);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let text = format!(
            "SCRAM-SHA-256$4096:{}${}:{}",
            B64.encode(salt),
            B64.encode(digest::digest(&digest::SHA256, &client_key)),
            B64.encode(hmac_sha256(&salted, b"Server Key"))
        );
        let users = Users(HashMap::from([("ana".to_string(), Verifier::parse(&text).unwrap())]));
        assert!(exchange(&users, "ana", "pencil").is_ok());
        assert_eq!(code(exchange(&users, "ana", "other")), "28P01");
        assert!(Verifier::parse("md5abc").is_err());
    }

    #[test]
    fn an_unset_password_variable_is_named_without_a_value() {
        let user = ServeUser {
            name: "ana".into(),
            password: Some("${KEYMART_TEST_UNSET_SERVE_PASSWORD}".into()),
            scram: None,
        };
        let error = Users::from_settings(&[user]).unwrap_err().to_string();
        assert_eq!(
            error,
            "serve.users `ana`: password: environment variable KEYMART_TEST_UNSET_SERVE_PASSWORD is not set"
        );
    }
}
