// clipper-noop: answers "1.0" to every input, whatever its type (like clipper.model_runtime.models:noop).
#include <clipper/model.hpp>

namespace {

struct Noop : clipper::Model {
  template <class B>
  static std::vector<std::string> ones(const B& inputs) {
    return std::vector<std::string>(inputs.size(), "1.0");
  }
  std::vector<std::string> predict_bytes(const clipper::Batch<std::uint8_t>& in) override { return ones(in); }
  std::vector<std::string> predict_ints(const clipper::Batch<std::int32_t>& in) override { return ones(in); }
  std::vector<std::string> predict_floats(const clipper::Batch<float>& in) override { return ones(in); }
  std::vector<std::string> predict_doubles(const clipper::Batch<double>& in) override { return ones(in); }
  std::vector<std::string> predict_strings(const clipper::StringBatch& in) override { return ones(in); }
};

}  // namespace

int main() {
  Noop model;
  return clipper::run(model);
}
