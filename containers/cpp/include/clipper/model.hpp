// Clipper model containers in C++: implement `clipper::Model`, call `clipper::run(model)`.
//
//   struct Sum : clipper::Model {
//     std::vector<std::string> predict_doubles(const clipper::Batch<double>& inputs) override {
//       std::vector<std::string> out;
//       for (auto x : inputs) out.push_back(std::to_string(std::accumulate(x.begin(), x.end(), 0.0)));
//       return out;
//     }
//   };
//   int main() { Sum m; return clipper::run(m); }
//
// The container speaks Clipper RPC v3 (docs/protocol.md) to the query frontend named by the
// environment (CLIPPER_MODEL_NAME, CLIPPER_MODEL_VERSION, CLIPPER_INPUT_TYPE, CLIPPER_IP, CLIPPER_PORT,
// CLIPPER_HEARTBEAT_INTERVAL, CLIPPER_SESSION_TIMEOUT, CLIPPER_READY_FILE). With CLIPPER_METRICS_PORT set,
// it serves Prometheus text on GET /metrics there (CLIPPER_METRICS_HOST, default 127.0.0.1): the
// clipper_mc_* metrics of docs/containers.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace clipper {

/// Input type codes of Clipper RPC v3.
enum class InputType : std::uint32_t { Bytes = 0, Integers = 1, Floats = 2, Doubles = 3, Strings = 4 };

/// The canonical name ("bytes", "integers", "floats", "doubles", "strings").
const char* input_type_name(InputType type);
/// A canonical name or one of Clipper's aliases ("d", "ints", "str", ...), case-insensitive.
std::optional<InputType> parse_input_type(std::string_view name);

/// One numeric input: a read-only view of its elements. The view points into the received ZeroMQ
/// frame (no copy) when that frame is suitably aligned for T; a frame that is not (ZeroMQ gives no
/// alignment guarantee) is first copied into aligned storage the runtime owns. Valid only during the
/// predict call.
template <class T>
using Input = std::span<const T>;

/// A batch of numeric inputs (for bytes, T = std::uint8_t).
template <class T>
using Batch = std::vector<Input<T>>;

/// A batch of strings: views of each input's raw UTF-8 bytes (not validated), valid only during the
/// predict call.
using StringBatch = std::vector<std::string_view>;

/// A model: one `predict_*` per input type, each taking a batch and returning one output per input
/// (UTF-8 text; valid JSON reaches the client as JSON). Override the one(s) for the input types the
/// model serves; the others throw. Any exception fails the batch: every output of it becomes the
/// error marker ("\0error:" + what()), the frontend answers those queries with the app's default, and
/// the container keeps serving. Only one batch runs at a time, on a thread of the runtime.
class Model {
 public:
  virtual ~Model() = default;
  virtual std::vector<std::string> predict_bytes(const Batch<std::uint8_t>& inputs);
  virtual std::vector<std::string> predict_ints(const Batch<std::int32_t>& inputs);
  virtual std::vector<std::string> predict_floats(const Batch<float>& inputs);
  virtual std::vector<std::string> predict_doubles(const Batch<double>& inputs);
  virtual std::vector<std::string> predict_strings(const StringBatch& inputs);
};

/// A setting that is missing or invalid.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// What a container serves and where.
struct Config {
  std::string name;                        ///< CLIPPER_MODEL_NAME (required)
  std::string version;                     ///< CLIPPER_MODEL_VERSION (required)
  InputType input_type = InputType::Doubles;  ///< CLIPPER_INPUT_TYPE (default doubles)
  std::string host = "127.0.0.1";          ///< CLIPPER_IP
  std::vector<int> ports{7000};            ///< CLIPPER_PORT: a port, or a comma-separated list (--workers)
  std::chrono::duration<double> heartbeat_interval{1.0};  ///< CLIPPER_HEARTBEAT_INTERVAL (seconds)
  std::chrono::duration<double> session_timeout{10.0};    ///< CLIPPER_SESSION_TIMEOUT (seconds)
  std::string ready_file;                  ///< CLIPPER_READY_FILE: touched once registered ("" = none)
  int metrics_port = -1;                   ///< CLIPPER_METRICS_PORT: GET /metrics there (-1 = none, 0 = any)
  std::string metrics_host = "127.0.0.1";  ///< CLIPPER_METRICS_HOST

  /// Reads the environment; throws ConfigError naming the variable that is missing or invalid.
  static Config from_env();
};

/// Serves `model` until `request_stop()` (or SIGTERM/SIGINT once `install_signal_handlers()` ran):
/// one session (DEALER socket) per port, heartbeats, registration, batches, and a new session after
/// `session_timeout` without a message from the frontend. Returns 0 once stopped. With
/// `metrics_port` >= 0, serves GET /metrics meanwhile (throws ConfigError if that port cannot be bound).
int serve(Model& model, const Config& config);

/// Makes SIGTERM and SIGINT call `request_stop()`.
void install_signal_handlers();
/// Asks `serve` to return (async-signal-safe); a running batch is finished and answered first.
void request_stop();

/// `main` in one call: Config::from_env(), signal handlers, serve. Returns the exit status (0 after
/// SIGTERM/SIGINT; 2 with a message on stderr for a bad configuration or a metrics port that is taken).
int run(Model& model);

}  // namespace clipper
