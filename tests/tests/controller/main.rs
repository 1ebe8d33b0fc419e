//! `sigil-controller` on a real kube-apiserver: keys, unsealing, bad input, HA and
//! metrics. Each test runs its own controller confined to its own namespace.

mod api;
mod cluster;
mod cluster_external;
mod credential;
mod eso;
mod flood;
mod ha;
mod health;
mod internal;
mod keys;
mod restart;
mod rotation;
mod support;
mod sync;
mod tenancy;
mod unseal;
