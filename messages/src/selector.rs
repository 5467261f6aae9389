//! Label selectors as in Kubernetes: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
//!
//! A selector is a conjunction of requirements; the empty selector matches everything.

use crate::quantity::shown;
use crate::validate::{check_label_key, check_label_value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The syntax shown in error messages.
pub const SELECTOR_SYNTAX: &str = "k=v,k!=v,k in (a,b),k notin (a),k,!k";

/// Why a selector or requirement could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad label selector part {part}: {problem}; expected {SELECTOR_SYNTAX}")]
pub struct SelectorError {
    /// The offending requirement, quoted.
    pub part: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What a requirement demands of a label's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `k=v` or `k==v`: the label is present and equal to the value.
    Equals(String),
    /// `k!=v`: the label is absent or has another value.
    NotEquals(String),
    /// `k in (a,b)`: the label is present with one of the values.
    In(BTreeSet<String>),
    /// `k notin (a,b)`: the label is absent or has none of the values.
    NotIn(BTreeSet<String>),
    /// `k`: the label is present.
    Exists,
    /// `!k`: the label is absent.
    DoesNotExist,
}

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The condition.
    pub op: Operator,
}

impl Requirement {
    /// Parses exactly one requirement, e.g. `zone in (a,b)` (as in a task's `nodeAffinity`).
    pub fn parse(s: &str) -> Result<Requirement, SelectorError> {
        let mut p = Parser::new(s);
        p.skip_ws();
        if p.at_end() {
            return Err(p.error(0, "empty requirement".to_string()));
        }
        let r = p.requirement()?;
        p.skip_ws();
        if !p.at_end() {
            return Err(p.error(
                0,
                format!(
                    "unexpected {} after the requirement: write one requirement only",
                    shown(p.rest())
                ),
            ));
        }
        Ok(r)
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::Equals(v) => value == Some(v),
            Operator::NotEquals(v) => value != Some(v),
            Operator::In(set) => value.is_some_and(|x| set.contains(x)),
            Operator::NotIn(set) => !value.is_some_and(|x| set.contains(x)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.op {
            Operator::Equals(v) => write!(f, "{}={v}", self.key),
            Operator::NotEquals(v) => write!(f, "{}!={v}", self.key),
            Operator::In(set) => write!(f, "{} in ({})", self.key, list(set)),
            Operator::NotIn(set) => write!(f, "{} notin ({})", self.key, list(set)),
            Operator::Exists => f.write_str(&self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

impl std::str::FromStr for Requirement {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Requirement::parse(s)
    }
}

/// A label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h` (`==` is accepted for `=`). Whitespace
    /// around tokens is ignored; the empty string is the empty selector. Keys and values must
    /// be valid label keys and values; `in`/`notin` need at least one value.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser::new(s);
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.at_end() {
            return Ok(Selector::default());
        }
        loop {
            p.skip_ws();
            let start = p.pos;
            if p.at_end() || p.peek() == Some(',') {
                return Err(p.error(
                    start,
                    "empty requirement (two commas or a trailing comma)".into(),
                ));
            }
            requirements.push(p.requirement()?);
            p.skip_ws();
            match p.peek() {
                None => break,
                Some(',') => p.bump(),
                Some(_) => {
                    return Err(p.error(
                        start,
                        format!(
                            "unexpected {}: separate requirements with commas",
                            shown(p.rest())
                        ),
                    ))
                }
            }
        }
        Ok(Selector { requirements })
    }

    /// A selector requiring each label of `labels` to equal its value. Keys and values are not
    /// checked: invalid ones make a selector whose text form does not parse back.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Selector {
        Selector {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Operator::Equals(v.clone()),
                })
                .collect(),
        }
    }

    /// A selector of the given requirements (for example a task's node selector plus its
    /// parsed node affinity).
    pub fn from_requirements(requirements: impl IntoIterator<Item = Requirement>) -> Selector {
        Selector {
            requirements: requirements.into_iter().collect(),
        }
    }

    /// Whether the selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// A cursor over the selector text.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

/// Characters that end a key or value.
fn is_special(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '=' | '!' | '(' | ')')
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// A run of non-special characters (possibly empty).
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| !is_special(c)) {
            self.bump();
        }
        &self.src[start..self.pos]
    }

    /// An error about the requirement starting at byte `start`: the part shown runs to the
    /// next comma outside parentheses.
    fn error(&self, start: usize, problem: String) -> SelectorError {
        let mut depth = 0i32;
        let mut end = self.src.len();
        for (i, c) in self.src[start..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth <= 0 && start + i >= self.pos => {
                    end = start + i;
                    break;
                }
                _ => {}
            }
        }
        SelectorError {
            part: shown(self.src[start..end].trim()),
            problem,
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('!') {
            self.bump();
            self.skip_ws();
            let key = self.key(start)?;
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
            });
        }
        let key = self.key(start)?;
        self.skip_ws();
        let op = match self.peek() {
            None | Some(',') => Operator::Exists,
            Some('=') => {
                self.bump();
                if self.peek() == Some('=') {
                    self.bump();
                }
                Operator::Equals(self.value(start)?)
            }
            Some('!') => {
                self.bump();
                if self.peek() != Some('=') {
                    return Err(self.error(start, "`!` after a key must be `!=`".into()));
                }
                self.bump();
                Operator::NotEquals(self.value(start)?)
            }
            Some(_) => {
                let word_start = self.pos;
                match self.word() {
                    "in" => Operator::In(self.values(start)?),
                    "notin" => Operator::NotIn(self.values(start)?),
                    _ => {
                        self.pos = word_start;
                        return Err(self.error(
                            start,
                            format!(
                                "expected `=`, `==`, `!=`, `in`, `notin`, `,` or the end after key {}, found {}",
                                shown(&key),
                                shown(self.rest())
                            ),
                        ));
                    }
                }
            }
        };
        Ok(Requirement { key, op })
    }

    fn key(&mut self, start: usize) -> Result<String, SelectorError> {
        let key = self.word();
        if key.is_empty() {
            let problem = match self.peek() {
                Some(c) => format!("expected a label key, found {}", shown(&c.to_string())),
                None => "expected a label key".to_string(),
            };
            return Err(self.error(start, problem));
        }
        check_label_key(key).map_err(|m| self.error(start, format!("key {m}")))?;
        Ok(key.to_string())
    }

    /// The value after `=` or `!=` (may be empty).
    fn value(&mut self, start: usize) -> Result<String, SelectorError> {
        self.skip_ws();
        let v = self.word();
        check_label_value(v).map_err(|m| self.error(start, format!("value {m}")))?;
        Ok(v.to_string())
    }

    /// `( v1, v2, ... )` after `in` or `notin`.
    fn values(&mut self, start: usize) -> Result<BTreeSet<String>, SelectorError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error(start, "expected `(` after `in`/`notin`".into()));
        }
        self.bump();
        let mut set = BTreeSet::new();
        loop {
            self.skip_ws();
            let v = self.word();
            if v.is_empty() {
                return Err(self.error(
                    start,
                    "expected a value in the list: write `(a,b)` with at least one value".into(),
                ));
            }
            check_label_value(v).map_err(|m| self.error(start, format!("value {m}")))?;
            set.insert(v.to_string());
            self.skip_ws();
            match self.peek() {
                Some(',') => self.bump(),
                Some(')') => {
                    self.bump();
                    return Ok(set);
                }
                _ => return Err(self.error(start, "expected `,` or `)` in the value list".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = Selector::parse("a=b,c!=d,e in (x,y),f notin (z),g,!h").unwrap();
        let ops: Vec<_> = s.requirements().iter().map(|r| r.op.clone()).collect();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            ops,
            vec![
                Operator::Equals("b".into()),
                Operator::NotEquals("d".into()),
                Operator::In(set(&["x", "y"])),
                Operator::NotIn(set(&["z"])),
                Operator::Exists,
                Operator::DoesNotExist,
            ]
        );
        assert_eq!(s.to_string(), "a=b,c!=d,e in (x,y),f notin (z),g,!h");
        assert_eq!(
            Selector::parse(" a == b , e in( y , x ) ,! h, k=")
                .unwrap()
                .to_string(),
            "a=b,e in (x,y),!h,k="
        );
        let prefixed = Selector::parse("example.com/app=web,voiyd.io/zone in (a)").unwrap();
        assert_eq!(prefixed.requirements()[0].key, "example.com/app");
    }

    #[test]
    fn matching() {
        let l = labels(&[("a", "b"), ("e", "x"), ("g", "1")]);
        let yes = [
            "",
            "a=b",
            "a==b",
            "a!=c",
            "zz!=c",
            "e in (x,y)",
            "e notin (y)",
            "zz notin (y)",
            "g",
            "!h",
            "a=b,c!=d,e in (x,y),f notin (z),g,!h",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        let no = [
            "a=c",
            "zz=b",
            "a!=b",
            "e in (y)",
            "zz in (x)",
            "e notin (x)",
            "h",
            "!g",
            "a=b,h",
        ];
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        let empty_value = labels(&[("k", "")]);
        assert!(Selector::parse("k=").unwrap().matches(&empty_value));
        assert!(!Selector::parse("k=").unwrap().matches(&BTreeMap::new()));
    }

    #[test]
    fn from_map_and_empty() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let s = Selector::from_map(&l);
        assert_eq!(s.to_string(), "app=web,tier=front");
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
        assert!(Selector::from_map(&BTreeMap::new()).is_empty());
        assert!(Selector::parse("  ").unwrap().is_empty());
        assert!(!s.is_empty());
        assert!(Selector::default().matches(&l));
    }

    #[test]
    fn errors_name_the_part_and_syntax() {
        let e = Selector::parse("a=b,c in x,d").unwrap_err();
        assert_eq!(e.part, "\"c in x\"");
        assert_eq!(
            e.to_string(),
            "bad label selector part \"c in x\": expected `(` after `in`/`notin`; expected k=v,k!=v,k in (a,b),k notin (a),k,!k"
        );
        let cases = [
            ("a=b,", "empty requirement"),
            (",a", "empty requirement"),
            ("a=b,,c", "empty requirement"),
            ("a in ()", "at least one value"),
            ("a in (x,)", "at least one value"),
            ("a in (x", "expected `,` or `)`"),
            ("a in (x y)", "expected `,` or `)`"),
            ("a !x", "`!=`"),
            ("a b", "expected `=`"),
            ("a=b c", "separate requirements with commas"),
            ("=b", "expected a label key"),
            ("!", "expected a label key"),
            ("a b=c", "expected `=`"),
            ("a=-b", "value"),
            ("-a=b", "key"),
            ("a=b=c", "separate requirements"),
            ("a in (x))", "separate requirements"),
            ("Bad.Prefix/a=b", "key"),
        ];
        for (s, want) in cases {
            let e = Selector::parse(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
            assert!(!e.contains('\n'));
        }
        let long = format!("a={}", "x".repeat(64));
        assert!(Selector::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("63"));
    }

    #[test]
    fn single_requirement() {
        let r = Requirement::parse(" zone in (a, b) ").unwrap();
        assert_eq!(r.to_string(), "zone in (a,b)");
        assert!(r.matches(&labels(&[("zone", "b")])));
        assert!(Requirement::parse("a,b").is_err());
        assert!(Requirement::parse("").is_err());
        assert_eq!(
            "!gpu".parse::<Requirement>().unwrap().op,
            Operator::DoesNotExist
        );
        let s = Selector::from_requirements([r.clone(), "x".parse().unwrap()]);
        assert_eq!(s.to_string(), "zone in (a,b),x");
    }
}
