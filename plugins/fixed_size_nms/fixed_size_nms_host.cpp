// Host launcher of the fixed-size NMS kernel body, on another schedule than
// the device's. The device counts every box's rank, computes every row of
// the mask, then scans: O(K²) work whatever the data (14.7 M comparisons and
// 7.4 M IoUs at K = 3840), which on one or two CPU cores is most of the time.
// Here the order comes from a stable sort (the positions stable_rank counts:
// descending keys, equal keys by index), and the scan computes mask words
// only when it reaches them: entering word w, the word-w bits of the
// positions kept so far, then, walking the word, those of each position it
// keeps. Same words (mask_word), same greedy result; only the pairs before
// the position where the scan stops are ever compared. One thread.
// CMakeLists.txt compiles this file with -ffp-contract=off so that no build
// flag (-march=native, -mfma) lets GCC fuse the IoU's product and difference.
#include <algorithm>
#include <numeric>
#include <vector>

#include "fixed_size_nms_launch.h"

namespace vidtrt {
namespace fixed_size_nms {

int forward_host(const float* boxes, const float* scores, int32_t* keep, const Problem& problem, int num_threads) {
    (void)num_threads;  // one thread: see above
    const Shape& shape = problem.shape;
    if (!valid_shape(shape)) return kInvalidArgument;
    const int64_t K = shape.K;
    std::vector<float> sorted_boxes(static_cast<size_t>(4 * K));
    std::vector<float> sorted_area(static_cast<size_t>(K));
    std::vector<int32_t> sorted_index(static_cast<size_t>(K));
    const Input in{boxes, problem.boxes, scores, problem.scores};
    const Sorted sorted{sorted_boxes.data(), sorted_area.data(), sorted_index.data(), nullptr};

    // Phase 1: the positions by a stable sort of the keys (never NaN: a strict weak order).
    std::vector<float> key(static_cast<size_t>(K));
    for (int64_t i = 0; i < K; ++i) key[i] = sort_key(score_at(in, i));
    std::vector<int64_t> order(static_cast<size_t>(K));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&key](int64_t a, int64_t b) { return key[a] > key[b]; });
    for (int64_t p = 0; p < K; ++p) place_entry_at(in, sorted, order[p], p);
    // Invalid entries sort last and are never kept: the scan stops before them.
    const int64_t valid = std::count_if(key.begin(), key.end(), [](float k) { return is_valid(k); });

    // Phases 2 and 3, one word of positions at a time.
    std::vector<int64_t> kept_positions;
    kept_positions.reserve(static_cast<size_t>(std::min(shape.max_output, K)));
    int64_t kept = 0;
    for (int64_t first = 0; first < valid && kept < shape.max_output; first += kWordBits) {
        const int64_t w = first / kWordBits;
        uint64_t removed = 0;
        for (const int64_t p : kept_positions) removed |= mask_word(sorted, K, shape.iou_threshold, p, w);
        const int64_t end = std::min(first + kWordBits, valid);
        for (int64_t p = first; p < end && kept < shape.max_output; ++p) {
            if ((removed >> (p - first)) & 1) continue;
            keep[kept * problem.keep] = sorted.index[p];
            ++kept;
            kept_positions.push_back(p);
            removed |= mask_word(sorted, K, shape.iou_threshold, p, w);  // the positions after p in this word
        }
    }
    for (int64_t r = kept; r < shape.max_output; ++r) keep[r * problem.keep] = -1;
    return kSuccess;
}

}  // namespace fixed_size_nms
}  // namespace vidtrt
