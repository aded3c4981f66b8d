//! The layer order of `src/`, written once in ARCHITECTURE.md (the table
//! headed `| layer | modules | may import |`), turned into a test: every
//! `crate::…` path a module names must be one the table lets it import,
//! and a module may only import modules of lower layers, so the module
//! graph has no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct Layer {
    number: u32,
    may_import: Option<BTreeSet<String>>, // None: everything
}

/// module → its layer, from ARCHITECTURE.md.
fn layers() -> BTreeMap<String, Layer> {
    let doc = std::fs::read_to_string(repo("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut lines = doc
        .lines()
        .skip_while(|l| !l.replace(' ', "").starts_with("|layer|modules|mayimport|"));
    assert!(
        lines.next().is_some(),
        "ARCHITECTURE.md has no `| layer | modules | may import |` table"
    );
    let mut out = BTreeMap::new();
    for row in lines.skip(1).take_while(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "row `{row}` needs three cells");
        let number: u32 = cells[0]
            .parse()
            .unwrap_or_else(|_| panic!("layer `{}` is not a number", cells[0]));
        let names = |cell: &str| -> BTreeSet<String> {
            cell.split(',')
                .map(|m| m.trim().trim_matches('`').to_string())
                .filter(|m| !m.is_empty())
                .collect()
        };
        let may_import = match cells[2] {
            "everything" => None,
            "nothing" => Some(BTreeSet::new()),
            cell => Some(names(cell)),
        };
        for module in names(cells[1]) {
            let previous = out.insert(
                module.clone(),
                Layer {
                    number,
                    may_import: may_import.clone(),
                },
            );
            assert!(previous.is_none(), "module `{module}` is in the table twice");
        }
    }
    out
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/store/levels.rs` → `store`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module named by a `crate::…` path in `source`, comments aside.
fn imports(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c}`: the first segment of each item at the top level of the group.
            let mut depth = 0;
            let mut item_start = true;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        out.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

#[test]
fn every_module_imports_only_what_its_layer_allows() {
    let layers = layers();
    for (module, layer) in &layers {
        for allowed in layer.may_import.iter().flatten() {
            let lower = layers
                .get(allowed)
                .unwrap_or_else(|| panic!("`{module}` may import `{allowed}`, which the table does not list"));
            assert!(
                lower.number < layer.number,
                "`{module}` (layer {}) may import `{allowed}` (layer {}): only lower layers, or the graph can cycle",
                layer.number,
                lower.number
            );
        }
    }
    let src = repo("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == "lib" || module == "main" {
            continue;
        }
        let layer = layers
            .get(&module)
            .unwrap_or_else(|| panic!("module `{module}` is missing from ARCHITECTURE.md's layer table"));
        let source = std::fs::read_to_string(&file).unwrap();
        for import in imports(&source) {
            let allowed = import == module || layer.may_import.as_ref().is_none_or(|m| m.contains(&import));
            if !allowed {
                violations.push(format!(
                    "{} (module `{module}`, layer {}) imports `{import}`",
                    file.strip_prefix(repo("")).unwrap().display(),
                    layer.number
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layer order (ARCHITECTURE.md):\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn the_import_reader_sees_grouped_and_inline_paths() {
    let seen = imports(
        "use crate::{budget::{Caller, Refused}, clock};\n// use crate::ha;\nlet x = crate::store::now();\nuse crate::process::Fence;",
    );
    let expected: BTreeSet<String> = ["budget", "clock", "store", "process"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(seen, expected);
}
