//! Keeps docs/rfc6455.md and docs/rfc7692.md true: every pointer in them names a file that exists and an item that
//! file defines.
//!
//! The maps' tables end in a `where` column of pointers, each a file in backticks followed by the items in it:
//! `src/protocol/connection.rs` `Connection::finish_control`, `State::reads_input`. This test reads every such
//! cell and fails, listing each broken pointer with its line, if a file is missing or an item is not defined there;
//! a row whose cell names no file fails too, unless the cell is `—` (nothing to point at). It is a plain source
//! scan, not a compiler: `name` must be defined at the start of a line of code in the file (`fn name`,
//! `struct name`, `enum name`, `const name`, ...; `function name` or `const name =` in a page), and `Type::item`
//! must be defined inside an `impl ... Type` block of the file (or be a variant of `enum Type` there), with `Type`
//! itself defined somewhere under `src/`. It owns no rule of either RFC; it only checks the maps' pointers.

use std::fs;
use std::path::{Path, PathBuf};

/// One pointer in the map: a file and an item in it, with the line of the map that names them.
#[derive(Debug)]
struct Pointer {
    line: usize,
    file: String,
    item: String,
}

/// What the map says, pointer by pointer, and what in it could not be read as a pointer.
#[derive(Debug, Default)]
struct Map {
    pointers: Vec<Pointer>,
    problems: Vec<String>,
}

/// The cells of a table row, split at the `|` that are not escaped as `\|`.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            '|' if !escaped => cells.push(String::new()),
            _ => {
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
        }
        escaped = c == '\\';
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The text of every backtick span in `cell`, in order.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A relative path to a file: no spaces, at least one `/`, and an extension.
fn is_path(text: &str) -> bool {
    !text.contains(char::is_whitespace)
        && text.contains('/')
        && text
            .rsplit('/')
            .next()
            .is_some_and(|name| name.contains('.'))
}

/// `name` or `Type::name`.
fn is_item(text: &str) -> bool {
    let parts: Vec<&str> = text.split("::").collect();
    parts.len() <= 2 && parts.iter().all(|p| is_identifier(p))
}

/// Reads the pointers out of every table whose last column is headed `where`. Each such cell is a list of
/// pointers: a path, then the items in that file, then maybe another path and its items. A row whose cell is `—`
/// points nowhere on purpose (something not implemented has no code to point at).
fn read_map(doc: &str) -> Map {
    let mut map = Map::default();
    let lines: Vec<&str> = doc.lines().collect();
    let mut in_checked_table = false;
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        if !line.trim_start().starts_with('|') {
            in_checked_table = false;
            continue;
        }
        let row = cells(line);
        let next_is_separator = lines
            .get(index + 1)
            .is_some_and(|next| next.trim_start().starts_with("| ---"));
        if next_is_separator {
            in_checked_table = row.last().is_some_and(|c| c.eq_ignore_ascii_case("where"));
            continue;
        }
        if !in_checked_table || line.trim_start().starts_with("| ---") {
            continue;
        }
        let Some(cell) = row.last() else {
            continue;
        };
        if cell == "—" {
            continue;
        }
        let mut file: Option<&str> = None;
        let mut items_in_file = 0;
        for span in code_spans(cell) {
            if is_path(span) {
                if let (Some(previous), 0) = (file, items_in_file) {
                    map.problems
                        .push(format!("line {number}: `{previous}` names no item"));
                }
                file = Some(span);
                items_in_file = 0;
            } else if !is_item(span) {
                map.problems.push(format!(
                    "line {number}: `{span}` is neither a path nor an item name (`name` or `Type::name`)"
                ));
            } else if let Some(file) = file {
                items_in_file += 1;
                map.pointers.push(Pointer {
                    line: number,
                    file: file.to_owned(),
                    item: span.to_owned(),
                });
            } else {
                map.problems.push(format!(
                    "line {number}: `{span}` comes before any file: start the cell with the file's path"
                ));
            }
        }
        match (file, items_in_file) {
            (None, _) => map
                .problems
                .push(format!("line {number}: the where cell names no file")),
            (Some(file), 0) => map
                .problems
                .push(format!("line {number}: `{file}` names no item")),
            _ => {}
        }
    }
    map
}

/// The lines of `source` that are code: comment lines (`//`, `///`, `//!`, `*`) are dropped, so a name that is only
/// mentioned in a comment does not count as defined.
fn code_lines(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter(|line| {
            let trimmed = line.trim_start();
            !(trimmed.starts_with("//") || trimmed.starts_with("* ") || trimmed.starts_with("/*"))
        })
        .collect()
}

/// The words that introduce a definition whose name follows them, in Rust and in a page's script.
const RUST_DEFINERS: [&str; 9] = [
    "fn", "struct", "enum", "trait", "type", "const", "static", "mod", "union",
];
const SCRIPT_DEFINERS: [&str; 4] = ["function", "const", "let", "var"];

/// True if `line` starts a definition of `name`: after any visibility (`pub`, `pub(crate)`, ...) and qualifiers
/// (`const fn`, `async`, `unsafe`), one of `definers` and then `name`, followed by a character that cannot continue
/// an identifier. Anchoring at the start of the line keeps mentions (in comments, strings, calls) from counting.
fn starts_with_definition(line: &str, name: &str, definers: &[&str]) -> bool {
    let mut words = line.split_whitespace().peekable();
    while let Some(&word) = words.peek() {
        let qualifier = word == "pub"
            || word.starts_with("pub(")
            || matches!(word, "async" | "unsafe" | "extern" | "\"C\"");
        let const_fn = word == "const" && line.contains("const fn ");
        if !(qualifier || const_fn) {
            break;
        }
        words.next();
    }
    let (Some(definer), Some(defined)) = (words.next(), words.next()) else {
        return false;
    };
    definers.contains(&definer)
        && defined
            .strip_prefix(name)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
}

/// The blocks of `lines` that are `impl` blocks for `type_name` (inherent or of a trait), or the body of
/// `enum type_name`: each from its first line to the `}` at the same indentation, as rustfmt writes them.
fn blocks_of<'a>(lines: &[&'a str], type_name: &str) -> Vec<(bool, Vec<&'a str>)> {
    let mut blocks = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let is_impl = trimmed.starts_with("impl ") || trimmed.starts_with("impl<");
        let is_enum = starts_with_definition(trimmed, type_name, &["enum"]);
        if !is_impl && !is_enum {
            continue;
        }
        if is_impl {
            let head = trimmed.split('{').next().unwrap_or_default();
            let target = head.rsplit(" for ").next().unwrap_or(head);
            let names_type = target
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|word| word == type_name);
            if !names_type {
                continue;
            }
        }
        let closing = format!("{indent}}}");
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.trim_end() == closing)
            .map_or(lines.len(), |offset| start + 1 + offset);
        blocks.push((is_enum, lines[start + 1..end].to_vec()));
    }
    blocks
}

/// True if `variant` is a variant in the body of an enum: a line that starts with it, followed by `,`, `(`, ` {`
/// or nothing.
fn has_variant(body: &[&str], variant: &str) -> bool {
    body.iter().any(|line| {
        line.trim_start().strip_prefix(variant).is_some_and(|rest| {
            rest.is_empty()
                || rest.starts_with(',')
                || rest.starts_with('(')
                || rest.starts_with(" {")
        })
    })
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// True if a struct, enum, trait or type alias named `type_name` is defined in a `.rs` file under `root/src`.
fn type_exists(root: &Path, type_name: &str) -> bool {
    rust_files(&root.join("src")).iter().any(|path| {
        fs::read_to_string(path).is_ok_and(|source| {
            code_lines(&source).iter().any(|line| {
                starts_with_definition(line, type_name, &["struct", "enum", "trait", "type"])
            })
        })
    })
}

/// Why `pointer` is broken, or `None` if it names an item its file defines.
fn check_pointer(root: &Path, pointer: &Pointer) -> Option<String> {
    let Pointer { line, file, item } = pointer;
    let broken = |why: String| Some(format!("line {line}: `{file}` `{item}`: {why}"));
    let Ok(source) = fs::read_to_string(root.join(file)) else {
        return broken("no such file".into());
    };
    let lines = code_lines(&source);
    let is_rust = file.ends_with(".rs");
    if !is_rust && !file.ends_with(".html") {
        return broken("only .rs and .html files can be checked".into());
    }
    match item.split_once("::") {
        None => {
            let definers: &[&str] = if is_rust {
                &RUST_DEFINERS
            } else {
                &SCRIPT_DEFINERS
            };
            let defined = lines
                .iter()
                .any(|l| starts_with_definition(l, item, definers));
            if defined {
                return None;
            }
            broken("not defined in the file".into())
        }
        Some(_) if !is_rust => broken("`Type::item` pointers are for Rust files".into()),
        Some((type_name, member)) => {
            if !type_exists(root, type_name) {
                return broken(format!("no type `{type_name}` is defined under src/"));
            }
            let found = blocks_of(&lines, type_name).iter().any(|(is_enum, body)| {
                if *is_enum {
                    has_variant(body, member)
                } else {
                    body.iter()
                        .any(|l| starts_with_definition(l, member, &RUST_DEFINERS))
                }
            });
            if found {
                return None;
            }
            broken(format!(
                "no `{member}` in an `impl {type_name}` block or `enum {type_name}` of the file"
            ))
        }
    }
}

/// Every problem with the map `doc`, checked against the crate at `root`.
fn problems(doc: &str, root: &Path) -> (usize, Vec<String>) {
    let map = read_map(doc);
    let mut problems = map.problems;
    problems.extend(map.pointers.iter().filter_map(|p| check_pointer(root, p)));
    (map.pointers.len(), problems)
}

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails, listing every broken pointer, unless the map at `path` (relative to the crate) has none and holds more
/// than `at_least` pointers: far fewer means its tables were not read at all.
fn assert_map_is_true(path: &str, at_least: usize) {
    let doc = fs::read_to_string(crate_root().join(path)).expect(path);
    let (checked, problems) = problems(&doc, &crate_root());
    assert!(
        problems.is_empty(),
        "{path} has {} broken pointer(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        checked > at_least,
        "only {checked} pointers found in {path}"
    );
}

#[test]
fn every_pointer_in_docs_rfc6455_md_names_an_item_its_file_defines() {
    assert_map_is_true("docs/rfc6455.md", 100);
}

#[test]
fn every_pointer_in_docs_rfc7692_md_names_an_item_its_file_defines() {
    assert_map_is_true("docs/rfc7692.md", 100);
}

/// A one-row map whose where cell is `cell`.
fn one_row(cell: &str) -> String {
    format!("| section | rule | where |\n| --- | --- | --- |\n| 5.5.2 | a rule | {cell} |\n")
}

fn problems_of(cell: &str) -> Vec<String> {
    problems(&one_row(cell), &crate_root()).1
}

#[test]
fn existing_functions_methods_types_consts_and_variants_pass() {
    let cell = "`src/protocol/connection.rs` `Connection::finish_control`, `State::reads_input`, \
                `encode_server_message`, `Role`; `src/protocol/close.rs` `MAX_REASON_BYTES`, \
                `CloseCode::is_sendable`, `CloseCode::NORMAL`, `CloseBodyError::InvalidCode`; \
                `src/server/websocket.rs` `Server::on_frames`; `src/web/index.html` `connectionGone`";
    assert_eq!(problems_of(cell), Vec::<String>::new());
}

#[test]
fn a_renamed_function_is_reported_with_its_line() {
    let problems = problems_of("`src/protocol/connection.rs` `Connection::finish_controls`");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("line 3: "), "{problems:?}");
    assert!(problems[0].contains("finish_controls"), "{problems:?}");
}

#[test]
fn a_missing_file_is_reported() {
    let problems = problems_of("`src/protocol/nowhere.rs` `feed`");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("no such file"), "{problems:?}");
}

#[test]
fn a_method_of_another_type_in_the_same_file_is_reported() {
    // `fn feed` is in connection.rs, but in `impl Connection`, not `impl State`.
    let problems = problems_of("`src/protocol/connection.rs` `State::feed`");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn a_type_that_does_not_exist_is_reported() {
    let problems = problems_of("`src/protocol/connection.rs` `Connexion::feed`");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("no type `Connexion`"), "{problems:?}");
}

/// A throwaway crate under the system's temporary directory holding `files`, for checks the real crate cannot show.
fn scratch_crate(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("rfc_map_{name}_{}", std::process::id()));
    for (path, text) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().expect("a file in a directory"))
            .expect("scratch directory");
        fs::write(path, text).expect("scratch file");
    }
    root
}

#[test]
fn a_name_only_mentioned_in_comments_or_calls_is_not_defined() {
    let root = scratch_crate(
        "comments",
        &[(
            "src/lib.rs",
            "//! fn ghost() was removed.\n/// struct Phantom, in words.\n/*\n * fn buried() {}\n */\n\
             pub fn real() {\n    ghost();\n}\n",
        )],
    );
    let doc = one_row("`src/lib.rs` `real`, `ghost`, `Phantom`, `buried`");
    let (checked, problems) = problems(&doc, &root);
    let _ = fs::remove_dir_all(&root);
    assert_eq!(checked, 4);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems.iter().all(|p| !p.contains("`real`")),
        "{problems:?}"
    );
}

#[test]
fn an_item_before_any_file_and_a_file_without_items_are_reported() {
    let problems = problems_of("`Connection::feed` and `src/protocol/connection.rs`");
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn a_span_that_is_neither_path_nor_item_is_reported() {
    let problems = problems_of("`src/http/mod.rs` `route`, `Allow: GET`");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("neither a path nor an item"),
        "{problems:?}"
    );
}

#[test]
fn a_row_whose_where_cell_has_no_pointer_is_reported() {
    for cell in ["", "the frame decoder", "`—`"] {
        let problems = problems_of(cell);
        assert!(!problems.is_empty(), "{cell:?} passed");
    }
    assert!(problems_of("the frame decoder")[0].contains("names no file"));
}

#[test]
fn a_dash_cell_points_nowhere_on_purpose() {
    assert_eq!(problems_of("—"), Vec::<String>::new());
}
