//! Writes the CRD YAML of every Sigil resource to stdout; the chart's `crds/` folder
//! holds its output, and a test fails when they differ.

fn main() {
    print!("{}", sigil_types::crd_yaml());
}
