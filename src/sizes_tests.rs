//! The house rule on sizes: no Rust file under a workspace member's `src/` over 600 lines,
//! inline test modules included (tests go beside, as `foo_tests.rs`). Functions over 100 lines
//! are clippy's `too_many_lines` (clippy.toml).

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// The source folders the rule covers, from the workspace root.
const SOURCE_DIRS: [&str; 3] = ["src", "agent/src", "bench/src"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file of `files` over [`MAX_LINES`] lines, with its count.
fn over_limit(files: &[PathBuf]) -> Vec<(PathBuf, usize)> {
    files
        .iter()
        .filter_map(|f| {
            let text =
                std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let n = text.lines().count();
            (n > MAX_LINES).then(|| (f.clone(), n))
        })
        .collect()
}

#[test]
fn no_source_file_is_over_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 100, "only {} files found", files.len());
    let over: Vec<String> = over_limit(&files)
        .into_iter()
        .map(|(f, n)| {
            format!(
                "{} ({n} lines)",
                f.strip_prefix(root).unwrap_or(&f).display()
            )
        })
        .collect();
    assert!(
        over.is_empty(),
        "over {MAX_LINES} lines: split them by concern, tests beside as foo_tests.rs: {over:?}"
    );
}

#[test]
fn the_check_sees_a_file_one_line_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("long.rs");
    let fine = dir.path().join("fine.rs");
    std::fs::write(&long, "//\n".repeat(MAX_LINES + 1)).expect("write");
    std::fs::write(&fine, "//\n".repeat(MAX_LINES)).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "x\n".repeat(MAX_LINES * 2)).expect("write");
    let mut files = Vec::new();
    rust_files(dir.path(), &mut files);
    assert_eq!(files.len(), 2);
    assert_eq!(over_limit(&files), vec![(long, MAX_LINES + 1)]);
}
