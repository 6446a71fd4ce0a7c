#include "dtx/log/fault_injection.h"

#include <sqlite3.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace dtx::log {

// ---- FaultInjectionLogStore ----

void FaultInjectionLogStore::FailWritesFrom(int n, Status error) {
  std::lock_guard lock(mu_);
  countdown_ = n;
  error_ = std::move(error);
  failing_ = false;
}

void FaultInjectionLogStore::Heal() {
  std::lock_guard lock(mu_);
  countdown_ = 0;
  failing_ = false;
}

void FaultInjectionLogStore::Write(Batch batch, WriteCallback done) {
  Status fail;
  {
    std::lock_guard lock(mu_);
    if (countdown_ > 0 && --countdown_ == 0) failing_ = true;
    if (failing_) fail = error_;
  }
  if (!fail.ok()) return done(WriteResult{fail, std::nullopt});
  inner_->Write(std::move(batch), std::move(done));
}

// ---- SqliteFaultVfs ----

namespace {

struct FaultFile {
  sqlite3_file base;  // must come first: SQLite sees a FaultFile as a sqlite3_file
  sqlite3_file* real;
  std::string path;
};

}  // namespace

struct SqliteFaultVfs::Impl {
  sqlite3_vfs vfs{};
  sqlite3_vfs* real = nullptr;
  sqlite3_io_methods methods{};

  std::mutex mu;
  int write_countdown = 0;
  bool writes_failing = false;
  bool disk_full = false;
  bool syncs_failing = false;
  bool frozen = false;
  // Per file: the bytes to put back to return to the last fsync, newest last, and its size then.
  struct Undo {
    sqlite3_int64 offset;
    std::string bytes;
  };
  struct Tracked {
    sqlite3_int64 synced_size = -1;  // -1: not known yet (size at first touch)
    std::vector<Undo> undo;
    bool existed_at_sync = true;
  };
  std::map<std::string, Tracked> files;

  static Impl& Of(sqlite3_vfs* v) { return *static_cast<Impl*>(v->pAppData); }
  static Impl& Get() { return *SqliteFaultVfs::Instance().impl_; }
  static FaultFile& F(sqlite3_file* f) { return *reinterpret_cast<FaultFile*>(f); }

  static sqlite3_int64 SizeOf(sqlite3_file* real) {
    sqlite3_int64 size = 0;
    real->pMethods->xFileSize(real, &size);
    return size;
  }

  // Saves what [offset, offset+n) holds now, so DropUnsynced can put it back.
  void Remember(FaultFile& f, sqlite3_int64 offset, sqlite3_int64 n) {
    auto& t = files[f.path];
    const sqlite3_int64 size = SizeOf(f.real);
    if (t.synced_size < 0) t.synced_size = size;
    if (offset >= size || n <= 0) return;
    const sqlite3_int64 len = std::min(n, size - offset);
    Undo u{offset, std::string(static_cast<size_t>(len), '\0')};
    f.real->pMethods->xRead(f.real, u.bytes.data(), static_cast<int>(len), offset);
    t.undo.push_back(std::move(u));
  }

  static int Close(sqlite3_file* file) {
    auto& f = F(file);
    int rc = f.real->pMethods ? f.real->pMethods->xClose(f.real) : SQLITE_OK;
    sqlite3_free(f.real);
    f.path.~basic_string();
    return rc;
  }
  static int Read(sqlite3_file* file, void* buf, int n, sqlite3_int64 off) {
    auto& f = F(file);
    return f.real->pMethods->xRead(f.real, buf, n, off);
  }
  static int Write(sqlite3_file* file, const void* buf, int n, sqlite3_int64 off) {
    auto& f = F(file);
    auto& im = Get();
    {
      std::lock_guard lock(im.mu);
      if (im.frozen) return SQLITE_OK;
      if (im.write_countdown > 0 && --im.write_countdown == 0) im.writes_failing = true;
      if (im.writes_failing) return im.disk_full ? SQLITE_FULL : SQLITE_IOERR_WRITE;
      im.Remember(f, off, n);
    }
    return f.real->pMethods->xWrite(f.real, buf, n, off);
  }
  static int Truncate(sqlite3_file* file, sqlite3_int64 size) {
    auto& f = F(file);
    auto& im = Get();
    {
      std::lock_guard lock(im.mu);
      if (im.frozen) return SQLITE_OK;
      im.Remember(f, size, SizeOf(f.real) - size);
    }
    return f.real->pMethods->xTruncate(f.real, size);
  }
  static int Sync(sqlite3_file* file, int flags) {
    auto& f = F(file);
    auto& im = Get();
    {
      std::lock_guard lock(im.mu);
      if (im.frozen) return SQLITE_OK;
      if (im.syncs_failing) return SQLITE_IOERR_FSYNC;
    }
    int rc = f.real->pMethods->xSync(f.real, flags);
    if (rc == SQLITE_OK) {
      std::lock_guard lock(im.mu);
      auto& t = im.files[f.path];
      t.undo.clear();
      t.synced_size = SizeOf(f.real);
      t.existed_at_sync = true;
    }
    return rc;
  }
  static int FileSize(sqlite3_file* file, sqlite3_int64* size) { return F(file).real->pMethods->xFileSize(F(file).real, size); }
  static int Lock(sqlite3_file* file, int l) { return F(file).real->pMethods->xLock(F(file).real, l); }
  static int Unlock(sqlite3_file* file, int l) { return F(file).real->pMethods->xUnlock(F(file).real, l); }
  static int CheckReservedLock(sqlite3_file* file, int* out) {
    return F(file).real->pMethods->xCheckReservedLock(F(file).real, out);
  }
  static int FileControl(sqlite3_file* file, int op, void* arg) {
    return F(file).real->pMethods->xFileControl(F(file).real, op, arg);
  }
  static int SectorSize(sqlite3_file* file) { return F(file).real->pMethods->xSectorSize(F(file).real); }
  static int DeviceCharacteristics(sqlite3_file* file) {
    return F(file).real->pMethods->xDeviceCharacteristics(F(file).real);
  }
  static int ShmMap(sqlite3_file* file, int page, int size, int extend, void volatile** out) {
    return F(file).real->pMethods->xShmMap(F(file).real, page, size, extend, out);
  }
  static int ShmLock(sqlite3_file* file, int offset, int n, int flags) {
    return F(file).real->pMethods->xShmLock(F(file).real, offset, n, flags);
  }
  static void ShmBarrier(sqlite3_file* file) { F(file).real->pMethods->xShmBarrier(F(file).real); }
  static int ShmUnmap(sqlite3_file* file, int del) { return F(file).real->pMethods->xShmUnmap(F(file).real, del); }

  static int Open(sqlite3_vfs* v, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
    auto& im = Of(v);
    auto& f = F(file);
    f.base.pMethods = nullptr;
    f.real = static_cast<sqlite3_file*>(sqlite3_malloc(im.real->szOsFile));
    if (!f.real) return SQLITE_NOMEM;
    std::memset(f.real, 0, static_cast<size_t>(im.real->szOsFile));
    int rc = im.real->xOpen(im.real, name, f.real, flags, out_flags);
    if (rc != SQLITE_OK) {
      sqlite3_free(f.real);
      return rc;
    }
    new (&f.path) std::string(name ? name : "");
    f.base.pMethods = &im.methods;
    return SQLITE_OK;
  }
  static int Delete(sqlite3_vfs* v, const char* name, int sync_dir) {
    auto& im = Of(v);
    {
      std::lock_guard lock(im.mu);
      if (im.frozen) return SQLITE_OK;
      // Deleting is not undone: SQLite deletes only files whose contents it no longer needs.
      im.files.erase(name);
    }
    return im.real->xDelete(im.real, name, sync_dir);
  }
  static int Access(sqlite3_vfs* v, const char* name, int flags, int* out) {
    return Of(v).real->xAccess(Of(v).real, name, flags, out);
  }
  static int FullPathname(sqlite3_vfs* v, const char* name, int n, char* out) {
    return Of(v).real->xFullPathname(Of(v).real, name, n, out);
  }
  static int Randomness(sqlite3_vfs* v, int n, char* out) { return Of(v).real->xRandomness(Of(v).real, n, out); }
  static int Sleep(sqlite3_vfs* v, int us) { return Of(v).real->xSleep(Of(v).real, us); }
  static int CurrentTime(sqlite3_vfs* v, double* out) { return Of(v).real->xCurrentTime(Of(v).real, out); }
  static int GetLastError(sqlite3_vfs* v, int n, char* out) {
    return Of(v).real->xGetLastError ? Of(v).real->xGetLastError(Of(v).real, n, out) : 0;
  }
  static int CurrentTimeInt64(sqlite3_vfs* v, sqlite3_int64* out) {
    return Of(v).real->xCurrentTimeInt64(Of(v).real, out);
  }
};

SqliteFaultVfs::SqliteFaultVfs() : impl_(std::make_unique<Impl>()) {
  auto& im = *impl_;
  im.real = sqlite3_vfs_find(nullptr);
  im.methods = sqlite3_io_methods{3,
                                  &Impl::Close,
                                  &Impl::Read,
                                  &Impl::Write,
                                  &Impl::Truncate,
                                  &Impl::Sync,
                                  &Impl::FileSize,
                                  &Impl::Lock,
                                  &Impl::Unlock,
                                  &Impl::CheckReservedLock,
                                  &Impl::FileControl,
                                  &Impl::SectorSize,
                                  &Impl::DeviceCharacteristics,
                                  &Impl::ShmMap,
                                  &Impl::ShmLock,
                                  &Impl::ShmBarrier,
                                  &Impl::ShmUnmap,
                                  nullptr,
                                  nullptr};
  im.vfs.iVersion = 2;
  im.vfs.szOsFile = sizeof(FaultFile);
  im.vfs.mxPathname = im.real->mxPathname;
  im.vfs.zName = kName;
  im.vfs.pAppData = &im;
  im.vfs.xOpen = &Impl::Open;
  im.vfs.xDelete = &Impl::Delete;
  im.vfs.xAccess = &Impl::Access;
  im.vfs.xFullPathname = &Impl::FullPathname;
  im.vfs.xRandomness = &Impl::Randomness;
  im.vfs.xSleep = &Impl::Sleep;
  im.vfs.xCurrentTime = &Impl::CurrentTime;
  im.vfs.xGetLastError = &Impl::GetLastError;
  im.vfs.xCurrentTimeInt64 = &Impl::CurrentTimeInt64;
  sqlite3_vfs_register(&im.vfs, 0);
}

SqliteFaultVfs& SqliteFaultVfs::Instance() {
  static SqliteFaultVfs* instance = new SqliteFaultVfs();  // registered with SQLite for the process's life
  return *instance;
}

void SqliteFaultVfs::FailWritesFrom(int n, bool disk_full) {
  std::lock_guard lock(impl_->mu);
  impl_->write_countdown = n;
  impl_->writes_failing = false;
  impl_->disk_full = disk_full;
}

void SqliteFaultVfs::FailSyncs(bool on) {
  std::lock_guard lock(impl_->mu);
  impl_->syncs_failing = on;
}

void SqliteFaultVfs::Freeze() {
  std::lock_guard lock(impl_->mu);
  impl_->frozen = true;
}

void SqliteFaultVfs::DropUnsyncedAndThaw() {
  std::lock_guard lock(impl_->mu);
  sqlite3_vfs* real = impl_->real;
  for (auto& [path, t] : impl_->files) {
    sqlite3_file* f = static_cast<sqlite3_file*>(sqlite3_malloc(real->szOsFile));
    std::memset(f, 0, static_cast<size_t>(real->szOsFile));
    int out = 0;
    if (real->xOpen(real, path.c_str(), f, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MAIN_DB, &out) == SQLITE_OK) {
      for (auto u = t.undo.rbegin(); u != t.undo.rend(); ++u)
        f->pMethods->xWrite(f, u->bytes.data(), static_cast<int>(u->bytes.size()), u->offset);
      if (t.synced_size >= 0) f->pMethods->xTruncate(f, t.synced_size);
      f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
      f->pMethods->xClose(f);
    }
    sqlite3_free(f);
  }
  impl_->files.clear();
  impl_->frozen = false;
}

void SqliteFaultVfs::Reset() {
  std::lock_guard lock(impl_->mu);
  impl_->write_countdown = 0;
  impl_->writes_failing = false;
  impl_->syncs_failing = false;
  impl_->frozen = false;
  impl_->files.clear();
}

}  // namespace dtx::log
