// Errors as values: Result<T> carries either a T or an Error{code, errno, context}.
// Used everywhere below the CLI; exceptions are reserved for start-up configuration.
#pragma once

#include <cerrno>
#include <cstring>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace vhostd {

enum class Errc : uint8_t {
    kOk = 0,
    kInvalid,      // a peer (frontend/guest) sent something malformed
    kUnsupported,  // well-formed but not something we implement
    kOutOfRange,   // address/index/length outside the allowed range
    kSystem,       // a syscall failed; see sys_errno
    kBusy,         // try again later (back-pressure)
    kClosed,       // peer went away
    kState,        // request not valid in the current state
};

const char* errc_name(Errc c);

struct Error {
    Errc code = Errc::kInvalid;
    int sys_errno = 0;
    std::string context;

    std::string describe() const {
        if (sys_errno != 0) {
            return fmt::format("{}: {} ({})", errc_name(code), context, std::strerror(sys_errno));
        }
        return fmt::format("{}: {}", errc_name(code), context);
    }
};

// Arguments are taken by value: they are small, and packed wire-struct fields can't bind to references.
template <typename... Args>
Error make_error(Errc code, fmt::format_string<Args...> f, Args... args) {
    return Error{code, 0, fmt::vformat(fmt::string_view(f), fmt::make_format_args(args...))};
}

// Captures errno at the call site.
template <typename... Args>
Error sys_error(fmt::format_string<Args...> f, Args... args) {
    int e = errno;
    return Error{Errc::kSystem, e, fmt::vformat(fmt::string_view(f), fmt::make_format_args(args...))};
}

template <typename... Args>
Error sys_error_code(int err, fmt::format_string<Args...> f, Args... args) {
    return Error{Errc::kSystem, err, fmt::vformat(fmt::string_view(f), fmt::make_format_args(args...))};
}

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
    Result(Error err) : v_(std::move(err)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    const T& value() const& { return std::get<0>(v_); }
    T& operator*() & { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const { return std::get<1>(v_); }
    Error take_error() && { return std::get<1>(std::move(v_)); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error err) : err_(std::move(err)), ok_(false) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { return err_; }
    Error take_error() && { return std::move(err_); }

private:
    Error err_{};
    bool ok_ = true;
};

using Status = Result<void>;

inline Status ok_status() { return Status{}; }

}  // namespace vhostd

// Propagate an error from an expression returning Result<...>.
#define VHOSTD_TRY(expr)                                   \
    do {                                                   \
        auto _vhostd_r = (expr);                           \
        if (!_vhostd_r.ok()) return std::move(_vhostd_r).take_error(); \
    } while (0)

#define VHOSTD_CONCAT_INNER(a, b) a##b
#define VHOSTD_CONCAT(a, b) VHOSTD_CONCAT_INNER(a, b)
#define VHOSTD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)       \
    auto tmp = (expr);                                     \
    if (!tmp.ok()) return std::move(tmp).take_error();     \
    lhs = std::move(tmp).value()
#define VHOSTD_ASSIGN_OR_RETURN(lhs, expr) \
    VHOSTD_ASSIGN_OR_RETURN_IMPL(VHOSTD_CONCAT(_vhostd_a_, __LINE__), lhs, expr)
