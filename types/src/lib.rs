//! The custom resources of group `sigil.dev`, version `v1`, shared by every Sigil program.
