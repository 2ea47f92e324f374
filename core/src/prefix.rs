//! Chained block hashes of a call's prompt, for prefix-aware (cache-aware)
//! policies.
//!
//! A prompt is cut into blocks of `block_tokens` tokens; block i's hash
//! covers blocks 0..=i (it hashes the previous block's hash with the block's
//! tokens), as vLLM's automatic prefix caching keys its KV-cache blocks. So
//! two prompts share their first k blocks exactly when their first k hashes
//! are equal, and a policy can keep, per node, the set of hashes it sent
//! there and find the longest cached prefix of a new call by lookups alone.
//!
//! Tokens here are whitespace-separated words: the gateway has no tokenizer
//! of the model, and a policy only needs a stable cut that two requests with
//! the same leading text share. Only whole blocks are hashed (a trailing
//! partial block is left out, as vLLM caches only full blocks), and at most
//! `max_blocks`.
//!
//! Hashes are the first 8 bytes (little-endian) of BLAKE3, so they are the
//! same on every build and platform.

/// The tokens per block when `gateway.toml` sets none (`[prefix]
/// block_tokens`): vLLM's default block size.
pub const DEFAULT_BLOCK_TOKENS: usize = 16;

/// The most blocks hashed per call when `gateway.toml` sets none (`[prefix]
/// max_blocks`): 256 blocks of 16 tokens cover a 4096-token prompt.
pub const DEFAULT_MAX_BLOCKS: usize = 256;

/// The chained hashes of the whole blocks of `tokens`, first block first:
/// at most `max_blocks`; empty when `block_tokens` is 0 or there is no whole
/// block.
///
/// Consumes only as many tokens as the hashed blocks need.
pub fn block_hashes<'a>(
    tokens: impl IntoIterator<Item = &'a str>,
    block_tokens: usize,
    max_blocks: usize,
) -> Vec<u64> {
    let mut hashes = Vec::new();
    if block_tokens == 0 || max_blocks == 0 {
        return hashes;
    }
    let mut hasher = chained(0);
    let mut in_block = 0;
    for token in tokens {
        // The length first, so that ("ab", "c") and ("a", "bc") differ.
        hasher.update(&(token.len() as u64).to_le_bytes());
        hasher.update(token.as_bytes());
        in_block += 1;
        if in_block == block_tokens {
            let hash = finish(&hasher);
            hashes.push(hash);
            if hashes.len() == max_blocks {
                break;
            }
            hasher = chained(hash);
            in_block = 0;
        }
    }
    hashes
}

/// The chained hashes of `text`'s whitespace-separated words (see
/// [`block_hashes`]).
pub fn text_hashes(text: &str, block_tokens: usize, max_blocks: usize) -> Vec<u64> {
    block_hashes(text.split_whitespace(), block_tokens, max_blocks)
}

/// The hash of an opaque affinity key (the call hint `affinity=...`): one
/// block holding the whole key, so calls with equal keys share it.
pub fn key_hashes(key: &str) -> Vec<u64> {
    block_hashes([key], 1, 1)
}

fn chained(previous: u64) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&previous.to_le_bytes());
    hasher
}

fn finish(hasher: &blake3::Hasher) -> u64 {
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize, salt: &str) -> String {
        (0..n).map(|i| format!("{salt}{i} ")).collect()
    }

    #[test]
    fn hashes_whole_blocks_only() {
        assert_eq!(text_hashes(&words(15, "w"), 16, 256).len(), 0);
        assert_eq!(text_hashes(&words(16, "w"), 16, 256).len(), 1);
        assert_eq!(text_hashes(&words(47, "w"), 16, 256).len(), 2);
        assert!(text_hashes("", 16, 256).is_empty());
        assert!(text_hashes(&words(64, "w"), 0, 256).is_empty());
    }

    #[test]
    fn a_shared_prefix_shares_exactly_its_hashes() {
        let base = words(48, "w");
        let longer = format!("{base} {}", words(32, "x"));
        let a = text_hashes(&base, 16, 256);
        let b = text_hashes(&longer, 16, 256);
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 5);
        assert_eq!(a[..], b[..3]);
        // One different word in block 1 changes that block and every later one.
        let changed = base.replacen("w20 ", "zz ", 1);
        let c = text_hashes(&changed, 16, 256);
        assert_eq!(c[0], a[0]);
        assert_ne!(c[1], a[1]);
        assert_ne!(c[2], a[2]);
    }

    #[test]
    fn chained_the_same_block_after_another_prefix_differs() {
        let one = format!("{}{}", words(16, "a"), words(16, "s"));
        let two = format!("{}{}", words(16, "b"), words(16, "s"));
        let (one, two) = (text_hashes(&one, 16, 8), text_hashes(&two, 16, 8));
        assert_ne!(
            one[1], two[1],
            "block 1 holds the same words after different block 0"
        );
    }

    /// `text_hashes("a b c d", 2, 8)`, computed once and pinned: the hashes
    /// are the same on every build and platform.
    const GOLDEN: [u64; 2] = [1_694_017_109_686_591_383, 9_973_069_278_270_527_448];

    #[test]
    fn stable_and_whitespace_insensitive() {
        let a = text_hashes("a b c d", 2, 8);
        let b = text_hashes("  a\n b\tc   d ", 2, 8);
        assert_eq!(a, b);
        // Golden value: the hashes never change between builds or releases.
        assert_eq!(a, GOLDEN, "got {a:?}");
        assert_eq!(key_hashes("user-42"), key_hashes("user-42"));
        assert_ne!(key_hashes("user-42"), key_hashes("user-43"));
        assert_ne!(text_hashes("ab c", 1, 8)[0], text_hashes("a bc", 1, 8)[0]);
    }

    #[test]
    fn bounded_in_count() {
        assert_eq!(text_hashes(&words(10_000, "w"), 16, 256).len(), 256);
        assert_eq!(text_hashes(&words(10_000, "w"), 1, 3).len(), 3);
    }
}
