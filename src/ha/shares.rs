//! Fair shares: which live replica should hold each process.
//!
//! Every replica computes the same answer from the same inputs (the live
//! replica list from PostgreSQL and the configured processes), so no
//! coordinator is needed. The rule is rendezvous hashing with bounded load:
//! groups of linked processes (a lone process is a group of one) are taken
//! largest first, then by name; each goes to the replica that scores highest
//! for it among those with room left, where room is ⌈P/N⌉ processes. Scores
//! depend only on the group's and the replica's names, so a replica that
//! restarts under the same `ha.replica_id` gets the same share back, and a
//! replica joining or leaving moves only about P/N processes (those it wins
//! or had, plus the few that capacity pushes along).

use std::collections::{BTreeMap, HashMap};

/// `groups`: process → its group (see `config::link_groups`); `replicas`:
/// the live replicas. Returns process → the replica that should hold it
/// (empty without replicas).
pub fn assign(groups: &BTreeMap<String, String>, replicas: &[String]) -> HashMap<String, String> {
    let mut owners = HashMap::new();
    if replicas.is_empty() {
        return owners;
    }
    let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (process, group) in groups {
        members.entry(group).or_default().push(process);
    }
    let mut order: Vec<(&str, Vec<&str>)> = members.into_iter().collect();
    order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let cap = groups.len().div_ceil(replicas.len());
    let mut load: HashMap<&str, usize> = replicas.iter().map(|r| (r.as_str(), 0)).collect();
    for (group, procs) in order {
        let mut ranked: Vec<&str> = replicas.iter().map(String::as_str).collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(score(group, r)));
        let chosen = ranked
            .iter()
            .find(|r| load[**r] + procs.len() <= cap)
            .or_else(|| ranked.iter().min_by_key(|r| load[**r]))
            .copied()
            .expect("at least one replica");
        *load.get_mut(chosen).expect("a known replica") += procs.len();
        for p in procs {
            owners.insert(p.to_string(), chosen.to_string());
        }
    }
    owners
}

/// A stable 64-bit score of (group, replica): FNV-1a, then a finalizer for
/// avalanche. Stable across builds and versions, unlike std's hasher.
fn score(group: &str, replica: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.bytes().chain([0xff]).chain(replica.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn singles(n: usize) -> BTreeMap<String, String> {
        (0..n).map(|i| (format!("p{i:02}"), format!("p{i:02}"))).collect()
    }

    fn replicas(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn counts(owners: &HashMap<String, String>) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for r in owners.values() {
            *c.entry(r.clone()).or_default() += 1;
        }
        c
    }

    #[test]
    fn shares_are_within_one_of_even_and_the_same_everywhere() {
        for (p, n) in [(12, 3), (12, 4), (13, 3), (1000, 7), (5, 2)] {
            let names: Vec<String> = (0..n).map(|i| format!("replica-{i}")).collect();
            let owners = assign(&singles(p), &names);
            let cap = p.div_ceil(n);
            assert_eq!(owners.len(), p);
            for (r, c) in counts(&owners) {
                assert!(c <= cap, "{r} holds {c} of {p} (cap {cap})");
            }
            let mut reversed = names.clone();
            reversed.reverse();
            assert_eq!(
                owners,
                assign(&singles(p), &reversed),
                "independent of the list's order"
            );
        }
    }

    #[test]
    fn a_joining_replica_moves_about_its_share_and_a_restart_moves_nothing() {
        let before = assign(&singles(120), &replicas(&["a", "b", "c"]));
        let after = assign(&singles(120), &replicas(&["a", "b", "c", "d"]));
        let moved = before.iter().filter(|(p, r)| after[*p] != **r).count();
        assert!(
            (30..=45).contains(&moved),
            "{moved} of 120 moved for a 4th replica's 30"
        );
        assert_eq!(before, assign(&singles(120), &replicas(&["c", "a", "b"])));
    }

    #[test]
    fn linked_processes_go_together() {
        let mut groups = singles(10);
        for p in ["p01", "p02", "p03"] {
            groups.insert(p.to_string(), "p01".to_string());
        }
        let owners = assign(&groups, &replicas(&["a", "b", "c"]));
        assert_eq!(owners["p01"], owners["p02"]);
        assert_eq!(owners["p01"], owners["p03"]);
    }
}
