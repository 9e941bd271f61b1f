//! Stop rules: end-of-sequence token ids and stop strings. Text that might be the beginning of a stop
//! string is held back from the stream until it is known not to be one.

use std::collections::HashSet;

#[derive(Debug, Clone, Default)]
pub struct StopRules {
    pub eos_ids: HashSet<u32>,
    pub strings: Vec<String>,
}

impl StopRules {
    pub fn new(eos_ids: impl IntoIterator<Item = u32>, strings: Vec<String>) -> Self {
        Self { eos_ids: eos_ids.into_iter().collect(), strings: strings.into_iter().filter(|s| !s.is_empty()).collect() }
    }

    pub fn is_eos(&self, token: u32) -> bool {
        self.eos_ids.contains(&token)
    }

    /// Byte offset in `text` where the earliest stop string starts, searching only where text from
    /// byte `new_from` on could complete one.
    pub fn find_stop(&self, text: &str, new_from: usize) -> Option<usize> {
        self.strings
            .iter()
            .filter_map(|s| {
                let mut from = new_from.saturating_sub(s.len() - 1);
                while !text.is_char_boundary(from) {
                    from -= 1;
                }
                text[from..].find(s.as_str()).map(|i| from + i)
            })
            .min()
    }

    /// Length of the prefix of `text` that can be streamed: everything except a tail that is a
    /// proper prefix of some stop string.
    pub fn safe_len(&self, text: &str) -> usize {
        let mut hold = 0;
        for s in &self.strings {
            for (i, _) in s.char_indices().skip(1) {
                if text.ends_with(&s[..i]) {
                    hold = hold.max(i);
                }
            }
        }
        text.len() - hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_stop_strings_across_token_boundaries() {
        let r = StopRules::new([7], vec!["</answer>".into(), "STOP".into()]);
        assert!(r.is_eos(7) && !r.is_eos(8));
        assert_eq!(r.find_stop("abc</ans", 5), None);
        assert_eq!(r.find_stop("abc</answer>xyz", 8), Some(3));
        // only stops overlapping the new text (from byte 9) are searched
        assert_eq!(r.find_stop("xSTOPy STOP", 9), Some(7));
        assert_eq!(r.safe_len("abc</ans"), 3);
        assert_eq!(r.safe_len("abc ST"), 4);
        assert_eq!(r.safe_len("abc"), 3);
        assert_eq!(r.safe_len("héllo</"), "héllo".len());
    }
}
