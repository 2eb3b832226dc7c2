// Top-k selection (SparQ's top-r components of |q| and top-k positions of sHat; H2O's heavy hitters).
//
// The indices of the kk largest of x (n), emitted in ascending index order. Ties go to the lower
// index. Values compare as keys: the f32 bits mapped to u32 so that unsigned order is float order
// (-0 < +0, +Infinity highest; NaN unsupported).
//
// No sort of n: a radix select finds the kk-th largest key T, one digit at a time from the top,
//   Step 1: histogram of bits 31..21 of every key; the bin holding the kk-th largest is T's first digit;
//   Step 2: the keys in that bin are copied to scratch; histogram of bits 20..10 picks the second digit;
//   Step 3: the keys also matching it are kept; histogram of bits 9..0 picks the last digit;
//   Step 4: one pass in index order emits every key > T and the first `need` keys == T.
// Nothing static: several worker threads may run it at once, each with its own scratch.

const BINS: usize = 2048; // 11-bit digits (the last one has 10 bits)
const SAMPLE: usize = 1024; // keys sampled to guess a threshold below the kk-th largest
const SAMPLED_FROM: usize = 8192; // n at which sampling starts to pay

/**
 * Lane compaction: entry m (16 bytes, an i8x16.swizzle pattern) moves the i32 lanes whose bit is set
 * in the 4-bit mask m to the front, in lane order (0x80 zeroes the rest).
 */
const COMPACT: usize = memory.data<u8>([
  128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
  0, 1, 2, 3, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
  4, 5, 6, 7, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
  0, 1, 2, 3, 4, 5, 6, 7, 128, 128, 128, 128, 128, 128, 128, 128,
  8, 9, 10, 11, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
  0, 1, 2, 3, 8, 9, 10, 11, 128, 128, 128, 128, 128, 128, 128, 128,
  4, 5, 6, 7, 8, 9, 10, 11, 128, 128, 128, 128, 128, 128, 128, 128,
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 128, 128, 128, 128,
  12, 13, 14, 15, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
  0, 1, 2, 3, 12, 13, 14, 15, 128, 128, 128, 128, 128, 128, 128, 128,
  4, 5, 6, 7, 12, 13, 14, 15, 128, 128, 128, 128, 128, 128, 128, 128,
  0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 128, 128, 128, 128,
  8, 9, 10, 11, 12, 13, 14, 15, 128, 128, 128, 128, 128, 128, 128, 128,
  0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 128, 128, 128, 128,
  4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 128, 128, 128, 128,
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
]);

/**
 * Appends the lanes of idx4 and key4 (i32x4 each) selected by mask4 (all-ones lanes) at idxOut + 4m
 * and keyOut + 4m, in lane order, without a branch (the full vectors are stored; the next append
 * overwrites the unselected tail): returns the new count. Both outputs need 12 bytes of slack.
 */
// @ts-ignore: decorator
@inline function append4(idxOut: usize, keyOut: usize, m: usize, idx4: v128, key4: v128, mask4: v128): usize {
  const bits = <usize>i32x4.bitmask(mask4);
  const pattern = v128.load(COMPACT + (bits << 4));
  v128.store(idxOut + (m << 2), i8x16.swizzle(idx4, pattern));
  v128.store(keyOut + (m << 2), i8x16.swizzle(key4, pattern));
  return m + <usize>popcnt<u32>(<u32>bits);
}

/**
 * outIdx (kk) i32 = the indices of the kk largest of x (n) f32, ascending; 1 <= kk <= n.
 * scratch: 4 * (n + 2048) bytes (a 2048-bin histogram, then up to n keys).
 *
 * For long x and kk <= n / 4 (SparQ's positions: kk ≈ n/8 or less) most keys are dropped with one
 * vector compare each: SAMPLE keys at even strides give a guess T0 that about 1.5 kk + 32 keys
 * exceed; one pass keeps the keys >= T0 (with their indices, in index order); if at least kk were
 * kept, the kk-th largest key is among them and the select and the emission run on them alone. A
 * guess that kept too few or too many (a sample unlike the rest of x) falls back to the full
 * select. Either way the result is the same indices.
 */
export function topK(outIdx: usize, x: usize, n: i32, kk: i32, scratch: usize): void {
  const nx = <usize>n, want = <usize>kk;
  if (nx >= SAMPLED_FROM && want <= nx >> 2 && topKSampled(outIdx, x, nx, want, scratch)) return;
  topKFull(outIdx, x, nx, want, scratch);
}

/** topK by the sampled guess; false (nothing written to outIdx) if the guess kept fewer than kk keys or more than n / 2. */
function topKSampled(outIdx: usize, x: usize, nx: usize, want: usize, scratch: usize): bool {
  const hist = scratch;
  // Past the histogram: candidate indices, then their keys, cap + 4 entries each (vector stores run 3 past).
  const cap = (nx >> 1) - 8;
  const candIdx = scratch + (BINS << 2), candKeys = candIdx + ((cap + 4) << 2);
  // The guess: the (1.5 kk/n · SAMPLE + 32)-th largest of SAMPLE keys spread evenly over x.
  for (let j: usize = 0; j < SAMPLE; j++) store<u32>(candKeys + (j << 2), keyOf(load<u32>(x + (((j * nx) / SAMPLE) << 2))));
  const rank = min<usize>(SAMPLE, (want * SAMPLE * 3) / (nx * 2) + 32);
  const guess = <u32>(selectKey(candKeys, SAMPLE, <u32>rank, hist) >>> 32);
  // Keep the keys >= guess with their indices, in index order, without branching on the data.
  const signedGuess = i32x4.splat(<i32>(guess ^ 0x80000000)), signBits = i32x4.splat(0x80000000);
  let idx4 = i32x4(0, 1, 2, 3);
  const four = i32x4.splat(4);
  let m: usize = 0;
  let i: usize = 0;
  for (; i + 4 <= nx; i += 4) {
    const key4 = keys4(v128.load(x + (i << 2)));
    m = append4(candIdx, candKeys, m, idx4, key4, i32x4.ge_s(v128.xor(key4, signBits), signedGuess));
    idx4 = i32x4.add(idx4, four);
    if (m > cap) return false;
  }
  for (; i < nx; i++) {
    const key = keyOf(load<u32>(x + (i << 2)));
    if (key >= guess) {
      if (m == cap) return false;
      store<i32>(candIdx + (m << 2), <i32>i);
      store<u32>(candKeys + (m << 2), key);
      m++;
    }
  }
  if (m < want) return false;
  const selected = selectKey(candKeys, m, <u32>want, hist);
  const threshold = <u32>(selected >>> 32);
  let need = <u32>selected;
  // Emit in index order from the kept indices (keys recomputed: the select reordered its copy).
  let o: usize = 0;
  for (let c: usize = 0; c < m && o < want; c++) {
    const l = load<i32>(candIdx + (c << 2));
    const key = keyOf(load<u32>(x + (<usize>l << 2)));
    const tie = key == threshold && need > 0;
    store<i32>(outIdx + (o << 2), l);
    o += <usize>(key > threshold || tie);
    need -= <u32>tie;
  }
  return true;
}

/**
 * The kk-th largest of the m keys at keys (u32, overwritten), by three radix digits, as
 * (key << 32) | need, where need = how many keys equal to it are among the kk largest.
 */
function selectKey(keys: usize, m: usize, kk: u32, hist: usize): u64 {
  memory.fill(hist, 0, BINS << 2);
  for (let i: usize = 0; i < m; i++) {
    const bin = hist + ((load<u32>(keys + (i << 2)) >> 21) << 2);
    store<u32>(bin, load<u32>(bin) + 1);
  }
  let need = kk;
  const d1 = digitHolding(hist, BINS, need);
  need -= countAbove(hist, BINS, d1);
  let m1: usize = 0;
  for (let i: usize = 0; i < m; i++) {
    const key = load<u32>(keys + (i << 2));
    if (key >> 21 == d1) {
      store<u32>(keys + (m1 << 2), key);
      m1++;
    }
  }
  return lowerDigits(keys, m1, d1, need, hist);
}

/**
 * Steps 2 and 3 of the select on the m keys at keys (u32, overwritten), all with first digit d1, of which
 * the `need` largest are wanted: the kk-th largest key and the count of its equals wanted, as selectKey
 * returns them.
 */
function lowerDigits(keys: usize, m: usize, d1: u32, need: u32, hist: usize): u64 {
  memory.fill(hist, 0, BINS << 2);
  for (let i: usize = 0; i < m; i++) {
    const bin = hist + (((load<u32>(keys + (i << 2)) >> 10) & 0x7ff) << 2);
    store<u32>(bin, load<u32>(bin) + 1);
  }
  const d2 = digitHolding(hist, BINS, need);
  need -= countAbove(hist, BINS, d2);
  // Keep the keys also matching d2 (in place: the write index never passes the read index).
  let m2: usize = 0;
  for (let i: usize = 0; i < m; i++) {
    const key = load<u32>(keys + (i << 2));
    if (((key >> 10) & 0x7ff) == d2) {
      store<u32>(keys + (m2 << 2), key);
      m2++;
    }
  }
  memory.fill(hist, 0, 1024 << 2);
  for (let i: usize = 0; i < m2; i++) {
    const bin = hist + ((load<u32>(keys + (i << 2)) & 0x3ff) << 2);
    store<u32>(bin, load<u32>(bin) + 1);
  }
  const d3 = digitHolding(hist, 1024, need);
  need -= countAbove(hist, 1024, d3);
  return (<u64>((d1 << 21) | (d2 << 10) | d3) << 32) | <u64>need;
}

/** The radix select over all of x, then the emission in index order (the steps in this file's header). */
function topKFull(outIdx: usize, x: usize, nx: usize, want: usize, scratch: usize): void {
  const hist = scratch, keys = scratch + (BINS << 2);

  // Step 1: the first digit, over all of x.
  memory.fill(hist, 0, BINS << 2);
  for (let i: usize = 0; i < nx; i++) {
    const bin = hist + ((keyOf(load<u32>(x + (i << 2))) >> 21) << 2);
    store<u32>(bin, load<u32>(bin) + 1);
  }
  let need = <u32>want; // how many of the keys matching the prefix found so far are still to be taken
  const d1 = digitHolding(hist, BINS, need);
  need -= countAbove(hist, BINS, d1);

  // Step 2: keep the keys in bin d1, then the second digit. Runs of 4 with none in the bin are
  // skipped with one vector compare (bin d1 is often a small part of x).
  const d1x4 = i32x4.splat(d1);
  let m: usize = 0;
  for (let i: usize = 0; i < nx; i += 4) {
    if (i + 4 <= nx && !v128.any_true(i32x4.eq(i32x4.shr_u(keys4(v128.load(x + (i << 2))), 21), d1x4))) continue;
    const end = min(i + 4, nx);
    for (let l = i; l < end; l++) {
      const key = keyOf(load<u32>(x + (l << 2)));
      if (key >> 21 == d1) {
        store<u32>(keys + (m << 2), key);
        m++;
      }
    }
  }
  // Steps 2 (the second digit) and 3 on the kept keys.
  const selected = lowerDigits(keys, m, d1, need, hist);
  const threshold = <u32>(selected >>> 32);
  need = <u32>selected;

  // Step 4: emit in index order. Runs of 4 with no key >= T (most of x when kk << n) are skipped
  // with one vector compare, on keys moved to signed order (wasm SIMD has no unsigned >=).
  const signedT = i32x4.splat(<i32>(threshold ^ 0x80000000));
  let o: usize = 0;
  for (let i: usize = 0; i < nx; i += 4) {
    if (i + 4 <= nx) {
      const signedKeys = v128.xor(keys4(v128.load(x + (i << 2))), i32x4.splat(0x80000000));
      if (!v128.any_true(i32x4.ge_s(signedKeys, signedT))) continue;
    }
    const end = min(i + 4, nx);
    for (let l = i; l < end; l++) {
      const key = keyOf(load<u32>(x + (l << 2)));
      if (key > threshold || (key == threshold && need > 0)) {
        if (key == threshold) need--;
        store<i32>(outIdx + (o << 2), <i32>l);
        o++;
      }
    }
  }
}

/** The f32 bits as an unsigned key in float order: negatives flipped entirely, positives' sign bit set. */
// @ts-ignore: decorator
@inline function keyOf(bits: u32): u32 {
  return bits ^ (<u32>(<i32>bits >> 31) | 0x80000000);
}

/** keyOf for 4 lanes of f32 bits. */
// @ts-ignore: decorator
@inline function keys4(bits: v128): v128 {
  return v128.xor(bits, v128.or(i32x4.shr_s(bits, 31), i32x4.splat(0x80000000)));
}

/** The bin (counting down from the top) in which the running count of hist (bins u32) reaches need. */
function digitHolding(hist: usize, bins: usize, need: u32): u32 {
  let above: u32 = 0;
  let d = bins - 1;
  while (above + load<u32>(hist + (d << 2)) < need) {
    above += load<u32>(hist + (d << 2));
    d--;
  }
  return <u32>d;
}

/** Σ hist[b] over bins b above d. */
function countAbove(hist: usize, bins: usize, d: u32): u32 {
  let count: u32 = 0;
  for (let b = <usize>d + 1; b < bins; b++) count += load<u32>(hist + (b << 2));
  return count;
}
