//! What the worker keeps between requests: the KV cache of the previous conversation (reused up to the
//! longest prefix a new prompt shares with it, same text and same images) and the vision features of
//! recently seen images, by content.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::model::{KvCache, VisionFeatures};
use crate::vision::ProcessedImage;

/// KV cache of the previous request and what it holds, for prefix reuse.
pub(super) struct Session {
    pub(super) cache: KvCache,
    /// Token ids in the cache.
    ids: Vec<u32>,
    /// Per cached token: `Some(image key)` for image tokens, so equal ids with different images
    /// never count as a shared prefix.
    image_keys: Vec<Option<u64>>,
}

impl Session {
    pub(super) fn new(cache: KvCache) -> Self {
        Self { cache, ids: Vec::new(), image_keys: Vec::new() }
    }

    /// Keeps the cache up to the longest prefix it shares with a new prompt and returns its length. At
    /// least the prompt's last token is left to run, for its logits.
    pub(super) fn reuse_for(&mut self, ids: &[u32], image_keys: &[Option<u64>]) -> usize {
        let cached = self.ids.iter().zip(&self.image_keys);
        let shared = cached.zip(ids.iter().zip(image_keys)).take_while(|(a, b)| a == b).count().min(ids.len().saturating_sub(1));
        self.cache.truncate(shared);
        shared
    }

    /// Records what the cache holds after a request: its prompt and the generated tokens that went
    /// through the decoder.
    pub(super) fn remember(&mut self, prompt: &[u32], image_keys: &[Option<u64>], generated: &[u32]) {
        let n = self.cache.len();
        self.ids = prompt.iter().chain(generated).take(n).copied().collect();
        self.image_keys = image_keys.iter().copied().chain(std::iter::repeat(None)).take(n).collect();
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

/// Content hash of a preprocessed image (its exact pixel values and grid).
pub(super) fn image_key(img: &ProcessedImage) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    img.grid_thw.hash(&mut h);
    for v in &img.pixel_values {
        v.to_bits().hash(&mut h);
    }
    h.finish()
}

