//! Who is calling and what they may do, decided by the Kubernetes API server: the bearer
//! token through a `TokenReview`, the request through a `SubjectAccessReview`, so that
//! rotation rights are ordinary RBAC. Successful reviews are cached briefly, keyed by a
//! hash of the token (never the token itself); refusals are never cached, so a token or
//! RoleBinding fixed a moment ago works at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::{ApiError, Result};

/// The caller as the API server knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// `alice`, or `system:serviceaccount:ns:name`.
    pub username: String,
    /// The user's UID, when the authenticator has one.
    pub uid: Option<String>,
    /// Groups, as RBAC sees them.
    pub groups: Vec<String>,
    /// Extra attributes (a ServiceAccount token's pod, for example), passed on to the
    /// SubjectAccessReview so that authorization sees exactly what the token carries.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request needs: a verb on a `sigil.dev` resource, in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// `create`, `get`, `list`, `update`.
    pub verb: &'static str,
    /// `rotations`, `sealedsecrets`.
    pub resource: &'static str,
    /// The namespace.
    pub namespace: String,
    /// The object, when the request is about one.
    pub name: Option<String>,
}

impl Access {
    /// `verb` on Rotations in `namespace` (on the one named `name`, when given).
    pub fn rotations(verb: &'static str, namespace: &str, name: Option<&str>) -> Self {
        Self {
            verb,
            resource: "rotations",
            namespace: namespace.to_owned(),
            name: name.map(str::to_owned),
        }
    }

    /// `create rotations.sigil.dev in namespace prod`: the words an RBAC rule is written in.
    pub fn describe(&self) -> String {
        let name = self
            .name
            .as_deref()
            .map(|n| format!(" named `{n}`"))
            .unwrap_or_default();
        format!(
            "{} {}.{}{name} in namespace `{}`",
            self.verb,
            self.resource,
            sigil_types::GROUP,
            self.namespace
        )
    }
}

/// The API server's answer to a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// RBAC allows the request.
    pub allowed: bool,
    /// The authorizer's reason, when it gave one.
    pub reason: String,
}

/// Reviews tokens and requests; the real one asks the API server, tests use a fake.
pub trait Reviewer: Send + Sync + 'static {
    /// The user behind `token`, or `None` when the token is not valid.
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<UserInfo>>>;
    /// Whether `user` may do `access`.
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<Decision>>;
}

/// Asks the Kubernetes API server (needs `create` on `tokenreviews` and
/// `subjectaccessreviews`).
pub struct KubeReviewer {
    client: Client,
}

impl KubeReviewer {
    /// A reviewer that uses `client`'s identity to ask.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Reviewer for KubeReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<UserInfo>>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let reviewed = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|err| ApiError::from_kube(err, "TokenReview"))?;
            let Some(status) = reviewed.status else {
                return Ok(None);
            };
            if status.authenticated != Some(true) {
                return Ok(None);
            }
            Ok(status.user.and_then(|user| {
                Some(UserInfo {
                    username: user.username.filter(|u| !u.is_empty())?,
                    uid: user.uid,
                    groups: user.groups.unwrap_or_default(),
                    extra: user.extra.unwrap_or_default(),
                })
            }))
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<Decision>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.username.clone()),
                    uid: user.uid.clone(),
                    groups: Some(user.groups.clone()),
                    extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(sigil_types::GROUP.to_owned()),
                        resource: Some(access.resource.to_owned()),
                        verb: Some(access.verb.to_owned()),
                        namespace: Some(access.namespace.clone()),
                        name: access.name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|err| ApiError::from_kube(err, "SubjectAccessReview"))?;
            let status = reviewed.status.unwrap_or_default();
            Ok(Decision {
                allowed: status.allowed && status.denied != Some(true),
                reason: status.reason.unwrap_or_default(),
            })
        })
    }
}

/// Remembers successful reviews for a short time, so that a runbook polling a Rotation
/// costs the API server two reviews per TTL rather than two per request.
pub struct CachedReviewer {
    inner: Arc<dyn Reviewer>,
    users: moka::future::Cache<[u8; 32], UserInfo>,
    allowed: moka::future::Cache<([u8; 32], Access), ()>,
}

/// Most tokens and decisions held at once; beyond it the least used are forgotten.
const CACHE_CAPACITY: u64 = 10_000;

impl CachedReviewer {
    /// Caches `inner`'s successful reviews for `ttl` (zero: no caching).
    pub fn new(inner: Arc<dyn Reviewer>, ttl: Duration) -> Self {
        let capacity = if ttl.is_zero() { 0 } else { CACHE_CAPACITY };
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            inner,
            users: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            allowed: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Identifies a user with everything authorization looks at, so that two tokens of one
/// user name but different groups never share a decision.
fn user_hash(user: &UserInfo) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        context.update(&(bytes.len() as u64).to_be_bytes());
        context.update(bytes);
    };
    field(user.username.as_bytes());
    field(user.uid.as_deref().unwrap_or_default().as_bytes());
    for group in &user.groups {
        field(group.as_bytes());
    }
    for (key, values) in &user.extra {
        field(key.as_bytes());
        for value in values {
            field(value.as_bytes());
        }
    }
    let mut hash = [0; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

impl Reviewer for CachedReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<UserInfo>>> {
        Box::pin(async move {
            // Concurrent misses of one token share a single review; only a valid token
            // is kept (the error side, `None` for "not a token", is never cached).
            let reviewed = self
                .users
                .try_get_with(token_hash(token), async {
                    match self.inner.authenticate(token).await {
                        Ok(Some(user)) => Ok(user),
                        Ok(None) => Err(None),
                        Err(err) => Err(Some(err)),
                    }
                })
                .await;
            match reviewed {
                Ok(user) => Ok(Some(user)),
                Err(refused) => match refused.as_ref() {
                    None => Ok(None),
                    Some(err) => Err(err.clone()),
                },
            }
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<Decision>> {
        Box::pin(async move {
            let key = (user_hash(user), access.clone());
            let reviewed = self
                .allowed
                .try_get_with(key, async {
                    match self.inner.authorize(user, access).await {
                        Ok(decision) if decision.allowed => Ok(()),
                        other => Err(other),
                    }
                })
                .await;
            match reviewed {
                Ok(()) => Ok(Decision {
                    allowed: true,
                    reason: String::new(),
                }),
                Err(refused) => refused.as_ref().clone(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Accepts `good` as alice, allows only `create`, and counts its calls.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
    }

    impl Reviewer for Counting {
        fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<UserInfo>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Ok((token == "good").then(|| UserInfo {
                    username: "alice".into(),
                    uid: None,
                    groups: vec!["dev".into()],
                    extra: BTreeMap::new(),
                }))
            })
        }

        fn authorize<'a>(
            &'a self,
            _user: &'a UserInfo,
            access: &'a Access,
        ) -> BoxFuture<'a, Result<Decision>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Ok(Decision {
                    allowed: access.verb == "create",
                    reason: String::new(),
                })
            })
        }
    }

    fn access(verb: &'static str) -> Access {
        Access {
            verb,
            resource: "rotations",
            namespace: "prod".into(),
            name: None,
        }
    }

    #[tokio::test]
    async fn successes_are_cached_and_refusals_are_asked_again() {
        let inner = Arc::new(Counting::default());
        let cached = CachedReviewer::new(inner.clone(), Duration::from_secs(60));
        let user = cached.authenticate("good").await.unwrap().unwrap();
        cached.authenticate("good").await.unwrap();
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            1,
            "a valid token is reviewed once"
        );
        assert!(cached.authenticate("bad").await.unwrap().is_none());
        assert!(cached.authenticate("bad").await.unwrap().is_none());
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            3,
            "a bad token is reviewed every time"
        );

        assert!(
            cached
                .authorize(&user, &access("create"))
                .await
                .unwrap()
                .allowed
        );
        assert!(
            cached
                .authorize(&user, &access("create"))
                .await
                .unwrap()
                .allowed
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
        assert!(
            !cached
                .authorize(&user, &access("list"))
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !cached
                .authorize(&user, &access("list"))
                .await
                .unwrap()
                .allowed
        );
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            6,
            "a refusal is asked again"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_review() {
        let inner = Arc::new(Counting::default());
        let cached = CachedReviewer::new(inner.clone(), Duration::from_secs(60));
        let reviews = (0..16).map(|_| cached.authenticate("good"));
        let users = futures::future::join_all(reviews).await;
        assert!(users.iter().all(|u| matches!(u, Ok(Some(_)))));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_decision_is_not_shared_between_users_of_different_groups() {
        let inner = Arc::new(Counting::default());
        let cached = CachedReviewer::new(inner.clone(), Duration::from_secs(60));
        let mut user = cached.authenticate("good").await.unwrap().unwrap();
        cached.authorize(&user, &access("create")).await.unwrap();
        user.groups.push("admins".into());
        cached.authorize(&user, &access("create")).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }
}
