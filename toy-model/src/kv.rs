//! The simulated KV cache: which prompt prefixes the toy model "holds", as
//! vLLM's automatic prefix caching keeps them. Sans-IO: no clock, no lock, no
//! I/O; the server wraps one in a mutex.
//!
//! A prompt is a list of tokens cut into blocks of `block_tokens` (the toy
//! model's 16); only full blocks are cached. Block `i` is named by a chained
//! hash covering blocks `0..=i`, so the same block text after a different
//! prefix is a different block. The cache holds at most `capacity_tokens /
//! block_tokens` blocks and evicts the least recently used first; a prompt's
//! blocks are touched last block first, so that of one prompt the tail goes
//! before the head (vLLM frees a request's blocks in reverse order for the
//! same reason: a prefix is only found from its first block on).

use std::collections::{BTreeMap, HashMap};

/// The hash the first block's chain starts from (any fixed value).
const ROOT: u64 = 0x7377_6974_6368_7961; // "switchya"

/// An LRU set of chained block hashes with a fixed capacity.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Tokens per block (at least 1).
    block_tokens: usize,
    /// How many blocks it holds at most.
    capacity_blocks: usize,
    /// Each cached block's hash and the tick it was last touched at.
    blocks: HashMap<u64, u64>,
    /// The same blocks by tick, least recently used first.
    order: BTreeMap<u64, u64>,
    /// The last tick given out.
    tick: u64,
}

impl KvCache {
    /// An empty cache of `capacity_tokens` tokens (rounded down to whole
    /// blocks) in blocks of `block_tokens` tokens (0 counts as 1). A capacity
    /// under one block caches nothing.
    pub fn new(capacity_tokens: usize, block_tokens: usize) -> Self {
        let block_tokens = block_tokens.max(1);
        Self {
            block_tokens,
            capacity_blocks: capacity_tokens / block_tokens,
            blocks: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// How many of `tokens`' leading tokens are cached: the longest run of
    /// leading full blocks present, in tokens (a multiple of the block
    /// size). Does not count as a use.
    pub fn lookup<S: AsRef<str>>(&self, tokens: &[S]) -> usize {
        self.hashes(tokens)
            .iter()
            .take_while(|hash| self.blocks.contains_key(hash))
            .count()
            * self.block_tokens
    }

    /// Puts `tokens`' full blocks in the cache, or marks them used when they
    /// are there, evicting the least recently used blocks of other prompts
    /// to make room. A prompt longer than the whole cache keeps its leading
    /// blocks only.
    pub fn insert<S: AsRef<str>>(&mut self, tokens: &[S]) {
        let mut hashes = self.hashes(tokens);
        hashes.truncate(self.capacity_blocks);
        // Take this prompt's blocks out of the order first, so that making
        // room never evicts one of them.
        for hash in &hashes {
            if let Some(tick) = self.blocks.remove(hash) {
                self.order.remove(&tick);
            }
        }
        while self.blocks.len() + hashes.len() > self.capacity_blocks {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.blocks.remove(&oldest);
        }
        for hash in hashes.into_iter().rev() {
            self.tick += 1;
            self.blocks.insert(hash, self.tick);
            self.order.insert(self.tick, hash);
        }
    }

    /// The share of the capacity in use, 0.0 to 1.0 (vLLM's
    /// `gpu_cache_usage_perc`); 0.0 for a capacity of no block.
    pub fn usage(&self) -> f32 {
        if self.capacity_blocks == 0 {
            0.0
        } else {
            (self.blocks.len() as f64 / self.capacity_blocks as f64) as f32
        }
    }

    /// How many blocks are cached.
    pub fn used_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// How many blocks it holds at most.
    pub fn capacity_blocks(&self) -> usize {
        self.capacity_blocks
    }

    /// The chained hashes of `tokens`' full blocks, first block first.
    fn hashes<S: AsRef<str>>(&self, tokens: &[S]) -> Vec<u64> {
        let mut parent = ROOT;
        tokens
            .chunks_exact(self.block_tokens)
            .map(|block| {
                parent = block_hash(parent, block);
                parent
            })
            .collect()
    }
}

/// The hash of one block after the blocks hashed to `parent`: 64-bit FNV-1a
/// over `parent`'s bytes and the tokens, each followed by a space.
fn block_hash<S: AsRef<str>>(parent: u64, block: &[S]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut eat = |byte: u8| hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
    parent.to_le_bytes().into_iter().for_each(&mut eat);
    for token in block {
        token.as_ref().bytes().for_each(&mut eat);
        eat(b' ');
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` tokens `p0 p1 ...` with prefix `p`.
    fn tokens(p: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{p}{i}")).collect()
    }

    #[test]
    fn a_shared_prefix_hits_in_whole_blocks() {
        let mut cache = KvCache::new(1024, 16);
        let first = tokens("a", 40);
        assert_eq!(cache.lookup(&first), 0);
        cache.insert(&first);
        assert_eq!(cache.used_blocks(), 2, "the 8 tokens past 32 are no block");
        assert_eq!(cache.lookup(&first), 32);
        // A later turn: the same 40 tokens, then more.
        let mut second = first.clone();
        second.extend(tokens("b", 30));
        assert_eq!(cache.lookup(&second), 32);
        cache.insert(&second);
        assert_eq!(cache.lookup(&second), 64);
        // Diverging inside block 1: block 0 only.
        let mut other = first[..20].to_vec();
        other.extend(tokens("c", 20));
        assert_eq!(cache.lookup(&other), 16);
        assert_eq!(cache.lookup(&tokens("z", 100)), 0);
    }

    #[test]
    fn the_least_recently_used_blocks_go_first_at_capacity() {
        // Room for 4 blocks.
        let mut cache = KvCache::new(4 * 16 + 15, 16);
        assert_eq!(cache.capacity_blocks(), 4);
        let (a, b, c) = (tokens("a", 32), tokens("b", 32), tokens("c", 32));
        cache.insert(&a);
        cache.insert(&b);
        assert!((cache.usage() - 1.0).abs() < f32::EPSILON);
        cache.insert(&a); // a is now the most recent
        cache.insert(&c); // evicts b
        assert_eq!(cache.used_blocks(), 4);
        assert_eq!(cache.lookup(&a), 32);
        assert_eq!(cache.lookup(&b), 0);
        assert_eq!(cache.lookup(&c), 32);
        // One more block evicts a's tail first: a keeps its head.
        cache.insert(&tokens("d", 16));
        assert_eq!(cache.lookup(&a), 16);
        assert_eq!(cache.lookup(&c), 32);
    }

    #[test]
    fn a_prompt_longer_than_the_cache_keeps_its_head() {
        let mut cache = KvCache::new(48, 16);
        let long = tokens("a", 100);
        cache.insert(&long);
        assert_eq!(cache.used_blocks(), 3);
        assert_eq!(cache.lookup(&long), 48);
    }

    #[test]
    fn hashes_are_chained() {
        let mut cache = KvCache::new(1024, 16);
        let (x, y) = (tokens("x", 16), tokens("y", 16));
        cache.insert(&[x.clone(), y.clone()].concat());
        // y's block text after another first block is another block.
        assert_eq!(cache.lookup(&[tokens("w", 16), y.clone()].concat()), 0);
        assert_eq!(cache.lookup(&y), 0, "y at the start is no hit either");
        assert_eq!(cache.lookup(&[x, y].concat()), 32);
        // Word boundaries count: `ab c` is not `a bc`.
        let mut split = vec!["ab".to_string(), "c".to_string()];
        split.extend(tokens("t", 14));
        let mut other = vec!["a".to_string(), "bc".to_string()];
        other.extend(tokens("t", 14));
        cache.insert(&split);
        assert_eq!(cache.lookup(&other), 0);
    }

    #[test]
    fn an_empty_or_short_prompt_caches_nothing() {
        let mut cache = KvCache::new(1024, 16);
        let empty: [&str; 0] = [];
        assert_eq!(cache.lookup(&empty), 0);
        cache.insert(&empty);
        cache.insert(&tokens("a", 15));
        assert_eq!(cache.used_blocks(), 0);
        assert_eq!(cache.lookup(&tokens("a", 15)), 0);
        assert_eq!(cache.usage(), 0.0);
    }

    #[test]
    fn a_capacity_of_no_block_caches_nothing() {
        for capacity in [0, 15] {
            let mut cache = KvCache::new(capacity, 16);
            let prompt = tokens("a", 64);
            cache.insert(&prompt);
            assert_eq!(cache.lookup(&prompt), 0);
            assert_eq!(cache.used_blocks(), 0);
            assert_eq!(cache.usage(), 0.0);
        }
        // A block size of 0 counts as 1.
        let mut cache = KvCache::new(2, 0);
        cache.insert(&["a", "b", "c"]);
        assert_eq!(cache.lookup(&["a", "b", "c"]), 2);
    }

    #[test]
    fn usage_is_the_share_of_blocks_in_use() {
        let mut cache = KvCache::new(64, 16);
        cache.insert(&tokens("a", 16));
        assert!((cache.usage() - 0.25).abs() < f32::EPSILON);
        cache.insert(&tokens("b", 48));
        assert!((cache.usage() - 1.0).abs() < f32::EPSILON);
    }
}
