// torch dtype -> MPI datatype/op, with user-defined operations for f16 and bf16.
#include "distributed/mpi_datatype.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <mutex>
#include <stdexcept>

#include "core/util/strings.h"
#include "distributed/check.h"
#include "distributed/mpi_runtime.h"

namespace lf::dist {
namespace {

// MPI_User_function over 2-byte floats: widen to float, combine, round back (as NCCL does for
// half sums on hardware without native f16 arithmetic).
template <class Half, int kOp>
void reduce_16bit(void* in, void* inout, int* len, MPI_Datatype*) {
  const Half* a = static_cast<const Half*>(in);
  Half* b = static_cast<Half*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = static_cast<float>(a[i]);
    const float y = static_cast<float>(b[i]);
    float r = x + y;
    if (kOp == 1) r = x > y ? x : y;
    if (kOp == 2) r = x < y ? x : y;
    b[i] = static_cast<Half>(r);
  }
}

struct SixteenBitOps {
  MPI_Datatype type = MPI_DATATYPE_NULL;
  MPI_Op half[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
  MPI_Op bfloat[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
};

const SixteenBitOps& sixteen_bit_ops() {
  static SixteenBitOps ops;
  static std::once_flag once;
  std::call_once(once, [] {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &ops.type));
    LF_MPI_CHECK(MPI_Type_commit(&ops.type));
    LF_MPI_CHECK(MPI_Op_create(&reduce_16bit<c10::Half, 0>, 1, &ops.half[0]));
    LF_MPI_CHECK(MPI_Op_create(&reduce_16bit<c10::Half, 1>, 1, &ops.half[1]));
    LF_MPI_CHECK(MPI_Op_create(&reduce_16bit<c10::Half, 2>, 1, &ops.half[2]));
    LF_MPI_CHECK(MPI_Op_create(&reduce_16bit<c10::BFloat16, 0>, 1, &ops.bfloat[0]));
    LF_MPI_CHECK(MPI_Op_create(&reduce_16bit<c10::BFloat16, 1>, 1, &ops.bfloat[1]));
    LF_MPI_CHECK(MPI_Op_create(&reduce_16bit<c10::BFloat16, 2>, 1, &ops.bfloat[2]));
  });
  return ops;
}

MPI_Op builtin(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

}  // namespace

MPIReduction mpi_reduction(torch::ScalarType dtype, ReduceOp op) {
  const int index = static_cast<int>(op);
  switch (dtype) {
    case torch::kFloat: return {MPI_FLOAT, builtin(op)};
    case torch::kDouble: return {MPI_DOUBLE, builtin(op)};
    case torch::kLong: return {MPI_INT64_T, builtin(op)};
    case torch::kInt: return {MPI_INT32_T, builtin(op)};
    case torch::kShort: return {MPI_INT16_T, builtin(op)};
    case torch::kChar: return {MPI_INT8_T, builtin(op)};
    case torch::kByte: return {MPI_UINT8_T, builtin(op)};
    case torch::kBool:
      // bool is one byte holding 0/1: max is "any", min is "all"; a sum could overflow to 2.
      if (op == ReduceOp::kSum)
        throw std::invalid_argument(
            "all_reduce: sum of a bool tensor is not defined; use ReduceOp::kMax (any rank) or "
            "kMin (every rank), or convert to an integer dtype to count");
      return {MPI_UINT8_T, builtin(op)};
    case torch::kHalf: return {sixteen_bit_ops().type, sixteen_bit_ops().half[index]};
    case torch::kBFloat16: return {sixteen_bit_ops().type, sixteen_bit_ops().bfloat[index]};
    default:
      throw std::invalid_argument(lf::str("all_reduce: dtype ", dtype,
                                      " has no MPI reduction; use f32, f64, f16, bf16, i64, i32, "
                                      "i16, i8, u8 or bool"));
  }
}

}  // namespace lf::dist
