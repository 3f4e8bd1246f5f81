//! Imports run one way (ARCHITECTURE.md, "Modules"): no top-level module of
//! the crate reaches, through `crate::` paths, a module that reaches it
//! back. Read from the sources, comments and unit tests left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            // The body of a `#[cfg(test)] mod tests;`: unit tests, left out.
            if path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let first = relative.components().next().expect("a path");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a readable source");
            let names = graph.entry(module.clone()).or_default();
            for used in crate_paths(&code(&text)) {
                if used != module {
                    names.insert(used);
                }
            }
        }
    }
    graph
}

/// A source without its `//` comment lines and without its unit tests
/// (everything from a `#[cfg(test)]` that opens `mod tests`). A
/// `#[cfg(test)]` on any other item leaves the code after that item in.
fn code(text: &str) -> String {
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let code = code.join("\n");
    let tests = code.match_indices("#[cfg(test)]").find(|(i, attr)| {
        code[i + attr.len()..]
            .trim_start()
            .strip_prefix("mod tests")
            .is_some_and(|r| r.starts_with([' ', '{', ';', '\n']))
    });
    match tests {
        Some((i, _)) => code[..i].to_string(),
        None => code,
    }
}

/// The first segment of every `crate::…` path in `code`, including each
/// item of a `use crate::{a, b::{c, d}}` group, across lines.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(top_level_items(group).into_iter().filter_map(segment));
        } else if let Some(name) = segment(rest) {
            out.push(name);
        }
    }
    out
}

/// The comma-separated items of a `{…}` group whose opening brace has been
/// consumed, up to its closing brace; nested groups stay inside their item.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

fn segment(path: &str) -> Option<String> {
    let name: String = path
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    // Lower-case names are modules; `crate::Handle` and the like are items
    // the crate root re-exports.
    (name.starts_with(|c: char| c.is_ascii_lowercase())).then_some(name)
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    assert!(graph.contains_key("hub") && graph.contains_key("connection"));
    for (module, uses) in &graph {
        for start in uses {
            let mut seen = BTreeSet::new();
            let mut todo = vec![start.clone()];
            while let Some(next) = todo.pop() {
                assert_ne!(
                    &next, module,
                    "{module} uses {start}, which leads back to {module}: {graph:?}"
                );
                if seen.insert(next.clone()) {
                    todo.extend(graph.get(&next).into_iter().flatten().cloned());
                }
            }
        }
    }
}

#[test]
fn the_bottom_layers_import_nothing_above_them() {
    let graph = graph();
    for module in ["protocol", "config", "metrics", "outlet"] {
        let above: Vec<&String> = graph[module]
            .iter()
            .filter(|m| !["protocol", "config", "metrics"].contains(&m.as_str()))
            .collect();
        assert!(above.is_empty(), "{module} imports {above:?}");
    }
    assert!(
        !graph["hub"].contains("connection"),
        "the hub reaches connections through the outlet only"
    );
}
