// The parameter-server wire protocol: a message is two ZeroMQ frames, a fixed 48-byte header
// (little-endian) and a payload, so a payload can be sent from and received into its buffer
// without being copied into a combined frame first. Every received frame goes through decode(),
// which checks magic, version, type, lengths and that the payload matches the header, before
// anything reads it; range and sender checks against the server's own state follow in the server. A
// bad frame is an error reply and a log line, never a crash or an out-of-bounds write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/error.h"

namespace dtrain::ps {

constexpr uint32_t kMagic = 0x53505444;  // "DTPS"
constexpr uint16_t kVersion = 1;

enum class MsgType : uint16_t {
  kHello = 1,  // worker -> server: JSON job description; reply kHelloOk (JSON)
  kHelloOk = 2,
  kInit = 3,  // chief -> server: params then optimizer state of the server's range
  kInitOk = 4,
  kPush = 5,      // worker -> server: gradients of the server's range; reply kParams
  kParams = 6,    // server -> worker: parameters of the server's range
  kPull = 7,      // worker -> server: reply kParams
  kGetState = 8,  // chief -> server: reply kState (params then optimizer state)
  kState = 9,
  kSum = 10,  // worker -> server 0: doubles to sum over workers; reply kSumResult
  kSumResult = 11,
  kDone = 12,  // worker -> server: finished (the chief's also means: exit when all are)
  kDoneOk = 13,
  kError = 14,  // server -> worker: text
  // The same as kPush and kParams with the floats in the pair's shared-memory segment
  // (paramserver/shm.h) at the header's offset instead of in a payload frame: count says how
  // many, the payload is empty.
  kPushShm = 15,
  kParamsShm = 16,
  // kGetState through the pair's segment, one area at a time (a step checkpoint's gather costs
  // a memcpy, not a transfer): the header's step says which, 0 the parameters, k the optimizer's
  // state slot k - 1; the answer, kStateShm, has copied it into the segment's parameter area
  // (count floats; its step is the optimizer's step count). No payloads.
  kGetStateShm = 17,
  kStateShm = 18,
};
constexpr uint16_t kLastType = uint16_t(MsgType::kStateShm);

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t type = 0;
  uint64_t job_id = 0;
  uint32_t sender = 0;   // worker rank (or server index in replies)
  uint32_t request = 0;  // echoed in the reply: stale replies are recognized and dropped
  uint64_t step = 0;
  uint64_t offset = 0;  // into the flat parameter vector
  uint64_t count = 0;   // payload elements (bytes for JSON and text payloads)
};
static_assert(sizeof(Header) == 48, "the header is 48 bytes on the wire");

class ProtocolError : public Error {
 public:
  using Error::Error;
};

// Bytes per payload element for a type: 4 (floats), 8 (doubles), 1 (JSON, text, none) or 0 (the
// shared-memory types: no payload).
size_t element_size(MsgType t);
const char* type_name(uint16_t t);

struct Message {
  Header h;
  std::string_view payload;  // points into the frame it was decoded from
  MsgType type() const { return static_cast<MsgType>(h.type); }
  const float* floats() const { return reinterpret_cast<const float*>(payload.data()); }
  const double* doubles() const { return reinterpret_cast<const double*>(payload.data()); }
};

// Header and payload in one buffer (tests, and a one-frame message).
std::string encode(const Header& h, const void* payload, size_t payload_bytes);
// Throws ProtocolError saying what is wrong with the frames.
Message decode(const void* header, size_t header_size, const void* payload, size_t payload_size);
// The same for header and payload in one buffer.
Message decode(const void* frame, size_t size);
// Largest payload accepted: a whole model's parameters and Adam state, with room to spare.
constexpr size_t kMaxPayloadBytes = size_t(1) << 31;

}  // namespace dtrain::ps
