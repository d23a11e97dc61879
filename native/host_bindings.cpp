// vidtrt._kernels: the host (CPU) kernel library as a Python extension.
// Functions take raw data pointers (as integers) plus shapes and element
// strides; vidtrt/ops/*.py validates tensors and owns allocation, so this
// layer has no dependency on PyTorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/vidtrt_kernel_common.h"
#include "fixed_size_nms/fixed_size_nms_launch.h"
#include "most_similar_roi_align/most_similar_roi_align_launch.h"
#include "ps_roi_align/ps_roi_align_launch.h"
#include "psla/psla_launch.h"
#include "relation_propagation/relation_propagation_launch.h"

namespace py = pybind11;

namespace {

vidtrt::DType parse_dtype(const std::string& name) {
    if (name == "float32") return vidtrt::DType::kFloat32;
    if (name == "float16") return vidtrt::DType::kFloat16;
    throw std::invalid_argument("vidtrt._kernels: unsupported dtype '" + name + "' (float32, float16)");
}

vidtrt::Strides4 strides4(const std::array<int64_t, 4>& s) { return {s[0], s[1], s[2], s[3]}; }

void check_status(int status, const char* op) {
    switch (status) {
        case vidtrt::kSuccess:
            return;
        case vidtrt::kInvalidArgument:
            throw std::invalid_argument(std::string(op) + ": invalid shape or attribute");
        case vidtrt::kUnsupportedDType:
            throw std::invalid_argument(std::string(op) + ": unsupported dtype");
        default:
            throw std::runtime_error(std::string(op) + ": kernel failed with status " + std::to_string(status));
    }
}

void psla_forward(const std::string& dtype, uintptr_t query, uintptr_t key, uintptr_t value, uintptr_t out,
                  const std::array<int64_t, 5>& ncchw, int max_disp, const std::array<int64_t, 4>& query_strides,
                  const std::array<int64_t, 4>& key_strides, const std::array<int64_t, 4>& value_strides,
                  const std::array<int64_t, 4>& out_strides, int num_threads, const std::string& isa) {
    if (isa != "auto" && isa != "generic") {
        throw std::invalid_argument("psla: isa must be 'auto' or 'generic', got '" + isa + "'");
    }
    vidtrt::psla::Problem p{{ncchw[0], ncchw[1], ncchw[2], ncchw[3], ncchw[4], max_disp},
                            strides4(query_strides), strides4(key_strides), strides4(value_strides),
                            strides4(out_strides)};
    const auto dt = parse_dtype(dtype);
    int status;
    {
        py::gil_scoped_release release;
        status = vidtrt::psla::forward_host(dt, reinterpret_cast<const void*>(query), reinterpret_cast<const void*>(key),
                                            reinterpret_cast<const void*>(value), reinterpret_cast<void*>(out), p,
                                            num_threads,
                                            isa == "generic" ? vidtrt::psla::HostIsa::kGeneric
                                                             : vidtrt::psla::HostIsa::kAuto);
    }
    check_status(status, "psla");
}

bool psla_reads_nchw(const std::string& dtype, const std::string& isa) {
    if (isa != "auto" && isa != "generic") {
        throw std::invalid_argument("psla: isa must be 'auto' or 'generic', got '" + isa + "'");
    }
    const auto host_isa = isa == "generic" ? vidtrt::psla::HostIsa::kGeneric : vidtrt::psla::HostIsa::kAuto;
    return vidtrt::psla::host_reads_nchw(parse_dtype(dtype), host_isa);
}

// shape = (N, channels, H, W, R); channels = C·k·k. The RoI table may be FP32
// or the features' dtype. RoIs with an out-of-range batch index come back as
// zeros; vidtrt/ops/ps_roi_align.py reports them before calling this.
void ps_roi_align_forward(const std::string& features_dtype, const std::string& rois_dtype, uintptr_t features,
                          uintptr_t rois, uintptr_t out, const std::array<int64_t, 5>& shape, int output_size,
                          float spatial_scale, int sampling_ratio, const std::array<int64_t, 4>& features_strides,
                          const std::array<int64_t, 2>& rois_strides, const std::array<int64_t, 4>& out_strides,
                          int num_threads) {
    vidtrt::ps_roi_align::Problem p{
        {shape[0], shape[1], shape[2], shape[3], shape[4], output_size, sampling_ratio, spatial_scale},
        strides4(features_strides),
        {rois_strides[0], rois_strides[1]},
        strides4(out_strides)};
    const auto fdt = parse_dtype(features_dtype);
    const auto rdt = parse_dtype(rois_dtype);
    int status;
    {
        py::gil_scoped_release release;
        status = vidtrt::ps_roi_align::forward_host(fdt, rdt, reinterpret_cast<const void*>(features),
                                                    reinterpret_cast<const void*>(rois), reinterpret_cast<void*>(out),
                                                    p, num_threads);
    }
    check_status(status, "ps_roi_align");
}

// shape = (R, C, h, w, T, H, W); the output view is [T, R, C, h, w]. The
// launcher allocates its own FP32 scratch (both inputs normalised).
void most_similar_roi_align_forward(const std::string& dtype, uintptr_t roi, uintptr_t support, uintptr_t out,
                                    const std::array<int64_t, 7>& shape, int top_k,
                                    const std::array<int64_t, 4>& roi_strides,
                                    const std::array<int64_t, 4>& support_strides,
                                    const std::array<int64_t, 5>& out_strides, int num_threads) {
    namespace msra = vidtrt::most_similar_roi_align;
    msra::Problem p{{shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shape[6], top_k},
                    strides4(roi_strides),
                    strides4(support_strides),
                    {out_strides[0], out_strides[1], out_strides[2], out_strides[3], out_strides[4]}};
    const auto dt = parse_dtype(dtype);
    int status;
    {
        py::gil_scoped_release release;
        status = msra::forward_host(dt, reinterpret_cast<const void*>(roi), reinterpret_cast<const void*>(support),
                                    reinterpret_cast<void*>(out), p, num_threads);
    }
    check_status(status, "most_similar_roi_align");
}

// shape = (N, d, D); valid holds 0/1 in the storage dtype (nonzero = valid).
// isa "generic" forces the baseline build of the body (tests compare it with
// the AVX2 one the default "auto" picks on CPUs that have it).
void relation_propagation_forward(const std::string& dtype, uintptr_t sigma, uintptr_t phi, uintptr_t regions,
                                  uintptr_t valid, uintptr_t out, const std::array<int64_t, 3>& shape,
                                  const std::array<int64_t, 2>& sigma_strides,
                                  const std::array<int64_t, 2>& phi_strides,
                                  const std::array<int64_t, 2>& regions_strides, int64_t valid_stride,
                                  const std::array<int64_t, 2>& out_strides, int num_threads,
                                  const std::string& isa) {
    namespace rp = vidtrt::relation_propagation;
    if (isa != "auto" && isa != "generic") {
        throw std::invalid_argument("relation_propagation: isa must be 'auto' or 'generic', got '" + isa + "'");
    }
    rp::Problem p{{shape[0], shape[1], shape[2]},
                  {sigma_strides[0], sigma_strides[1]},
                  {phi_strides[0], phi_strides[1]},
                  {regions_strides[0], regions_strides[1]},
                  valid_stride,
                  {out_strides[0], out_strides[1]}};
    const auto dt = parse_dtype(dtype);
    const auto which = isa == "generic" ? rp::HostIsa::kGeneric : rp::HostIsa::kAuto;
    int status;
    {
        py::gil_scoped_release release;
        status = rp::forward_host(dt, reinterpret_cast<const void*>(sigma), reinterpret_cast<const void*>(phi),
                                  reinterpret_cast<const void*>(regions), reinterpret_cast<const void*>(valid),
                                  reinterpret_cast<void*>(out), p, num_threads, which);
    }
    check_status(status, "relation_propagation");
}

// boxes [K, 4] and scores [K] FP32, keep [max_output] int32 (written whole:
// kept indices, then -1). iou_threshold is the FP32 threshold; the Python
// layer rounds torchvision's double down to it. The launcher allocates its own
// scratch (a K x K bit mask).
void fixed_size_nms_forward(uintptr_t boxes, uintptr_t scores, uintptr_t keep, int64_t count, int64_t max_output,
                            float iou_threshold, const std::array<int64_t, 2>& boxes_strides, int64_t scores_stride,
                            int64_t keep_stride, int num_threads) {
    namespace nms = vidtrt::fixed_size_nms;
    const nms::Problem p{{count, max_output, iou_threshold}, {boxes_strides[0], boxes_strides[1]}, scores_stride,
                         keep_stride};
    int status;
    {
        py::gil_scoped_release release;
        status = nms::forward_host(reinterpret_cast<const float*>(boxes), reinterpret_cast<const float*>(scores),
                                   reinterpret_cast<int32_t*>(keep), p, num_threads);
    }
    check_status(status, "fixed_size_nms");
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
    m.doc() = "vidtrt host kernels (CPU builds of the fused kernel bodies)";
    m.def("psla_forward", &psla_forward, py::arg("dtype"), py::arg("query"), py::arg("key"), py::arg("value"),
          py::arg("out"), py::arg("ncchw"), py::arg("max_disp"), py::arg("query_strides"), py::arg("key_strides"),
          py::arg("value_strides"), py::arg("out_strides"), py::arg("num_threads") = 0, py::arg("isa") = "auto");
    m.def("psla_reads_nchw", &psla_reads_nchw, py::arg("dtype"), py::arg("isa") = "auto");
    m.attr("PSLA_MAX_DISP") = vidtrt::psla::kMaxDisp;
    m.def("ps_roi_align_forward", &ps_roi_align_forward, py::arg("features_dtype"), py::arg("rois_dtype"),
          py::arg("features"), py::arg("rois"), py::arg("out"), py::arg("shape"), py::arg("output_size"),
          py::arg("spatial_scale"), py::arg("sampling_ratio"), py::arg("features_strides"), py::arg("rois_strides"),
          py::arg("out_strides"), py::arg("num_threads") = 0);

    m.def("most_similar_roi_align_forward", &most_similar_roi_align_forward, py::arg("dtype"), py::arg("roi"),
          py::arg("support"), py::arg("out"), py::arg("shape"), py::arg("top_k"), py::arg("roi_strides"),
          py::arg("support_strides"), py::arg("out_strides"), py::arg("num_threads") = 0);
    m.attr("MOST_SIMILAR_ROI_ALIGN_MAX_TOP_K") = vidtrt::most_similar_roi_align::kMaxTopK;

    m.def("relation_propagation_forward", &relation_propagation_forward, py::arg("dtype"), py::arg("sigma"),
          py::arg("phi"), py::arg("regions"), py::arg("valid"), py::arg("out"), py::arg("shape"),
          py::arg("sigma_strides"), py::arg("phi_strides"), py::arg("regions_strides"), py::arg("valid_stride"),
          py::arg("out_strides"), py::arg("num_threads") = 0, py::arg("isa") = "auto");

    m.def("fixed_size_nms_forward", &fixed_size_nms_forward, py::arg("boxes"), py::arg("scores"), py::arg("keep"),
          py::arg("count"), py::arg("max_output"), py::arg("iou_threshold"), py::arg("boxes_strides"),
          py::arg("scores_stride"), py::arg("keep_stride"), py::arg("num_threads") = 0);
    m.attr("FIXED_SIZE_NMS_MAX_BOXES") = vidtrt::fixed_size_nms::kMaxBoxes;

    py::dict build;
    build["cuda_kernels"] = static_cast<bool>(VIDTRT_BUILT_CUDA);
    build["plugins"] = static_cast<bool>(VIDTRT_BUILT_PLUGINS);
    build["ort_ops"] = static_cast<bool>(VIDTRT_BUILT_ORT_OPS);
    build["cuda_architectures"] = std::string(VIDTRT_CUDA_ARCHS);
    build["tensorrt_headers_version"] = std::string(VIDTRT_TRT_HEADERS_VERSION);
    build["tensorrt_include_dir"] = std::string(VIDTRT_TRT_INCLUDE_DIR);
    m.attr("BUILD_INFO") = build;
}
