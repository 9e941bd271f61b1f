//! `config.json` values every family reads the same way, with the same checks.

use crate::error::Result;
use crate::json_file::Keys;

/// Bounds on config values: far above any real checkpoint, low enough that a corrupt value cannot ask
/// for absurd allocations.
pub const MAX_DIM: usize = 1 << 16;
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_LAYERS: usize = 1024;

/// `(num_attention_heads, num_key_value_heads)` at `{prefix}num_attention_heads` and
/// `{prefix}num_key_value_heads` (default: no grouping); the KV heads must divide the query heads.
pub fn attention_heads(k: &Keys, prefix: &str) -> Result<(usize, usize)> {
    let (heads_key, kv_key) = (format!("{prefix}num_attention_heads"), format!("{prefix}num_key_value_heads"));
    let heads = k.usize_in(&[&heads_key], None, 1..=1024)?;
    let kv = k.usize_in(&[&kv_key], Some(heads), 1..=1024)?;
    if heads % kv != 0 {
        return Err(k.err(&kv_key, format!("{kv} does not divide num_attention_heads {heads}")));
    }
    Ok((heads, kv))
}

/// A token id at `key` (or `default`) that must lie inside the vocabulary.
pub fn token_id(k: &Keys, key: &str, default: usize, vocab: usize) -> Result<u32> {
    let id = k.usize_in(&[key], Some(default), 0..=usize::MAX)?;
    if id >= vocab {
        return Err(k.err(key, format!("token id {id} is outside the vocabulary of {vocab}")));
    }
    Ok(id as u32)
}

/// Checks that `key` (default silu) names the SiLU activation, the only one the decoders implement.
pub fn require_silu(k: &Keys, key: &str) -> Result<()> {
    let (key, act) = k.str_or(&[key], "silu")?;
    if act != "silu" {
        return Err(k.err(&key, format!("unsupported activation `{act}` (expected silu)")));
    }
    Ok(())
}
