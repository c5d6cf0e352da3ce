// Shared-memory payloads between a worker and a ps task on the same machine. Over loopback TCP a
// step's 1 MB push and 1 MB answer are copied through the kernel twice each way, and on a busy
// machine that kernel time was the larger part of a ps job's CPU (1 ps + 2 workers, one epoch:
// 2.2 s system vs 1.5 s user). So each worker creates one segment per ps task (in /dev/shm, mode
// 0600) holding a gradient area and a parameter area for that server's range; the ZeroMQ
// messages stay, but kPushShm and kParamsShm carry only the header and say "the payload is in
// your segment at this offset". Who writes an area when is fixed by the protocol: a worker writes
// a gradient piece only after the server answered its previous push of that piece, and the
// server writes a worker's parameter area only right before answering that worker, so reads
// and writes never overlap.
//
// The worker offers the segment's name and a random nonce in its hello; a server that can open
// it (same machine, same /dev/shm) and finds the nonce and size it expects maps it and says so,
// otherwise the pair uses TCP payloads. The worker unlinks the name once start-up is over (the
// mappings stay), so nothing is left in /dev/shm even if a process is killed later.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace dtrain::ps {

class ShmSegment {
 public:
  // Worker side: a new segment for `count` floats of gradient and `count` of parameters.
  static std::unique_ptr<ShmSegment> create(const std::string& name, size_t count, uint64_t nonce);
  // Server side: maps an existing segment; null (and *why) when it is not there or not the one
  // expected.
  static std::unique_ptr<ShmSegment> open(const std::string& name, size_t count, uint64_t nonce,
                                          std::string* why);
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  // Removes the name (the mapping stays). The creator does this once the server has mapped it.
  void unlink();
  float* grads() { return grads_; }
  float* params() { return params_; }
  size_t count() const { return count_; }
  const std::string& name() const { return name_; }
  uint64_t nonce() const { return nonce_; }

 private:
  ShmSegment(std::string name, void* base, size_t bytes, size_t count, uint64_t nonce, bool owner);
  std::string name_;
  void* base_;
  size_t bytes_, count_;
  uint64_t nonce_;
  bool linked_;
  float* grads_;
  float* params_;
};

}  // namespace dtrain::ps
