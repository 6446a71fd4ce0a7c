#include "batch_codec.h"

#include <cstdint>
#include <cstring>

#include "log_store_util.h"

namespace dtx::log {
namespace {

constexpr uint8_t kVersion = 1;
constexpr uint8_t kGroupVersion = 2;
enum Kind : uint8_t {
  kInsertGlobal = 1,
  kSetGlobalStatus = 2,
  kInsertBranch = 3,
  kSetBranchStatus = 4,
  kAcquireLocks = 5,
  kReleaseLocks = 6,
  kRemoveGlobal = 7,
};

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void Byte(uint8_t b) { out_.push_back(static_cast<char>(b)); }
  void Int(int64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
  }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }

 private:
  std::string& out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool done() const { return pos_ == in_.size(); }
  bool Byte(uint8_t& b) {
    if (in_.size() - pos_ < 1) return false;
    b = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool Int(int64_t& v) {
    if (in_.size() - pos_ < 8) return false;
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += 8;
    v = static_cast<int64_t>(u);
    return true;
  }
  bool U32(uint32_t& v) {
    if (in_.size() - pos_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += 4;
    return true;
  }
  bool View(uint32_t n, std::string_view& v) {
    if (in_.size() - pos_ < n) return false;
    v = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool Str(std::string& s) {
    uint32_t n;
    if (!U32(n) || in_.size() - pos_ < n) return false;
    s.assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <typename E>
  bool Enum(E& e) {
    int64_t v;
    if (!Int(v)) return false;
    e = static_cast<E>(v);
    return true;
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

namespace {
void EncodeTo(std::string& out, const Batch& batch) {
  Writer w(out);
  w.Byte(kVersion);
  for (const auto& op : batch.ops()) {
    std::visit(Overloaded{
                   [&](const Batch::InsertGlobal& o) {
                     const auto& g = o.record;
                     w.Byte(kInsertGlobal);
                     w.Str(g.xid);
                     w.Int(static_cast<int64_t>(g.status));
                     w.Str(g.name);
                     w.Str(g.application);
                     w.Int(g.timeout_ms);
                     w.Int(g.begin_time_ms);
                     w.Str(g.owner_node);
                     w.Str(g.application_data);
                     w.Int(g.updated_time_ms);
                   },
                   [&](const Batch::SetGlobalStatus& o) {
                     w.Byte(kSetGlobalStatus);
                     w.Str(o.xid);
                     w.Int(static_cast<int64_t>(o.status));
                     w.Int(o.updated_time_ms);
                   },
                   [&](const Batch::InsertBranch& o) {
                     const auto& b = o.record;
                     w.Byte(kInsertBranch);
                     w.Int(b.branch_id);
                     w.Str(b.xid);
                     w.Str(b.resource_id);
                     w.Int(static_cast<int64_t>(b.type));
                     w.Int(static_cast<int64_t>(b.status));
                     w.Str(b.lock_keys);
                     w.Str(b.application_data);
                     w.Str(b.client_id);
                     w.Int(b.registered_time_ms);
                   },
                   [&](const Batch::SetBranchStatus& o) {
                     w.Byte(kSetBranchStatus);
                     w.Str(o.xid);
                     w.Int(o.branch_id);
                     w.Int(static_cast<int64_t>(o.status));
                   },
                   [&](const Batch::AcquireLocks& o) {
                     w.Byte(kAcquireLocks);
                     w.Str(o.xid);
                     w.Int(o.branch_id);
                     w.U32(static_cast<uint32_t>(o.row_keys.size()));
                     for (const auto& k : o.row_keys) w.Str(k);
                   },
                   [&](const Batch::ReleaseLocks& o) {
                     w.Byte(kReleaseLocks);
                     w.Str(o.xid);
                   },
                   [&](const Batch::RemoveGlobal& o) {
                     w.Byte(kRemoveGlobal);
                     w.Str(o.xid);
                   },
               },
               op);
  }
}
}  // namespace

std::string EncodeBatch(const Batch& batch) {
  std::string out;
  out.reserve(256);
  EncodeTo(out, batch);
  return out;
}

GroupEncoder::GroupEncoder() { Clear(); }

void GroupEncoder::Clear() {
  out_.clear();
  out_.push_back(static_cast<char>(kGroupVersion));
  count_ = 0;
}

void GroupEncoder::DropLast() {
  out_.resize(last_);
  --count_;
}

void GroupEncoder::Add(const Batch& batch) {
  const size_t at = out_.size();
  last_ = at;
  out_.append(4, '\0');
  EncodeTo(out_, batch);
  const auto n = static_cast<uint32_t>(out_.size() - at - 4);
  for (int i = 0; i < 4; ++i) out_[at + i] = static_cast<char>((n >> (8 * i)) & 0xff);
  ++count_;
}

Result<std::vector<Batch>> DecodeEntry(std::string_view bytes) {
  std::vector<Batch> batches;
  if (bytes.empty() || static_cast<uint8_t>(bytes[0]) != kGroupVersion) {
    auto one = DecodeBatch(bytes);
    if (!one.ok()) return one.status();
    batches.push_back(std::move(*one));
    return batches;
  }
  Reader r(bytes.substr(1));
  while (!r.done()) {
    uint32_t n;
    std::string_view one;
    if (!r.U32(n) || !r.View(n, one)) {
      return Corruption("truncated group entry after " + std::to_string(batches.size()) + " batches");
    }
    auto batch = DecodeBatch(one);
    if (!batch.ok()) {
      return Corruption("batch " + std::to_string(batches.size()) + " of a group entry: " +
                        std::string(batch.status().message()));
    }
    batches.push_back(std::move(*batch));
  }
  return batches;
}

Result<Batch> DecodeBatch(std::string_view bytes) {
  Reader r(bytes);
  uint8_t version;
  if (!r.Byte(version)) return Corruption("empty journal entry");
  if (version != kVersion) return Corruption("journal entry of unknown version " + std::to_string(version));
  Batch batch;
  while (!r.done()) {
    uint8_t kind;
    bool ok = r.Byte(kind);
    switch (ok ? kind : 0) {
      case kInsertGlobal: {
        GlobalRecord g;
        ok = r.Str(g.xid) && r.Enum(g.status) && r.Str(g.name) && r.Str(g.application) && r.Int(g.timeout_ms) &&
             r.Int(g.begin_time_ms) && r.Str(g.owner_node) && r.Str(g.application_data) && r.Int(g.updated_time_ms);
        if (ok) batch.Insert(std::move(g));
        break;
      }
      case kSetGlobalStatus: {
        std::string xid;
        GlobalStatus status;
        int64_t updated;
        ok = r.Str(xid) && r.Enum(status) && r.Int(updated);
        if (ok) batch.SetStatus(std::move(xid), status, updated);
        break;
      }
      case kInsertBranch: {
        BranchRecord b;
        ok = r.Int(b.branch_id) && r.Str(b.xid) && r.Str(b.resource_id) && r.Enum(b.type) && r.Enum(b.status) &&
             r.Str(b.lock_keys) && r.Str(b.application_data) && r.Str(b.client_id) && r.Int(b.registered_time_ms);
        if (ok) batch.Insert(std::move(b));
        break;
      }
      case kSetBranchStatus: {
        std::string xid;
        int64_t id;
        BranchStatus status;
        ok = r.Str(xid) && r.Int(id) && r.Enum(status);
        if (ok) batch.SetStatus(std::move(xid), id, status);
        break;
      }
      case kAcquireLocks: {
        std::string xid;
        int64_t id;
        uint32_t n;
        ok = r.Str(xid) && r.Int(id) && r.U32(n) && n <= bytes.size();
        std::vector<std::string> keys;
        for (uint32_t i = 0; ok && i < n; ++i) ok = r.Str(keys.emplace_back());
        if (ok) batch.Lock(std::move(xid), id, std::move(keys));
        break;
      }
      case kReleaseLocks:
      case kRemoveGlobal: {
        std::string xid;
        ok = r.Str(xid);
        if (ok) kind == kReleaseLocks ? batch.Unlock(std::move(xid)) : batch.Remove(std::move(xid));
        break;
      }
      default:
        return Corruption(ok ? "journal entry with unknown operation " + std::to_string(kind)
                             : std::string("truncated journal entry"));
    }
    if (!ok) return Corruption("truncated journal entry");
  }
  return batch;
}

}  // namespace dtx::log
