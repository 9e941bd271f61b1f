//! The JSON files of a model directory (`config.json`, `preprocessor_config.json`, `tokenizer_config.json`,
//! ...): reading them, and looking up dotted keys with every problem reported against the file and key.
//! Shared by the tokenizer, the image preprocessor and every model family's config parser.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Reads a model directory's JSON file; a syntax error is reported against the file.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::ModelConfig { path: path.to_path_buf(), key: "(file)".into(), message: format!("invalid JSON: {e}") })
}

/// Reads dotted keys (`text_config.rope_parameters.rope_theta`) from parsed JSON, turning every problem
/// into an error naming the file and the key. `null` counts as absent, as in transformers' configs.
pub struct Keys<'a> {
    pub path: &'a Path,
    pub root: &'a Value,
}

impl<'a> Keys<'a> {
    pub fn new(path: &'a Path, root: &'a Value) -> Self {
        Self { path, root }
    }

    pub fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::ModelConfig { path: self.path.to_path_buf(), key: key.to_string(), message: message.into() }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let mut v = self.root;
        for part in key.split('.') {
            v = v.get(part)?;
        }
        (!v.is_null()).then_some(v)
    }

    /// First present key among `keys` (aliases, in order of preference), or None.
    pub fn first(&self, keys: &[&str]) -> Option<(String, &'a Value)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (k.to_string(), v)))
    }

    pub fn usize_of(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64().map(|x| x as usize).ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}")))
    }

    /// An integer in `range` from the first present key, else `default` (an error naming `keys[0]` when
    /// there is none).
    pub fn usize_in(&self, keys: &[&str], default: Option<usize>, range: std::ops::RangeInclusive<usize>) -> Result<usize> {
        match self.first(keys) {
            Some((k, v)) => {
                let x = self.usize_of(&k, v)?;
                if !range.contains(&x) {
                    return Err(self.err(&k, format!("{x} is out of range {}..={}", range.start(), range.end())));
                }
                Ok(x)
            }
            None => default.ok_or_else(|| self.err(keys[0], "missing")),
        }
    }

    /// A number in `(min_exclusive, max]` from the first present key, else `default`.
    pub fn f64_in(&self, keys: &[&str], default: Option<f64>, min_exclusive: f64, max: f64) -> Result<f64> {
        match self.first(keys) {
            Some((k, v)) => {
                let x = v.as_f64().ok_or_else(|| self.err(&k, format!("expected a number, got {v}")))?;
                if !(x > min_exclusive && x <= max) {
                    return Err(self.err(&k, format!("{x} is out of range ({min_exclusive}, {max}]")));
                }
                Ok(x)
            }
            None => default.ok_or_else(|| self.err(keys[0], "missing")),
        }
    }

    pub fn bool_or(&self, keys: &[&str], default: bool) -> Result<bool> {
        match self.first(keys) {
            Some((k, v)) => v.as_bool().ok_or_else(|| self.err(&k, format!("expected true or false, got {v}"))),
            None => Ok(default),
        }
    }

    /// A string from the first present key (and that key), else `default` under `keys[0]`.
    pub fn str_or(&self, keys: &[&str], default: &'a str) -> Result<(String, &'a str)> {
        match self.first(keys) {
            Some((k, v)) => Ok((k.clone(), v.as_str().ok_or_else(|| self.err(&k, format!("expected a string, got {v}")))?)),
            None => Ok((keys[0].to_string(), default)),
        }
    }

    /// Exactly `N` non-negative integers at `key`, or None when absent.
    pub fn usizes<const N: usize>(&self, key: &str) -> Result<Option<[usize; N]>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let arr = v.as_array().filter(|a| a.len() == N).ok_or_else(|| self.err(key, format!("expected {N} integers, got {v}")))?;
        let mut out = [0usize; N];
        for (o, x) in out.iter_mut().zip(arr) {
            *o = self.usize_of(key, x)?;
        }
        Ok(Some(out))
    }

    /// Exactly `N` finite numbers at `key`, or None when absent.
    pub fn f32s<const N: usize>(&self, key: &str) -> Result<Option<[f32; N]>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let arr = v.as_array().filter(|a| a.len() == N).ok_or_else(|| self.err(key, format!("expected {N} numbers, got {v}")))?;
        let mut out = [0f32; N];
        for (o, x) in out.iter_mut().zip(arr) {
            *o = x.as_f64().filter(|f| f.is_finite()).ok_or_else(|| self.err(key, format!("expected numbers, got {x}")))? as f32;
        }
        Ok(Some(out))
    }
}
