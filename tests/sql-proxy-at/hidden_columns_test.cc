// Stripping the engine's hidden RETURNING columns from server messages, byte for byte.
#include <gtest/gtest.h>

#include <cstdint>

#include "dtx/at/hidden_columns.h"

namespace dtx::at {
namespace {

void Int16(std::string& b, int v) { b += char((v >> 8) & 0xFF), b += char(v & 0xFF); }
void Int32(std::string& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b += char((v >> s) & 0xFF);
}
std::string DataRow(const std::vector<std::optional<std::string>>& values) {
  std::string b;
  Int16(b, static_cast<int>(values.size()));
  for (const auto& v : values) {
    if (!v) {
      Int32(b, 0xFFFFFFFFu);
      continue;
    }
    Int32(b, static_cast<uint32_t>(v->size()));
    b += *v;
  }
  return b;
}
std::string RowDescription(const std::vector<std::string>& names) {
  std::string b;
  Int16(b, static_cast<int>(names.size()));
  for (const auto& n : names) {
    b += n;
    b += '\0';
    b += std::string(18, '\x01');
  }
  return b;
}

TEST(HiddenColumns, DropsTrailingColumnsOfDataRowAndRowDescription) {
  auto d = DropTrailingColumns('D', DataRow({"1", std::nullopt, "[\"1\"]", "{\"id\":1}"}), 2);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, DataRow({"1", std::nullopt}));
  auto t = DropTrailingColumns('T', RowDescription({"id", "t", "dtx_pk", "dtx_image"}), 2);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, RowDescription({"id", "t"}));
  auto all = DropTrailingColumns('D', DataRow({"[\"1\"]", "{}"}), 2);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, DataRow({}));
  auto none = DropTrailingColumns('D', DataRow({"a", std::nullopt}), 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, DataRow({"a", std::nullopt}));
  auto empty = TrailingValues(DataRow({"a"}), 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(HiddenColumns, ReadsTrailingValues) {
  auto v = TrailingValues(DataRow({"x", "[\"7\"]", std::nullopt}), 2);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, (std::vector<std::optional<std::string>>{"[\"7\"]", std::nullopt}));
}

TEST(HiddenColumns, MalformedBodiesAreErrorsNotCrashes) {
  std::string good = DataRow({"abc", "de"});
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_FALSE(DropTrailingColumns('D', good.substr(0, cut), 1).ok()) << cut;
  }
  std::string huge = good;
  huge[5] = '\x7f';  // a length beyond the body
  EXPECT_FALSE(TrailingValues(huge, 1).ok());
  EXPECT_FALSE(DropTrailingColumns('D', good, 3).ok());
  EXPECT_FALSE(DropTrailingColumns('X', good, 1).ok());
  EXPECT_FALSE(DropTrailingColumns('T', RowDescription({"a"}).substr(0, 5), 1).ok());
}

}  // namespace
}  // namespace dtx::at
