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
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let names = graph.entry(module.clone()).or_default();
            for line in code.lines().map(str::trim_start) {
                if line.starts_with("//") {
                    continue;
                }
                for used in crate_paths(line) {
                    if used != module {
                        names.insert(used);
                    }
                }
            }
        }
    }
    graph
}

/// The first segment of every `crate::…` path on a line, including those
/// inside `use crate::{a, b::c}`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            out.extend(group.split(',').filter_map(segment));
        } else if let Some(name) = segment(rest) {
            out.push(name);
        }
    }
    out
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
