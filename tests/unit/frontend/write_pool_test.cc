#include "frontend/write_pool.h"

#include <gtest/gtest.h>

namespace unbd::frontend {
namespace {

// A slot is reusable only once the request and every gRPC slice over it have let go.
TEST(WritePoolTest, SlotReturnsOnlyAfterAllReferencesDrop) {
  WritePool pool;
  ASSERT_TRUE(pool.Init(2, 4096).ok());
  int a = pool.Acquire();
  int b = pool.Acquire();
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_NE(a, b);
  EXPECT_NE(pool.data(a), pool.data(b));
  EXPECT_EQ(pool.Acquire(), -1);
  pool.Ref(a);               // gRPC slice
  pool.Unref(a);             // request completed
  EXPECT_EQ(pool.Acquire(), -1) << "slot reused while gRPC still holds it";
  WritePool::ReleaseCookie(pool.Cookie(a));  // slice released
  EXPECT_EQ(pool.Acquire(), a);
  EXPECT_EQ(pool.outstanding(), 2u);
}

}  // namespace
}  // namespace unbd::frontend
