//! `--selector`: a selector written in DAG-JSON, the way go-ipld-prime and Lotus print them
//! (`{"R":{"l":{"none":{}},":>":{"a":{">":{"@":{}}}}}}` is the whole DAG), checked and turned
//! into the DAG-CBOR the wire carries.

use datatransfer::DagCbor;
use datatransfer_ipld::Node;
use datatransfer_ipld::codec::encode_dag_cbor;
use datatransfer_ipld::selector::Selector;
use serde_json::Value;

/// The whole DAG: what `--selector` defaults to, and what `all` stands for.
pub(crate) const ALL: &str = r#"{"R":{"l":{"none":{}},":>":{"a":{">":{"@":{}}}}}}"#;

/// A parsed `--selector`: the wire form and the selector itself.
pub(crate) struct Parsed {
    /// DAG-CBOR, for the request.
    pub(crate) cbor: DagCbor,
    /// The selector, for writing a CAR of what it chose.
    pub(crate) selector: Selector,
    /// Whether it selects the whole DAG (so the file can be exported).
    pub(crate) whole: bool,
}

/// Parses `text` (DAG-JSON, or `all`).
pub(crate) fn parse(text: &str) -> Result<Parsed, String> {
    let text = if text.trim() == "all" { ALL } else { text };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("the selector is not JSON: {e} (try --selector all)"))?;
    let node = to_node(value)?;
    let selector =
        Selector::parse(&node).map_err(|e| format!("the selector is not a valid selector: {e}"))?;
    let cbor = encode_dag_cbor(&node);
    // Canonical DAG-CBOR: key order in the JSON does not matter.
    let whole = cbor == datatransfer::all_selector().as_bytes();
    let cbor = DagCbor::from_bytes(cbor).map_err(|e| format!("the selector: {e}"))?;
    Ok(Parsed {
        cbor,
        selector,
        whole,
    })
}

/// DAG-JSON to the data model: `{"/": "<cid>"}` is a link; bytes (`{"/": {"bytes": ..}}`)
/// have no use in a selector and are refused.
fn to_node(v: Value) -> Result<Node, String> {
    Ok(match v {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Node::Integer(i.into()),
            (_, Some(u), _) => Node::Integer(u.into()),
            (_, _, Some(f)) => Node::Float(f),
            _ => return Err(format!("the number {n} is out of range")),
        },
        Value::String(s) => Node::String(s),
        Value::Array(items) => {
            Node::List(items.into_iter().map(to_node).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => {
            if map.len() == 1
                && let Some(slash) = map.get("/")
            {
                return match slash {
                    Value::String(c) => c
                        .parse()
                        .map(Node::Link)
                        .map_err(|e| format!("{c:?} in the selector is not a CID: {e}")),
                    _ => Err("bytes ({\"/\": {\"bytes\": ..}}) have no place in a selector".into()),
                };
            }
            Node::Map(
                map.into_iter()
                    .map(|(k, v)| Ok((k, to_node(v)?)))
                    .collect::<Result<_, String>>()?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_dag_selector_matches_the_libraries_and_is_recognised() {
        let p = parse("all").map_err(|e| e.to_string()).expect("all parses");
        assert!(p.whole);
        assert_eq!(p.cbor.as_bytes(), datatransfer::all_selector().as_bytes());
        // The same selector with its keys in another order is still the whole DAG.
        let p = parse(r#"{"R":{":>":{"a":{">":{"@":{}}}},"l":{"none":{}}}}"#).expect("parses");
        assert!(p.whole);
    }

    #[test]
    fn a_depth_limited_selector_is_not_the_whole_dag() {
        let p = parse(r#"{"R":{"l":{"depth":1},":>":{"a":{">":{"@":{}}}}}}"#).expect("parses");
        assert!(!p.whole);
    }

    #[test]
    fn bad_selectors_say_why() {
        for (text, why) in [
            ("{not json", "not JSON"),
            (r#"{"Z":{}}"#, "not a valid selector"),
            (
                r#"{"R":{"l":{"depth":"x"},":>":{"@":{}}}}"#,
                "not a valid selector",
            ),
            (r#"{"/":"nope"}"#, "not a CID"),
        ] {
            match parse(text) {
                Ok(_) => panic!("{text} parsed"),
                Err(e) => assert!(e.contains(why), "{text}: {e}"),
            }
        }
    }
}
