// The wire protocol: round trips, a fuzz test of the decoder, and the sharding balance.
#include <gtest/gtest.h>

#include <cstring>

#include "paramserver/protocol.h"
#include "paramserver/sharding.h"
#include "runtime/rng.h"

namespace dtrain::ps {
namespace {

TEST(Protocol, RoundTrip) {
  Header h;
  h.type = uint16_t(MsgType::kPush);
  h.job_id = 77;
  h.sender = 3;
  h.request = 9;
  h.step = 12;
  h.offset = 100;
  h.count = 3;
  const float g[3] = {1.5f, -2.0f, 3.25f};
  const std::string f = encode(h, g, sizeof(g));
  Message m = decode(f.data(), f.size());
  EXPECT_EQ(m.type(), MsgType::kPush);
  EXPECT_EQ(m.h.job_id, 77u);
  EXPECT_EQ(m.h.sender, 3u);
  EXPECT_EQ(m.h.request, 9u);
  EXPECT_EQ(m.h.offset, 100u);
  EXPECT_EQ(m.floats()[2], 3.25f);
}

TEST(Protocol, RejectsEachKindOfBadFrame) {
  Header h;
  h.type = uint16_t(MsgType::kPush);
  h.count = 2;
  const float g[2] = {1, 2};
  std::string good = encode(h, g, sizeof(g));
  EXPECT_THROW(decode(good.data(), 10), ProtocolError);               // shorter than a header
  EXPECT_THROW(decode(good.data(), good.size() - 1), ProtocolError);  // truncated payload
  std::string longer = good + "xxxx";
  EXPECT_THROW(decode(longer.data(), longer.size()), ProtocolError);  // payload too long
  std::string bad = good;
  bad[0] ^= 1;
  EXPECT_THROW(decode(bad.data(), bad.size()), ProtocolError);  // magic
  bad = good;
  bad[4] = 9;
  EXPECT_THROW(decode(bad.data(), bad.size()), ProtocolError);  // version
  bad = good;
  bad[6] = 99;
  EXPECT_THROW(decode(bad.data(), bad.size()), ProtocolError);  // type
  Header huge = h;
  huge.count = uint64_t(1) << 62;  // count * 4 overflows
  std::string hf = encode(huge, g, sizeof(g));
  EXPECT_THROW(decode(hf.data(), hf.size()), ProtocolError);
  // The shared-memory types carry no payload; their count is bounded all the same.
  for (MsgType t : {MsgType::kPushShm, MsgType::kParamsShm}) {
    Header s = h;
    s.type = uint16_t(t);
    const std::string empty = encode(s, nullptr, 0);
    EXPECT_EQ(decode(empty.data(), empty.size()).h.count, 2u);
    const std::string with_payload = encode(s, g, sizeof(g));
    EXPECT_THROW(decode(with_payload.data(), with_payload.size()), ProtocolError);
    s.count = uint64_t(1) << 62;
    const std::string too_many = encode(s, nullptr, 0);
    EXPECT_THROW(decode(too_many.data(), too_many.size()), ProtocolError);
  }
  bad = good;
  bad[6] = 17;  // one past the last type
  EXPECT_THROW(decode(bad.data(), bad.size()), ProtocolError);
}

TEST(Protocol, FuzzDecoderNeverCrashes) {
  Rng rng(1);
  Header h;
  h.type = uint16_t(MsgType::kParams);
  h.count = 16;
  std::vector<float> payload(16, 1.0f);
  const std::string good = encode(h, payload.data(), payload.size() * 4);
  size_t accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string f;
    switch (i % 3) {
      case 0:  // random bytes of random length
        f.resize(rng.below(200));
        for (auto& c : f) c = char(rng.below(256));
        break;
      case 1:  // a good frame, truncated
        f = good.substr(0, rng.below(good.size() + 1));
        break;
      default:  // a good frame with a few random bytes flipped (header fields included)
        f = good;
        for (int k = 0; k < 3; ++k) f[rng.below(f.size())] = char(rng.below(256));
    }
    try {
      Message m = decode(f.data(), f.size());
      // Whatever is accepted is self-consistent: the payload lies inside the frame.
      ASSERT_EQ(m.payload.size(), m.h.count * element_size(m.type()));
      ASSERT_LE(m.payload.data() + m.payload.size(), f.data() + f.size());
      ++accepted;
    } catch (const ProtocolError&) {
    }
  }
  EXPECT_GT(accepted, 0u);
}

TEST(Sharding, BalancedContiguousAndComplete) {
  for (size_t servers : {1, 2, 3, 7}) {
    auto r = shard_ranges(266610, servers);
    ASSERT_EQ(r.size(), servers);
    size_t off = 0, lo = SIZE_MAX, hi = 0;
    for (auto& x : r) {
      EXPECT_EQ(x.offset, off);
      off += x.count;
      lo = std::min(lo, x.count);
      hi = std::max(hi, x.count);
    }
    EXPECT_EQ(off, 266610u);
    EXPECT_LE(hi - lo, 1u) << servers << " servers";
  }
  // The first layer's 235,200 weights are split, not given whole to one server.
  auto two = shard_ranges(266610, 2);
  EXPECT_LT(two[0].count, 235200u);
  EXPECT_EQ(shard_ranges(0, 2)[1].count, 0u);
}

}  // namespace
}  // namespace dtrain::ps
