//! Dependency graph of an environment's services: cycle detection with the
//! cycle's path, topological order, and the critical path.

use std::collections::HashMap;
use std::time::Duration;

/// Nodes are indices `0..len`; `deps[i]` are the nodes `i` depends on.
#[derive(Debug, Clone)]
pub struct Dag {
    names: Vec<String>,
    index: HashMap<String, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl Dag {
    /// Builds the graph; dependencies naming unknown nodes are ignored (the
    /// manifest validator reports those separately).
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Dag {
        let nodes: Vec<(&str, &[String])> = nodes.into_iter().collect();
        let mut index = HashMap::with_capacity(nodes.len());
        for (i, (n, _)) in nodes.iter().enumerate() {
            index.insert(String::from(*n), i);
        }
        let mut deps: Vec<Vec<usize>> = nodes.iter().map(|(_, ds)| Vec::with_capacity(ds.len())).collect();
        let mut dependents = vec![Vec::new(); nodes.len()];
        for (i, (_, ds)) in nodes.iter().enumerate() {
            for d in ds.iter() {
                if let Some(&j) = index.get(d.as_str())
                    && !deps[i].contains(&j)
                {
                    deps[i].push(j);
                    dependents[j].push(i);
                }
            }
        }
        Dag { index, names: nodes.iter().map(|(n, _)| String::from(*n)).collect(), deps, dependents }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn deps(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// Every cycle, one per strongly connected component, as a path that
    /// starts and ends at the same node: `["api", "cache", "api"]`.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        for component in self.strongly_connected() {
            let self_loop = component.len() == 1 && self.deps[component[0]].contains(&component[0]);
            if component.len() > 1 || self_loop {
                cycles.push(self.cycle_within(&component));
            }
        }
        cycles.sort();
        cycles
    }

    /// Tarjan's algorithm, iterative so 20,000-service chains cannot overflow the stack.
    fn strongly_connected(&self) -> Vec<Vec<usize>> {
        let n = self.len();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut next = 0;
        let mut out = Vec::new();
        for root in 0..n {
            if index[root] != usize::MAX {
                continue;
            }
            let mut work = vec![(root, 0usize)];
            while let Some(&mut (v, ref mut edge)) = work.last_mut() {
                if *edge == 0 && index[v] == usize::MAX {
                    index[v] = next;
                    low[v] = next;
                    next += 1;
                    stack.push(v);
                    on_stack[v] = true;
                }
                if *edge < self.deps[v].len() {
                    let w = self.deps[v][*edge];
                    *edge += 1;
                    if index[w] == usize::MAX {
                        work.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                } else {
                    work.pop();
                    if let Some(&(parent, _)) = work.last() {
                        low[parent] = low[parent].min(low[v]);
                    }
                    if low[v] == index[v] {
                        let mut component = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w] = false;
                            component.push(w);
                            if w == v {
                                break;
                            }
                        }
                        out.push(component);
                    }
                }
            }
        }
        out
    }

    /// A concrete cycle through the smallest-named member of a component.
    fn cycle_within(&self, component: &[usize]) -> Vec<String> {
        let start = *component.iter().min_by_key(|i| &self.names[**i]).expect("non-empty component");
        let member = |i: usize| component.contains(&i);
        // Breadth-first search from start back to start inside the component.
        let mut prev = vec![usize::MAX; self.len()];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut end = None;
        'search: while let Some(v) = queue.pop_front() {
            let mut next: Vec<usize> = self.deps[v].iter().copied().filter(|w| member(*w)).collect();
            next.sort_by_key(|w| &self.names[*w]);
            for w in next {
                if w == start {
                    end = Some(v);
                    break 'search;
                }
                if prev[w] == usize::MAX {
                    prev[w] = v;
                    queue.push_back(w);
                }
            }
        }
        let mut path = vec![start];
        let mut v = end.expect("a component with an edge has a cycle");
        let mut back = Vec::new();
        while v != start {
            back.push(v);
            v = prev[v];
        }
        path.extend(back.into_iter().rev());
        path.push(start);
        path.into_iter().map(|i| self.names[i].clone()).collect()
    }

    /// Dependencies before dependents; `None` when there is a cycle.
    pub fn topo_order(&self) -> Option<Vec<usize>> {
        let mut remaining: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..self.len()).filter(|i| remaining[*i] == 0).collect();
        ready.reverse();
        let mut order = Vec::with_capacity(self.len());
        while let Some(v) = ready.pop() {
            order.push(v);
            for &d in &self.dependents[v] {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.push(d);
                }
            }
        }
        (order.len() == self.len()).then_some(order)
    }

    /// The longest chain by total duration, and its length: no schedule can
    /// finish faster than this.
    pub fn critical_path(&self, duration: impl Fn(usize) -> Duration) -> (Vec<usize>, Duration) {
        match self.topo_order() {
            Some(order) => self.critical_path_in(&order, duration),
            None => (Vec::new(), Duration::ZERO),
        }
    }

    /// `critical_path` with the topological order already at hand.
    pub fn critical_path_in(&self, order: &[usize], duration: impl Fn(usize) -> Duration) -> (Vec<usize>, Duration) {
        let mut finish = vec![Duration::ZERO; self.len()];
        let mut via = vec![usize::MAX; self.len()];
        for &v in order {
            let (start, from) =
                self.deps[v].iter().map(|&d| (finish[d], d)).max().unwrap_or((Duration::ZERO, usize::MAX));
            finish[v] = start + duration(v);
            via[v] = from;
        }
        let Some((total, mut v)) = (0..self.len()).map(|i| (finish[i], i)).max() else {
            return (Vec::new(), Duration::ZERO);
        };
        let mut path = vec![v];
        while via[v] != usize::MAX {
            v = via[v];
            path.push(v);
        }
        path.reverse();
        (path, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(edges: &[(&str, &[&str])]) -> Dag {
        let owned: Vec<(String, Vec<String>)> =
            edges.iter().map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect())).collect();
        Dag::new(owned.iter().map(|(n, d)| (n.as_str(), d.as_slice())))
    }

    #[test]
    fn reports_cycle_path() {
        let g = dag(&[("api", &["cache"]), ("cache", &["api"]), ("db", &[])]);
        assert_eq!(g.cycles(), vec![vec!["api", "cache", "api"]]);
        assert!(g.topo_order().is_none());
    }

    #[test]
    fn reports_self_loop_and_separate_cycles() {
        let g = dag(&[("a", &["a"]), ("b", &["c"]), ("c", &["d"]), ("d", &["b"])]);
        assert_eq!(g.cycles(), vec![vec!["a", "a"], vec!["b", "c", "d", "b"]]);
    }

    #[test]
    fn critical_path_follows_longest_chain() {
        let g = dag(&[("db", &[]), ("cache", &["db"]), ("api", &["db", "cache"]), ("web", &[])]);
        let secs = [5, 1, 2, 7];
        let (path, total) = g.critical_path(|i| Duration::from_secs(secs[i]));
        let names: Vec<&str> = path.iter().map(|i| g.name(*i)).collect();
        assert_eq!(names, ["db", "cache", "api"]);
        assert_eq!(total, Duration::from_secs(8));
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let names: Vec<String> = (0..50_000).map(|i| format!("s{i}")).collect();
        let deps: Vec<Vec<String>> =
            (0..50_000).map(|i| if i == 0 { vec![] } else { vec![names[i - 1].clone()] }).collect();
        let g = Dag::new(names.iter().map(String::as_str).zip(deps.iter().map(Vec::as_slice)));
        assert!(g.cycles().is_empty());
        assert_eq!(g.topo_order().unwrap().len(), 50_000);
    }
}
