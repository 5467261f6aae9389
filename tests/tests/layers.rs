//! The modules of voiyd-server and voiyd-node are layers (see each crate's docs): a
//! module may use only those below it, and within one folder the files' imports form
//! no cycle. This reads the sources and fails on an upward or circular import, naming
//! the file and the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The server's top-level modules, lowest first. Equal ranks may not import each other.
const SERVER: &[(&str, u8)] = &[
    ("error", 0),
    ("metrics", 0),
    ("schedule", 1),
    ("store", 2),
    ("cache", 3),
    ("security", 3),
    ("context", 4),
    ("service", 5),
    ("controllers", 6),
    ("ingest", 7),
    ("api", 8),
    ("http", 9),
    ("app", 10),
];

/// The node's top-level modules, lowest first.
const NODE: &[(&str, u8)] = &[
    ("decide", 0),
    ("identity", 1),
    ("logs", 1),
    ("containerd", 1),
    ("upgrade", 1),
    ("image", 2),
    ("network", 2),
    ("secrets", 2),
    ("dns", 3),
    ("mesh", 3),
    ("traffic", 3),
    ("spec", 3),
    ("volumes", 4),
    ("runtime", 5),
    ("serve", 6),
    ("agent", 7),
];

fn rank(layers: &[(&str, u8)], module: &str) -> Option<u8> {
    layers.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` path in `code`, as its segments (at most two).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `voiyd_crate::` and the like
        }
        let rest = &code[i + "crate::".len()..];
        let mut segs = Vec::new();
        let mut s = rest;
        for _ in 0..2 {
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            if end == 0 {
                break;
            }
            segs.push(s[..end].to_string());
            match s[end..].strip_prefix("::") {
                Some(next) => s = next,
                None => break,
            }
        }
        out.push(segs);
    }
    // `use crate::{a, b}` groups.
    for (i, _) in code.match_indices("crate::{") {
        let rest = &code[i + "crate::{".len()..];
        let group = &rest[..rest.find('}').unwrap_or(0)];
        for item in group.split(',') {
            let name: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(vec![name]);
            }
        }
    }
    out
}

#[test]
fn server_modules_import_only_downward_and_without_cycles() {
    check("server", SERVER);
}

#[test]
fn node_modules_import_only_downward_and_without_cycles() {
    check("node", NODE);
}

fn check(krate: &str, layers: &[(&str, u8)]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    // Per folder: file -> files of the same folder it uses.
    let mut within: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = parts[0].clone();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(own) = rank(layers, &top) else {
            problems.push(format!(
                "{krate}/src/{}: module `{top}` has no layer: add it to the table here and to the crate docs",
                rel.display()
            ));
            continue;
        };
        let me = parts.get(1).cloned().unwrap_or_else(|| "mod".into());
        let text = std::fs::read_to_string(f).expect("read");
        for path in crate_paths(&code(&text)) {
            let Some(target) = path.first() else { continue };
            if *target == top {
                if let Some(sibling) = path.get(1) {
                    if *sibling != me {
                        within
                            .entry(top.clone())
                            .or_default()
                            .entry(me.clone())
                            .or_default()
                            .insert(sibling.clone());
                    }
                }
                continue;
            }
            match rank(layers, target) {
                Some(r) if r < own => {}
                Some(_) => problems.push(format!(
                    "{krate}/src/{}: uses crate::{} from layer `{top}`, which is not below it",
                    rel.display(),
                    path.join("::")
                )),
                None => problems.push(format!(
                    "{krate}/src/{}: uses crate::{}, which is not a layer",
                    rel.display(),
                    path.join("::")
                )),
            }
        }
    }
    for (folder, graph) in &within {
        if let Some(cycle) = find_cycle(graph) {
            problems.push(format!(
                "{krate}/src/{folder}/: files import each other in a circle: {}",
                cycle.join(" -> ")
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut c = stack[at..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_checker_sees_upward_and_grouped_imports() {
    let paths = crate_paths(
        "use crate::service::tasks;\nuse crate::{api, store};\nlet x = voiyd_crate::y;",
    );
    assert!(paths.contains(&vec!["service".to_string(), "tasks".to_string()]));
    assert!(paths.contains(&vec!["api".to_string()]));
    assert!(paths.contains(&vec!["store".to_string()]));
    assert_eq!(paths.len(), 4, "{paths:?}"); // crate::{ itself yields one empty path
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&g).is_some());
    g.remove("b");
    assert!(find_cycle(&g).is_none());
}
