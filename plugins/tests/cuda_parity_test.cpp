// CUDA kernels against their host kernels, op by op, on random and edge-case
// inputs: the same launch API (forward_host / forward_cuda in <op>_launch.h)
// on the same inputs must give the same outputs (within FP32 rounding for the
// float ops, exactly for NMS's keep list). Built with the CUDA kernels
// (vidtrt_cuda_parity_test, installed next to the plugin library) and run on a
// GPU machine by benchmarks/gpu_acceptance/run.py; it needs no TensorRT.
//
// Exit status: 0 every case agrees, 1 a case disagrees (its line says FAIL),
// 2 no usable CUDA device.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../fixed_size_nms/fixed_size_nms_launch.h"
#include "../most_similar_roi_align/most_similar_roi_align_launch.h"
#include "../ps_roi_align/ps_roi_align_launch.h"
#include "../psla/psla_launch.h"
#include "../relation_propagation/relation_propagation_launch.h"

namespace {

using vidtrt::DType;

int failures = 0;

// Device copy of a host vector, freed with the object.
template <typename T>
struct Device {
    T* ptr = nullptr;
    size_t count = 0;
    explicit Device(const std::vector<T>& host) : count(host.size()) {
        cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T));
        if (count) cudaMemcpy(ptr, host.data(), count * sizeof(T), cudaMemcpyHostToDevice);
    }
    explicit Device(size_t n) : count(n) {
        cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T));
        cudaMemset(ptr, 0, std::max<size_t>(count, 1) * sizeof(T));
    }
    ~Device() { cudaFree(ptr); }
    std::vector<T> get() const {
        std::vector<T> host(count);
        if (count) cudaMemcpy(host.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost);
        return host;
    }
};

std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

void report(const std::string& op, const std::string& label, int host_status, int cuda_status, double error, double bar) {
    const bool ok = host_status == vidtrt::kSuccess && cuda_status == vidtrt::kSuccess &&
                    cudaDeviceSynchronize() == cudaSuccess && error <= bar;
    failures += !ok;
    std::printf("%s %-24s %-36s max |cuda - host| %.3g (bar %.3g)%s\n", ok ? "ok  " : "FAIL", op.c_str(), label.c_str(), error, bar,
                host_status || cuda_status ? "  [a launch returned an error]" : "");
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, double* scale) {
    double worst = 0, largest = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
        largest = std::max(largest, std::abs(double(a[i])));
    }
    *scale = std::max(1.0, largest);
    return worst;
}

// ---------------------------------------------------------------- PSLA

void psla_case(std::mt19937& rng, const std::string& label, int64_t N, int64_t c, int64_t C, int64_t H, int64_t W, int max_disp) {
    namespace op = vidtrt::psla;
    op::Problem p{};
    p.shape = {N, c, C, H, W, max_disp};
    p.query = p.key = {c * H * W, H * W, W, 1};
    p.value = p.out = {C * H * W, H * W, W, 1};
    auto q = random_floats(rng, N * c * H * W, -3, 3), k = random_floats(rng, N * c * H * W, -3, 3);
    auto v = random_floats(rng, N * C * H * W);
    std::vector<float> host(N * C * H * W);
    int hs = op::forward_host(DType::kFloat32, q.data(), k.data(), v.data(), host.data(), p, 0);
    Device<float> dq(q), dk(k), dv(v), dout(host.size());
    int cs = op::forward_cuda(DType::kFloat32, dq.ptr, dk.ptr, dv.ptr, dout.ptr, p, nullptr);
    double scale, err = max_abs_diff(host, dout.get(), &scale);
    report("PSLA", label, hs, cs, err, 1e-4 * scale);
}

// ---------------------------------------------------------------- PS RoI Align

void ps_roi_align_case(std::mt19937& rng, const std::string& label, int64_t H, int64_t W, int k, int64_t Cout, int64_t R,
                       int sampling_ratio, bool edges) {
    namespace op = vidtrt::ps_roi_align;
    const int64_t channels = Cout * k * k;
    op::Problem p{};
    p.shape = {1, channels, H, W, R, k, sampling_ratio, 1.f / 16};
    p.features = {channels * H * W, H * W, W, 1};
    p.rois = {5, 1};
    p.out = {Cout * k * k, k * k, k, 1};
    auto features = random_floats(rng, channels * H * W);
    std::vector<float> rois(R * 5);
    std::uniform_real_distribution<float> pos(-32.f, 16.f * W + 32.f), size(0.f, 160.f);
    for (int64_t r = 0; r < R; ++r) {
        float x1 = pos(rng), y1 = pos(rng) * H / W;
        float w = size(rng), h = size(rng);
        if (edges && r % 3 == 0) w = h = 0.f;  // degenerate RoI
        if (edges && r % 3 == 1) { x1 = -100.f; y1 = 16.f * H - 4.f; }  // outside / on the border
        float roi[5] = {0.f, x1, y1, x1 + w, y1 + h};
        std::copy(roi, roi + 5, rois.begin() + r * 5);
    }
    std::vector<float> host(R * channels);
    int hs = op::forward_host(DType::kFloat32, DType::kFloat32, features.data(), rois.data(), host.data(), p, 0);
    Device<float> df(features), dr(rois), dout(host.size());
    int cs = op::forward_cuda(DType::kFloat32, DType::kFloat32, df.ptr, dr.ptr, dout.ptr, p, nullptr);
    double scale, err = max_abs_diff(host, dout.get(), &scale);
    report("PSRoIAlign", label, hs, cs, err, 1e-5 * scale);
}

// ---------------------------------------------------------------- MS RoI Align

void ms_roi_align_case(std::mt19937& rng, const std::string& label, int64_t R, int64_t C, int64_t h, int64_t w, int64_t T,
                       int64_t H, int64_t W, int top_k, bool ties) {
    namespace op = vidtrt::most_similar_roi_align;
    op::Problem p{};
    p.shape = {R, C, h, w, T, H, W, top_k};
    p.roi = {C * h * w, h * w, w, 1};
    p.support = {C * H * W, H * W, W, 1};
    p.out = {R * C * h * w, C * h * w, h * w, w, 1};
    auto roi = random_floats(rng, R * C * h * w);
    auto support = random_floats(rng, T * C * H * W);
    if (ties)  // repeated support cells: equal similarities, the lower index must win on both sides
        for (int64_t t = 0; t < T; ++t)
            for (int64_t ch = 0; ch < C; ++ch)
                for (int64_t i = 1; i < H * W; i += 2) support[(t * C + ch) * H * W + i] = support[(t * C + ch) * H * W + i - 1];
    std::vector<float> host(T * R * C * h * w);
    int hs = op::forward_host(DType::kFloat32, roi.data(), support.data(), host.data(), p, 0);
    Device<float> dr(roi), ds(support), dout(host.size());
    Device<unsigned char> workspace(op::workspace_bytes(p.shape));
    int cs = op::forward_cuda(DType::kFloat32, dr.ptr, ds.ptr, dout.ptr, workspace.ptr, p, nullptr);
    double scale, err = max_abs_diff(host, dout.get(), &scale);
    report("MostSimilarRoIAlign", label, hs, cs, err, 1e-4 * scale);
}

// ---------------------------------------------------------------- Relation propagation

void relation_case(std::mt19937& rng, const std::string& label, int64_t N, int64_t d, int64_t D, bool invalid_rows) {
    namespace op = vidtrt::relation_propagation;
    op::Problem p{};
    p.shape = {N, d, D};
    p.sigma = p.phi = {d, 1};
    p.regions = p.out = {D, 1};
    p.valid = 1;
    auto sigma = random_floats(rng, N * d), phi = random_floats(rng, N * d), regions = random_floats(rng, N * D);
    std::vector<float> valid(N, 1.f);  // the data's dtype, nonzero = valid
    if (invalid_rows)
        for (int64_t i = 0; i < N; i += 3) valid[i] = 0.f;
    std::vector<float> host(N * D);
    int hs = op::forward_host(DType::kFloat32, sigma.data(), phi.data(), regions.data(), valid.data(), host.data(), p, 0);
    Device<float> ds(sigma), dp(phi), dr(regions), dv(valid), dout(host.size());
    const size_t bytes = op::cuda_workspace_bytes(N, D);
    Device<unsigned char> workspace(bytes);
    int cs = op::forward_cuda(DType::kFloat32, ds.ptr, dp.ptr, dr.ptr, dv.ptr, dout.ptr, p, workspace.ptr, bytes, nullptr);
    double scale, err = max_abs_diff(host, dout.get(), &scale);
    report("RelationPropagation", label, hs, cs, err, 1e-4 * scale);
}

// ---------------------------------------------------------------- Fixed-size NMS

void nms_case(std::mt19937& rng, const std::string& label, int64_t K, int64_t max_output, float iou, bool ties) {
    namespace op = vidtrt::fixed_size_nms;
    op::Problem p{};
    p.shape = {K, max_output, iou};
    p.boxes = {4, 1};
    p.scores = 1;
    p.keep = 1;
    std::vector<float> boxes(K * 4), scores(K);
    std::uniform_real_distribution<float> pos(0.f, 200.f), size(1.f, 60.f), score(0.f, 1.f);
    for (int64_t i = 0; i < K; ++i) {
        float x = pos(rng), y = pos(rng);
        float b[4] = {x, y, x + size(rng), y + size(rng)};
        std::copy(b, b + 4, boxes.begin() + i * 4);
        scores[i] = ties ? std::round(score(rng) * 4.f) / 4.f : score(rng);
        if (i % 7 == 3) scores[i] = -INFINITY;  // never kept
    }
    std::vector<int32_t> host(max_output, -2);
    int hs = op::forward_host(boxes.data(), scores.data(), host.data(), p, 0);
    Device<float> db(boxes), dsc(scores);
    Device<int32_t> dk(max_output);
    const size_t bytes = op::cuda_workspace_bytes(K);
    Device<unsigned char> workspace(bytes);
    int cs = op::forward_cuda(db.ptr, dsc.ptr, dk.ptr, p, workspace.ptr, bytes, nullptr);
    auto got = dk.get();
    double differing = 0;
    for (int64_t i = 0; i < max_output; ++i) differing += host[i] != got[i];
    report("FixedSizeNMS", label, hs, cs, differing, 0.0);  // the keep lists must be identical
}

}  // namespace

int main() {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::fprintf(stderr, "no CUDA device: the CUDA kernels cannot run here\n");
        return 2;
    }
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    std::printf("CUDA parity on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    std::mt19937 rng(2026);

    psla_case(rng, "paper-like 2x8x16 38x50 d=4", 2, 8, 16, 38, 50, 4);
    psla_case(rng, "map smaller than the window", 1, 4, 4, 3, 2, 5);
    // On an AVX2 host the FP32 cases run the NCHW-rows schedule: here three
    // 64-column tiles, the last with partial chunks, and odd C.
    psla_case(rng, "three column tiles 1x20x5 7x137 d=8", 1, 20, 5, 7, 137, 8);
    psla_case(rng, "d=0, c != C", 1, 3, 7, 9, 11, 0);
    ps_roi_align_case(rng, "k=7 s=2, 64 RoIs", 38, 50, 7, 5, 64, 2, false);
    ps_roi_align_case(rng, "k=3 adaptive, borders/degenerate", 20, 24, 3, 4, 33, 0, true);
    ms_roi_align_case(rng, "R=6 T=3 7x7 from 19x25, K=2", 6, 16, 7, 7, 3, 19, 25, 2, false);
    ms_roi_align_case(rng, "ties, K = H*W", 3, 8, 2, 2, 2, 3, 3, 9, true);
    relation_case(rng, "N=300 d=128 D=256", 300, 128, 256, false);
    relation_case(rng, "invalid rows", 50, 16, 32, true);
    relation_case(rng, "empty set", 0, 8, 8, false);
    nms_case(rng, "K=3840 keep 300 IoU 0.7", 3840, 300, 0.7f, false);
    nms_case(rng, "ties, -inf scores", 500, 100, 0.5f, true);
    nms_case(rng, "K=0", 0, 10, 0.5f, false);

    std::printf(failures ? "%d CASES FAILED\n" : "ALL CUDA KERNELS MATCH THEIR HOST KERNELS\n", failures);
    return failures ? 1 : 0;
}
