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

/**
 * outIdx (kk) i32 = the indices of the kk largest of x (n) f32, ascending; 1 <= kk <= n.
 * scratch: 4 * (n + 2048) bytes (a 2048-bin histogram, then up to n keys).
 */
export function topK(outIdx: usize, x: usize, n: i32, kk: i32, scratch: usize): void {
  const nx = <usize>n;
  const hist = scratch, keys = scratch + (BINS << 2);

  // Step 1: the first digit, over all of x.
  memory.fill(hist, 0, BINS << 2);
  for (let i: usize = 0; i < nx; i++) {
    const bin = hist + ((keyOf(load<u32>(x + (i << 2))) >> 21) << 2);
    store<u32>(bin, load<u32>(bin) + 1);
  }
  let need = <u32>kk; // how many of the keys matching the prefix found so far are still to be taken
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
  memory.fill(hist, 0, BINS << 2);
  for (let i: usize = 0; i < m; i++) {
    const bin = hist + (((load<u32>(keys + (i << 2)) >> 10) & 0x7ff) << 2);
    store<u32>(bin, load<u32>(bin) + 1);
  }
  const d2 = digitHolding(hist, BINS, need);
  need -= countAbove(hist, BINS, d2);

  // Step 3: keep the keys also matching d2 (in place: the write index never passes the read index).
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
  const threshold = (d1 << 21) | (d2 << 10) | d3;

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
