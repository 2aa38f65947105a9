//! The option tables in the crate README (the crate's rustdoc) and in the
//! repository README are the generated one, so they cannot drift from the
//! option definitions. `UPDATE_OPTION_TABLES=1 cargo test -p state-config
//! --test option_tables` rewrites them.

#![allow(clippy::unwrap_used)]

use std::path::Path;

const START: &str = "<!-- options-table:start -->";
const END: &str = "<!-- options-table:end -->";

fn check(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find(START)
        .unwrap_or_else(|| panic!("{} has no {START}", path.display()));
    let end = text
        .find(END)
        .unwrap_or_else(|| panic!("{} has no {END}", path.display()));
    let inside = &text[start + START.len()..end];
    let want = format!("\n{}", state_config::markdown_table());
    if inside == want {
        return;
    }
    if std::env::var_os("UPDATE_OPTION_TABLES").is_some() {
        let updated = format!("{}{want}{}", &text[..start + START.len()], &text[end..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    panic!(
        "the option table in {} differs from state_config::markdown_table(); run \
         `UPDATE_OPTION_TABLES=1 cargo test -p state-config --test option_tables`",
        path.display()
    );
}

#[test]
fn crate_readme_table_matches_the_options() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
}

#[test]
fn repository_readme_table_matches_the_options() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"));
}
