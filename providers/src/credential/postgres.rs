//! PostgreSQL roles as a credential target. Passwords are set as SCRAM-SHA-256
//! verifiers computed here (as psql's `\password` does), so the plaintext never reaches
//! the server's log or `pg_stat_statements`; only the verifier is sent, over the admin
//! connection.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use postgres_protocol::password::scram_sha_256;
use rand::RngCore as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::{Change, Login, Retired, TargetError};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What AlternatingUsers appends to a role's name to name its twin.
const CLONE_SUFFIX: &str = "_clone";

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain TCP.
    Disable,
    /// TLS, the certificate not checked.
    Require,
    /// TLS, the certificate checked against the CA (or the system's roots) and the host.
    VerifyFull,
}

/// Which roles hold the credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// `<user>` and `<user>_clone`, set in turn.
    AlternatingUsers,
    /// One role.
    SingleUser,
}

/// Where and how to reach the server.
pub struct PostgresConfig<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: &'a str,
    /// Transport protection.
    pub tls: Tls,
    /// PEM CA for `VerifyFull` (none: the system's roots).
    pub ca_pem: Option<&'a [u8]>,
    /// The role that alters (and creates) the others.
    pub admin: Login<'a>,
    /// Which roles hold the credential.
    pub strategy: Strategy,
    /// Whether `retire` ends the retired credential's sessions.
    pub terminate_sessions: bool,
}

/// A PostgreSQL server reached as its admin role.
pub struct Postgres {
    host: String,
    port: u16,
    database: String,
    admin_user: String,
    admin_password: Zeroizing<Vec<u8>>,
    tls: Option<MakeRustlsConnect>,
    strategy: Strategy,
    terminate_sessions: bool,
}

impl Postgres {
    /// A target for `config`; fails when the CA does not parse.
    pub fn new(config: &PostgresConfig<'_>) -> Result<Self, TargetError> {
        if super::is_link_local(config.host) {
            return Err(TargetError::Invalid(format!(
                "postgres.host `{}` is a link-local address (a cloud metadata service lives there); the controller does not connect to it",
                config.host
            )));
        }
        let tls = match config.tls {
            Tls::Disable => None,
            Tls::Require => Some(unverified_tls()),
            Tls::VerifyFull => Some(verified_tls(config.ca_pem)?),
        };
        Ok(Self {
            host: config.host.to_owned(),
            port: config.port,
            database: config.database.to_owned(),
            admin_user: config.admin.username.to_owned(),
            admin_password: Zeroizing::new(config.admin.password.to_vec()),
            tls: tls.map(MakeRustlsConnect::new),
            strategy: config.strategy,
            terminate_sessions: config.terminate_sessions,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("postgres {}:{}/{}", self.host, self.port, self.database)
    }

    async fn connect(&self, login: Login<'_>) -> Result<Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(login.username)
            .password(login.password)
            .application_name("sigil-controller")
            .connect_timeout(CONNECT_TIMEOUT);
        let client = match &self.tls {
            None => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(connection);
                client
            }
            Some(tls) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, connection) = config.connect(tls.clone()).await?;
                tokio::spawn(connection);
                client
            }
        };
        Ok(client)
    }

    async fn admin(&self) -> Result<Client, TargetError> {
        let admin = Login {
            username: &self.admin_user,
            password: &self.admin_password,
        };
        self.connect(admin).await.map_err(|e| {
            self.error(
                &format!("log in as the admin role `{}`", self.admin_user),
                &e,
            )
        })
    }

    /// Sets `login`'s password (as a verifier); AlternatingUsers makes the role first,
    /// with `previous`'s grants, when it does not exist yet.
    pub(super) async fn set(&self, change: Change<'_>) -> Result<(), TargetError> {
        let admin = self.admin().await?;
        let new = change.new;
        let verifier = scram_sha_256(new.password);
        let twin =
            self.strategy == Strategy::AlternatingUsers && new.username != change.previous.username;
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_roles WHERE rolname = $1",
                &[&new.username],
            )
            .await
            .map_err(|e| self.error("look up the role", &e))?
            .is_some();
        let sql = if twin && !exists {
            format!(
                "BEGIN; CREATE ROLE {role} WITH LOGIN PASSWORD {verifier}; GRANT {previous} TO {role}; COMMIT",
                role = ident(new.username),
                verifier = literal(&verifier),
                previous = ident(change.previous.username),
            )
        } else if exists {
            format!(
                "ALTER ROLE {} WITH LOGIN PASSWORD {}",
                ident(new.username),
                literal(&verifier)
            )
        } else {
            return Err(TargetError::Invalid(format!(
                "role `{}` does not exist on {}: the store's username must name an existing role",
                new.username,
                self.describe()
            )));
        };
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| self.error(&format!("set the password of role `{}`", new.username), &e))
    }

    /// Logs in as `login` and runs `SELECT 1`.
    pub(super) async fn test(&self, login: Login<'_>) -> Result<(), TargetError> {
        let client = self.connect(login).await.map_err(|e| {
            self.error(
                &format!("log in as role `{}` with the new password", login.username),
                &e,
            )
        })?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| self.error(&format!("run SELECT 1 as role `{}`", login.username), &e))?;
        Ok(())
    }

    /// SingleUser: puts the previous password back (its role is the one in use).
    pub(super) async fn restore(&self, change: Change<'_>) -> Result<Option<String>, TargetError> {
        if self.strategy == Strategy::AlternatingUsers {
            return Ok(None);
        }
        let admin = self.admin().await?;
        let previous = change.previous;
        admin
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD {}",
                ident(previous.username),
                literal(&scram_sha_256(previous.password))
            ))
            .await
            .map_err(|e| self.error("restore the previous password", &e))?;
        Ok(Some(format!(
            "the previous password of role `{}` was restored",
            previous.username
        )))
    }

    /// AlternatingUsers: the previous role gets a password nobody holds, and all its
    /// sessions end. SingleUser: the sessions that logged in before `set_at` (with the
    /// leaked password) end.
    pub(super) async fn retire(
        &self,
        change: Change<'_>,
        set_at: Timestamp,
    ) -> Result<Retired, TargetError> {
        let admin = self.admin().await?;
        let retired = change.previous.username;
        let mut what = Vec::new();
        let alternating =
            self.strategy == Strategy::AlternatingUsers && retired != change.new.username;
        if alternating {
            let mut nobody_holds = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(nobody_holds.as_mut());
            admin
                .batch_execute(&format!(
                    "ALTER ROLE {} PASSWORD {}",
                    ident(retired),
                    literal(&scram_sha_256(nobody_holds.as_ref()))
                ))
                .await
                .map_err(|e| {
                    self.error(&format!("replace the password of role `{retired}`"), &e)
                })?;
            what.push(format!(
                "password of role `{retired}` replaced by one nobody holds"
            ));
        } else {
            what.push(format!(
                "password of role `{retired}` set before {set_at} (replaced at set)"
            ));
        }
        let mut sessions_terminated = 0;
        if self.terminate_sessions {
            // Every session of the retired role (AlternatingUsers: nothing legitimate
            // uses it once the rollouts completed), or those that logged in before the
            // new password was set.
            let before = (!alternating).then(|| set_at.to_string());
            let ended: i64 = admin
                .query_one(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity \
                     WHERE usename = $1 AND pid <> pg_backend_pid() \
                     AND ($2::text IS NULL OR backend_start < $2::text::timestamptz)) AS t WHERE ended",
                    &[&retired, &before],
                )
                .await
                .map_err(|e| self.error(&format!("end the sessions of role `{retired}`"), &e))?
                .get(0);
            sessions_terminated = u32::try_from(ended).unwrap_or(u32::MAX);
            what.push(format!("sessions of role `{retired}` ended: {ended}"));
        }
        Ok(Retired {
            what,
            sessions_terminated,
        })
    }

    /// The error of `doing`, classified; the server's message names roles, never a
    /// password (only verifiers are sent).
    fn error(&self, doing: &str, err: &tokio_postgres::Error) -> TargetError {
        let target = self.describe();
        let detail = err
            .as_db_error()
            .map_or_else(|| error_chain(err), |db| db.message().to_owned());
        let message = format!("could not {doing} on {target}: {detail}");
        match err.code() {
            Some(code)
                if *code == SqlState::INVALID_PASSWORD
                    || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                TargetError::Refused(message)
            }
            Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => TargetError::Refused(
                format!("{message}; the admin role needs CREATEROLE (or to be a superuser)"),
            ),
            Some(code)
                if *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
                    || *code == SqlState::ADMIN_SHUTDOWN =>
            {
                TargetError::Unavailable(message)
            }
            Some(_) => TargetError::Invalid(message),
            None => TargetError::Unavailable(message),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The role the next version names, given the one in use: AlternatingUsers takes
/// turns between `<user>` and `<user>_clone`.
pub fn next_username(strategy: Strategy, current: &str) -> String {
    match strategy {
        Strategy::SingleUser => current.to_owned(),
        Strategy::AlternatingUsers => match current.strip_suffix(CLONE_SUFFIX) {
            Some(first) if !first.is_empty() => first.to_owned(),
            _ => format!("{current}{CLONE_SUFFIX}"),
        },
    }
}

/// An identifier, quoted as PostgreSQL quotes them.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal (standard-conforming: only `'` is special).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn verified_tls(ca_pem: Option<&[u8]>) -> Result<ClientConfig, TargetError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TargetError::Invalid(format!("TLS: {e}")))?;
    let Some(pem) = ca_pem else {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        return builder
            .with_platform_verifier()
            .map(|b| b.with_no_client_auth())
            .map_err(|e| TargetError::Invalid(format!("TLS: the system's roots: {e}")));
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| {
            TargetError::Invalid(format!("caSecretRef: not a PEM certificate bundle: {e}"))
        })?;
        roots
            .add(cert)
            .map_err(|e| TargetError::Invalid(format!("caSecretRef: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TargetError::Invalid(
            "caSecretRef: holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `sslMode: require`: encrypted, the server not verified (as libpq's `require`).
fn unverified_tls() -> ClientConfig {
    let provider = provider();
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the safe default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_users_take_turns_and_a_single_user_stays() {
        let alternating = |u| next_username(Strategy::AlternatingUsers, u);
        assert_eq!(alternating("app"), "app_clone");
        assert_eq!(alternating("app_clone"), "app");
        assert_eq!(alternating("_clone"), "_clone_clone");
        assert_eq!(next_username(Strategy::SingleUser, "app"), "app");
    }

    #[test]
    fn names_and_verifiers_cannot_break_out_of_their_quotes() {
        assert_eq!(ident(r#"a"; DROP ROLE x; --"#), r#""a""; DROP ROLE x; --""#);
        assert_eq!(literal("it's"), "'it''s'");
        let verifier = scram_sha_256(b"secret");
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!verifier.contains("secret"));
    }

    #[test]
    fn a_link_local_host_is_never_connected_to() {
        let config = |host| PostgresConfig {
            host,
            port: 5432,
            database: "app",
            tls: Tls::Disable,
            ca_pem: None,
            admin: Login {
                username: "admin",
                password: b"x",
            },
            strategy: Strategy::SingleUser,
            terminate_sessions: true,
        };
        for host in ["169.254.169.254", "fe80::1", "[fd00:ec2::254]"] {
            let Err(TargetError::Invalid(message)) = Postgres::new(&config(host)) else {
                panic!("{host} accepted");
            };
            assert!(message.contains("link-local"), "{message}");
        }
        assert!(Postgres::new(&config("db.team-a.svc")).is_ok());
    }

    #[test]
    fn a_ca_that_is_not_pem_is_refused_with_the_field() {
        let Err(TargetError::Invalid(message)) = verified_tls(Some(b"nonsense")) else {
            panic!("accepted");
        };
        assert!(message.contains("caSecretRef"), "{message}");
    }
}
