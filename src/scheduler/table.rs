//! The process table: every process by id, and the links between them
//! (who follows whom, who excludes whom, which processes form a group that
//! one replica holds). Built once from the processes' settings and replaced
//! whole by a reload, so a tick or a run never sees half of a change.

use std::collections::HashMap;
use std::sync::Arc;

use super::state::ProcessHandle;

/// The processes by id, and who follows and excludes whom.
#[derive(Default)]
pub(crate) struct Table {
    pub processes: Arc<Vec<Arc<ProcessHandle>>>,
    pub(super) index: HashMap<Arc<str>, usize>,
    /// Process → the chained processes that run after it.
    pub(super) followers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>>,
    /// Process → the processes it never runs beside (symmetric).
    pub(super) peers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>>,
    /// Process → every process linked to it, directly or not (itself included);
    /// only for processes that have links.
    pub(super) groups: HashMap<Arc<str>, Arc<[Arc<ProcessHandle>]>>,
}

impl Table {
    pub(super) fn new(processes: Vec<Arc<ProcessHandle>>) -> Table {
        let index: HashMap<Arc<str>, usize> = processes.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
        let get = |id: &str| index.get(id).map(|&i| processes[i].clone());
        let mut followers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>> = HashMap::new();
        let mut peers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>> = HashMap::new();
        for p in &processes {
            let config = p.config();
            for leader in config.after.iter().filter_map(|id| get(id)) {
                followers.entry(leader.id.clone()).or_default().push(p.clone());
            }
            for peer in config.exclusive_with.iter().filter_map(|id| get(id)) {
                for (a, b) in [(p, &peer), (&peer, p)] {
                    let list = peers.entry(a.id.clone()).or_default();
                    if !list.iter().any(|q| q.id == b.id) {
                        list.push(b.clone());
                    }
                }
            }
        }
        let configs = processes
            .iter()
            .map(|p| (p.id.to_string(), (*p.config()).clone()))
            .collect();
        let mut members: HashMap<String, Vec<Arc<ProcessHandle>>> = HashMap::new();
        for (id, group) in crate::config::link_groups(&configs) {
            members.entry(group).or_default().extend(get(&id));
        }
        let groups = members
            .into_values()
            .filter(|m| m.len() > 1)
            .flat_map(|m| {
                let m: Arc<[Arc<ProcessHandle>]> = m.into();
                m.iter().map(|p| (p.id.clone(), m.clone())).collect::<Vec<_>>()
            })
            .collect();
        Table {
            processes: Arc::new(processes),
            index,
            followers,
            peers,
            groups,
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&Arc<ProcessHandle>> {
        self.index.get(id).map(|&i| &self.processes[i])
    }
}
