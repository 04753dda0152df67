//! Full-text search for memory mode, as close to Postgres' `english`
//! configuration as memory mode needs (PROTOCOL-MESH.md §2): lower-case
//! alphanumeric runs, Postgres' English stop words dropped (their
//! positions kept, as `to_tsvector` keeps them), Snowball English stems
//! (Postgres' `english_stem`), and `websearch_to_tsquery` syntax: every
//! word, `"quoted phrases"`, `or`, `-word`.

use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

/// Postgres' `tsearch_data/english.stop`, in its order.
const STOP_WORDS: [&str; 127] = [
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "should",
    "now",
];

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// A text's words in order: `(position, stem)`, stop words skipped but
/// counted, as `to_tsvector('english', …)` positions them.
pub fn lexemes(text: &str) -> Vec<(usize, String)> {
    words(text)
        .enumerate()
        .filter_map(|(i, w)| lexeme(&w).map(|l| (i, l)))
        .collect()
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn lexeme(word: &str) -> Option<String> {
    if STOP_WORDS.contains(&word) {
        return None;
    }
    Some(STEMMER.stem(word).into_owned())
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Stems at these offsets from the first (one stem: a plain term).
    Phrase(Vec<(usize, String)>),
    Not(Box<Query>),
    All(Vec<Query>),
    Any(Vec<Query>),
}

/// Parses `websearch_to_tsquery` syntax; `None` when nothing is left to
/// search for (empty, or only stop words).
pub fn parse(q: &str) -> Option<Query> {
    // Items in order: (negated, phrase) or an `or`.
    enum Item {
        Or,
        Term(bool, Vec<(usize, String)>),
    }
    let mut items = Vec::new();
    let mut rest = q;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        rest = &rest[start..];
        let (negated, body) = match rest.strip_prefix('-') {
            Some(b) if b.starts_with(|c: char| c == '"' || c.is_alphanumeric()) => (true, b),
            _ => (false, rest),
        };
        let (chunk, after) = if let Some(inner) = body.strip_prefix('"') {
            let end = inner.find('"').unwrap_or(inner.len());
            (&inner[..end], inner.get(end + 1..).unwrap_or(""))
        } else {
            let end = body.find(char::is_whitespace).unwrap_or(body.len());
            (&body[..end], &body[end..])
        };
        rest = after;
        if !negated && chunk.eq_ignore_ascii_case("or") && !body.starts_with('"') {
            items.push(Item::Or);
            continue;
        }
        let mut stems = Vec::new();
        let mut first = None;
        for (i, w) in words(chunk).enumerate() {
            if let Some(l) = lexeme(&w) {
                let base = *first.get_or_insert(i);
                stems.push((i - base, l));
            }
        }
        if !stems.is_empty() {
            items.push(Item::Term(negated, stems));
        }
    }
    // `&` binds tighter than `|`: the `or`s split the items into groups.
    let mut groups: Vec<Vec<Query>> = vec![Vec::new()];
    for item in items {
        match item {
            Item::Or => groups.push(Vec::new()),
            Item::Term(negated, stems) => {
                let phrase = Query::Phrase(stems);
                let q = if negated {
                    Query::Not(Box::new(phrase))
                } else {
                    phrase
                };
                groups.last_mut().expect("one group at least").push(q);
            }
        }
    }
    let mut alternatives: Vec<Query> = groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|mut g| {
            if g.len() == 1 {
                g.pop().expect("one")
            } else {
                Query::All(g)
            }
        })
        .collect();
    match alternatives.len() {
        0 => None,
        1 => alternatives.pop(),
        _ => Some(Query::Any(alternatives)),
    }
}

/// How well `doc` (its [`lexemes`]) matches: `None` when it does not, else
/// the number of matched term occurrences (the rank).
pub fn score(q: &Query, doc: &[(usize, String)]) -> Option<usize> {
    match q {
        Query::Phrase(stems) => {
            let (_, first) = &stems[0];
            let hits = doc
                .iter()
                .filter(|(p, l)| {
                    l == first
                        && stems[1..]
                            .iter()
                            .all(|(off, s)| doc.iter().any(|(q, m)| *q == p + off && m == s))
                })
                .count();
            (hits > 0).then_some(hits * stems.len())
        }
        Query::Not(inner) => match score(inner, doc) {
            Some(_) => None,
            None => Some(0),
        },
        Query::All(qs) => qs.iter().map(|q| score(q, doc)).sum(),
        Query::Any(qs) => {
            let matched: Vec<usize> = qs.iter().filter_map(|q| score(q, doc)).collect();
            (!matched.is_empty()).then(|| matched.iter().sum())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(q: &str, text: &str) -> bool {
        parse(q).is_some_and(|q| score(&q, &lexemes(text)).is_some())
    }

    #[test]
    fn words_are_stemmed_and_stop_words_dropped() {
        let l = lexemes("The Staging DB is reset every Sunday");
        let stems: Vec<&str> = l.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(stems, ["stage", "db", "reset", "everi", "sunday"]);
        assert_eq!(l[0].0, 1, "`the` keeps its position");
        assert!(parse("the and of").is_none());
        assert!(parse("   ").is_none());
    }

    #[test]
    fn websearch_syntax() {
        let text = "Staging DB is reset every Sunday 02:00 UTC";
        assert!(matches("staging reset", text));
        assert!(matches("STAGED resets", text), "stems match");
        assert!(!matches("staging production", text), "every word");
        assert!(matches("production or sunday", text));
        assert!(matches("staging -production", text));
        assert!(!matches("staging -sunday", text));
        assert!(matches("\"reset every sunday\"", text));
        assert!(!matches("\"sunday reset\"", text), "in order");
        assert!(
            matches("\"db is reset\"", text),
            "a stop word keeps its place"
        );
        assert!(!matches("\"db reset\"", text), "so these are not adjacent");
        assert!(!matches("\"staging reset\"", text), "not adjacent");
        assert!(matches("02:00", text));
        assert!(matches("-\"monday\"", text));
        assert!(matches("\"unterminated sunday", "unterminated sunday"));
    }

    #[test]
    fn rank_counts_matched_occurrences() {
        let q = parse("deploy").unwrap();
        assert_eq!(score(&q, &lexemes("deploy deploys deployed")), Some(3));
        assert_eq!(score(&q, &lexemes("one deploy")), Some(1));
        assert_eq!(score(&q, &lexemes("nothing")), None);
    }
}
