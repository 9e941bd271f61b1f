//! What the worker keeps between requests: KV caches of finished sequences, reused up to the longest prefix a
//! new prompt shares with one of them (same text and same images), within a byte budget, least recently used
//! first out; and the vision features of recently seen images, by content.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::error::Result;
use crate::model::{KvCache, VisionFeatures};
use crate::vision::ProcessedImage;

/// The tokens a KV cache holds: ids and, per token, `Some(image key)` for image tokens, so equal ids with
/// different images never count as a shared prefix; and the requests' cache salt: caches are shared only
/// between requests with the same salt (one tenant's prompts are never a hit for another's).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Contents {
    pub(super) ids: Vec<u32>,
    pub(super) image_keys: Vec<Option<u64>>,
    pub(super) salt: Option<Arc<str>>,
}

impl Contents {
    /// Tokens at the start of `self` and `other` that are equal (ids and images), none across salts.
    pub(super) fn shared_with(&self, other: &Contents) -> usize {
        if self.salt != other.salt {
            return 0;
        }
        let a = self.ids.iter().zip(&self.image_keys);
        a.zip(other.ids.iter().zip(&other.image_keys)).take_while(|(a, b)| a == b).count()
    }

    /// The first `n` tokens.
    pub(super) fn truncated(&self, n: usize) -> Contents {
        Contents {
            ids: self.ids[..n.min(self.ids.len())].to_vec(),
            image_keys: self.image_keys[..n.min(self.image_keys.len())].to_vec(),
            salt: self.salt.clone(),
        }
    }

    /// A generated token (never an image) entered the cache.
    pub(super) fn push_generated(&mut self, token: u32) {
        self.ids.push(token);
        self.image_keys.push(None);
    }
}

struct Entry {
    contents: Contents,
    cache: KvCache,
    last_used: u64,
}

/// KV caches of finished sequences, for prefix reuse.
pub(super) struct PrefixCache {
    budget_bytes: usize,
    entries: Vec<Entry>,
    clock: u64,
}

impl PrefixCache {
    pub(super) fn new(budget_bytes: usize) -> Self {
        Self { budget_bytes, entries: Vec::new(), clock: 0 }
    }

    /// The entry sharing the longest prefix with `prompt`, and that length.
    pub(super) fn best(&self, prompt: &Contents) -> Option<(usize, usize)> {
        self.entries.iter().enumerate().map(|(i, e)| (i, e.contents.shared_with(prompt))).filter(|&(_, n)| n > 0).max_by_key(|&(i, n)| (n, usize::MAX - i))
    }

    /// A copy of entry `index`'s first `n` tokens (the entry stays, for the next sequence sharing it).
    pub(super) fn copy(&mut self, index: usize, n: usize) -> Result<KvCache> {
        self.clock += 1;
        let e = &mut self.entries[index];
        e.last_used = self.clock;
        e.cache.copy_prefix(n)
    }

    /// Keeps a finished sequence's cache. Entries it extends are dropped (it serves every prompt they
    /// serve); then the least recently used go until the rest fit the budget.
    pub(super) fn insert(&mut self, contents: Contents, cache: KvCache) {
        if cache.is_empty() || cache.bytes() > self.budget_bytes {
            return;
        }
        self.entries.retain(|e| e.contents.shared_with(&contents) < e.contents.ids.len());
        self.clock += 1;
        self.entries.push(Entry { contents, cache, last_used: self.clock });
        while self.entries.iter().map(|e| e.cache.bytes()).sum::<usize>() > self.budget_bytes {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i).expect("over budget means not empty");
            self.entries.swap_remove(oldest);
        }
    }
}

/// Vision features of recently seen images, by content hash.
pub(super) struct VisionCache {
    capacity: usize,
    order: VecDeque<u64>,
    map: HashMap<u64, VisionFeatures>,
}

impl VisionCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self { capacity, order: VecDeque::new(), map: HashMap::new() }
    }

    pub(super) fn get(&mut self, key: u64) -> Option<VisionFeatures> {
        let hit = self.map.get(&key).cloned();
        if hit.is_some() {
            self.order.retain(|&k| k != key);
            self.order.push_back(key);
        }
        hit
    }

    pub(super) fn put(&mut self, key: u64, features: VisionFeatures) {
        if self.capacity == 0 {
            return;
        }
        if self.map.insert(key, features).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn text(ids: &[u32]) -> Contents {
        Contents { ids: ids.to_vec(), image_keys: vec![None; ids.len()], salt: None }
    }

    fn cache_of(tokens: usize) -> KvCache {
        let mut c = KvCache::new(1, 4096);
        let k = Tensor::zeros((1, tokens, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        c.append(0, &k, &k).unwrap();
        c.commit(tokens);
        c
    }

    #[test]
    fn the_longest_shared_prefix_wins_and_images_must_match() {
        let mut pc = PrefixCache::new(usize::MAX);
        pc.insert(text(&[1, 2, 3, 4]), cache_of(4));
        pc.insert(text(&[1, 2, 9, 9, 9]), cache_of(5));
        assert_eq!(pc.best(&text(&[1, 2, 3, 7])), Some((0, 3)));
        assert_eq!(pc.best(&text(&[1, 2, 9, 9, 1])), Some((1, 4)));
        assert_eq!(pc.best(&text(&[5])), None);
        let mut with_image = text(&[1, 2, 3]);
        with_image.image_keys[2] = Some(42);
        assert_eq!(pc.best(&with_image), Some((0, 2)));
        assert_eq!(pc.copy(0, 3).unwrap().len(), 3);
        let salted = Contents { salt: Some("tenant-b".into()), ..text(&[1, 2, 3, 4]) };
        assert_eq!(pc.best(&salted), None, "no prefix is shared across salts");
    }

    #[test]
    fn an_extended_entry_replaces_its_prefix_and_the_budget_evicts_the_least_recently_used() {
        let per_token = cache_of(1).bytes() / 256; // buffers start at 256 tokens
        let mut pc = PrefixCache::new(3 * 256 * per_token);
        pc.insert(text(&[1, 2]), cache_of(2));
        pc.insert(text(&[1, 2, 3]), cache_of(3));
        assert_eq!(pc.entries.len(), 1, "[1, 2] is a prefix of [1, 2, 3]");
        pc.insert(text(&[5]), cache_of(1));
        pc.insert(text(&[6]), cache_of(1));
        pc.copy(0, 2).unwrap(); // [1, 2, 3] used last
        pc.insert(text(&[7]), cache_of(1));
        let kept: Vec<u32> = pc.entries.iter().map(|e| e.contents.ids[0]).collect();
        assert_eq!(kept.len(), 3);
        assert!(kept.contains(&1) && kept.contains(&7) && !kept.contains(&5), "{kept:?}");
        // a cache larger than the whole budget is not kept
        pc.insert(text(&[8]), cache_of(4 * 256));
        assert!(pc.entries.iter().all(|e| e.contents.ids[0] != 8));
    }
}

/// Content hash of a preprocessed image (its exact pixel values and grid).
pub(super) fn image_key(img: &ProcessedImage) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    img.grid_thw.hash(&mut h);
    for v in &img.pixel_values {
        v.to_bits().hash(&mut h);
    }
    h.finish()
}

