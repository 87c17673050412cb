// Torch binding of the CUDA sampling op: input checks, allocation, dtype dispatch, current
// stream. Python side: sparsebev_core/ops/cuda_backend.py (autograd.Function + layout).
//
//   forward(features, locations, scale_weights) -> out [R, Q, C, P]
//   backward(grad_out, features, locations, scale_weights, need_feature_grad)
//       -> [grad_feature_0, ..., grad_feature_{L-1}, grad_locations, grad_scale_weights]
//
// features: L tensors of shape [R, C, N, H_l, W_l] (the front end's shape) whose memory is
// channels-last, i.e. `.is_contiguous(memory_format=torch.channels_last_3d)`: element
// (r, c, n, h, w) at (((r * N + n) * H_l + h) * W_l + w) * C + c. float32, float64, float16 or
// bfloat16, all levels the same. locations [R, Q, P, 3] and scale_weights [R, Q, P, L],
// contiguous, in the accumulation dtype: float64 for float64 features, float32 otherwise.
#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 with at::Tensor casters (lighter than torch/extension.h)

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "msmv_sampling.h"
#include "msmv_sampling_launch.h"

namespace {

using msmv::FeatureType;
using msmv::RawSamplingArgs;

FeatureType feature_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return FeatureType::kFloat32;
    case at::kDouble: return FeatureType::kFloat64;
    case at::kHalf: return FeatureType::kFloat16;
    case at::kBFloat16: return FeatureType::kBFloat16;
    default:
      TORCH_CHECK(false, "msmv_sampling (cuda): features must be float32, float64, float16 or "
                  "bfloat16, got ", type);
  }
  return FeatureType::kFloat32;  // unreachable
}

at::ScalarType accumulation_type(at::ScalarType feature) {
  return feature == at::kDouble ? at::kDouble : at::kFloat;
}

// Checks every input and fills the shape part of the launch arguments.
RawSamplingArgs describe(const std::vector<at::Tensor>& features, const at::Tensor& locations,
                         const at::Tensor& scale_weights) {
  const int64_t num_levels = static_cast<int64_t>(features.size());
  TORCH_CHECK(num_levels >= 1, "msmv_sampling (cuda): needs at least one feature level");
  TORCH_CHECK(num_levels <= msmv::kMaxLevels, "msmv_sampling (cuda): at most ",
              msmv::kMaxLevels, " feature levels are supported, got ", num_levels);
  const at::Tensor& first = features[0];
  TORCH_CHECK(first.is_cuda(), "msmv_sampling (cuda): features must be on a CUDA device, got ",
              first.device(), "; use the torch backend for CPU tensors");
  TORCH_CHECK(first.dim() == 5, "msmv_sampling (cuda): feature level 0 must be [R, C, N, H, W], "
              "got shape ", first.sizes());
  const int64_t rows = first.size(0), channels = first.size(1), views = first.size(2);
  TORCH_CHECK(views >= 1, "msmv_sampling (cuda): features need at least one view");
  feature_type(first.scalar_type());

  RawSamplingArgs args{};
  args.num_levels = static_cast<int>(num_levels);
  args.num_rows = rows;
  args.num_views = views;
  args.channels = channels;
  for (int64_t l = 0; l < num_levels; ++l) {
    const at::Tensor& f = features[l];
    TORCH_CHECK(f.device() == first.device(), "msmv_sampling (cuda): feature level ", l,
                " is on ", f.device(), " but level 0 is on ", first.device());
    TORCH_CHECK(f.scalar_type() == first.scalar_type(), "msmv_sampling (cuda): feature level ",
                l, " has dtype ", f.scalar_type(), " but level 0 has ", first.scalar_type());
    TORCH_CHECK(f.dim() == 5 && f.size(0) == rows && f.size(1) == channels && f.size(2) == views,
                "msmv_sampling (cuda): feature level ", l, " must be [", rows, ", ", channels,
                ", ", views, ", H, W] like level 0, got ", f.sizes());
    TORCH_CHECK(f.size(3) >= 1 && f.size(4) >= 1, "msmv_sampling (cuda): feature level ", l,
                " has an empty image: ", f.sizes());
    TORCH_CHECK(f.is_contiguous(at::MemoryFormat::ChannelsLast3d),
                "msmv_sampling (cuda): feature level ", l, " must be channels-last in memory; "
                "call .contiguous(memory_format=torch.channels_last_3d) first (the Python "
                "front end does this for you)");
    args.feat[l] = f.data_ptr();
    args.height[l] = f.size(3);
    args.width[l] = f.size(4);
  }

  const at::ScalarType acc = accumulation_type(first.scalar_type());
  TORCH_CHECK(locations.device() == first.device() && scale_weights.device() == first.device(),
              "msmv_sampling (cuda): locations and scale_weights must be on ", first.device());
  TORCH_CHECK(locations.dim() == 4 && locations.size(0) == rows && locations.size(3) == 3,
              "msmv_sampling (cuda): locations must be [", rows, ", Q, P, 3], got ",
              locations.sizes());
  const int64_t queries = locations.size(1), points = locations.size(2);
  TORCH_CHECK(scale_weights.dim() == 4 && scale_weights.size(0) == rows &&
                  scale_weights.size(1) == queries && scale_weights.size(2) == points &&
                  scale_weights.size(3) == num_levels,
              "msmv_sampling (cuda): scale_weights must be [", rows, ", ", queries, ", ", points,
              ", ", num_levels, "] (one weight per level), got ", scale_weights.sizes());
  TORCH_CHECK(locations.scalar_type() == acc && scale_weights.scalar_type() == acc,
              "msmv_sampling (cuda): locations and scale_weights must be ", acc, " for ",
              first.scalar_type(), " features, got ", locations.scalar_type(), " and ",
              scale_weights.scalar_type());
  TORCH_CHECK(locations.is_contiguous() && scale_weights.is_contiguous(),
              "msmv_sampling (cuda): locations and scale_weights must be contiguous");
  args.num_queries = queries;
  args.num_points = points;
  args.loc = locations.data_ptr();
  args.weight = scale_weights.data_ptr();
  return args;
}

void check_launch(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, "msmv_sampling (cuda): ", what, " kernel launch failed: ",
              cudaGetErrorString(error));
}

}  // namespace

at::Tensor msmv_sampling_forward(const std::vector<at::Tensor>& features,
                                 const at::Tensor& locations, const at::Tensor& scale_weights) {
  RawSamplingArgs args = describe(features, locations, scale_weights);
  const at::Tensor& first = features[0];
  const c10::cuda::CUDAGuard guard(first.device());
  at::Tensor out = at::empty({args.num_rows, args.num_queries, args.channels, args.num_points},
                             first.options());  // [R, Q, C, P]
  args.out = out.data_ptr();
  for (int d = 0; d < 4; ++d) args.out_stride[d] = out.stride(d);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(first.device().index()).stream();
  check_launch(msmv::launch_msmv_forward(args, feature_type(first.scalar_type()), stream),
               "forward");
  return out;
}

std::vector<at::Tensor> msmv_sampling_backward(const at::Tensor& grad_out,
                                               const std::vector<at::Tensor>& features,
                                               const at::Tensor& locations,
                                               const at::Tensor& scale_weights,
                                               bool need_feature_grad) {
  RawSamplingArgs args = describe(features, locations, scale_weights);
  const at::Tensor& first = features[0];
  TORCH_CHECK(grad_out.device() == first.device() && grad_out.scalar_type() == first.scalar_type(),
              "msmv_sampling (cuda): grad_out must be ", first.scalar_type(), " on ",
              first.device(), ", got ", grad_out.scalar_type(), " on ", grad_out.device());
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == args.num_rows &&
                  grad_out.size(1) == args.num_queries && grad_out.size(2) == args.channels &&
                  grad_out.size(3) == args.num_points,
              "msmv_sampling (cuda): grad_out must be [R, Q, C, P] = [", args.num_rows, ", ",
              args.num_queries, ", ", args.channels, ", ", args.num_points, "], got ",
              grad_out.sizes());
  const c10::cuda::CUDAGuard guard(first.device());
  const at::ScalarType acc = accumulation_type(first.scalar_type());

  std::vector<at::Tensor> grads;
  std::vector<at::Tensor> grad_feat_acc;
  for (size_t l = 0; l < features.size(); ++l) {
    if (need_feature_grad) {
      // Accumulate in float32 (float64 for float64), then cast: half atomics would lose the
      // many small contributions that land on one pixel.
      grad_feat_acc.push_back(at::zeros_like(features[l], features[l].options().dtype(acc),
                                             at::MemoryFormat::ChannelsLast3d));
      args.grad_feat[l] = grad_feat_acc.back().data_ptr();
    } else {
      args.grad_feat[l] = nullptr;
    }
  }
  at::Tensor grad_loc = at::empty_like(locations);        // every entry is written
  at::Tensor grad_weight = at::empty_like(scale_weights); // every entry is written
  args.grad_out = grad_out.data_ptr();
  for (int d = 0; d < 4; ++d) args.grad_out_stride[d] = grad_out.stride(d);
  args.grad_loc = grad_loc.data_ptr();
  args.grad_weight = grad_weight.data_ptr();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(first.device().index()).stream();
  check_launch(msmv::launch_msmv_backward(args, feature_type(first.scalar_type()), stream),
               "backward");

  for (size_t l = 0; l < features.size(); ++l) {
    if (need_feature_grad) {
      grads.push_back(grad_feat_acc[l].scalar_type() == first.scalar_type()
                          ? grad_feat_acc[l]
                          : grad_feat_acc[l].to(first.scalar_type()));
    } else {
      grads.push_back(at::Tensor());
    }
  }
  grads.push_back(grad_loc);
  grads.push_back(grad_weight);
  return grads;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "SparseBEV multi-scale multi-view sampling (CUDA)";
  m.def("forward", &msmv_sampling_forward, "msmv_sampling forward -> [R, Q, C, P]",
        py::arg("features"), py::arg("locations"), py::arg("scale_weights"));
  m.def("backward", &msmv_sampling_backward,
        "msmv_sampling backward -> grads of features..., locations, scale_weights",
        py::arg("grad_out"), py::arg("features"), py::arg("locations"), py::arg("scale_weights"),
        py::arg("need_feature_grad") = true);
  m.attr("MAX_LEVELS") = msmv::kMaxLevels;
}
