// CUDA kernels of the multi-scale multi-view sampling op; the arithmetic lives in
// msmv_sampling.h (shared with the CPU harness), this file only maps threads onto it.
//
// Forward: `lanes` threads per sampling point, each reading VEC channels at a time (16-byte
// loads when aligned), writing [R, Q, C, P]. Backward: one channel per lane per step; feature
// gradients by atomicAdd into an accumulation-dtype buffer (float32 for half/bfloat16), location
// and level-weight gradients reduced across the item's lanes with warp shuffles and written once
// per point (no atomics, deterministic).
#include <cuda_runtime.h>

#include "msmv_sampling.h"
#include "msmv_sampling_launch.h"

namespace msmv {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

template <typename acc_t>
struct WarpReducer {
  acc_t* grad_weight;
  acc_t* grad_loc;
  int num_levels;
  int lane;   // lane within the item
  int lanes;  // lanes per item (a power of two dividing 32)

  __device__ __forceinline__ acc_t sum(acc_t v) const {
    for (int offset = lanes / 2; offset > 0; offset /= 2)
      v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
  }
  __device__ __forceinline__ void level_weight_grad(int64_t item, int level, acc_t g, bool active) {
    g = sum(g);
    if (active && lane == 0) grad_weight[item * num_levels + level] = g;
  }
  __device__ __forceinline__ void location_grad(int64_t item, acc_t gx, acc_t gy, bool active) {
    gx = sum(gx);
    gy = sum(gy);
    if (active && lane == 0) {
      grad_loc[item * 3 + 0] = gx;
      grad_loc[item * 3 + 1] = gy;
      grad_loc[item * 3 + 2] = acc_t(0);
    }
  }
};

template <int VEC, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
msmv_forward_kernel(const SamplingArgs<scalar_t, acc_t> args, int lanes) {
  const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t items_per_step = int64_t(gridDim.x) * blockDim.x / lanes;
  const int lane = threadIdx.x % lanes;
  const int64_t num_items = args.num_items();
  for (int64_t item = thread / lanes; item < num_items; item += items_per_step)
    forward_point<VEC>(args, item, lane, lanes);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
msmv_backward_kernel(const SamplingArgs<scalar_t, acc_t> args, int lanes) {
  const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t items_per_step = int64_t(gridDim.x) * blockDim.x / lanes;
  const int warp_lane = threadIdx.x % 32;
  const int64_t warp_first_item = (thread - warp_lane) / lanes;  // uniform within the warp
  const int64_t num_items = args.num_items();
  WarpReducer<acc_t> reducer{args.grad_weight, args.grad_loc, args.num_levels,
                             static_cast<int>(threadIdx.x % lanes), lanes};
  // The loop condition is warp-uniform, so all 32 lanes reach every shuffle together.
  for (int64_t first = warp_first_item; first < num_items; first += items_per_step) {
    const int64_t item = first + warp_lane / lanes;
    const bool active = item < num_items;
    backward_point(args, active ? item : int64_t(0), active, reducer.lane, lanes, reducer);
  }
}

template <typename scalar_t, typename acc_t>
SamplingArgs<scalar_t, acc_t> typed(const RawSamplingArgs& raw) {
  SamplingArgs<scalar_t, acc_t> a;
  for (int l = 0; l < kMaxLevels; ++l) {
    a.feat[l] = static_cast<const scalar_t*>(raw.feat[l]);
    a.grad_feat[l] = static_cast<acc_t*>(raw.grad_feat[l]);
    a.height[l] = raw.height[l];
    a.width[l] = raw.width[l];
  }
  a.num_levels = raw.num_levels;
  a.num_rows = raw.num_rows;
  a.num_views = raw.num_views;
  a.num_queries = raw.num_queries;
  a.num_points = raw.num_points;
  a.channels = raw.channels;
  a.loc = static_cast<const acc_t*>(raw.loc);
  a.weight = static_cast<const acc_t*>(raw.weight);
  a.out = static_cast<scalar_t*>(raw.out);
  a.grad_out = static_cast<const scalar_t*>(raw.grad_out);
  for (int d = 0; d < 4; ++d) {
    a.out_stride[d] = raw.out_stride[d];
    a.grad_out_stride[d] = raw.grad_out_stride[d];
  }
  a.grad_loc = static_cast<acc_t*>(raw.grad_loc);
  a.grad_weight = static_cast<acc_t*>(raw.grad_weight);
  return a;
}

int num_blocks(int64_t threads) {
  const int64_t blocks = (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<int>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

template <typename scalar_t, typename acc_t>
cudaError_t forward(const RawSamplingArgs& raw, cudaStream_t stream) {
  const SamplingArgs<scalar_t, acc_t> a = typed<scalar_t, acc_t>(raw);
  if (a.num_items() == 0 || a.channels == 0) return cudaSuccess;
  constexpr int kVec = 16 / sizeof(scalar_t);  // one 16-byte load
  bool vectorized = a.channels % kVec == 0;
  for (int l = 0; l < a.num_levels; ++l)
    vectorized = vectorized && reinterpret_cast<uintptr_t>(a.feat[l]) % 16 == 0;
  const int vec = vectorized ? kVec : 1;
  const int lanes = lanes_per_item((a.channels + vec - 1) / vec);
  const int blocks = num_blocks(a.num_items() * lanes);
  if (vectorized)
    msmv_forward_kernel<kVec><<<blocks, kThreadsPerBlock, 0, stream>>>(a, lanes);
  else
    msmv_forward_kernel<1><<<blocks, kThreadsPerBlock, 0, stream>>>(a, lanes);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t>
cudaError_t backward(const RawSamplingArgs& raw, cudaStream_t stream) {
  const SamplingArgs<scalar_t, acc_t> a = typed<scalar_t, acc_t>(raw);
  if (a.num_items() == 0) return cudaSuccess;
  const int lanes = lanes_per_item(a.channels);
  const int blocks = num_blocks(a.num_items() * lanes);
  msmv_backward_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(a, lanes);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_msmv_forward(const RawSamplingArgs& args, FeatureType type, cudaStream_t stream) {
  switch (type) {
    case FeatureType::kFloat32: return forward<float, float>(args, stream);
    case FeatureType::kFloat64: return forward<double, double>(args, stream);
    case FeatureType::kFloat16: return forward<__half, float>(args, stream);
    case FeatureType::kBFloat16: return forward<__nv_bfloat16, float>(args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_msmv_backward(const RawSamplingArgs& args, FeatureType type, cudaStream_t stream) {
  switch (type) {
    case FeatureType::kFloat32: return backward<float, float>(args, stream);
    case FeatureType::kFloat64: return backward<double, double>(args, stream);
    case FeatureType::kFloat16: return backward<__half, float>(args, stream);
    case FeatureType::kBFloat16: return backward<__nv_bfloat16, float>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace msmv
