//! The README and the pages under docs/ link to each other by relative paths and heading
//! anchors; a page moved or a heading renamed must not leave a link that goes nowhere.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md.
fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    files.insert(0, root().join("README.md"));
    files
}

/// The lines of a Markdown file outside ``` fences, with their line numbers.
fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        if line.starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// A heading's anchor as GitHub makes it: lower case, punctuation other than `-` and `_`
/// dropped, spaces turned into `-`.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a file's headings make; a repeated heading gets `-1`, `-2`, ... as on GitHub.
fn anchors(markdown: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    for (_, line) in prose_lines(markdown) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let anchor = anchor_of(&line[hashes..]);
        let mut unique = anchor.clone();
        let mut repeat = 0;
        while !found.insert(unique.clone()) {
            repeat += 1;
            unique = format!("{anchor}-{repeat}");
        }
    }
    found
}

/// The targets of `[text](target)` links in prose, with their line numbers.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose_lines(markdown) {
        for (start, _) in line.match_indices("](") {
            let rest = &line[start + 2..];
            if let Some(end) = rest.find(')') {
                targets.push((number, rest[..end].to_string()));
            }
        }
    }
    targets
}

/// What is wrong with a relative link from `from`, if anything.
fn broken(from: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a file's directory").join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor?;
    let text = std::fs::read_to_string(&file).ok()?;
    if anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!(
            "{} has no heading with anchor #{anchor}",
            file.display()
        ))
    }
}

#[test]
fn every_relative_link_in_the_readme_and_docs_reaches_a_file_and_heading() {
    let mut problems = Vec::new();
    let mut links = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read a Markdown file");
        for (line, target) in link_targets(&text) {
            links += 1;
            if let Some(problem) = broken(&file, &target) {
                problems.push(format!(
                    "{}:{line}: ({target}): {problem}",
                    file.strip_prefix(root()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(
        links >= 10,
        "the README should link to the pages under docs/"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_links_to_every_page_under_docs() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let linked: HashSet<String> = link_targets(&readme)
        .into_iter()
        .map(|(_, target)| target.split('#').next().unwrap_or_default().to_string())
        .collect();
    let missing: Vec<String> = markdown_files()
        .iter()
        .skip(1)
        .map(|page| format!("docs/{}", page.file_name().unwrap().to_string_lossy()))
        .filter(|page| !linked.contains(page))
        .collect();
    assert!(
        missing.is_empty(),
        "pages under docs/ that the README does not link to: {missing:?}"
    );
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(
        anchor_of(" Troubleshooting: the seed's openssl commands, in certgate"),
        "troubleshooting-the-seeds-openssl-commands-in-certgate"
    );
    assert_eq!(anchor_of(" `escaped-pem` (default)"), "escaped-pem-default");
    assert_eq!(
        anchor_of(" Keys in an HSM (PKCS#11)"),
        "keys-in-an-hsm-pkcs11"
    );
    let repeated = anchors("# Errors\n```\n# not a heading\n```\n## Errors\n");
    assert_eq!(
        repeated,
        HashSet::from(["errors".to_string(), "errors-1".to_string()])
    );
}
