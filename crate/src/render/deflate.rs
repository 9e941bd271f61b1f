//! A zlib (DEFLATE) encoder specialised for PNG scanlines of rendered text pages.
//!
//! General-purpose encoders spend their time searching for matches; a text page has none worth finding
//! except runs: blank rows and the gaps between glyphs repeat the previous pixel. So the only matches
//! here are "repeat the previous pixel" (distance = bytes per pixel), found with 16-byte compares into
//! page-wide bitmaps, and everything else is a literal. One dynamic Huffman block, built from the
//! symbol counts of every 8th row, makes the antialiased greys cheap. On golden/render/texts.jsonl it
//! takes less than half the time of fdeflate with the Up filter (the `png` crate's fastest level) and
//! its files are 30% smaller (67 vs 96 kB per page; bench/render_phases.rs compares them). It finds no repeats further back than
//! one pixel: a page of identical lines compresses far better at the `balanced` level.

use std::cell::RefCell;

/// Runs shorter than this stay literals. The background's literal code is 1–2 bits, so short matches
/// save few bits, and each costs more time than the literals it replaces (measured: 32 is faster than
/// 8 and 16, with files within 1%). A power of two, for the doubling in `RunMap::build`.
const MIN_RUN: usize = 32;
const MAX_MATCH: usize = 258;
const END_OF_BLOCK: usize = 256;
/// Literal/length alphabet: 256 literals, end of block, 29 length codes.
const LITLEN_SYMBOLS: usize = 286;
/// Literal/length codes are limited to 12 bits (DEFLATE allows 15) so four literals fit one flush;
/// on text pages only symbols too rare to matter ever need more.
const MAX_CODE_BITS: u32 = 12;
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
        runs.build(data, row_bytes, pixel_bytes);
        let row = |r: usize| r * row_bytes..(r + 1) * row_bytes;

        // Every symbol keeps a code (sampled rows may miss some), so each count starts at 1. Literals
        // go to four interleaved tables: runs of one value (the background) would otherwise chain
        // every increment on the one before.
        let mut counts = [1u32; LITLEN_SYMBOLS];
        let mut lanes = [[0u32; 256]; 4];
        for r in (0..rows).step_by(SAMPLE_EVERY) {
            counts[0] += 1; // the filter byte
            runs.segment(data, row(r), |lits, run| {
                let mut quads = lits.chunks_exact(4);
                for q in &mut quads {
                    for (lane, &b) in lanes.iter_mut().zip(q) {
                        lane[b as usize] += 1;
                    }
                }
                quads.remainder().iter().for_each(|&b| lanes[0][b as usize] += 1);
                match_lengths(run).for_each(|len| counts[LENGTH_CODES[len - 3].0 as usize] += 1);
            });
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
        for r in 0..rows {
            bits.literals(&[0], &codes.literals); // the filter byte
            runs.segment(data, row(r), |lits, run| {
                bits.literals(lits, &codes.literals);
                for len in match_lengths(run) {
                    let (code, n) = codes.matches[len - 3];
                    bits.put(code as u64, n);
                }
            });
        }
        let (eob, n) = codes.end_of_block;
        bits.put(eob as u64, n);
        let len = bits.finish();
        out.extend_from_slice(&stream[..len]);
        if stream.len() > super::KEEP_BUFFER_BYTES {
            *stream = Vec::new();
            *runs = RunMap::default();
        }
    });
    let mut adler = simd_adler32::Adler32::new();
    for row in data.chunks_exact(row_bytes) {
        adler.write(&[0]);
        adler.write(row);
    }
    out.extend_from_slice(&adler.finish().to_be_bytes());
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

/// Page-wide bitmaps. Bit `k` of `repeat`: byte `k` equals the byte `d` before it in the same row
/// (never in a row's first pixel: rows are encoded on their own). Bit `k` of `starts`: MIN_RUN such
/// bytes begin at `k`. Both end with a zero word, so scans stop there.
#[derive(Default)]
struct RunMap {
    repeat: Vec<u64>,
    starts: Vec<u64>,
}

impl RunMap {
    fn build(&mut self, data: &[u8], row_bytes: usize, d: usize) {
        let len = data.len();
        let words = len.div_ceil(64);
        // Bits of the 16 bytes at 16·c: one 16-byte compare each, shifted into place at the ends.
        let edge_chunk = |c: usize| -> u64 {
            let start = 16 * c;
            if start >= len {
                0
            } else if len < 16 + d {
                (start.max(d)..(start + 16).min(len)).fold(0, |m, k| m | ((data[k] == data[k - d]) as u64) << (k - start))
            } else if start == 0 {
                (equal16(&data[d..], data) as u64) << d & 0xFFFF
            } else if start + 16 <= len {
                equal16(&data[start..], &data[start - d..]) as u64
            } else {
                let tail = len - 16;
                (equal16(&data[tail..], &data[tail - d..]) >> (start - tail)) as u64
            }
        };
        self.repeat.clear();
        self.repeat.extend((0..words).map(|w| {
            let base = 64 * w;
            if base >= 16 && base + 64 <= len {
                let block = &data[base - d..base + 64];
                let q = |i: usize| equal16(&block[d + 16 * i..], &block[16 * i..]) as u64;
                q(0) | q(1) << 16 | q(2) << 32 | q(3) << 48
            } else {
                (0..4).fold(0, |word, i| word | edge_chunk(4 * w + i) << (16 * i))
            }
        }));
        self.repeat.push(0);
        for first in (row_bytes..len).step_by(row_bytes) {
            for k in first..first + d.min(row_bytes) {
                self.repeat[k / 64] &= !(1 << (k % 64));
            }
        }
        // Runs of 2, 4, … MIN_RUN set bits, each step ANDing the bits with themselves shifted. A run
        // starting in word w ends by word w + 1, so each word needs only the next one; and the bits of
        // the next one that matter never need a third word, so its own steps may shift in zeros.
        // Plain u64 lanes, so the loop vectorizes.
        const _: () = assert!(MIN_RUN.is_power_of_two() && MIN_RUN <= 64);
        self.starts.clear();
        self.starts.extend(self.repeat.windows(2).map(|pair| {
            let (mut lo, mut hi) = (pair[0], pair[1]);
            let mut shift = 1;
            while shift < MIN_RUN {
                lo &= lo >> shift | hi << (64 - shift);
                hi &= hi >> shift;
                shift *= 2;
            }
            lo
        }));
        self.starts.push(0);
    }

    /// Splits row `range` of `data` into literal stretches, each followed by a run (0 after the last).
    #[inline(always)]
    fn segment(&self, data: &[u8], range: std::ops::Range<usize>, mut piece: impl FnMut(&[u8], usize)) {
        let (mut pending, mut pos) = (range.start, range.start); // pending: literals not yet handed out
        while let Some(k) = next_set(&self.starts, pos).filter(|&k| k < range.end) {
            let len = ones_from(&self.repeat, k);
            piece(&data[pending..k], len);
            pos = k + len;
            pending = pos;
        }
        piece(&data[pending..range.end], 0);
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

/// The block's codes, ready to write (LSB first). Literals pack `code | bits << 16`; a match's code
/// has its extra bits and the distance code folded in.
struct Codes {
    literals: [u32; 256],
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

    let mut literals = [0u32; 256];
    for (b, c) in literals.iter_mut().enumerate() {
        *c = litlen_codes[b] | (litlen[b] as u32) << 16;
    }
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
    leaves.sort_unstable();
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

    /// Literal codes, four per flush (4 × 12 bits + 7 left over fit the accumulator). The state lives
    /// in registers for the loop, not behind `self`.
    #[inline(always)]
    fn literals(&mut self, bytes: &[u8], codes: &[u32; 256]) {
        let mut w = BitWriter { buf: &mut *self.buf, pos: self.pos, acc: self.acc, n: self.n };
        let add = |w: &mut BitWriter, b: u8| {
            let c = codes[b as usize];
            w.acc |= ((c & 0xFFFF) as u64) << w.n;
            w.n += c >> 16;
        };
        let mut quads = bytes.chunks_exact(4);
        for q in &mut quads {
            add(&mut w, q[0]);
            add(&mut w, q[1]);
            add(&mut w, q[2]);
            add(&mut w, q[3]);
            w.flush();
        }
        for &b in quads.remainder() {
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
                        runs.extend(std::iter::repeat((i * 37) as u8).take(*n));
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
