// Host launcher of the PSLA kernel body: OpenMP over positions.
#include <omp.h>

#include "../common/vidtrt_host_half.h"
#include "psla_launch.h"

namespace vidtrt {
namespace psla {
namespace {

template <typename T>
int run(const void* query, const void* key, const void* value, void* out, const Problem& p,
        int num_threads) {
    Args<T> a{static_cast<const T*>(query), static_cast<const T*>(key), static_cast<const T*>(value),
              static_cast<T*>(out), p.query, p.key, p.value, p.out, p.shape};
    const int64_t positions = p.shape.N * p.shape.H * p.shape.W;
    const bool unit = p.query.c == 1 && p.key.c == 1 && p.value.c == 1 && p.out.c == 1;
    const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
    if (unit) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t i = 0; i < positions; ++i) psla_position<T, kUnitChannelStride>(a, i);
    } else {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t i = 0; i < positions; ++i) psla_position<T, kAnyChannelStride>(a, i);
    }
    return kSuccess;
}

}  // namespace

int forward_host(DType dtype, const void* query, const void* key, const void* value, void* out,
                 const Problem& problem, int num_threads) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (problem.shape.N * problem.shape.H * problem.shape.W == 0 || problem.shape.C == 0) return kSuccess;
    switch (dtype) {
        case DType::kFloat32:
            return run<float>(query, key, value, out, problem, num_threads);
        case DType::kFloat16:
            return run<HostHalf>(query, key, value, out, problem, num_threads);
    }
    return kUnsupportedDType;
}

}  // namespace psla
}  // namespace vidtrt
