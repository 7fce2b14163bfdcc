//! Topic matching in time linear in the routing key: the binding patterns of a topic exchange
//! as one trie, run as a nondeterministic automaton over the key's words.
//!
//! Words are separated by `.`; in a pattern `*` matches exactly one word and `#` zero or more.
//! An empty key or pattern has zero words (not one empty word); `a..b` has an empty middle
//! word. Both as RabbitMQ (`rabbit_exchange_type_topic`), checked against it by
//! `tests/broker_exchange.rs`.
//!
//! Why an automaton: RabbitMQ's matcher, and ours before this one, backtrack over `#`, trying
//! every split of the key: a pattern of six `#` against a 127-word key took ~24 s, and each
//! more `#` multiplied that by ~25. Here each node of the trie is a state; a key word moves
//! every active state along its literal edge for that word and its `*` edge, a `#` node stays
//! active on any word (it consumes the word), and entering a node also enters its `#` child (a
//! `#` may match no word). The active set holds each node at most once, so routing a key of
//! `n` words costs at most `n` times the number of nodes, whatever the patterns; for one
//! binding of `m` words, `n × m` (a 255-byte key against a 255-byte pattern: at most 128 × 128
//! steps). Bindings that share a prefix share nodes, so literal-prefixed patterns (`user.42.#`)
//! cost only the nodes on the key's own path.
//!
//! Layout: nodes in one `Vec` (node 0 is the root, the empty pattern); literal edges keyed by a
//! word id from the trie's dictionary (each key word is hashed once per route, not once per
//! active node). Removing a binding only takes its slot off its end node; nodes and words left
//! unused are dropped when the owning binding set compacts (rebuilding the trie), which it does
//! once half of its slots are dead.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One trie node: a pattern prefix.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Literal edges: word id -> node.
    words: HashMap<u32, u32, BuildHasherDefault<IdHasher>>,
    /// The `*` edge (0: none; the root is never a child).
    star: u32,
    /// The `#` edge (0: none).
    hash: u32,
    /// This node was entered by a `#` edge: it matches any further word by staying active.
    is_hash: bool,
    /// The binding slots whose pattern ends here.
    ends: Vec<u32>,
}

/// The patterns of one topic exchange; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct TopicTrie {
    /// Node 0 is the root.
    nodes: Vec<Node>,
    /// Literal words seen in patterns -> word id.
    dictionary: HashMap<Box<str>, u32>,
}

impl Default for TopicTrie {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
            dictionary: HashMap::new(),
        }
    }
}

/// The words of a key or pattern: none for the empty string.
fn words(s: &str) -> impl Iterator<Item = &str> {
    let mut split = s.split('.');
    if s.is_empty() {
        // `"".split('.')` yields one empty word; RabbitMQ counts none.
        split.next();
    }
    split
}

impl TopicTrie {
    /// Nodes in the trie (the routing cost bound per key word).
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The child of node `at` along the pattern word `word` (`*`, `#` or a literal word);
    /// 0 (the root, never a child) when there is none.
    fn child(&self, at: usize, word: &str) -> u32 {
        match word {
            "*" => self.nodes[at].star,
            "#" => self.nodes[at].hash,
            w => self
                .dictionary
                .get(w)
                .and_then(|id| self.nodes[at].words.get(id).copied())
                .unwrap_or(0),
        }
    }

    /// Adds binding `slot` with `pattern`.
    pub(crate) fn insert(&mut self, pattern: &str, slot: u32) {
        let mut at = 0usize;
        for word in words(pattern) {
            let next = self.child(at, word);
            at = if next != 0 {
                next as usize
            } else {
                let new = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
                self.nodes.push(Node {
                    is_hash: word == "#",
                    ..Node::default()
                });
                match word {
                    "*" => self.nodes[at].star = new,
                    "#" => self.nodes[at].hash = new,
                    w => {
                        let fresh = u32::try_from(self.dictionary.len()).unwrap_or(u32::MAX);
                        let id = *self.dictionary.entry(w.into()).or_insert(fresh);
                        self.nodes[at].words.insert(id, new);
                    }
                }
                new as usize
            };
        }
        self.nodes[at].ends.push(slot);
    }

    /// Removes binding `slot` with `pattern` (a no-op if it is not there).
    pub(crate) fn remove(&mut self, pattern: &str, slot: u32) {
        let mut at = 0usize;
        for word in words(pattern) {
            let next = self.child(at, word);
            if next == 0 {
                return;
            }
            at = next as usize;
        }
        self.nodes[at].ends.retain(|s| *s != slot);
    }

    /// Calls `matched` with the slot of every binding whose pattern matches `key` (each once).
    /// Returns the work done: active states visited, plus one per key word; `None` (and no
    /// call of `matched`) if the work passes `limit` before the end of the key.
    pub(crate) fn route(
        &self,
        key: &str,
        limit: usize,
        mut matched: impl FnMut(u32),
    ) -> Option<usize> {
        SCRATCH.with(|scratch| {
            // Routing never re-enters itself on one thread, so the scratch is free here; if it
            // somehow were not, fall back to fresh buffers rather than panic.
            match scratch.try_borrow_mut() {
                Ok(mut s) => self.run(&mut s, key, limit, &mut matched),
                Err(_) => self.run(&mut Scratch::default(), key, limit, &mut matched),
            }
        })
    }

    fn run(
        &self,
        s: &mut Scratch,
        key: &str,
        limit: usize,
        matched: &mut impl FnMut(u32),
    ) -> Option<usize> {
        if s.stamp.len() < self.nodes.len() {
            s.stamp.resize(self.nodes.len(), 0);
        }
        let mut work = 0;
        s.active.clear();
        s.next_step();
        self.enter(s, 0, true);
        for word in words(key) {
            work += 1 + s.active.len();
            if work > limit {
                return None;
            }
            let id = self.dictionary.get(word).copied();
            s.next_step();
            let mut i = 0;
            // `active` is read while `next` fills; the two are swapped after the word.
            while i < s.active.len() {
                let at = s.active[i];
                let node = &self.nodes[at as usize];
                if node.is_hash {
                    self.enter(s, at, false);
                }
                if let Some(child) = id.and_then(|id| node.words.get(&id)) {
                    self.enter(s, *child, false);
                }
                if node.star != 0 {
                    self.enter(s, node.star, false);
                }
                i += 1;
            }
            std::mem::swap(&mut s.active, &mut s.next);
            s.next.clear();
            if s.active.is_empty() {
                return Some(work);
            }
        }
        work += s.active.len();
        for &node in &s.active {
            for &slot in &self.nodes[node as usize].ends {
                matched(slot);
            }
        }
        Some(work)
    }

    /// Makes `node` active for the current step, with the `#` nodes reachable from it without
    /// consuming a word. `initial`: into `active` (before the first word), else into `next`.
    fn enter(&self, s: &mut Scratch, node: u32, initial: bool) {
        let mut at = node;
        loop {
            let stamp = &mut s.stamp[at as usize];
            if *stamp == s.step {
                return;
            }
            *stamp = s.step;
            if initial {
                s.active.push(at);
            } else {
                s.next.push(at);
            }
            at = self.nodes[at as usize].hash;
            if at == 0 {
                return;
            }
        }
    }
}

/// Per-thread buffers of the automaton, reused across routes (no allocation per publish once
/// they have grown to the largest trie routed on the thread).
#[derive(Debug, Default)]
struct Scratch {
    /// `stamp[node] == step`: the node is already in the set being built.
    stamp: Vec<u32>,
    /// The current step; bumped per key word.
    step: u32,
    /// Active nodes.
    active: Vec<u32>,
    /// Nodes active after the current word.
    next: Vec<u32>,
}

impl Scratch {
    fn next_step(&mut self) {
        self.step = self.step.wrapping_add(1);
        if self.step == 0 {
            // Wrapped: old stamps could collide with new steps.
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.step = 1;
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A hasher for the trie's own word ids (sequential numbers we assign, so no caller chooses
/// them): Fibonacci hashing, one multiply.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The backtracking definition, for comparison (exponential: small inputs only).
    fn reference(pattern: &str, key: &str) -> bool {
        fn go(p: &[&str], k: &[&str]) -> bool {
            match p.split_first() {
                None => k.is_empty(),
                Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
                Some((&w, rest)) => match k.split_first() {
                    Some((first, k_rest)) => (w == "*" || w == *first) && go(rest, k_rest),
                    None => false,
                },
            }
        }
        let p: Vec<&str> = words(pattern).collect();
        let k: Vec<&str> = words(key).collect();
        go(&p, &k)
    }

    fn matches(pattern: &str, key: &str) -> bool {
        let mut trie = TopicTrie::default();
        trie.insert(pattern, 7);
        let mut hit = false;
        trie.route(key, usize::MAX, |slot| {
            assert_eq!(slot, 7);
            assert!(!hit, "reported twice");
            hit = true;
        });
        hit
    }

    #[test]
    fn hash_matches_zero_or_more_words_and_star_exactly_one() {
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(matches("#", ""));
        assert!(matches("#", "a.b"));
        assert!(matches("#.b", "b"));
        assert!(matches("a.#.c", "a.c"));
        assert!(matches("*.orange.*", "quick.orange.rabbit"));
        assert!(!matches("*.orange.*", "orange.rabbit"));
        assert!(!matches("*.orange.*", "a.quick.orange.rabbit"));
        assert!(!matches("a.*", "a"));
        assert!(matches("lazy.#", "lazy.orange.male.rabbit"));
        assert!(!matches("*", ""));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("a..b", "a..b"));
        assert!(matches("a.*.b", "a..b"));
        assert!(!matches("a.b", "a..b"));
        assert!(matches("#.#", ""));
        assert!(matches("*.#.*", "a.b"));
        assert!(!matches("*.#.*", "a"));
    }

    #[test]
    fn agrees_with_backtracking_on_every_small_pattern_and_key() {
        // Every pattern of up to 4 words over {a, b, *, #} against every key of up to 5 words
        // over {a, b}.
        let pattern_words = ["a", "b", "*", "#"];
        let key_words = ["a", "b"];
        let mut patterns = vec![String::new()];
        for len in 1..=4u32 {
            for n in 0..4usize.pow(len) {
                let mut p = Vec::new();
                let mut x = n;
                for _ in 0..len {
                    p.push(pattern_words[x % 4]);
                    x /= 4;
                }
                patterns.push(p.join("."));
            }
        }
        let mut keys = vec![String::new()];
        for len in 1..=5u32 {
            for n in 0..2usize.pow(len) {
                let k: Vec<&str> = (0..len).map(|i| key_words[(n >> i) & 1]).collect();
                keys.push(k.join("."));
            }
        }
        // One trie holding every pattern must report exactly the matching ones.
        let mut trie = TopicTrie::default();
        for (slot, p) in patterns.iter().enumerate() {
            trie.insert(p, slot as u32);
        }
        for key in &keys {
            let mut got = Vec::new();
            trie.route(key, usize::MAX, |slot| got.push(slot as usize));
            got.sort_unstable();
            let want: Vec<usize> = (0..patterns.len())
                .filter(|&i| reference(&patterns[i], key))
                .collect();
            assert_eq!(got, want, "key {key:?}");
        }
    }

    #[test]
    fn removed_patterns_stop_matching_and_shared_prefixes_survive() {
        let mut trie = TopicTrie::default();
        trie.insert("a.#", 1);
        trie.insert("a.*", 2);
        trie.insert("a.#", 3);
        trie.remove("a.#", 1);
        trie.remove("x.y", 9);
        let mut got = Vec::new();
        trie.route("a.b", usize::MAX, |s| got.push(s));
        got.sort_unstable();
        assert_eq!(got, [2, 3]);
    }

    #[test]
    fn the_worst_case_costs_key_words_times_nodes() {
        // Issue 13: `#.#.#.#.#.#.b` against 127 words `a`. Backtracking: minutes.
        let key = vec!["a"; 127].join(".");
        for hashes in [5, 6, 40, 127] {
            let pattern = format!("{}b", "#.".repeat(hashes));
            let mut trie = TopicTrie::default();
            trie.insert(&pattern, 0);
            let mut hit = false;
            let work = trie.route(&key, usize::MAX, |_| hit = true).unwrap();
            assert!(!hit);
            assert!(
                work <= 128 * (trie.node_count() + 1),
                "{hashes} #: work {work}"
            );
            let mut hit = false;
            trie.route(&format!("{key}.b"), usize::MAX, |_| hit = true);
            assert!(hit, "{hashes} # then b");
            // With a limit below the work, it gives up without reporting anything.
            let mut hit = false;
            assert_eq!(trie.route(&format!("{key}.b"), 100, |_| hit = true), None);
            assert!(!hit);
        }
    }
}
