// Type-erased launch interface between the torch binding (msmv_sampling.cpp, compiled by the
// host compiler) and the CUDA kernels (msmv_sampling_kernels.cu, compiled by nvcc), so that the
// binding needs no CUDA device types and the kernels need no torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include "msmv_sampling.h"

namespace msmv {

enum class FeatureType { kFloat32, kFloat64, kFloat16, kBFloat16 };

// Pointers are void: features/output/grad_out in the feature dtype; locations, weights and all
// gradients in the accumulation dtype (float64 for float64 features, float32 otherwise).
using RawSamplingArgs = SamplingArgs<void, void>;

// Launch on `stream`; return the launch error (cudaSuccess when fine).
cudaError_t launch_msmv_forward(const RawSamplingArgs& args, FeatureType type, cudaStream_t stream);
cudaError_t launch_msmv_backward(const RawSamplingArgs& args, FeatureType type, cudaStream_t stream);

}  // namespace msmv
