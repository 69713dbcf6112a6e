// GET /metrics: the clipper_mc_* metrics in Prometheus text, served by a tiny HTTP responder thread.
#include "metrics.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <netdb.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.hpp"

namespace clipper::detail {
namespace {

const std::vector<double> kClipperLatencyBuckets{5, 10, 20, 35, 50, 75, 100, 150, 200, 250, 300, 400, 500};
const std::vector<double> kClipperRpcBuckets{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
const std::vector<double> kQueueBuckets{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000};
const std::vector<double> kBatchBuckets{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

/// Only the thread running batches writes: a relaxed load and store, no locked instruction.
void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

/// A float as Python's repr() writes it ("5.0", "0.1", "+Inf"), so every container's labels are equal.
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

double ms(MetricsClock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double value) {
  auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  bump(counts_[i]);
  sum_.store(sum_.load(std::memory_order_relaxed) + value, std::memory_order_relaxed);
}

void Histogram::render(std::string& out, const char* name) const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    out += name;
    out += "_bucket{le=\"" + number(i < bounds_.size() ? bounds_[i] : INFINITY) + "\"} " + std::to_string(total) + "\n";
  }
  out += std::string(name) + "_sum " + number(sum_.load(std::memory_order_relaxed)) + "\n";
  out += std::string(name) + "_count " + std::to_string(total) + "\n";
}

ContainerMetrics::ContainerMetrics()
    : batch_size_(kBatchBuckets),
      recv_(kClipperRpcBuckets),
      queue_(kQueueBuckets),
      parse_(kClipperRpcBuckets),
      handle_(kClipperLatencyBuckets),
      end_to_end_(kClipperLatencyBuckets) {}

void ContainerMetrics::batch(std::size_t n, bool failed, MetricsClock::time_point first,
                             MetricsClock::time_point received, MetricsClock::time_point started,
                             MetricsClock::time_point parsed, MetricsClock::time_point done) {
  bump(batches_);
  bump(inputs_, n);
  if (failed) bump(errors_);
  batch_size_.observe(static_cast<double>(n));
  recv_.observe(ms(received - first));
  queue_.observe(ms(started - received));
  if (!failed) {
    parse_.observe(ms(parsed - started));
    handle_.observe(ms(done - parsed));
  }
  end_to_end_.observe(ms(done - first));
}

std::string ContainerMetrics::render() const {
  std::string out;
  out.reserve(8192);
  auto counter = [&](const char* name, const char* help, const std::atomic<std::uint64_t>& v) {
    family(out, name, "counter", help);
    out += std::string(name) + ' ' + std::to_string(v.load(std::memory_order_relaxed)) + '\n';
  };
  auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    family(out, name, "histogram", help);
    h.render(out, name);
  };
  counter("clipper_mc_pred_total", "Prediction requests (batches) answered, failed ones included.", batches_);
  counter("clipper_mc_pred_inputs_total", "Inputs answered (predictions), failed batches included.", inputs_);
  counter("clipper_mc_pred_errors_total", "Prediction requests (batches) answered with errors.", errors_);
  histogram("clipper_mc_pred_batch_size", "Inputs per prediction request.", batch_size_);
  histogram("clipper_mc_recv_time_ms", "The time in ms takes to receive RPC call: first frame to request parsed.",
            recv_);
  histogram("clipper_mc_queue_wait_ms", "The time in ms a received request waited before its batch started.",
            queue_);
  histogram("clipper_mc_parse_time_ms", "The time in ms takes to parse RPC call: checking the request.", parse_);
  histogram("clipper_mc_handle_time_ms", "The time in ms takes to make prediction (successful batches).", handle_);
  histogram("clipper_mc_end_to_end_latency_ms", "The time in ms takes from receive RPC call to send off prediction.",
            end_to_end_);
  return out;
}

MetricsServer::MetricsServer(const ContainerMetrics& metrics, const std::string& host, int port)
    : metrics_(metrics) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string where = host + ":" + std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    throw std::runtime_error("cannot serve metrics on " + where + ": " + ::gai_strerror(rc));
  int error = 0;
  for (addrinfo* a = found; a && fd_ < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      fd_ = fd;
    } else {
      error = errno;
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (fd_ < 0) throw std::runtime_error("cannot serve metrics on " + where + ": " + std::strerror(error));
  log::info("serving metrics on http://" + where + "/metrics");
  thread_ = std::thread([this] { loop(); });
}

MetricsServer::~MetricsServer() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
}

void MetricsServer::loop() {
  while (!stop_.load()) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    try {
      answer(client);
    } catch (const std::exception& e) {
      log::warning(std::string("metrics request failed: ") + e.what());
    }
    ::close(client);
  }
}

void MetricsServer::answer(int client) {
  timeval timeout{2, 0};  // a client that sends nothing does not hold the endpoint for long
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  std::string request;
  char buf[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
    ssize_t got = ::recv(client, buf, sizeof buf, 0);
    if (got <= 0) break;
    request.append(buf, static_cast<std::size_t>(got));
  }
  std::string line = request.substr(0, request.find("\r\n"));
  auto sp1 = line.find(' ');
  auto sp2 = line.find(' ', sp1 == std::string::npos ? sp1 : sp1 + 1);
  std::string method = line.substr(0, sp1);
  std::string target = sp1 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string path = target.substr(0, target.find('?'));
  int status = 200;
  std::string type = "text/plain; version=0.0.4; charset=utf-8", body;
  if (sp1 == std::string::npos || sp2 == std::string::npos) {
    status = 400, type = "text/plain; charset=utf-8", body = "bad request\n";
  } else if (path != "/metrics") {
    status = 404, type = "text/plain; charset=utf-8", body = "not found: GET /metrics\n";
  } else if (method != "GET") {
    status = 405, type = "text/plain; charset=utf-8", body = "method not allowed: GET /metrics\n";
  } else {
    body = metrics_.render();
  }
  const char* reason = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
                                                                                          : "Bad Request";
  std::string response = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + type +
                         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                         body;
  std::size_t off = 0;
  while (off < response.size()) {
    ssize_t sent = ::send(client, response.data() + off, response.size() - off, MSG_NOSIGNAL);
    if (sent <= 0) return;
    off += static_cast<std::size_t>(sent);
  }
}

}  // namespace clipper::detail
