//! The IPLD specification's selector fixtures (ipld/ipld `specs/selectors/fixtures` at commit
//! 65cef921, extracted into `fixtures/selectors.json`): every fixture's selector is run over
//! its data and must visit exactly the expected nodes, in order, with the expected "matched"
//! flags. The data is JSON, parsed with key order preserved (the visit order depends on it).
//!
//! Not covered: `adl-interpreted` needs DAG-JSON blocks and the UnixFS ADL
//! (`ExploreInterpretAs "unixfs"`), which this crate does not implement yet.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{Step, Traversal, TraversalConfig, Visitor};
use datatransfer_ipld::{Node, Path};
use serde_json::Value;

/// The fixtures, extracted from the specification's testmark files (see the file's
/// `source` field for where from).
const FIXTURES: &str = include_str!("fixtures/selectors.json");

fn to_node(v: &Value) -> Node {
    match v {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Node::Integer(i128::from(i)),
            None => Node::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => Node::String(s.clone()),
        Value::Array(a) => Node::List(a.iter().map(to_node).collect()),
        Value::Object(o) => Node::Map(o.iter().map(|(k, v)| (k.clone(), to_node(v))).collect()),
    }
}

/// A visit as the fixtures write it.
fn describe(path: &Path, node: &Node, matched: bool) -> Value {
    let node = match node {
        Node::Null => serde_json::json!({"null": null}),
        Node::Bool(b) => serde_json::json!({"bool": b}),
        Node::Integer(i) => serde_json::json!({"int": *i as i64}),
        Node::Float(f) => serde_json::json!({"float": f}),
        Node::String(s) => serde_json::json!({"string": s}),
        Node::Bytes(_) => serde_json::json!({"bytes": null}),
        Node::List(_) => serde_json::json!({"list": null}),
        Node::Map(_) => serde_json::json!({"map": null}),
        Node::Link(c) => serde_json::json!({"link": c.to_string()}),
    };
    serde_json::json!({"path": path.to_string(), "node": node, "matched": matched})
}

#[derive(Default)]
struct Record(Vec<Value>);

impl Visitor for Record {
    fn node(&mut self, path: &Path, node: &Node, matched: bool) {
        self.0.push(describe(path, node, matched));
    }
}

fn run(file: &str) -> usize {
    let all: Value = serde_json::from_str(FIXTURES).unwrap();
    let mut count = 0;
    for f in all["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["file"] == file)
    {
        let name = f["name"].as_str().unwrap();
        let data: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
        let sel: Value = serde_json::from_str(f["selector"].as_str().unwrap()).unwrap();
        let selector = Selector::parse(&to_node(&sel)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut rec = Record::default();
        let mut t = Traversal::over_node(
            to_node(&data),
            selector,
            TraversalConfig::default(),
            &mut rec,
        )
        .unwrap();
        assert_eq!(
            t.advance(&mut rec).unwrap(),
            Step::Done,
            "{name}: single-block fixtures need no blocks"
        );
        let want: Vec<Value> = f["expect_visit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(rec.0, want, "fixture {name}");
        count += 1;
    }
    count
}

#[test]
fn selector_fixtures_1() {
    assert_eq!(run("selector-fixtures-1.md"), 9);
}

#[test]
fn selector_fixtures_recursion() {
    assert_eq!(run("selector-fixtures-recursion.md"), 1);
}
