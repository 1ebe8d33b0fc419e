//! Golden tests: every command's exact output and exit status (`tests/cmd/*.md`,
//! `tests/cmd/*.toml`). Refresh with `TRYCMD=overwrite cargo test -p sigil-cli --test cli`.

#[test]
fn golden() {
    trycmd::TestCases::new()
        .case("tests/cmd/*.md")
        .case("tests/cmd/*.toml");
}
