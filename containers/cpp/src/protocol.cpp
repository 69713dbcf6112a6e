#include "protocol.hpp"

namespace clipper::detail {
namespace {

zmq::message_t u32_frame(std::uint32_t v) { return zmq::message_t(&v, sizeof v); }

std::uint32_t u32(const zmq::message_t& frame, const char* what) {
  if (frame.size() != 4)
    throw ProtocolError(std::string(what) + ": expected a 4-byte u32 frame, got " + std::to_string(frame.size()) +
                        " bytes");
  return load<std::uint32_t>(frame.data());
}

}  // namespace

Message parse_request(const Frames& frames) {
  if (frames.size() < 3) throw ProtocolError("message too short: " + std::to_string(frames.size()) + " frames");
  if (frames[0].size() != 0) throw ProtocolError("missing empty delimiter frame");
  std::uint32_t version = u32(frames[1], "rpc version");
  if (version != kRpcVersion)
    throw ProtocolError("unsupported rpc version " + std::to_string(version) + " (expected 3)");
  Message m;
  std::uint32_t type = u32(frames[2], "message type");
  if (type == kMsgHeartbeat) {
    if (frames.size() != 4)
      throw ProtocolError("heartbeat: expected 4 frames, got " + std::to_string(frames.size()));
    m.kind = Message::Kind::Heartbeat;
    m.heartbeat_type = u32(frames[3], "heartbeat type");
    return m;
  }
  if (type != kMsgContainerContent) throw ProtocolError("unexpected message type " + std::to_string(type));
  if (frames.size() < 5)
    throw ProtocolError("container content: expected at least 5 frames, got " + std::to_string(frames.size()));
  u32(frames[3], "message id");
  std::memcpy(m.msg_id.data(), frames[3].data(), 4);
  std::uint32_t request = u32(frames[4], "request type");
  if (request == kRequestFeedback) {
    m.kind = Message::Kind::Feedback;
    return m;
  }
  if (request != kRequestPredict) throw ProtocolError("unknown request type " + std::to_string(request));
  if (frames.size() < kFirstInputFrame)
    throw ProtocolError("predict: expected at least 7 frames, got " + std::to_string(frames.size()));
  const zmq::message_t& header = frames[6];
  std::uint64_t header_len = frames[5].size() == 8 ? load<std::uint64_t>(frames[5].data()) : ~0ull;
  if (header_len != header.size() || header_len < 16 || header_len % 8)
    throw ProtocolError("predict: bad header length for a " + std::to_string(header.size()) + "-byte header");
  const auto* h = static_cast<const unsigned char*>(header.data());
  m.kind = Message::Kind::Predict;
  m.input_type = load<std::uint64_t>(h);
  std::uint64_t n = load<std::uint64_t>(h + 8);
  std::size_t inputs = frames.size() - kFirstInputFrame;
  if (header_len / 8 != n + 2 || n != inputs)
    throw ProtocolError("predict: header announces " + std::to_string(n) + " inputs, got " +
                        std::to_string(inputs) + " frames");
  for (std::size_t i = 0; i < inputs; ++i)
    if (load<std::uint64_t>(h + 16 + 8 * i) != frames[kFirstInputFrame + i].size())
      throw ProtocolError("predict: input frame sizes differ from the header");
  m.num_inputs = inputs;
  return m;
}

Frames heartbeat() {
  Frames f;
  f.emplace_back();
  f.push_back(u32_frame(kMsgHeartbeat));
  return f;
}

Frames new_container(const std::string& name, const std::string& version, InputType type) {
  Frames f;
  f.emplace_back();
  f.push_back(u32_frame(kMsgNewContainer));
  f.emplace_back(name.data(), name.size());
  f.emplace_back(version.data(), version.size());
  std::string code = std::to_string(static_cast<std::uint32_t>(type));  // decimal ASCII, as Clipper sends it
  f.emplace_back(code.data(), code.size());
  f.push_back(u32_frame(kRpcVersion));
  return f;
}

Frames prediction_response(const std::array<char, 4>& msg_id, const std::vector<std::string>& outputs) {
  std::vector<std::uint64_t> header;
  header.reserve(outputs.size() + 1);
  header.push_back(outputs.size());
  for (const auto& o : outputs) header.push_back(o.size());
  std::uint64_t header_len = 8 * header.size();
  Frames f;
  f.reserve(5 + outputs.size());
  f.emplace_back();
  f.push_back(u32_frame(kMsgContainerContent));
  f.emplace_back(msg_id.data(), msg_id.size());
  f.emplace_back(&header_len, sizeof header_len);
  f.emplace_back(header.data(), 8 * header.size());
  for (const auto& o : outputs) f.emplace_back(o.data(), o.size());
  return f;
}

std::string error_output(std::string_view message) {
  if (message.size() > kMaxErrorBytes) {
    std::size_t cut = kMaxErrorBytes;
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;  // not mid-character
    message = message.substr(0, cut);
  }
  std::string out(kErrorPrefix);
  out += message;
  return out;
}

}  // namespace clipper::detail
