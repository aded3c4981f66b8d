//! Links between processes: `after` (a chain: run right after others
//! succeed) and `exclusive_with` (never at the same time). Checked here once
//! for the whole table, because a link is only as good as what it names; and
//! grouped here, because every process a link touches must be scheduled by
//! one replica (HA) for the rules to hold.

use std::collections::{BTreeMap, BTreeSet};

use super::ProcessConfig;

/// Reports links naming unknown processes, themselves or a continuous
/// process, and every cycle of `after` (each named once, in order).
pub fn check_links(processes: &BTreeMap<String, ProcessConfig>, report: &mut dyn FnMut(&str, String)) {
    for (id, p) in processes {
        for (field, names) in [("after", &p.after), ("exclusive_with", &p.exclusive_with)] {
            let key = format!("processes.{id}.{field}");
            for name in names {
                match processes.get(name) {
                    None => report(&key, format!("names `{name}`, which is not a configured process")),
                    Some(_) if name == id => report(&key, "a process cannot name itself".into()),
                    Some(other) if other.continuous() => report(
                        &key,
                        format!("names `{name}`, a continuous process (it has no runs to chain or exclude)"),
                    ),
                    Some(_) => {}
                }
            }
            if !names.is_empty() && p.continuous() {
                report(&key, "a continuous process cannot be chained or excluded".into());
            }
        }
    }
    for cycle in after_cycles(processes) {
        let first = &cycle[0];
        let path: Vec<&str> = cycle.iter().chain([first]).map(String::as_str).collect();
        report(
            &format!("processes.{first}.after"),
            format!(
                "`after` forms a cycle: {} (none of them would ever run)",
                path.join(" → ")
            ),
        );
    }
}

/// The cycles of the `after` graph, each once, starting at its smallest id.
fn after_cycles(processes: &BTreeMap<String, ProcessConfig>) -> Vec<Vec<String>> {
    let mut cycles: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in processes.keys() {
        // Depth-first from `start`, only through ids greater than it: each cycle is found from its smallest id.
        let mut stack: Vec<(String, usize)> = vec![(start.clone(), 0)];
        while let Some((node, next)) = stack.last().cloned() {
            let after = processes.get(&node).map(|p| &p.after[..]).unwrap_or(&[]);
            if next >= after.len() {
                stack.pop();
                continue;
            }
            stack.last_mut().expect("not empty").1 += 1;
            let to = &after[next];
            if to == start && stack.len() == 1 {
                // Naming itself: reported as such.
            } else if to == start {
                cycles.insert(stack.iter().map(|(n, _)| n.clone()).collect());
            } else if to > start && processes.contains_key(to) && !stack.iter().any(|(n, _)| n == to) {
                stack.push((to.clone(), 0));
            }
        }
    }
    cycles.into_iter().collect()
}

/// Processes linked (through `after` or `exclusive_with`, in either
/// direction, transitively) share a group, named after its smallest id.
/// Unlinked processes are their own group. Every id of `processes` is a key.
pub fn link_groups(processes: &BTreeMap<String, ProcessConfig>) -> BTreeMap<String, String> {
    let mut group: BTreeMap<String, String> = processes.keys().map(|id| (id.clone(), id.clone())).collect();
    fn root(group: &BTreeMap<String, String>, id: &str) -> String {
        let mut at = id.to_string();
        while let Some(up) = group.get(&at).filter(|up| **up != at) {
            at = up.clone();
        }
        at
    }
    for (id, p) in processes {
        for other in p.after.iter().chain(&p.exclusive_with) {
            if !processes.contains_key(other) {
                continue;
            }
            let (a, b) = (root(&group, id), root(&group, other));
            let (low, high) = if a < b { (a, b) } else { (b, a) };
            group.insert(high, low);
        }
    }
    let ids: Vec<String> = group.keys().cloned().collect();
    ids.into_iter()
        .map(|id| {
            let r = root(&group, &id);
            (id, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(links: &[(&str, &[&str], &[&str])]) -> BTreeMap<String, ProcessConfig> {
        links
            .iter()
            .map(|(id, after, exclusive)| {
                let mut p = super::super::process_defaults("command");
                p.after = after.iter().map(|s| s.to_string()).collect();
                p.exclusive_with = exclusive.iter().map(|s| s.to_string()).collect();
                (id.to_string(), p)
            })
            .collect()
    }

    fn problems(t: &BTreeMap<String, ProcessConfig>) -> Vec<(String, String)> {
        let mut found = Vec::new();
        check_links(t, &mut |k, m| found.push((k.to_string(), m)));
        found
    }

    #[test]
    fn a_cycle_is_named_once_with_its_path() {
        let t = table(&[
            ("a", &["c"], &[]),
            ("b", &["a"], &[]),
            ("c", &["b"], &[]),
            ("d", &["a"], &[]),
        ]);
        let found = problems(&t);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "processes.a.after");
        assert!(found[0].1.contains("a → c → b → a"), "{}", found[0].1);
    }

    #[test]
    fn unknown_and_self_links_are_refused() {
        let t = table(&[("a", &["ghost"], &["a"]), ("b", &[], &[])]);
        let found = problems(&t);
        assert!(
            found
                .iter()
                .any(|(k, m)| k == "processes.a.after" && m.contains("`ghost`"))
        );
        assert!(
            found
                .iter()
                .any(|(k, m)| k == "processes.a.exclusive_with" && m.contains("itself"))
        );
    }

    #[test]
    fn chains_without_cycles_pass_and_links_group_transitively() {
        let t = table(&[
            ("a", &[], &[]),
            ("b", &["a"], &[]),
            ("c", &["b"], &[]),
            ("x", &[], &["y"]),
            ("y", &[], &[]),
            ("z", &[], &[]),
        ]);
        assert!(problems(&t).is_empty());
        let g = link_groups(&t);
        assert_eq!((g["a"].as_str(), g["b"].as_str(), g["c"].as_str()), ("a", "a", "a"));
        assert_eq!((g["x"].as_str(), g["y"].as_str(), g["z"].as_str()), ("x", "x", "z"));
    }
}
