// clipper-sleep: for tests (like clipper.model_runtime.models:sleep). Each batch sleeps
// CLIPPER_SLEEP_FIXED_MS + CLIPPER_SLEEP_PER_ITEM_US * n and answers the batch size n for every input;
// when CLIPPER_BATCH_LOG names a file, a line with n is appended to it as each batch starts.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <clipper/model.hpp>

namespace {

double env_number(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atof(v) : 0.0;
}

struct Sleep : clipper::Model {
  std::vector<std::string> answer(std::size_t n) {
    if (const char* log = std::getenv("CLIPPER_BATCH_LOG")) std::ofstream(log, std::ios::app) << n << "\n";
    double ms = env_number("CLIPPER_SLEEP_FIXED_MS") + env_number("CLIPPER_SLEEP_PER_ITEM_US") * n / 1e3;
    if (ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
    return std::vector<std::string>(n, std::to_string(n));
  }
  std::vector<std::string> predict_bytes(const clipper::Batch<std::uint8_t>& in) override { return answer(in.size()); }
  std::vector<std::string> predict_ints(const clipper::Batch<std::int32_t>& in) override { return answer(in.size()); }
  std::vector<std::string> predict_floats(const clipper::Batch<float>& in) override { return answer(in.size()); }
  std::vector<std::string> predict_doubles(const clipper::Batch<double>& in) override { return answer(in.size()); }
  std::vector<std::string> predict_strings(const clipper::StringBatch& in) override { return answer(in.size()); }
};

}  // namespace

int main() {
  Sleep model;
  return clipper::run(model);
}
