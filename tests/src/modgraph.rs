//! The module graph of the workspace's crates, read from their sources: which module of a crate
//! names which other (`crate::`, `super::` and child paths, `use` trees expanded), and the groups
//! of modules that import each other around a cycle. A unit test keeps every crate free of them,
//! so a reader can follow any module without being sent back to one already left.
//!
//! It reads text, not a compiled crate: comments and literals are blanked first, `#[cfg(test)]`
//! modules are left out, and a path is charged to the deepest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module by its path from the crate root (`[]` is the root, `["step", "fetch"]`).
pub type ModPath = Vec<String>;

/// One crate root's modules: each module's path, its file and its own code (comments, literals
/// and test modules blanked).
#[derive(Debug, Default)]
pub struct Crate {
    pub root: PathBuf,
    pub modules: BTreeMap<ModPath, (PathBuf, String)>,
    /// The modules a module declares (by name), so a bare `child::x` path resolves.
    children: BTreeMap<ModPath, BTreeSet<String>>,
}

/// `src` with comments, string, byte-string and char literals replaced by spaces (newlines kept),
/// so that no path inside them is taken for code.
pub fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, a: usize, z: usize| {
        for c in out.iter_mut().take(z.min(b.len())).skip(a) {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            let z = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, z);
            i = z;
        } else if b[i..].starts_with(b"/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (b[i] == b'r' || b[i..].starts_with(b"br"))
            && (i == 0 || !ident(b[i - 1]))
            && raw_string_at(&b[i..]).is_some()
        {
            let len = raw_string_at(&b[i..]).unwrap_or(1);
            blank(&mut out, i, i + len);
            i += len;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote near.
            let len = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .take(10)
                    .position(|&c| c == b'\'')
                    .map(|p| p + 3)
            } else {
                let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch) == Some(&b'\'')).then_some(ch + 2)
            };
            match len {
                Some(l) => {
                    blank(&mut out, i, i + l);
                    i += l;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The length of a raw (byte) string literal starting at `b`, if one does.
fn raw_string_at(b: &[u8]) -> Option<usize> {
    let start = if b.starts_with(b"br") { 2 } else { 1 };
    let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
    if b.get(start + hashes) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = start + hashes + 1;
    b[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| body + p + close.len())
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The index of the brace closing the one at `open`.
fn closing(s: &str, open: usize) -> usize {
    let mut depth = 0;
    for (k, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + k;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// A `mod` item in `code`: its name, whether it is a test module, an explicit `#[path]`, and
/// the span of an inline body.
#[derive(Debug)]
struct ModItem {
    name: String,
    test: bool,
    path: Option<String>,
    body: Option<(usize, usize)>,
}

/// The `mod` items of `code` (stripped) at any depth, with attributes read from `raw`.
fn mod_items(code: &str, raw: &str) -> Vec<ModItem> {
    let mut items = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("mod ") {
        let at = from + p;
        from = at + 4;
        if at > 0 && code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|&c| is_ident(c))
            .collect();
        if name.is_empty() {
            continue;
        }
        let after = rest.trim_start()[name.len()..].trim_start();
        let inline = after.starts_with('{');
        if !inline && !after.starts_with(';') {
            continue;
        }
        // The attributes right before the item (and any `pub`): the lines above it that start
        // with `#[`.
        let line_start = raw[..at].rfind('\n').map_or(0, |n| n + 1);
        let mut attrs = raw[line_start..at].to_string();
        let mut k = line_start;
        while k > 0 {
            let prev = raw[..k - 1].rfind('\n').map_or(0, |n| n + 1);
            let l = raw[prev..k - 1].trim();
            if l.starts_with("#[") {
                attrs.insert_str(0, l);
                k = prev;
            } else {
                break;
            }
        }
        let compact: String = attrs.chars().filter(|c| !c.is_whitespace()).collect();
        let test = compact.contains("cfg(test)");
        let path = compact
            .find("#[path=")
            .and_then(|p| attrs[..].find('"').map(|q| (p, q)))
            .and_then(|(_, q)| {
                let s = &attrs[q + 1..];
                s.find('"').map(|e| s[..e].to_string())
            });
        let body = inline.then(|| {
            let open = at + 4 + (rest.len() - after.len());
            (open, closing(code, open))
        });
        if let Some((_, close)) = body {
            from = close;
        }
        items.push(ModItem {
            name,
            test,
            path,
            body,
        });
    }
    items
}

impl Crate {
    /// Reads the crate whose root file is `root` (`src/lib.rs`, `src/main.rs`, a bin).
    pub fn read(root: &Path) -> std::io::Result<Crate> {
        let mut c = Crate {
            root: root.to_path_buf(),
            ..Crate::default()
        };
        c.load(root, Vec::new(), true)?;
        Ok(c)
    }

    fn load(&mut self, file: &Path, path: ModPath, root_like: bool) -> std::io::Result<()> {
        let raw = std::fs::read_to_string(file)?;
        let mut code = strip(&raw);
        let dir = file.parent().unwrap_or(Path::new("."));
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let sub = if root_like || stem == "mod" {
            dir.to_path_buf()
        } else {
            dir.join(stem)
        };
        let mut names = BTreeSet::new();
        for m in mod_items(&code.clone(), &raw) {
            if let Some((a, z)) = m.body {
                // An inline module's code counts as its parent's; a test module's not at all.
                if m.test {
                    code.replace_range(a..z, &" ".repeat(z - a));
                }
                continue;
            }
            if m.test {
                continue;
            }
            let candidates = match &m.path {
                Some(p) => vec![dir.join(p)],
                None => vec![
                    sub.join(format!("{}.rs", m.name)),
                    sub.join(&m.name).join("mod.rs"),
                ],
            };
            let Some(f) = candidates.into_iter().find(|f| f.is_file()) else {
                continue;
            };
            let mut child = path.clone();
            child.push(m.name.clone());
            names.insert(m.name.clone());
            self.load(&f, child, false)?;
        }
        self.children.insert(path.clone(), names);
        self.modules.insert(path, (file.to_path_buf(), code));
        Ok(())
    }

    /// The deepest module `segs` names, from module `at`: `crate::`, `super::` and `self::`
    /// prefixes, or a child module's name.
    fn resolve(&self, at: &ModPath, segs: &[String]) -> Option<ModPath> {
        let mut cur: Option<ModPath> = None;
        let mut i = 0;
        while i < segs.len() {
            match segs[i].as_str() {
                "crate" => cur = Some(Vec::new()),
                "self" => cur = Some(cur.unwrap_or_else(|| at.clone())),
                "super" => {
                    let mut p = cur.unwrap_or_else(|| at.clone());
                    p.pop();
                    cur = Some(p);
                }
                _ => break,
            }
            i += 1;
        }
        let mut cur = match cur {
            Some(c) => c,
            None if self
                .children
                .get(at)
                .is_some_and(|c| segs.first().is_some_and(|s| c.contains(s))) =>
            {
                at.clone()
            }
            None => return None,
        };
        for s in &segs[i..] {
            match self.children.get(&cur) {
                Some(c) if c.contains(s) => cur.push(s.clone()),
                _ => break,
            }
        }
        Some(cur)
    }

    /// Module -> the other modules of the crate it names.
    pub fn edges(&self) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
        let mut out: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for (m, (_, code)) in &self.modules {
            let e = out.entry(m.clone()).or_default();
            for segs in paths_in(code) {
                if let Some(t) = self.resolve(m, &segs) {
                    if t != *m {
                        e.insert(t);
                    }
                }
            }
        }
        out
    }
}

/// Every path in `code` that starts with `crate`, `super`, `self` or an identifier followed by
/// `::`, with `use` trees' braces expanded into one path per leaf.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        if is_ident(c) && (k == 0 || !(is_ident(chars[k - 1].1) || chars[k - 1].1 == ':')) {
            let (segs, end) = path_at(code, i);
            if segs.len() > 1 || code[end..].starts_with("::{") {
                let prefix = segs;
                if code[end..].starts_with("::{") {
                    let open = end + 2;
                    let close = closing(code, open);
                    for tail in tree(&code[open + 1..close]) {
                        let mut p = prefix.clone();
                        p.extend(tail);
                        out.push(p);
                    }
                    k = chars.partition_point(|&(j, _)| j <= close);
                    continue;
                }
                out.push(prefix);
            }
            k = chars.partition_point(|&(j, _)| j < end);
            continue;
        }
        k += 1;
    }
    out
}

/// The `a::b::c` path at byte `i` of `code` and where it ends.
fn path_at(code: &str, i: usize) -> (Vec<String>, usize) {
    let mut segs = Vec::new();
    let mut j = i;
    loop {
        let name: String = code[j..].chars().take_while(|&c| is_ident(c)).collect();
        if name.is_empty() {
            break;
        }
        j += name.len();
        segs.push(name);
        let rest = &code[j..];
        let ws = rest.len() - rest.trim_start().len();
        if rest.trim_start().starts_with("::")
            && rest.trim_start()[2..]
                .trim_start()
                .starts_with(|c: char| is_ident(c))
        {
            let after = &rest.trim_start()[2..];
            j += ws + 2 + (after.len() - after.trim_start().len());
        } else {
            break;
        }
    }
    (segs, j)
}

/// The leaves of a `use` tree's brace group (`a, b::{c, d}, e as f, self`).
fn tree(group: &str) -> Vec<Vec<String>> {
    let mut parts = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts {
        let p: String = p.split(" as ").next().unwrap_or("").to_string();
        let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
        if p.is_empty() {
            continue;
        }
        if let Some(open) = p.find('{') {
            let head: Vec<String> = p[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let inner = &p[open + 1..p.rfind('}').unwrap_or(p.len())];
            for t in tree(inner) {
                let mut h = head.clone();
                h.extend(t);
                out.push(h);
            }
        } else {
            let segs: Vec<String> = p
                .split("::")
                .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
                .map(String::from)
                .collect();
            out.push(segs);
        }
    }
    out
}

/// The strongly connected groups of more than one module (Tarjan's algorithm).
pub fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct T<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on: BTreeSet<&'a ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a ModPath) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                let Some((w, _)) = t.edges.get_key_value(w) else {
                    continue;
                };
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut group = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                group.push(w.clone());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                t.out.push(group);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The crate roots under `repo`: every `src/lib.rs`, `src/main.rs` and `src/bin/*.rs` of the
/// workspace's packages (crates/*, tests, tests/campaign).
pub fn roots(repo: &Path) -> Vec<PathBuf> {
    let mut pkgs: Vec<PathBuf> = std::fs::read_dir(repo.join("crates"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    pkgs.push(repo.join("tests"));
    pkgs.push(repo.join("tests/campaign"));
    let mut out = Vec::new();
    for p in pkgs {
        for f in ["src/lib.rs", "src/main.rs"] {
            if p.join(f).is_file() {
                out.push(p.join(f));
            }
        }
        if let Ok(rd) = std::fs::read_dir(p.join("src/bin")) {
            out.extend(
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|f| f.extension().is_some_and(|x| x == "rs")),
            );
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (p, text) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
    }

    fn names(groups: &[Vec<ModPath>]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.iter().map(|m| m.join("::")).collect())
            .collect()
    }

    #[test]
    fn comments_and_literals_are_not_code() {
        let s =
            strip("let a = \"crate::x\"; // crate::y\n/* crate::z */ let c = 'q'; r#\"crate::w\"#");
        assert!(!s.contains("crate::"), "{s}");
        assert_eq!(s.lines().count(), 2);
        assert!(strip("fn f<'a>(x: &'a str) { crate::m::f() }").contains("crate::m::f"));
    }

    #[test]
    fn a_cycle_through_use_trees_super_and_children_is_found_and_tests_do_not_count() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            &[
                ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n"),
                ("a.rs", "use crate::{b::{self, X}, c};\n"),
                ("b.rs", "pub struct X;\nfn f() { super::a::g() }\n"),
                ("c.rs", "pub mod inner;\n"),
                (
                    "c/inner.rs",
                    "/* crate::d */ fn f() { let s = \"crate::d\"; }\n",
                ),
                (
                    "d.rs",
                    "#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n#[cfg(test)]\nmod more;\n",
                ),
            ],
        );
        let c = Crate::read(&t.path().join("lib.rs")).unwrap();
        assert!(c
            .modules
            .contains_key(&vec!["c".to_string(), "inner".to_string()]));
        let e = c.edges();
        assert!(e[&vec!["d".to_string()]].is_empty(), "{e:?}");
        assert_eq!(names(&cycles(&e)), [["a", "b"]]);
    }

    /// No module of any crate in the workspace imports another that imports it back, directly or
    /// around a longer cycle.
    #[test]
    fn no_crate_of_the_workspace_has_a_module_cycle() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let roots = roots(&repo);
        assert!(roots.len() > 20, "{roots:?}");
        let mut found = Vec::new();
        for r in roots {
            let c = Crate::read(&r).unwrap();
            assert!(!c.modules.is_empty());
            for g in cycles(&c.edges()) {
                found.push(format!(
                    "{}: {}",
                    r.display(),
                    g.iter()
                        .map(|m| m.join("::"))
                        .collect::<Vec<_>>()
                        .join(" <-> ")
                ));
            }
        }
        assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
    }
}
