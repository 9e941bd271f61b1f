//! Qwen3-VL's interleaved M-RoPE: which of the (t, h, w) axes drives each rotary frequency.

/// Which axis (0 = t, 1 = h, 2 = w) drives frequency `i` under interleaved M-RoPE
/// (`apply_interleaved_mrope`): H on i%3==1 below 3·sec_h, W on i%3==2 below 3·sec_w, else T.
pub fn mrope_axis(i: usize, section: [usize; 3]) -> usize {
    if i % 3 == 1 && i < 3 * section[1] {
        1
    } else if i % 3 == 2 && i < 3 * section[2] {
        2
    } else {
        0
    }
}

/// The axis of every frequency of a head with `freqs` rotary frequencies.
pub fn mrope_axes(freqs: usize, section: [usize; 3]) -> Vec<usize> {
    (0..freqs).map(|i| mrope_axis(i, section)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_of_the_released_sections() {
        let s = [24, 20, 20];
        let axes: String = (0..64).map(|i| ['T', 'H', 'W'][mrope_axis(i, s)]).collect();
        assert_eq!(axes, format!("{}TTTT", "THW".repeat(20)));
    }
}
