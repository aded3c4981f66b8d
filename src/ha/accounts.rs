//! Accounts over replicas (`ha.share_accounts`): which live replica works
//! for each exchange account.
//!
//! Every replica computes the same owner for an account from the same inputs
//! (the account's name and the live replica list the heartbeat reads), so no
//! election and no message is needed. The rule is plain rendezvous hashing:
//! the replica with the highest score for (account, replica) owns it.
//!
//! Why no quotas here, unlike the processes' fair shares (`shares`): an
//! account's owner depends on nothing but its own name and the replicas, so
//! replicas agree on it even while their account lists differ for a moment
//! (an account added through one replica's API reaches the others later),
//! and the registry can answer for an account it has never seen. What it
//! costs is exact balance: each account lands on a replica independently, so
//! with A accounts on N replicas each replica holds about A/N ± √(A/N)
//! (1 000 on 3: 333 ± 18), never exactly even. A replica leaving moves only
//! its own accounts (each to its runner-up); one joining takes about A/N from
//! the others; a replica restarted under the same `ha.replica_id` gets the
//! same accounts back.

use std::sync::Arc;

use crate::accounts::Owner;

/// The live replica that works for `account` (`None` without replicas).
/// The same for any order of `replicas`.
pub fn owner<'a>(account: &str, replicas: &'a [String]) -> Option<&'a str> {
    replicas
        .iter()
        .map(String::as_str)
        // Ties (never seen with a 64-bit score) go to the smaller name, on every replica alike.
        .max_by_key(|r| (super::shares::score(account, r), std::cmp::Reverse(*r)))
}

/// The registry's owner test for replica `me` among `replicas` (`me` counted
/// alive even if the list has not caught up with it yet).
pub fn owned_by(me: &str, replicas: &[String]) -> Owner {
    let mut replicas = replicas.to_vec();
    if !replicas.iter().any(|r| r == me) {
        replicas.push(me.to_string());
    }
    let me = me.to_string();
    Arc::new(move |account: &str| owner(account, &replicas) == Some(me.as_str()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("{prefix}{i:02}")).collect()
    }

    fn assignment(accounts: &[String], replicas: &[String]) -> BTreeMap<String, String> {
        accounts
            .iter()
            .map(|a| (a.clone(), owner(a, replicas).unwrap().to_string()))
            .collect()
    }

    #[test]
    fn every_order_of_the_replicas_gives_the_same_owners() {
        let accounts = names("acct-", 200);
        let replicas = names("replica-", 5);
        let expected = assignment(&accounts, &replicas);
        let mut shuffled = replicas.clone();
        for turn in 0..replicas.len() {
            shuffled.rotate_left(1);
            if turn % 2 == 1 {
                shuffled.reverse();
            }
            assert_eq!(assignment(&accounts, &shuffled), expected, "order {shuffled:?}");
        }
        assert_eq!(owner("acct-01", &[]), None);
    }

    #[test]
    fn a_replica_leaving_moves_only_its_own_accounts_and_a_rejoin_takes_them_back() {
        let accounts = names("acct-", 300);
        let all = names("replica-", 3);
        let before = assignment(&accounts, &all);
        let gone = "replica-02";
        let rest: Vec<String> = all.iter().filter(|r| *r != gone).cloned().collect();
        let after = assignment(&accounts, &rest);
        for (account, was) in &before {
            if was != gone {
                assert_eq!(&after[account], was, "{account} moved though its replica stayed");
            }
        }
        assert!(before.values().any(|r| r == gone), "the leaving replica had a share");
        assert_eq!(assignment(&accounts, &all), before, "a rejoin gets the same share back");
    }

    #[test]
    fn shares_are_near_even_and_never_empty_for_the_tests_accounts() {
        // The integration test's 20 accounts on its two replicas: both work some.
        let owners = assignment(&names("a", 20), &["r1".to_string(), "r2".to_string()]);
        let r1 = owners.values().filter(|r| *r == "r1").count();
        assert!((1..20).contains(&r1), "r1 owns {r1} of 20");
        // 3 000 accounts on 3: about 1 000 each (± 3 standard deviations of ~26).
        let owners = assignment(&names("acct-", 3000), &names("replica-", 3));
        for r in names("replica-", 3) {
            let n = owners.values().filter(|o| **o == r).count();
            assert!((920..=1080).contains(&n), "{r} owns {n} of 3000");
        }
    }

    #[test]
    fn the_owner_test_counts_this_replica_alive_and_agrees_with_the_others() {
        let replicas = vec!["r1".to_string(), "r2".to_string()];
        let (r1, r2) = (owned_by("r1", &replicas), owned_by("r2", &replicas));
        for account in names("a", 20) {
            assert!(r1(&account) ^ r2(&account), "{account}: exactly one owner");
        }
        // Not yet in the list it read: still owns its share, not nothing.
        let alone = owned_by("r3", &replicas);
        assert!(names("a", 60).iter().any(|a| alone(a)));
        // Alone, it owns everything.
        let solo = owned_by("r1", &[]);
        assert!(names("a", 20).iter().all(|a| solo(a)));
    }
}
