// Multi-scale multi-view sampling: the per-point arithmetic shared by the CUDA kernels
// (msmv_sampling_kernels.cu) and the CPU harness (host_harness.cpp) that tests it with g++.
//
// Semantics (docs/official_model.md section 3, same as the official op):
//   out[r, q, c, p] = sum_l  weight[r, q, p, l] * bilinear(feat_l[r, view, :, :, c], y * (H_l - 1), x * (W_l - 1))
// with (x, y, v) = loc[r, q, p, :], view = round(v * (N - 1)) clamped into [0, N - 1]
// (the official kernel does not clamp; the head only produces exact view indices, so the
// clamp only turns an out-of-range read into a read of the nearest camera), align_corners=True
// pixel mapping, a level contributing only when -1 < h < H_l and -1 < w < W_l, and corners
// outside the map reading zero (grid_sample's padding_mode='zeros').
//
// Feature layout: channels-last per level, [R, N, H_l, W_l, C] contiguous (R = B*T*G rows),
// so that neighbouring threads read neighbouring channels of one pixel.
//
// Work split: one "item" is one sampling point (r, q, p); `lanes` threads (a power of two
// dividing 32) share an item, lane k taking channel chunks k, k + lanes, ... of VEC channels.
// The backward sums the per-lane partial gradients of the locations and level weights through a
// Reducer: warp shuffles on the GPU, plain sums in the CPU harness.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define MSMV_HD __host__ __device__ __forceinline__
#define MSMV_UNROLL _Pragma("unroll")
#else
#define MSMV_HD inline
#define MSMV_UNROLL
#endif

namespace msmv {

constexpr int kMaxLevels = 16;

// Everything one launch needs. scalar_t: feature/output dtype; acc_t: accumulation dtype
// (float for float/half/bfloat16 features, double for double), also the dtype of the
// locations, level weights and their gradients. All offsets are 64-bit.
template <typename scalar_t, typename acc_t>
struct SamplingArgs {
  const scalar_t* feat[kMaxLevels];  // level l: [R, N, H_l, W_l, C] contiguous
  acc_t* grad_feat[kMaxLevels];      // same layout, accumulation dtype; nullptr = not wanted
  int64_t height[kMaxLevels];
  int64_t width[kMaxLevels];
  int num_levels;
  int64_t num_rows;     // R = B*T*G
  int64_t num_views;    // N
  int64_t num_queries;  // Q
  int64_t num_points;   // P
  int64_t channels;     // C
  const acc_t* loc;     // [R, Q, P, 3] contiguous: (u / W, v / H, view / (N - 1))
  const acc_t* weight;  // [R, Q, P, L] contiguous
  scalar_t* out;        // [R, Q, C, P], strides out_stride (elements)
  int64_t out_stride[4];
  const scalar_t* grad_out;  // [R, Q, C, P], strides grad_out_stride (may be non-contiguous)
  int64_t grad_out_stride[4];
  acc_t* grad_loc;      // [R, Q, P, 3] contiguous; the view component is written as 0
  acc_t* grad_weight;   // [R, Q, P, L] contiguous

  MSMV_HD int64_t num_items() const { return num_rows * num_queries * num_points; }
};

// ---- dtype conversion (features may be half/bfloat16; arithmetic is in acc_t) ----
template <typename acc_t, typename scalar_t>
struct Convert {
  static MSMV_HD acc_t to_acc(scalar_t v) { return static_cast<acc_t>(v); }
  static MSMV_HD scalar_t from_acc(acc_t v) { return static_cast<scalar_t>(v); }
};
#if defined(__CUDACC__)
template <>
struct Convert<float, __half> {
  static MSMV_HD float to_acc(__half v) { return __half2float(v); }
  static MSMV_HD __half from_acc(float v) { return __float2half_rn(v); }
};
template <>
struct Convert<float, __nv_bfloat16> {
  static MSMV_HD float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  static MSMV_HD __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
};
#endif

MSMV_HD float floor_of(float v) { return floorf(v); }
MSMV_HD double floor_of(double v) { return floor(v); }
MSMV_HD float round_half_away(float v) { return roundf(v); }
MSMV_HD double round_half_away(double v) { return round(v); }

// Camera index of a point: round(v * (N - 1)) as the official op, clamped into [0, N - 1]
// (NaN -> 0).
template <typename acc_t>
MSMV_HD int64_t view_index(acc_t view_coord, int64_t num_views) {
  const acc_t v = round_half_away(view_coord * static_cast<acc_t>(num_views - 1));
  if (!(v > acc_t(0))) return 0;
  if (v >= static_cast<acc_t>(num_views - 1)) return num_views - 1;
  return static_cast<int64_t>(v);
}

// Bilinear taps of one point on one level (align_corners=True).
template <typename acc_t>
struct BilinearTaps {
  bool active;             // the level contributes: -1 < h < H and -1 < w < W
  int64_t h_low, w_low;    // top-left corner (may be -1)
  acc_t lh, lw;            // fractional offsets from the top-left corner
  bool top_in, bottom_in, left_in, right_in;  // corner rows/columns inside the map
};

template <typename acc_t>
MSMV_HD BilinearTaps<acc_t> bilinear_taps(acc_t x, acc_t y, int64_t height, int64_t width) {
  BilinearTaps<acc_t> t;
  const acc_t h = y * static_cast<acc_t>(height - 1);  // 0 -> first row centre, 1 -> last
  const acc_t w = x * static_cast<acc_t>(width - 1);
  t.active = h > acc_t(-1) && w > acc_t(-1) && h < static_cast<acc_t>(height) &&
             w < static_cast<acc_t>(width);
  if (!t.active) {
    t.h_low = t.w_low = 0;
    t.lh = t.lw = acc_t(0);
    t.top_in = t.bottom_in = t.left_in = t.right_in = false;
    return t;
  }
  const acc_t h_floor = floor_of(h);
  const acc_t w_floor = floor_of(w);
  t.h_low = static_cast<int64_t>(h_floor);
  t.w_low = static_cast<int64_t>(w_floor);
  t.lh = h - h_floor;
  t.lw = w - w_floor;
  t.top_in = t.h_low >= 0;
  t.bottom_in = t.h_low + 1 <= height - 1;
  t.left_in = t.w_low >= 0;
  t.right_in = t.w_low + 1 <= width - 1;
  return t;
}

// Load VEC consecutive channels and convert them to acc_t. On the GPU, VEC > 1 is one 16-byte
// load (the launcher only picks VEC > 1 when every level pointer is 16-byte aligned and C is a
// multiple of VEC).
template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) PackedChannels {
  scalar_t val[VEC];
};

template <int VEC, typename scalar_t, typename acc_t>
MSMV_HD void load_channels(const scalar_t* ptr, acc_t (&v)[VEC]) {
#if defined(__CUDA_ARCH__)
  constexpr bool kPacked = VEC > 1;
#else
  constexpr bool kPacked = false;
#endif
  if constexpr (kPacked) {
    const PackedChannels<scalar_t, VEC> packed =
        *reinterpret_cast<const PackedChannels<scalar_t, VEC>*>(ptr);
MSMV_UNROLL
    for (int k = 0; k < VEC; ++k) v[k] = Convert<acc_t, scalar_t>::to_acc(packed.val[k]);
  } else {
MSMV_UNROLL
    for (int k = 0; k < VEC; ++k) v[k] = Convert<acc_t, scalar_t>::to_acc(ptr[k]);
  }
}

template <typename acc_t>
MSMV_HD void accumulate(acc_t* address, acc_t value) {
#if defined(__CUDA_ARCH__)
  atomicAdd(address, value);
#else
  *address += value;
#endif
}

// Item index -> (row r, query q, point p); item = (r * Q + q) * P + p.
struct ItemIndex {
  int64_t row, query, point;
};
template <typename scalar_t, typename acc_t>
MSMV_HD ItemIndex split_item(const SamplingArgs<scalar_t, acc_t>& a, int64_t item) {
  ItemIndex i;
  i.point = item % a.num_points;
  const int64_t row_query = item / a.num_points;
  i.query = row_query % a.num_queries;
  i.row = row_query / a.num_queries;
  return i;
}

// Channels [c0, c0 + VEC) of one point, summed over levels: sum_l w_l * bilinear_l.
template <int VEC, typename scalar_t, typename acc_t>
MSMV_HD void sample_point_channels(const SamplingArgs<scalar_t, acc_t>& a, int64_t item,
                                   int64_t row, int64_t c0, acc_t (&out)[VEC]) {
  const acc_t* loc = a.loc + item * 3;
  const acc_t* level_weight = a.weight + item * a.num_levels;
  const int64_t view = view_index(loc[2], a.num_views);
MSMV_UNROLL
  for (int k = 0; k < VEC; ++k) out[k] = acc_t(0);
  for (int l = 0; l < a.num_levels; ++l) {
    const int64_t height = a.height[l], width = a.width[l];
    const BilinearTaps<acc_t> t = bilinear_taps(loc[0], loc[1], height, width);
    if (!t.active) continue;
    const int64_t pixel_stride = a.channels;
    const int64_t row_stride = width * pixel_stride;
    const scalar_t* image = a.feat[l] + (row * a.num_views + view) * height * row_stride + c0;
    const scalar_t* top_left = image + t.h_low * row_stride + t.w_low * pixel_stride;
    const acc_t hh = acc_t(1) - t.lh, hw = acc_t(1) - t.lw;
    acc_t value[VEC];
MSMV_UNROLL
    for (int k = 0; k < VEC; ++k) value[k] = acc_t(0);
    acc_t corner[VEC];
    if (t.top_in && t.left_in) {
      load_channels<VEC>(top_left, corner);
MSMV_UNROLL
      for (int k = 0; k < VEC; ++k) value[k] += hh * hw * corner[k];
    }
    if (t.top_in && t.right_in) {
      load_channels<VEC>(top_left + pixel_stride, corner);
MSMV_UNROLL
      for (int k = 0; k < VEC; ++k) value[k] += hh * t.lw * corner[k];
    }
    if (t.bottom_in && t.left_in) {
      load_channels<VEC>(top_left + row_stride, corner);
MSMV_UNROLL
      for (int k = 0; k < VEC; ++k) value[k] += t.lh * hw * corner[k];
    }
    if (t.bottom_in && t.right_in) {
      load_channels<VEC>(top_left + row_stride + pixel_stride, corner);
MSMV_UNROLL
      for (int k = 0; k < VEC; ++k) value[k] += t.lh * t.lw * corner[k];
    }
    const acc_t w_l = level_weight[l];
MSMV_UNROLL
    for (int k = 0; k < VEC; ++k) out[k] += w_l * value[k];
  }
}

// Forward work of one lane on one item: every VEC-chunk of channels the lane owns.
template <int VEC, typename scalar_t, typename acc_t>
MSMV_HD void forward_point(const SamplingArgs<scalar_t, acc_t>& a, int64_t item, int lane,
                           int lanes) {
  const ItemIndex i = split_item(a, item);
  scalar_t* out = a.out + i.row * a.out_stride[0] + i.query * a.out_stride[1] +
                  i.point * a.out_stride[3];
  for (int64_t c0 = static_cast<int64_t>(lane) * VEC; c0 < a.channels;
       c0 += static_cast<int64_t>(lanes) * VEC) {
    acc_t sampled[VEC];
    sample_point_channels<VEC>(a, item, i.row, c0, sampled);
MSMV_UNROLL
    for (int k = 0; k < VEC; ++k)
      out[(c0 + k) * a.out_stride[2]] = Convert<acc_t, scalar_t>::from_acc(sampled[k]);
  }
}

// Backward work of one lane on one item (one channel per step, so that the feature-gradient
// atomics of a warp hit consecutive addresses). Every lane of an item calls the reducer the
// same number of times, also when `active` is false (a padding lane past the last item), so
// that warp shuffles stay converged.
//   d out / d feat corner k  = w_l * corner weight k
//   d out / d w_l            = bilinear_l
//   d out / d x              = w_l * (W_l - 1) * (hh * (v_tr - v_tl) + lh * (v_br - v_bl))
//   d out / d y              = w_l * (H_l - 1) * (hw * (v_bl - v_tl) + lw * (v_br - v_tr))
//   d out / d view           = 0 (the view is an index)
template <typename scalar_t, typename acc_t, class Reducer>
MSMV_HD void backward_point(const SamplingArgs<scalar_t, acc_t>& a, int64_t item, bool active,
                            int lane, int lanes, Reducer& reducer) {
  ItemIndex i{0, 0, 0};
  acc_t x = acc_t(0), y = acc_t(0);
  int64_t view = 0;
  const acc_t* level_weight = a.weight;
  const scalar_t* grad_out = a.grad_out;
  if (active) {
    i = split_item(a, item);
    const acc_t* loc = a.loc + item * 3;
    x = loc[0];
    y = loc[1];
    view = view_index(loc[2], a.num_views);
    level_weight = a.weight + item * a.num_levels;
    grad_out += i.row * a.grad_out_stride[0] + i.query * a.grad_out_stride[1] +
                i.point * a.grad_out_stride[3];
  }
  acc_t grad_x = acc_t(0), grad_y = acc_t(0);
  for (int l = 0; l < a.num_levels; ++l) {
    acc_t grad_w = acc_t(0);
    const int64_t height = a.height[l], width = a.width[l];
    const BilinearTaps<acc_t> t = bilinear_taps(x, y, height, width);
    if (active && t.active) {
      const int64_t pixel_stride = a.channels;
      const int64_t row_stride = width * pixel_stride;
      const int64_t image_offset = (i.row * a.num_views + view) * height * row_stride;
      const int64_t tl = image_offset + t.h_low * row_stride + t.w_low * pixel_stride;
      const int64_t tr = tl + pixel_stride, bl = tl + row_stride, br = bl + pixel_stride;
      const bool tl_in = t.top_in && t.left_in, tr_in = t.top_in && t.right_in;
      const bool bl_in = t.bottom_in && t.left_in, br_in = t.bottom_in && t.right_in;
      const acc_t lh = t.lh, lw = t.lw, hh = acc_t(1) - t.lh, hw = acc_t(1) - t.lw;
      const acc_t w_tl = hh * hw, w_tr = hh * lw, w_bl = lh * hw, w_br = lh * lw;
      const acc_t w_l = level_weight[l];
      const scalar_t* feat = a.feat[l];
      acc_t* grad_feat = a.grad_feat[l];
      for (int64_t c = lane; c < a.channels; c += lanes) {
        const acc_t g = Convert<acc_t, scalar_t>::to_acc(grad_out[c * a.grad_out_stride[2]]);
        const acc_t v_tl = tl_in ? Convert<acc_t, scalar_t>::to_acc(feat[tl + c]) : acc_t(0);
        const acc_t v_tr = tr_in ? Convert<acc_t, scalar_t>::to_acc(feat[tr + c]) : acc_t(0);
        const acc_t v_bl = bl_in ? Convert<acc_t, scalar_t>::to_acc(feat[bl + c]) : acc_t(0);
        const acc_t v_br = br_in ? Convert<acc_t, scalar_t>::to_acc(feat[br + c]) : acc_t(0);
        grad_w += g * (w_tl * v_tl + w_tr * v_tr + w_bl * v_bl + w_br * v_br);
        const acc_t g_l = w_l * g;
        grad_x += g_l * static_cast<acc_t>(width - 1) * (hh * (v_tr - v_tl) + lh * (v_br - v_bl));
        grad_y += g_l * static_cast<acc_t>(height - 1) * (hw * (v_bl - v_tl) + lw * (v_br - v_tr));
        if (grad_feat != nullptr) {
          if (tl_in) accumulate(grad_feat + tl + c, g_l * w_tl);
          if (tr_in) accumulate(grad_feat + tr + c, g_l * w_tr);
          if (bl_in) accumulate(grad_feat + bl + c, g_l * w_bl);
          if (br_in) accumulate(grad_feat + br + c, g_l * w_br);
        }
      }
    }
    reducer.level_weight_grad(item, l, grad_w, active);
  }
  reducer.location_grad(item, grad_x, grad_y, active);
}

// Number of lanes sharing one item: enough to cover C / VEC chunks, a power of two <= 32.
MSMV_HD int lanes_per_item(int64_t chunks) {
  int lanes = 1;
  while (lanes < 32 && lanes < chunks) lanes *= 2;
  return lanes;
}

}  // namespace msmv
