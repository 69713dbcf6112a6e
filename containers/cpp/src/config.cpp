// Configuration from the environment, input type names, and the stderr log.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

#include "clipper/model.hpp"
#include "log.hpp"

namespace clipper {
namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

double positive_seconds(const char* name, double fallback) {
  const char* v = env(name);
  if (!v) return fallback;
  char* end = nullptr;
  double d = std::strtod(v, &end);
  if (end == v || *end != '\0' || !std::isfinite(d) || d <= 0)
    throw ConfigError(std::string("invalid ") + name + " '" + v + "': expected a positive number of seconds");
  return d;
}

std::vector<int> parse_ports(const char* value) {
  std::vector<int> out;
  std::string s(value);
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    std::string item = s.substr(start, end - start);
    char* stop = nullptr;
    long p = std::strtol(item.c_str(), &stop, 10);
    if (item.empty() || *stop != '\0' || p < 1 || p > 65535)
      throw ConfigError("invalid CLIPPER_PORT '" + s + "': expected a port or comma-separated ports");
    out.push_back(static_cast<int>(p));
    start = end + 1;
  }
  return out;
}

void write(const char* level, const std::string& message) {
  static std::mutex mutex;
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard lock(mutex);
  std::fprintf(stderr, "%s.%03dZ clipper-cpp %s %s\n", stamp, static_cast<int>(ms), level, message.c_str());
  std::fflush(stderr);
}

}  // namespace

const char* input_type_name(InputType type) {
  switch (type) {
    case InputType::Bytes: return "bytes";
    case InputType::Integers: return "integers";
    case InputType::Floats: return "floats";
    case InputType::Doubles: return "doubles";
    case InputType::Strings: return "strings";
  }
  return "unknown";
}

std::optional<InputType> parse_input_type(std::string_view name) {
  std::string n;
  for (char ch : name)
    if (!std::isspace(static_cast<unsigned char>(ch))) n += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const std::pair<const char*, InputType> aliases[] = {
      {"integers", InputType::Integers}, {"ints", InputType::Integers}, {"integer", InputType::Integers},
      {"int", InputType::Integers},      {"i", InputType::Integers},    {"floats", InputType::Floats},
      {"float", InputType::Floats},      {"f", InputType::Floats},      {"doubles", InputType::Doubles},
      {"double", InputType::Doubles},    {"d", InputType::Doubles},     {"strings", InputType::Strings},
      {"string", InputType::Strings},    {"str", InputType::Strings},   {"strs", InputType::Strings},
      {"s", InputType::Strings},         {"bytes", InputType::Bytes},   {"byte", InputType::Bytes},
      {"b", InputType::Bytes},
  };
  for (const auto& [alias, type] : aliases)
    if (n == alias) return type;
  return std::nullopt;
}

Config Config::from_env() {
  Config c;
  const char* name = env("CLIPPER_MODEL_NAME");
  const char* version = env("CLIPPER_MODEL_VERSION");
  if (!name) throw ConfigError("the model name is required: set CLIPPER_MODEL_NAME");
  if (!version) throw ConfigError("the model version is required: set CLIPPER_MODEL_VERSION");
  c.name = name;
  c.version = version;
  if (const char* t = env("CLIPPER_INPUT_TYPE")) {
    auto type = parse_input_type(t);
    if (!type)
      throw ConfigError(std::string("unknown CLIPPER_INPUT_TYPE '") + t +
                        "'; allowed: integers (ints integer int i), floats (float f), doubles (double d), "
                        "strings (string str strs s), bytes (byte b)");
    c.input_type = *type;
  }
  if (const char* ip = env("CLIPPER_IP")) c.host = ip;
  if (const char* p = env("CLIPPER_PORT")) c.ports = parse_ports(p);
  c.heartbeat_interval = std::chrono::duration<double>(positive_seconds("CLIPPER_HEARTBEAT_INTERVAL", 1.0));
  c.session_timeout = std::chrono::duration<double>(positive_seconds("CLIPPER_SESSION_TIMEOUT", 10.0));
  if (const char* f = env("CLIPPER_READY_FILE")) c.ready_file = f;
  if (const char* p = env("CLIPPER_METRICS_PORT")) {
    char* stop = nullptr;
    long port = std::strtol(p, &stop, 10);
    if (*stop != '\0' || port < 0 || port > 65535)
      throw ConfigError(std::string("invalid CLIPPER_METRICS_PORT '") + p + "': expected a port, or empty");
    c.metrics_port = static_cast<int>(port);
  }
  if (const char* h = env("CLIPPER_METRICS_HOST")) c.metrics_host = h;
  return c;
}

namespace log {
void info(const std::string& message) { write("INFO", message); }
void warning(const std::string& message) { write("WARNING", message); }
void error(const std::string& message) { write("ERROR", message); }
}  // namespace log

}  // namespace clipper
