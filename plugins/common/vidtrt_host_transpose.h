// Host-only transposes of 32-bit words, shared by the host launchers (PSLA's
// planar output) and the ONNX Runtime op library (its NCHW <-> channels-last
// copies). Not for nvcc.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define VIDTRT_HOST_X86_DISPATCH 1
#else
#define VIDTRT_HOST_X86_DISPATCH 0
#endif

namespace vidtrt {

#if VIDTRT_HOST_X86_DISPATCH
// One 8x8 block of 32-bit words in eight AVX registers: unpack pairs, then
// quads, then swap 128-bit halves (the textbook sequence). Rows of the
// source are `src_stride` words apart, rows of the destination `dst_stride`.
// Callers check the CPU for AVX2 first.
__attribute__((target("avx2"))) inline void transpose_8x8(const float* s, int64_t src_stride, float* d,
                                                          int64_t dst_stride) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * src_stride);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(d + i * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(d + (i + 4) * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}
#endif

// An rows x cols block to cols x rows, any word type, element by element
// (the edges of the blocked paths, and the generic build).
template <typename Word>
inline void transpose_block(const Word* s, int64_t src_stride, Word* d, int64_t dst_stride, int64_t rows,
                            int64_t cols) {
    for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < rows; ++r) d[c * dst_stride + r] = s[r * src_stride + c];
}

}  // namespace vidtrt
