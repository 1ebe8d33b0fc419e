//! The chart's CRDs are generated from the Rust types; this fails when they drift.
//! Regenerate with `cargo run -p sigil-types --bin crdgen > charts/sigil/crds/sigil.dev.yaml`.

#[test]
fn chart_crds_match_the_rust_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/sigil/crds/sigil.dev.yaml"
    );
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == sigil_types::crd_yaml(),
        "{path} is out of date: run `cargo run -p sigil-types --bin crdgen > charts/sigil/crds/sigil.dev.yaml`"
    );
}
