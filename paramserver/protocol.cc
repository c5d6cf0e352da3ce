#include "paramserver/protocol.h"

#include <cstring>

namespace dtrain::ps {

size_t element_size(MsgType t) {
  switch (t) {
    case MsgType::kInit:
    case MsgType::kPush:
    case MsgType::kParams:
    case MsgType::kState:
      return 4;
    case MsgType::kSum:
    case MsgType::kSumResult:
      return 8;
    case MsgType::kPushShm:
    case MsgType::kParamsShm:
    case MsgType::kGetStateShm:
    case MsgType::kStateShm:
      return 0;
    default:
      return 1;
  }
}

const char* type_name(uint16_t t) {
  static const char* names[] = {"?",        "hello",      "hello_ok",      "init",      "init_ok",
                                "push",     "params",     "pull",          "get_state", "state",
                                "sum",      "sum_result", "done",          "done_ok",   "error",
                                "push_shm", "params_shm", "get_state_shm", "state_shm"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

std::string encode(const Header& h, const void* payload, size_t payload_bytes) {
  std::string s(sizeof(Header) + payload_bytes, '\0');
  std::memcpy(s.data(), &h, sizeof(Header));
  if (payload_bytes) std::memcpy(s.data() + sizeof(Header), payload, payload_bytes);
  return s;
}

Message decode(const void* frame, size_t size) {
  if (size < sizeof(Header))
    throw ProtocolError(detail::cat("frame of ", size, " bytes is shorter than the ",
                                    sizeof(Header), "-byte header"));
  return decode(frame, sizeof(Header), static_cast<const char*>(frame) + sizeof(Header),
                size - sizeof(Header));
}

Message decode(const void* header, size_t header_size, const void* payload_ptr,
               size_t payload_size) {
  if (header_size != sizeof(Header))
    throw ProtocolError(
        detail::cat("header frame of ", header_size, " bytes, expected ", sizeof(Header)));
  Message m;
  std::memcpy(&m.h, header, sizeof(Header));
  if (m.h.magic != kMagic)
    throw ProtocolError(detail::cat("bad magic 0x", std::hex, m.h.magic, " (not a dtrain frame)"));
  if (m.h.version != kVersion)
    throw ProtocolError(
        detail::cat("protocol version ", m.h.version, ", this build speaks ", kVersion));
  if (m.h.type < uint16_t(MsgType::kHello) || m.h.type > kLastType)
    throw ProtocolError(detail::cat("unknown message type ", m.h.type));
  const size_t payload = payload_size;
  if (payload > kMaxPayloadBytes)
    throw ProtocolError(detail::cat("payload of ", payload, " bytes exceeds the limit"));
  const size_t es = element_size(m.type());
  if (es == 0) {
    if (payload != 0)
      throw ProtocolError(detail::cat(type_name(m.h.type), " frame with a ", payload,
                                      "-byte payload (its floats travel in shared memory)"));
    if (m.h.count > kMaxPayloadBytes / sizeof(float))
      throw ProtocolError(
          detail::cat(type_name(m.h.type), " frame: count ", m.h.count, " exceeds the limit"));
  } else if (m.h.count > kMaxPayloadBytes / es || m.h.count * es != payload)
    throw ProtocolError(detail::cat(type_name(m.h.type), " frame: header says ", m.h.count,
                                    " elements of ", es, " bytes, payload has ", payload,
                                    " bytes"));
  if (m.h.offset > (uint64_t(1) << 40))
    throw ProtocolError(detail::cat("offset ", m.h.offset, " is out of any model's range"));
  m.payload = std::string_view(static_cast<const char*>(payload_ptr), payload);
  return m;
}

}  // namespace dtrain::ps
