//! The lock view's order graph: each lock with the edges out of it (the locks taken while
//! it was held), and which edges lie on a cycle, the shape of a `lock-order` finding.

use std::collections::{BTreeMap, HashSet};

use crate::audit::OrderEdge;

/// One lock and its edges out, each with whether it lies on a cycle.
pub struct Node<'a> {
    pub lock: &'a str,
    pub out: Vec<(&'a OrderEdge, bool)>,
}

/// The edges grouped by the lock held, locks in name order.
pub fn nodes(edges: &[OrderEdge]) -> Vec<Node<'_>> {
    let mut by: BTreeMap<&str, Vec<&OrderEdge>> = BTreeMap::new();
    for e in edges {
        by.entry(&e.held).or_default().push(e);
    }
    by.iter()
        .map(|(lock, out)| Node {
            lock,
            out: out
                .iter()
                .map(|e| (*e, reaches(&by, &e.taken, &e.held)))
                .collect(),
        })
        .collect()
}

/// Whether a path of edges leads from `from` to `to`: then the edge `to -> from` closes a
/// cycle.
fn reaches(by: &BTreeMap<&str, Vec<&OrderEdge>>, from: &str, to: &str) -> bool {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut todo = vec![from];
    while let Some(at) = todo.pop() {
        if at == to {
            return true;
        }
        if !seen.insert(at) {
            continue;
        }
        todo.extend(by.get(at).into_iter().flatten().map(|e| &*e.taken));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::TaskRef;
    use std::sync::Arc;

    fn edge(held: &str, taken: &str) -> OrderEdge {
        OrderEdge {
            held: Arc::from(held),
            taken: Arc::from(taken),
            taker: Arc::from("f"),
            held_in: None,
            task: TaskRef {
                pid: 1,
                tid: 1,
                comm: Arc::from("t"),
                guest: None,
            },
            ts_ns: 0,
            seq: 0,
            uncertain: false,
            stack: Vec::new(),
            evidence: Vec::new(),
        }
    }

    #[test]
    fn edges_group_by_the_lock_held_and_cycles_are_marked() {
        let edges = [
            edge("mdevs_lock", "dev_set_lock"),
            edge("dev_set_lock", "guests_lock"),
            edge("dev_set_lock", "mdevs_lock"),
        ];
        let n = nodes(&edges);
        let shape: Vec<(&str, Vec<(&str, bool)>)> = n
            .iter()
            .map(|n| (n.lock, n.out.iter().map(|(e, c)| (&*e.taken, *c)).collect()))
            .collect();
        assert_eq!(
            shape,
            [
                (
                    "dev_set_lock",
                    vec![("guests_lock", false), ("mdevs_lock", true)]
                ),
                ("mdevs_lock", vec![("dev_set_lock", true)]),
            ]
        );
    }
}
