// clipper-conformance: the conformance model every container library ships (tests/test_conformance.py).
// Per input: numbers and bytes -> "<count>:<sum>" (each element truncated toward zero to int64; bytes
// unsigned), strings -> "<UTF-8 byte length>:<string>". A batch with a poisoned input (first element
// -7, first byte 0xEE, the string "poison") fails as a whole: the runtime answers every output of it
// with the error marker.
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <clipper/model.hpp>

namespace {

struct Conformance : clipper::Model {
  template <class T>
  static std::vector<std::string> count_and_sum(const clipper::Batch<T>& inputs, T poison) {
    for (const auto& x : inputs)
      if (!x.empty() && x[0] == poison) throw std::runtime_error("poison input in the batch");
    std::vector<std::string> out;
    out.reserve(inputs.size());
    for (const auto& x : inputs) {
      std::int64_t sum = 0;
      for (T v : x) {
        if constexpr (std::is_floating_point_v<T>)
          sum += static_cast<std::int64_t>(std::trunc(v));
        else
          sum += static_cast<std::int64_t>(v);
      }
      out.push_back(std::to_string(x.size()) + ":" + std::to_string(sum));
    }
    return out;
  }

  std::vector<std::string> predict_bytes(const clipper::Batch<std::uint8_t>& in) override {
    return count_and_sum<std::uint8_t>(in, 0xEE);
  }
  std::vector<std::string> predict_ints(const clipper::Batch<std::int32_t>& in) override {
    return count_and_sum<std::int32_t>(in, -7);
  }
  std::vector<std::string> predict_floats(const clipper::Batch<float>& in) override {
    return count_and_sum<float>(in, -7.0f);
  }
  std::vector<std::string> predict_doubles(const clipper::Batch<double>& in) override {
    return count_and_sum<double>(in, -7.0);
  }
  std::vector<std::string> predict_strings(const clipper::StringBatch& in) override {
    for (auto s : in)
      if (s == "poison") throw std::runtime_error("poison input in the batch");
    std::vector<std::string> out;
    out.reserve(in.size());
    for (auto s : in) out.push_back(std::to_string(s.size()) + ":" + std::string(s));
    return out;
  }
};

}  // namespace

int main() {
  Conformance model;
  return clipper::run(model);
}
