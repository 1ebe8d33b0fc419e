//! Who may call the internal verify and re-seal endpoints: sigil-api alone, proved by a
//! token of its own ServiceAccount minted for [`INTERNAL_AUDIENCE`] and checked with a
//! TokenReview for that audience. A token the API server accepts for itself (a user's,
//! or any pod's default one) is refused, so neither a pod in the cluster nor a caller
//! of sigil-api can reach the endpoints around sigil-api's own authorization and audit.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// The audience sigil-api's token for the controller carries.
pub const INTERNAL_AUDIENCE: &str = "sigil-controller";
/// How long a reviewed token's verdict is reused: a flood of requests with one token
/// costs one TokenReview, and a revoked token stops working within this long.
const VERDICT_TTL: Duration = Duration::from_secs(30);
/// Verdicts kept at most, so that a flood of distinct tokens cannot grow memory.
const VERDICT_CAPACITY: u64 = 1024;

/// Reviews a bearer token for [`INTERNAL_AUDIENCE`]: the username it authenticates as,
/// `None` when the API server does not accept it for that audience.
pub trait TokenReviewer: Send + Sync {
    /// The review; `Err` when the API server could not be asked.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// The real reviewer: a TokenReview against the API server.
pub struct KubeTokenReviewer(pub Client);

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: Some(vec![INTERNAL_AUDIENCE.to_owned()]),
                },
                ..TokenReview::default()
            };
            let answer = Api::<TokenReview>::all(self.0.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|err| err.to_string())?;
            let Some(status) = answer.status else {
                return Ok(None);
            };
            // An authenticator that ignores audiences answers without them: not enough.
            let for_us = status
                .audiences
                .iter()
                .flatten()
                .any(|a| a == INTERNAL_AUDIENCE);
            Ok((status.authenticated == Some(true) && for_us)
                .then(|| status.user.and_then(|u| u.username))
                .flatten())
        })
    }
}

/// Why a call was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token, or one that is not sigil-api's for this audience.
    Unauthenticated,
    /// The API server could not be asked.
    Unavailable,
}

/// The check every internal request passes before its body is read.
pub struct InternalCallers {
    reviewer: Arc<dyn TokenReviewer>,
    /// `system:serviceaccount:NAMESPACE:NAME` of sigil-api.
    allowed: String,
    /// Verdicts by SHA-256 of the token (never the token itself).
    verdicts: moka::future::Cache<[u8; 32], bool>,
}

impl InternalCallers {
    /// Accepts tokens of `api_service_account` (`NAMESPACE/NAME`) only.
    pub fn new(reviewer: Arc<dyn TokenReviewer>, api_service_account: &str) -> Self {
        let (namespace, name) = api_service_account
            .split_once('/')
            .unwrap_or(("sigil-system", api_service_account));
        Self {
            reviewer,
            allowed: format!("system:serviceaccount:{namespace}:{name}"),
            verdicts: moka::future::Cache::builder()
                .max_capacity(VERDICT_CAPACITY)
                .time_to_live(VERDICT_TTL)
                .build(),
        }
    }

    /// Whether the `Authorization` header value proves sigil-api.
    pub async fn check(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthenticated)?;
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let accepted = match self.verdicts.get(&digest).await {
            Some(accepted) => accepted,
            None => {
                let username = self.reviewer.review(token).await.map_err(|err| {
                    tracing::warn!(error = %err, "cannot review an internal caller's token");
                    Refusal::Unavailable
                })?;
                let accepted = username.as_deref() == Some(self.allowed.as_str());
                if !accepted {
                    tracing::warn!(
                        user = username.as_deref().unwrap_or("(not authenticated)"),
                        "refused an internal request: not sigil-api's token for audience {INTERNAL_AUDIENCE}"
                    );
                }
                self.verdicts.insert(digest, accepted).await;
                accepted
            }
        };
        if accepted {
            Ok(())
        } else {
            Err(Refusal::Unauthenticated)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Knows two tokens: sigil-api's and another account's.
    #[derive(Default)]
    struct FakeReviewer {
        reviews: AtomicUsize,
    }

    impl TokenReviewer for FakeReviewer {
        fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
            self.reviews.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                Ok(match token {
                    "api" => Some("system:serviceaccount:sigil-system:sigil-api".to_owned()),
                    "other" => Some("system:serviceaccount:team-a:default".to_owned()),
                    _ => None,
                })
            })
        }
    }

    #[tokio::test]
    async fn only_the_api_service_account_passes_and_verdicts_are_reused() {
        let reviewer = Arc::new(FakeReviewer::default());
        let callers = InternalCallers::new(reviewer.clone(), "sigil-system/sigil-api");
        assert_eq!(callers.check(Some("Bearer api")).await, Ok(()));
        assert_eq!(callers.check(Some("Bearer api")).await, Ok(()));
        for refused in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Basic api"),
            Some("Bearer other"),
            Some("Bearer forged"),
        ] {
            assert_eq!(
                callers.check(refused).await,
                Err(Refusal::Unauthenticated),
                "{refused:?}"
            );
        }
        assert!(callers.check(Some("Bearer forged")).await.is_err());
        // api, other, forged: once each.
        assert_eq!(reviewer.reviews.load(Ordering::Relaxed), 3);
    }
}
