// CPU harness: runs the exact per-point arithmetic of the CUDA kernels (msmv_sampling.h) with
// g++, emulating the kernels' split of channels over lanes, so that the kernel math can be
// tested against the torch backend on machines without a GPU (test/test_msmv_sampling_cuda.py).
// Build: g++ -O2 -std=c++17 -shared -fPIC host_harness.cpp -o libmsmv_host.so
#include <stdint.h>

#include "msmv_sampling.h"

namespace {

using msmv::SamplingArgs;

// Sums the partial gradients of the lanes of an item (what the warp shuffles do on the GPU).
template <typename acc_t>
struct SerialReducer {
  acc_t* grad_weight;
  acc_t* grad_loc;
  int num_levels;
  void level_weight_grad(int64_t item, int level, acc_t g, bool active) {
    if (active) grad_weight[item * num_levels + level] += g;
  }
  void location_grad(int64_t item, acc_t gx, acc_t gy, bool active) {
    if (active) {
      grad_loc[item * 3 + 0] += gx;
      grad_loc[item * 3 + 1] += gy;
    }
  }
};

template <typename real>
SamplingArgs<real, real> make_args(int num_levels, const real* const* feat, const int64_t* heights,
                                   const int64_t* widths, int64_t rows, int64_t views,
                                   int64_t queries, int64_t points, int64_t channels,
                                   const real* loc, const real* weight) {
  SamplingArgs<real, real> a{};
  for (int l = 0; l < num_levels; ++l) {
    a.feat[l] = feat[l];
    a.height[l] = heights[l];
    a.width[l] = widths[l];
  }
  a.num_levels = num_levels;
  a.num_rows = rows;
  a.num_views = views;
  a.num_queries = queries;
  a.num_points = points;
  a.channels = channels;
  a.loc = loc;
  a.weight = weight;
  return a;
}

template <typename real, int VEC>
void forward_all(const SamplingArgs<real, real>& a, int lanes) {
  for (int64_t item = 0; item < a.num_items(); ++item)
    for (int lane = 0; lane < lanes; ++lane) msmv::forward_point<VEC>(a, item, lane, lanes);
}

// Returns 0 on success, 1 on bad arguments.
template <typename real>
int forward(int num_levels, const real* const* feat, const int64_t* heights, const int64_t* widths,
            int64_t rows, int64_t views, int64_t queries, int64_t points, int64_t channels,
            const real* loc, const real* weight, real* out, int vec, int lanes) {
  if (num_levels < 1 || num_levels > msmv::kMaxLevels || lanes < 1 || lanes > 32) return 1;
  SamplingArgs<real, real> a = make_args(num_levels, feat, heights, widths, rows, views, queries,
                                         points, channels, loc, weight);
  a.out = out;  // contiguous [R, Q, C, P]
  a.out_stride[3] = 1;
  a.out_stride[2] = points;
  a.out_stride[1] = channels * points;
  a.out_stride[0] = queries * channels * points;
  constexpr int kVec = 16 / sizeof(real);
  if (vec == 1) {
    forward_all<real, 1>(a, lanes);
  } else if (vec == kVec && channels % kVec == 0) {
    forward_all<real, kVec>(a, lanes);
  } else {
    return 1;
  }
  return 0;
}

// grad_feat[l], grad_loc and grad_weight must be zero-filled by the caller.
template <typename real>
int backward(int num_levels, const real* const* feat, const int64_t* heights,
             const int64_t* widths, int64_t rows, int64_t views, int64_t queries, int64_t points,
             int64_t channels, const real* loc, const real* weight, const real* grad_out,
             const int64_t* grad_out_stride, real* const* grad_feat, real* grad_loc,
             real* grad_weight, int lanes) {
  if (num_levels < 1 || num_levels > msmv::kMaxLevels || lanes < 1 || lanes > 32) return 1;
  SamplingArgs<real, real> a = make_args(num_levels, feat, heights, widths, rows, views, queries,
                                         points, channels, loc, weight);
  for (int l = 0; l < num_levels; ++l) a.grad_feat[l] = grad_feat ? grad_feat[l] : nullptr;
  a.grad_out = grad_out;
  for (int d = 0; d < 4; ++d) a.grad_out_stride[d] = grad_out_stride[d];
  a.grad_loc = grad_loc;
  a.grad_weight = grad_weight;
  SerialReducer<real> reducer{grad_weight, grad_loc, num_levels};
  for (int64_t item = 0; item < a.num_items(); ++item)
    for (int lane = 0; lane < lanes; ++lane)
      msmv::backward_point(a, item, true, lane, lanes, reducer);
  return 0;
}

}  // namespace

#define MSMV_HOST_API(SUFFIX, REAL)                                                              \
  extern "C" int msmv_host_forward_##SUFFIX(                                                     \
      int num_levels, const REAL* const* feat, const int64_t* heights, const int64_t* widths,   \
      int64_t rows, int64_t views, int64_t queries, int64_t points, int64_t channels,            \
      const REAL* loc, const REAL* weight, REAL* out, int vec, int lanes) {                      \
    return forward<REAL>(num_levels, feat, heights, widths, rows, views, queries, points,        \
                         channels, loc, weight, out, vec, lanes);                                \
  }                                                                                              \
  extern "C" int msmv_host_backward_##SUFFIX(                                                    \
      int num_levels, const REAL* const* feat, const int64_t* heights, const int64_t* widths,   \
      int64_t rows, int64_t views, int64_t queries, int64_t points, int64_t channels,            \
      const REAL* loc, const REAL* weight, const REAL* grad_out, const int64_t* grad_out_stride, \
      REAL* const* grad_feat, REAL* grad_loc, REAL* grad_weight, int lanes) {                    \
    return backward<REAL>(num_levels, feat, heights, widths, rows, views, queries, points,       \
                          channels, loc, weight, grad_out, grad_out_stride, grad_feat, grad_loc, \
                          grad_weight, lanes);                                                   \
  }

MSMV_HOST_API(f32, float)
MSMV_HOST_API(f64, double)

extern "C" int msmv_host_view_index_f32(float view_coord, int64_t num_views) {
  return static_cast<int>(msmv::view_index(view_coord, num_views));
}
