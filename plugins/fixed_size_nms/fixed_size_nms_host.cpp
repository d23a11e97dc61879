// Host launcher of the fixed-size NMS kernel body: OpenMP over entries
// (placement) and rows (mask; the rows shrink towards the bottom of the upper
// triangle, hence dynamic scheduling), then the scan on the calling thread.
// CMakeLists.txt compiles this file with -ffp-contract=off so that no build
// flag (-march=native, -mfma) lets GCC fuse the IoU's product and difference.
#include <omp.h>

#include <vector>

#include "fixed_size_nms_launch.h"

namespace vidtrt {
namespace fixed_size_nms {
namespace {

struct NoSync {
    void operator()() const {}
};

}  // namespace

int forward_host(const float* boxes, const float* scores, int32_t* keep, const Problem& problem, int num_threads) {
    const Shape& shape = problem.shape;
    if (!valid_shape(shape)) return kInvalidArgument;
    const int64_t K = shape.K;
    const int64_t words = mask_words(K);
    std::vector<float> sorted_boxes(static_cast<size_t>(4 * K));
    std::vector<float> sorted_area(static_cast<size_t>(K));
    std::vector<int32_t> sorted_index(static_cast<size_t>(K));
    // Words left of the diagonal are never written or read.
    std::vector<uint64_t> mask(static_cast<size_t>(K * words));
    std::vector<uint64_t> removed(static_cast<size_t>(words));
    const Input in{boxes, problem.boxes, scores, problem.scores};
    const Sorted sorted{sorted_boxes.data(), sorted_area.data(), sorted_index.data(), mask.data()};
    const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();

#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < K; ++i) place_entry(in, sorted, K, i);
#pragma omp for schedule(dynamic, 16)
        for (int64_t p = 0; p < K; ++p) {
            for (int64_t w = p / kWordBits; w < words; ++w) {
                sorted.mask[p * words + w] = mask_word(sorted, K, shape.iou_threshold, p, w);
            }
        }
    }
    scan(sorted, shape, keep, problem.keep, removed.data(), 0, 1, NoSync{});
    return kSuccess;
}

}  // namespace fixed_size_nms
}  // namespace vidtrt
