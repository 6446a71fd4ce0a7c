// The catalog cache: entries age out, and an aged entry is looked up again by one caller while the
// others keep the old description.
#include <gtest/gtest.h>

#include <thread>

#include "dtx/at/catalog.h"

namespace dtx::at {
namespace {

using namespace std::chrono_literals;

// The lookup's one row as PostgreSQL answers it (see Catalog::LookupQuery).
QueryResult Row(bool side_effects, std::string kind = "r") {
  QueryResult r;
  r.rows.push_back({"public", "acct", kind, R"(["id"])", R"(["id","balance"])", "[]", "false",
                    side_effects ? "true" : "false"});
  return r;
}

const TableRef kAcct{"", "acct"};

TEST(Catalog, AnAgedEntryIsLookedUpOnceWhileTheOthersKeepTheOldOne) {
  Catalog catalog(20ms, 60s);
  EXPECT_FALSE(catalog.Find(kAcct));  // never looked up
  ASSERT_TRUE(catalog.Store(kAcct, Row(false)).ok());
  auto fresh = catalog.Find(kAcct);
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->primary_key, std::vector<std::string>{"id"});
  EXPECT_FALSE(fresh->side_effects);

  std::this_thread::sleep_for(40ms);
  EXPECT_FALSE(catalog.Find(kAcct)) << "the first caller after the entry aged looks the table up";
  for (int i = 0; i < 3; ++i) {
    auto old = catalog.Find(kAcct);
    ASSERT_TRUE(old) << "the others keep the old description meanwhile";
    EXPECT_FALSE(old->side_effects);
  }
  // The lookup finds a trigger created meanwhile.
  ASSERT_TRUE(catalog.Store(kAcct, Row(true)).ok());
  auto renewed = catalog.Find(kAcct);
  ASSERT_TRUE(renewed);
  EXPECT_TRUE(renewed->side_effects);
}

TEST(Catalog, ALookupThatNeverEndsIsTakenOverOnceItsClaimRunsOut) {
  Catalog catalog(10ms, 50ms);
  ASSERT_TRUE(catalog.Store(kAcct, Row(false)).ok());
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(catalog.Find(kAcct));  // claimed by a caller that never stores
  std::this_thread::sleep_for(80ms);
  EXPECT_FALSE(catalog.Find(kAcct)) << "after the claim, the next caller looks the table up";
}

TEST(Catalog, ATableThatIsGoneOrNoLongerATableIsForgotten) {
  Catalog catalog;
  ASSERT_TRUE(catalog.Store(kAcct, Row(false)).ok());
  ASSERT_TRUE(catalog.Find(kAcct));
  auto gone = catalog.Store(kAcct, QueryResult{});
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(SqlStateOf(gone.status()), "42P01");
  EXPECT_FALSE(catalog.Find(kAcct));

  ASSERT_TRUE(catalog.Store(kAcct, Row(false)).ok());
  auto view = catalog.Store(kAcct, Row(false, "v"));
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(SqlStateOf(view.status()), "0A000");
  EXPECT_FALSE(catalog.Find(kAcct));
}

}  // namespace
}  // namespace dtx::at
