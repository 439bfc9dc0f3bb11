//! Tidy: checks of the repository's own source that run as ordinary tests
//! (`cargo test -p xtask tidy`, and so in every `cargo xtask ci`), in the manner of
//! rust-analyzer's `xtask/src/tidy.rs`.
//!
//! **Which files.** What git lists in the working tree, tracked or new but not ignored
//! (`git ls-files --cached --others --exclude-standard`; a plain walk of the tree when git
//! is unavailable), except `target/`, `fuzz/target/`, `.git/` and generated code (any
//! path with `/src/generated/`). *Library crates* are the directories of `crates/` with a
//! `src/lib.rs` (or a `[lib]` section in their manifest), other than the binaries
//! `pullkin-cli` and `pullkin-bench` and any `*test-support*` crate; their *library code*
//! is every `.rs` file under their `src/` except `src/main.rs` and `src/bin/`.
//!
//! **The rules.** Each finding is printed as `path:line: reason`.
//!
//! 1. *Outside references* (every `.rs`, `.md` and `.toml` file): no line mentions a note
//!    or a folder that lives beside the repository rather than in it (the strings are in
//!    [`OUTSIDE_REFERENCES`]; matched case-sensitively, so `docs/design.md` is fine).
//!    Readers of the repository cannot open those; what the code relies on is in `docs/`.
//! 2. *No `unwrap`/`expect` in library code*: a line of library code that calls
//!    `.unwrap()` or `.expect(` must state why it cannot fail: the same line or one of the
//!    3 lines above carries a `//` comment containing one of [`INVARIANT_WORDS`]
//!    (case-insensitive), e.g. `// Invariant: the constant parses (tested).`. Comment lines
//!    themselves (doc examples included) are not checked.
//! 3. *Public items are documented* (library code): a line that starts, after
//!    indentation, with one of [`PUBLIC_ITEMS`] must be preceded by a `///` doc comment
//!    (or a `#[doc …]` attribute), with only attribute lines and plain `//` comments in
//!    between. `pub(crate)`, `pub(super)` and `pub use` are not items of this kind. Two
//!    cases count as documented without a `///` line: an out-of-line `pub mod name;` whose
//!    module file starts with a module doc (rule 4's test; rustdoc takes the module's text
//!    from there), and a template inside `macro_rules!` (`pub struct $name`), whose docs
//!    come from the macro's invocation.
//! 4. *Module folders say what they hold*: every `mod.rs`, and every `src/lib.rs` and
//!    `src/main.rs`, starts with a `//!` module doc; only `#![…]` attributes and blank
//!    lines may come first, and an `#![doc …]` attribute (`#![doc =
//!    include_str!("../README.md")]`) counts as the doc.
//!
//! **Test code.** Rules 2 and 3 stop at a file's test module: a line `#[cfg(test)]` (or
//! `#[cfg(all(test, …))]`) followed, after any further attribute lines, by an inline
//! `mod NAME {`. Everything from there to the end of the file is test code; the library
//! files of this workspace put their test module last.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Rule 1: names of notes and folders outside the repository (split so that this file
/// does not match itself).
const OUTSIDE_REFERENCES: &[&str] = &[
    concat!("PROTOCOL", ".md"),
    concat!("DESIGN", ".md"),
    concat!("FLEET", ".md"),
    concat!("SEED", "-API", ".md"),
    concat!("..", "/shared"),
    concat!("shared", "/vectors"),
    concat!("shared", "/hooks"),
];

/// Rule 2: a `//` comment containing one of these (case-insensitive) states the invariant
/// that makes an `unwrap`/`expect` on the same line or the 3 below it infallible.
const INVARIANT_WORDS: &[&str] = &[
    "invariant",
    "cannot fail",
    "can't fail",
    "never fail",
    "infallible",
];

/// Rule 3: the starts of lines (after indentation) that declare a public item.
const PUBLIC_ITEMS: &[&str] = &[
    "pub fn ",
    "pub struct ",
    "pub enum ",
    "pub trait ",
    "pub const ",
    "pub static ",
    "pub type ",
    "pub mod ",
    "pub async fn ",
    "pub unsafe fn ",
];

/// Crates of `crates/` that are programs, not libraries, whatever their layout.
const NOT_LIBRARIES: &[&str] = &["pullkin-cli", "pullkin-bench"];

/// How many lines above an `unwrap`/`expect` may carry its invariant comment.
const INVARIANT_REACH: usize = 3;

#[test]
fn no_references_outside_the_repository() {
    let root = crate::root();
    let mut findings = Vec::new();
    for path in files(&root) {
        if ![".rs", ".md", ".toml"]
            .iter()
            .any(|ext| path.ends_with(ext))
        {
            continue;
        }
        let Some(text) = read(&root, &path) else {
            continue;
        };
        for (index, line) in text.lines().enumerate() {
            for pattern in OUTSIDE_REFERENCES {
                if line.contains(pattern) {
                    findings.push(format!(
                        "{path}:{}: refers to `{pattern}`, which is not in the repository \
                         (say it in docs/ and cite that)",
                        index + 1
                    ));
                }
            }
        }
    }
    report("references to files outside the repository", &findings);
}

#[test]
fn no_unwrap_or_expect_in_library_code() {
    let root = crate::root();
    let mut findings = Vec::new();
    for path in library_files(&root) {
        let Some(text) = read(&root, &path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines[..test_start(&lines)].iter().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let call = if line.contains(".unwrap()") {
                ".unwrap()"
            } else if line.contains(".expect(") {
                ".expect(…)"
            } else {
                continue;
            };
            let first = index.saturating_sub(INVARIANT_REACH);
            if !lines[first..=index].iter().any(|l| states_invariant(l)) {
                findings.push(format!(
                    "{path}:{}: `{call}` in library code without a `//` comment stating \
                     why it cannot fail (a word of: {})",
                    index + 1,
                    INVARIANT_WORDS.join(", ")
                ));
            }
        }
    }
    report("unwrap/expect in library code", &findings);
}

#[test]
fn public_items_are_documented() {
    let root = crate::root();
    let mut findings = Vec::new();
    for path in library_files(&root) {
        let Some(text) = read(&root, &path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut documented = false;
        let mut attribute_depth = 0i32;
        for (index, line) in lines[..test_start(&lines)].iter().enumerate() {
            let trimmed = line.trim_start();
            if attribute_depth > 0 {
                // Inside an attribute spread over several lines.
                attribute_depth += bracket_balance(trimmed);
                continue;
            }
            if trimmed.starts_with("#[") {
                documented |= trimmed.starts_with("#[doc");
                attribute_depth = bracket_balance(trimmed);
                continue;
            }
            if trimmed.starts_with("///") || trimmed.starts_with("/**") {
                documented = true;
                continue;
            }
            if trimmed.starts_with("//") {
                // A plain comment neither documents nor separates a doc from its item.
                continue;
            }
            let item = PUBLIC_ITEMS.iter().find(|item| trimmed.starts_with(*item));
            if item.is_some_and(|item| {
                !documented
                    && !macro_template(item, trimmed)
                    && !module_file_documented(&root, &path, item, trimmed)
            }) {
                findings.push(format!(
                    "{path}:{}: public item without a `///` doc comment: `{}`",
                    index + 1,
                    signature(trimmed)
                ));
            }
            documented = false;
        }
    }
    report("undocumented public items in library code", &findings);
}

#[test]
fn module_folders_start_with_a_module_doc() {
    let root = crate::root();
    let mut findings = Vec::new();
    for path in files(&root) {
        let folder_root = path == "mod.rs"
            || path.ends_with("/mod.rs")
            || ["src/lib.rs", "src/main.rs"]
                .iter()
                .any(|end| path == *end || path.ends_with(&format!("/{end}")));
        if !folder_root {
            continue;
        }
        let Some(text) = read(&root, &path) else {
            continue;
        };
        if !starts_with_module_doc(&text) {
            findings.push(format!(
                "{path}:1: a folder of modules without a `//!` module doc saying what it holds"
            ));
        }
    }
    report("module folders without a module doc", &findings);
}

/// Fails the calling test with the findings, one per line, and a count per crate.
fn report(what: &str, findings: &[String]) {
    if findings.is_empty() {
        return;
    }
    let mut per_crate: BTreeMap<&str, usize> = BTreeMap::new();
    for finding in findings {
        *per_crate.entry(owner(finding)).or_default() += 1;
    }
    let counts: Vec<String> = per_crate
        .iter()
        .map(|(owner, count)| format!("{owner}: {count}"))
        .collect();
    panic!(
        "tidy: {} {what} ({})\n{}\n",
        findings.len(),
        counts.join(", "),
        findings.join("\n")
    );
}

/// The crate (or top-level folder) a finding's path belongs to.
fn owner(finding: &str) -> &str {
    let path = finding.split(':').next().unwrap_or(finding);
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("crates"), Some(name)) => name,
        (Some(first), Some(_)) => first,
        _ => "(root)",
    }
}

/// The files tidy looks at, as `/`-separated paths relative to `root`, sorted.
fn files(root: &Path) -> Vec<String> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output();
    let mut paths = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => {
            let mut paths = Vec::new();
            walk(root, "", &mut paths);
            paths
        }
    };
    // The index may still list files that were moved or deleted in the working tree.
    paths.retain(|p| !skipped(p) && root.join(p).is_file());
    paths.sort();
    paths.dedup();
    paths
}

/// Whether a path is build output, git's own, or generated code.
fn skipped(path: &str) -> bool {
    ["target/", "fuzz/target/", ".git/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
        || path.contains("/src/generated/")
}

/// The fallback when git is unavailable: every file under `dir`, minus what
/// `.gitignore` keeps out of the repository.
fn walk(root: &Path, dir: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        let ignored = name == ".git"
            || name == "target"
            || ["fuzz/corpus", "fuzz/artifacts", "fuzz/coverage"].contains(&path.as_str());
        if ignored {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(root, &path, out),
            Ok(kind) if kind.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// The library code of the workspace (see the module doc), sorted.
fn library_files(root: &Path) -> Vec<String> {
    let libraries = library_crates(root);
    files(root)
        .into_iter()
        .filter(|path| {
            let mut parts = path.splitn(4, '/');
            let (Some("crates"), Some(name), Some("src"), Some(rest)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            libraries.iter().any(|lib| lib == name)
                && rest.ends_with(".rs")
                && rest != "main.rs"
                && !rest.starts_with("bin/")
        })
        .collect()
}

/// The names of the library crates under `crates/`.
fn library_crates(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.join("crates")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
            let library =
                dir.join("src/lib.rs").is_file() || manifest.lines().any(|l| l.trim() == "[lib]");
            let program = NOT_LIBRARIES.contains(&name.as_str()) || name.contains("test-support");
            (library && !program).then_some(name)
        })
        .collect();
    names.sort();
    names
}

fn read(root: &Path, path: &str) -> Option<String> {
    fs::read_to_string(root.join(path)).ok()
}

/// The index of the line where the file's test module starts (see the module doc), or
/// the number of lines when there is none.
fn test_start(lines: &[&str]) -> usize {
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed != "#[cfg(test)]" && !trimmed.starts_with("#[cfg(all(test,") {
            continue;
        }
        let item = lines[index + 1..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.starts_with("#["));
        if item.is_some_and(|l| {
            (l.starts_with("mod ") || l.starts_with("pub mod ")) && l.ends_with('{')
        }) {
            return index;
        }
    }
    lines.len()
}

/// Whether a line carries a `//` comment that states an invariant (rule 2).
fn states_invariant(line: &str) -> bool {
    line.find("//").is_some_and(|at| {
        let comment = line[at..].to_lowercase();
        INVARIANT_WORDS.iter().any(|word| comment.contains(word))
    })
}

/// `[` minus `]` on a line: what an attribute still has open after it.
fn bracket_balance(line: &str) -> i32 {
    line.chars().fold(0, |depth, c| match c {
        '[' => depth + 1,
        ']' => depth - 1,
        _ => depth,
    })
}

/// Whether the item is a template inside `macro_rules!` (its name is a `$` fragment):
/// its docs come from the macro's invocation.
fn macro_template(item: &str, line: &str) -> bool {
    line[item.len()..].trim_start().starts_with('$')
}

/// For `pub mod name;` declared in `path`: whether the module's own file starts with a
/// module doc.
fn module_file_documented(root: &Path, path: &str, item: &str, line: &str) -> bool {
    if item != "pub mod " {
        return false;
    }
    let Some(name) = line["pub mod ".len()..].trim().strip_suffix(';') else {
        return false;
    };
    let file = Path::new(path);
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let parent = file.parent().unwrap_or(Path::new(""));
    let dir = if ["lib", "main", "mod"].contains(&stem) {
        parent.to_path_buf()
    } else {
        parent.join(stem)
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
    .iter()
    .filter_map(|candidate| fs::read_to_string(root.join(candidate)).ok())
    .any(|text| starts_with_module_doc(&text))
}

/// Whether a file starts with a `//!` doc (or an `#![doc …]` attribute), after `#![…]`
/// attributes and blank lines (rule 4).
fn starts_with_module_doc(text: &str) -> bool {
    let mut attribute_depth = 0i32;
    for line in text.lines() {
        let trimmed = line.trim();
        if attribute_depth > 0 {
            attribute_depth += bracket_balance(trimmed);
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("#![doc") || trimmed.starts_with("//!") {
            return true;
        }
        if trimmed.starts_with("#![") {
            attribute_depth = bracket_balance(trimmed);
            continue;
        }
        return false;
    }
    false
}

/// A declaration shortened for a finding: up to its body, parameters or value.
fn signature(line: &str) -> String {
    let end = line.find(['{', '(', '=', ';']).unwrap_or(line.len());
    let short: String = line[..end].trim_end().chars().take(80).collect();
    short
}

#[test]
fn the_rules_themselves() {
    // Test modules are found, with attributes in between and for `all(test, …)`.
    let lines = [
        "fn a() {}",
        "#[cfg(all(test, feature = \"x\"))]",
        "#[allow(clippy::unwrap_used)]",
        "mod tests {",
        "}",
    ];
    assert_eq!(test_start(&lines), 1);
    // An out-of-line module after `#[cfg(test)]` is not the start of test code.
    assert_eq!(test_start(&["#[cfg(test)]", "mod tidy;", "fn b() {}"]), 3);
    assert!(states_invariant(
        "    // Invariant: the constant parses (tested)."
    ));
    assert!(states_invariant("x.unwrap() // cannot fail: checked above"));
    assert!(!states_invariant("x.unwrap() // TODO"));
    assert!(starts_with_module_doc(
        "#![forbid(unsafe_code)]\n\n//! Doc.\n"
    ));
    assert!(starts_with_module_doc(
        "#![doc = include_str!(\"../README.md\")]\n"
    ));
    assert!(starts_with_module_doc(
        "#![cfg_attr(\n    x,\n    y\n)]\n//! Doc.\n"
    ));
    assert!(!starts_with_module_doc("use std::fs;\n//! Late.\n"));
    assert_eq!(
        signature("pub fn parse(input: &str) -> X {"),
        "pub fn parse"
    );
    assert_eq!(owner("crates/pullkin/src/lib.rs:3: x"), "pullkin");
    assert_eq!(owner("docs/protocol.md:1: x"), "docs");
    assert_eq!(owner("README.md:1: x"), "(root)");
    for pattern in OUTSIDE_REFERENCES {
        assert!(!include_str!("tidy.rs").contains(pattern));
    }
}
