// The container's session loop: heartbeats, registration, prediction batches, reconnection.
//
// Threads: one session thread per frontend port (the caller's thread serves the first) and one keeper
// thread. A batch runs on the session thread that received it (no hand-off on the hot path). While it
// runs, the session releases its socket (`owner` mutex) and the keeper thread, once the batch has run
// for a tick, heartbeats every heartbeat interval on that socket and answers the frontend's heartbeat
// replies (a request to register is answered at once; batches that arrive meanwhile are queued for the
// session thread). So a batch may take longer than the frontend's heartbeat timeout. ZeroMQ sockets
// may move between threads across a full memory barrier: the mutex is that barrier.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unistd.h>

#include "log.hpp"
#include "metrics.hpp"
#include "protocol.hpp"

namespace clipper {
namespace {

using Clock = detail::MetricsClock;
using detail::ContainerMetrics;
using detail::Frames;
using detail::Message;

std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the stop flag is set from a signal handler");

/// Longest single wait, so that a stop request is noticed quickly.
constexpr auto kMaxPoll = std::chrono::milliseconds(100);
/// While a batch runs, the keeper looks at the sessions this often (a quarter of the heartbeat
/// interval if that is shorter).
constexpr auto kKeeperTick = std::chrono::milliseconds(50);
/// After answering a batch of at most kSpinMaxBatch inputs, poll (without sleeping) for the next one
/// for up to kSpin before blocking: a thread that slept must be woken, which costs latency. Only with
/// one session thread.
constexpr std::size_t kSpinMaxBatch = 2;
constexpr auto kSpin = std::chrono::microseconds(200);

std::chrono::milliseconds to_ms(std::chrono::duration<double> d) {
  return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(d));
}

// ---------------------------------------------------------------------------------------- frames I/O

/// Sends every frame; false if the socket would block (only with dontwait).
bool send_frames(zmq::socket_t& sock, Frames& frames, zmq::send_flags flags = zmq::send_flags::none) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto f = i + 1 < frames.size() ? (flags | zmq::send_flags::sndmore) : flags;
    if (!sock.send(frames[i], f)) return false;
  }
  return true;
}

/// Receives one whole message; false on timeout / nothing waiting (dontwait) or an interrupting signal.
/// With `first`, the time its first frame was read goes there.
bool recv_frames(zmq::socket_t& sock, Frames& frames, zmq::recv_flags flags = zmq::recv_flags::none,
                 Clock::time_point* first = nullptr) {
  frames.clear();
  zmq::message_t msg;
  try {
    if (!sock.recv(msg, flags)) return false;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
  if (first) *first = Clock::now();
  bool more = msg.more();
  frames.push_back(std::move(msg));
  while (more) {  // the rest of a message is already here: ZeroMQ delivers messages whole
    zmq::message_t part;
    try {
      if (!sock.recv(part)) continue;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    more = part.more();
    frames.push_back(std::move(part));
  }
  return true;
}

// ---------------------------------------------------------------------------------------- batches

/// A batch that cannot be answered with predictions.
class BatchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Views of a batch's numeric inputs. A frame whose data is not aligned for T is copied into
/// `scratch` (kept between batches, so its capacity is reused); an aligned frame is used in place.
template <class T>
Batch<T> numeric_inputs(const Frames& frames, std::size_t n, InputType type, std::vector<std::byte>& scratch) {
  constexpr std::size_t width = sizeof(T);
  auto misaligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0; };
  std::size_t copy_bytes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& f = frames[detail::kFirstInputFrame + i];
    if (f.size() % width)
      throw BatchError("input " + std::to_string(i) + " has " + std::to_string(f.size()) +
                       " bytes, not a multiple of " + std::to_string(width) + " (" + input_type_name(type) + ")");
    if (misaligned(f.data())) copy_bytes += (f.size() + 7) & ~std::size_t{7};
  }
  if (scratch.size() < copy_bytes) scratch.resize(copy_bytes);  // operator new: 16-byte aligned
  std::size_t offset = 0;
  Batch<T> batch;
  batch.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& f = frames[detail::kFirstInputFrame + i];
    const void* data = f.data();
    if (misaligned(data)) {
      std::memcpy(scratch.data() + offset, data, f.size());
      data = scratch.data() + offset;
      offset += (f.size() + 7) & ~std::size_t{7};
    }
    batch.emplace_back(static_cast<const T*>(data), f.size() / width);
  }
  return batch;
}

std::vector<std::string> predict(Model& model, InputType type, const Frames& frames, std::size_t n,
                                 std::vector<std::byte>& scratch) {
  switch (type) {
    case InputType::Bytes: return model.predict_bytes(numeric_inputs<std::uint8_t>(frames, n, type, scratch));
    case InputType::Integers: return model.predict_ints(numeric_inputs<std::int32_t>(frames, n, type, scratch));
    case InputType::Floats: return model.predict_floats(numeric_inputs<float>(frames, n, type, scratch));
    case InputType::Doubles: return model.predict_doubles(numeric_inputs<double>(frames, n, type, scratch));
    case InputType::Strings: {
      StringBatch batch;
      batch.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        const auto& f = frames[detail::kFirstInputFrame + i];
        batch.emplace_back(static_cast<const char*>(f.data()), f.size());
      }
      return model.predict_strings(batch);
    }
  }
  throw BatchError("unknown input type");
}

/// Runs one batch; a failure (the model threw, returned the wrong number of outputs, or the request's
/// input type is not the container's) becomes one error output per input. With `metrics`, the batch is
/// counted there (`first`, `received`: when its first frame was read and the message parsed).
std::vector<std::string> run_batch(Model& model, InputType type, const Message& msg, const Frames& frames,
                                   std::vector<std::byte>& scratch, ContainerMetrics* metrics,
                                   Clock::time_point first, Clock::time_point received) {
  std::size_t n = msg.num_inputs;
  std::string message;
  Clock::time_point started = metrics ? Clock::now() : Clock::time_point{}, parsed = started;
  try {
    if (msg.input_type != static_cast<std::uint64_t>(type)) {
      std::string got = msg.input_type <= 4 ? input_type_name(static_cast<InputType>(msg.input_type))
                                            : std::to_string(msg.input_type);
      throw BatchError("request input type " + got + " does not match the container's input type " +
                       input_type_name(type));
    }
    if (metrics) parsed = Clock::now();
    auto outputs = predict(model, type, frames, n, scratch);
    if (outputs.size() != n)
      throw BatchError("model returned " + std::to_string(outputs.size()) + " outputs for a batch of " +
                       std::to_string(n));
    if (metrics) metrics->batch(n, false, first, received, started, parsed, Clock::now());
    return outputs;
  } catch (const BatchError& e) {
    message = e.what();
    log::error("batch of " + std::to_string(n) + " failed: " + message);
  } catch (const std::exception& e) {  // a failing model must not kill the container
    message = e.what();
    log::error("batch of " + std::to_string(n) + " failed: model threw: " + message);
  } catch (...) {
    message = "model threw an exception that is not a std::exception";
    log::error("batch of " + std::to_string(n) + " failed: " + message);
  }
  if (metrics) metrics->batch(n, true, first, received, started, parsed, Clock::now());
  return std::vector<std::string>(n, detail::error_output(message));
}

// ---------------------------------------------------------------------------------------- sessions

class Container;

/// One DEALER connection to a frontend. Whichever thread uses `sock` holds `owner`: the session
/// thread, except while its batch runs (`busy`); then the keeper may take it for a moment.
class Session {
 public:
  Session(Container& c, zmq::context_t& ctx, std::string address);
  void run();
  /// On the keeper thread: speak for this session if its batch has run for at least `tick`.
  void keep_alive(Clock::time_point now, Clock::duration tick);

 private:
  bool send(Frames frames, zmq::send_flags flags = zmq::send_flags::none);
  /// Handles one message; returns the answer to send, if any (a batch runs here).
  std::optional<Frames> reply(Frames& frames, Clock::time_point first);
  std::optional<Message> parse(const Frames& frames);
  void spin_for_next();

  Container& c_;
  std::string address_;
  zmq::socket_t sock_;
  std::mutex owner_;
  std::atomic<bool> busy_{false};
  std::atomic<Clock::rep> busy_since_{0};
  Clock::time_point heard_, sent_;  // last message from / to the frontend (under owner_)
  std::deque<std::pair<Frames, Clock::time_point>> pending_;  // batches that arrived while one ran, and
                                                              // when (under owner_)
  std::vector<std::byte> scratch_;  // aligned copies of misaligned inputs
};

class Container {
 public:
  Container(Model& model, const Config& config, ContainerMetrics* metrics)
      : model(model), config(config), metrics(metrics) {
    for (int port : config.ports) addresses.push_back("tcp://" + config.host + ":" + std::to_string(port));
    spin = addresses.size() == 1;
  }

  bool stopped() const { return g_stop.load(std::memory_order_relaxed) || halt.load(); }

  void serve_address(zmq::context_t& ctx, const std::string& address) {
    while (!stopped()) {
      try {
        Session(*this, ctx, address).run();
      } catch (const zmq::error_t& e) {  // e.g. an unusable address: say so, retry after a pause
        log::error("session with " + address + " failed: " + e.what());
        for (int i = 0; i < 10 && !stopped(); ++i) std::this_thread::sleep_for(kMaxPoll);
      }
    }
  }

  void keeper() {
    auto tick = std::min<Clock::duration>(kKeeperTick, std::chrono::duration_cast<Clock::duration>(
                                                           config.heartbeat_interval / 4));
    while (!halt.load()) {
      std::this_thread::sleep_for(tick);
      std::lock_guard lock(sessions_mutex);
      for (Session* s : sessions) s->keep_alive(Clock::now(), tick);
    }
  }

  void add(Session* s) {
    std::lock_guard lock(sessions_mutex);
    sessions.insert(s);
  }
  void remove(Session* s) {
    std::lock_guard lock(sessions_mutex);
    sessions.erase(s);
  }

  /// The answer to a heartbeat reply: the registration when the frontend asks for it.
  std::optional<Frames> reply(const Message& msg, const std::string& address) {
    if (msg.kind == Message::Kind::Heartbeat) {
      if (msg.heartbeat_type == detail::kHeartbeatRequestMetadata) {
        registered(address);
        return detail::new_container(config.name, config.version, config.input_type);
      }
    } else if (!feedback_logged.exchange(true)) {
      log::warning("feedback requests are not supported by this container; ignoring them");
    }
    return std::nullopt;
  }

  void registered(const std::string& address) {
    log::info("registered " + config.name + ":" + config.version + " with " + address);
    if (!config.ready_file.empty() && !ready_touched.exchange(true)) {
      int fd = ::open(config.ready_file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd >= 0)
        ::close(fd);
      else
        log::warning("cannot create CLIPPER_READY_FILE " + config.ready_file + ": " + std::strerror(errno));
    }
  }

  Model& model;
  const Config& config;
  ContainerMetrics* metrics;  // null: no metrics endpoint
  std::vector<std::string> addresses;
  bool spin = true;
  std::mutex predicting;  // one batch at a time, whichever frontend worker sent it
  std::atomic<bool> halt{false};
  std::mutex sessions_mutex;
  std::set<Session*> sessions;
  std::atomic<bool> feedback_logged{false}, ready_touched{false};
};

Session::Session(Container& c, zmq::context_t& ctx, std::string address)
    : c_(c), address_(std::move(address)), sock_(ctx, zmq::socket_type::dealer) {
  sock_.set(zmq::sockopt::linger, 0);
  auto poll = std::min({to_ms(c.config.heartbeat_interval), to_ms(c.config.session_timeout),
                        std::chrono::milliseconds(kMaxPoll)});
  sock_.set(zmq::sockopt::rcvtimeo, static_cast<int>(poll.count()));
  heard_ = sent_ = Clock::now();
}

bool Session::send(Frames frames, zmq::send_flags flags) {
  bool ok = send_frames(sock_, frames, flags);
  if (ok) sent_ = Clock::now();
  return ok;
}

std::optional<Message> Session::parse(const Frames& frames) {
  try {
    return detail::parse_request(frames);
  } catch (const detail::ProtocolError& e) {
    log::error("dropping malformed message from " + address_ + ": " + e.what());
    return std::nullopt;
  }
}

void Session::run() {
  std::unique_lock lock(owner_);
  c_.add(this);
  struct Leave {
    Container& c;
    Session* s;
    ~Leave() { c.remove(s); }
  } leave{c_, this};
  const auto timeout = std::chrono::duration_cast<Clock::duration>(c_.config.session_timeout);
  const auto interval = std::chrono::duration_cast<Clock::duration>(c_.config.heartbeat_interval);
  sock_.connect(address_);
  send(detail::heartbeat());
  bool connected = false;  // like Clipper: no repeated heartbeats before the frontend answers
  Frames frames;
  Clock::time_point first{};
  Clock::time_point* timed = c_.metrics ? &first : nullptr;
  while (!c_.stopped()) {
    auto now = Clock::now();
    if (now - heard_ >= timeout) {
      log::warning("nothing heard from " + address_ + " for " +
                   std::to_string(std::chrono::duration<double>(now - heard_).count()) + " s; reconnecting");
      return;
    }
    if (connected && now - std::max(heard_, sent_) >= interval) send(detail::heartbeat());
    if (!pending_.empty()) {
      frames = std::move(pending_.front().first);
      first = pending_.front().second;
      pending_.pop_front();
    } else {
      if (!recv_frames(sock_, frames, zmq::recv_flags::none, timed)) continue;
      connected = true;
    }
    if (auto answer = reply(frames, first)) {
      std::size_t outputs = answer->size();
      send(std::move(*answer));
      heard_ = Clock::now();  // an answered batch counts as hearing from the frontend
      if (c_.spin && outputs <= 5 + kSpinMaxBatch) spin_for_next();
    } else {
      heard_ = Clock::now();
    }
  }
}

std::optional<Frames> Session::reply(Frames& frames, Clock::time_point first) {
  auto msg = parse(frames);
  if (!msg) return std::nullopt;
  if (msg->kind != Message::Kind::Predict) return c_.reply(*msg, address_);
  Clock::time_point received = c_.metrics ? Clock::now() : Clock::time_point{};
  busy_since_.store(Clock::now().time_since_epoch().count());
  busy_.store(true);
  std::vector<std::string> outputs;
  {
    owner_.unlock();  // the keeper may heartbeat meanwhile; the guard takes the socket back
    struct Relock {
      Session& s;
      ~Relock() {
        s.owner_.lock();
        s.busy_.store(false);
      }
    } relock{*this};
    std::lock_guard predicting(c_.predicting);
    outputs = run_batch(c_.model, c_.config.input_type, *msg, frames, scratch_, c_.metrics, first, received);
  }
  return detail::prediction_response(msg->msg_id, outputs);
}

void Session::spin_for_next() {
  auto deadline = Clock::now() + kSpin;
  while (Clock::now() < deadline)
    if (sock_.get(zmq::sockopt::events) & ZMQ_POLLIN) return;
}

void Session::keep_alive(Clock::time_point now, Clock::duration tick) {
  if (!busy_.load() || now - Clock::time_point(Clock::duration(busy_since_.load())) < tick) return;
  std::unique_lock lock(owner_, std::try_to_lock);
  if (!lock.owns_lock() || !busy_.load()) return;  // the batch is done: the session thread has it back
  try {
    if (now - sent_ >= std::chrono::duration_cast<Clock::duration>(c_.config.heartbeat_interval))
      send(detail::heartbeat(), zmq::send_flags::dontwait);
    Frames frames;
    while (recv_frames(sock_, frames, zmq::recv_flags::dontwait)) {
      heard_ = Clock::now();
      auto msg = parse(frames);
      if (!msg) continue;
      if (msg->kind == Message::Kind::Heartbeat) {
        if (auto answer = c_.reply(*msg, address_)) send(std::move(*answer), zmq::send_flags::dontwait);
      } else {
        pending_.emplace_back(std::move(frames), Clock::now());  // for the session thread, after its batch
      }
    }
  } catch (const zmq::error_t& e) {
    log::warning("cannot speak to " + address_ + " while a batch runs: " + e.what());
  }
}

extern "C" void on_stop_signal(int) { g_stop.store(true); }

}  // namespace

// ---------------------------------------------------------------------------------------- public API

std::vector<std::string> Model::predict_bytes(const Batch<std::uint8_t>&) {
  throw std::runtime_error("this model does not take bytes inputs");
}
std::vector<std::string> Model::predict_ints(const Batch<std::int32_t>&) {
  throw std::runtime_error("this model does not take integers inputs");
}
std::vector<std::string> Model::predict_floats(const Batch<float>&) {
  throw std::runtime_error("this model does not take floats inputs");
}
std::vector<std::string> Model::predict_doubles(const Batch<double>&) {
  throw std::runtime_error("this model does not take doubles inputs");
}
std::vector<std::string> Model::predict_strings(const StringBatch&) {
  throw std::runtime_error("this model does not take strings inputs");
}

void request_stop() { g_stop.store(true); }

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking receive returns at once
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int serve(Model& model, const Config& config) {
  if (config.ports.empty()) throw ConfigError("at least one frontend port is needed");
  std::unique_ptr<ContainerMetrics> metrics;
  std::unique_ptr<detail::MetricsServer> metrics_server;
  if (config.metrics_port >= 0) {
    metrics = std::make_unique<ContainerMetrics>();
    try {
      metrics_server = std::make_unique<detail::MetricsServer>(*metrics, config.metrics_host, config.metrics_port);
    } catch (const std::runtime_error& e) {
      throw ConfigError(e.what());
    }
  }
  Container container(model, config, metrics.get());
  log::info("serving " + config.name + ":" + config.version + " (" + input_type_name(config.input_type) +
            ") to " + config.host + " port(s) " + [&] {
              std::string s;
              for (int p : config.ports) {
                if (!s.empty()) s += ',';
                s += std::to_string(p);
              }
              return s;
            }());
  zmq::context_t ctx;
  std::thread keeper([&] { container.keeper(); });
  std::vector<std::thread> others;
  for (std::size_t i = 1; i < container.addresses.size(); ++i)
    others.emplace_back([&, i] { container.serve_address(ctx, container.addresses[i]); });
  container.serve_address(ctx, container.addresses[0]);
  for (auto& t : others) t.join();
  container.halt.store(true);
  keeper.join();
  log::info("stopped");
  return 0;
}

int run(Model& model) {
  Config config;
  try {
    config = Config::from_env();
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "clipper container: %s\n", e.what());
    return 2;
  }
  install_signal_handlers();
  try {
    return serve(model, config);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "clipper container: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    log::error(std::string("container failed: ") + e.what());
    return 1;
  }
}

}  // namespace clipper
