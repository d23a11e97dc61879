// libvidtrt_ort_ops.so: vidtrt's custom ops as ONNX Runtime custom-op kernels
// on the CPU, each calling the op's fused host kernel (the body the TensorRT
// plugin and the CUDA build share). SessionOptions.register_custom_ops_library
// loads it; the ops are registered in the "vidtrt" domain under their own
// names, so an exported graph runs them as it is on disk (a registered kernel
// takes precedence over the model-local function of the same name, which ONNX
// Runtime otherwise inlines).
//
// Built only when ONNX Runtime's C/C++ API headers are found (ONNXRUNTIME_ROOT;
// the onnxruntime wheel does not ship them). It calls ONNX Runtime only through
// the OrtApi table handed to RegisterCustomOps, so it links against nothing of
// ONNX Runtime, and headers of an older API version than the runtime work: it
// asks for kApiVersion, the version of the headers it was compiled with.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/vidtrt_host_transpose.h"
#include "common/vidtrt_kernel_common.h"
#include "fixed_size_nms/fixed_size_nms_launch.h"
#include "most_similar_roi_align/most_similar_roi_align_launch.h"
#include "ps_roi_align/ps_roi_align_launch.h"
#include "psla/psla_launch.h"
#include "relation_propagation/relation_propagation_launch.h"

namespace {

constexpr const char* kDomain = "vidtrt";
constexpr uint32_t kApiVersion = ORT_API_VERSION;

// ---------------------------------------------------------------- tensors in and out

struct Input {
    const void* data;
    std::vector<int64_t> shape;
    ONNXTensorElementDataType type;
};

Input input(Ort::CustomOpApi& api, OrtKernelContext* context, size_t index) {
    const OrtValue* value = api.KernelContext_GetInput(context, index);
    OrtTensorTypeAndShapeInfo* info = api.GetTensorTypeAndShape(value);
    Input in{api.GetTensorData<uint8_t>(value), api.GetTensorShape(info), api.GetTensorElementType(info)};
    api.ReleaseTensorTypeAndShapeInfo(info);
    return in;
}

void* output(Ort::CustomOpApi& api, OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape) {
    OrtValue* value = api.KernelContext_GetOutput(context, index, shape.data(), shape.size());
    return api.GetTensorMutableData<uint8_t>(value);
}

vidtrt::DType storage(const Input& in, const char* op) {
    if (in.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return vidtrt::DType::kFloat32;
    if (in.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) return vidtrt::DType::kFloat16;
    throw std::invalid_argument(std::string("vidtrt.") + op + ": inputs must be float or float16");
}

size_t element_size(vidtrt::DType dtype) { return dtype == vidtrt::DType::kFloat32 ? 4 : 2; }

void expect_rank(const Input& in, size_t rank, const char* op, const char* name) {
    if (in.shape.size() != rank) {
        throw std::invalid_argument(std::string("vidtrt.") + op + ": " + name + " must have rank " +
                                    std::to_string(rank) + ", got " + std::to_string(in.shape.size()));
    }
}

void check(int status, const char* op) {
    if (status == vidtrt::kSuccess) return;
    throw std::runtime_error(std::string("vidtrt.") + op + ": the fused kernel returned status " +
                             std::to_string(status) + " (invalid shape, attribute or dtype)");
}

vidtrt::Strides4 nchw(const std::vector<int64_t>& s) { return {s[1] * s[2] * s[3], s[2] * s[3], s[3], 1}; }
// Channels-last element strides of an [N, C, H, W] tensor stored as [N, H, W, C].
vidtrt::Strides4 nhwc(const std::vector<int64_t>& s) { return {s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]}; }

// [N, C, P] <-> [N, P, C] (P = H·W), element size `bytes`: the host bodies of
// PSLA and MostSimilarRoIAlign run their per-position channel loops
// unit-stride on channels-last inputs, as the Python binding feeds them;
// ONNX Runtime's tensors are NCHW.
//
// [N, rows, cols] -> [N, cols, rows] in kTile x kTile tiles, OpenMP over
// batches and tiles. `copy_tile(s, src_stride, d, dst_stride, nr, nc)`
// transposes one nr x nc tile (nr, nc <= kTile; smaller at the edges).
template <int64_t kTile, typename Word, typename CopyTile>
void transpose_tiled(const Word* src, Word* dst, int64_t n, int64_t rows, int64_t cols, CopyTile copy_tile) {
    const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < n; ++b) {
        for (int64_t tile = 0; tile < row_tiles * col_tiles; ++tile) {
            const int64_t r0 = tile / col_tiles * kTile, c0 = tile % col_tiles * kTile;
            const int64_t nr = rows - r0 < kTile ? rows - r0 : kTile, nc = cols - c0 < kTile ? cols - c0 : kTile;
            copy_tile(src + b * rows * cols + r0 * cols + c0, cols, dst + b * rows * cols + c0 * rows + r0, rows, nr, nc);
        }
    }
}

// Any word size: 16x16 tiles through a local buffer, so that every row
// segment read or written is one whole cache line. (Scattering single
// elements instead was 3x slower: rows 4 KiB apart, e.g. 1024 FP32 channels,
// all fall into one L1 set.)
template <typename Word>
void transpose_words(const Word* src, Word* dst, int64_t n, int64_t rows, int64_t cols) {
    constexpr int64_t kTile = 16;
    transpose_tiled<kTile>(src, dst, n, rows, cols,
                           [](const Word* s, int64_t ss, Word* d, int64_t ds, int64_t nr, int64_t nc) {
                               Word buffer[kTile][kTile];
                               for (int64_t r = 0; r < nr; ++r)
                                   for (int64_t c = 0; c < nc; ++c) buffer[c][r] = s[r * ss + c];
                               for (int64_t c = 0; c < nc; ++c)
                                   for (int64_t r = 0; r < nr; ++r) d[c * ds + r] = buffer[c][r];
                           });
}

#if VIDTRT_HOST_X86_DISPATCH
// 32-bit words with AVX2: whole 32x32 tiles as 8x8 register blocks, partial
// tiles at the edges element by element. PSLA copies 15 MB in per
// call at paper scale; with the scalar path above those copies were most of
// what ONNX Runtime's PSLA spent beyond the kernel
// (benchmarks/results/ops_paper_scale_cpu.json). VIDTRT_ORT_GENERIC_TRANSPOSE
// set in the environment picks the scalar path, to compare the two.
void transpose_words_avx2(const float* src, float* dst, int64_t n, int64_t rows, int64_t cols) {
    constexpr int64_t kTile = 32;
    transpose_tiled<kTile>(src, dst, n, rows, cols,
                           [](const float* s, int64_t ss, float* d, int64_t ds, int64_t nr, int64_t nc) {
                               if (nr == kTile && nc == kTile) {
                                   // The next tile's destination rows (the walker goes along
                                   // the columns), prefetched for writing: 32 store streams
                                   // that are new on every tile.
                                   for (int64_t i = kTile; i < 2 * kTile; ++i) {
                                       __builtin_prefetch(d + i * ds, 1, 3);
                                       __builtin_prefetch(d + i * ds + 16, 1, 3);
                                   }
                                   for (int64_t rb = 0; rb < kTile; rb += 8)
                                       for (int64_t cb = 0; cb < kTile; cb += 8)
                                           vidtrt::transpose_8x8(s + rb * ss + cb, ss, d + cb * ds + rb, ds);
                                   return;
                               }
                               vidtrt::transpose_block(s, ss, d, ds, nr, nc);
                           });
}

bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif

// [N, rows, cols] -> [N, cols, rows].
void transpose(const void* src, void* dst, size_t bytes, int64_t n, int64_t rows, int64_t cols) {
#if VIDTRT_HOST_X86_DISPATCH
    static const bool avx2 = cpu_has_avx2();
    if (bytes == 4 && avx2 && std::getenv("VIDTRT_ORT_GENERIC_TRANSPOSE") == nullptr) {
        transpose_words_avx2(static_cast<const float*>(src), static_cast<float*>(dst), n, rows, cols);
        return;
    }
#endif
    if (bytes == 4) {
        transpose_words(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, rows, cols);
    } else {
        transpose_words(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), n, rows, cols);
    }
}

// Uninitialised scratch (every byte is written before it is read; a
// zero-filled std::vector would add a pass over tens of MB).
std::unique_ptr<uint8_t[]> scratch(int64_t bytes) { return std::unique_ptr<uint8_t[]>(new uint8_t[bytes]); }

// Scratch kept per thread between calls and grown as needed, for ops whose
// copies are small enough to keep (PSLA: 15 MB at paper scale). A fresh
// allocation that size is mapped anew on every call and faulted in page by
// page on first touch; reusing it saves that on every frame. (Not for
// MostSimilarRoIAlign: its output copy is hundreds of MB.)
class ScratchArena {
  public:
    uint8_t* get(int slot, int64_t bytes) {
        Buffer& b = buffers_[slot];
        if (b.size < bytes) {
            b.data.reset(new uint8_t[bytes]);
            b.size = bytes;
        }
        return b.data.get();
    }

  private:
    struct Buffer {
        std::unique_ptr<uint8_t[]> data;
        int64_t size = 0;
    };
    Buffer buffers_[3];
};

uint8_t* kept_scratch(int slot, int64_t bytes) {
    thread_local ScratchArena arena;
    return arena.get(slot, bytes);
}

void to_channels_last(const void* src, void* dst, size_t bytes, int64_t n, int64_t channels, int64_t positions) {
    transpose(src, dst, bytes, n, channels, positions);
}

void from_channels_last(const void* src, void* dst, size_t bytes, int64_t n, int64_t channels, int64_t positions) {
    transpose(src, dst, bytes, n, positions, channels);
}

// ---------------------------------------------------------------- one kernel per op

struct KernelBase {
    KernelBase(const OrtApi& ort_api) : api(ort_api) {}
    Ort::CustomOpApi api;
};

struct PSLAKernel : KernelBase {
    PSLAKernel(const OrtApi& ort_api, const OrtKernelInfo* info) : KernelBase(ort_api) {
        max_disp = static_cast<int>(api.KernelInfoGetAttribute<int64_t>(info, "max_disp"));
    }
    void Compute(OrtKernelContext* context) {
        const Input q = input(api, context, 0), k = input(api, context, 1), v = input(api, context, 2);
        for (const Input* in : {&q, &k, &v}) expect_rank(*in, 4, "PSLA", "query, key and value");
        const vidtrt::DType dtype = storage(q, "PSLA");
        const size_t bytes = element_size(dtype);
        const int64_t n = q.shape[0], c = q.shape[1], channels = v.shape[1], h = q.shape[2], w = q.shape[3];
        void* out = output(api, context, 0, v.shape);
        if (vidtrt::psla::host_reads_nchw(dtype)) {
            // FP32 with AVX2: the host schedule reads ONNX Runtime's NCHW rows in place.
            vidtrt::psla::Problem p{{n, c, channels, h, w, max_disp}, nchw(q.shape), nchw(k.shape), nchw(v.shape),
                                    nchw(v.shape)};
            check(vidtrt::psla::forward_host(dtype, q.data, k.data, v.data, out, p, 0), "PSLA");
            return;
        }
        // Otherwise channels-last copies of the inputs (see transpose()). The
        // output is ONNX Runtime's NCHW tensor itself: the host launcher
        // stages each run of positions channels-last in cache and stores it
        // plane by plane (psla_host.cpp), instead of a separate pass over the
        // output.
        const int64_t qk_bytes = n * c * h * w * bytes, v_bytes = n * channels * h * w * bytes;
        uint8_t *ql = kept_scratch(0, qk_bytes), *kl = kept_scratch(1, qk_bytes), *vl = kept_scratch(2, v_bytes);
        to_channels_last(q.data, ql, bytes, n, c, h * w);
        to_channels_last(k.data, kl, bytes, n, c, h * w);
        to_channels_last(v.data, vl, bytes, n, channels, h * w);
        vidtrt::psla::Problem p{{n, c, channels, h, w, max_disp}, nhwc(q.shape), nhwc(k.shape), nhwc(v.shape),
                                nchw(v.shape)};
        check(vidtrt::psla::forward_host(dtype, ql, kl, vl, out, p, 0), "PSLA");
    }
    int max_disp;
};

struct PSRoIAlignKernel : KernelBase {
    PSRoIAlignKernel(const OrtApi& ort_api, const OrtKernelInfo* info) : KernelBase(ort_api) {
        output_size = static_cast<int>(api.KernelInfoGetAttribute<int64_t>(info, "output_size"));
        sampling_ratio = static_cast<int>(api.KernelInfoGetAttribute<int64_t>(info, "sampling_ratio"));
        spatial_scale = api.KernelInfoGetAttribute<float>(info, "spatial_scale");
    }
    void Compute(OrtKernelContext* context) {
        const Input f = input(api, context, 0), r = input(api, context, 1);
        expect_rank(f, 4, "PSRoIAlign", "features");
        expect_rank(r, 2, "PSRoIAlign", "rois");
        const int64_t k = output_size, rois = r.shape[0];
        void* out = output(api, context, 0, {rois, f.shape[1] / (k * k), k, k});
        vidtrt::ps_roi_align::Problem p{{f.shape[0], f.shape[1], f.shape[2], f.shape[3], rois, output_size,
                                         sampling_ratio, spatial_scale},
                                        nchw(f.shape),
                                        {r.shape[1], 1},
                                        {f.shape[1] / (k * k) * k * k, k * k, k, 1}};
        check(vidtrt::ps_roi_align::forward_host(storage(f, "PSRoIAlign"), storage(r, "PSRoIAlign"), f.data, r.data,
                                                 out, p, 0),
              "PSRoIAlign");
    }
    int output_size, sampling_ratio;
    float spatial_scale;
};

struct MostSimilarRoIAlignKernel : KernelBase {
    MostSimilarRoIAlignKernel(const OrtApi& ort_api, const OrtKernelInfo* info) : KernelBase(ort_api) {
        top_k = static_cast<int>(api.KernelInfoGetAttribute<int64_t>(info, "top_k"));
    }
    void Compute(OrtKernelContext* context) {
        const Input x = input(api, context, 0), s = input(api, context, 1);
        expect_rank(x, 4, "MostSimilarRoIAlign", "roi_feats");
        expect_rank(s, 4, "MostSimilarRoIAlign", "support_feats");
        const vidtrt::DType dtype = storage(x, "MostSimilarRoIAlign");
        const size_t bytes = element_size(dtype);
        const int64_t rois = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        const int64_t frames = s.shape[0], sh = s.shape[2], sw = s.shape[3];
        void* out = output(api, context, 0, {frames, rois, c, h, w});
        auto xl = scratch(rois * c * h * w * bytes), sl = scratch(frames * c * sh * sw * bytes),
             ol = scratch(frames * rois * c * h * w * bytes);
        to_channels_last(x.data, xl.get(), bytes, rois, c, h * w);
        to_channels_last(s.data, sl.get(), bytes, frames, c, sh * sw);
        namespace msra = vidtrt::most_similar_roi_align;
        // The output written as [T, R, h, w, C]: element strides of the [T, R, C, h, w] view.
        msra::Problem p{{rois, c, h, w, frames, sh, sw, top_k},
                        nhwc(x.shape),
                        nhwc(s.shape),
                        {rois * h * w * c, h * w * c, 1, w * c, c}};
        check(msra::forward_host(dtype, xl.get(), sl.get(), ol.get(), p, 0), "MostSimilarRoIAlign");
        from_channels_last(ol.get(), out, bytes, frames * rois, c, h * w);
    }
    int top_k;
};

struct RelationPropagationKernel : KernelBase {
    RelationPropagationKernel(const OrtApi& ort_api, const OrtKernelInfo*) : KernelBase(ort_api) {}
    void Compute(OrtKernelContext* context) {
        const Input sigma = input(api, context, 0), phi = input(api, context, 1), regions = input(api, context, 2),
                    valid = input(api, context, 3);
        expect_rank(sigma, 2, "RelationPropagation", "sigma");
        expect_rank(regions, 2, "RelationPropagation", "regions");
        const int64_t n = sigma.shape[0], d = sigma.shape[1], channels = regions.shape[1];
        void* out = output(api, context, 0, {n, channels});
        namespace rp = vidtrt::relation_propagation;
        rp::Problem p{{n, d, channels}, {d, 1}, {d, 1}, {channels, 1}, 1, {channels, 1}};
        check(rp::forward_host(storage(sigma, "RelationPropagation"), sigma.data, phi.data, regions.data, valid.data,
                               out, p, 0, rp::HostIsa::kAuto),
              "RelationPropagation");
    }
};

struct FixedSizeNMSKernel : KernelBase {
    FixedSizeNMSKernel(const OrtApi& ort_api, const OrtKernelInfo* info) : KernelBase(ort_api) {
        iou_threshold = api.KernelInfoGetAttribute<float>(info, "iou_threshold");
        max_output = api.KernelInfoGetAttribute<int64_t>(info, "max_output");
    }
    void Compute(OrtKernelContext* context) {
        const Input boxes = input(api, context, 0), scores = input(api, context, 1);
        expect_rank(boxes, 2, "FixedSizeNMS", "boxes");
        auto* keep = static_cast<int32_t*>(output(api, context, 0, {max_output}));
        namespace nms = vidtrt::fixed_size_nms;
        const nms::Problem p{{boxes.shape[0], max_output, iou_threshold}, {4, 1}, 1, 1};
        check(nms::forward_host(static_cast<const float*>(boxes.data), static_cast<const float*>(scores.data), keep, p,
                                0),
              "FixedSizeNMS");
    }
    float iou_threshold;
    int64_t max_output;
};

// ---------------------------------------------------------------- the op descriptions ONNX Runtime reads

// One description per storage type (ONNX Runtime picks the one whose types
// match the node; the kernels read the type at run time). Several
// descriptions of one name are how ONNX Runtime takes a typed custom op.
template <typename Kernel>
struct Op : Ort::CustomOpBase<Op<Kernel>, Kernel> {
    Op(const char* op_name, std::vector<ONNXTensorElementDataType> input_types,
       std::vector<ONNXTensorElementDataType> output_types)
        : name(op_name), in(std::move(input_types)), out(std::move(output_types)) {}
    void* CreateKernel(const OrtApi& api, const OrtKernelInfo* info) const { return new Kernel(api, info); }
    const char* GetName() const { return name; }
    const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
    size_t GetInputTypeCount() const { return in.size(); }
    ONNXTensorElementDataType GetInputType(size_t i) const { return in[i]; }
    size_t GetOutputTypeCount() const { return out.size(); }
    ONNXTensorElementDataType GetOutputType(size_t i) const { return out[i]; }

    const char* name;
    std::vector<ONNXTensorElementDataType> in, out;
};

constexpr auto f32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
constexpr auto f16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;

// Static: ONNX Runtime keeps pointers to them for the life of the process.
Op<PSLAKernel> psla_ops[] = {{"PSLA", {f32, f32, f32}, {f32}}, {"PSLA", {f16, f16, f16}, {f16}}};
// The RoI table is FP32 or the features' type.
Op<PSRoIAlignKernel> ps_roi_align_ops[] = {{"PSRoIAlign", {f32, f32}, {f32}},
                                           {"PSRoIAlign", {f16, f16}, {f16}},
                                           {"PSRoIAlign", {f16, f32}, {f16}}};
Op<MostSimilarRoIAlignKernel> most_similar_roi_align_ops[] = {{"MostSimilarRoIAlign", {f32, f32}, {f32}},
                                                              {"MostSimilarRoIAlign", {f16, f16}, {f16}}};
// valid: 0/1 flags in the storage type.
Op<RelationPropagationKernel> relation_propagation_ops[] = {{"RelationPropagation", {f32, f32, f32, f32}, {f32}},
                                                            {"RelationPropagation", {f16, f16, f16, f16}, {f16}}};
Op<FixedSizeNMSKernel> fixed_size_nms_ops[] = {{"FixedSizeNMS", {f32, f32}, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32}}};

template <typename Ops>
OrtStatus* add_all(const OrtApi* api, OrtCustomOpDomain* domain, Ops& ops) {
    for (auto& op : ops) {
        if (OrtStatus* status = api->CustomOpDomain_Add(domain, &op)) return status;
    }
    return nullptr;
}

}  // namespace

extern "C" {

// Names the ops this library registers, for vidtrt's check against its op
// registry (comma-separated, in the "vidtrt" domain).
__attribute__((visibility("default"))) const char* vidtrtOrtOpsInfo() {
    return "domain=vidtrt;ops=PSLA,PSRoIAlign,MostSimilarRoIAlign,RelationPropagation,FixedSizeNMS";
}

__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                 const OrtApiBase* api_base) {
    const OrtApi* api = api_base->GetApi(kApiVersion);
    if (api == nullptr) return nullptr;  // cannot happen for a runtime at least as new as the headers
    Ort::Global<void>::api_ = api;
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* status = api->CreateCustomOpDomain(kDomain, &domain)) return status;
    // In turn, stopping at the first error (a braced list would add them all first).
    OrtStatus* status = add_all(api, domain, psla_ops);
    if (!status) status = add_all(api, domain, ps_roi_align_ops);
    if (!status) status = add_all(api, domain, most_similar_roi_align_ops);
    if (!status) status = add_all(api, domain, relation_propagation_ops);
    if (!status) status = add_all(api, domain, fixed_size_nms_ops);
    if (status) return status;
    // The domain must outlive every session made from these options; it is
    // never released (one per registration, a few bytes).
    return api->AddCustomOpDomain(options, domain);
}

}  // extern "C"
