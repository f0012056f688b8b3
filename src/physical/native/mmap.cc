// morsel_mmap: map a file MAP_SHARED and hand it to JS as a SharedArrayBuffer.
//
// Raw V8 rather than N-API because N-API has no way to create a
// SharedArrayBuffer over foreign memory. The SAB can then be postMessage'd to
// workers (they share the same BackingStore) and other processes map the same
// file, so every writer lands in the one page cache copy, which survives the
// death (even SIGKILL) of any process using it.
//
// Errors are node::ErrnoException objects: `.code` is the errno name
// ('ENOENT', 'ERANGE', ...), `.errno`, `.syscall`, and `.path` when known.
// The TypeScript wrapper (src/physical/native.ts) turns them into MorselError.

#include <node.h>
#include <v8.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <immintrin.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

#include <uv.h>

namespace {

using v8::Context;
using v8::FunctionCallbackInfo;
using v8::Isolate;
using v8::Local;
using v8::Number;
using v8::SharedArrayBuffer;
using v8::String;
using v8::Value;

static_assert(sizeof(size_t) == 8, "64-bit only: mappings may exceed 4 GiB");

// The format granule: region files are sized in 4 KiB units on every host.
constexpr uint64_t kGranule = 4096;
// Largest integer a JS number holds exactly; also V8's SAB byte-length cap on
// 64-bit hosts, so NewBackingStore never hits its internal CHECK.
constexpr double kMaxSafe = 9007199254740991.0;

// Live mappings across all isolates. Only a diagnostic: lets tests observe
// that V8 really does run the deleter once the last SAB is collected.
std::atomic<int64_t> g_live{0};

void Throw(Isolate* iso, int err, const char* syscall, const char* msg,
           const char* path = nullptr) {
  iso->ThrowException(node::ErrnoException(iso, err, syscall, msg, path));
}

// Reads args[i] as a non-negative integer <= 2^53-1. Doubles are checked
// before the cast: casting NaN/inf/negative/huge to uint64 is UB.
bool ToU64(Isolate* iso, Local<Value> v, const char* what, uint64_t* out) {
  double d = v->IsNumber() ? v.As<Number>()->Value() : -1.0;
  if (!(d >= 0 && d <= kMaxSafe) || std::trunc(d) != d) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s must be a non-negative safe integer", what);
    Throw(iso, EINVAL, nullptr, buf);
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

void Unmap(void* data, size_t length, void* /*deleter_data*/) {
  // Runs on whichever thread frees the last BackingStore reference; munmap is
  // thread-safe and touches no V8 state, so that is fine.
  munmap(data, length);
  g_live.fetch_sub(1, std::memory_order_relaxed);
}

// map(path, byteLength) -> SharedArrayBuffer
void Map(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 2 || !args[0]->IsString())
    return Throw(iso, EINVAL, nullptr, "map(path: string, byteLength: number)");
  String::Utf8Value path(iso, args[0]);
  // An embedded NUL would silently open a different (truncated) path.
  if (*path == nullptr || strlen(*path) != static_cast<size_t>(path.length()))
    return Throw(iso, EINVAL, nullptr, "path contains a NUL byte");
  uint64_t len;
  if (!ToU64(iso, args[1], "byteLength", &len)) return;
  if (len == 0 || len % kGranule != 0)
    return Throw(iso, EINVAL, nullptr,
                 "byteLength must be a positive multiple of 4096", *path);

  int fd = open(*path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return Throw(iso, errno, "open", nullptr, *path);

  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Throw(iso, err, "fstat", nullptr, *path);
  }
  // Touching a page past EOF would SIGBUS the whole process, so refuse
  // up front rather than extending the file behind the caller's back.
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < len) {
    close(fd);
    char buf[160];
    snprintf(buf, sizeof buf, "file is %lld bytes, shorter than %llu requested",
             static_cast<long long>(st.st_size),
             static_cast<unsigned long long>(len));
    return Throw(iso, ERANGE, "fstat", buf, *path);
  }

  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);  // the mapping holds its own reference to the file
  if (p == MAP_FAILED) return Throw(iso, err, "mmap", nullptr, *path);

  g_live.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<v8::BackingStore> bs =
      SharedArrayBuffer::NewBackingStore(p, len, Unmap, nullptr);
  args.GetReturnValue().Set(SharedArrayBuffer::New(iso, std::move(bs)));
}

// Shared by sync/advise: validates (sab, offset, length) and yields the
// page-aligned [*addr, *addr + *span) covering the byte range.
bool PageRange(const FunctionCallbackInfo<Value>& args, uint8_t** addr,
               size_t* span) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 3 || !args[0]->IsSharedArrayBuffer()) {
    Throw(iso, EINVAL, nullptr, "expected (sab: SharedArrayBuffer, offset, length)");
    return false;
  }
  Local<SharedArrayBuffer> sab = args[0].As<SharedArrayBuffer>();
  uint64_t off, len;
  if (!ToU64(iso, args[1], "offset", &off) || !ToU64(iso, args[2], "length", &len))
    return false;
  uint64_t size = sab->ByteLength();
  // Written as a subtraction so off + len cannot overflow.
  if (off > size || len > size - off) {
    char buf[160];
    snprintf(buf, sizeof buf, "range [%llu, +%llu) outside buffer of %llu bytes",
             static_cast<unsigned long long>(off),
             static_cast<unsigned long long>(len),
             static_cast<unsigned long long>(size));
    Throw(iso, ERANGE, nullptr, buf);
    return false;
  }
  // Round the absolute address (not just the offset) so a SAB that does not
  // start on a page boundary still produces a valid msync/madvise address.
  const uintptr_t pg = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t start = reinterpret_cast<uintptr_t>(sab->Data()) + off;
  uintptr_t lo = start & ~(pg - 1);
  *addr = reinterpret_cast<uint8_t*>(lo);
  *span = len == 0 ? 0 : static_cast<size_t>(start + len - lo);
  return true;
}

// sync(sab, offset, length): flush dirty pages of the range to the file.
void Sync(const FunctionCallbackInfo<Value>& args) {
  uint8_t* addr;
  size_t span;
  if (!PageRange(args, &addr, &span) || span == 0) return;
  if (msync(addr, span, MS_SYNC) != 0) {
    // Callers only need "durability failed"; the cause goes in the message.
    char buf[160];
    snprintf(buf, sizeof buf, "msync failed: %s", strerror(errno));
    Throw(args.GetIsolate(), EIO, "msync", buf);
  }
}

// advise(sab, offset, length, 'willneed' | 'dontneed' | 'populate' | 'hugepage')
void Advise(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  uint8_t* addr;
  size_t span;
  if (!PageRange(args, &addr, &span)) return;
  String::Utf8Value kind(iso, args[3]);
  const char* k = *kind ? *kind : "";
  int advice;
  if (strcmp(k, "willneed") == 0) {
    advice = MADV_WILLNEED;
  } else if (strcmp(k, "dontneed") == 0) {
    // Safe on MAP_SHARED file pages: they refault from the page cache.
    advice = MADV_DONTNEED;
  } else if (strcmp(k, "hugepage") == 0) {
    // Back the range with host huge pages (THP is "madvise" on these VMs):
    // the host's own page walks then stop adding noise to guest-level figures.
    // Only whole 2 MiB pages inside the range qualify: align inwards.
    const uintptr_t huge = 2u << 20;
    uintptr_t lo = (reinterpret_cast<uintptr_t>(addr) + huge - 1) & ~(huge - 1);
    uintptr_t hi = (reinterpret_cast<uintptr_t>(addr) + span) & ~(huge - 1);
    if (hi <= lo) return;
    addr = reinterpret_cast<uint8_t*>(lo);
    span = hi - lo;
    advice = MADV_HUGEPAGE;
  } else if (strcmp(k, "populate") == 0) {
    if (span == 0) return;
#ifdef MADV_POPULATE_WRITE
    if (madvise(addr, span, MADV_POPULATE_WRITE) == 0) return;
    if (errno != EINVAL) return Throw(iso, errno, "madvise", nullptr);
    // EINVAL: kernel < 5.14 lacks it; fall through to touching pages.
#endif
    // An atomic add of 0 write-faults each page without racing real writers
    // in other threads/processes (a plain read+write could lose their store).
    const size_t pg = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    for (size_t i = 0; i < span; i += pg)
      __atomic_fetch_add(addr + i, 0, __ATOMIC_RELAXED);
    return;
  } else {
    return Throw(iso, EINVAL, nullptr,
                 "kind must be 'willneed', 'dontneed', 'populate' or 'hugepage'");
  }
  if (span != 0 && madvise(addr, span, advice) != 0)
    Throw(iso, errno, "madvise", nullptr);
}

// Reads args[i] as a file descriptor (a small non-negative integer).
bool ToFd(Isolate* iso, Local<Value> v, int* out) {
  uint64_t fd;
  if (!ToU64(iso, v, "fd", &fd)) return false;
  if (fd > 0x7fffffff) {
    Throw(iso, EBADF, nullptr, "fd out of range");
    return false;
  }
  *out = static_cast<int>(fd);
  return true;
}

// mapFd(fd, byteLength, writable) -> SharedArrayBuffer over the file behind
// `fd` (MAP_SHARED; PROT_READ only unless writable). Mapping the fd the caller
// locked, not a path, so a rename between lock and map cannot swap files.
void MapFd(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  int fd;
  uint64_t len;
  if (args.Length() < 3 || !ToFd(iso, args[0], &fd) ||
      !ToU64(iso, args[1], "byteLength", &len))
    return;
  bool writable = args[2]->IsTrue();
  if (len == 0 || len % kGranule != 0)
    return Throw(iso, EINVAL, nullptr, "byteLength must be a positive multiple of 4096");
  struct stat st;
  if (fstat(fd, &st) != 0) return Throw(iso, errno, "fstat", nullptr);
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < len)
    return Throw(iso, ERANGE, "fstat", "file is shorter than the mapping requested");
  int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = mmap(nullptr, len, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Throw(iso, errno, "mmap", nullptr);
  g_live.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<v8::BackingStore> bs =
      SharedArrayBuffer::NewBackingStore(p, len, Unmap, nullptr);
  args.GetReturnValue().Set(SharedArrayBuffer::New(iso, std::move(bs)));
}

// Lock kinds shared with native.ts.
constexpr int kUnlock = 0, kShared = 1, kExclusive = 2;

short LockType(int kind) {
  return kind == kShared ? F_RDLCK : kind == kExclusive ? F_WRLCK : F_UNLCK;
}

// lock(fd, byte, kind, wait) -> bool. An open-file-description (OFD) lock on
// the single byte `byte` of the file behind fd: owned by the open file, not
// the process or the path, so every link to the file sees it, two opens in
// one process conflict like two processes, and the kernel drops it when the
// owner dies. Converting a held lock (shared <-> exclusive) is one atomic
// call. Non-blocking: false when another holder conflicts.
void Lock(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  int fd;
  uint64_t byte, kind;
  if (args.Length() < 4 || !ToFd(iso, args[0], &fd) ||
      !ToU64(iso, args[1], "byte", &byte) || !ToU64(iso, args[2], "kind", &kind))
    return;
  if (kind > kExclusive) return Throw(iso, EINVAL, nullptr, "kind must be 0, 1 or 2");
  bool wait = args[3]->IsTrue();
  struct flock fl;
  memset(&fl, 0, sizeof fl);  // l_pid must be 0 for OFD locks
  fl.l_type = LockType(static_cast<int>(kind));
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(byte);
  fl.l_len = 1;
  // A blocking wait is only ever used for locks held for a bounded, short
  // critical section; EINTR (a signal) just retries.
  for (;;) {
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) {
      args.GetReturnValue().Set(true);
      return;
    }
    if (errno == EINTR) continue;
    if (!wait && (errno == EAGAIN || errno == EACCES)) {
      args.GetReturnValue().Set(false);
      return;
    }
    return Throw(iso, errno, "fcntl", nullptr);
  }
}

// conflicts(fd, byte, kind) -> bool: whether another open file description
// holds a lock on `byte` that conflicts with `kind` (F_OFD_GETLK; this
// description's own locks never conflict). A probe: the answer may change
// the moment it is returned.
void Conflicts(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  int fd;
  uint64_t byte, kind;
  if (args.Length() < 3 || !ToFd(iso, args[0], &fd) ||
      !ToU64(iso, args[1], "byte", &byte) || !ToU64(iso, args[2], "kind", &kind))
    return;
  if (kind != kShared && kind != kExclusive)
    return Throw(iso, EINVAL, nullptr, "kind must be 1 or 2");
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = LockType(static_cast<int>(kind));
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(byte);
  fl.l_len = 1;
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return Throw(iso, errno, "fcntl", nullptr);
  args.GetReturnValue().Set(fl.l_type != F_UNLCK);
}

// reserve(fd, byteLength): posix_fallocate, so every block of the file is
// allocated now (ENOSPC here) rather than on a later page fault (SIGBUS).
void Reserve(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  int fd;
  uint64_t len;
  if (args.Length() < 2 || !ToFd(iso, args[0], &fd) ||
      !ToU64(iso, args[1], "byteLength", &len))
    return;
  int err = posix_fallocate(fd, 0, static_cast<off_t>(len));
  if (err != 0) Throw(iso, err, "posix_fallocate", nullptr);
}

// Validates (sab, byteOffset) for a futex: a 4-byte aligned int32 inside.
bool FutexWord(const FunctionCallbackInfo<Value>& args, uint32_t** word) {
  Isolate* iso = args.GetIsolate();
  if (!args[0]->IsSharedArrayBuffer()) {
    Throw(iso, EINVAL, nullptr, "expected a SharedArrayBuffer");
    return false;
  }
  Local<SharedArrayBuffer> sab = args[0].As<SharedArrayBuffer>();
  uint64_t off;
  if (!ToU64(iso, args[1], "byteOffset", &off)) return false;
  if (off % 4 != 0 || off + 4 > sab->ByteLength()) {
    Throw(iso, ERANGE, nullptr, "byteOffset must be a 4-byte aligned int32 inside the buffer");
    return false;
  }
  *word = reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(sab->Data()) + off);
  return true;
}

long Futex(uint32_t* word, int op, uint32_t val, const struct timespec* ts) {
  return syscall(SYS_futex, word, op, val, ts, nullptr, 0);
}

// futexWait(sab, byteOffset, expected, timeoutMs) -> 'ok' | 'not-equal' |
// 'timed-out'. FUTEX_WAIT without FUTEX_PRIVATE_FLAG: the kernel keys a
// shared-mapping futex by (file, offset), so waiters and wakers pair up
// across processes and across separate mappings of one file. timeoutMs may
// be Infinity. A signal (EINTR) waits again for the time left.
void FutexWait(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  uint32_t* word;
  if (args.Length() < 4 || !FutexWord(args, &word)) return;
  if (!args[2]->IsInt32() && !args[2]->IsUint32())
    return Throw(iso, EINVAL, nullptr, "expected must be an int32");
  uint32_t expected = static_cast<uint32_t>(args[2]->IsInt32()
      ? static_cast<uint32_t>(args[2].As<v8::Int32>()->Value())
      : args[2].As<v8::Uint32>()->Value());
  double ms = args[3]->IsNumber() ? args[3].As<Number>()->Value() : -1.0;
  if (!(ms >= 0)) return Throw(iso, EINVAL, nullptr, "timeoutMs must be >= 0 or Infinity");
  bool forever = std::isinf(ms);
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  if (!forever) {
    double total = deadline.tv_sec * 1e9 + deadline.tv_nsec + ms * 1e6;
    deadline.tv_sec = static_cast<time_t>(total / 1e9);
    deadline.tv_nsec = static_cast<long>(total - deadline.tv_sec * 1e9);
  }
  const char* result = "ok";
  for (;;) {
    struct timespec left, now;
    if (!forever) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      double ns = (deadline.tv_sec - now.tv_sec) * 1e9 + (deadline.tv_nsec - now.tv_nsec);
      if (ns <= 0) { result = "timed-out"; break; }
      left.tv_sec = static_cast<time_t>(ns / 1e9);
      left.tv_nsec = static_cast<long>(ns - left.tv_sec * 1e9);
    }
    if (Futex(word, FUTEX_WAIT, expected, forever ? nullptr : &left) == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) { result = "not-equal"; break; }
    if (errno == ETIMEDOUT) { result = "timed-out"; break; }
    return Throw(iso, errno, "futex", nullptr);
  }
  args.GetReturnValue().Set(String::NewFromUtf8(iso, result).ToLocalChecked());
}

// futexWake(sab, byteOffset, count) -> number of waiters woken.
void FutexWake(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  uint32_t* word;
  uint64_t count;
  if (args.Length() < 3 || !FutexWord(args, &word) ||
      !ToU64(iso, args[2], "count", &count))
    return;
  uint32_t n = count > 0x7fffffff ? 0x7fffffff : static_cast<uint32_t>(count);
  long woken = Futex(word, FUTEX_WAKE, n, nullptr);
  if (woken < 0) return Throw(iso, errno, "futex", nullptr);
  args.GetReturnValue().Set(static_cast<double>(woken));
}

// forkCost(bytes) -> nanoseconds one fork() takes in a process that also
// holds `bytes` of populated private anonymous memory (the kernel copies its
// page-table entries and raises each page's count: the real mechanism the
// copy-on-write benchmark compares against). The child exits at once.
void ForkCost(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  uint64_t bytes;
  if (args.Length() < 1 || !ToU64(iso, args[0], "bytes", &bytes)) return;
  void* mem = nullptr;
  if (bytes > 0) {
    mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) return Throw(iso, errno, "mmap", nullptr);
    // Distinct contents per page, so no page is the shared zero page.
    for (uint64_t off = 0; off < bytes; off += 4096) static_cast<volatile char*>(mem)[off] = 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int err = errno;
  if (pid > 0) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (mem != nullptr) munmap(mem, bytes);
  if (pid < 0) return Throw(iso, err, "fork", nullptr);
  args.GetReturnValue().Set((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec));
}

static double NsBetween(const struct timespec& a, const struct timespec& b) {
  return (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
}

// hostMapCost(bytes, mode, reps) -> Float64Array of reps x [map, access,
// unmap] ns: the host kernel's mmap of a shared-memory object (memfd) of
// `bytes`, one byte read per 4 KiB page, munmap. Modes: 0 lazy mmap of a
// filled object (faults on access, with the kernel's fault-around), 1
// MAP_POPULATE of a filled object, 2 first touch: a fresh object each rep,
// one byte written per page (the kernel allocates and zeroes each page).
void HostMapCost(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  uint64_t bytes, mode, reps;
  if (args.Length() < 3 || !ToU64(iso, args[0], "bytes", &bytes) || !ToU64(iso, args[1], "mode", &mode) ||
      !ToU64(iso, args[2], "reps", &reps))
    return;
  if (bytes == 0 || bytes % 4096 != 0 || mode > 2 || reps == 0 || reps > 1000)
    return Throw(iso, EINVAL, "hostMapCost", "bytes must be a positive multiple of 4096, mode 0..2, reps 1..1000");
  Local<v8::ArrayBuffer> out = v8::ArrayBuffer::New(iso, reps * 3 * sizeof(double));
  double* t = static_cast<double*>(out->GetBackingStore()->Data());
  int fd = -1;
  for (uint64_t r = 0; r < reps; r++) {
    if (fd < 0) {
      fd = static_cast<int>(syscall(SYS_memfd_create, "morsel-bench", 0));
      if (fd < 0) return Throw(iso, errno, "memfd_create", nullptr);
      if (ftruncate(fd, static_cast<off_t>(bytes)) != 0 || (mode != 2 && posix_fallocate(fd, 0, static_cast<off_t>(bytes)) != 0)) {
        int err = errno;
        close(fd);
        return Throw(iso, err, "ftruncate", nullptr);
      }
    }
    struct timespec t0, t1, t2, t3;
    int flags = MAP_SHARED | (mode == 1 ? MAP_POPULATE : 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (p == MAP_FAILED) {
      int err = errno;
      close(fd);
      return Throw(iso, err, "mmap", nullptr);
    }
    volatile char* c = static_cast<volatile char*>(p);
    char sink = 0;
    if (mode == 2)
      for (uint64_t off = 0; off < bytes; off += 4096) c[off] = 1;
    else
      for (uint64_t off = 0; off < bytes; off += 4096) sink ^= c[off];
    clock_gettime(CLOCK_MONOTONIC, &t2);
    munmap(p, bytes);
    clock_gettime(CLOCK_MONOTONIC, &t3);
    (void)sink;
    t[3 * r] = NsBetween(t0, t1);
    t[3 * r + 1] = NsBetween(t1, t2);
    t[3 * r + 2] = NsBetween(t2, t3);
    if (mode == 2) {
      close(fd);  // the next repetition touches a fresh object
      fd = -1;
    }
  }
  if (fd >= 0) close(fd);
  args.GetReturnValue().Set(v8::Float64Array::New(out, 0, reps * 3));
}

// sumInt32(view) -> the wrapping sum of the int32 words of a typed-array
// view (of a SharedArrayBuffer or an ArrayBuffer; its byte length a multiple
// of 16), in four lanes: the benchmarks' checksum work (bench/access.ts) at
// memory speed on every side alike.
void SumInt32(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 1 || !args[0]->IsArrayBufferView())
    return Throw(iso, EINVAL, "sumInt32", "expects a typed-array view");
  Local<v8::ArrayBufferView> view = args[0].As<v8::ArrayBufferView>();
  size_t len = view->ByteLength();
  if (len % 16 != 0) return Throw(iso, EINVAL, "sumInt32", "byte length must be a multiple of 16");
  std::shared_ptr<v8::BackingStore> store = view->Buffer()->GetBackingStore();
  const int32_t* w = reinterpret_cast<const int32_t*>(static_cast<const char*>(store->Data()) + view->ByteOffset());
  uint32_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i < len / 4; i += 4) {
    a += static_cast<uint32_t>(w[i]);
    b += static_cast<uint32_t>(w[i + 1]);
    c += static_cast<uint32_t>(w[i + 2]);
    d += static_cast<uint32_t>(w[i + 3]);
  }
  args.GetReturnValue().Set(static_cast<int32_t>(a + b + c + d));
}

// zeroBytes(view, byteOffset, byteLength): memset of the range of a
// typed-array view (of a SharedArrayBuffer or an ArrayBuffer) to zero. The
// region zeroes fresh frames with it: a native memset runs at the host's
// clear-page speed, 2-3x TypedArray.set of a zero page from JavaScript. The
// caller owns the range (a frame nobody else can reach yet).
void ZeroBytes(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 3 || !args[0]->IsArrayBufferView() || !args[1]->IsNumber() || !args[2]->IsNumber())
    return Throw(iso, EINVAL, "zeroBytes", "expects (view, byteOffset, byteLength)");
  Local<v8::ArrayBufferView> view = args[0].As<v8::ArrayBufferView>();
  double off = args[1].As<v8::Number>()->Value();
  double len = args[2].As<v8::Number>()->Value();
  double size = static_cast<double>(view->ByteLength());
  if (!(off >= 0 && len >= 0 && off == std::floor(off) && len == std::floor(len) && off <= size && len <= size - off))
    return Throw(iso, ERANGE, "zeroBytes", "range outside the view");
  // Buffer()->Data(), not GetBackingStore(): no shared_ptr per call (the view keeps the buffer alive).
  memset(static_cast<char*>(view->Buffer()->Data()) + view->ByteOffset() + static_cast<size_t>(off), 0, static_cast<size_t>(len));
}

// --- crc32c -----------------------------------------------------------------
//
// CRC-32C (Castagnoli: the iSCSI/ext4 checksum the image format stores) with
// the SSE4.2 crc32 instruction. One instruction per 8 bytes has a latency of
// 3 cycles and a throughput of 1, so one dependency chain runs at a third of
// the unit's speed: the data goes through three chains at once, each over
// its own third of a block, and the three states are joined by shifting the
// first two over the bytes that follow them. The instruction updates the raw
// (reflected, uninverted) register; the standard CRC inverts it on entry and
// exit, so crc32c(b, crc32c(a)) == crc32c(a ++ b), as @node-rs/crc32's.

constexpr uint32_t kCrc32cPoly = 0x82F63B78;  // reflected Castagnoli polynomial
// Bytes of each of the three chains per block (a block is 3x this).
constexpr size_t kCrcChainBytes = 256;

// The raw register after `zeroBytes` zero bytes, bit by bit: multiplication by
// x^(8 zeroBytes) modulo the polynomial. Only used to build ShiftTable.
uint32_t ShiftSlow(uint32_t state, size_t zeroBytes) {
  for (size_t bit = 0; bit < zeroBytes * 8; bit++) state = (state >> 1) ^ (kCrc32cPoly & (0u - (state & 1u)));
  return state;
}

// Shifting a register over kCrcChainBytes zero bytes is linear in its bits:
// four tables, one per register byte, built once from the 32 basis vectors.
struct ShiftTable {
  uint32_t byByte[4][256];
  ShiftTable() {
    uint32_t basis[32];
    for (int b = 0; b < 32; b++) basis[b] = ShiftSlow(1u << b, kCrcChainBytes);
    for (int k = 0; k < 4; k++)
      for (int v = 0; v < 256; v++) {
        uint32_t out = 0;
        for (int i = 0; i < 8; i++)
          if (v & (1 << i)) out ^= basis[8 * k + i];
        byByte[k][v] = out;
      }
  }
  uint32_t Shift(uint32_t s) const {
    return byByte[0][s & 0xff] ^ byByte[1][(s >> 8) & 0xff] ^ byByte[2][(s >> 16) & 0xff] ^ byByte[3][s >> 24];
  }
};

// Where the CPU has VPCLMULQDQ and AVX-512 (this machine's Zen 5 does), long
// inputs go through carry-less multiplication first, 2.3x the instruction
// loop's speed here (53 against 23 GB/s from the cache, 22.5 against 17.5
// from memory): sixteen 16-byte lanes (four 512-bit registers) each stand
// for the message bytes at their place in a 256-byte block; each block
// folds them forward by 256 bytes (a lane L = H x^64 + Lo, H its first 8
// bytes, becomes H * (x^(8D+62) mod P) + Lo * (x^(8D-2) mod P), reflected
// and shifted into a 64-bit constant; the exponents are those for which the
// fold reproduces the crc32 instruction's register, and test/native.test.ts
// compares both on random lengths and offsets) and adds the next block.
// Then the lanes fold into the last one, and two crc32 instructions reduce
// it: the register of the whole prefix. The rest goes through the loop.

// x^n modulo the polynomial, reflected (bit 31 is x^0).
uint32_t XPow(size_t n) {
  uint32_t s = 0x80000000u;
  for (size_t bit = 0; bit < n; bit++) s = (s >> 1) ^ (kCrc32cPoly & (0u - (s & 1u)));
  return s;
}

constexpr size_t kFoldLaneBytes = 16;
constexpr size_t kFoldLanes = 16;
constexpr size_t kFoldBlockBytes = kFoldLanes * kFoldLaneBytes;  // 256: four 512-bit registers
// Shorter inputs take the instruction loop only (the fold's set-up and final reduction cost ~40 instructions).
constexpr size_t kFoldMinBytes = 4 * kFoldBlockBytes;

// The 64-bit constant that multiplies a lane's half by x^n.
uint64_t FoldConstant(size_t n) { return static_cast<uint64_t>(XPow(n)) << 31; }

struct FoldConstants {
  // [k]: fold a lane forward by k lanes (16k bytes), its first and second 8 bytes.
  uint64_t first[kFoldLanes], second[kFoldLanes];
  uint64_t blockFirst, blockSecond;  // forward by one block
  FoldConstants() {
    for (size_t k = 1; k < kFoldLanes; k++) {
      first[k] = FoldConstant(8 * kFoldLaneBytes * k + 62);
      second[k] = FoldConstant(8 * kFoldLaneBytes * k - 2);
    }
    first[0] = second[0] = 0;  // unused: the last lane is not moved
    blockFirst = FoldConstant(8 * kFoldBlockBytes + 62);
    blockSecond = FoldConstant(8 * kFoldBlockBytes - 2);
  }
};

// Each lane of `a` moved forward by the distance of `k`'s constants, plus the 64 bytes at `at`.
__attribute__((target("avx512f,vpclmulqdq"), always_inline)) inline __m512i FoldInto(__m512i a, __m512i k, const uint8_t* at) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, k, 0x00), _mm512_clmulepi64_epi128(a, k, 0x11), _mm512_loadu_si512(at), 0x96);  // 0x96: a ^ b ^ c
}

// The raw register after `blocks` (>= 1) blocks at `p`, from raw register `raw`.
__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.2"))) uint32_t FoldBlocks(uint32_t raw, const uint8_t* p, size_t blocks) {
  static const FoldConstants c;  // thread-safe static init (C++11)
  const __m512i k = _mm512_set_epi64(c.blockSecond, c.blockFirst, c.blockSecond, c.blockFirst, c.blockSecond, c.blockFirst, c.blockSecond, c.blockFirst);
  // The starting register is the same as its value xor-ed into the first 4 bytes.
  __m512i a0 = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_castsi128_si512(_mm_cvtsi32_si128(static_cast<int>(raw))));
  __m512i a1 = _mm512_loadu_si512(p + 64);
  __m512i a2 = _mm512_loadu_si512(p + 128);
  __m512i a3 = _mm512_loadu_si512(p + 192);
  for (size_t b = 1; b < blocks; b++) {
    p += kFoldBlockBytes;
    a0 = FoldInto(a0, k, p);
    a1 = FoldInto(a1, k, p + 64);
    a2 = FoldInto(a2, k, p + 128);
    a3 = FoldInto(a3, k, p + 192);
  }
  alignas(64) uint64_t lanes[2 * kFoldLanes];
  _mm512_store_si512(lanes, a0);
  _mm512_store_si512(lanes + 8, a1);
  _mm512_store_si512(lanes + 16, a2);
  _mm512_store_si512(lanes + 24, a3);
  __m128i last = _mm_load_si128(reinterpret_cast<const __m128i*>(lanes + 2 * (kFoldLanes - 1)));
  for (size_t i = 0; i + 1 < kFoldLanes; i++) {
    size_t k2 = kFoldLanes - 1 - i;  // lanes to move
    __m128i lane = _mm_load_si128(reinterpret_cast<const __m128i*>(lanes + 2 * i));
    __m128i kk = _mm_set_epi64x(static_cast<long long>(c.second[k2]), static_cast<long long>(c.first[k2]));
    last = _mm_xor_si128(last, _mm_xor_si128(_mm_clmulepi64_si128(lane, kk, 0x00), _mm_clmulepi64_si128(lane, kk, 0x11)));
  }
  uint64_t s = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(last)));
  return static_cast<uint32_t>(_mm_crc32_u64(s, static_cast<uint64_t>(_mm_extract_epi64(last, 1))));
}

__attribute__((target("sse4.2"))) uint32_t Crc32cHw(uint32_t crc, const uint8_t* p, size_t len) {
  static const ShiftTable shift;  // thread-safe static init (C++11)
  static const bool fold = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul");
  if (fold && len >= kFoldMinBytes) {
    size_t blocks = len / kFoldBlockBytes;
    crc = ~FoldBlocks(~crc, p, blocks);
    p += blocks * kFoldBlockBytes;
    len -= blocks * kFoldBlockBytes;
  }
  uint64_t s = static_cast<uint32_t>(~crc);
  for (; len > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; len--) s = _mm_crc32_u8(static_cast<uint32_t>(s), *p++);
  auto word = [](const uint8_t* at) {
    uint64_t w;
    memcpy(&w, at, 8);
    return w;
  };
  for (; len >= 3 * kCrcChainBytes; len -= 3 * kCrcChainBytes, p += 3 * kCrcChainBytes) {
    uint64_t a = s, b = 0, c = 0;
    for (size_t i = 0; i < kCrcChainBytes; i += 8) {
      a = _mm_crc32_u64(a, word(p + i));
      b = _mm_crc32_u64(b, word(p + kCrcChainBytes + i));
      c = _mm_crc32_u64(c, word(p + 2 * kCrcChainBytes + i));
    }
    s = shift.Shift(shift.Shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(c);
  }
  for (; len >= 8; len -= 8, p += 8) s = _mm_crc32_u64(s, word(p));
  for (; len > 0; len--) s = _mm_crc32_u8(static_cast<uint32_t>(s), *p++);
  return ~static_cast<uint32_t>(s);
}

// crc32c(view, crc): the CRC-32C of the view's bytes continuing from `crc`
// (0 to start). Exported only where the CPU has SSE4.2 (see the init below);
// src/serial/crc.ts falls back to @node-rs/crc32 elsewhere.
void Crc32c(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 2 || !args[0]->IsArrayBufferView() || !args[1]->IsUint32())
    return Throw(iso, EINVAL, "crc32c", "expects (view, crc as uint32)");
  Local<v8::ArrayBufferView> view = args[0].As<v8::ArrayBufferView>();
  const uint8_t* at = static_cast<const uint8_t*>(view->Buffer()->Data()) + view->ByteOffset();
  uint32_t crc = Crc32cHw(args[1].As<v8::Uint32>()->Value(), at, view->ByteLength());
  args.GetReturnValue().Set(crc);
}

// readvCrc(fd, views, position, callback[, directFd, probe]): reads the file from
// `position` into the views in order, on a libuv thread-pool thread, until
// they are full or the file ends, then computes the CRC-32C of the bytes
// read on the same thread while they are still in its cache;
// callback(errnoName | null, bytesRead, crc, fromDisk, direct) on the loop
// thread. fromDisk: some of the bytes were not in the page cache (a first
// RWF_NOWAIT attempt came back short), so the read waited for the device.
// direct: those bytes came through `directFd` (an O_DIRECT descriptor of the
// same file), straight from the device into the views, with no copy and no
// page-cache pages (only where offset, addresses and lengths are 4 KiB
// aligned; EINVAL falls back to `fd`). probe false: no page-cache attempt,
// everything counts as from the device. The loader reads an image's chunks
// into fresh frames with it: the checksum does not run on the JavaScript
// thread. The memory stays alive until the callback: the views array is
// held, and an ArrayBuffer's backing store too (it could be detached; a
// SharedArrayBuffer cannot, and GetBackingStore costs ~0.1 us per view).
// The caller must not touch the bytes until then.
struct ReadCrcWork {
  uv_work_t req;
  Isolate* iso;
  v8::Global<v8::Function> callback;
  v8::Global<v8::Object> resource;
  v8::Global<v8::Array> views;
  node::async_context async;
  std::vector<std::shared_ptr<v8::BackingStore>> keep;
  std::vector<struct iovec> iov;
  int fd;
  int directFd = -1;  // an O_DIRECT descriptor of the same file for what the page cache lacks, or -1
  off_t position;
  size_t got = 0;
  uint32_t crc = 0;
  int err = 0;
  bool fromDisk = false;
  bool direct = false;  // some bytes came through directFd
  bool probe = true;  // try the page cache first (RWF_NOWAIT); false: the caller knows the file is not cached
};

constexpr uintptr_t kDirectAlign = 4096;

// Whether a direct read of iov[0, n) at `position` meets O_DIRECT's alignment (offset, addresses and lengths).
bool DirectAligned(const struct iovec* iov, int n, off_t position) {
  if ((static_cast<uintptr_t>(position) & (kDirectAlign - 1)) != 0) return false;
  for (int i = 0; i < n; i++)
    if (((reinterpret_cast<uintptr_t>(iov[i].iov_base) | iov[i].iov_len) & (kDirectAlign - 1)) != 0) return false;
  return true;
}

void ReadCrcRun(uv_work_t* req) {
  ReadCrcWork* w = static_cast<ReadCrcWork*>(req->data);
  std::vector<struct iovec> rest = w->iov;
  size_t first = 0;  // rest[first..] still to fill; bounded: every round reads > 0 bytes or ends
  // The first round only takes what the page cache holds (RWF_NOWAIT). Skipped when the caller says the
  // file comes from the device: a NOWAIT read that misses still starts readahead, which a direct read then
  // duplicates (measured here: 1 GiB by 4 MiB direct reads, 0.85-1.1 s alone, 2.1-3.6 s after such probes).
  bool tryCache = w->probe;
  if (!w->probe) w->fromDisk = true;
  while (first < rest.size()) {
    int n = static_cast<int>(std::min<size_t>(rest.size() - first, IOV_MAX));
    size_t want = 0;
    for (int i = 0; i < n; i++) want += rest[first + i].iov_len;
    off_t at = w->position + static_cast<off_t>(w->got);
    // Past the page cache's part: straight from the device into the memory when aligned (no copy, no page-cache pages).
    bool direct = w->fromDisk && w->directFd >= 0 && DirectAligned(&rest[first], n, at);
    ssize_t r = preadv2(direct ? w->directFd : w->fd, &rest[first], n, at, tryCache ? RWF_NOWAIT : 0);
    if (direct && r < 0 && errno == EINVAL) {
      w->directFd = -1;  // refused: buffered from here on
      continue;
    }
    if (direct && r > 0) w->direct = true;
    if (tryCache) {
      tryCache = false;
      // EAGAIN or short: the rest waits for the device. EOPNOTSUPP/EINVAL: no
      // RWF_NOWAIT here (the read is retried plainly; fromDisk stays false).
      if (r < 0 && (errno == EOPNOTSUPP || errno == EINVAL)) continue;
      if ((r < 0 && errno == EAGAIN) || (r > 0 && static_cast<size_t>(r) < want)) w->fromDisk = true;
      if (r < 0 && errno == EAGAIN) continue;
      if (r == 0) continue;  // nothing cached, or the end of the file: the plain read tells which
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      w->err = errno;
      return;
    }
    if (r == 0) break;  // end of file
    w->got += static_cast<size_t>(r);
    for (size_t left = static_cast<size_t>(r); left > 0 && first < rest.size();) {
      size_t take = std::min(left, rest[first].iov_len);
      rest[first].iov_base = static_cast<char*>(rest[first].iov_base) + take;
      rest[first].iov_len -= take;
      left -= take;
      if (rest[first].iov_len == 0) first++;
    }
  }
  size_t left = w->got;
  for (size_t i = 0; i < w->iov.size() && left > 0; i++) {
    size_t n = std::min(left, w->iov[i].iov_len);
    w->crc = Crc32cHw(w->crc, static_cast<const uint8_t*>(w->iov[i].iov_base), n);
    left -= n;
  }
}

void ReadCrcDone(uv_work_t* req, int /*status*/) {
  std::unique_ptr<ReadCrcWork> w(static_cast<ReadCrcWork*>(req->data));
  Isolate* iso = w->iso;
  v8::HandleScope scope(iso);
  Local<v8::Object> resource = w->resource.Get(iso);
  Local<Context> ctx = resource->GetCreationContextChecked();
  v8::Context::Scope in(ctx);
  Local<Value> argv[5] = {
      w->err == 0 ? static_cast<Local<Value>>(v8::Null(iso)) : static_cast<Local<Value>>(String::NewFromUtf8(iso, uv_err_name(-w->err)).ToLocalChecked()),
      Number::New(iso, static_cast<double>(w->got)),
      v8::Integer::NewFromUnsigned(iso, w->crc),
      v8::Boolean::New(iso, w->fromDisk),
      v8::Boolean::New(iso, w->direct),
  };
  w->keep.clear();  // the bytes are the caller's again
  node::MakeCallback(iso, resource, w->callback.Get(iso), 5, argv, w->async);
  node::EmitAsyncDestroy(iso, w->async);
}

void ReadvCrc(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 4 || !args[0]->IsInt32() || !args[1]->IsArray() || !args[2]->IsNumber() || !args[3]->IsFunction())
    return Throw(iso, EINVAL, "readvCrc", "expects (fd, views, position, callback)");
  double position = args[2].As<Number>()->Value();
  if (!(position >= 0 && position <= kMaxSafe && position == std::floor(position)))
    return Throw(iso, EINVAL, "readvCrc", "position must be a non-negative integer");
  Local<Context> ctx = iso->GetCurrentContext();
  Local<v8::Array> views = args[1].As<v8::Array>();
  auto w = std::make_unique<ReadCrcWork>();
  w->iso = iso;
  w->fd = args[0].As<v8::Int32>()->Value();
  if (args.Length() > 4 && args[4]->IsInt32()) w->directFd = args[4].As<v8::Int32>()->Value();
  if (args.Length() > 5 && args[5]->IsBoolean()) w->probe = args[5]->BooleanValue(iso);
  w->position = static_cast<off_t>(position);
  for (uint32_t i = 0; i < views->Length(); i++) {
    Local<Value> v;
    if (!views->Get(ctx, i).ToLocal(&v) || !v->IsArrayBufferView())
      return Throw(iso, EINVAL, "readvCrc", "views must be typed-array views");
    Local<v8::ArrayBufferView> view = v.As<v8::ArrayBufferView>();
    if (view->ByteLength() == 0) continue;
    Local<v8::ArrayBuffer> buffer = view->Buffer();
    if (!buffer->IsSharedArrayBuffer()) w->keep.push_back(buffer->GetBackingStore());
    w->iov.push_back({static_cast<char*>(buffer->Data()) + view->ByteOffset(), view->ByteLength()});
  }
  w->views.Reset(iso, views);
  Local<v8::Object> resource = v8::Object::New(iso);
  w->resource.Reset(iso, resource);
  w->callback.Reset(iso, args[3].As<v8::Function>());
  w->async = node::EmitAsyncInit(iso, resource, "morsel.readvCrc");
  w->req.data = w.get();
  int rc = uv_queue_work(node::GetCurrentEventLoop(iso), &w->req, ReadCrcRun, ReadCrcDone);
  if (rc != 0) {
    node::EmitAsyncDestroy(iso, w->async);
    return Throw(iso, -rc, "readvCrc", "cannot queue the read");
  }
  w.release();  // ReadCrcDone owns it
}

// scanRun(words, base, first, end, need, checkNx, next): how many entries
// idx = first, first + 1, ... (< end) of the page table whose first Int32
// word is words[base] carry every flag bit of `need` (low bits 0..11), no
// NX when checkNx, and frames next, next + 1, ... (PFN: bits 12..51). The
// loop of the software MMU's run-level translation (Mmu.runFromCache) with
// one 64-bit acquire load per entry (a plain mov on x86) instead of two
// Atomics.load calls (~6 ns each in V8). -1: the table is not 8-byte
// aligned or not inside the view (the caller scans in JavaScript).
void ScanRun(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 7 || !args[0]->IsInt32Array() || !args[1]->IsUint32() || !args[2]->IsUint32() || !args[3]->IsUint32() || !args[4]->IsInt32() || !args[6]->IsNumber())
    return Throw(iso, EINVAL, "scanRun", "expects (Int32Array, base, first, end, need, checkNx, next)");
  Local<v8::Int32Array> view = args[0].As<v8::Int32Array>();
  uint64_t base = args[1].As<v8::Uint32>()->Value();
  uint64_t first = args[2].As<v8::Uint32>()->Value();
  uint64_t end = args[3].As<v8::Uint32>()->Value();
  uint32_t need = static_cast<uint32_t>(args[4].As<v8::Int32>()->Value());
  bool checkNx = args[5]->BooleanValue(iso);
  double next = args[6].As<Number>()->Value();
  const char* at = static_cast<const char*>(view->Buffer()->Data()) + view->ByteOffset() + base * 4;
  if ((reinterpret_cast<uintptr_t>(at) & 7) != 0 || first > end || base + 2 * end > view->Length() || !(next >= 0 && next <= kMaxSafe)) {
    args.GetReturnValue().Set(-1);
    return;
  }
  const uint64_t* entries = reinterpret_cast<const uint64_t*>(at);
  uint64_t want = static_cast<uint64_t>(next);
  uint64_t i = first;
  for (; i < end; i++, want++) {
    uint64_t e = __atomic_load_n(&entries[i], __ATOMIC_ACQUIRE);
    if ((static_cast<uint32_t>(e) & need) != need) break;
    if (checkNx && (e >> 63) != 0) break;
    if (((e >> 12) & 0xFFFFFFFFFFull) != want) break;
  }
  args.GetReturnValue().Set(static_cast<double>(i - first));
}

// presentEntries(words, base, out): the present entries (bit 0 set) of the
// page table whose first Int32 word is words[base], in index order, as
// triples (index, lo word, hi word) in `out` (room for 3 x 512 Int32);
// returns how many. The walker's forEachPresent loop with one 64-bit
// acquire load per entry (a plain mov on x86) instead of an Atomics.load
// call per entry (~6 ns each in V8): a sparse table costs one call. -1: the
// table is not 8-byte aligned or not inside the view, or `out` is too short
// (the caller scans in JavaScript).
void PresentEntries(const FunctionCallbackInfo<Value>& args) {
  Isolate* iso = args.GetIsolate();
  if (args.Length() < 3 || !args[0]->IsInt32Array() || !args[1]->IsUint32() || !args[2]->IsInt32Array())
    return Throw(iso, EINVAL, "presentEntries", "expects (Int32Array, base, Int32Array)");
  constexpr uint64_t kEntries = 512;
  Local<v8::Int32Array> view = args[0].As<v8::Int32Array>();
  Local<v8::Int32Array> out = args[2].As<v8::Int32Array>();
  uint64_t base = args[1].As<v8::Uint32>()->Value();
  const char* at = static_cast<const char*>(view->Buffer()->Data()) + view->ByteOffset() + base * 4;
  if ((reinterpret_cast<uintptr_t>(at) & 7) != 0 || base + 2 * kEntries > view->Length() || out->Length() < 3 * kEntries) {
    args.GetReturnValue().Set(-1);
    return;
  }
  const uint64_t* entries = reinterpret_cast<const uint64_t*>(at);
  int32_t* triples = reinterpret_cast<int32_t*>(static_cast<char*>(out->Buffer()->Data()) + out->ByteOffset());
  int32_t count = 0;
  for (uint64_t i = 0; i < kEntries; i++) {
    uint64_t e = __atomic_load_n(&entries[i], __ATOMIC_ACQUIRE);
    if ((e & 1) == 0) continue;
    triples[3 * count] = static_cast<int32_t>(i);
    triples[3 * count + 1] = static_cast<int32_t>(static_cast<uint32_t>(e));
    triples[3 * count + 2] = static_cast<int32_t>(static_cast<uint32_t>(e >> 32));
    count++;
  }
  args.GetReturnValue().Set(count);
}

void LiveMappings(const FunctionCallbackInfo<Value>& args) {
  args.GetReturnValue().Set(static_cast<double>(g_live.load()));
}

void Export(Local<Context> ctx, Local<v8::Object> exports, const char* name,
            v8::FunctionCallback fn) {
  Isolate* iso = ctx->GetIsolate();
  exports
      ->Set(ctx, String::NewFromUtf8(iso, name).ToLocalChecked(),
            v8::Function::New(ctx, fn).ToLocalChecked())
      .Check();
}

}  // namespace

// Context-aware so each worker thread (its own isolate/context) can load it;
// the module keeps no per-isolate state, so nothing needs cleanup hooks.
NODE_MODULE_INIT() {
  Export(context, exports, "map", Map);
  Export(context, exports, "sync", Sync);
  Export(context, exports, "advise", Advise);
  Export(context, exports, "liveMappings", LiveMappings);
  Export(context, exports, "mapFd", MapFd);
  Export(context, exports, "lock", Lock);
  Export(context, exports, "conflicts", Conflicts);
  Export(context, exports, "reserve", Reserve);
  Export(context, exports, "futexWait", FutexWait);
  Export(context, exports, "futexWake", FutexWake);
  Export(context, exports, "forkCost", ForkCost);
  Export(context, exports, "hostMapCost", HostMapCost);
  Export(context, exports, "sumInt32", SumInt32);
  Export(context, exports, "zeroBytes", ZeroBytes);
  Export(context, exports, "scanRun", ScanRun);
  Export(context, exports, "presentEntries", PresentEntries);
  if (__builtin_cpu_supports("sse4.2")) {
    Export(context, exports, "crc32c", Crc32c);
    Export(context, exports, "readvCrc", ReadvCrc);
  }
}
