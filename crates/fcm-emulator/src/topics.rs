//! Topic names and the conditions of the send API (docs/protocol.md §7.1, §7.5): a
//! small parser for `'a' in topics && ('b' in topics || !('c' in topics))`.
//!
//! Pure functions on text; uses nothing else of the crate. No input makes it panic: the
//! nesting depth is bounded, so a hostile condition cannot exhaust the stack.

use std::collections::BTreeSet;

use thiserror::Error;

/// The most distinct topics a condition may name (docs/protocol.md §7.5).
pub const MAX_CONDITION_TOPICS: usize = 5;
/// The longest topic name (docs/protocol.md §7.1).
pub const MAX_TOPIC_LEN: usize = 900;
/// The deepest nesting of parentheses and `!` a condition may have.
const MAX_DEPTH: usize = 64;

/// Whether `name` is a valid topic name: `[a-zA-Z0-9-_.~%]{1,900}` (docs/protocol.md
/// §7.1), without the `/topics/` prefix.
pub fn is_valid_topic_name(name: &str) -> bool {
    (1..=MAX_TOPIC_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%'))
}

/// Why a condition of the send API was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConditionError {
    /// The condition is empty or only whitespace.
    #[error("the condition is empty")]
    Empty,
    /// A character that starts no token of the grammar.
    #[error("unexpected character {found:?} at byte {at}")]
    UnexpectedChar {
        /// The character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// A quoted topic name without its closing quote.
    #[error("unterminated topic name starting at byte {at}")]
    UnterminatedString {
        /// The byte offset of the opening quote.
        at: usize,
    },
    /// A token where the grammar expects something else.
    #[error("expected {expected} at byte {at}, found {found}")]
    Unexpected {
        /// What the grammar expects there.
        expected: &'static str,
        /// What was found.
        found: String,
        /// Its byte offset.
        at: usize,
    },
    /// The condition ends where the grammar expects more.
    #[error("the condition ends early: expected {expected}")]
    UnexpectedEnd {
        /// What the grammar expects.
        expected: &'static str,
    },
    /// A topic name that does not match `[a-zA-Z0-9-_.~%]{1,900}`.
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// More than [`MAX_CONDITION_TOPICS`] distinct topics.
    #[error("the condition names {0} topics, at most {MAX_CONDITION_TOPICS} are allowed")]
    TooManyTopics(usize),
    /// Parentheses or `!` nested deeper than the parser allows.
    #[error("the condition is nested too deeply")]
    TooDeep,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Condition {
    /// `'<topic>' in topics`.
    Topic(String),
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

impl Condition {
    /// Whether a registration subscribed to the topics `subscribed` says yes to it.
    pub(crate) fn matches(&self, subscribed: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Self::Topic(topic) => subscribed(topic),
            Self::Not(inner) => !inner.matches(subscribed),
            Self::And(a, b) => a.matches(subscribed) && b.matches(subscribed),
            Self::Or(a, b) => a.matches(subscribed) || b.matches(subscribed),
        }
    }

    /// The distinct topics it names.
    pub(crate) fn topics(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            match node {
                Self::Topic(topic) => {
                    out.insert(topic.as_str());
                }
                Self::Not(inner) => stack.push(inner),
                Self::And(a, b) | Self::Or(a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Not,
    And,
    Or,
    Name(String),
    Word(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Self::Open => "'('".to_owned(),
            Self::Close => "')'".to_owned(),
            Self::Not => "'!'".to_owned(),
            Self::And => "'&&'".to_owned(),
            Self::Or => "'||'".to_owned(),
            Self::Name(name) => format!("topic name {name:?}"),
            Self::Word(word) => format!("{word:?}"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ConditionError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '(' => Token::Open,
            ')' => Token::Close,
            '!' => Token::Not,
            '&' | '|' => {
                if chars.next_if(|&(_, next)| next == c).is_none() {
                    return Err(ConditionError::UnexpectedChar { found: c, at });
                }
                if c == '&' { Token::And } else { Token::Or }
            }
            '\'' | '"' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some((_, end)) if end == c => break,
                        Some((_, other)) => name.push(other),
                        None => return Err(ConditionError::UnterminatedString { at }),
                    }
                }
                Token::Name(name)
            }
            c if c.is_ascii_alphabetic() => {
                let mut word = String::from(c);
                while let Some((_, next)) = chars.next_if(|(_, n)| n.is_ascii_alphanumeric()) {
                    word.push(next);
                }
                Token::Word(word)
            }
            other => return Err(ConditionError::UnexpectedChar { found: other, at }),
        };
        tokens.push((at, token));
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn next(&mut self, expected: &'static str) -> Result<(usize, Token), ConditionError> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or(ConditionError::UnexpectedEnd { expected })?;
        self.pos += 1;
        Ok(token)
    }

    fn enter(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ConditionError::TooDeep);
        }
        Ok(())
    }

    /// or := and ('||' and)*
    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// and := unary ('&&' unary)*
    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            let right = self.unary()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// unary := '!' unary | '(' or ')' | NAME 'in' 'topics'
    fn unary(&mut self) -> Result<Condition, ConditionError> {
        const OPERAND: &str = "a topic test, '(' or '!'";
        self.enter()?;
        let (at, token) = self.next(OPERAND)?;
        let out = match token {
            Token::Not => Condition::Not(Box::new(self.unary()?)),
            Token::Open => {
                let inner = self.or()?;
                match self.next("')'")? {
                    (_, Token::Close) => inner,
                    (at, other) => {
                        return Err(ConditionError::Unexpected {
                            expected: "')'",
                            found: other.describe(),
                            at,
                        });
                    }
                }
            }
            Token::Name(name) => {
                self.word("in")?;
                self.word("topics")?;
                if !is_valid_topic_name(&name) {
                    return Err(ConditionError::InvalidTopic(name));
                }
                Condition::Topic(name)
            }
            other => {
                return Err(ConditionError::Unexpected {
                    expected: OPERAND,
                    found: other.describe(),
                    at,
                });
            }
        };
        self.depth -= 1;
        Ok(out)
    }

    fn word(&mut self, word: &'static str) -> Result<(), ConditionError> {
        match self.next(word)? {
            (_, Token::Word(w)) if w == word => Ok(()),
            (at, other) => Err(ConditionError::Unexpected {
                expected: word,
                found: other.describe(),
                at,
            }),
        }
    }
}

/// Parses a send API condition (docs/protocol.md §7.5): topic tests
/// `'<name>' in topics` (single or double quotes) combined with `&&`, `||`, `!` and
/// parentheses, `!` binding tightest and `||` loosest, naming at most
/// [`MAX_CONDITION_TOPICS`] distinct topics.
pub(crate) fn parse_condition(text: &str) -> Result<Condition, ConditionError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(ConditionError::Empty);
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let condition = parser.or()?;
    if let Some((at, token)) = parser.tokens.get(parser.pos) {
        return Err(ConditionError::Unexpected {
            expected: "'&&', '||' or the end",
            found: token.describe(),
            at: *at,
        });
    }
    let count = condition.topics().len();
    if count > MAX_CONDITION_TOPICS {
        return Err(ConditionError::TooManyTopics(count));
    }
    Ok(condition)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn eval(text: &str, subscribed: &[&str]) -> bool {
        parse_condition(text)
            .unwrap()
            .matches(&|t| subscribed.contains(&t))
    }

    #[test]
    fn topic_names() {
        assert!(is_valid_topic_name("news-1_a.b~c%20"));
        assert!(is_valid_topic_name(&"a".repeat(900)));
        assert!(!is_valid_topic_name(&"a".repeat(901)));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("a b"));
        assert!(!is_valid_topic_name("/topics/a"));
    }

    #[test]
    fn precedence_and_grouping() {
        let c = "'a' in topics && ('b' in topics || 'c' in topics)";
        assert!(eval(c, &["a", "b"]));
        assert!(eval(c, &["a", "c"]));
        assert!(!eval(c, &["a"]));
        assert!(!eval(c, &["b", "c"]));
        // && binds tighter than ||.
        assert!(eval(
            "'a' in topics || 'b' in topics && 'c' in topics",
            &["a"]
        ));
        assert!(!eval(
            "'a' in topics || 'b' in topics && 'c' in topics",
            &["b"]
        ));
        assert!(eval("!('a' in topics) && \"b\" in topics", &["b"]));
        assert!(!eval("!'a' in topics", &["a"]));
        assert!(eval("!!'a' in topics", &["a"]));
    }

    #[test]
    fn errors() {
        use ConditionError as E;
        assert_eq!(parse_condition("  "), Err(E::Empty));
        assert!(matches!(
            parse_condition("'a' in topics & 'b' in topics"),
            Err(E::UnexpectedChar { found: '&', .. })
        ));
        assert!(matches!(
            parse_condition("'a in topics"),
            Err(E::UnterminatedString { at: 0 })
        ));
        assert!(matches!(
            parse_condition("'a' in topics)"),
            Err(E::Unexpected { .. })
        ));
        assert!(matches!(
            parse_condition("('a' in topics"),
            Err(E::UnexpectedEnd { .. })
        ));
        assert!(matches!(
            parse_condition("'a' in topic"),
            Err(E::Unexpected { .. })
        ));
        assert_eq!(
            parse_condition("'a b' in topics"),
            Err(E::InvalidTopic("a b".into()))
        );
        let six = (0..6)
            .map(|i| format!("'t{i}' in topics"))
            .collect::<Vec<_>>()
            .join(" || ");
        assert_eq!(parse_condition(&six), Err(E::TooManyTopics(6)));
        // The same topic named six times is one topic.
        let same = ["'t' in topics"; 6].join(" && ");
        assert!(parse_condition(&same).is_ok());
        assert_eq!(
            parse_condition(&format!("{}'a' in topics", "(".repeat(10_000))),
            Err(E::TooDeep)
        );
        assert_eq!(
            parse_condition(&format!("{}'a' in topics", "!".repeat(10_000))),
            Err(E::TooDeep)
        );
    }

    /// Conditions built from a tree, with their expected value computed from the tree.
    fn tree() -> impl Strategy<Value = Condition> {
        let leaf = prop::sample::select(vec!["a", "b", "c", "d", "e"])
            .prop_map(|t| Condition::Topic(t.to_owned()));
        leaf.prop_recursive(6, 40, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|c| Condition::Not(Box::new(c))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Condition::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Condition::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    /// Fully parenthesized text of a tree.
    fn render(c: &Condition) -> String {
        match c {
            Condition::Topic(t) => format!("'{t}' in topics"),
            Condition::Not(inner) => format!("!({})", render(inner)),
            Condition::And(a, b) => format!("({}) && ({})", render(a), render(b)),
            Condition::Or(a, b) => format!("({}) || ({})", render(a), render(b)),
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,200}") {
            let _ = parse_condition(&text);
        }

        #[test]
        fn never_panics_on_grammar_soup(
            parts in prop::collection::vec(
                prop::sample::select(vec![
                    "(", ")", "!", "&&", "||", "'a'", "\"b\"", "in", "topics", " ", "&", "'",
                ]),
                0..60,
            )
        ) {
            let _ = parse_condition(&parts.concat());
        }

        #[test]
        fn parses_what_it_renders(tree in tree(), mask in 0u8..32) {
            let text = render(&tree);
            let parsed = parse_condition(&text).unwrap();
            let subscribed = |t: &str| {
                let bit = u32::from(t.as_bytes()[0] - b'a');
                mask & (1 << bit) != 0
            };
            prop_assert_eq!(parsed.matches(&subscribed), tree.matches(&subscribed));
            prop_assert_eq!(parsed, tree);
        }
    }
}
