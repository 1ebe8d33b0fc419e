//! Smoke tests of the test environment: real round-trips against kube-apiserver,
//! OpenBao, moto and helm, started once for this binary by `sigil_tests::Env`.

mod aws;
mod helm;
mod kube;
mod rbac;
mod vault;
