// Host launcher of the position-sensitive RoI Align kernel body: OpenMP over
// output elements. Each element reads one channel plane at a few points, so
// there is no channel loop to vectorise and any layout (strides) will do.
#include <omp.h>

#include "../common/vidtrt_host_half.h"
#include "ps_roi_align_launch.h"

namespace vidtrt {
namespace ps_roi_align {
namespace {

template <typename T, typename TRoi>
int run(const void* features, const void* rois, void* out, const Problem& p, int num_threads) {
    Args<T, TRoi> a{static_cast<const T*>(features), static_cast<const TRoi*>(rois), static_cast<T*>(out),
                    p.features, p.rois, p.out, p.shape};
    const int64_t k = p.shape.output_size;
    const int64_t elements = p.shape.R * out_channels(p.shape) * k * k;
    const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t e = 0; e < elements; ++e) ps_roi_align_element<T, TRoi>(a, e);
    return kSuccess;
}

}  // namespace

int forward_host(DType features_dtype, DType rois_dtype, const void* features, const void* rois, void* out,
                 const Problem& problem, int num_threads) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (!supported_types(features_dtype, rois_dtype)) return kUnsupportedDType;
    if (problem.shape.R == 0 || out_channels(problem.shape) == 0) return kSuccess;
    if (features_dtype == DType::kFloat32) return run<float, float>(features, rois, out, problem, num_threads);
    if (rois_dtype == DType::kFloat32) return run<HostHalf, float>(features, rois, out, problem, num_threads);
    return run<HostHalf, HostHalf>(features, rois, out, problem, num_threads);
}

}  // namespace ps_roi_align
}  // namespace vidtrt
