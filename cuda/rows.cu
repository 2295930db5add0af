// hypergrad CUDA kernels: the rows of mini-batch SGD drawn on the device, as a counter-based
// stream (issue 23). CPU twin: src/data/row_stream.rs, whose module doc has the math:
//
//   row(seed, n, k) = π_{seed, e}(i),  e = ⌊k / n⌋,  i = k mod n,
//
// π a six-round balanced Feistel permutation of 0..2^{2h} (2^{2h} ≥ n, h ≥ 1) keyed by the
// epoch, restricted to 0..n by cycle walking. Every operation is 64-bit integer arithmetic
// (wrapping multiplies, shifts, xors), so the device and the CPU draw bit-identical rows.
//
// hg_stream_rows(seed, n, offset, count, rows)    rows[j] = row(seed, n, *offset + j), j < count
//     `offset` (the stream position k₀) is read from device memory, so a captured CUDA graph
//     draws the next outer step's rows after hg_stream_advance moved it, with no re-capture.
//     block 256, grid min(ceil(count/256), 4096); grid-stride. Traffic: count u32 writes;
//     < 4 Feistel passes per row on average (cycle walking over a domain ≤ 4n).
// hg_stream_advance(offset, by)                   *offset += by      one thread

#include "common.cuh"

__device__ __forceinline__ unsigned long long hg_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned long long hg_epoch_key(unsigned long long seed,
                                                           unsigned long long epoch) {
    return hg_mix64(seed ^ hg_mix64(epoch + 0x9E3779B97F4A7C15ull));
}

__device__ __forceinline__ unsigned int hg_half_bits(unsigned long long n) {
    unsigned int h = 1;
    while (h < 32 && (1ull << (2 * h)) < n) ++h;
    return h;
}

__device__ __forceinline__ unsigned long long hg_feistel(unsigned long long key, unsigned int h,
                                                         unsigned long long x) {
    const unsigned long long mask = (1ull << h) - 1;
    unsigned long long left = x >> h, right = x & mask;
    for (unsigned long long round = 0; round < 6; ++round) {
        const unsigned long long f =
            hg_mix64(key ^ hg_mix64((round * 0xD6E8FEB86659FD93ull) ^ right)) & mask;
        const unsigned long long next = left ^ f;
        left = right;
        right = next;
    }
    return (left << h) | right;
}

__device__ __forceinline__ unsigned long long hg_stream_row(unsigned long long seed,
                                                            unsigned long long n,
                                                            unsigned long long k) {
    const unsigned long long key = hg_epoch_key(seed, k / n);
    const unsigned int h = hg_half_bits(n);
    unsigned long long y = hg_feistel(key, h, k % n);
    while (y >= n) y = hg_feistel(key, h, y);
    return y;
}

extern "C" __global__ void __launch_bounds__(256)
    hg_stream_rows(unsigned long long seed, unsigned int n, const unsigned long long* offset,
                   unsigned int count, unsigned int* rows) {
    const unsigned long long k0 = *offset;
    for (long long j = hg_gtid(); j < count; j += hg_gstride()) {
        rows[j] = (unsigned int)hg_stream_row(seed, n, k0 + (unsigned long long)j);
    }
}

extern "C" __global__ void hg_stream_advance(unsigned long long* offset, unsigned long long by) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *offset += by;
}
