//! A credential target behind an HTTPS endpoint, for systems Sigil does not speak.
//!
//! The contract: `POST <url>` with JSON `{"phase": "set"|"test"|"retire", "rotation":
//! <uid>, "username": …, "password": …}` (no password on `retire`) and the bearer token
//! when one is configured. 2xx means done, 409 means done already (calls are idempotent
//! by the rotation's UID); anything else is an answer to retry.

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use zeroize::Zeroizing;

use super::{Login, TargetError};

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS endpoint and the token it expects.
pub struct Webhook {
    url: Url,
    http: reqwest::Client,
    token: Option<SecretString>,
}

#[derive(Serialize)]
struct Call<'a> {
    phase: &'a str,
    rotation: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

impl Webhook {
    /// A target for `url` (HTTPS only, not a link-local address such as a cloud's
    /// metadata service), trusting `ca_pem` (none: the system's roots).
    pub fn new(
        url: &str,
        ca_pem: Option<&[u8]>,
        token: Option<SecretString>,
    ) -> Result<Self, TargetError> {
        let parsed = Url::parse(url)
            .map_err(|e| TargetError::Invalid(format!("webhook.url `{url}` is not a URL: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(TargetError::Invalid(format!(
                "webhook.url `{url}` is not https://: the request carries the new password"
            )));
        }
        if parsed.host_str().is_some_and(super::is_link_local) {
            return Err(TargetError::Invalid(format!(
                "webhook.url `{url}` is a link-local address (a cloud metadata service lives there); the controller does not call it"
            )));
        }
        // A redirect would carry the password to wherever the endpoint says, past the
        // checks above: a 3xx is an answer like any other, retried and then failed.
        let http = crate::vault::http_client_builder(&parsed, ca_pem, TIMEOUT)
            .map_err(|e| TargetError::Invalid(format!("webhook.{e}")))?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                TargetError::Invalid(format!("webhook: cannot build the HTTPS client: {e}"))
            })?;
        Ok(Self {
            url: parsed,
            http,
            token,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("webhook {}", self.url)
    }

    /// Sends one phase; with `send_password`, the login's password too.
    pub(super) async fn call(
        &self,
        phase: &str,
        rotation: &str,
        login: Login<'_>,
        send_password: bool,
    ) -> Result<(), TargetError> {
        let password = if send_password {
            Some(std::str::from_utf8(login.password).map_err(|_| {
                TargetError::Invalid(
                    "the new value is not UTF-8 text, and a webhook receives it in JSON".into(),
                )
            })?)
        } else {
            None
        };
        let body = Zeroizing::new(
            serde_json::to_vec(&Call {
                phase,
                rotation,
                username: login.username,
                password,
            })
            .map_err(|e| TargetError::Invalid(format!("webhook body: {e}")))?,
        );
        let mut request = self
            .http
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let answer = request.send().await.map_err(|e| {
            TargetError::Unavailable(format!(
                "{} did not answer phase `{phase}`: {}",
                self.describe(),
                e.without_url()
            ))
        })?;
        let status = answer.status();
        if status.is_success() || status == http::StatusCode::CONFLICT {
            return Ok(());
        }
        Err(TargetError::Unavailable(format!(
            "{} answered {status} to phase `{phase}`",
            self.describe()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match Webhook::new(url, None, None) {
            Err(TargetError::Invalid(message)) => message,
            _ => panic!("{url} accepted"),
        }
    }

    #[test]
    fn only_https_and_never_a_metadata_service() {
        assert!(refused("http://hooks.example/rotate").contains("not https://"));
        assert!(refused("https://169.254.169.254/latest").contains("link-local"));
        assert!(refused("https://[fe80::1]/x").contains("link-local"));
        assert!(refused("https://[fd00:ec2::254]/x").contains("link-local"));
        assert!(refused("https://[::ffff:169.254.169.254]/x").contains("link-local"));
        assert!(refused("not a url").contains("webhook.url"));
        assert!(Webhook::new("https://hooks.example/rotate", None, None).is_ok());
    }
}
