//! nginx configuration syntax: tokens, directives, blocks and `include` with globs.
//!
//! The rules follow nginx's own reader (`ngx_conf_read_token`): words are separated by
//! whitespace; `;` ends a directive and `{ }` hold a block; `#` starts a comment only where
//! a word could start; a word may be quoted with `"` or `'` (backslash escapes inside), and
//! `${name}` keeps its braces. Comments directly above a directive are kept with it so that
//! `convert-nginx` can carry them over.

use crate::config::ConfigError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One directive with its arguments and, for block directives, its children.
#[derive(Clone, Debug)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub block: Option<Vec<Directive>>,
    /// Comment lines directly above the directive (and one trailing it on its line), without `#`.
    pub comments: Vec<String>,
}

impl Directive {
    /// `file:line` for messages.
    pub fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    pub fn error(&self, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::general(format!("{}: {message}", self.place()))
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
    Comment(String),
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    file: &'a Path,
}

impl Lexer<'_> {
    fn error(&self, message: &str) -> ConfigError {
        ConfigError::general(format!("{}:{}: {message}", self.file.display(), self.line))
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    /// The next token and the line it starts on; None at the end of the text.
    fn next(&mut self) -> Result<Option<(Token, usize)>, ConfigError> {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.bump();
        }
        let line = self.line;
        let Some(&c) = self.chars.peek() else {
            return Ok(None);
        };
        let token = match c {
            ';' | '{' | '}' => {
                self.bump();
                match c {
                    ';' => Token::Semicolon,
                    '{' => Token::Open,
                    _ => Token::Close,
                }
            }
            '#' => {
                self.bump();
                let mut text = String::new();
                while let Some(&c) = self.chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    text.push(c);
                    self.bump();
                }
                Token::Comment(text.trim().to_string())
            }
            '"' | '\'' => {
                self.bump();
                let mut text = String::new();
                loop {
                    match self.bump() {
                        None => return Err(self.error("unexpected end of file in a quoted string")),
                        Some('\\') => match self.bump() {
                            Some(escaped) => unescape(escaped, &mut text),
                            None => return Err(self.error("unexpected end of file after '\\'")),
                        },
                        Some(q) if q == c => break,
                        Some(other) => text.push(other),
                    }
                }
                match self.chars.peek() {
                    None => {}
                    Some(&n) if n.is_whitespace() || n == ';' || n == '{' || n == '}' => {}
                    Some(&n) => {
                        return Err(self.error(&format!(
                            "unexpected \"{n}\" after a quoted string: put a space or ';' after the closing quote"
                        )))
                    }
                }
                Token::Word(text)
            }
            _ => {
                let mut text = String::new();
                while let Some(&c) = self.chars.peek() {
                    if c.is_whitespace() || c == ';' || c == '}' {
                        break;
                    }
                    if c == '{' {
                        // `${name}` belongs to the word; any other '{' opens a block.
                        if text.ends_with('$') {
                            while let Some(c) = self.bump() {
                                text.push(c);
                                if c == '}' {
                                    break;
                                }
                            }
                            continue;
                        }
                        break;
                    }
                    self.bump();
                    if c == '\\' {
                        if let Some(escaped) = self.bump() {
                            unescape(escaped, &mut text);
                        }
                        continue;
                    }
                    text.push(c);
                }
                Token::Word(text)
            }
        };
        Ok(Some((token, line)))
    }
}

/// nginx's reading of `\X` in a word: quotes and backslash stand for themselves, `\t \r \n`
/// for control characters, and anything else keeps its backslash.
fn unescape(escaped: char, text: &mut String) {
    match escaped {
        '"' | '\'' | '\\' => text.push(escaped),
        't' => text.push('\t'),
        'r' => text.push('\r'),
        'n' => text.push('\n'),
        other => {
            text.push('\\');
            text.push(other);
        }
    }
}

/// Directives that take a `{ }` block; every other one ends with `;`.
const BLOCK_DIRECTIVES: &[&str] = &[
    "http",
    "events",
    "location",
    "upstream",
    "if",
    "types",
    "map",
    "geo",
    "stream",
    "limit_except",
];

/// How deep `include` may nest before it is taken for a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads an nginx config file, `include`s expanded in place.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, ConfigError> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    parse_included(path, &base, 0)
}

fn parse_included(path: &Path, base: &Path, depth: usize) -> Result<Vec<Directive>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::general(format!("cannot read config file {}: {e}", path.display()))
    })?;
    parse_text(path, &text, base, depth)
}

/// Parses config text; `path` names the file in messages, `base` anchors `include`.
pub fn parse_text(
    path: &Path,
    text: &str,
    base: &Path,
    depth: usize,
) -> Result<Vec<Directive>, ConfigError> {
    let mut lexer = Lexer {
        chars: text.chars().peekable(),
        line: 1,
        file: path,
    };
    let file = Arc::new(path.to_path_buf());
    let directives = parse_block(&mut lexer, &file, base, depth, false)?;
    Ok(directives)
}

fn parse_block(
    lexer: &mut Lexer<'_>,
    file: &Arc<PathBuf>,
    base: &Path,
    depth: usize,
    nested: bool,
) -> Result<Vec<Directive>, ConfigError> {
    let mut directives: Vec<Directive> = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start_line = 0;
    let mut last_end_line = 0;
    loop {
        let Some((token, line)) = lexer.next()? else {
            if nested {
                return Err(lexer.error("unexpected end of file, expecting \"}\""));
            }
            if !words.is_empty() {
                return Err(lexer.error(&format!(
                    "unexpected end of file, expecting \";\" or \"}}\" after \"{}\"",
                    words[0]
                )));
            }
            return Ok(directives);
        };
        match token {
            Token::Comment(text) => {
                // A comment on the line a directive ended on belongs to that directive.
                match directives.last_mut() {
                    Some(last) if words.is_empty() && line == last_end_line => {
                        last.comments.push(text)
                    }
                    _ if words.is_empty() => comments.push(text),
                    _ => {}
                }
            }
            Token::Word(word) => {
                if words.is_empty() {
                    start_line = line;
                }
                words.push(word);
            }
            Token::Semicolon | Token::Open => {
                if words.is_empty() {
                    return Err(lexer.error(&format!(
                        "unexpected \"{}\"",
                        if token == Token::Open { "{" } else { ";" }
                    )));
                }
                let name = words.remove(0);
                let args = std::mem::take(&mut words);
                // `server` is a block in http and a line in upstream: either is fine here.
                let takes_block = BLOCK_DIRECTIVES.contains(&name.as_str());
                if token == Token::Open && !takes_block && name != "server" {
                    return Err(ConfigError::general(format!(
                        "{}:{line}: directive \"{name}\" is not terminated by \";\"",
                        file.display()
                    )));
                }
                if token == Token::Semicolon && takes_block && name != "server" {
                    return Err(ConfigError::general(format!(
                        "{}:{line}: directive \"{name}\" has no opening \"{{\"",
                        file.display()
                    )));
                }
                let block = if token == Token::Open {
                    Some(parse_block(lexer, file, base, depth, true)?)
                } else {
                    None
                };
                last_end_line = lexer.line;
                let directive = Directive {
                    name,
                    args,
                    file: file.clone(),
                    line: start_line,
                    block,
                    comments: std::mem::take(&mut comments),
                };
                if directive.name == "include" && directive.block.is_none() {
                    directives.extend(include(&directive, base, depth)?);
                } else {
                    directives.push(directive);
                }
            }
            Token::Close => {
                if !nested {
                    return Err(lexer.error("unexpected \"}\""));
                }
                if !words.is_empty() {
                    return Err(lexer.error(&format!(
                        "unexpected \"}}\": the directive \"{}\" is missing its \";\"",
                        words[0]
                    )));
                }
                return Ok(directives);
            }
        }
    }
}

/// Expands `include PATTERN;` (relative to the main config's directory, as nginx does).
fn include(
    directive: &Directive,
    base: &Path,
    depth: usize,
) -> Result<Vec<Directive>, ConfigError> {
    let [pattern] = directive.args.as_slice() else {
        return Err(directive.error("\"include\" takes one file name or pattern"));
    };
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(directive.error(format!(
            "\"include {pattern}\" nests more than {MAX_INCLUDE_DEPTH} deep: an include loop?"
        )));
    }
    let full = crate::config::resolve_relative(base, pattern);
    let full_text = full.to_string_lossy().into_owned();
    let files: Vec<PathBuf> = if pattern.contains(['*', '?', '[']) {
        let mut matches: Vec<PathBuf> = glob::glob(&full_text)
            .map_err(|e| directive.error(format!("bad include pattern \"{pattern}\": {e}")))?
            .filter_map(Result::ok)
            .collect();
        matches.sort();
        matches
    } else {
        if !full.exists() {
            return Err(directive.error(format!("include: {} does not exist", full.display())));
        }
        vec![full]
    };
    let mut directives = Vec::new();
    for file in files {
        directives.extend(parse_included(&file, base, depth + 1)?);
    }
    Ok(directives)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Directive> {
        parse_text(Path::new("/t/nginx.conf"), text, Path::new("/t"), 0).unwrap()
    }

    fn error(text: &str) -> String {
        parse_text(Path::new("/t/nginx.conf"), text, Path::new("/t"), 0)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn blocks_quotes_comments_and_variables() {
        let tree = parse(
            "# server A\nserver {\n    listen 443 ssl; # TLS\n    set_x \"a b;c\" 'it\\'s' ${var}x \\;;\n    if ($http_x_ssl_cert) { proxy_set_header X-SSL-CERT $http_x_ssl_cert; }\n}\n",
        );
        assert_eq!(tree.len(), 1);
        let server = &tree[0];
        assert_eq!((server.name.as_str(), server.line), ("server", 2));
        assert_eq!(server.comments, ["server A"]);
        let block = server.block.as_ref().unwrap();
        assert_eq!(block[0].args, ["443", "ssl"]);
        assert_eq!(block[0].comments, ["TLS"]);
        assert_eq!(block[1].args, ["a b;c", "it's", "${var}x", "\\;"]);
        assert_eq!(block[1].line, 4);
        assert_eq!(block[2].name, "if");
        assert_eq!(block[2].args, ["($http_x_ssl_cert)"]);
        assert_eq!(
            block[2].block.as_ref().unwrap()[0].args[1],
            "$http_x_ssl_cert"
        );
    }

    #[test]
    fn escapes_read_as_nginx_reads_them() {
        let tree = parse("return 200 \"ok\\n\" a\\tb \"\\x\";\n");
        assert_eq!(tree[0].args, ["200", "ok\n", "a\tb", "\\x"]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(
            error("server {\n  listen 80;\n"),
            "/t/nginx.conf:3: unexpected end of file, expecting \"}\""
        );
        assert_eq!(
            error("server {\n  listen 80\n}\n"),
            "/t/nginx.conf:3: unexpected \"}\": the directive \"listen\" is missing its \";\""
        );
        assert_eq!(error("}\n"), "/t/nginx.conf:1: unexpected \"}\"");
        assert!(error("a \"b\"c;").contains("after a quoted string"));
    }
}
