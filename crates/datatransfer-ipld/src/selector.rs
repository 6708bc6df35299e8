//! IPLD selectors (ipld/ipld `specs/selectors`), parsed from their serial form and evaluated
//! the way go-ipld-prime's `traversal/selector` package does.
//!
//! A selector is a small tree of clauses keyed by single letters: `.` matcher, `a` explore
//! all, `f` explore fields, `i` explore index, `r` explore range, `|` union, `R` recursion
//! with limit `l` and sequence `:>`, `@` the recursion edge, `~` interpret-as. Parsing
//! checks shape, bounds nesting and size, and refuses an edge outside a recursion.

use std::sync::Arc;

use thiserror::Error;

use crate::node::{Kind, Node, PathSegment};

/// Default cap on the nesting depth of a selector.
pub const DEFAULT_MAX_SELECTOR_DEPTH: usize = 64;
/// Default cap on the number of clauses in a selector.
pub const DEFAULT_MAX_SELECTOR_CLAUSES: usize = 1_024;
/// Default cap on the steps [`Selector::explore_bounded`] may take for one child: the
/// clauses it visits and builds. The "all" selector takes 3; a union whose recursions keep
/// multiplying (`ExploreRecursive` over a union of two `ExploreAll`s doubles at every level)
/// would otherwise grow without bound.
pub const DEFAULT_MAX_EXPLORE_STEPS: usize = 16_384;

/// Why a node is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The node has the wrong shape at `at`.
    #[error("invalid selector at {at}: {reason}")]
    Invalid {
        /// Where, as a chain of clause keys.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A clause this implementation does not support (conditions).
    #[error("unsupported selector clause {0:?}")]
    Unsupported(String),
    /// Nested deeper than the limit.
    #[error("selector nested deeper than {0} levels")]
    TooDeep(usize),
    /// More clauses than the limit.
    #[error("selector has more than {0} clauses")]
    TooLarge(usize),
    /// Exploring one child took more steps than the limit: the selector multiplies as it
    /// goes down the DAG.
    #[error(
        "the selector grows past {0} steps for one child (a union that multiplies at every level)"
    )]
    TooExpensive(usize),
}

/// How deep a recursion may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecursionLimit {
    /// No limit.
    None,
    /// At most this many levels.
    Depth(u64),
}

/// A selector, ready to evaluate. Cheap to clone (children are shared).
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Matches the current node, optionally a slice of a string or bytes node.
    Matcher {
        /// `[from, to)` in bytes; negative counts from the end.
        subset: Option<(i64, i64)>,
    },
    /// Explores every child with `next`.
    ExploreAll {
        /// The selector for each child.
        next: Arc<Self>,
    },
    /// Explores the named fields, in the selector's order.
    ExploreFields {
        /// Field name and selector pairs.
        fields: Arc<Vec<(String, Self)>>,
    },
    /// Explores one list element.
    ExploreIndex {
        /// The index.
        index: i64,
        /// The selector for it.
        next: Arc<Self>,
    },
    /// Explores list elements `start..end`.
    ExploreRange {
        /// First index.
        start: i64,
        /// One past the last index.
        end: i64,
        /// The selector for each.
        next: Arc<Self>,
    },
    /// Applies every member.
    ExploreUnion(Arc<Vec<Self>>),
    /// Applies `sequence` again wherever it reaches an edge, up to the limit.
    ExploreRecursive {
        /// The clause that recurs.
        sequence: Arc<Self>,
        /// Where in the sequence the walk is now.
        current: Arc<Self>,
        /// What depth remains.
        limit: RecursionLimit,
    },
    /// Marks where a recursion starts over.
    ExploreRecursiveEdge,
    /// Interprets the node as an ADL first (the ADL is not applied by this crate).
    ExploreInterpretAs {
        /// The ADL's name.
        adl: String,
        /// The selector for the interpreted node.
        next: Arc<Self>,
    },
}

struct Parser {
    max_depth: usize,
    max_clauses: usize,
    clauses: usize,
}

fn invalid(at: &str, reason: impl Into<String>) -> SelectorError {
    SelectorError::Invalid {
        at: if at.is_empty() {
            "the root".into()
        } else {
            at.into()
        },
        reason: reason.into(),
    }
}

fn int(node: Option<&Node>, at: &str, what: &str) -> Result<i64, SelectorError> {
    match node {
        Some(Node::Integer(i)) => {
            i64::try_from(*i).map_err(|_| invalid(at, format!("{what} out of range")))
        }
        _ => Err(invalid(at, format!("{what} must be an integer"))),
    }
}

impl Parser {
    fn parse(
        &mut self,
        node: &Node,
        at: &str,
        depth: usize,
        in_recursion: bool,
    ) -> Result<Selector, SelectorError> {
        if depth >= self.max_depth {
            return Err(SelectorError::TooDeep(self.max_depth));
        }
        self.clauses += 1;
        if self.clauses > self.max_clauses {
            return Err(SelectorError::TooLarge(self.max_clauses));
        }
        let Node::Map(entries) = node else {
            return Err(invalid(at, "a selector clause must be a map with one key"));
        };
        let [(key, body)] = entries.as_slice() else {
            return Err(invalid(
                at,
                format!(
                    "a selector clause must have exactly one key, found {}",
                    entries.len()
                ),
            ));
        };
        let here = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}/{key}")
        };
        let sub = |p: &mut Self,
                   field: &str,
                   n: Option<&Node>,
                   rec: bool|
         -> Result<Arc<Selector>, SelectorError> {
            let n = n.ok_or_else(|| invalid(&here, format!("missing {field:?}")))?;
            p.parse(n, &format!("{here}/{field}"), depth + 1, rec)
                .map(Arc::new)
        };
        if !matches!(body, Node::Map(_) | Node::List(_)) {
            return Err(invalid(
                &here,
                "a clause's body must be a map (or a list for `|`)",
            ));
        }
        Ok(match key.as_str() {
            "." => {
                let subset = match body.get("subset") {
                    None => None,
                    Some(s) => Some((
                        int(s.get("["), &here, "subset `[`")?,
                        int(s.get("]"), &here, "subset `]`")?,
                    )),
                };
                Selector::Matcher { subset }
            }
            "a" => Selector::ExploreAll {
                next: sub(self, ">", body.get(">"), in_recursion)?,
            },
            "f" => {
                let Some(Node::Map(fields)) = body.get("f>") else {
                    return Err(invalid(&here, "`f>` must be a map of field selectors"));
                };
                let mut out = Vec::with_capacity(fields.len());
                for (name, s) in fields {
                    out.push((
                        name.clone(),
                        self.parse(s, &format!("{here}/{name}"), depth + 1, in_recursion)?,
                    ));
                }
                Selector::ExploreFields {
                    fields: Arc::new(out),
                }
            }
            "i" => Selector::ExploreIndex {
                index: int(body.get("i"), &here, "index")?,
                next: sub(self, ">", body.get(">"), in_recursion)?,
            },
            "r" => {
                let start = int(body.get("^"), &here, "range start `^`")?;
                let end = int(body.get("$"), &here, "range end `$`")?;
                if start < 0 || end < start {
                    return Err(invalid(&here, "a range needs 0 <= start <= end"));
                }
                Selector::ExploreRange {
                    start,
                    end,
                    next: sub(self, ">", body.get(">"), in_recursion)?,
                }
            }
            "|" => {
                let Node::List(items) = body else {
                    return Err(invalid(&here, "a union is a list of selectors"));
                };
                let members = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.parse(s, &format!("{here}/{i}"), depth + 1, in_recursion))
                    .collect::<Result<Vec<_>, _>>()?;
                Selector::ExploreUnion(Arc::new(members))
            }
            "R" => {
                if body.get("!").is_some() {
                    return Err(SelectorError::Unsupported("R/! (stop-at condition)".into()));
                }
                let limit = match body.get("l") {
                    Some(Node::Map(l)) => match l.as_slice() {
                        [(k, _)] if k == "none" => RecursionLimit::None,
                        [(k, Node::Integer(d))] if k == "depth" && *d >= 0 => {
                            RecursionLimit::Depth(u64::try_from(*d).unwrap_or(u64::MAX))
                        }
                        _ => {
                            return Err(invalid(
                                &here,
                                "limit `l` must be {\"none\": {}} or {\"depth\": n}",
                            ));
                        }
                    },
                    _ => return Err(invalid(&here, "missing recursion limit `l`")),
                };
                let sequence = sub(self, ":>", body.get(":>"), true)?;
                Selector::ExploreRecursive {
                    current: sequence.clone(),
                    sequence,
                    limit,
                }
            }
            "@" => {
                if !in_recursion {
                    return Err(invalid(
                        &here,
                        "a recursion edge `@` must be inside a recursion `R`",
                    ));
                }
                Selector::ExploreRecursiveEdge
            }
            "~" => {
                let Some(Node::String(adl)) = body.get("as") else {
                    return Err(invalid(&here, "interpret-as needs an ADL name `as`"));
                };
                Selector::ExploreInterpretAs {
                    adl: adl.clone(),
                    next: sub(self, ">", body.get(">"), in_recursion)?,
                }
            }
            "&" => return Err(SelectorError::Unsupported("& (conditional)".into())),
            other => return Err(invalid(at, format!("unknown clause {other:?}"))),
        })
    }
}

fn seg_index(seg: &PathSegment) -> Option<i64> {
    match seg {
        PathSegment::Index(i) => i64::try_from(*i).ok(),
        PathSegment::Key(k) => k.parse().ok(),
    }
}

impl Selector {
    /// Parses a selector node with the default bounds.
    pub fn parse(node: &Node) -> Result<Self, SelectorError> {
        Self::parse_with_limits(
            node,
            DEFAULT_MAX_SELECTOR_DEPTH,
            DEFAULT_MAX_SELECTOR_CLAUSES,
        )
    }

    /// Parses a selector node, refusing nesting deeper than `max_depth` and more than
    /// `max_clauses` clauses.
    pub fn parse_with_limits(
        node: &Node,
        max_depth: usize,
        max_clauses: usize,
    ) -> Result<Self, SelectorError> {
        Parser {
            max_depth,
            max_clauses,
            clauses: 0,
        }
        .parse(node, "", 0, false)
    }

    /// Parses a selector from DAG-CBOR bytes.
    pub fn from_dag_cbor(bytes: &[u8]) -> Result<Self, SelectorError> {
        let node = crate::codec::decode_dag_cbor(bytes, DEFAULT_MAX_SELECTOR_DEPTH * 3)
            .map_err(|e| invalid("", format!("not DAG-CBOR: {e}")))?;
        Self::parse(&node)
    }

    /// The selector as an IPLD node, in the short-key form selectors travel in (what
    /// [`Selector::parse`] reads). A recursion is written from its sequence: where a walk
    /// has got to is not part of it.
    pub fn to_node(&self) -> Node {
        fn clause(key: &str, body: Node) -> Node {
            Node::Map(vec![(key.to_owned(), body)])
        }
        fn next(s: &Selector) -> (String, Node) {
            (">".to_owned(), s.to_node())
        }
        match self {
            Self::Matcher { subset: None } => clause(".", Node::Map(Vec::new())),
            Self::Matcher {
                subset: Some((from, to)),
            } => clause(
                ".",
                Node::Map(vec![(
                    "subset".to_owned(),
                    Node::Map(vec![
                        ("[".to_owned(), Node::Integer(i128::from(*from))),
                        ("]".to_owned(), Node::Integer(i128::from(*to))),
                    ]),
                )]),
            ),
            Self::ExploreAll { next: n } => clause("a", Node::Map(vec![next(n)])),
            Self::ExploreFields { fields } => clause(
                "f",
                Node::Map(vec![(
                    "f>".to_owned(),
                    Node::Map(
                        fields
                            .iter()
                            .map(|(name, s)| (name.clone(), s.to_node()))
                            .collect(),
                    ),
                )]),
            ),
            Self::ExploreIndex { index, next: n } => clause(
                "i",
                Node::Map(vec![
                    ("i".to_owned(), Node::Integer(i128::from(*index))),
                    next(n),
                ]),
            ),
            Self::ExploreRange {
                start,
                end,
                next: n,
            } => clause(
                "r",
                Node::Map(vec![
                    ("^".to_owned(), Node::Integer(i128::from(*start))),
                    ("$".to_owned(), Node::Integer(i128::from(*end))),
                    next(n),
                ]),
            ),
            Self::ExploreUnion(members) => {
                clause("|", Node::List(members.iter().map(Self::to_node).collect()))
            }
            Self::ExploreRecursive {
                sequence, limit, ..
            } => {
                let limit = match limit {
                    RecursionLimit::None => Node::Map(vec![("none".to_owned(), Node::Map(vec![]))]),
                    RecursionLimit::Depth(d) => {
                        Node::Map(vec![("depth".to_owned(), Node::Integer(i128::from(*d)))])
                    }
                };
                clause(
                    "R",
                    Node::Map(vec![
                        ("l".to_owned(), limit),
                        (":>".to_owned(), sequence.to_node()),
                    ]),
                )
            }
            Self::ExploreRecursiveEdge => clause("@", Node::Map(Vec::new())),
            Self::ExploreInterpretAs { adl, next: n } => clause(
                "~",
                Node::Map(vec![("as".to_owned(), Node::String(adl.clone())), next(n)]),
            ),
        }
    }

    /// The selector as canonical DAG-CBOR bytes, as go-ipld-prime encodes it.
    pub fn to_dag_cbor(&self) -> Vec<u8> {
        crate::codec::encode_dag_cbor(&self.to_node())
    }

    /// The "all" selector everyone uses: recursively explore everything, no limit.
    pub fn explore_all_recursively() -> Self {
        let sequence = Arc::new(Self::ExploreAll {
            next: Arc::new(Self::ExploreRecursiveEdge),
        });
        Self::ExploreRecursive {
            current: sequence.clone(),
            sequence,
            limit: RecursionLimit::None,
        }
    }

    /// Whether the node at the current position is matched.
    pub fn decide(&self, node: &Node) -> bool {
        match self {
            Self::Matcher { subset } => subset.is_none() || self.matched_node(node).is_some(),
            Self::ExploreUnion(m) => m.iter().any(|s| s.decide(node)),
            Self::ExploreRecursive { current, .. } => current.decide(node),
            _ => false,
        }
    }

    /// The node as matched: a slice for a subset matcher, else the node itself.
    pub fn matched_node(&self, node: &Node) -> Option<Node> {
        let Self::Matcher {
            subset: Some((from, to)),
        } = self
        else {
            return Some(node.clone());
        };
        let len = match node {
            Node::String(s) => s.len(),
            Node::Bytes(b) => b.len(),
            _ => return None,
        } as i64;
        let from = if *from < 0 {
            (len + from).max(0)
        } else {
            *from
        };
        let to = if *to < 0 { len + to } else { (*to).min(len) };
        if from > len || to < 0 || from > to {
            return None;
        }
        let (from, to) = (from as usize, to as usize);
        Some(match node {
            Node::String(s) => {
                Node::String(String::from_utf8_lossy(&s.as_bytes()[from..to]).into_owned())
            }
            Node::Bytes(b) => Node::Bytes(b[from..to].to_vec()),
            _ => return None,
        })
    }

    /// The children of `node` worth looking at, in order; `None` means every child in node
    /// order. A range lists only the indexes `node` has, so a peer's huge range costs nothing.
    pub fn interests(&self, node: &Node) -> Option<Vec<PathSegment>> {
        match self {
            Self::Matcher { .. } | Self::ExploreRecursiveEdge => Some(Vec::new()),
            Self::ExploreAll { .. } => None,
            Self::ExploreFields { fields } => Some(
                fields
                    .iter()
                    .map(|(k, _)| PathSegment::Key(k.clone()))
                    .collect(),
            ),
            Self::ExploreIndex { index, .. } => Some(
                usize::try_from(*index)
                    .map(PathSegment::Index)
                    .into_iter()
                    .collect(),
            ),
            Self::ExploreRange { start, end, .. } => {
                let len = match node {
                    Node::List(items) => items.len(),
                    _ => 0,
                };
                let start = usize::try_from(*start).unwrap_or(0);
                let end = usize::try_from(*end).unwrap_or(0).min(len);
                Some((start..end).map(PathSegment::Index).collect())
            }
            Self::ExploreUnion(members) => {
                let mut all = Vec::new();
                for m in members.iter() {
                    all.extend(m.interests(node)?);
                }
                Some(all)
            }
            Self::ExploreRecursive { current, .. } => current.interests(node),
            Self::ExploreInterpretAs { next, .. } => next.interests(node),
        }
    }

    /// The selector for the child at `seg` of `node`, if the child is selected at all.
    /// Unbounded: a selector from a peer goes through [`Selector::explore_bounded`].
    pub fn explore(&self, node: &Node, seg: &PathSegment) -> Option<Self> {
        let mut unbounded = usize::MAX;
        self.explore_in(node, seg, &mut unbounded).unwrap_or(None)
    }

    /// [`Selector::explore`], failing with [`SelectorError::TooExpensive`] past `max_steps`
    /// clauses visited or built.
    pub fn explore_bounded(
        &self,
        node: &Node,
        seg: &PathSegment,
        max_steps: usize,
    ) -> Result<Option<Self>, SelectorError> {
        let mut steps = max_steps;
        self.explore_in(node, seg, &mut steps)
            .map_err(|Exhausted| SelectorError::TooExpensive(max_steps))
    }

    fn explore_in(
        &self,
        node: &Node,
        seg: &PathSegment,
        steps: &mut usize,
    ) -> Result<Option<Self>, Exhausted> {
        take_step(steps)?;
        Ok(match self {
            Self::Matcher { .. } | Self::ExploreRecursiveEdge => None,
            Self::ExploreAll { next } => Some((**next).clone()),
            Self::ExploreFields { fields } => {
                let label = seg.to_string();
                fields
                    .iter()
                    .find(|(k, _)| *k == label)
                    .map(|(_, s)| s.clone())
            }
            Self::ExploreIndex { index, next } => (node.kind() == Kind::List
                && seg_index(seg) == Some(*index))
            .then(|| (**next).clone()),
            Self::ExploreRange { start, end, next } => seg_index(seg)
                .filter(|i| node.kind() == Kind::List && *start <= *i && *i < *end)
                .map(|_| (**next).clone()),
            Self::ExploreUnion(members) => {
                let mut next = Vec::new();
                for m in members.iter() {
                    next.extend(m.explore_in(node, seg, steps)?);
                }
                union_of(next)
            }
            Self::ExploreRecursive {
                sequence,
                current,
                limit,
            } => {
                let Some(next) = current.explore_in(node, seg, steps)? else {
                    return Ok(None);
                };
                if !next.has_edge() {
                    return Ok(Some(Self::ExploreRecursive {
                        sequence: sequence.clone(),
                        current: Arc::new(next),
                        limit: *limit,
                    }));
                }
                let limit = match limit {
                    RecursionLimit::Depth(d) if *d < 2 => return next.replace_edge(None, steps),
                    RecursionLimit::Depth(d) => RecursionLimit::Depth(d - 1),
                    RecursionLimit::None => RecursionLimit::None,
                };
                next.replace_edge(Some(sequence), steps)?
                    .map(|current| Self::ExploreRecursive {
                        sequence: sequence.clone(),
                        current: Arc::new(current),
                        limit,
                    })
            }
            Self::ExploreInterpretAs { next, .. } => next.explore_in(node, seg, steps)?,
        })
    }

    fn has_edge(&self) -> bool {
        match self {
            Self::ExploreRecursiveEdge => true,
            Self::ExploreUnion(m) => m.iter().any(Self::has_edge),
            _ => false,
        }
    }

    fn replace_edge(
        &self,
        with: Option<&Arc<Self>>,
        steps: &mut usize,
    ) -> Result<Option<Self>, Exhausted> {
        take_step(steps)?;
        Ok(match self {
            Self::ExploreRecursiveEdge => with.map(|s| (**s).clone()),
            Self::ExploreUnion(m) => {
                let mut out = Vec::new();
                for s in m.iter() {
                    out.extend(s.replace_edge(with, steps)?);
                }
                union_of(out)
            }
            other => Some(other.clone()),
        })
    }
}

/// The step budget of one exploration ran out.
struct Exhausted;

fn take_step(steps: &mut usize) -> Result<(), Exhausted> {
    *steps = steps.checked_sub(1).ok_or(Exhausted)?;
    Ok(())
}

/// The union of what the members selected: nothing, the one member, or a union.
fn union_of(mut members: Vec<Selector>) -> Option<Selector> {
    match members.len() {
        0 => None,
        1 => members.pop(),
        _ => Some(Selector::ExploreUnion(Arc::new(members))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(entries: Vec<(&str, Node)>) -> Node {
        Node::map(entries)
    }

    #[test]
    fn the_all_selector_parses_from_its_serial_form() {
        let edge = m(vec![("@", m(vec![]))]);
        let all = m(vec![(
            "R",
            m(vec![
                ("l", m(vec![("none", m(vec![]))])),
                (":>", m(vec![("a", m(vec![(">", edge)]))])),
            ]),
        )]);
        assert_eq!(
            Selector::parse(&all),
            Ok(Selector::explore_all_recursively())
        );
    }

    #[test]
    fn selectors_encode_to_what_they_parse_from() {
        // The whole DAG, byte for byte as go-ipld-prime writes it.
        let all = Selector::explore_all_recursively().to_dag_cbor();
        assert_eq!(
            all,
            [
                0xa1, 0x61, b'R', 0xa2, 0x61, b'l', 0xa1, 0x64, b'n', b'o', b'n', b'e', 0xa0, 0x62,
                b':', b'>', 0xa1, 0x61, b'a', 0xa1, 0x61, b'>', 0xa1, 0x61, b'@', 0xa0
            ]
        );
        let leaf = Arc::new(Selector::Matcher { subset: None });
        let samples = [
            Selector::explore_all_recursively(),
            Selector::Matcher {
                subset: Some((2, -1)),
            },
            Selector::ExploreFields {
                fields: Arc::new(vec![
                    (
                        "Links".into(),
                        Selector::ExploreIndex {
                            index: 3,
                            next: leaf.clone(),
                        },
                    ),
                    ("Data".into(), Selector::Matcher { subset: None }),
                ]),
            },
            Selector::ExploreRange {
                start: 1,
                end: 4,
                next: leaf.clone(),
            },
            Selector::ExploreUnion(Arc::new(vec![
                Selector::Matcher { subset: None },
                Selector::ExploreAll { next: leaf.clone() },
            ])),
            Selector::ExploreInterpretAs {
                adl: "unixfs".into(),
                next: leaf,
            },
        ];
        for s in samples {
            let bytes = s.to_dag_cbor();
            let back = Selector::from_dag_cbor(&bytes).unwrap();
            // Field order is the encoding's (canonical), so compare the bytes again.
            assert_eq!(back.to_dag_cbor(), bytes, "{s:?}");
            if !matches!(s, Selector::ExploreFields { .. }) {
                assert_eq!(back, s);
            }
        }
        let depth = Selector::ExploreRecursive {
            sequence: Arc::new(Selector::ExploreAll {
                next: Arc::new(Selector::ExploreRecursiveEdge),
            }),
            current: Arc::new(Selector::ExploreRecursiveEdge),
            limit: RecursionLimit::Depth(5),
        };
        let back = Selector::from_dag_cbor(&depth.to_dag_cbor()).unwrap();
        assert!(matches!(
            back,
            Selector::ExploreRecursive {
                limit: RecursionLimit::Depth(5),
                ..
            }
        ));
    }

    #[test]
    fn bad_selectors_are_typed_errors() {
        let edge = m(vec![("@", m(vec![]))]);
        assert!(matches!(
            Selector::parse(&edge),
            Err(SelectorError::Invalid { .. })
        ));
        assert!(matches!(
            Selector::parse(&Node::Integer(3)),
            Err(SelectorError::Invalid { .. })
        ));
        assert!(matches!(
            Selector::parse(&m(vec![("zz", m(vec![]))])),
            Err(SelectorError::Invalid { .. })
        ));
        let two_keys = m(vec![(".", m(vec![])), ("a", m(vec![]))]);
        assert!(matches!(
            Selector::parse(&two_keys),
            Err(SelectorError::Invalid { .. })
        ));
        // Deep nesting is bounded.
        let mut deep = m(vec![(".", m(vec![]))]);
        for _ in 0..100 {
            deep = m(vec![("a", m(vec![(">", deep)]))]);
        }
        assert_eq!(
            Selector::parse(&deep),
            Err(SelectorError::TooDeep(DEFAULT_MAX_SELECTOR_DEPTH))
        );
        let wide = m(vec![(
            "|",
            Node::List(vec![m(vec![(".", m(vec![]))]); 2_000]),
        )]);
        assert_eq!(
            Selector::parse(&wide),
            Err(SelectorError::TooLarge(DEFAULT_MAX_SELECTOR_CLAUSES))
        );
    }
}
