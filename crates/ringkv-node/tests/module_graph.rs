//! The invariant ARCHITECTURE.md states for `ringkv-node`'s layout: no
//! module reaches, through `crate::` paths, a module that reaches it back.
//! A circle makes two subsystems one in all but name: neither can be read,
//! tested or replaced without the other. Doc links and unit tests do not
//! count; they are not dependencies of the running code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module of `src/` and the modules its code names through `crate::`.
#[allow(clippy::disallowed_methods, reason = "reads the crate's own sources, not a node's files")]
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        assert!(path.is_file(), "{}: modules in directories are not read here; extend this test", path.display());
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("a file name").to_string();
        if stem != "lib" {
            sources.insert(stem, std::fs::read_to_string(&path).expect("read a module"));
        }
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, text)| {
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            let named = code
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .flat_map(|line| line.split("crate::").skip(1))
                .map(|rest| rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
                .filter(|name| name != module && modules.contains(name))
                .collect();
            (module.clone(), named)
        })
        .collect()
}

/// A circle in the graph, if it has one: its modules in order, the first
/// again at the end.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut found = path[at..].to_vec();
            found.push(module.to_string());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|module| visit(graph, module, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = imports();
    // The reading works: these are known imports (a graph read as empty
    // would pass vacuously).
    assert!(graph["rebalance"].contains("node"), "{graph:?}");
    assert!(graph["node"].contains("membership"), "{graph:?}");
    assert!(graph.values().map(BTreeSet::len).sum::<usize>() > 30, "{graph:?}");
    if let Some(found) = circle(&graph) {
        panic!("modules import each other in a circle: {}", found.join(" -> "));
    }
}

#[test]
fn a_circle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(m, to)| (m.to_string(), to.into_iter().map(str::to_string).collect()))
            .collect();
    assert_eq!(circle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").expect("c").clear();
    assert_eq!(circle(&acyclic), None);
}
