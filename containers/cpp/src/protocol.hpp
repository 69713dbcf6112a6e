// Clipper RPC v3 codec for the container side (docs/protocol.md, Part 1). Internal to the library.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "clipper/model.hpp"

static_assert(std::endian::native == std::endian::little,
              "Clipper RPC v3 is little-endian; this library reads frames in host order");

namespace clipper::detail {

using Frames = std::vector<zmq::message_t>;

inline constexpr std::uint32_t kRpcVersion = 3;
inline constexpr std::uint32_t kMsgNewContainer = 0;
inline constexpr std::uint32_t kMsgContainerContent = 1;
inline constexpr std::uint32_t kMsgHeartbeat = 2;
inline constexpr std::uint32_t kHeartbeatRequestMetadata = 1;
inline constexpr std::uint32_t kRequestPredict = 0;
inline constexpr std::uint32_t kRequestFeedback = 1;

/// Prefix of an output that reports a failed batch, and the longest message after it (bytes).
inline constexpr std::string_view kErrorPrefix{"\0error:", 7};
inline constexpr std::size_t kMaxErrorBytes = 500;

/// A frontend message that does not follow Clipper RPC v3.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A parsed frontend -> container message; a predict request's inputs are frames 7.. of the message.
struct Message {
  enum class Kind { Heartbeat, Predict, Feedback } kind = Kind::Heartbeat;
  std::uint32_t heartbeat_type = 0;
  std::array<char, 4> msg_id{};    // echoed raw
  std::uint64_t input_type = 0;    // as the request announced it
  std::size_t num_inputs = 0;
};
inline constexpr std::size_t kFirstInputFrame = 7;

/// Unaligned-safe little-endian reads.
template <class T>
T load(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Parses a frontend message (empty delimiter, u32 version, u32 type, ...); throws ProtocolError.
Message parse_request(const Frames& frames);

/// Container -> frontend messages.
Frames heartbeat();
Frames new_container(const std::string& name, const std::string& version, InputType type);
Frames prediction_response(const std::array<char, 4>& msg_id, const std::vector<std::string>& outputs);

/// "\0error:" + message, cut to kMaxErrorBytes on a UTF-8 character boundary.
std::string error_output(std::string_view message);

}  // namespace clipper::detail
