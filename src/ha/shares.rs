//! Fair shares: which live replica should hold each process.
//!
//! Every replica computes the same answer from the same inputs (the live
//! replica list from PostgreSQL and the configured processes), so no
//! coordinator is needed. The rule is rendezvous hashing with exact quotas:
//! with P processes on N replicas, every replica is meant to hold ⌊P/N⌋, and
//! P mod N of them one more. Groups of linked processes (a lone process is a
//! group of one) are taken largest first, then by name; each goes to the
//! replica that scores highest for it among those it fits: up to ⌊P/N⌋, or
//! ⌊P/N⌋ + 1 while fewer than P mod N replicas are above ⌊P/N⌋. The quotas
//! add up to P, so lone processes always fit and every replica ends with
//! ⌊P/N⌋ or ⌈P/N⌉; a group that fits nowhere goes to the least loaded
//! replica, so groups can put a replica off by at most about one group.
//!
//! Why quotas and not only a cap of ⌈P/N⌉: a cap bounds the most a replica
//! holds, not the least; the replicas that score high fill up first and the
//! last one takes what is left (1/3/3 for 7 on 3, 6/4/6 for 16 on 3).
//! Why rendezvous hashing: scores depend only on the group's and the
//! replica's names, so a replica that restarts under the same
//! `ha.replica_id` gets the same share back, and a replica joining or leaving
//! moves only about P/N processes (those it wins or had, plus the few that
//! the quotas push along). Moving is a hand-over at a tick boundary (see
//! `coordinator`), so the rule decides only who should hold what, never
//! whether a tick runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// `groups`: process → its group (see `config::link_groups`); `replicas`:
/// the live replicas. Returns process → the replica that should hold it
/// (empty without replicas). The same for any order of `replicas`.
pub fn assign(groups: &BTreeMap<String, String>, replicas: &[String]) -> HashMap<String, String> {
    let mut owners = HashMap::new();
    let replicas: BTreeSet<&str> = replicas.iter().map(String::as_str).collect();
    if replicas.is_empty() {
        return owners;
    }
    let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (process, group) in groups {
        members.entry(group).or_default().push(process);
    }
    let mut order: Vec<(&str, Vec<&str>)> = members.into_iter().collect();
    order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut quota = Quota::new(groups.len(), replicas.len());
    let mut load: HashMap<&str, usize> = replicas.iter().map(|r| (*r, 0)).collect();
    for (group, procs) in order {
        let mut ranked: Vec<&str> = replicas.iter().copied().collect();
        ranked.sort_by_key(|r| (std::cmp::Reverse(score(group, r)), *r));
        let size = procs.len();
        let chosen = ranked
            .iter()
            .find(|r| quota.fits(load[**r], size))
            // A group too large for any replica's room: the least loaded takes it.
            .or_else(|| ranked.iter().min_by_key(|r| load[**r]))
            .copied()
            .expect("at least one replica");
        let held = load.get_mut(chosen).expect("a known replica");
        quota.take(*held, size);
        *held += size;
        for p in procs {
            owners.insert(p.to_string(), chosen.to_string());
        }
    }
    owners
}

/// How much each replica may take: ⌊P/N⌋, and one more for P mod N of them.
struct Quota {
    floor: usize,
    /// How many more replicas may go above `floor`.
    extra: usize,
}

impl Quota {
    fn new(processes: usize, replicas: usize) -> Self {
        Quota {
            floor: processes / replicas,
            extra: processes % replicas,
        }
    }

    /// Whether a replica holding `load` has room for `size` more.
    fn fits(&self, load: usize, size: usize) -> bool {
        load + size <= self.floor || (self.extra > 0 && load <= self.floor && load + size == self.floor + 1)
    }

    /// A replica holding `load` takes `size` more: going above `floor` uses
    /// up one of the extra places (a forced group's too, while any are left).
    fn take(&mut self, load: usize, size: usize) {
        if load <= self.floor && load + size > self.floor {
            self.extra = self.extra.saturating_sub(1);
        }
    }
}

/// A stable 64-bit score of (group, replica): FNV-1a, then a finalizer for
/// avalanche. Stable across builds and versions, unlike std's hasher.
pub(super) fn score(group: &str, replica: &str) -> u64 {
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

    /// Every replica's count, those holding nothing included.
    fn held_by(owners: &HashMap<String, String>, names: &[String]) -> Vec<usize> {
        let c = counts(owners);
        names.iter().map(|r| c.get(r).copied().unwrap_or(0)).collect()
    }

    #[test]
    fn every_replica_holds_the_floor_or_the_ceiling_of_even() {
        for n in 1..=9usize {
            for p in 0..=64usize {
                let names: Vec<String> = (0..n).map(|i| format!("replica-{i}")).collect();
                let owners = assign(&singles(p), &names);
                assert_eq!(owners.len(), p);
                let held = held_by(&owners, &names);
                assert!(
                    held.iter().all(|c| (p / n..=p.div_ceil(n)).contains(c)),
                    "{p} processes on {n} replicas: {held:?}"
                );
            }
        }
    }

    #[test]
    fn shares_are_the_same_everywhere() {
        for (p, n) in [(12, 3), (12, 4), (13, 3), (1000, 7), (5, 2), (7, 3), (16, 3)] {
            let names: Vec<String> = (0..n).map(|i| format!("replica-{i}")).collect();
            let owners = assign(&singles(p), &names);
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
        let names = replicas(&["a", "b", "c"]);
        let owners = assign(&groups, &names);
        assert_eq!(owners["p01"], owners["p02"]);
        assert_eq!(owners["p01"], owners["p03"]);
        // 10 processes on 3: 3 or 4 each, the group of 3 counted as its members.
        let held = held_by(&owners, &names);
        assert!(held.iter().all(|c| (3..=4).contains(c)), "{held:?}");
    }

    #[test]
    fn groups_put_a_replica_off_even_by_at_most_one_group() {
        // Groups of 1 to 4 among 30 processes, on 2 to 6 replicas.
        for n in 2..=6usize {
            // Groups of 1, 2, 3, 4, 1, 2, … members, each named after its first.
            let mut groups = BTreeMap::new();
            let (mut next, mut size) = (0, 1);
            while next < 30 {
                for i in next..(next + size).min(30) {
                    groups.insert(format!("p{i:02}"), format!("p{next:02}"));
                }
                next += size;
                size = size % 4 + 1;
            }
            let largest = 4;
            let names: Vec<String> = (0..n).map(|i| format!("replica-{i}")).collect();
            let owners = assign(&groups, &names);
            for (p, g) in &groups {
                assert_eq!(owners[p], owners[g], "{p} goes with its group {g}");
            }
            let held = held_by(&owners, &names);
            let (lo, hi) = ((30 / n).saturating_sub(largest), 30usize.div_ceil(n) + largest);
            assert!(
                held.iter().all(|c| (lo..=hi).contains(c)),
                "{n} replicas: {held:?} (largest group {largest})"
            );
        }
    }
}
