#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// `2026-11-27T11:52:27.314Z` as JSON string bytes (quotes included). The part up to the second
/// is formatted once per second and cached; only the milliseconds are written per line.
/// (Foundation's ISO 8601 formatter costs tens of microseconds per call on Linux.)
public enum LogTimestamp {
    private static let cache = Mutex<(second: Int, prefix: [UInt8])>((-1, []))

    public static func now() -> [UInt8] {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return json(seconds: Int(spec.tv_sec), milliseconds: Int(spec.tv_nsec) / 1_000_000)
    }

    static func json(seconds: Int, milliseconds: Int) -> [UInt8] {
        var prefix = cache.withLock { $0.second == seconds ? $0.prefix : [] }
        if prefix.isEmpty {
            prefix = format(seconds)
            cache.withLock { $0 = (seconds, prefix) }
        }
        var out = prefix
        out.append(UInt8(ascii: "0") + UInt8(milliseconds / 100))
        out.append(UInt8(ascii: "0") + UInt8(milliseconds / 10 % 10))
        out.append(UInt8(ascii: "0") + UInt8(milliseconds % 10))
        out.append(UInt8(ascii: "Z"))
        out.append(UInt8(ascii: "\""))
        return out
    }

    /// `"YYYY-MM-DDTHH:MM:SS.` for a Unix time, in UTC.
    private static func format(_ seconds: Int) -> [UInt8] {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var out: [UInt8] = [UInt8(ascii: "\"")]
        func digits(_ value: Int32, _ width: Int) {
            var text = Array(String(value).utf8)
            while text.count < width { text.insert(UInt8(ascii: "0"), at: 0) }
            out.append(contentsOf: text)
        }
        digits(parts.tm_year + 1900, 4); out.append(UInt8(ascii: "-"))
        digits(parts.tm_mon + 1, 2); out.append(UInt8(ascii: "-"))
        digits(parts.tm_mday, 2); out.append(UInt8(ascii: "T"))
        digits(parts.tm_hour, 2); out.append(UInt8(ascii: ":"))
        digits(parts.tm_min, 2); out.append(UInt8(ascii: ":"))
        digits(parts.tm_sec, 2); out.append(UInt8(ascii: "."))
        return out
    }
}
