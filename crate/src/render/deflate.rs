//! A zlib (DEFLATE) encoder specialised for PNG scanlines of rendered text pages.
//!
//! General-purpose encoders spend their time searching for matches; a text page has none worth finding
//! except runs: blank rows and the gaps between glyphs repeat the previous pixel. So the only matches
//! here are "repeat the previous pixel" (distance = bytes per pixel), found by byte compares into
//! per-row bitmaps, and everything else is a literal. One dynamic Huffman block, built from the
//! symbol counts of every 8th row, makes the antialiased greys cheap. Where the CPU has AVX-512, one
//! pass of 64-byte compares fills the bitmaps and computes the Adler-32 together (16-byte SSE2
//! compares and simd-adler32 elsewhere). On golden/render/texts.jsonl it takes about a third of the
//! time of fdeflate with the Up filter (the `png` crate's fastest level) and its files are 30% smaller
//! (67 vs 96 kB per page; bench/render_phases.rs compares them). It finds no repeats further back
//! than one pixel: a page of identical lines compresses far better at the `balanced` level.

use std::cell::RefCell;

/// Runs shorter than this stay literals. The background's literal code is 1–2 bits, so short matches
/// save few bits, and each costs more time than the literals it replaces (measured: 32 is faster than
/// 8 and 16, with files within 1%). A power of two, for the doubling in `find_starts`.
const MIN_RUN: usize = 32;
const MAX_MATCH: usize = 258;
const END_OF_BLOCK: usize = 256;
/// Literal/length alphabet: 256 literals, end of block, 29 length codes.
const LITLEN_SYMBOLS: usize = 286;
/// Literal/length codes are limited to 12 bits (DEFLATE allows 15) so four literals fit one flush
/// (4 × 12 bits + 7 left over ≤ 64; five per flush with 11-bit codes measured slower); on text pages
/// only symbols too rare to matter ever need more.
const MAX_CODE_BITS: u32 = 12;
const LITERALS_PER_FLUSH: usize = 4;
const _: () = assert!(LITERALS_PER_FLUSH as u32 * MAX_CODE_BITS + 7 <= 64);
const MAX_CODE_LENGTH_BITS: u32 = 7;
/// Order in which the code-length code's lengths are sent (RFC 1951, 3.2.7).
const CODE_LENGTH_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// Per match length 3..=258 (index `length - 3`): length code symbol (257..=285), extra bit count and
/// extra bit value (RFC 1951, 3.2.5).
const LENGTH_CODES: [(u16, u8, u8); 256] = {
    const BASE: [usize; 29] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
    const EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
    let mut table = [(0u16, 0u8, 0u8); 256];
    let mut code = 0;
    let mut len = 3;
    while len <= MAX_MATCH {
        if code + 1 < BASE.len() && BASE[code + 1] <= len {
            code += 1;
        }
        table[len - 3] = ((257 + code) as u16, EXTRA[code], (len - BASE[code]) as u8);
        len += 1;
    }
    table
};

/// Rows sampled for the symbol statistics (every `SAMPLE_EVERY`th): text pages are statistically
/// uniform, and counting every row would cost as much as encoding it.
const SAMPLE_EVERY: usize = 8;

/// Buffers reused page after page (fresh ones per page would cost page faults).
#[derive(Default)]
struct Scratch {
    /// The deflate stream, sized for the worst case.
    stream: Vec<u8>,
    runs: RunMap,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Appends to `out` a zlib stream of PNG scanlines: each `row_bytes` row of `data`, preceded by filter
/// type 0 (None). `pixel_bytes` is the match distance (1 for grey, 3 for RGB).
pub fn zlib_scanlines(data: &[u8], row_bytes: usize, pixel_bytes: usize, out: &mut Vec<u8>) {
    assert!(row_bytes > 0 && data.len().is_multiple_of(row_bytes) && (1..=4).contains(&pixel_bytes), "scanline geometry");
    let rows = data.len() / row_bytes;
    out.extend_from_slice(&[0x78, 0x01]); // deflate, 32K window, fastest-compression hint
    SCRATCH.with(|s| {
        let Scratch { stream, runs } = &mut *s.borrow_mut();
        let adler = runs.build(data, row_bytes, pixel_bytes);

        // Every symbol keeps a code (sampled rows may miss some), so each count starts at 1. Literals
        // go to four interleaved tables: runs of one value (the background) would otherwise chain
        // every increment on the one before.
        let mut counts = [1u32; LITLEN_SYMBOLS];
        let mut lanes = [[0u32; 256]; 4];
        for r in (0..rows).step_by(SAMPLE_EVERY) {
            counts[0] += 1; // the filter byte
            for (lits, run) in runs.segments(&data[r * row_bytes..(r + 1) * row_bytes], r) {
                let mut quads = lits.chunks_exact(4);
                for q in &mut quads {
                    for (lane, &b) in lanes.iter_mut().zip(q) {
                        lane[b as usize] += 1;
                    }
                }
                quads.remainder().iter().for_each(|&b| lanes[0][b as usize] += 1);
                match_lengths(run).for_each(|len| counts[LENGTH_CODES[len - 3].0 as usize] += 1);
            }
        }
        for lane in &lanes {
            counts[..256].iter_mut().zip(lane).for_each(|(c, &n)| *c += n);
        }

        // Longest code MAX_CODE_BITS per literal, ≤ 19 per match (≥ 3 bytes), plus header and flush slack.
        let worst = (data.len() + rows) * MAX_CODE_BITS as usize / 8 + 1024 + 8;
        if stream.len() < worst {
            stream.resize(worst, 0);
        }
        let mut bits = BitWriter { buf: stream, pos: 0, acc: 0, n: 0 };
        let codes = write_block_header(&mut bits, &counts, pixel_bytes);
        encode_rows(&mut bits, data, row_bytes, runs, &codes);
        let (eob, n) = codes.end_of_block;
        bits.put(eob as u64, n);
        let len = bits.finish();
        out.extend_from_slice(&stream[..len]);
        out.extend_from_slice(&adler.to_be_bytes());
        if stream.len() > super::KEEP_BUFFER_BYTES {
            *stream = Vec::new();
            *runs = RunMap::default();
        }
    });
}

/// Every row's filter byte, literals and runs. The shifts by a register amount are most of the work:
/// BMI2's `shlx`/`shrx` (where the CPU has it) do them without the baseline's fixed `cl` register.
fn encode_rows(bits: &mut BitWriter, data: &[u8], row_bytes: usize, runs: &RunMap, codes: &Codes) {
    #[inline(always)]
    fn encode(bits: &mut BitWriter, data: &[u8], row_bytes: usize, runs: &RunMap, codes: &Codes) {
        for (r, row) in data.chunks_exact(row_bytes).enumerate() {
            bits.literals(&[0], &codes.literals); // the filter byte
            for (lits, run) in runs.segments(row, r) {
                bits.literals(lits, &codes.literals);
                for len in match_lengths(run) {
                    let (code, n) = codes.matches[len - 3];
                    bits.put(code as u64, n);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") {
        #[target_feature(enable = "bmi2")]
        fn with_bmi2(bits: &mut BitWriter, data: &[u8], row_bytes: usize, runs: &RunMap, codes: &Codes) {
            encode(bits, data, row_bytes, runs, codes)
        }
        // SAFETY: the CPU has BMI2, checked just above.
        return unsafe { with_bmi2(bits, data, row_bytes, runs, codes) };
    }
    encode(bits, data, row_bytes, runs, codes)
}

/// A run as match lengths (3..=258), never leaving the 1–2 bytes no match can take.
#[inline(always)]
fn match_lengths(mut left: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let take = if left > MAX_MATCH && left - MAX_MATCH < 3 { MAX_MATCH - 3 } else { left.min(MAX_MATCH) };
        left -= take;
        Some(take)
    })
}

/// Per-row bitmaps, `words` u64s a row, the last always zero so scans stop there. Bit `x` of a row's
/// `repeat`: byte `x` equals the byte `d` before it (never in the row's first pixel: rows are encoded
/// on their own). Bit `x` of `starts`: MIN_RUN such bytes begin at `x`.
#[derive(Default)]
struct RunMap {
    words: usize,
    repeat: Vec<u64>,
    starts: Vec<u64>,
}

impl RunMap {
    /// Fills the bitmaps for `data` and returns the Adler-32 of its scanlines (each row after a zero
    /// filter byte): one pass reads the page for both where the CPU has AVX-512.
    fn build(&mut self, data: &[u8], row_bytes: usize, d: usize) -> u32 {
        #[cfg(target_arch = "x86_64")]
        let wide = std::arch::is_x86_feature_detected!("avx512bw");
        #[cfg(not(target_arch = "x86_64"))]
        let wide = false;
        // SAFETY: `wide` only when the CPU has AVX-512BW, detected just above.
        unsafe { self.build_with(data, row_bytes, d, wide) }
    }

    /// `build`, on the AVX-512 path when `wide`.
    ///
    /// # Safety
    /// `wide` only on a CPU with AVX-512BW.
    unsafe fn build_with(&mut self, data: &[u8], row_bytes: usize, d: usize, wide: bool) -> u32 {
        self.words = row_bytes.div_ceil(64) + 1;
        self.repeat.clear();
        self.repeat.resize(data.len() / row_bytes * self.words, 0);
        let rows = data.chunks_exact(row_bytes).zip(self.repeat.chunks_exact_mut(self.words));
        #[cfg(not(target_arch = "x86_64"))]
        let _ = wide;
        #[cfg(target_arch = "x86_64")]
        if wide {
            let mut adler = Adler { a: 1, b: 0 };
            // SAFETY: the caller checked that the CPU has AVX-512BW (and so AVX-512F).
            unsafe {
                rows.for_each(|(row, bits)| scan_row_avx512(row, d, bits, &mut adler));
                find_starts_avx512(&self.repeat, &mut self.starts);
            }
            return adler.value();
        }
        let mut adler = simd_adler32::Adler32::new();
        for (row, bits) in rows {
            repeat_bits(row, d, bits);
            adler.write(&[0]);
            adler.write(row);
        }
        find_starts(&self.repeat, &mut self.starts);
        adler.finish()
    }

    /// Row `r` (the bytes `row`) as literal stretches, each followed by a run (0 after the last). An
    /// iterator, not a callback, so its loop body compiles with its caller's target features.
    #[inline(always)]
    fn segments<'a>(&'a self, row: &'a [u8], r: usize) -> Segments<'a> {
        let words = r * self.words..(r + 1) * self.words;
        Segments { row, starts: &self.starts[words.clone()], repeat: &self.repeat[words], pos: 0, done: false }
    }
}

struct Segments<'a> {
    row: &'a [u8],
    starts: &'a [u64],
    repeat: &'a [u64],
    /// Where the literals not yet handed out begin.
    pos: usize,
    done: bool,
}

impl<'a> Iterator for Segments<'a> {
    type Item = (&'a [u8], usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(&'a [u8], usize)> {
        if self.done {
            return None;
        }
        let pending = self.pos;
        match next_set(self.starts, pending) {
            Some(k) => {
                let len = ones_from(self.repeat, k);
                self.pos = k + len;
                Some((&self.row[pending..k], len))
            }
            None => {
                self.done = true;
                Some((&self.row[pending..], 0))
            }
        }
    }
}

/// `starts` from `repeat`: runs of 2, 4, … MIN_RUN set bits, each step ANDing the bits with
/// themselves shifted. A run starting in word w ends by word w + 1, so each word needs only the next
/// one; and the bits of the next one that matter never need a third word, so its own steps may shift
/// in zeros. A row's zero last word keeps runs from reaching into the next row. Plain u64 lanes, so
/// the loop vectorizes.
#[inline(always)]
fn find_starts(repeat: &[u64], starts: &mut Vec<u64>) {
    const _: () = assert!(MIN_RUN.is_power_of_two() && MIN_RUN <= 64);
    starts.clear();
    starts.resize(repeat.len(), 0);
    for (start, pair) in starts.iter_mut().zip(repeat.windows(2)) {
        let (mut lo, mut hi) = (pair[0], pair[1]);
        let mut shift = 1;
        while shift < MIN_RUN {
            lo &= lo >> shift | hi << (64 - shift);
            hi &= hi >> shift;
            shift *= 2;
        }
        *start = lo;
    }
}

/// `find_starts` in 512-bit lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn find_starts_avx512(repeat: &[u64], starts: &mut Vec<u64>) {
    find_starts(repeat, starts)
}

/// Adler-32 state (RFC 1950): `a` = 1 + the bytes' sum, `b` = the sum of the `a`s, both mod 65521.
#[cfg(target_arch = "x86_64")]
struct Adler {
    a: u32,
    b: u32,
}

#[cfg(target_arch = "x86_64")]
impl Adler {
    const MOD: u64 = 65521;

    fn value(&self) -> u32 {
        self.b << 16 | self.a
    }
}

/// One row's `repeat` bits (as `repeat_bits`) and its scanline (zero filter byte, then `row`) added to
/// `adler`, reading each 64 bytes once. Per 4096-byte chunk, in exact integers: with `a0` the sum
/// before it and `x_j` its bytes, a grows by Σ x_j and b by n·a0 + Σ (n − j)·x_j. Each 64-byte block
/// adds 64 × (the sum of the blocks before it) + Σ (64 − j)·x_j; a short last block, padded with
/// zeros, adds (64 − m) × the final a too many, taken off at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
unsafe fn scan_row_avx512(row: &[u8], d: usize, bits: &mut [u64], adler: &mut Adler) {
    use std::arch::x86_64::*;
    const CHUNK_WORDS: usize = 64;
    let len = row.len();
    let weights = _mm512_set_epi8(
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
        35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64,
    );
    let (mut a, mut b) = (adler.a as u64, adler.b as u64 + adler.a as u64); // the filter byte adds a to b
    let words = len.div_ceil(64);
    for chunk in (0..words).step_by(CHUNK_WORDS) {
        let (mut sums, mut prefix, mut weighted) = (_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512());
        let end = (chunk + CHUNK_WORDS).min(words);
        for (i, word) in bits[chunk..end].iter_mut().enumerate() {
            let start = 64 * (chunk + i);
            let n = len.min(start + 64) - start;
            let keep = u64::MAX >> (64 - n);
            // SAFETY: the masked loads touch only bytes inside `row`: the `n` at `start`, and for the
            // compare the bytes at lo and lo - d up to the row's end.
            unsafe {
                let v = _mm512_maskz_loadu_epi8(keep, row.as_ptr().add(start) as *const i8);
                prefix = _mm512_add_epi64(prefix, sums);
                sums = _mm512_add_epi64(sums, _mm512_sad_epu8(v, _mm512_setzero_si512()));
                weighted = _mm512_add_epi32(weighted, _mm512_madd_epi16(_mm512_maddubs_epi16(v, weights), _mm512_set1_epi16(1)));
                // Bytes k in lo..start + n have a byte d before them in the row (lo > start only in word 0).
                let lo = start.max(d);
                *word = if lo == start {
                    _mm512_cmpeq_epi8_mask(v, _mm512_maskz_loadu_epi8(keep, row.as_ptr().add(start - d) as *const i8)) & keep
                } else if lo < start + n {
                    let m = u64::MAX >> (64 - (start + n - lo));
                    let x = _mm512_maskz_loadu_epi8(m, row.as_ptr().add(lo) as *const i8);
                    let y = _mm512_maskz_loadu_epi8(m, row.as_ptr().add(lo - d) as *const i8);
                    (_mm512_cmpeq_epi8_mask(x, y) & m) << (lo - start)
                } else {
                    0
                };
            }
        }
        let bytes = (64 * end).min(len) - 64 * chunk;
        let short = (64 * (end - chunk) - bytes) as u64; // zero padding in the last block
        let sum = _mm512_reduce_add_epi64(sums) as u64;
        let full = b + 64 * (end - chunk) as u64 * a + 64 * _mm512_reduce_add_epi64(prefix) as u64 + _mm512_reduce_add_epi32(weighted) as u32 as u64;
        a += sum;
        b = (full - short * a) % Adler::MOD;
        a %= Adler::MOD;
    }
    *adler = Adler { a: a as u32, b: (b % Adler::MOD) as u32 };
}

/// One row's `repeat` bits, 16 bytes per compare (SSE2, the x86-64 baseline).
fn repeat_bits(row: &[u8], d: usize, bits: &mut [u64]) {
    let len = row.len();
    // Bits of the 16 bytes at 16·c; the row's ends are shifted into place or done bytewise.
    let chunk = |c: usize| -> u64 {
        let start = 16 * c;
        if start >= len {
            0
        } else if start >= d && start + 16 <= len {
            equal16(&row[start..], &row[start - d..]) as u64
        } else if len < 16 + d {
            (start.max(d)..(start + 16).min(len)).fold(0, |m, k| m | ((row[k] == row[k - d]) as u64) << (k - start))
        } else if start == 0 {
            (equal16(&row[d..], row) as u64) << d & 0xFFFF
        } else {
            let tail = len - 16;
            (equal16(&row[tail..], &row[tail - d..]) >> (start - tail)) as u64
        }
    };
    for (w, word) in bits[..len.div_ceil(64)].iter_mut().enumerate() {
        *word = (0..4).fold(0, |acc, i| acc | chunk(4 * w + i) << (16 * i));
    }
}

/// Bit `i` set when `a[i] == b[i]`.
#[inline(always)]
fn equal16(a: &[u8], b: &[u8]) -> u16 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        assert!(a.len() >= 16 && b.len() >= 16);
        // SAFETY: SSE2 is part of the x86-64 baseline; each load reads the first 16 bytes of a slice
        // checked above to hold them.
        unsafe {
            let x = _mm_loadu_si128(a.as_ptr() as *const __m128i);
            let y = _mm_loadu_si128(b.as_ptr() as *const __m128i);
            _mm_movemask_epi8(_mm_cmpeq_epi8(x, y)) as u16
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    (0..16).fold(0u16, |m, i| m | ((a[i] == b[i]) as u16) << i)
}

/// The first set bit at or after `pos`.
#[inline(always)]
fn next_set(bits: &[u64], pos: usize) -> Option<usize> {
    let mut w = pos / 64;
    let mut x = *bits.get(w)? & (u64::MAX << (pos % 64));
    while x == 0 {
        w += 1;
        x = *bits.get(w)?;
    }
    Some(w * 64 + x.trailing_zeros() as usize)
}

/// How many consecutive set bits start at `pos`.
#[inline(always)]
fn ones_from(bits: &[u64], pos: usize) -> usize {
    let (mut w, shift) = (pos / 64, pos % 64);
    let mut n = (bits[w] >> shift).trailing_ones() as usize;
    if n < 64 - shift {
        return n;
    }
    loop {
        w += 1;
        let t = bits[w].trailing_ones() as usize;
        n += t;
        if t < 64 {
            return n;
        }
    }
}

/// Literal codes and their lengths in two tables: one load each, no unpacking per literal.
struct LiteralCodes {
    code: [u16; 256],
    bits: [u8; 256],
}

/// The block's codes, ready to write (LSB first). A match's code has its extra bits and the distance
/// code folded in.
struct Codes {
    literals: LiteralCodes,
    matches: [(u32, u32); 256],
    end_of_block: (u32, u32),
}

/// Writes the dynamic block header (BFINAL, BTYPE, the three code tables) and returns the codes.
fn write_block_header(bits: &mut BitWriter, counts: &[u32; LITLEN_SYMBOLS], pixel_bytes: usize) -> Codes {
    let litlen = code_lengths(counts, MAX_CODE_BITS);
    let litlen_codes = canonical_codes(&litlen);
    // Only one distance is used. Two codes of one bit keep the distance code complete; the used
    // distance (symbol pixel_bytes - 1, no extra bits) is symbol 0's partner or symbol 0 itself.
    let dist_symbol = pixel_bytes - 1;
    let mut dist = vec![0u8; dist_symbol.max(1) + 1];
    dist[0] = 1;
    dist[dist_symbol.max(1)] = 1;
    let dist_code = (dist_symbol != 0) as u32;

    let hlit = (257..=LITLEN_SYMBOLS).rev().find(|&n| litlen[n - 1] != 0).unwrap_or(257);
    let lengths: Vec<u8> = litlen[..hlit].iter().chain(&dist).copied().collect();
    let mut cl_counts = [0u32; 19];
    for &l in &lengths {
        cl_counts[l as usize] += 1;
    }
    let cl = code_lengths(&cl_counts, MAX_CODE_LENGTH_BITS);
    let cl_codes = canonical_codes(&cl);
    let hclen = (4..=19).rev().find(|&n| cl[CODE_LENGTH_ORDER[n - 1]] != 0).unwrap_or(4);

    bits.put(1 | 2 << 1, 3); // BFINAL = 1, BTYPE = 2 (dynamic Huffman)
    bits.put((hlit - 257) as u64, 5);
    bits.put((dist.len() - 1) as u64, 5);
    bits.put((hclen - 4) as u64, 4);
    for &s in &CODE_LENGTH_ORDER[..hclen] {
        bits.put(cl[s] as u64, 3);
    }
    for &l in &lengths {
        bits.put(cl_codes[l as usize] as u64, cl[l as usize] as u32);
    }

    let literals = LiteralCodes {
        code: std::array::from_fn(|b| litlen_codes[b] as u16),
        bits: std::array::from_fn(|b| litlen[b]),
    };
    let mut matches = [(0u32, 0u32); 256];
    for len in 3..=MAX_MATCH {
        let (sym, extra_bits, extra) = LENGTH_CODES[len - 3];
        let (sym, extra_bits, extra) = (sym as usize, extra_bits as u32, extra as u32);
        let (code, n) = (litlen_codes[sym], litlen[sym] as u32);
        matches[len - 3] = (code | extra << n | dist_code << (n + extra_bits), n + extra_bits + 1);
    }
    Codes { literals, matches, end_of_block: (litlen_codes[END_OF_BLOCK], litlen[END_OF_BLOCK] as u32) }
}

/// Huffman code lengths for `counts`, none longer than `limit` bits. Unused symbols get 0. At least two
/// symbols get a code (a one-symbol code is not complete, which inflaters reject for some tables).
fn code_lengths(counts: &[u32], limit: u32) -> Vec<u8> {
    let mut leaves: Vec<(u32, usize)> = counts.iter().enumerate().filter(|(_, &f)| f > 0).map(|(s, &f)| (f, s)).collect();
    for s in (0..counts.len()).filter(|&s| counts[s] == 0).take(2usize.saturating_sub(leaves.len())) {
        leaves.push((1, s));
    }
    // By count, then symbol: one u64 compare each (tuple compares cost a few µs a page here).
    leaves.sort_unstable_by_key(|&(f, s)| (f as u64) << 32 | s as u64);
    let depths = huffman_depths(&leaves);
    // Codes deeper than the limit move up to it; the code is then over-full, and each step below
    // takes one code off the limit level and splits a shorter one in two, until it is complete again
    // (the repair zlib and miniz use).
    let limit = limit as usize;
    let mut per_length = vec![0u32; limit + 1];
    for &d in &depths {
        per_length[(d as usize).min(limit)] += 1;
    }
    let mut kraft: u64 = (1..=limit).map(|l| (per_length[l] as u64) << (limit - l)).sum();
    while kraft > 1 << limit {
        per_length[limit] -= 1;
        let shorter = (1..limit).rev().find(|&l| per_length[l] > 0).expect("a shorter code to split");
        per_length[shorter] -= 1;
        per_length[shorter + 1] += 2;
        kraft -= 1;
    }
    // The most frequent symbols (last in `leaves`) get the shortest codes.
    let mut lengths = vec![0u8; counts.len()];
    let mut by_frequency = leaves.iter().rev();
    for (len, &n) in per_length.iter().enumerate().skip(1) {
        for _ in 0..n {
            lengths[by_frequency.next().expect("one length per symbol").1] = len as u8;
        }
    }
    lengths
}

/// Depth of each leaf in a Huffman tree over `leaves` sorted by count (two-queue construction).
fn huffman_depths(leaves: &[(u32, usize)]) -> Vec<u32> {
    let n = leaves.len();
    // Nodes 0..n are leaves, n.. are internal; parent[i] links each node to its parent.
    let mut weight: Vec<u64> = leaves.iter().map(|l| l.0 as u64).collect();
    let mut parent = vec![usize::MAX; 2 * n - 1];
    let (mut next_leaf, mut next_inner) = (0, n);
    let take = |weight: &Vec<u64>, next_leaf: &mut usize, next_inner: &mut usize| {
        if *next_leaf < n && (*next_inner >= weight.len() || weight[*next_leaf] <= weight[*next_inner]) {
            *next_leaf += 1;
            *next_leaf - 1
        } else {
            *next_inner += 1;
            *next_inner - 1
        }
    };
    for _ in 0..n - 1 {
        let a = take(&weight, &mut next_leaf, &mut next_inner);
        let b = take(&weight, &mut next_leaf, &mut next_inner);
        let node = weight.len();
        weight.push(weight[a] + weight[b]);
        parent[a] = node;
        parent[b] = node;
    }
    let mut depth = vec![0u32; 2 * n - 1];
    for i in (0..2 * n - 2).rev() {
        depth[i] = depth[parent[i]] + 1;
    }
    depth.truncate(n);
    depth
}

/// Canonical codes for `lengths` (RFC 1951, 3.2.2), bit-reversed because DEFLATE sends them MSB first
/// into an LSB-first stream.
fn canonical_codes(lengths: &[u8]) -> Vec<u32> {
    let mut count = [0u32; 16];
    for &l in lengths {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 16];
    for bits in 1..16 {
        next[bits] = (next[bits - 1] + count[bits - 1]) << 1;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let code = next[l as usize];
            next[l as usize] += 1;
            code.reverse_bits() >> (32 - l as u32)
        })
        .collect()
}

/// LSB-first bit output through a 64-bit accumulator into a buffer sized for the worst case (plus
/// 8 bytes of slack): each flush stores all 8 accumulator bytes and keeps the incomplete last one, so
/// no flush branches.
struct BitWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    acc: u64,
    /// Bits in `acc`, < 8 between calls.
    n: u32,
}

impl BitWriter<'_> {
    /// `n` ≤ 56 bits.
    #[inline(always)]
    fn put(&mut self, bits: u64, n: u32) {
        self.acc |= bits << self.n;
        self.n += n;
        self.flush();
    }

    #[inline(always)]
    fn flush(&mut self) {
        self.buf[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let whole = self.n & !7;
        self.pos += (whole / 8) as usize;
        // whole < 64 whenever `put` keeps to 56 bits: shifting by it is defined.
        self.acc >>= whole;
        self.n -= whole;
    }

    /// Literal codes, LITERALS_PER_FLUSH per flush. The state lives in registers for the loop, not
    /// behind `self`.
    #[inline(always)]
    fn literals(&mut self, bytes: &[u8], codes: &LiteralCodes) {
        let mut w = BitWriter { buf: &mut *self.buf, pos: self.pos, acc: self.acc, n: self.n };
        let add = |w: &mut BitWriter, b: u8| {
            w.acc |= (codes.code[b as usize] as u64) << w.n;
            w.n += codes.bits[b as usize] as u32;
        };
        let (groups, rest) = bytes.as_chunks::<LITERALS_PER_FLUSH>();
        for group in groups {
            for &b in group {
                add(&mut w, b);
            }
            w.flush();
        }
        for &b in rest {
            add(&mut w, b);
            w.flush();
        }
        (self.pos, self.acc, self.n) = (w.pos, w.acc, w.n);
    }

    /// Writes the last partial byte; returns the stream length.
    fn finish(mut self) -> usize {
        self.flush();
        self.pos + self.n.div_ceil(8) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filter byte 0 before each row: what an inflater must give back.
    fn scanlines(data: &[u8], row_bytes: usize) -> Vec<u8> {
        data.chunks_exact(row_bytes).flat_map(|r| std::iter::once(0).chain(r.iter().copied())).collect()
    }

    /// Encodes and inflates with miniz_oxide, which also checks the Adler-32 trailer.
    fn round_trip(data: &[u8], row_bytes: usize, pixel_bytes: usize) -> usize {
        let mut z = Vec::new();
        zlib_scanlines(data, row_bytes, pixel_bytes, &mut z);
        let back = miniz_oxide::inflate::decompress_to_vec_zlib(&z)
            .unwrap_or_else(|e| panic!("{row_bytes}-byte rows, {pixel_bytes} bytes/pixel: inflate failed: {e:?}"));
        assert!(back == scanlines(data, row_bytes), "{row_bytes}-byte rows, {pixel_bytes} bytes/pixel: bytes differ");
        z.len()
    }

    /// Deterministic pseudo-random bytes (xorshift).
    fn noise(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn every_geometry_and_content_round_trips() {
        for row_bytes in [1, 2, 3, 6, 15, 16, 17, 31, 63, 64, 65, 129, 300, 1000, 1789] {
            for pixel_bytes in [1, 3] {
                for rows in [1, 2, 7] {
                    let len = row_bytes * rows;
                    round_trip(&noise(len, 7 + len as u64), row_bytes, pixel_bytes);
                    round_trip(&vec![255; len], row_bytes, pixel_bytes);
                    round_trip(&vec![0; len], row_bytes, pixel_bytes);
                    // Runs of several values and lengths, including every split around 258.
                    let mut runs = Vec::new();
                    for (i, n) in [1usize, 2, 3, 7, 8, 9, 257, 258, 259, 260, 261, 516, 517, 1000].iter().cycle().take(40).enumerate() {
                        runs.extend(std::iter::repeat_n((i * 37) as u8, *n));
                    }
                    runs.resize(len, 255);
                    round_trip(&runs, row_bytes, pixel_bytes);
                    // Sparse ink on a blank page, as in text: rare literals among long runs.
                    let ink: Vec<u8> = noise(len, 99).iter().map(|&b| if b < 20 { b } else { 255 }).collect();
                    round_trip(&ink, row_bytes, pixel_bytes);
                }
            }
        }
    }

    /// The SSE2 compare kernel against the definition, byte by byte; the fused AVX-512 kernel (where
    /// the CPU has it) against both that and simd-adler32's checksum, over rows past its 4096-byte chunks.
    #[test]
    fn row_scans_match_their_definition() {
        for len in [1, 2, 3, 4, 15, 16, 17, 19, 31, 63, 64, 65, 67, 128, 131, 589, 1767, 4096, 4097, 9000] {
            for d in 1..=4 {
                let rows: Vec<Vec<u8>> = (0..3).map(|r| noise(len, len as u64 * 31 + d as u64 + r).iter().map(|b| [0, 128, 255][(b % 3) as usize]).collect()).collect();
                let mut adler = simd_adler32::Adler32::new();
                #[cfg(target_arch = "x86_64")]
                let mut fused = Adler { a: 1, b: 0 };
                for row in &rows {
                    let mut want = vec![0u64; len.div_ceil(64) + 1];
                    for k in d..len {
                        want[k / 64] |= ((row[k] == row[k - d]) as u64) << (k % 64);
                    }
                    let mut got = vec![0u64; want.len()];
                    repeat_bits(row, d, &mut got);
                    assert_eq!(got, want, "SSE2, {len} bytes, distance {d}");
                    adler.write(&[0]);
                    adler.write(row);
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx512bw") {
                        let mut got = vec![0u64; want.len()];
                        // SAFETY: AVX-512BW checked above.
                        unsafe { scan_row_avx512(row, d, &mut got, &mut fused) };
                        assert_eq!(got, want, "AVX-512, {len} bytes, distance {d}");
                        assert_eq!(fused.value(), adler.clone().finish(), "AVX-512 Adler-32, {len}-byte rows");
                    }
                }
            }
        }
    }

    /// Both paths of `RunMap::build` give the same bitmaps and checksum on a page-like image. Only
    /// where the CPU has AVX-512 (it says so when skipped); elsewhere there is one path.
    #[test]
    fn both_scan_paths_agree() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx512bw") {
                eprintln!("both_scan_paths_agree: skipped, no AVX-512BW on this CPU");
                return;
            }
            for (row_bytes, d) in [(589, 1), (1767, 3), (5000, 1)] {
                let page: Vec<u8> = noise(row_bytes * 40, row_bytes as u64).iter().map(|&b| if b < 40 { b } else { 255 }).collect();
                let (mut base, mut wide) = (RunMap::default(), RunMap::default());
                // SAFETY: AVX-512BW checked above (and not needed for the baseline path).
                let (adler, wide_adler) = unsafe { (base.build_with(&page, row_bytes, d, false), wide.build_with(&page, row_bytes, d, true)) };
                assert_eq!(wide_adler, adler, "Adler-32, {row_bytes}-byte rows");
                assert!(base.repeat == wide.repeat && base.starts == wide.starts, "run bitmaps, {row_bytes}-byte rows");
            }
        }
    }

    /// Skewed counts (Fibonacci-like) need depths far past the limit; the limited code must still be
    /// complete (Kraft sum exactly 1) and keep every symbol.
    #[test]
    fn limited_codes_are_complete() {
        let mut counts = vec![0u32; 40];
        let (mut a, mut b) = (1u32, 1u32);
        for c in counts.iter_mut().take(30) {
            *c = a;
            (a, b) = (b, a.saturating_add(b));
        }
        for limit in [7, 12, 15] {
            let lengths = code_lengths(&counts, limit);
            assert!(lengths.iter().all(|&l| l as u32 <= limit));
            assert!(lengths[..30].iter().all(|&l| l > 0) && lengths[30..].iter().all(|&l| l == 0));
            let kraft: f64 = lengths.iter().filter(|&&l| l > 0).map(|&l| 0.5f64.powi(l as i32)).sum();
            assert!((kraft - 1.0).abs() < 1e-12, "limit {limit}: Kraft sum {kraft}");
        }
        assert_eq!(code_lengths(&[0, 5, 0], 7), vec![1, 1, 0], "a lone symbol gets a partner");
    }

    #[test]
    fn blank_rows_compress_to_almost_nothing() {
        let size = round_trip(&vec![255; 595 * 842], 595, 1);
        assert!(size < 3_000, "a blank A4 page (501 kB of pixels) took {size} bytes");
    }
}
