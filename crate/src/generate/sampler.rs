//! Next-token selection: penalties, then greedy or temperature / top-k / top-p sampling from a seeded
//! RNG, plus log-probabilities with top alternatives.
//!
//! Order (as in transformers and vLLM): repetition penalty (over prompt and output, transformers'
//! divide-positive / multiply-negative rule), presence and frequency penalties (output only, OpenAI
//! semantics), temperature, top-k, top-p, sample.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus mass kept, in (0, 1]; 1 disables.
    pub top_p: f32,
    /// Candidates kept; 0 disables.
    pub top_k: usize,
    /// > 1 discourages tokens already in the prompt or output; 1 disables.
    pub repetition_penalty: f32,
    /// Subtracted once from tokens already generated; 0 disables.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the output; 0 disables.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, top_k: 0, repetition_penalty: 1.0, presence_penalty: 0.0, frequency_penalty: 0.0, seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, msg: String| Err(Error::invalid(name, msg));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("{} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", format!("{} must be > 0", self.repetition_penalty));
        }
        if !self.presence_penalty.is_finite() || self.presence_penalty.abs() > 2.0 {
            return bad("presence_penalty", format!("{} must be in [-2, 2]", self.presence_penalty));
        }
        if !self.frequency_penalty.is_finite() || self.frequency_penalty.abs() > 2.0 {
            return bad("frequency_penalty", format!("{} must be in [-2, 2]", self.frequency_penalty));
        }
        Ok(())
    }
}

/// The sampling values one request sets. Each one left `None` takes the checkpoint's default
/// (`generation_config.json`, see [`GenerationDefaults`](super::GenerationDefaults)), and where that is
/// silent too, the built-in one of [`SamplingParams::default`] (greedy, no penalties).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingRequest {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u64>,
}

impl SamplingRequest {
    /// The request's values over `defaults`.
    pub fn resolve(&self, defaults: &SamplingParams) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            repetition_penalty: self.repetition_penalty.unwrap_or(defaults.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            seed: self.seed.unwrap_or(defaults.seed),
        }
    }

    /// Checks the values that are set (each against the same rule as the resolved parameters).
    pub fn validate(&self) -> Result<()> {
        self.resolve(&SamplingParams::default()).validate()
    }
}

/// A token, the bytes it stands for (not always valid UTF-8 alone), and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenChoice {
    pub token: u32,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Log-probability of a chosen token and the most likely alternatives, from the model's
/// distribution (log-softmax of the raw logits, before penalties and sampling filters).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub chosen: TokenChoice,
    /// Most likely first.
    pub top: Vec<TokenChoice>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
    /// Tokens seen in prompt or output (for the repetition penalty).
    seen: HashSet<u32>,
    /// Occurrences in the output (for presence and frequency penalties).
    output_counts: HashMap<u32, u32>,
}

impl Sampler {
    /// `prompt` seeds the repetition penalty's history.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Result<Self> {
        params.validate()?;
        let seen = prompt.iter().copied().collect();
        Ok(Self { rng: rand::rngs::StdRng::seed_from_u64(params.seed), params, seen, output_counts: HashMap::new() })
    }

    /// Records a generated token (affects later penalties).
    pub fn accept(&mut self, token: u32) {
        self.seen.insert(token);
        *self.output_counts.entry(token).or_default() += 1;
    }

    /// Picks the next token from `logits` (one row, f32).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Internal("empty logits".into()));
        }
        let mut l = logits.to_vec();
        self.apply_penalties(&mut l);
        if self.params.temperature == 0.0 {
            return Ok(argmax(&l));
        }
        let inv_t = 1.0 / self.params.temperature;
        // Candidates as (logit, token), then (softmax weight, token) once top-k has cut them.
        let mut cand: Vec<(f32, u32)> =
            l.iter().enumerate().filter(|(_, x)| x.is_finite()).map(|(i, &x)| (x, i as u32)).collect();
        if cand.is_empty() {
            return Err(Error::Model("all logits are -inf or NaN".into()));
        }
        let descending = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
        let k = self.params.top_k;
        if k > 0 && k < cand.len() {
            cand.select_nth_unstable_by(k - 1, descending);
            cand.truncate(k);
        }
        // Unnormalized softmax weights (the draw below scales by their sum); same order as the logits.
        let max = cand.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max) * inv_t;
        cand.iter_mut().for_each(|c| c.0 = (c.0 * inv_t - max).exp());
        if self.params.top_p < 1.0 {
            // The smallest most-likely prefix holding top_p of the mass. Sorting all 152K candidates per
            // token cost ~5 ms; a peaked distribution needs only a short sorted head, so select a head,
            // sort it, and widen it only when it holds too little mass.
            let need = self.params.top_p * cand.iter().map(|c| c.0).sum::<f32>();
            let mut head = 64.min(cand.len());
            loop {
                if head < cand.len() {
                    cand.select_nth_unstable_by(head - 1, descending);
                }
                cand[..head].sort_unstable_by(descending);
                let mut cum = 0.0;
                match cand[..head].iter().position(|c| {
                    cum += c.0;
                    cum >= need
                }) {
                    Some(j) => {
                        cand.truncate(j + 1);
                        break;
                    }
                    None if head == cand.len() => break, // rounding: the whole set is the nucleus
                    // A flat distribution: go straight to a full sort rather than sorting ever-wider heads.
                    None => head = if head * 8 > cand.len() / 2 { cand.len() } else { head * 8 },
                }
            }
        }
        let mass: f32 = cand.iter().map(|c| c.0).sum();
        let mut u = self.rng.random::<f32>() * mass;
        for &(w, token) in &cand {
            if u < w {
                return Ok(token);
            }
            u -= w;
        }
        Ok(cand.last().unwrap().1)
    }

    fn apply_penalties(&self, l: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &t in &self.seen {
                if let Some(x) = l.get_mut(t as usize) {
                    *x = if *x > 0.0 { *x / p.repetition_penalty } else { *x * p.repetition_penalty };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &n) in &self.output_counts {
                if let Some(x) = l.get_mut(t as usize) {
                    *x -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
    }
}

pub fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in l.iter().enumerate() {
        if *x > l[best] {
            best = i;
        }
    }
    best as u32
}

/// Log-probability of `token` and the `top_n` most likely tokens under `log_softmax(logits)`;
/// `bytes_of` gives a token's bytes.
pub fn logprobs(logits: &[f32], token: u32, top_n: usize, bytes_of: &dyn Fn(u32) -> Vec<u8>) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    let choice = |t: u32| TokenChoice {
        token: t,
        bytes: bytes_of(t),
        logprob: logits.get(t as usize).map_or(f32::NEG_INFINITY, |l| l - lse),
    };
    let mut top: Vec<u32> = (0..logits.len() as u32).collect();
    let n = top_n.min(top.len());
    if n > 0 && n < top.len() {
        top.select_nth_unstable_by(n - 1, |a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    }
    top.truncate(n);
    top.sort_unstable_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    TokenLogprob { chosen: choice(token), top: top.into_iter().map(choice).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p, &[]).unwrap()
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = sampler(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_distribution_is_respected() {
        let p = SamplingParams { temperature: 1.0, seed: 42, ..Default::default() };
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY, 0.0];
        let draw = |seed| {
            let mut s = sampler(SamplingParams { seed, ..p.clone() });
            (0..4000).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        let d = draw(7);
        let frac1 = d.iter().filter(|&&t| t == 1).count() as f32 / d.len() as f32;
        assert!((frac1 - 0.6).abs() < 0.03, "{frac1}");
        assert!(!d.contains(&2));
    }

    #[test]
    fn top_k_and_top_p_restrict_candidates() {
        let logits = [1.0f32, 4.0, 3.0, 2.0, 0.0];
        let mut s = sampler(SamplingParams { temperature: 5.0, top_k: 2, seed: 1, ..Default::default() });
        for _ in 0..200 {
            assert!([1, 2].contains(&s.sample(&logits).unwrap()));
        }
        // probabilities ~ [0.03, 0.64, 0.24, 0.09, 0.01]: top_p 0.7 keeps tokens 1 and 2
        let mut s = sampler(SamplingParams { temperature: 1.0, top_p: 0.7, seed: 1, ..Default::default() });
        let got: std::collections::HashSet<u32> = (0..500).map(|_| s.sample(&logits).unwrap()).collect();
        assert_eq!(got, [1u32, 2].into_iter().collect());
    }

    #[test]
    fn top_p_over_a_large_vocabulary_keeps_exactly_the_nucleus() {
        // 5000 tokens, logits falling slowly, shuffled positions: a nucleus of 900 tokens is far wider than
        // the first sorted head, so the head must widen. top_p sits halfway between the mass of the 900 and
        // of the 901 most likely tokens, so f32 rounding cannot move the boundary.
        let n = 5000usize;
        let logits: Vec<f32> = (0..n).map(|i| -(((i * 7919) % n) as f32) / 400.0).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let w: Vec<f64> = order.iter().map(|&i| ((logits[i] - logits[order[0]]) as f64).exp()).collect();
        let total: f64 = w.iter().sum();
        let size = 900;
        let below: f64 = w[..size - 1].iter().sum();
        let top_p = ((below + w[size - 1] / 2.0) / total) as f32;
        let mut s = sampler(SamplingParams { temperature: 1.0, top_p, seed: 3, ..Default::default() });
        let rank = |t: u32| order.iter().position(|&i| i as u32 == t).unwrap();
        let ranks: Vec<usize> = (0..3000).map(|_| rank(s.sample(&logits).unwrap())).collect();
        let outside: Vec<&usize> = ranks.iter().filter(|&&r| r >= size).collect();
        assert!(outside.is_empty(), "ranks outside the {size}-token nucleus: {outside:?}");
        assert!(ranks.iter().any(|&r| r >= 256), "draws reach beyond the first heads");
    }

    #[test]
    fn penalties() {
        // repetition: positive logits divided, negative multiplied; prompt tokens count.
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() }, &[0]).unwrap();
        assert_eq!(s.sample(&[3.0, 2.0, -1.0]).unwrap(), 1);
        s.accept(1);
        assert_eq!(s.sample(&[3.0, 2.0, 1.4]).unwrap(), 0); // 1.5, 1.0, 1.4
        // presence/frequency: only generated tokens
        let mut s = Sampler::new(SamplingParams { presence_penalty: 1.0, frequency_penalty: 0.5, ..Default::default() }, &[0]).unwrap();
        assert_eq!(s.sample(&[3.0, 2.0, 0.0]).unwrap(), 0);
        s.accept(0);
        assert_eq!(s.sample(&[3.0, 2.0, 0.0]).unwrap(), 1); // 1.5 < 2
        s.accept(1);
        s.accept(0);
        assert_eq!(s.sample(&[3.0, 2.0, 0.0]).unwrap(), 0); // 3 - 2 = 1.0 vs 2 - 1.5 = 0.5
    }

    #[test]
    fn bad_params_are_rejected() {
        assert!(SamplingParams { top_p: 0.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { temperature: -1.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { repetition_penalty: 0.0, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn request_values_override_defaults_one_by_one() {
        let defaults = SamplingParams { temperature: 0.7, top_p: 0.8, top_k: 20, repetition_penalty: 1.1, ..Default::default() };
        let req = SamplingRequest { temperature: Some(0.0), top_k: Some(5), seed: Some(9), ..Default::default() };
        let got = req.resolve(&defaults);
        assert_eq!(got, SamplingParams { temperature: 0.0, top_p: 0.8, top_k: 5, repetition_penalty: 1.1, seed: 9, ..Default::default() });
        assert_eq!(SamplingRequest::default().resolve(&defaults), defaults);
        assert!(SamplingRequest { top_p: Some(1.5), ..Default::default() }.validate().is_err());
    }

    #[test]
    fn logprobs_are_normalized_with_sorted_alternatives() {
        let lp = logprobs(&[0.0, (3.0f32).ln(), 0.0], 1, 2, &|t| vec![b'a' + t as u8]);
        assert!((lp.chosen.logprob - (0.6f32).ln()).abs() < 1e-6);
        assert_eq!(lp.chosen.bytes, b"b");
        assert_eq!(lp.top.len(), 2);
        assert_eq!(lp.top[0].token, 1);
        assert!((lp.top[1].logprob - (0.2f32).ln()).abs() < 1e-6);
    }
}
