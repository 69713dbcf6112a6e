// The container's Prometheus endpoint: GET /metrics on CLIPPER_METRICS_HOST:CLIPPER_METRICS_PORT, with
// the clipper_mc_* metrics every container of this project serves (the list, with types and buckets,
// is clipper/model_runtime/metrics.py's MC_METRICS; keep them equal). Batches are counted by the thread
// that runs them, under the lock that serializes batches: single-writer relaxed atomics, no new lock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace clipper::detail {

using MetricsClock = std::chrono::steady_clock;

/// Cumulative-bucket histogram: one writer, any number of readers.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  void render(std::string& out, const char* name) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // bounds_.size() + 1 (the last: +Inf)
  std::atomic<double> sum_{0.0};
};

/// The clipper_mc_* metrics of one container.
class ContainerMetrics {
 public:
  ContainerMetrics();
  /// A batch of `n` answered (`failed`: with errors); the times of its first frame, parsed message,
  /// batch start, checked request (model call) and outputs ready.
  void batch(std::size_t n, bool failed, MetricsClock::time_point first, MetricsClock::time_point received,
             MetricsClock::time_point started, MetricsClock::time_point parsed, MetricsClock::time_point done);
  /// Prometheus text format 0.0.4.
  std::string render() const;

 private:
  std::atomic<std::uint64_t> batches_{0}, inputs_{0}, errors_{0};
  Histogram batch_size_, recv_, queue_, parse_, handle_, end_to_end_;
};

/// GET /metrics on a thread of its own until destroyed. Throws std::runtime_error if it cannot listen.
class MetricsServer {
 public:
  MetricsServer(const ContainerMetrics& metrics, const std::string& host, int port);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

 private:
  void loop();
  void answer(int client);

  const ContainerMetrics& metrics_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace clipper::detail
