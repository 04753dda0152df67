//! SQL is built from parameters only. Every formatting macro (`format!`,
//! `write!`, …) in `src/` whose template looks like SQL may interpolate
//! only the constant identifiers allowed below; values always travel as
//! `$n` parameters. A `format!("… WHERE x = '{user}'")` anywhere in `src/`
//! fails this test, as does gluing SQL text to a value with `+` or
//! `push_str`.
//!
//! The scan is lexical: comments and the insides of other string literals
//! are skipped, raw strings and escapes are decoded, and both positional
//! arguments and inline `{name}` captures are checked.

use std::path::{Path, PathBuf};

/// What SQL-building `format!`s may interpolate, each with the reason it
/// cannot carry input. Keys are argument expressions with whitespace
/// removed, or inline capture names.
const ALLOWED: &[(&str, &str)] = &[
    (
        "PRESENCE_COLS",
        "a `const &str` column list in src/store/postgres/rows.rs: fixed text",
    ),
    (
        "ROUTES_TOKEN",
        "a `const &str` aggregate expression in src/store/postgres/messages.rs: fixed text",
    ),
    (
        "SKILL_SELECT",
        "a `const &str` SELECT head in src/store/postgres/skills.rs: fixed text",
    ),
    (
        "VAULT_COLS",
        "a `const &str` column list in src/store/postgres/vault.rs: fixed text",
    ),
    (
        "TASK_COLS",
        "a `const &str` column list in src/store/postgres/tasks.rs: fixed text",
    ),
    (
        "DONE_COLS",
        "a `const &str` column list in src/store/postgres/records.rs: fixed text",
    ),
    (
        "RECORD",
        "a `const &str` INSERT … SELECT in src/store/postgres/records.rs: fixed text",
    ),
    (
        "node_channel(ctx.node_id)",
        "`node_<uuid>`: this node's own id as 32 hex digits (src/cluster/bus.rs)",
    ),
    (
        "CLUSTER_CHANNEL",
        "the `const &str` channel name `cluster` (src/cluster/bus.rs)",
    ),
];

/// Keywords that make a template SQL when written in upper case.
const KEYWORDS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "WHERE", "LISTEN", "NOTIFY", "CREATE", "DROP", "ALTER",
    "TRUNCATE", "UNLISTEN",
];

/// Formatting macros and the index of their template argument.
const MACROS: &[(&str, usize)] = &[
    ("format", 0),
    ("format_args", 0),
    ("print", 0),
    ("println", 0),
    ("eprint", 0),
    ("eprintln", 0),
    ("panic", 0),
    ("write", 1),
    ("writeln", 1),
];

/// True when `text` reads as SQL: an upper-case keyword as a whole word,
/// or a lower-case statement shape (`select … from`, `insert into`,
/// `delete from`, `update … set`, `where … = / $n`, `listen`/`notify` first).
fn looks_like_sql(text: &str) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    if words.iter().any(|w| KEYWORDS.contains(w)) {
        return true;
    }
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let has = |w: &str| lower.iter().any(|x| x == w);
    let pair = |a: &str, b: &str| lower.windows(2).any(|p| p[0] == a && p[1] == b);
    let update_set = lower.windows(3).any(|p| p[0] == "update" && p[2] == "set");
    (has("select") && has("from"))
        || pair("insert", "into")
        || pair("delete", "from")
        || update_set
        || (has("where") && (text.contains('=') || text.contains('$')))
        || matches!(lower.first().map(String::as_str), Some("listen" | "notify"))
}

/// One formatting-macro call found in source text.
#[derive(Debug)]
struct FormatCall {
    line: usize,
    template: String,
    /// Everything interpolated: argument expressions (whitespace removed)
    /// and inline captures.
    interpolated: Vec<String>,
}

/// A problem found in one file.
#[derive(Debug, PartialEq)]
struct Violation {
    line: usize,
    what: String,
}

/// `src` with comments blanked out (newlines kept, so line numbers hold)
/// and string/char literal boundaries respected.
fn strip_comments(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if let Some(end) = literal_end(&b, i) {
            out.extend(&b[i..end]);
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a string, byte-string, raw-string or char literal starts at `i`,
/// the index just past it.
fn literal_end(b: &[char], i: usize) -> Option<usize> {
    let prev_ident = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
    let mut j = i;
    if !prev_ident && b[j] == 'b' && matches!(b.get(j + 1), Some('"' | 'r' | '\'')) {
        j += 1;
    }
    if !prev_ident && b[j] == 'r' && matches!(b.get(j + 1), Some('"' | '#')) {
        let mut hashes = 0;
        let mut k = j + 1;
        while b.get(k) == Some(&'#') {
            hashes += 1;
            k += 1;
        }
        if b.get(k) != Some(&'"') {
            return None;
        }
        k += 1;
        while k < b.len() {
            if b[k] == '"' && (0..hashes).all(|h| b.get(k + 1 + h) == Some(&'#')) {
                return Some(k + 1 + hashes);
            }
            k += 1;
        }
        return Some(b.len());
    }
    if b[j] == '"' && (j == i || !prev_ident) {
        let mut k = j + 1;
        while k < b.len() {
            match b[k] {
                '\\' => k += 2,
                '"' => return Some(k + 1),
                _ => k += 1,
            }
        }
        return Some(b.len());
    }
    if b[j] == '\'' {
        // A char literal ('x', '\n', '\u{1F980}'), not a lifetime ('a).
        if b.get(j + 1) == Some(&'\\') {
            // Past the escaped character, which may itself be a quote.
            let mut k = j + 3;
            while k < b.len() && b[k] != '\'' {
                k += 1;
            }
            return Some(k + 1);
        }
        if b.get(j + 2) == Some(&'\'') {
            return Some(j + 3);
        }
    }
    None
}

/// The value of the string literal `lit` (escapes and raw strings
/// decoded), or `None` if it is not a string literal.
fn decode_literal(lit: &str) -> Option<String> {
    let lit = lit.trim();
    let lit = lit.strip_prefix('b').unwrap_or(lit);
    if let Some(raw) = lit.strip_prefix('r') {
        let hashes = raw.chars().take_while(|c| *c == '#').count();
        let inner = raw.get(hashes + 1..raw.len().checked_sub(hashes + 1)?)?;
        return Some(inner.to_string());
    }
    let inner = lit.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).map(char::from).unwrap_or('?'));
            }
            Some('u') => {
                let hex: String = chars
                    .by_ref()
                    .skip_while(|c| *c == '{')
                    .take_while(|c| *c != '}')
                    .collect();
                out.push(
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('?'),
                );
            }
            Some('\n') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Some(out)
}

/// Splits the macro arguments starting at `b[start]`, just after the
/// opening delimiter, up to the matching closing one; returns them as raw
/// text. (The caller keeps scanning inside them: a `format!` nested in an
/// argument is checked too.)
fn split_args(b: &[char], start: usize) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        if let Some(end) = literal_end(b, i) {
            cur.extend(&b[i..end]);
            i = end;
            continue;
        }
        let c = b[i];
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => {
                if !cur.trim().is_empty() {
                    args.push(cur.trim().to_string());
                }
                return args;
            }
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args.push(cur.trim().to_string());
                cur.clear();
                i += 1;
                continue;
            }
            _ => {}
        }
        cur.push(c);
        i += 1;
    }
    args
}

/// Inline captures of a format template: `{name}`, `{name:?}`, … (not
/// positional `{}` / `{0}`, not `{{` escapes).
fn captures(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '{' => {
                let inner: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let arg = inner.split(':').next().unwrap_or("").trim();
                if !arg.is_empty() && !arg.chars().all(|c| c.is_ascii_digit()) {
                    out.push(arg.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// Every formatting-macro call in `src` (comments ignored).
fn format_calls(src: &str) -> Vec<FormatCall> {
    let code = strip_comments(src);
    let b: Vec<char> = code.chars().collect();
    let mut calls = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = literal_end(&b, i) {
            i = end;
            continue;
        }
        let starts_ident = (b[i].is_alphabetic() || b[i] == '_')
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'));
        if !starts_ident {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
            j += 1;
        }
        let ident: String = b[i..j].iter().collect();
        let mut k = j;
        while k < b.len() && b[k].is_whitespace() {
            k += 1;
        }
        let template_at = MACROS.iter().find(|(m, _)| *m == ident).map(|(_, t)| *t);
        if let (Some(template_at), Some('!')) = (template_at, b.get(k)) {
            k += 1;
            while k < b.len() && b[k].is_whitespace() {
                k += 1;
            }
            if matches!(b.get(k), Some('(' | '[' | '{')) {
                let line = b[..i].iter().filter(|c| **c == '\n').count() + 1;
                let args = split_args(&b, k + 1);
                if let Some(template) = args.get(template_at).and_then(|a| decode_literal(a)) {
                    let mut interpolated: Vec<String> = args[template_at + 1..]
                        .iter()
                        .map(|a| {
                            // `name = expr`: the value is what goes in.
                            let a = match a.split_once('=') {
                                Some((name, expr))
                                    if !expr.starts_with('=')
                                        && name
                                            .trim()
                                            .chars()
                                            .all(|c| c.is_alphanumeric() || c == '_') =>
                                {
                                    expr
                                }
                                _ => a.as_str(),
                            };
                            a.chars().filter(|c| !c.is_whitespace()).collect()
                        })
                        .collect();
                    let named: Vec<String> = args[template_at + 1..]
                        .iter()
                        .filter_map(|a| a.split_once('=').map(|(n, _)| n.trim().to_string()))
                        .collect();
                    interpolated.extend(
                        captures(&template)
                            .into_iter()
                            .filter(|c| !named.contains(c)),
                    );
                    calls.push(FormatCall {
                        line,
                        template,
                        interpolated,
                    });
                }
                i = k + 1;
                continue;
            }
        }
        i = j;
    }
    calls
}

/// SQL text glued to something with `+`, `+=` or `push_str`: the other
/// way to build SQL from values.
fn concatenations(src: &str) -> Vec<Violation> {
    let code = strip_comments(src);
    let b: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let Some(end) = literal_end(&b, i) else {
            i += 1;
            continue;
        };
        let lit: String = b[i..end].iter().collect();
        if decode_literal(&lit).is_some_and(|t| looks_like_sql(&t)) {
            let before: String = b[..i].iter().collect();
            let before = before.trim_end();
            let after: String = b[end..(end + 40).min(b.len())].iter().collect();
            let after = after.trim_start();
            let after = after
                .strip_prefix(".to_string()")
                .or_else(|| after.strip_prefix(".to_owned()"))
                .unwrap_or(after)
                .trim_start();
            let glued = before.ends_with("push_str(")
                || before.ends_with('+')
                || before.ends_with("+=")
                || (after.starts_with('+') && !after.starts_with("+="));
            if glued {
                let line = b[..i].iter().filter(|c| **c == '\n').count() + 1;
                found.push(Violation {
                    line,
                    what: format!("SQL text concatenated with a value: {lit}"),
                });
            }
        }
        i = end;
    }
    found
}

/// Everything wrong in one file's text, and the allow-list keys it used.
fn check(src: &str) -> (Vec<Violation>, Vec<String>) {
    let mut violations = concatenations(src);
    let mut used = Vec::new();
    for call in format_calls(src) {
        if !looks_like_sql(&call.template) {
            continue;
        }
        for name in &call.interpolated {
            if ALLOWED.iter().any(|(k, _)| k == name) {
                used.push(name.clone());
            } else {
                violations.push(Violation {
                    line: call.line,
                    what: format!(
                        "SQL template interpolates `{name}`, which is not on the allow-list \
                         (pass values as $n parameters): {:?}",
                        call.template
                    ),
                });
            }
        }
    }
    (violations, used)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn source(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn sql_is_built_from_parameters_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(files.len() > 20, "found the sources: {files:?}");
    let mut problems = Vec::new();
    let mut used = Vec::new();
    let mut sql_calls = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        sql_calls += format_calls(&text)
            .iter()
            .filter(|c| looks_like_sql(&c.template))
            .count();
        let (violations, names) = check(&text);
        used.extend(names);
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        for v in violations {
            problems.push(format!("{rel}:{}: {}", v.line, v.what));
        }
    }
    assert!(
        problems.is_empty(),
        "SQL built from non-constant values:\n{}",
        problems.join("\n")
    );
    assert!(
        sql_calls > 0,
        "the scanner found no SQL format! at all: it is broken"
    );
    for (name, why) in ALLOWED {
        assert!(
            used.iter().any(|u| u == name),
            "allow-list entry `{name}` ({why}) is no longer used: remove it"
        );
    }
}

/// The allow-list's reasons still hold: the constants are literals, and
/// the channel name is made from a Uuid only.
#[test]
fn allow_list_reasons_still_hold() {
    let rows = source("src/store/postgres/rows.rs");
    assert!(
        rows.contains("pub const PRESENCE_COLS: &str = \""),
        "PRESENCE_COLS is a string constant"
    );
    let messages = source("src/store/postgres/messages.rs");
    assert!(
        messages.contains("pub(super) const ROUTES_TOKEN: &str =\n    \"md5("),
        "ROUTES_TOKEN is a string constant"
    );
    let records = source("src/store/postgres/records.rs");
    assert!(
        records.contains("const DONE_COLS: &str = \"d.message_id,"),
        "DONE_COLS is a string constant"
    );
    assert!(
        records.contains("const RECORD: &str = \"\nINSERT INTO delivery_record"),
        "RECORD is a string constant"
    );
    assert!(
        source("src/store/postgres/tasks.rs").contains("const TASK_COLS: &str = \"id, mesh_id,"),
        "TASK_COLS is a string constant"
    );
    assert!(
        source("src/store/postgres/skills.rs")
            .contains("const SKILL_SELECT: &str = \"SELECT mesh_id, name,"),
        "SKILL_SELECT is a string constant"
    );
    assert!(
        source("src/store/postgres/vault.rs")
            .contains("const VAULT_COLS: &str = \"mesh_id, member_id, key,"),
        "VAULT_COLS is a string constant"
    );
    let bus = source("src/cluster/bus.rs");
    assert!(
        bus.contains("pub const CLUSTER_CHANNEL: &str = \"cluster\";"),
        "CLUSTER_CHANNEL is the constant `cluster`"
    );
    assert!(
        bus.contains(
            "pub fn node_channel(id: Uuid) -> String {\n    format!(\"node_{}\", id.simple())\n}"
        ),
        "node_channel formats a Uuid (hex digits) and nothing else"
    );
}

#[test]
fn the_scanner_catches_interpolated_values() {
    let bad = [
        r#"let q = format!("SELECT * FROM t WHERE x = '{user}'");"#,
        r#"let q = format!("DELETE FROM t WHERE id = {}", id);"#,
        r#"let q = format!("DELETE FROM t WHERE id = {0}", req.id);"#,
        r#"let q = format!("select * from t where name = '{}'", name);"#,
        r#"let q = format!("UPDATE t SET a = {v:?} WHERE id = $1");"#,
        r#"write!(buf, "INSERT INTO t VALUES ({})", value).unwrap();"#,
        r##"let q = format!(r#"SELECT "a" FROM t WHERE b = {b}"#);"##,
        r#"let q = format!("LISTEN \"{}\"", channel);"#,
        r#"let q = format!("SELECT {PRESENCE_COLS} FROM p WHERE id = {x}", x = input);"#,
        r#"let q = format!(
            "SELECT {PRESENCE_COLS} FROM presence
             WHERE mesh_id = '{mesh_id}'"
        );"#,
        r#"let q = "SELECT * FROM t WHERE a = '".to_string() + &user;"#,
        r#"sql.push_str("WHERE a = "); sql.push_str(&user);"#,
        r#"let m = format!("{}", format!("SELECT * FROM t WHERE a = {}", a));"#,
    ];
    for snippet in bad {
        let (violations, _) = check(snippet);
        assert!(!violations.is_empty(), "missed: {snippet}");
    }
    let (v, _) = check(r#"let q = format!("SELECT * FROM t WHERE x = '{user}'");"#);
    assert!(v[0].what.contains("`user`"), "{v:?}");
}

#[test]
fn the_scanner_leaves_safe_code_alone() {
    let good = [
        r#"let q = format!("SELECT {PRESENCE_COLS} FROM presence WHERE id = $1");"#,
        r#"let l = format!("LISTEN \"{}\"; LISTEN \"{}\"", node_channel(ctx.node_id), CLUSTER_CHANNEL);"#,
        r#"let m = format!("mesh {slug} has {n} members");"#,
        r#"let m = format!("`{name}` is over {max} characters");"#,
        r#"// let q = format!("SELECT * FROM t WHERE x = '{user}'");"#,
        r#"/* format!("DELETE FROM t WHERE id = {}", id) */"#,
        r#"let doc = "format!(\"SELECT {user} FROM t\")";"#,
        r#"c.query("SELECT id FROM t WHERE a = $1", &[&user]).await;"#,
        r#"let s = format!("{{SELECT}} WHERE {{x}}");"#,
        r#"fn f<'a>(x: &'a str) -> char { let c = '"'; format!("{x}"); c }"#,
        r#"let q = '\''; let s = format!("DELETE FROM t WHERE id = $1");"#,
    ];
    for snippet in good {
        let (violations, _) = check(snippet);
        assert!(violations.is_empty(), "{snippet}: {violations:?}");
    }
}
