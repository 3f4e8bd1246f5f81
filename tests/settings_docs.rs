//! The README's settings table lists exactly the settings the binary knows,
//! each with its flag and default as `--help` shows them.

use std::collections::BTreeSet;

use wshub::config::SETTINGS;

/// The rows of the table under "## Settings": (setting, flag, default).
fn readme_rows() -> Vec<(String, String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let section = readme
        .split("\n## Settings\n")
        .nth(1)
        .expect("README has a Settings section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect();
            assert!(
                cells.len() >= 3,
                "a settings row has setting, flag, default: {line}"
            );
            (
                cells[0].clone(),
                cells[1].clone(),
                cells[2].replace('`', ""),
            )
        })
        .collect()
}

#[test]
fn readme_lists_exactly_the_settings_the_binary_knows() {
    let rows = readme_rows();
    let documented: BTreeSet<&str> = rows.iter().map(|(name, _, _)| name.as_str()).collect();
    let known: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
    assert_eq!(documented.len(), rows.len(), "no setting is listed twice");
    assert_eq!(
        documented, known,
        "README's settings table and config::SETTINGS differ"
    );
}

#[test]
fn readme_flags_and_defaults_match_the_table() {
    for (name, flag, default) in readme_rows() {
        let setting = wshub::config::setting(&name).expect("a known setting");
        assert_eq!(flag, format!("--{}", setting.flag()), "{name}'s flag");
        assert!(
            default.starts_with(setting.default),
            "{name}: README says `{default}`, --help says `{}`",
            setting.default
        );
    }
}
